"""MIDI writing and FluidSynth rendering: a channel per part, every note closed, bounded renders."""

from __future__ import annotations

from collections import defaultdict

import pytest
from music21 import converter
from music21 import midi as m21midi

from umtune.data import DatasetError
from umtune.data.chorales import bach_corpus
from umtune.data.midi import (
    Note,
    crop,
    end_time,
    midi_bytes,
    monophonic,
    score_notes,
    write_midi,
)
from umtune.data.render import DEFAULT_SOUNDFONT, render_midi


def _note_events(data: bytes) -> list[tuple[int, int, int, bool]]:
    """(tick, channel 0-based, pitch, is_on) of every note event, parsed back by music21."""
    mf = m21midi.MidiFile()
    mf.readstr(data)
    events, now = [], 0
    for track in mf.tracks:
        now = 0
        for ev in track.events:
            if isinstance(ev, m21midi.DeltaTime):
                now += ev.time
            elif ev.isNoteOn() or ev.isNoteOff():
                events.append((now, ev.channel - 1, ev.pitch, ev.isNoteOn()))
    return events


def _assert_all_closed(events) -> None:
    sounding = defaultdict(int)
    for _, channel, pitch, on in events:
        sounding[channel, pitch] += 1 if on else -1
        assert 0 <= sounding[channel, pitch] <= 1, f"overlapping or stray note {channel, pitch}"
    assert not any(sounding.values()), "a note is never closed"


def test_each_part_gets_its_own_channel_never_the_drum_channel():
    """Sixteen parts use fifteen melodic channels, skipping channel 10 (index 9)."""
    parts = [[Note(0.0, 1.0, 60 + i)] for i in range(16)]
    events = _note_events(midi_bytes(parts, program=0))
    channels = {c for _, c, _, _ in events}
    assert 9 not in channels and len(channels) == 15


def test_two_parts_on_one_pitch_stay_on_separate_channels_and_close():
    """Two parts sounding the same pitch at once are two channels, each note closed."""
    parts = [[Note(0.0, 2.0, 60)], [Note(1.0, 3.0, 60)]]
    events = _note_events(midi_bytes(parts, program=40))
    assert {c for _, c, _, _ in events} == {0, 1}
    _assert_all_closed(events)


def test_overlapping_same_pitch_notes_in_one_part_are_cut_not_left_open():
    """A same-pitch overlap within one channel is cut where the next note starts."""
    parts = [[Note(0.0, 2.0, 60), Note(1.0, 3.0, 60), Note(1.0, 1.5, 60), Note(2.5, 2.5, 62)]]
    events = _note_events(midi_bytes(parts, program=19))
    _assert_all_closed(events)
    assert max(t for t, *_ in events) == 3000  # last note-off at 3 s (1 ms ticks)


def test_a_real_chorale_becomes_closed_midi_on_four_channels():
    """A corpus chorale parses to four parts whose MIDI closes every note."""
    piece = dict(bach_corpus())["bach/bwv10.7.mxl"]
    parts = score_notes(converter.parse(piece), bpm=100)
    assert len(parts) == 4 and end_time(parts) > 10
    events = _note_events(midi_bytes(parts, program=0))
    assert {c for _, c, _, _ in events} == {0, 1, 2, 3}
    _assert_all_closed(events)


def test_crop_cuts_notes_at_the_limit():
    """Cropping drops notes starting after the limit and shortens notes crossing it."""
    parts = [[Note(0.0, 1.0, 60), Note(1.5, 3.0, 62), Note(3.5, 4.0, 64)]]
    assert crop(parts, 2.0) == [[Note(0.0, 1.0, 60), Note(1.5, 2.0, 62)]]
    assert crop(parts, None) == parts


def test_monophonic_keeps_the_top_note_of_a_chord_and_cuts_notes_at_the_next_start():
    part = [Note(0.0, 1.0, 60), Note(0.0, 1.0, 64), Note(0.5, 2.0, 62), Note(3.0, 4.0, 65)]
    assert monophonic(part) == [Note(0.0, 0.5, 64), Note(0.5, 2.0, 62), Note(3.0, 4.0, 65)]


def test_render_has_the_requested_rate_and_roughly_the_music_length(tmp_path):
    """FluidSynth renders a 2 s note at the requested rate, mono, about 2 s plus release."""
    midi = write_midi(tmp_path / "a.mid", [[Note(0.0, 2.0, 69)]], program=73)
    audio = render_midi(midi, tmp_path / "a.wav", soundfont=DEFAULT_SOUNDFONT,
                        sample_rate=22050, expected_seconds=2.0)
    assert audio.ndim == 1 and 2.0 <= audio.shape[0] / 22050 < 5.0
    assert abs(audio).max() > 0.01


def test_render_of_a_note_that_never_ends_is_killed_at_the_size_bound(tmp_path):
    """A note-on without note-off (organ sustains forever) is stopped with a DatasetError."""
    track = b"\x00\xc0\x13" + b"\x00\x90\x3c\x64" + b"\x87\x68\xff\x2f\x00"  # ends at 1000 ticks
    header = b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x03\xe8"
    midi = tmp_path / "open.mid"
    midi.write_bytes(header + b"MTrk" + len(track).to_bytes(4, "big") + track)
    with pytest.raises(DatasetError, match="expected every note to end"):
        render_midi(midi, tmp_path / "open.wav", soundfont=DEFAULT_SOUNDFONT,
                    sample_rate=16000, expected_seconds=1.0, timeout=60)
    assert not (tmp_path / "open.wav").exists()
