"""`umtune translate` checks everything it can before the (long) generation: the numbers, the
output folder, and that no two inputs would write the same file."""

from __future__ import annotations

import pytest
import soundfile as sf

from umtune.cli import main


@pytest.fixture
def clips(tmp_path):
    """Two real clips of the same name in two folders, and one more."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sf.write(tmp_path / folder / "x.wav", [0.1, -0.1] * 4000, 16000)
    sf.write(tmp_path / "a" / "y.wav", [0.2, -0.2] * 4000, 16000)
    return tmp_path


def _translate(tmp_path, *args: str) -> int:
    # A checkpoint that does not exist: an error about anything else came before loading it.
    return main(["translate", "--checkpoint", str(tmp_path / "no-checkpoint"), "--to", "flute",
                 *args])


def test_two_inputs_of_the_same_name_are_refused_before_anything_is_read(clips, capsys):
    """a/x.wav and b/x.wav would both become x_to_flute.wav: exit 2 naming both, no output."""
    out = clips / "out"
    assert _translate(clips, str(clips / "a"), str(clips / "b"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"inputs {clips / 'a' / 'x.wav'} and {clips / 'b' / 'x.wav'} would both be written " \
           f"to {out / 'x_to_flute.wav'}" in err and err.count("\n") == 1
    assert not out.exists()


def test_an_unwritable_output_folder_is_refused_before_the_checkpoint_is_read(clips, capsys):
    """-o below a regular file cannot be created: exit 2 naming the folder, at once."""
    (clips / "file").write_text("not a folder")
    out = clips / "file" / "out"
    assert _translate(clips, str(clips / "a" / "x.wav"), "-o", str(out)) == 2
    err = capsys.readouterr().err
    assert f"output folder {out}: cannot write there" in err and err.count("\n") == 1
