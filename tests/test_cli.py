"""The `umtune` command's contract for errors: one line on stderr, exit 2 for bad input and 1
for anything else, `--debug` for the traceback; and `--help` says what `--resume` trusts."""

from __future__ import annotations

import json

import pytest

from umtune.cli import build_parser, main


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
