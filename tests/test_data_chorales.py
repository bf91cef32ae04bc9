"""The built-in dataset, rendered for real: audio, splits, alignment, pitch labels, determinism."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from umtune.data import INSTRUMENTS, UNSEEN_DOMAIN, Dataset, render_chorales


@pytest.fixture(scope="module")
def ds(tiny_dataset) -> Dataset:
    return Dataset.open(tiny_dataset)


def _all_entries(ds: Dataset):
    for domain in ds.domains + ds.unseen_domains:
        for split in ("train", "heldout", "notes"):
            yield from ds.files(domain, split)


def fundamental(x: np.ndarray, sr: int, harmonics: int = 4) -> float:
    """Fundamental frequency (Hz) of a held note: the harmonic-product-spectrum peak, or the
    spectral peak for a nearly pure tone (no energy at half, a third, twice or three times it)."""
    seg = x[int(0.1 * sr):int(0.9 * sr)]
    n = 1 << 17
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    lo = int(np.searchsorted(freqs, 40.0))
    ip = lo + int(np.argmax(spec[lo:]))
    around = [spec[max(int(h * ip) - 20, 0):int(h * ip) + 20].max()
              for h in (1 / 3, 1 / 2, 2, 3) if h * ip < len(spec)]
    if max(around, default=0.0) < 0.01 * spec[ip]:
        return float(freqs[ip])
    m = len(spec) // harmonics
    hps = spec[:m].copy()
    for h in range(2, harmonics + 1):
        hps *= spec[::h][:m]
    return float(freqs[lo + int(np.argmax(hps[lo:]))])


def test_manifest_lists_training_and_unseen_domains(ds, tiny_dataset_options):
    """The manifest names the requested training domains, whistle as unseen, and the rate."""
    assert ds.domains == tiny_dataset_options.domains
    assert ds.unseen_domains == (UNSEEN_DOMAIN,)
    assert ds.sample_rate == 16000
    prov = ds.manifest["provenance"]
    assert prov["programs"] == {d: INSTRUMENTS[d] for d in ds.domains + ds.unseen_domains}
    assert len(prov["soundfont"]["sha256"]) == 64 and prov["fluidsynth_version"]
    assert prov["seed"] == 0


def test_every_file_is_audible_int16_at_the_manifest_length(ds):
    """Every file is a non-silent int16 array whose length and duration match the manifest."""
    entries = list(_all_entries(ds))
    assert len(entries) == 2 * 2 + 3 * 1 + 3 * 4
    for e in entries:
        raw = np.load(e.path, mmap_mode="r")
        assert raw.dtype == np.int16 and raw.ndim == 1
        assert raw.shape[0] == e.num_samples
        assert e.duration == pytest.approx(e.num_samples / ds.sample_rate, abs=1e-5)
        audio = ds.audio(e)
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
        assert np.sqrt(np.mean(audio**2)) > 0.01, f"{e.path} is (nearly) silent"


def test_pieces_are_cropped_to_max_seconds_plus_tail(ds):
    """With max_piece_seconds=4, each piece is at most 4 s of music plus the 1 s release tail."""
    for domain in ds.domains:
        for e in ds.files(domain, "train") + ds.files(domain, "heldout"):
            assert 2.0 < e.duration <= 5.0 + 1e-6


def test_training_pieces_are_disjoint_across_domains_and_from_heldout(ds):
    """No piece is in two domains' training sets, nor in both training and held-out."""
    train = {d: {e.piece for e in ds.files(d, "train")} for d in ds.domains}
    assert all(len(p) == 2 for p in train.values())
    heldout = {e.piece for e in ds.files(ds.domains[0], "heldout")}
    seen = set()
    for pieces in train.values():
        assert not pieces & seen and not pieces & heldout
        seen |= pieces
    assert ds.files(UNSEEN_DOMAIN, "train") == []


def test_heldout_is_time_aligned_across_all_domains(ds):
    """Every domain, unseen included, has the same held-out pieces with identical lengths."""
    ref = {e.piece: e.num_samples for e in ds.files(ds.domains[0], "heldout")}
    assert len(ref) == 1
    for domain in ds.domains + ds.unseen_domains:
        assert {e.piece: e.num_samples for e in ds.files(domain, "heldout")} == ref


def test_heldout_renders_differ_by_instrument(ds):
    """The same held-out piece sounds different on each instrument (different timbre)."""
    clips = [ds.audio(ds.files(d, "heldout")[0]) for d in ds.domains + ds.unseen_domains]
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert not np.allclose(clips[i], clips[j], atol=0.05)


def test_note_set_fundamentals_match_their_midi_pitch(ds, tiny_dataset_options):
    """Each note file's measured fundamental is within a semitone of its labelled MIDI pitch."""
    pitches = tiny_dataset_options.note_pitches
    for domain in ds.domains + ds.unseen_domains:
        entries = ds.files(domain, "notes")
        assert [e.pitch for e in entries] == list(pitches)
        for e in entries:
            f0 = fundamental(ds.audio(e), ds.sample_rate)
            measured = 69 + 12 * np.log2(f0 / 440.0)
            assert abs(measured - e.pitch) < 1.0, (domain, e.pitch, measured)


def test_same_seed_and_options_give_byte_identical_audio(tiny_dataset, tiny_dataset_options,
                                                         tmp_path):
    """A second render with the same seed and options writes identical arrays and manifest."""
    again = render_chorales(tmp_path / "again", tiny_dataset_options, progress=False)
    first = json.loads((tiny_dataset / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first == second
    for f in first["files"]:
        a = np.load(tiny_dataset / f["path"])
        b = np.load(again / f["path"])
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f["path"]



def test_lines_render_each_voice_as_its_own_parallel_file(tiny_dataset_options, tmp_path):
    """With `lines`, every piece becomes one file per voice ("#partN"), each voice rendered on
    every held-out domain at the piece's length (parallel ground truth), and the voices of a
    piece together hold the piece's notes."""
    options = replace(tiny_dataset_options, lines=True, note_pitches=(), pieces_per_domain=1)
    ds = Dataset.open(render_chorales(tmp_path / "lines", options, progress=False))
    held = {d: {e.piece: e.num_samples for e in ds.files(d, "heldout")}
            for d in ds.domains + ds.unseen_domains}
    pieces = held["piano"]
    assert len(pieces) >= 2 and all("#part" in p for p in pieces)
    assert all(h == pieces for h in held.values())
    assert len(set(pieces.values())) == 1  # every voice at the piece's length
    train = ds.files("piano", "train")
    assert len({e.piece.split("#")[0] for e in train}) == 1 and len(train) >= 2
    assert ds.manifest["provenance"]["options"]["lines"] is True
