"""The config tree refuses what it cannot run, by field name, before anything is written:
wrong types, non-finite numbers, sections set as values, and paths that name nothing."""

from __future__ import annotations

import math

import pytest

from umtune.cli import main
from umtune.config import RunConfig, TrainConfig, overrides, preset, replace_path


@pytest.mark.parametrize("assignment, message", [
    ("train.steps_per_epoch=1.5", "config field train.steps_per_epoch=1.5: expected an integer"),
    ("model.encoder.channels=8.5", "config field model.encoder.channels=8.5: expected an "
                                   "integer"),
    ("train.lr=.inf", "config field train.lr=inf: expected a finite number"),
    ("train.lr=nan", "config field train.lr=nan: expected a finite number"),
    ("train.lr=abc", "config field train.lr='abc': expected a number"),
    ("model.encoder.normalize_latent=abc", "config field model.encoder.normalize_latent='abc': "
                                           "expected true or false"),
    ("model.encoder.normalize_latent=yes", "model.encoder.normalize_latent='yes': expected true "
                                           "or false"),
    ("train.seed=true", "config field train.seed=True: expected an integer"),
    ("data=5", "config section data=5: expected one of its fields, e.g. data.path=VALUE"),
    ("model.encoder=3", "config section model.encoder=3: expected one of its fields"),
    ("train.lr.x=1", "unknown config field 'train.lr.x': train.lr is a field, not a section"),
    ("train.lrr=1", "unknown config field 'train.lrr'"),
    ("train.lr=[1", "override 'train.lr=[1': the value: not valid YAML"),
])
def test_bad_overrides_name_the_whole_field_and_what_was_expected(assignment, message):
    """Each bad --set value is a ValueError naming the dotted field (train.lr, not lr)."""
    with pytest.raises(ValueError) as error:
        overrides(preset("tiny"), [assignment])
    assert message in str(error.value)
    assert len(str(error.value).splitlines()) == 1


def test_values_that_lose_nothing_are_converted_to_the_fields_type():
    """2.0 and 1e3 for an int field, 3 for a float field, true/false for a bool field."""
    cfg = overrides(preset("tiny"), ["train.steps_per_epoch=2.0", "train.max_epochs=1e3",
                                     "train.lr=1", "model.encoder.normalize_latent=TRUE"])
    assert (cfg.train.steps_per_epoch, cfg.train.max_epochs) == (2, 1000)
    assert type(cfg.train.steps_per_epoch) is int and type(cfg.train.lr) is float
    assert cfg.model.encoder.normalize_latent is True
    assert replace_path(cfg, "model.encoder.normalize_latent", "false").model.encoder \
        .normalize_latent is False


def test_direct_construction_and_saved_configs_are_checked_too():
    """The types are checked in __post_init__, so a config from a file or Tune is as safe."""
    with pytest.raises(ValueError, match="train.lr=inf: expected a finite number"):
        TrainConfig(lr=math.inf)
    with pytest.raises(ValueError, match="data='x': expected a DataConfig section"):
        RunConfig(data="x")
    saved = preset("tiny").to_dict()
    saved["train"]["steps_per_epoch"] = 2.5
    with pytest.raises(ValueError, match="train.steps_per_epoch=2.5: expected an integer"):
        RunConfig.from_dict(saved)


@pytest.mark.parametrize("assignment, message", [
    ("train.steps_per_epoch=1.5", "train.steps_per_epoch=1.5: expected an integer"),
    ("data=5", "config section data=5"),
    ("model.encoder.normalize_latent=abc", "expected true or false"),
    ("train.lr=.inf", "train.lr=inf: expected a finite number"),
])
def test_train_with_a_bad_override_exits_2_in_one_line_and_writes_nothing(
        tiny_dataset, tmp_path, capsys, assignment, message):
    """`umtune train --set ...` refuses before the run directory exists."""
    run = tmp_path / "run"
    assert main(["train", "--data", str(tiny_dataset), "--out", str(run),
                 "--set", assignment]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not run.exists()


def _billion_laughs(levels: int = 6) -> str:
    """YAML of a few hundred bytes whose aliases expand to 10 ** levels values."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_every_yaml_reader_bounds_what_aliases_expand_to(tmp_path, capsys):
    """A search space, a cluster file and a --set value that expand to a million values are
    refused at once, naming the source; the same anchors used a few times are fine."""
    from umtune.cli import main

    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_billion_laughs())
    assert main(["spaces", "--file", str(bomb)]) == 2
    assert f"{bomb}: its anchors and aliases expand it to" in capsys.readouterr().err
    assert main(["cluster", "check", str(bomb)]) == 2
    assert "expand it to" in capsys.readouterr().err
    with pytest.raises(ValueError, match="override 'train.lr=.*expand it to .* values"):
        overrides(preset("tiny"), ["train.lr=" + "{" + _billion_laughs().replace("\n", ", ")
                                   .rstrip(", ") + "}"])
    assert overrides(preset("tiny"), ["model.decoder.dilations=[&d 1, 2, 4, 8, 16, 32, 64, "
                                      "128, *d, 2, 4, 8, 16, 32, 64, 128]"]).model.decoder \
        .dilations == (1, 2, 4, 8, 16, 32, 64, 128) * 2
    from umtune import strict_yaml

    assert strict_yaml.load(_billion_laughs(2), "small") == {"l0": ["x"] * 10,
                                                             "l1": [["x"] * 10] * 10}
