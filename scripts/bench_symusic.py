#!/usr/bin/env python3
"""MIDI → score throughput of symusic (C++ core) on the same files as benches/midi_read.rs, then
cadenza's figure from the same run, and the ratios.

    pip install symusic
    python3 scripts/bench_symusic.py [DIR]        # default corpus/midi (scripts/make-midi-corpus.sh)

Both parse bytes already in memory, one thread, best of 7 passes over every file.
"""
import os, re, subprocess, sys, time
import symusic

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "corpus", "midi")
paths = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(d) for f in fs if f.lower().endswith((".mid", ".midi")))
data = [open(p, "rb").read() for p in paths]

def read_all():
    ok = notes = 0
    for b in data:
        try:
            s = symusic.Score.from_midi(b)
        except Exception:
            continue
        ok += 1
        notes += s.note_num()
    return ok, notes

ok, notes = read_all()
best = min((lambda t0: (read_all(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(7))
sym = (len(data) / best, notes / best)
print(f"symusic {symusic.__version__}: files {len(data)} read {ok} notes {notes} best_s {best:.6f} "
      f"files_per_s {sym[0]:.0f} notes_per_s {sym[1]:.0f}")

env = dict(os.environ, CADENZA_MIDI_SUMMARY="1", CADENZA_MIDI_DIR=os.path.abspath(d))
out = subprocess.run(["cargo", "bench", "--bench", "midi_read"], cwd=root, env=env,
                     capture_output=True, text=True).stdout
m = re.search(r"cadenza-midi-read: .* notes (\d+) .* files_per_s (\d+) notes_per_s (\d+)", out)
if not m:
    sys.exit("no summary line from cargo bench --bench midi_read:\n" + out)
cad = (float(m.group(2)), float(m.group(3)))
print(f"cadenza: notes {m.group(1)} files_per_s {cad[0]:.0f} notes_per_s {cad[1]:.0f}")
print(f"ratio cadenza/symusic: files/s {cad[0] / sym[0]:.2f}x, notes/s {cad[1] / sym[1]:.2f}x")
