"""The declarative search space: `Param` (one varied config field) and `SearchSpace`.

A space is data: which dotted `RunConfig` fields vary and how. From it come the Tune domains for
each kind of search (`tune_config`) and, for a point Tune samples, the frozen config a trial runs
(`to_config`, through `config.replace_path`, so every point is validated by the config's own
`__post_init__`). Named spaces live in `builtin.py`, the YAML format in `spec.py`. Ray is imported
only inside `tune_config`, so describing and checking spaces stays fast.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, get_args, get_type_hints

from umtune.config import RunConfig, replace_path
from umtune.layout import SWITCH_SUFFIX

RANGE_KINDS = ("loguniform", "uniform", "int")
KINDS = (*RANGE_KINDS, "choice", "grid")
SEARCHES = ("random", "grid", "optuna")
# Points a grid search may enumerate per sample (Tune materialises every one before the first
# trial starts; an int range of 1..1e11 would not fit in memory).
MAX_GRID_POINTS = 10_000


def field_type(dotted: str) -> Any:
    """The annotated type of a leaf field of `RunConfig`, e.g. float for "train.lr"."""
    cls, parts = RunConfig, dotted.split(".")
    for i, name in enumerate(parts):
        where = ".".join(parts[:i]) or "RunConfig"
        hints = get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if name not in hints:
            fields = f" ({where} has {', '.join(sorted(hints))})" if hints else ""
            raise ValueError(f"not a config field{fields}")
        cls = hints[name]
    if dataclasses.is_dataclass(cls):
        raise ValueError(f"{dotted} is a config section, not a field")
    return cls


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", str(type_))


def _typed(value: Any, type_: Any) -> Any:
    """`value` as the field's type, or a ValueError. YAML 1.1 reads `1e-3` as a string, so float
    fields accept numeric strings; they refuse `.inf` and `.nan`, which no range can sample."""
    if isinstance(value, bool):
        if type_ is bool:
            return value
    elif type_ is float and isinstance(value, (int, float, str)):
        number = None
        with contextlib.suppress(ValueError):
            number = float(value)
        if number is not None and not math.isfinite(number):
            raise ValueError(f"value {value!r} is not a finite number")
        if number is not None:
            return number
    elif type_ is int and isinstance(value, int):
        return value
    elif isinstance(value, str) and str in (type_, *get_args(type_)):
        return value
    raise ValueError(f"value {value!r} is not of the field's type, {_type_name(type_)}")


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Param:
    """One varied config field; validated on construction (field, type, range, values).

    Args:
        field: dotted `RunConfig` field, e.g. "train.lr".
        kind: "loguniform" or "uniform" (float fields, low < high), "int" (int fields, low..high
            inclusive), "choice" (values sampled; enumerated by a grid search) or "grid" (values
            always enumerated, except by Optuna, which cannot take grid_search).
        off_value: loguniform only: adds the switch key `<field>:enabled`; false gives the field
            this value. A log range cannot reach 0, and lambda = 0 is the paper's no-confusion
            ablation.
    """

    field: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    values: tuple = ()
    off_value: Any = None

    def __post_init__(self):
        try:
            self._validate()
        except ValueError as e:
            raise ValueError(f"parameter {self.field}: {e}") from None

    def _validate(self) -> None:
        type_ = field_type(self.field)
        if self.kind not in KINDS:
            raise ValueError(f"unknown type {self.kind!r} (expected one of {', '.join(KINDS)})")
        if self.kind in RANGE_KINDS:
            self._validate_range(type_)
        else:
            self._validate_values(type_)
        if self.off_value is not None:
            if self.kind != "loguniform":
                raise ValueError("'off_value' goes with loguniform only (put the value in the "
                                 "range or the values instead)")
            object.__setattr__(self, "off_value", _typed(self.off_value, type_))

    def _validate_range(self, type_: Any) -> None:
        want = int if self.kind == "int" else float
        if type_ is not want:
            raise ValueError(f"type {self.kind} needs a {want.__name__} field; this field is "
                             f"{_type_name(type_)}")
        if self.low is None or self.high is None or self.values:
            raise ValueError(f"type {self.kind} takes low and high (not values)")
        low, high = _typed(self.low, type_), _typed(self.high, type_)
        if low > high:
            raise ValueError(f"low {_show(low)} > high {_show(high)}")
        if low == high and want is float:
            raise ValueError(f"empty range [{_show(low)}, {_show(high)}] (use type choice for "
                             "a single value)")
        if self.kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {_show(low)}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    def _validate_values(self, type_: Any) -> None:
        if self.low is not None or self.high is not None:
            raise ValueError(f"type {self.kind} takes values (not low and high)")
        if not isinstance(self.values, (list, tuple)):
            raise ValueError(f"values must be a list, got {self.values!r}")
        if not self.values:
            raise ValueError("empty values: list at least one")
        object.__setattr__(self, "values", tuple(_typed(v, type_) for v in self.values))

    @property
    def switch(self) -> str | None:
        return f"{self.field}{SWITCH_SUFFIX}" if self.off_value is not None else None

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.field,) + ((self.switch,) if self.switch else ())

    def probes(self) -> tuple:
        """The values whose configs `SearchSpace.check` builds: endpoints, choices, off_value."""
        ends = (self.low, self.high) if self.kind in RANGE_KINDS else self.values
        return ends + ((self.off_value,) if self.switch else ())

    def value(self, point: dict) -> Any:
        """This field's value in a sampled point (`off_value` when the switch is false)."""
        missing = [k for k in self.keys if k not in point]
        if missing:
            raise ValueError(f"parameter {self.field}: the point has no {missing[0]!r}")
        return self.off_value if self.switch and not point[self.switch] else point[self.field]

    def describe(self) -> str:
        if self.kind in RANGE_KINDS:
            sep = ".." if self.kind == "int" else ", "
            text = f"[{_show(self.low)}{sep}{_show(self.high)}]"
        else:
            text = ", ".join(_show(v) for v in self.values)
        if self.switch:
            text += f"; or {_show(self.off_value)} when {self.switch} is false"
        return f"{self.field:<30} {self.kind:<10} {text}"

    def to_spec(self) -> dict:
        """The YAML form of this parameter (see spec.py)."""
        spec = {"type": self.kind}
        if self.kind in RANGE_KINDS:
            spec.update(low=self.low, high=self.high)
        else:
            spec["values"] = list(self.values)
        return spec if self.off_value is None else {**spec, "off_value": self.off_value}


@dataclass(frozen=True)
class SearchSpace:
    """A named set of `Param`s: Tune domains for a search, and sampled points back to configs."""

    name: str
    description: str
    params: tuple[Param, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of `tune_config`: dotted fields, plus `<field>:enabled` switches."""
        return tuple(k for p in self.params for k in p.keys)

    @property
    def default_search(self) -> str:
        return "grid" if all(p.kind == "grid" for p in self.params) else "random"

    def _grid(self, p: Param, search: str) -> list | None:
        """The values Tune enumerates for `p` under `search`, or None where it samples."""
        if search not in SEARCHES:
            raise ValueError(f"unknown search {search!r} (expected one of {', '.join(SEARCHES)})")
        if search == "optuna" or (search == "random" and p.kind != "grid"):
            return None
        if p.kind in ("grid", "choice"):
            return list(p.values)
        if p.kind == "int":
            if p.high - p.low + 1 > MAX_GRID_POINTS:
                raise ValueError(f"space {self.name!r}: parameter {p.field} is an int range of "
                                 f"{p.high - p.low + 1:,} values; a grid search enumerates at "
                                 f"most {MAX_GRID_POINTS:,} points (use search='random' or "
                                 "'optuna', or a shorter range)")
            return list(range(p.low, p.high + 1))
        raise ValueError(f"space {self.name!r}: parameter {p.field} is {p.kind}; a grid search "
                         "enumerates only grid, choice and int parameters (use search='random' "
                         "or 'optuna')")

    def tune_config(self, search: str = "random") -> dict:
        """Tune domains keyed by `keys`: "random" samples, enumerating grid params with
        tune.grid_search (crossed with num_samples); "grid" enumerates every param; "optuna"
        samples every param (OptunaSearch takes no grid_search, so grid becomes choice)."""
        from ray import tune

        self.grid_size(search)  # refuses a grid too large to enumerate, before Tune tries
        out = {}
        for p in self.params:
            grid = self._grid(p, search)
            out[p.field] = tune.grid_search(grid) if grid is not None else _domain(tune, p)
            if p.switch:
                out[p.switch] = tune.choice([True, False])
        return out

    def point_of(self, base: RunConfig) -> dict:
        """The point whose config is `base` (Optuna's `points_to_evaluate`: the base config as
        the first trial); a ValueError names a value the space cannot take."""
        point = {}
        for p in self.params:
            value = functools.reduce(getattr, p.field.split("."), base)
            if p.switch:
                point[p.switch] = value != p.off_value
                value = value if point[p.switch] else p.low  # ignored while switched off
            if p.values and value not in p.values:
                raise ValueError(f"parameter {p.field}: the base config's {value!r} is not one "
                                 f"of its values {list(p.values)}")
            point[p.field] = list(value) if isinstance(value, tuple) else value
        return point

    def mutations(self) -> dict:
        """Population-based training's `hyperparam_mutations`: the space's training
        parameters (a model size cannot change under trained weights), each resampled as the
        space samples it or from its values."""
        from ray import tune

        return {p.field: list(p.values) if p.values else _domain(tune, p)
                for p in self.params if p.field.startswith("train.")}

    def bounds(self) -> dict:
        """PB2's `hyperparam_bounds`: the space's continuous training parameters' ranges."""
        return {p.field: [p.low, p.high] for p in self.params
                if p.field.startswith("train.") and p.kind in ("loguniform", "uniform")}

    def grid_size(self, search: str = "grid") -> int:
        """Trials per sample under `search`: the product of the enumerated params' sizes (a
        ValueError above MAX_GRID_POINTS)."""
        size = math.prod(len(g) for g in (self._grid(p, search) for p in self.params) if g)
        if size > MAX_GRID_POINTS:
            raise ValueError(f"space {self.name!r}: a grid search of {size:,} points per sample; "
                             f"expected at most {MAX_GRID_POINTS:,} (use search='random' or "
                             "'optuna', or fewer values)")
        return size

    def to_config(self, base: RunConfig, point: dict) -> RunConfig:
        """The frozen config of a sampled point (keys other than `keys` are ignored)."""
        for p in self.params:
            base = replace_path(base, p.field, p.value(point))
        return base

    def check(self, base: RunConfig) -> None:
        """Raise a ValueError naming the parameter if an endpoint or choice is invalid on `base`
        (interior integers of an int range are checked when a trial builds its config)."""
        for p in self.params:
            for v in p.probes():
                try:
                    replace_path(base, p.field, v)
                except ValueError as e:
                    raise ValueError(f"space {self.name!r}: parameter {p.field}: value "
                                     f"{_show(v)} is invalid on the base config: {e}") from None

    def describe(self) -> str:
        search = self.default_search
        size = f" ({self.grid_size(search)} points)" if search == "grid" else ""
        return "\n".join([f"{self.name}: {self.description}",
                          f"  default search: {search}{size}",
                          *(f"  {p.describe()}" for p in self.params)])

    def to_spec(self) -> dict:
        """The YAML form of this space (see spec.py); `spec.from_spec` reads it back."""
        return {"name": self.name, "description": self.description,
                "params": {p.field: p.to_spec() for p in self.params}}


def _domain(tune: Any, p: Param) -> Any:
    if p.kind == "loguniform":
        return tune.loguniform(p.low, p.high)
    if p.kind == "uniform":
        return tune.uniform(p.low, p.high)
    if p.kind == "int":
        return tune.randint(p.low, p.high + 1)  # Tune's high is exclusive
    return tune.choice(list(p.values))
