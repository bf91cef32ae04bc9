"""Scores to MIDI files that FluidSynth renders safely: one channel per part, every note closed.

A music21 score becomes a list of parts, each a list of `Note`s in seconds (fixed tempo; ties
merged, grace notes dropped), which `write_midi` writes as a Standard MIDI File.

Why not music21's own MIDI export: it can put every part on one channel; two parts sounding the
same pitch then overlap on that channel, a note-off closes only one of them, the other note never
ends and FluidSynth renders forever (one such file grew to 21 GB). Here each part gets its own
channel (never channel 10, the GM drum channel), overlapping notes of one pitch on a channel are
cut where the next begins, and each note-on is paired with its note-off by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# MIDI channels 0..15 except 9 (GM percussion).
CHANNELS = tuple(c for c in range(16) if c != 9)
TICKS_PER_SECOND = 1000  # ticks per quarter = 1000 at 60 bpm: one tick is one millisecond


@dataclass(frozen=True)
class Note:
    """One sounding note: start and end in seconds, MIDI pitch and velocity."""

    start: float
    end: float
    pitch: int
    velocity: int = 80


def score_notes(score, *, bpm: float = 100.0, velocity: int = 80) -> list[list[Note]]:
    """The notes of each part of a music21 score, timed at a fixed `bpm` (quarter notes/min).

    Ties are merged into one note, chords give one note per pitch, grace notes (no duration) and
    pitches outside MIDI's 0..127 are dropped. Parts without notes are left out.
    """
    seconds_per_quarter = 60.0 / bpm
    parts = []
    for part in score.parts:
        notes = []
        for n in part.stripTies().flatten().notes:
            length = float(n.duration.quarterLength)
            if length <= 0:
                continue
            start = float(n.offset) * seconds_per_quarter
            end = start + length * seconds_per_quarter
            for p in n.pitches:
                if 0 <= p.midi <= 127:
                    notes.append(Note(start, end, int(p.midi), velocity))
        if notes:
            parts.append(sorted(notes, key=lambda x: (x.start, x.pitch)))
    return parts


def crop(parts: Sequence[Sequence[Note]], max_seconds: float | None) -> list[list[Note]]:
    """Keep what sounds before `max_seconds`, cutting notes that cross it (None: keep all)."""
    if max_seconds is None:
        return [list(p) for p in parts]
    out = []
    for part in parts:
        kept = [Note(n.start, min(n.end, max_seconds), n.pitch, n.velocity)
                for n in part if n.start < max_seconds]
        if kept:
            out.append(kept)
    return out


def monophonic(part: Sequence[Note]) -> list[Note]:
    """One note at a time: of notes starting together the highest is kept, and a note still
    sounding when the next starts is cut there (a chorale voice is already one line)."""
    firsts: dict[float, Note] = {}
    for n in part:
        if n.start not in firsts or n.pitch > firsts[n.start].pitch:
            firsts[n.start] = n
    notes = [firsts[t] for t in sorted(firsts)]
    return [Note(n.start, min(n.end, nxt.start), n.pitch, n.velocity)
            for n, nxt in zip(notes, notes[1:], strict=False)] + notes[-1:]


def end_time(parts: Sequence[Sequence[Note]]) -> float:
    """When the last note of any part ends, in seconds (0 for no notes)."""
    return max((n.end for part in parts for n in part), default=0.0)


Tick = tuple[int, int, int, int]  # (start, end, pitch, velocity) in ticks


def _closed_channel_notes(notes: list[Tick]) -> list[Tick]:
    """(start, end, pitch, velocity) ticks on one channel with no same-pitch overlap.

    A note still sounding when the same pitch starts again is cut at that moment, so each
    note-off closes exactly one note-on. Of two notes that start together, the longer is kept.
    """
    notes = sorted(notes, key=lambda n: (n[0], n[2], n[1]))
    last: dict[int, int] = {}  # pitch -> index in `out` of its latest note
    out: list[list[int]] = []
    for start, end, pitch, velocity in notes:
        if pitch in last and out[last[pitch]][1] > start:
            out[last[pitch]][1] = start
        last[pitch] = len(out)
        out.append([start, max(end, start + 1), pitch, velocity])
    return [tuple(n) for n in out if n[1] > n[0]]


def _vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    chunks = [value & 0x7F]
    value >>= 7
    while value:
        chunks.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(chunks))


def midi_bytes(parts: Sequence[Sequence[Note]], program: int) -> bytes:
    """A type-0 Standard MIDI File playing `parts` on `program`, one channel per part.

    Parts beyond the 15 usable channels share channels cyclically (still overlap-free).
    """
    if not 0 <= program <= 127:
        raise ValueError(f"General MIDI program {program}: expected 0..127")
    per_channel: dict[int, list[Tick]] = {}
    for i, part in enumerate(parts):
        channel = CHANNELS[i % len(CHANNELS)]
        per_channel.setdefault(channel, []).extend(
            (round(n.start * TICKS_PER_SECOND), round(n.end * TICKS_PER_SECOND),
             int(n.pitch), int(n.velocity)) for n in part)
    # (tick, order, message): at one tick, set-up first, then note-offs, then note-ons.
    tempo = b"\xff\x51\x03" + (1_000_000).to_bytes(3, "big")  # 1 s per quarter note
    events: list[tuple[int, int, bytes]] = [(0, 0, tempo)]
    for channel, notes in sorted(per_channel.items()):
        events.append((0, 1, bytes([0xC0 | channel, program])))
        events.append((0, 1, bytes([0xB0 | channel, 7, 100])))  # channel volume
        events.append((0, 1, bytes([0xB0 | channel, 10, 64])))  # pan: centre
        for start, end, pitch, velocity in _closed_channel_notes(notes):
            events.append((start, 3, bytes([0x90 | channel, pitch, velocity])))
            events.append((end, 2, bytes([0x80 | channel, pitch, 0])))
    events.sort(key=lambda e: (e[0], e[1]))
    track = bytearray()
    now = 0
    for tick, _, message in events:
        track += _vlq(tick - now) + message
        now = tick
    track += _vlq(0) + b"\xff\x2f\x00"  # end of track
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    header += TICKS_PER_SECOND.to_bytes(2, "big")  # ticks per quarter; tempo 1 s per quarter
    return header + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def write_midi(path: Path, parts: Sequence[Sequence[Note]], program: int) -> Path:
    """Write `midi_bytes(parts, program)` to `path`."""
    path = Path(path)
    path.write_bytes(midi_bytes(parts, program))
    return path


def note_sequence(pitches: Sequence[int], *, note_seconds: float, gap_seconds: float,
                  velocity: int = 80) -> list[list[Note]]:
    """One part playing each pitch alone for `note_seconds`, each followed by `gap_seconds` rest."""
    step = note_seconds + gap_seconds
    return [[Note(i * step, i * step + note_seconds, int(p), velocity)
             for i, p in enumerate(pitches)]]
