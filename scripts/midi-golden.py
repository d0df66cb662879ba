#!/usr/bin/env python3
"""Writes <file>.notes.json beside each .mid in tests/data/midi: the file's notes, tempo, meters
and keys as read by mido (an independent MIDI parser), so tests/it/midi.rs can compare ours.

Ticks are rescaled to 480 per quarter (nearest, half up), the rule cadenza documents. Note-offs
(and note-ons with velocity 0) end the earliest sounding note of that pitch, channel and track
(FIFO); notes still sounding at the track's end close there.

    pip install mido && python3 scripts/midi-golden.py tests/data/midi
"""
import glob, json, os, sys
import mido

def scale(t, tpq):
    return (t * 480 + tpq // 2) // tpq

def golden(path):
    m = mido.MidiFile(path)
    tpq = m.ticks_per_beat
    notes, tempos, meters, keys = [], [], [], []
    for ti, track in enumerate(m.tracks):
        now = 0
        pending = []  # (channel, pitch, index)
        for e in track:
            now += e.time
            t = scale(now, tpq)
            if e.type == 'note_on' and e.velocity > 0:
                pending.append((e.channel, e.note, len(notes)))
                notes.append([t, 0, e.note, e.velocity, e.channel, ti])
            elif e.type in ('note_off', 'note_on'):
                for i, (c, p, idx) in enumerate(pending):
                    if c == e.channel and p == e.note:
                        notes[idx][1] = t - notes[idx][0]
                        del pending[i]
                        break
            elif e.type == 'set_tempo':
                tempos.append([t, e.tempo])
            elif e.type == 'time_signature':
                meters.append([t, e.numerator, e.denominator])
            elif e.type == 'key_signature':
                keys.append([t, e.key])
            elif e.type == 'end_of_track':
                break
        for (_, _, idx) in pending:
            notes[idx][1] = scale(now, tpq) - notes[idx][0]
    notes.sort()
    return {"format": m.type, "ticks_per_quarter": tpq, "tracks": len(m.tracks),
            "notes": notes, "tempos": tempos, "meters": meters, "keys": keys}

for path in sorted(glob.glob(os.path.join(sys.argv[1] if len(sys.argv) > 1 else 'tests/data/midi', '*.mid'))):
    with open(path[:-4] + '.notes.json', 'w') as f:
        json.dump(golden(path), f, separators=(',', ':'))
    print(path)
