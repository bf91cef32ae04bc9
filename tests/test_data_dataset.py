"""The dataset on disk: opening, whole files, seeded and sharded random segments, the summary."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from umtune.cli import main
from umtune.data import Dataset, DatasetError
from umtune.data.writer import DatasetWriter


@pytest.fixture(scope="module")
def ds(tiny_dataset) -> Dataset:
    return Dataset.open(tiny_dataset)


@pytest.fixture
def ramps(tmp_path) -> Dataset:
    """Two training files of one domain whose samples encode (file, position): +ramp and -ramp."""
    with DatasetWriter(tmp_path / "ramps") as w:
        for name, sign, n in (("a", 1, 10_000), ("b", -1, 30_000)):
            w.save(f"audio/{name}.npy", sign * np.arange(1, n + 1) / 32767.0, split="train",
                   domain="x", piece=name, pitch=None)
        w.save("audio/y.npy", np.full(20_000, 0.5), split="train", domain="y", piece="y",
               pitch=None)
        path = w.commit(sample_rate=16000, domains=("x", "y"), unseen_domains=())
    return Dataset.open(path)


def test_segments_have_the_requested_shape_dtype_and_range(ds):
    """A batch of training segments is float32 (count, length) within [-1, 1] and not silent."""
    seg = ds.segments("piano", "train", 12, 12000, np.random.default_rng(0))
    assert seg.shape == (12, 12000) and seg.dtype == np.float32
    assert np.abs(seg).max() <= 1.0 and np.abs(seg).max() > 0.01


def test_segments_are_exact_slices_of_the_files(ramps):
    """Each segment is a contiguous slice of one file, inside its bounds."""
    seg = ramps.segments("x", "train", 200, 5000, np.random.default_rng(1))
    values = np.round(seg * 32768).astype(np.int64)
    for row in values:
        length = 10_000 if row[0] > 0 else 30_000
        start = abs(row[0])
        assert 1 <= start and start + 4999 <= length
        assert np.array_equal(np.abs(row), np.arange(start, start + 5000))


def test_files_are_drawn_in_proportion_to_their_segment_starts(ramps):
    """A file offering 5x the segment starts is drawn about 5x as often (25001 vs 5001)."""
    seg = ramps.segments("x", "train", 20_000, 5000, np.random.default_rng(2))
    share_b = np.mean(seg[:, 0] < 0)
    assert share_b == pytest.approx(25001 / 30002, abs=0.02)


def test_same_generator_state_gives_the_same_segments(ds):
    """Segments depend only on the generator: the same seed reads the same audio."""
    a = ds.segments("flute", "train", 8, 4000, np.random.default_rng(5))
    b = ds.segments("flute", "train", 8, 4000, np.random.default_rng(5))
    c = ds.segments("flute", "train", 8, 4000, np.random.default_rng(6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_two_ranks_together_read_exactly_what_one_worker_reads(ds):
    """Rows of rank 0 and rank 1 (world_size 2) interleave into the world_size 1 batch."""
    full = ds.segments("piano", "train", 12, 4000, np.random.default_rng(9))
    r0 = ds.segments("piano", "train", 12, 4000, np.random.default_rng(9), rank=0, world_size=2)
    r1 = ds.segments("piano", "train", 12, 4000, np.random.default_rng(9), rank=1, world_size=2)
    assert r0.shape == r1.shape == (6, 4000)
    assert np.array_equal(full[0::2], r0) and np.array_equal(full[1::2], r1)


def test_ranks_leave_their_generators_in_the_same_state(ds):
    """Every rank consumes the same random numbers, so their next batches stay in step."""
    rngs = [np.random.default_rng(3) for _ in range(2)]
    for rank, rng in enumerate(rngs):
        ds.segments("piano", "train", 4, 4000, rng, rank=rank, world_size=2)
    assert rngs[0].integers(1 << 30) == rngs[1].integers(1 << 30)


def test_count_not_divisible_by_world_size_is_an_error(ds):
    """A batch that cannot be split evenly across workers raises DatasetError."""
    with pytest.raises(DatasetError, match="multiple of world_size 2"):
        ds.segments("piano", "train", 5, 4000, np.random.default_rng(0), rank=0, world_size=2)


def test_segment_longer_than_every_file_is_an_error(ds):
    """Asking for segments longer than any file names the domain and the longest file."""
    longest = max(e.num_samples for e in ds.files("piano", "train"))
    with pytest.raises(DatasetError, match=rf"'piano'.*longest {longest} samples"):
        ds.segments("piano", "train", 2, longest + 1, np.random.default_rng(0))


def test_segments_of_a_split_without_files_is_an_error(ds):
    """The unseen domain has no training files: segments says so."""
    with pytest.raises(DatasetError, match="no 'train' files for domain 'whistle'"):
        ds.segments("whistle", "train", 2, 4000, np.random.default_rng(0))


def test_unknown_domain_or_split_is_an_error(ds):
    """files() names the unknown domain or split and lists the valid ones."""
    with pytest.raises(DatasetError, match="'cello'.*piano, flute, whistle"):
        ds.files("cello", "train")
    with pytest.raises(DatasetError, match="'valid'.*train, heldout, notes"):
        ds.files("piano", "valid")


def test_audio_is_memory_mapped_int16_on_disk(ds):
    """Files load as read-only memory maps; audio() scales them to float32."""
    e = ds.files("piano", "train")[0]
    mm = np.load(e.path, mmap_mode="r")
    assert isinstance(mm, np.memmap) and mm.dtype == np.int16
    assert np.allclose(ds.audio(e), mm / 32768.0)


def test_a_dataset_pickles_and_reads_the_same_after(ds):
    """A Dataset travels to a worker process by pickle (without its open memory maps)."""
    ds.segments("piano", "train", 2, 4000, np.random.default_rng(0))
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.domains == ds.domains
    assert np.array_equal(copy.segments("piano", "train", 2, 4000, np.random.default_rng(0)),
                          ds.segments("piano", "train", 2, 4000, np.random.default_rng(0)))


def test_summary_tables_domains_splits_files_and_minutes(ds, tiny_dataset, capsys):
    """The summary (library and `umtune data summary`) lists every domain, split and the rate."""
    text = ds.summary()
    for word in ("piano", "flute", "whistle (unseen)", "train files", "heldout min", "notes",
                 "16000 Hz", "total"):
        assert word in text
    assert main(["data", "summary", str(tiny_dataset)]) == 0
    assert capsys.readouterr().out.strip() == text


def test_manifest_of_an_unknown_version_is_refused(tiny_dataset, tmp_path, capsys):
    """Opening a manifest with format_version 99 fails, naming the file and the known version."""
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    (tmp_path / "future").mkdir()
    (tmp_path / "future" / "manifest.json").write_text(json.dumps({**manifest,
                                                                   "format_version": 99}))
    with pytest.raises(DatasetError, match="format_version 99 is unknown; expected format_v"):
        Dataset.open(tmp_path / "future")
    assert main(["data", "summary", str(tmp_path / "future")]) == 2
    assert "future/manifest.json: format_version 99" in capsys.readouterr().err


def test_a_directory_without_manifest_is_refused(tmp_path):
    """Opening a directory that is not a dataset names the missing manifest."""
    with pytest.raises(DatasetError, match="no manifest.json"):
        Dataset.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        Dataset.open(tmp_path)
