"""Reading user search spaces: YAML files and their parsed form (the format is documented in
`umtune/search_spaces/__init__.py`). Every error names the file (or space) and the parameter."""

from __future__ import annotations

from pathlib import Path

from umtune import strict_yaml
from umtune.config import RunConfig
from umtune.search_spaces.space import Param, SearchSpace

TOP_KEYS = ("name", "description", "params")
PARAM_KEYS = ("type", "low", "high", "values", "off_value")
TYPE_ALIASES = {"randint": "int"}


def load(path: str | Path, base: RunConfig) -> SearchSpace:
    """The space in a YAML file, checked against `base` (a key given twice is an error)."""
    path = Path(path)
    spec = strict_yaml.load(path.read_text(), str(path))
    return from_spec(spec, base, source=str(path), default_name=path.stem)


def from_spec(spec: dict, base: RunConfig, source: str, default_name: str = "user") -> SearchSpace:
    """A space from its parsed YAML form, checked against `base`; errors start with `source`."""
    try:
        space = _build(spec, default_name)
        space.check(base)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    return space


def _build(spec: dict, default_name: str) -> SearchSpace:
    if not isinstance(spec, dict) or not isinstance(spec.get("params"), dict):
        raise ValueError("expected a mapping with a 'params' mapping of config fields")
    _no_unknown(spec, TOP_KEYS, "the space")
    if not spec["params"]:
        raise ValueError("'params' is empty: name at least one config field")
    return SearchSpace(str(spec.get("name", default_name)), str(spec.get("description", "")),
                       tuple(_param(str(k), v) for k, v in spec["params"].items()))


def _param(field: str, spec: dict) -> Param:
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"parameter {field}: expected a mapping with a 'type', got {spec!r}")
    _no_unknown(spec, PARAM_KEYS, f"parameter {field}")
    kind = spec["type"]
    kind = TYPE_ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    return Param(field, kind, spec.get("low"), spec.get("high"), spec.get("values", ()),
                 spec.get("off_value"))


def _no_unknown(spec: dict, known: tuple[str, ...], where: str) -> None:
    unknown = sorted(map(str, set(spec) - set(known)))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} (expected {', '.join(known)})")
