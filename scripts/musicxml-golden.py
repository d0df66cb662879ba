#!/usr/bin/env python3
"""Writes <file>.notes.json beside each MusicXML file in tests/data/musicxml: the notes music21
(an independent MusicXML reader) finds, for tests/it/midi.rs (musicxml_reads_like_music21).

Repeats are expanded (music21's expandRepeats) and ties joined (stripTies); grace notes are
left out. Notes are [pitch, onset, duration] in ticks at 480 per quarter, sorted.

    pip install music21 && python3 scripts/musicxml-golden.py tests/data/musicxml
"""
import glob, json, os, sys
import music21

d = sys.argv[1] if len(sys.argv) > 1 else "tests/data/musicxml"
for path in sorted(glob.glob(os.path.join(d, "*.xml")) + glob.glob(os.path.join(d, "*.mxl"))):
    s = music21.converter.parse(path, forceSource=True)
    try:
        s = s.expandRepeats()
    except Exception as e:  # no repeats, or repeats music21 cannot expand
        print(f"{path}: repeats not expanded ({e.__class__.__name__})")
    notes = []
    for part in s.parts:
        for n in part.stripTies().flatten().notes:
            if n.duration.isGrace:
                continue
            t = round(float(n.getOffsetInHierarchy(part)) * 480)
            dur = round(float(n.duration.quarterLength) * 480)
            for p in n.pitches:
                notes.append([int(round(p.ps)), t, dur])
    notes.sort(key=lambda n: (n[1], n[0], n[2]))
    out = os.path.splitext(path)[0] + ".notes.json"
    json.dump({"music21": music21.__version__, "notes": notes}, open(out, "w"), separators=(",", ":"))
    print(path, len(notes))
