"""Named search spaces: which hyperparameters a sweep varies, and their ranges.

A space is a function of the base `RunConfig` (`builtin.py`: `paper`, `ablation`) or a YAML file;
either way it becomes one declarative `SearchSpace` (`space.py`) that gives Tune domains keyed by
dotted config fields and turns a sampled point back into a frozen, validated `RunConfig`:

    config = umtune.search_spaces.get("ablation")          # Tune domains + "base" + "space"
    tune.run(umtune.sweep.tune_trial, config=config, ...)
    # in the trial: cfg = umtune.search_spaces.trial_config(config)

Searches: "random" samples every parameter except `grid` ones, which Tune enumerates and crosses
with num_samples; "grid" enumerates every parameter (continuous ones are an error); "optuna"
samples every parameter (OptunaSearch takes no grid_search, so `grid` becomes a choice).

The YAML format (`umtune spaces --file FILE` checks and describes one):

    name: lambda-lr                # optional; default: the file name without .yaml
    description: lambda and lr     # optional
    params:                        # dotted RunConfig fields (umtune/config.py)
      train.confusion_lambda: {type: loguniform, low: 1e-3, high: 1e-1, off_value: 0}
      train.aug_semitones: {type: uniform, low: 0, high: 1}
      train.lr: {type: loguniform, low: 1e-4, high: 3e-3}
      train.steps_per_epoch: {type: int, low: 10, high: 50}
      model.encoder.latent_channels: {type: choice, values: [8, 16, 32]}
      model.decoder.dilations: {type: choice, values: [doubling, cycle5, base3]}
      train.seed: {type: grid, values: [0, 1]}

- `loguniform` (float field; 0 < low < high): sampled log-uniformly. `off_value: V` adds the
  switch key `<field>:enabled` (true/false, sampled like a choice); false gives the field V: the
  way an exact 0 joins a log range (lambda = 0 is the no-confusion ablation). (Not `off: V`:
  YAML 1.1 reads the key `off` as false.)
- `uniform` (float field; low < high); `int` or `randint` (int field; integers low..high,
  both included).
- `choice`: values sampled, or enumerated by a grid search; `grid`: values always enumerated.
  Values are numbers, strings or booleans of the field's type; dilation schedules go by name
  (config.DILATION_PATTERNS or cycleN).

Loading checks every parameter and names the file and the parameter in its error: unknown fields
or keys, unknown types, wrong value types, empty or reversed ranges, empty values, loguniform with
low <= 0, and any endpoint, value or off_value that makes the base config invalid (interior
integers of an int range are checked when a trial builds its config). Numbers like `1e-3` are
fine although YAML 1.1 reads them as strings.
"""

from __future__ import annotations

from pathlib import Path

from umtune.config import RunConfig, preset
from umtune.layout import BASE_KEY, SPACE_KEY
from umtune.search_spaces.builtin import SPACES
from umtune.search_spaces.space import Param, SearchSpace
from umtune.search_spaces.spec import from_spec, load

__all__ = ["Param", "SearchSpace", "names", "space", "get", "trial_config", "describe"]


def names() -> tuple[str, ...]:
    return tuple(SPACES)


def space(ref: str | Path | dict, base: RunConfig | None = None) -> SearchSpace:
    """A built-in space by name, a YAML file, or a parsed spec (as `get` stores it), built from
    and checked against `base` (default: the tiny preset)."""
    base = preset("tiny") if base is None else base
    if isinstance(ref, dict):
        return from_spec(ref, base, source=f"space {ref.get('name', '')!r}")
    if str(ref) in SPACES:
        built = SPACES[str(ref)](base)
        built.check(base)
        return built
    if Path(ref).suffix in (".yaml", ".yml") or Path(ref).exists():
        return load(ref, base)
    raise ValueError(f"unknown search space {str(ref)!r}: expected one of {', '.join(SPACES)} "
                     "or a YAML file")


def get(ref: str | Path | dict, base: RunConfig | None = None, search: str | None = None,
        ) -> dict:
    """The `config` for `tune.run`/`Tuner`: the space's Tune domains for `search` (default: grid
    for all-grid spaces, else random), the base config and the space's reference."""
    base = preset("tiny") if base is None else base
    built = space(ref, base)
    # A YAML space travels whole: trials may run on nodes that do not have the file.
    stored = str(ref) if not isinstance(ref, dict) and str(ref) in SPACES else built.to_spec()
    return {**built.tune_config(search or built.default_search), BASE_KEY: base.to_dict(),
            SPACE_KEY: stored}


def trial_config(config: dict) -> RunConfig:
    """The frozen config of one trial, from the config Tune hands the trainable."""
    base = RunConfig.from_dict(config[BASE_KEY])
    return space(config[SPACE_KEY], base).to_config(base, config)


def describe(refs: list[str | Path] | None = None, base: RunConfig | None = None) -> str:
    """`umtune spaces`: the given spaces (default: the built-in ones) and their parameters."""
    return "\n\n".join(space(ref, base).describe() for ref in refs or names())
