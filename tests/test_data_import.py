"""Importing a user's per-domain folders, and every bad input the data commands refuse.

Bad inputs go through the real CLI (`umtune.cli.main` returns 2 and prints the error naming the
file or value) and must leave nothing behind: `outs/` (the output's parent, created on demand by
the writer) must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from umtune.cli import main
from umtune.data import ChoraleOptions, Dataset, DatasetError, import_folders, render_chorales


def _tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.fixture
def src(tmp_path) -> Path:
    """Two domains of good files: stereo 44.1 kHz WAV, 22.05 kHz FLAC, 16 kHz OGG."""
    root = tmp_path / "src"
    for domain, freq in (("bells", 440.0), ("drone", 220.0)):
        (root / domain).mkdir(parents=True)
        sf.write(root / domain / "a.wav", _tone(1.5, 44100, freq, channels=2), 44100)
        sf.write(root / domain / "b.flac", _tone(1.0, 22050, freq), 22050)
        sf.write(root / domain / "c.ogg", _tone(1.2, 16000, freq), 16000)
        sf.write(root / domain / "d.wav", _tone(2.0, 16000, freq), 16000)
        sf.write(root / domain / "e.WAV", _tone(1.0, 8000, freq), 8000)
    return root


def _run_import(src: Path, out: Path, *extra: str) -> int:
    return main(["data", "import", str(src), "--out", str(out), *extra])


def _assert_refused(code: int, capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    return err


def test_import_makes_mono_files_at_the_dataset_rate(src, tmp_path):
    """Every format is imported as mono at 16 kHz with its duration kept and pitch unchanged."""
    ds = Dataset.open(import_folders(src, tmp_path / "ds", progress=False))
    assert ds.domains == ("bells", "drone") and ds.unseen_domains == ()
    entries = {Path(e.piece).name: e for e in ds.files("bells", "train") + ds.files("bells",
                                                                                      "heldout")}
    assert sorted(entries) == ["a.wav", "b.flac", "c.ogg", "d.wav", "e.WAV"]
    assert abs(entries["a.wav"].num_samples - 1.5 * 16000) <= 1
    assert abs(entries["e.WAV"].num_samples - 1.0 * 16000) <= 1
    audio = ds.audio(entries["a.wav"])
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(440, abs=2)


def test_import_holds_out_a_seeded_fraction_of_files_per_domain(src, tmp_path):
    """heldout_fraction 0.2 of 5 files holds out one per domain, the same one for the same seed."""
    picks = []
    for i, seed in enumerate((0, 0, 1, 2, 3)):
        ds = Dataset.open(import_folders(src, tmp_path / f"ds{i}", seed=seed, progress=False))
        for d in ds.domains:
            assert len(ds.files(d, "heldout")) == 1 and len(ds.files(d, "train")) == 4
        picks.append(tuple(ds.files(d, "heldout")[0].piece for d in ds.domains))
    assert picks[0] == picks[1] and len(set(picks)) > 1


def test_import_via_cli_prints_the_summary(src, tmp_path, capsys):
    """`umtune data import SRC --out DIR` succeeds and prints the dataset summary."""
    assert _run_import(src, tmp_path / "ds") == 0
    assert "bells" in capsys.readouterr().out


def _corrupt_wav(path: Path) -> None:
    sf.write(path, _tone(1.0, 16000), 16000)
    data = path.read_bytes()
    path.write_bytes(data[:12] + b"fmt " + b"\xff" * 40 + data[56:])  # valid RIFF, broken format


def _corrupt_flac(path: Path) -> None:
    sf.write(path, _tone(2.0, 16000), 16000)
    path.write_bytes(path.read_bytes()[:2000])  # truncated mid-stream


BAD_FILES = {
    "corrupt WAV": ("bad.wav", _corrupt_wav, "corrupt audio"),
    "truncated FLAC": ("bad.flac", _corrupt_flac, "corrupt audio"),
    "empty file": ("bad.ogg", lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "text named .wav": ("bad.wav", lambda p: p.write_text("hello, I am not audio\n"),
                        "not WAV audio"),
    "silent file": ("bad.wav", lambda p: sf.write(p, np.zeros(32000, np.float32), 16000),
                    "silent"),
    "too short": ("bad.flac", lambda p: sf.write(p, _tone(0.5, 16000), 16000),
                  "0.50 s long; expected at least 0.75 s"),
    # resampling from 999,983 Hz would build a 64 GB kernel; 1 Hz is three seconds of junk
    "absurd rate": ("bad.wav", lambda p: sf.write(p, _tone(0.1, 999983), 999983),
                    "declares a sample rate of 999,983 Hz; expected 4,000 to 384,000 Hz"),
    "1 Hz": ("bad.wav", lambda p: sf.write(p, np.array([0.5, -0.5, 0.2], np.float32), 1),
             "declares a sample rate of 1 Hz"),
    "truncated WAV": ("bad.wav", lambda p: (sf.write(p, _tone(2.0, 16000), 16000),
                                            p.write_bytes(p.read_bytes()[:30000])),
                      "truncated WAV, its data chunk declares 64,000 bytes but the file holds "
                      "29,956"),
    "float beyond full scale": ("bad.wav", lambda p: sf.write(p, 5 * _tone(1.0, 16000), 16000,
                                                              subtype="FLOAT"),
                                "float samples peak at 2.5, beyond full scale (1.0), and would "
                                "be clipped"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_stops_the_import_naming_it_and_leaves_nothing(case, src, tmp_path, capsys):
    """A bad file fails the import with its path and the problem; no output is left behind."""
    name, make, message = BAD_FILES[case]
    bad = src / "drone" / name
    make(bad)
    outs = tmp_path / "outs"
    _assert_refused(_run_import(src, outs / "ds"), capsys, str(bad), message, "expected")
    assert not outs.exists()


def test_skip_bad_skips_and_lists_every_bad_file(src, tmp_path, capsys):
    """With --skip-bad, each bad file is skipped, listed on stderr and in the manifest."""
    bad = []
    for i, (name, make, _) in enumerate(BAD_FILES.values()):
        path = src / ("bells", "drone")[i % 2] / f"{i}{name}"
        make(path)
        bad.append(path)
    assert _run_import(src, tmp_path / "ds", "--skip-bad") == 0
    err = capsys.readouterr().err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert sorted(s["path"] for s in manifest["skipped"]) == sorted(str(p) for p in bad)
    for s in manifest["skipped"]:
        assert f"skipped {s['path']}" in err
    assert {s["reason"].split(" ")[0] for s in manifest["skipped"]} >= {"corrupt", "silent"}
    ds = Dataset.open(tmp_path / "ds")
    assert sum(len(ds.files(d, s)) for d in ds.domains for s in ("train", "heldout")) == 10


def test_a_file_at_an_awkward_rate_is_resampled_without_a_huge_kernel(src, tmp_path):
    """44,101 Hz shares no factor with 16 kHz (torchaudio's kernel would be 16000 x 44101):
    scipy's polyphase filter resamples it to the right length and pitch."""
    sf.write(src / "bells" / "odd.wav", _tone(1.5, 44101), 44101)
    ds = Dataset.open(import_folders(src, tmp_path / "ds", progress=False, heldout_fraction=0))
    entry = next(e for e in ds.files("bells", "train") if e.piece.endswith("odd.wav"))
    assert abs(entry.num_samples - 1.5 * 16000) <= 1
    audio = ds.audio(entry)
    peak = np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(np.abs(np.fft.rfft(audio)))]
    assert peak == pytest.approx(440, abs=2)


def test_a_killed_import_leaves_nothing_that_the_next_import_keeps(src, tmp_path):
    """`kill -9` during `data import` leaves its hidden staging folder; the next import of the
    same target removes it and succeeds, leaving only the dataset."""
    for i in range(150):
        sf.write(src / "bells" / f"long{i:03d}.wav", _tone(3.0, 44100), 44100)
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-m", "umtune.cli", "data", "import", str(src),
                             "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        for _ in range(2400):  # until the first audio file is staged (at most 2 minutes)
            if list(tmp_path.glob(".ds.partial-*/audio/*/*.npy")) or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the import ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert list(tmp_path.glob(".ds.partial-*")) and not out.exists()
    assert import_folders(src, out, progress=False) == out.absolute()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]


def test_two_writers_of_one_target_refuse_each_other(src, tmp_path):
    """While one writer holds the target, a second fails at once naming it and the lock."""
    from umtune.data.writer import DatasetWriter

    out = tmp_path / "ds"
    with DatasetWriter(out) as first:
        with pytest.raises(DatasetError, match=f"output directory {out}: another umtune process "
                                               "is writing it"):
            import_folders(src, out, progress=False)
        first.abort()
    assert import_folders(src, out, progress=False) == out.absolute()


def test_a_replacement_cut_between_its_two_renames_is_put_back(src, tmp_path, capsys):
    """--force moves the old dataset aside, then the new one in; killed in between, the target
    is missing: the next writer puts the old dataset back before anything else."""
    out = tmp_path / "ds"
    import_folders(src, out, progress=False)
    manifest = (out / "manifest.json").read_bytes()
    (tmp_path / ".ds.old-x1").mkdir()
    os.replace(out, tmp_path / ".ds.old-x1" / "dataset")
    _assert_refused(_run_import(src, out), capsys, str(out), "already exists")
    assert (out / "manifest.json").read_bytes() == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]


def test_skip_bad_still_refuses_a_domain_with_no_usable_file(src, tmp_path, capsys):
    """If every file of a domain is bad, --skip-bad still fails, naming the folder."""
    for f in (src / "drone").iterdir():
        f.write_bytes(b"")
    outs = tmp_path / "outs"
    _assert_refused(_run_import(src, outs / "ds", "--skip-bad"), capsys,
                    str(src / "drone"), "0 usable audio file(s) of")
    assert not outs.exists()


def test_empty_domain_folder_is_refused(src, tmp_path, capsys):
    """A domain folder without audio files fails, naming the folder."""
    (src / "empty").mkdir()
    (src / "empty" / "README.txt").write_text("no audio here")
    outs = tmp_path / "outs"
    _assert_refused(_run_import(src, outs / "ds"), capsys, str(src / "empty"), "no audio files")
    assert not outs.exists()


def test_fewer_than_two_domains_is_refused(src, tmp_path, capsys):
    """A source with one domain folder fails for import; one instrument fails for chorales."""
    one = tmp_path / "one"
    one.mkdir()
    (src / "bells").rename(one / "bells")
    outs = tmp_path / "outs"
    _assert_refused(_run_import(one, outs / "ds"), capsys, "1 domain folder(s)",
                    "expected at least two")
    code = main(["data", "chorales", "--out", str(outs / "ds"), "--domains", "piano"])
    _assert_refused(code, capsys, "['piano']", "at least two domains")
    assert not outs.exists()


def test_unknown_instrument_is_refused(tmp_path, capsys):
    """An instrument name outside INSTRUMENTS fails, naming it and listing the known ones."""
    outs = tmp_path / "outs"
    code = main(["data", "chorales", "--out", str(outs / "ds"), "--domains", "piano,banjo"])
    _assert_refused(code, capsys, "'banjo'", "expected one of", "violin")
    assert not outs.exists()


def test_existing_output_needs_force(src, tmp_path, capsys):
    """An existing output fails without --force, untouched; --force replaces it."""
    out = tmp_path / "ds"
    assert _run_import(src, out) == 0
    before = (out / "manifest.json").read_bytes()
    _assert_refused(_run_import(src, out, "--seed", "1"), capsys, str(out), "already exists",
                    "--force")
    code = main(["data", "chorales", "--out", str(out), "--domains", "piano,flute"])
    _assert_refused(code, capsys, str(out), "already exists")
    assert (out / "manifest.json").read_bytes() == before
    assert _run_import(src, out, "--seed", "3", "--force") == 0
    assert json.loads((out / "manifest.json").read_text())["provenance"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]  # no staging left


def test_force_never_replaces_a_directory_that_is_not_a_dataset(src, tmp_path, capsys):
    """--force refuses to delete a non-empty directory without a manifest."""
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    _assert_refused(_run_import(src, precious, "--force"), capsys, "not a umtune dataset")
    assert (precious / "thesis.tex").read_text() == "years of work"


def _unwritable_parent(tmp_path: Path) -> Path:
    """A directory in which this process cannot create anything."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        return locked
    try:  # root ignores permission bits; sysfs refuses new directories even to root
        os.mkdir("/sys/umtune-probe")
    except OSError:
        return Path("/sys")
    os.rmdir("/sys/umtune-probe")
    pytest.skip("no unwritable directory available to this (root) process")


def test_unwritable_output_is_refused_before_any_work(src, tmp_path, capsys):
    """An output in an unwritable directory fails at once, naming it, for import and chorales."""
    parent = _unwritable_parent(tmp_path)
    out = parent / "umtune-ds"
    _assert_refused(_run_import(src, out), capsys, str(out), "cannot write there")
    code = main(["data", "chorales", "--out", str(out), "--domains", "piano,flute"])
    _assert_refused(code, capsys, str(out), "expected a writable location")
    assert not out.exists()


def test_library_raises_dataset_error_for_bad_input(src, tmp_path):
    """Library callers get DatasetError (a ValueError) rather than an exit status."""
    with pytest.raises(DatasetError, match="not a directory"):
        import_folders(tmp_path / "missing", tmp_path / "ds")
    with pytest.raises(DatasetError, match="heldout_fraction"):
        import_folders(src, tmp_path / "ds", heldout_fraction=1.5)
    with pytest.raises(DatasetError, match="pieces_per_domain=0"):
        render_chorales(tmp_path / "ds", ChoraleOptions(domains=("piano", "flute"),
                                                        pieces_per_domain=0))
    assert issubclass(DatasetError, ValueError)
    assert not (tmp_path / "ds").exists()


def test_a_failed_render_leaves_no_output(tmp_path, monkeypatch):
    """A failure mid-render (here: a broken FluidSynth) removes the staged dataset."""
    import umtune.data.chorales as chorales

    def broken(*args, **kwargs):
        raise DatasetError("FluidSynth rendering x.mid failed (exit 1): simulated")

    monkeypatch.setattr(chorales, "render_midi", broken)
    outs = tmp_path / "outs"
    with pytest.raises(DatasetError, match="simulated"):
        render_chorales(outs / "ds", ChoraleOptions(domains=("piano", "flute"),
                                                    pieces_per_domain=1, heldout_pieces=1,
                                                    max_piece_seconds=2), progress=False)
    assert not outs.exists()


def test_mp3_aiff_and_opus_import_and_other_files_are_listed_as_skipped(src, tmp_path, capsys):
    """Formats the bundled libsndfile decodes are imported; a README and a broken symbolic link
    are listed on stderr and in the manifest with the reason, not silently left out."""
    sf.write(src / "bells" / "f.mp3", _tone(1.5, 44100), 44100, format="MP3")
    sf.write(src / "drone" / "g.aiff", _tone(1.0, 16000, 220.0), 16000, format="AIFF")
    sf.write(src / "drone" / "h.opus", 0.6 * _tone(1.0, 48000, 220.0), 48000, format="OGG",
             subtype="OPUS")  # (libsndfile's Opus round trip raises the level)
    (src / "bells" / "README.txt").write_text("notes")
    (src / "drone" / "gone.wav").symlink_to(src / "nowhere.wav")
    assert _run_import(src, tmp_path / "ds") == 0
    err = capsys.readouterr().err
    assert f"skipped {src / 'bells' / 'README.txt'}: not an audio file name" in err
    assert f"skipped {src / 'drone' / 'gone.wav'}: a broken symbolic link" in err
    ds = Dataset.open(tmp_path / "ds")
    pieces = {e.piece for d in ds.domains for s in ("train", "heldout") for e in ds.files(d, s)}
    assert {"bells/f.mp3", "drone/g.aiff", "drone/h.opus"} <= pieces
    assert {s["reason"] for s in ds.manifest["skipped"]} == {
        "a broken symbolic link", "not an audio file name (expected one of .wav, .flac, .ogg, "
        ".opus, .mp3, .aiff, .aif, .caf, .au)"}


@pytest.mark.parametrize(("name", "problem"), [("type", "reserved name"), ("a.b", "holds '.'"),
                                               ("train_data", "look like a dataset's splits")])
def test_a_folder_that_cannot_name_a_domain_is_refused_at_import(src, tmp_path, capsys, name,
                                                                 problem):
    """A name that would break the model's module keys, or that looks like a split (MusicNet's
    train_data/test_data), is refused before anything is read, naming the folder."""
    os.rename(src / "drone", src / name)
    _assert_refused(_run_import(src, tmp_path / "outs" / "ds"), capsys, name, problem)
    assert not (tmp_path / "outs").exists()


def test_a_domain_with_one_usable_file_is_refused_at_import(src, tmp_path, capsys):
    """One file cannot give a training and a held-out split: refused at import, not after an
    epoch of training."""
    for f in ("b.flac", "c.ogg", "d.wav", "e.WAV"):
        (src / "drone" / f).unlink()
    _assert_refused(_run_import(src, tmp_path / "outs" / "ds"), capsys,
                    str(src / "drone"), "1 usable audio file(s) of 1; expected at least two")
    assert not (tmp_path / "outs").exists()


def test_an_import_into_its_own_source_is_refused(src, capsys):
    _assert_refused(_run_import(src, src / "ds"), capsys, "lies in the import source")
    assert not (src / "ds").exists()


METADATA = """id,composer,composition,movement,ensemble,source,transcriber,catalog_name,seconds
1727,Schubert,Piano Quintet in A major,2. Andante,Piano Quintet,European Archive,x,D667,447
2186,Bach,Cello Suite 4,1. Prelude,Solo Cello,Musopen,x,BWV1010,240
2217,Bach,Cello Suite 3,3. Courante,Solo Cello,Musopen,x,BWV1009,201
2298,Bach,Cello Suite 3,1. Prelude,Solo Cello,Musopen,x,BWV1009,213
2300,Bach,Cello Suite 3,2. Allemande,Solo Cello,Musopen,x,BWV1009,234
2302,Bach,Prelude and Fugue in C major,1. Prelude,Solo Piano,Musopen,x,WTCI,120
2303,Bach,Prelude and Fugue in C major,2. Fugue,Solo Piano,Musopen,x,WTCI,130
2304,Bach,Prelude and Fugue in C minor,1. Prelude,Solo Piano,Musopen,x,WTCI,100
"""


@pytest.fixture
def musicnet(tmp_path) -> Path:
    """MusicNet's layout in miniature: 44.1 kHz stereo WAV in train_data/ and test_data/ named
    by id, and musicnet_metadata.csv with its real columns (a few real rows, audio made up)."""
    root = tmp_path / "musicnet"
    for folder, ids in (("train_data", ("1727", "2186", "2217", "2300", "2302", "2304")),
                        ("test_data", ("2298", "2303"))):
        (root / folder).mkdir(parents=True)
        for rid in ids:
            sf.write(root / folder / f"{rid}.wav", _tone(1.0, 44100, 200.0 + int(rid) % 100,
                                                         channels=2), 44100)
    (root / "musicnet_metadata.csv").write_text(METADATA)
    return root


def test_musicnet_imports_one_domain_per_ensemble_and_composer_with_its_test_split(
        musicnet, tmp_path, capsys):
    """Each asked-for (ensemble, composer) is a domain of its recordings, MusicNet's test
    recordings held out; `data import` on the same folder is refused with a pointer here."""
    out = tmp_path / "ds"
    assert main(["data", "musicnet", str(musicnet), "--out", str(out), "--sample-rate", "8000",
                 "--domains", "Solo Cello:Bach, Solo Piano:Bach"]) == 0
    data = Dataset.open(out)
    assert data.domains == ("bach_solo_cello", "bach_solo_piano") and data.sample_rate == 8000
    pieces = {(d, s): sorted(Path(f.piece).stem for f in data.files(d, s))
              for d in data.domains for s in ("train", "heldout")}
    assert pieces == {("bach_solo_cello", "train"): ["2186", "2217", "2300"],
                      ("bach_solo_cello", "heldout"): ["2298"],
                      ("bach_solo_piano", "train"): ["2302", "2304"],
                      ("bach_solo_piano", "heldout"): ["2303"]}
    assert {f.num_samples for d, s in pieces for f in data.files(d, s)} == {8000}  # 1 s
    _assert_refused(_run_import(musicnet, tmp_path / "other"), capsys, "train_data",
                    "umtune data musicnet")


def test_musicnet_refuses_what_it_lacks_and_says_what_it_has(musicnet, tmp_path, capsys):
    """The paper's domains are named when missing, with the pairs the metadata has; a domain
    with no test recording holds out a seeded share; a listed recording with no file is named
    (or skipped and listed with --skip-bad); a folder without the metadata is named."""
    def run(*args):
        return main(["data", "musicnet", str(musicnet), "--out", str(tmp_path / "ds"),
                     "--force", *args])

    _assert_refused(run(), capsys, "no recordings of ['Accompanied Violin:Beethoven',",
                    "it has Piano Quintet:Schubert, Solo Cello:Bach, Solo Piano:Bach")
    _assert_refused(run("--domains", "Solo Cello"), capsys, "expected ENSEMBLE:COMPOSER")
    (musicnet / "test_data" / "2298.wav").rename(musicnet / "train_data" / "2298.wav")
    assert run("--domains", "Solo Cello:Bach,Solo Piano:Bach", "--heldout-fraction", "0.25") == 0
    cello = Dataset.open(tmp_path / "ds")
    assert (len(cello.files("bach_solo_cello", "train")),
            len(cello.files("bach_solo_cello", "heldout"))) == (3, 1)  # a quarter of four
    (musicnet / "train_data" / "2217.wav").unlink()
    _assert_refused(run("--domains", "Solo Cello:Bach,Solo Piano:Bach"), capsys,
                    "recording 2217 (Solo Cello, Bach) of musicnet_metadata.csv is in neither")
    assert run("--domains", "Solo Cello:Bach,Solo Piano:Bach", "--skip-bad") == 0
    assert "umtune: skipped " in capsys.readouterr().err
    data = Dataset.open(tmp_path / "ds")
    assert sum(len(data.files(d, s)) for d in data.domains for s in ("train", "heldout")) == 6
    (musicnet / "musicnet_metadata.csv").unlink()
    _assert_refused(run(), capsys, f"MusicNet root {musicnet}: no musicnet_metadata.csv")
