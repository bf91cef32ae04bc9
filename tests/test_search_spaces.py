"""Search spaces: sampled points become valid configs, the ablation grid, Optuna's form, YAML
spaces and their errors, `get`/`trial_config`, and `umtune spaces`. No Ray cluster is started."""

import subprocess
import sys

import numpy as np
import pytest
import yaml

from umtune import search_spaces
from umtune.cli import main
from umtune.config import RunConfig, dilation_schedule, preset
from umtune.search_spaces import Param, get, names, space, trial_config
from umtune.search_spaces.spec import from_spec


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def sample(config: dict, rng: np.random.Generator) -> dict:
    """One point as Tune's variant generator would draw it (a grid value picked at random)."""
    from ray.tune.search.sample import Domain

    point = {}
    for key, v in config.items():
        if isinstance(v, Domain):
            point[key] = v.sample(random_state=rng)
        elif isinstance(v, dict) and "grid_search" in v:
            point[key] = v["grid_search"][rng.integers(len(v["grid_search"]))]
        else:
            point[key] = v
    return point


def changed_fields(base: RunConfig, cfg: RunConfig) -> set[str]:
    a, b = flat(base.to_dict()), flat(cfg.to_dict())
    return {k for k in a if a[k] != b[k]}


@pytest.mark.parametrize("preset_name", ["tiny", "paper"])
@pytest.mark.parametrize("name", names())
def test_sampled_points_are_valid_configs_that_change_only_the_spaces_fields(name, preset_name):
    """50 random points per space map to valid configs differing from base only in its fields."""
    base = preset(preset_name)
    sp = space(name, base)
    fields = {p.field for p in sp.params}
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(50):
        cfg = sp.to_config(base, sample(sp.tune_config("random"), rng))
        assert isinstance(cfg, RunConfig)
        assert changed_fields(base, cfg) <= fields
        seen |= changed_fields(base, cfg)
    assert seen == fields


def test_paper_lambda_is_exactly_zero_sometimes_and_in_its_log_range_otherwise():
    """The on/off switch gives lambda = 0 exactly; on, lambda lies in [1e-3, 1e-1]."""
    base = preset("tiny")
    sp = space("paper", base)
    rng = np.random.default_rng(1)
    lambdas = [sp.to_config(base, sample(sp.tune_config(), rng)).train.confusion_lambda
               for _ in range(50)]
    assert 0.0 in lambdas
    on = [x for x in lambdas if x != 0.0]
    assert on and all(1e-3 <= x <= 1e-1 for x in on)


@pytest.mark.parametrize("preset_name", ["tiny", "paper"])
def test_paper_dilation_choices_are_distinct_valid_schedules_for_the_base(preset_name):
    """Each named choice is valid on the base, shorter than a segment, and unique as a schedule."""
    base = preset(preset_name)
    by_field = {p.field: p.values for p in space("paper", base).params}
    for part in ("encoder", "decoder"):
        cfg = getattr(base.model, part)
        schedules = [dilation_schedule(v, cfg.blocks, cfg.layers_per_block)
                     for v in by_field[f"model.{part}.dilations"]]
        assert len(set(schedules)) == len(schedules) >= 4
        assert all(max(s) < base.data.segment_samples for s in schedules)
        assert by_field[f"model.{part}.dilations"][0] == "doubling"
    assert ("nonrepeating" in by_field["model.encoder.dilations"]) == (preset_name == "tiny")


def test_ablation_grid_is_the_papers_four_points_from_two_seeds_each():
    """Tune's own variant generator expands `get("ablation")` to {0, 1e-2} x {0, 0.5}, each
    point trained from the base seed and the next."""
    from ray.tune.search.variant_generator import generate_variants

    base = preset("tiny")
    assert space("ablation").grid_size() == 8
    assert get("ablation", search="random") == get("ablation")
    variants = [trial_config(spec) for _, spec in generate_variants(get("ablation"))]
    assert sorted((c.train.confusion_lambda, c.train.aug_semitones, c.train.seed)
                  for c in variants) == [(lam, aug, seed) for lam in (0.0, 1e-2)
                                         for aug in (0.0, 0.5) for seed in (0, 1)]
    assert all(changed_fields(base, c) <= {"train.confusion_lambda", "train.aug_semitones",
                                           "train.seed"} for c in variants)


@pytest.mark.parametrize("name", names())
def test_optuna_form_has_no_grid_search_and_its_suggestions_rebuild_configs(name):
    """OptunaSearch accepts the optuna config; its suggestions plus the constants are trials."""
    from ray.tune.search.optuna import OptunaSearch

    config = get(name, search="optuna")
    assert not any(isinstance(v, dict) and "grid_search" in v for v in config.values())
    searcher = OptunaSearch(metric="loss", mode="min", seed=0)
    searcher.set_search_properties("loss", "min", config)
    for i in range(5):
        cfg = trial_config({**config, **searcher.suggest(f"t{i}")})
        assert changed_fields(preset("tiny"), cfg) <= {p.field for p in space(name).params}


def test_grid_search_of_a_continuous_space_and_unknown_searches_are_clear_errors():
    """A loguniform parameter cannot be enumerated; the error names it and the way out."""
    with pytest.raises(ValueError, match="train.confusion_lambda is loguniform.*random"):
        space("paper").tune_config("grid")
    with pytest.raises(ValueError, match="unknown search 'bayes'"):
        space("ablation").tune_config("bayes")


def test_get_holds_the_base_and_trial_config_rebuilds_the_trial():
    """The base travels as a plain dict beside the domains; a point needs every key."""
    assert get("ablation")["base"] == preset("tiny").to_dict()
    assert get("ablation")["base"]["data"]["path"] == "data/bach"
    base = preset("paper")
    config = get("paper", base=base)
    assert config["base"] == base.to_dict() and config["space"] == "paper"
    point = sample(config, np.random.default_rng(2))
    cfg = trial_config(point)
    assert cfg == space("paper", base).to_config(base, point)
    assert cfg.model.decoder.layers_per_block == 14
    with pytest.raises(ValueError, match="train.lr"):
        space("paper", base).to_config(base, {k: v for k, v in point.items() if k != "train.lr"})


YAML_SPACE = """\
name: mine
description: every parameter type
params:
  train.confusion_lambda: {type: loguniform, low: 1e-3, high: 1e-1, off_value: 0}
  train.aug_semitones: {type: uniform, low: 0, high: 1}
  train.steps_per_epoch: {type: randint, low: 10, high: 12}
  model.encoder.latent_channels: {type: choice, values: [8, 16]}
  model.decoder.dilations: {type: choice, values: [doubling, cycle5]}
  train.seed: {type: grid, values: [0, 1]}
"""


def test_yaml_space_round_trips_and_travels_whole_in_get(tmp_path):
    """A YAML space parses to typed Params, survives to_spec -> YAML, and trials need no file."""
    from ray.tune.search.variant_generator import generate_variants

    path = tmp_path / "mine.yaml"
    path.write_text(YAML_SPACE)
    sp = space(path)
    assert sp.params[0] == Param("train.confusion_lambda", "loguniform", 1e-3, 1e-1,
                                 off_value=0.0)
    assert sp.params[2] == Param("train.steps_per_epoch", "int", 10, 12)
    assert sp.keys[:2] == ("train.confusion_lambda", "train.confusion_lambda:enabled")
    dumped = yaml.safe_dump(sp.to_spec(), sort_keys=False)
    assert from_spec(yaml.safe_load(dumped), preset("tiny"), "x") == sp
    assert sp.grid_size("random") == 2
    config = get(path)
    path.unlink()
    configs = [trial_config(spec) for _, spec in generate_variants(config)]
    assert sorted(c.train.seed for c in configs) == [0, 1]
    assert all(10 <= c.train.steps_per_epoch <= 12 for c in configs)


@pytest.mark.parametrize("field, spec, message", [
    ("train.lrr", {"type": "uniform", "low": 0, "high": 1}, "not a config field"),
    ("model.encoder", {"type": "choice", "values": [1]}, "config section"),
    ("model.decoder.dilations", {"type": "choice", "values": []}, "empty values"),
    ("train.aug_semitones", {"type": "uniform", "low": 0.5, "high": 0.5}, "empty range"),
    ("train.lr", {"type": "loguniform", "low": "1e-2", "high": "1e-3"}, "low 0.01 > high 0.001"),
    ("train.lr", {"type": "choice", "values": ["fast", "slow"]}, "'fast' is not of the field's"),
    ("train.steps_per_epoch", {"type": "int", "low": 1.5, "high": 9}, "1.5 is not of the field's"),
    ("train.steps_per_epoch", {"type": "uniform", "low": 1, "high": 9}, "needs a float field"),
    ("train.confusion_lambda", {"type": "loguniform", "low": 0, "high": 0.1}, "low > 0"),
    ("train.lr", {"type": "normal", "low": 0, "high": 1}, "unknown type 'normal'"),
    ("train.lr", {"type": "uniform", "low": 1e-4, "hi": 1e-3}, "unknown keys \\['hi'\\]"),
    ("train.lr", {"low": 1e-4, "high": 1e-3}, "expected a mapping with a 'type'"),
    ("train.aug_semitones", {"type": "uniform", "low": 0, "high": 1, "off_value": 0},
     "'off_value' goes"),
    ("model.encoder.pool", {"type": "choice", "values": [200, 300]}, "value 300 is invalid"),
    ("model.decoder.dilations", {"type": "grid", "values": ["fibonacci"]}, "fibonacci"),
])
def test_yaml_errors_name_the_file_and_the_parameter(tmp_path, field, spec, message):
    """Each malformed or base-invalid parameter is a ValueError naming file and parameter."""
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"params": {"train.seed": {"type": "grid", "values": [0]},
                                               field: spec}}))
    with pytest.raises(ValueError, match=message) as err:
        space(path)
    assert str(path) in str(err.value) and f"parameter {field}" in str(err.value)


def test_yaml_files_without_params_and_unknown_names_are_errors(tmp_path):
    """Top-level mistakes name the file; an unknown name lists the built-in spaces."""
    path = tmp_path / "empty.yaml"
    path.write_text("params: {}\n")
    with pytest.raises(ValueError, match=f"{path}: 'params' is empty"):
        space(path)
    with pytest.raises(ValueError, match="unknown search space 'papr'.*paper, ablation"):
        space("papr")


def test_cli_spaces_lists_the_built_in_spaces_and_checks_a_file(tmp_path, capsys):
    """`umtune spaces` describes paper and ablation; --file describes or rejects a YAML space."""
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in names():
        assert f"{name}: " in out
        assert all(p.field in out for p in space(name).params)
    assert "grid (8 points)" in out and "train.confusion_lambda:enabled" in out
    path = tmp_path / "mine.yaml"
    path.write_text(YAML_SPACE)
    assert main(["spaces", "--file", str(path)]) == 0
    assert "mine: every parameter type" in capsys.readouterr().out
    path.write_text(YAML_SPACE.replace("train.seed", "train.sed"))
    assert main(["spaces", "--file", str(path)]) == 2
    assert f"{path}: parameter train.sed" in capsys.readouterr().err


def test_describing_spaces_does_not_import_ray():
    """`umtune spaces` stays fast: Ray is imported only to build Tune domains."""
    code = ("import sys; from umtune.cli import main; main(['spaces']); "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_module_describe_matches_each_space():
    """The package-level describe joins the spaces' own descriptions."""
    assert search_spaces.describe(["ablation"]) == space("ablation").describe()


BAD_SPACES = {
    "infinite": ("params:\n  train.aug_semitones: {type: uniform, low: 0, high: .inf}\n",
                 "parameter train.aug_semitones: value inf is not a finite number"),
    "twice": ("params:\n  train.seed: {type: grid, values: [0, 1]}\n"
              "  train.seed: {type: grid, values: [2]}\n",
              "line 3, column 3: found the key 'train.seed' twice (first on line 2)"),
}


@pytest.mark.parametrize("name", BAD_SPACES)
def test_spaces_and_sweep_refuse_infinite_ranges_and_keys_given_twice(name, tmp_path, capsys,
                                                                     tiny_dataset):
    """A range up to .inf and a field named twice (PyYAML keeps the last) are one-line errors
    of `umtune spaces --file` and of `umtune sweep` (before Ray starts, nothing written)."""
    import ray

    text, message = BAD_SPACES[name]
    file = tmp_path / f"{name}.yaml"
    file.write_text(text)
    assert main(["spaces", "--file", str(file)]) == 2
    err = capsys.readouterr().err
    assert f"{file}: " in err and message in err and err.count("\n") == 1
    assert main(["sweep", "--space", str(file), "--data", str(tiny_dataset), "--storage",
                 str(tmp_path / "sweeps"), "--name", "s"]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "sweeps").exists()


def test_a_grid_too_large_to_enumerate_is_refused_before_ray_starts(tmp_path, capsys,
                                                                    tiny_dataset):
    """An int range 1..1e11 under a grid search would be a MemoryError inside Tune; it is an
    error naming the parameter, with nothing written and Ray not started, and the name stays
    free for the corrected sweep."""
    import ray

    file = tmp_path / "huge.yaml"
    file.write_text("params:\n  train.seed: {type: int, low: 1, high: 100000000000}\n")
    assert main(["spaces", "--file", str(file)]) == 0  # random search samples it fine
    capsys.readouterr()
    assert main(["sweep", "--space", str(file), "--search", "grid", "--data", str(tiny_dataset),
                 "--storage", str(tmp_path / "sweeps"), "--name", "s"]) == 2
    err = capsys.readouterr().err
    assert "parameter train.seed is an int range of 100,000,000,000 values; a grid search " \
           "enumerates at most 10,000 points" in err
    assert not ray.is_initialized() and not (tmp_path / "sweeps").exists()
    many = {"params": {f"train.{k}": {"type": "grid", "values": list(range(1, 200))}
                        for k in ("seed", "max_epochs")}}
    with pytest.raises(ValueError, match="a grid search of 39,601 points per sample"):
        space(many).tune_config("grid")


def test_the_base_config_is_a_point_of_the_space_or_is_named():
    """--enqueue-base: a space's point for the base config, switches included; a base value
    a grid or choice cannot take is refused, naming the parameter."""
    from umtune.config import preset, replace_path
    from umtune.search_spaces import space

    base = preset("cpu")
    assert space("lambda-aug", base).point_of(base)["train.confusion_lambda"] == 0.1
    point = space("ablation", base).point_of(base)
    assert (point["train.confusion_lambda"], point["train.aug_semitones"]) == (0.1, 0.5)
    off = replace_path(base, "train.confusion_lambda", 0.0)
    lambda_aug = space("lambda-aug", off)
    assert lambda_aug.to_config(off, lambda_aug.point_of(off)) == off
    other = replace_path(base, "train.confusion_lambda", 0.05)
    with pytest.raises(ValueError, match="parameter train.confusion_lambda: the base config's "
                       "0.05 is not one of its values"):
        space("ablation", base).point_of(other)
