"""The `umtune` command's contract for errors: one line on stderr, exit 2 for bad input and 1
for anything else, `--debug` for the traceback; and `--help` says what `--resume` trusts."""

from __future__ import annotations

import json

import pytest

from umtune.cli import build_parser, main
from umtune.config import preset, replace_path


@pytest.fixture
def odd_dataset(tmp_path):
    """A dataset folder whose manifest lists a file entry with none of its fields."""
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "sample_rate": 16000, "domains": ["a", "b"], "files": [{}]}))
    return folder


def test_an_unexpected_error_is_one_line_with_exit_1(odd_dataset, capsys):
    """A KeyError from deep inside ends as its type and message on one line, and a pointer to
    --debug; no traceback."""
    assert main(["data", "summary", str(odd_dataset)]) == 1
    err = capsys.readouterr().err
    assert err == "umtune: error: KeyError: 'domain' (run `umtune --debug ...` for the " \
                  "traceback)\n"


def test_debug_shows_the_traceback(odd_dataset):
    """`umtune --debug ...` lets the exception through, traceback and all."""
    with pytest.raises(KeyError, match="domain"):
        main(["--debug", "data", "summary", str(odd_dataset)])


def test_bad_input_is_one_line_with_exit_2(tmp_path, capsys):
    """A library ValueError or OSError: its message alone, exit 2."""
    assert main(["data", "summary", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--bogus"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == ("umtune: error: unrecognized arguments: --bogus (see "
                                       "`umtune --help`)\n")


def test_sweep_help_says_resume_runs_code_from_the_sweep_folder(capsys):
    """`umtune sweep --help` warns that --resume unpickles Tune's state: trusted folders only."""
    sweep = build_parser()._subparsers._group_actions[0].choices["sweep"]
    text = " ".join(sweep.format_help().split())
    assert "SWEEP_DIR must be one you trust: resuming unpickles Tune's saved state, and a " \
           "crafted sweep folder runs code as you" in text


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_where_they_are_typed(tmp_path, capsys, value):
    """translate --chunk-seconds nan|inf (and every other float option): exit 2, one line
    naming the option and the value, before any file is read."""
    with pytest.raises(SystemExit) as exit_:
        main(["translate", "--checkpoint", str(tmp_path / "none"), "--to", "flute",
              str(tmp_path / "x.wav"), "-o", str(tmp_path / "o"), f"--chunk-seconds={value}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --chunk-seconds: expected a finite number, got '{value}'" in err
    assert err.count("\n") == 1


def test_version_defaults_help_and_examples(capsys):
    """`umtune --version` prints the installed version (umtune.__version__); every option of
    every command has help text, defaults are shown, and the main commands end with examples."""
    import argparse

    import umtune

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == f"umtune {umtune.__version__}\n"
    assert umtune.__version__ == "0.1.0"

    def commands(parser, path):
        yield path, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from commands(sub, [*path, name])

    found = {" ".join(path): parser for path, parser in commands(build_parser(), ["umtune"])}
    for path, parser in commands(build_parser(), ["umtune"]):
        missing = [a.option_strings or a.dest for a in parser._actions
                   if not a.help and not isinstance(a, argparse._SubParsersAction)]
        assert not missing, (path, missing)
        text = parser.format_help()
        if path[-1] in ("train", "sweep", "translate", "evaluate", "report", "chorales",
                        "import", "spaces"):
            assert "\nexamples:\n  umtune " in text, path
    assert "(default: tiny)" in " ".join(found["umtune train"].format_help().split())


def test_config_show_prints_what_config_reads_back_and_dry_runs_write_nothing(
        tiny_dataset, tmp_path, capsys):
    """`config show` prints the resolved config as YAML (--set applied) with its sizes and
    generation cost as comments; --config of that output, of a run's config.json, or of a
    preset and one section's fields resolves to the same config; `train` and `sweep
    --dry-run` print it and what would run, and write nothing; bad files are named."""
    assert main(["config", "show", "--preset", "cpu", "--set", "train.lr=2e-4"]) == 0
    shown = capsys.readouterr().out
    assert "  lr: 0.0002\n" in shown and "  ema_decay: 0.999\n" in shown
    assert "\n# parameters: " in shown and " FLOPs per output sample" in shown
    (tmp_path / "shown.yaml").write_text(shown)
    (tmp_path / "partial.yaml").write_text("preset: cpu\ntrain: {lr: 2.0e-4}\n")
    (tmp_path / "config.json").write_text(json.dumps(
        replace_path(preset("cpu"), "train.lr", 2e-4).to_dict()))
    for file in ("shown.yaml", "partial.yaml", "config.json"):
        assert main(["config", "show", "--config", str(tmp_path / file)]) == 0
        assert capsys.readouterr().out == shown, file

    run, sweeps = tmp_path / "run", tmp_path / "sweeps"
    assert main(["train", "--config", str(tmp_path / "partial.yaml"), "--data",
                 str(tiny_dataset), "--out", str(run), "--minutes", "5", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"  path: {tiny_dataset}\n" in out and "  max_minutes: 5.0\n" in out
    assert f"dry run: would start the run {run} in this process, until epoch 1000 or 5 " \
           "minutes of training" in out
    assert main(["sweep", "--preset", "tiny", "--data", str(tiny_dataset), "--space",
                 "ablation", "--storage", str(sweeps), "--name", "s", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train.confusion_lambda" in out and f"into {sweeps}/s; nothing was written" in out
    assert not run.exists() and not sweeps.exists()

    (tmp_path / "bad.yaml").write_text("train: {lr: 1.0e-3, bogus: 1}\n")
    assert main(["config", "show", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert capsys.readouterr().err.strip() == \
        f"umtune: error: config file {tmp_path / 'bad.yaml'}: unknown fields ['bogus'] in train"
    with pytest.raises(SystemExit):
        main(["config", "show", "--preset", "cpu", "--config", str(tmp_path / "shown.yaml")])
    assert "not allowed with argument" in capsys.readouterr().err
