"""The built-in dataset: Bach from music21's corpus, rendered per instrument with FluidSynth.

`render_chorales` writes a dataset with three splits:
- train: each training domain plays its own pieces, disjoint from every other domain's, so
  training never sees a parallel pair (the method is unsupervised; Mor et al. 2018, section 3);
- heldout: separate pieces rendered on every training domain and on the unseen domain (GM
  "Whistle"), time-aligned (one piece has the same length on every domain): parallel ground truth;
- notes: every domain, the unseen one included, playing isolated notes over a pitch range, each
  file labelled with its MIDI pitch (NSynth-style; for the paper's pitch/embedding analysis).

Pieces are MusicXML works from `music21.corpus.getComposer('bach')` (mostly four-part chorales),
chosen by a seeded permutation of the sorted list; only the chosen ones are parsed. Each piece
becomes a MIDI file with one channel per part (see midi.py) rendered by FluidSynth (render.py)
in parallel threads while the next pieces parse. The output is deterministic for a given seed
and options: same pieces, same MIDI bytes, same FluidSynth, same int16 arrays.
"""

from __future__ import annotations

import shutil
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from umtune.config import DEFAULT_DOMAINS
from umtune.data.errors import DatasetError
from umtune.data.instruments import INSTRUMENTS, UNSEEN_DOMAIN, check_domains
from umtune.data.midi import (
    Note,
    crop,
    end_time,
    monophonic,
    note_sequence,
    score_notes,
    write_midi,
)
from umtune.data.render import (
    check_soundfont,
    fluidsynth_binary,
    fluidsynth_version,
    render_midi,
    sha256,
)
from umtune.data.writer import DatasetWriter

PEAK = 0.9  # every stored file is peak-normalised to this amplitude
TAIL_SECONDS = 1.0  # kept after the last note ends, for the release
FADE_SECONDS = 0.05  # fade-out at the cut, so a release cut short does not click
MIN_PIECE_SECONDS = 4.0  # shorter (or empty) corpus entries are passed over
CORPUS_SUFFIXES = (".mxl", ".xml")  # MusicXML works; skips analyses (.rntxt) and .krn duplicates


@dataclass(frozen=True)
class _Job:
    """One FluidSynth render: a piece (or a note sequence) on one domain."""

    split: str
    domain: str
    piece: str
    parts: list[list[Note]]
    num_samples: int  # of a piece; of each note's slice for the note set
    relpath: str  # of a piece; folder of the note files for the note set
    pitches: tuple[int, ...] = ()


def bach_corpus() -> list[tuple[str, Path]]:
    """(piece id, file) of the Bach MusicXML works in music21's corpus, sorted by id.

    Piece ids are like "bach/bwv1.6.mxl".
    """
    from music21 import corpus

    found = []
    for path in corpus.getComposer("bach"):
        path = Path(path)
        if path.suffix in CORPUS_SUFFIXES:
            found.append((f"{path.parent.name}/{path.name}", path))
    return sorted(found)


def _parse_piece(path: Path, *, bpm: float, max_seconds: float | None) -> list[list[Note]] | None:
    """The piece's notes per part, or None if it cannot be parsed or is too short to use."""
    from music21 import converter

    try:
        parts = crop(score_notes(converter.parse(path), bpm=bpm), max_seconds)
    except Exception:  # noqa: BLE001 - a corpus file music21 cannot read is simply passed over
        return None
    shortest = min(MIN_PIECE_SECONDS, max_seconds or MIN_PIECE_SECONDS)
    return parts if parts and end_time(parts) >= shortest else None


def _normalise(audio: np.ndarray, what: str) -> np.ndarray:
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    if peak < 1e-4:
        raise DatasetError(f"FluidSynth rendered silence for {what}; expected audible audio "
                           f"(does the SoundFont cover this instrument and pitch?)")
    return audio * np.float32(PEAK / peak)


def _fit(audio: np.ndarray, num_samples: int, sample_rate: int) -> np.ndarray:
    """Crop or zero-pad to `num_samples`, fading out the last FADE_SECONDS if cropped."""
    if audio.shape[0] >= num_samples:
        audio = audio[:num_samples].copy()
        fade = min(num_samples, int(FADE_SECONDS * sample_rate))
        audio[num_samples - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        return audio
    return np.pad(audio, (0, num_samples - audio.shape[0]))


def _run_job(job: _Job, index: int, writer: DatasetWriter, scratch: Path, soundfont: Path,
             sample_rate: int) -> list[tuple[str, int, dict]]:
    """Render one job and write its audio; returns (relpath, num_samples, entry) per file."""
    midi = write_midi(scratch / f"{index:05d}.mid", job.parts, INSTRUMENTS[job.domain])
    wav = scratch / f"{index:05d}.wav"
    seconds = end_time(job.parts)
    audio = render_midi(midi, wav, soundfont=soundfont, sample_rate=sample_rate,
                        expected_seconds=seconds)
    wav.unlink()
    midi.unlink()
    base = {"split": job.split, "domain": job.domain}
    if not job.pitches:
        what = f"{job.piece} on {job.domain}"
        audio = _normalise(_fit(audio, job.num_samples, sample_rate), what)
        n = writer.write(job.relpath, audio)
        return [(job.relpath, n, {**base, "piece": job.piece, "pitch": None})]
    audio = _fit(audio, job.num_samples * len(job.pitches), sample_rate)
    out = []
    for i, pitch in enumerate(job.pitches):
        note = audio[i * job.num_samples:(i + 1) * job.num_samples]
        note = _normalise(note, f"MIDI pitch {pitch} on {job.domain}")
        relpath = f"{job.relpath}/pitch{pitch:03d}.npy"
        out.append((relpath, writer.write(relpath, note),
                    {**base, "piece": f"note{pitch:03d}", "pitch": pitch}))
    return out


@dataclass(frozen=True)
class ChoraleOptions:
    """What `render_chorales` renders; the same options and seed give byte-identical audio.

    domains: training instruments, names from INSTRUMENTS (at least two).
    sample_rate: Hz; FluidSynth renders at this rate directly (mono after a downmix).
    pieces_per_domain: training pieces of each domain (disjoint across domains).
    heldout_pieces: pieces rendered on every domain and on the unseen "whistle".
    seed: chooses the pieces.
    note_pitches: MIDI pitches of the note set (empty: no note set).
    note_seconds: how long each note is held; each note file is 1.5x this long.
    max_piece_seconds: crop every piece to this many seconds (None: whole pieces).
    bpm: fixed tempo, quarter notes per minute.
    lines: render each part of a piece as its own file, one note at a time (`monophonic`;
        piece ids get "#partN"): single melodic lines instead of four-voice chords.
    """

    domains: tuple[str, ...] = DEFAULT_DOMAINS
    sample_rate: int = 16000
    pieces_per_domain: int = 8
    heldout_pieces: int = 6
    seed: int = 0
    note_pitches: tuple[int, ...] = tuple(range(48, 85, 3))
    note_seconds: float = 1.0
    max_piece_seconds: float | None = None
    bpm: float = 100.0
    lines: bool = False

    def __post_init__(self):
        object.__setattr__(self, "domains", check_domains(self.domains))
        object.__setattr__(self, "note_pitches", tuple(int(p) for p in self.note_pitches))
        pitches = self.note_pitches
        checks = [
            (8000 <= self.sample_rate <= 96000, "sample_rate", "8000..96000 Hz (FluidSynth's "
             "range)"),
            (self.pieces_per_domain >= 1, "pieces_per_domain", ">= 1"),
            (self.heldout_pieces >= 1, "heldout_pieces", ">= 1"),
            (all(0 <= p <= 127 for p in pitches) and len(set(pitches)) == len(pitches),
             "note_pitches", "distinct MIDI pitches in 0..127"),
            (self.note_seconds > 0, "note_seconds", "> 0"),
            (self.max_piece_seconds is None or self.max_piece_seconds >= 1, "max_piece_seconds",
             "None or >= 1 second"),
            (self.bpm > 0, "bpm", "> 0"),
        ]
        for ok, name, expected in checks:
            if not ok:
                raise DatasetError(f"{name}={getattr(self, name)!r}: expected {expected}")


def render_chorales(out: Path | str, options: ChoraleOptions = ChoraleOptions(), *,
                    force: bool = False, soundfont: Path | str | None = None, workers: int = 2,
                    progress: bool = True) -> Path:
    """Render Bach from music21's corpus into a dataset at `out`, as `options` say; returns
    `out`.

    Args:
        out: the dataset directory to create (replaced only with `force`).
        force: replace an existing dataset at `out`.
        soundfont: a General MIDI .sf2 (default FluidR3_GM).
        workers: FluidSynth processes run at once.
        progress: show progress bars on stderr.
    """
    if workers < 1:
        raise DatasetError(f"workers={workers!r}: expected >= 1")
    domains, sample_rate = options.domains, options.sample_rate
    pieces_per_domain, heldout_pieces = options.pieces_per_domain, options.heldout_pieces
    fluidsynth_binary()
    soundfont = check_soundfont(soundfont)
    unseen = () if UNSEEN_DOMAIN in domains else (UNSEEN_DOMAIN,)
    corpus = bach_corpus()
    needed = heldout_pieces + pieces_per_domain * len(domains)
    if needed > len(corpus):
        raise DatasetError(f"{needed} pieces requested ({heldout_pieces} held out + "
                           f"{pieces_per_domain} x {len(domains)} domains); expected at most "
                           f"{len(corpus)}, the Bach works in music21's corpus")
    order = np.random.default_rng(options.seed).permutation(len(corpus))

    with DatasetWriter(out, force=force) as writer:
        scratch = writer.staging / ".scratch"
        scratch.mkdir()
        jobs: list[_Job] = []
        futures: list[Future] = []
        total = (len(domains) + len(unseen)) * (bool(options.note_pitches) + heldout_pieces) \
            + pieces_per_domain * len(domains)
        bar = tqdm(total=total, desc="render", unit="file", disable=not progress,
                   file=sys.stderr)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            def submit(job: _Job) -> None:
                jobs.append(job)
                fut = pool.submit(_run_job, job, len(jobs), writer, scratch, soundfont,
                                  sample_rate)
                fut.add_done_callback(lambda _: bar.update())
                futures.append(fut)

            try:
                if options.note_pitches:  # no parsing: keeps FluidSynth busy while pieces parse
                    note_len = round(1.5 * options.note_seconds * sample_rate)
                    parts = note_sequence(options.note_pitches, note_seconds=options.note_seconds,
                                          gap_seconds=0.5 * options.note_seconds)
                    for d in domains + unseen:
                        submit(_Job("notes", d, "notes", parts, note_len, f"audio/notes/{d}",
                                    options.note_pitches))
                chosen, skipped = _choose(corpus, order, needed, options.bpm,
                                          options.max_piece_seconds, progress)
                if options.lines:  # the bar's first guess counted one file per piece
                    bar.total += sum(len(parts) - 1 for _, parts in chosen[:heldout_pieces]) \
                        * len(domains + unseen) + sum(len(parts) - 1 for _, parts in
                                                      chosen[heldout_pieces:])
                    bar.refresh()
                for k, (piece, parts) in enumerate(chosen):
                    if k < heldout_pieces:
                        split, on = "heldout", domains + unseen
                    else:
                        split, on = "train", (domains[(k - heldout_pieces) // pieces_per_domain],)
                    n = round((end_time(parts) + TAIL_SECONDS) * sample_rate)
                    name = Path(piece).stem
                    files = ([(f"#part{i}", [monophonic(part)]) for i, part in enumerate(parts)]
                             if options.lines else [("", parts)])
                    for suffix, notes in files:
                        for d in on:
                            submit(_Job(split, d, piece + suffix, notes, n,
                                        f"audio/{split}/{d}/{name}{suffix.replace('#', '-')}.npy"))
                results = [f.result() for f in futures]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
            finally:
                bar.close()
        for files in results:
            for relpath, n, entry in files:
                writer.add(relpath, n, **entry)
        shutil.rmtree(scratch)
        pieces = [p for p, _ in chosen]
        provenance = {
            "corpus": "music21 bundled corpus, composer 'bach' (MusicXML works)",
            "music21_version": _music21_version(),
            "pieces": {"heldout": pieces[:heldout_pieces],
                       "train": {d: pieces[heldout_pieces + i * pieces_per_domain:
                                           heldout_pieces + (i + 1) * pieces_per_domain]
                                 for i, d in enumerate(domains)}},
            "passed_over": skipped,
            "soundfont": {"path": str(soundfont), "sha256": sha256(soundfont)},
            "programs": {d: INSTRUMENTS[d] for d in domains + unseen},
            "fluidsynth_version": fluidsynth_version(),
            "render": {"reverb": False, "chorus": False, "peak": PEAK,
                       "tail_seconds": TAIL_SECONDS, "channels": "one MIDI channel per part"},
            "options": {k: v for k, v in asdict(options).items() if k not in ("domains", "seed")},
            "seed": options.seed,
        }
        return writer.commit(sample_rate=sample_rate, domains=domains, unseen_domains=unseen,
                             source="chorales", provenance=provenance)


def _choose(corpus: list[tuple[str, Path]], order: np.ndarray, needed: int, bpm: float,
            max_seconds: float | None, progress: bool,
            ) -> tuple[list[tuple[str, list[list[Note]]]], list[str]]:
    """Parse corpus entries in `order` until `needed` usable pieces; returns them and the rest."""
    chosen, skipped = [], []
    with tqdm(total=needed, desc="parse ", unit="piece", disable=not progress,
              file=sys.stderr) as bar:
        for i in order:
            piece, path = corpus[i]
            parts = _parse_piece(path, bpm=bpm, max_seconds=max_seconds)
            if parts is None:
                skipped.append(piece)
                continue
            chosen.append((piece, parts))
            bar.update()
            if len(chosen) == needed:
                return chosen, skipped
    raise DatasetError(f"only {len(chosen)} usable pieces in music21's Bach corpus "
                       f"({len(skipped)} unreadable or too short); expected {needed}")


def _music21_version() -> str:
    import music21

    return music21.__version__
