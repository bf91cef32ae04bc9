"""`umtune translate` checks everything it can before the (long) generation: the numbers, the
output folder, that no two inputs would write the same file, that no output replaces an input
or a file it did not write, that the names fit and the disk has room."""

from __future__ import annotations

import os
import subprocess

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


@pytest.fixture(scope="module")
def checkpoint(tiny_dataset, tmp_path_factory):
    """A real checkpoint of a tiny untrained network on the tiny dataset's domains."""
    from test_loop import tiny_run

    from umtune.data import Dataset
    from umtune.trainable.checkpoint import save_checkpoint
    from umtune.trainable.loop import Trainer

    state = Trainer(tiny_run(tiny_dataset), Dataset.open(tiny_dataset)).state()
    return save_checkpoint(state, tmp_path_factory.mktemp("translate") / "checkpoint")


def _real(checkpoint, *args: str) -> int:
    return main(["translate", "--checkpoint", str(checkpoint), "--to", "flute", *args])


def test_an_output_never_replaces_an_input_or_a_file_it_did_not_write(checkpoint, clips,
                                                                      capsys):
    """x.wav's output would be the input x_to_flute.wav: refused; a foreign file where an
    output goes: refused, untouched; the command's own earlier output: replaced."""
    a = clips / "a"
    sf.write(a / "x_to_flute.wav", [0.3, -0.3] * 4000, 16000)
    before = (a / "x_to_flute.wav").read_bytes()
    assert _real(checkpoint, str(a / "x.wav"), str(a / "x_to_flute.wav"), "-o", str(a)) == 2
    assert f"output {a / 'x_to_flute.wav'} is also an input" in capsys.readouterr().err
    assert _real(checkpoint, str(a / "x.wav"), "-o", str(a)) == 2
    assert "exists and was not written by umtune translate" in capsys.readouterr().err
    assert (a / "x_to_flute.wav").read_bytes() == before
    out = clips / "out"
    assert _real(checkpoint, str(a / "x.wav"), "-o", str(out)) == 0
    assert _real(checkpoint, str(a / "x.wav"), "-o", str(out)) == 0  # its own file: replaced
    assert sorted(p.name for p in out.iterdir()) == ["x_to_flute.wav"]


def test_a_name_too_long_for_the_file_system_is_refused_before_generating(checkpoint, clips,
                                                                          capsys):
    long = clips / ("n" * 240 + ".wav")
    sf.write(long, [0.1, -0.1] * 4000, 16000)
    out = clips / "out"
    assert _real(checkpoint, str(long), str(clips / "a" / "y.wav"), "-o", str(out)) == 2
    assert "the name is too long" in capsys.readouterr().err
    assert list(out.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs: needs root")
def test_a_full_disk_is_found_before_generating_and_leaves_nothing(checkpoint, clips, capsys):
    """A 64 KiB file system cannot hold a 2 s translation: refused naming the folder and the
    sizes, before generation; nothing is left in it."""
    disk = clips / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        sf.write(clips / "long.wav", [0.1, -0.1] * 32000, 16000)
        assert _real(checkpoint, str(clips / "long.wav"), "-o", str(disk)) == 2
        err = capsys.readouterr().err
        assert f"output folder {disk}: " in err and "MB free, the translations need" in err
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", str(disk)], check=True)
