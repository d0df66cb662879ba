#!/usr/bin/env bash
# Builds the abc2midi comparison data for tests/it/midi.rs (abc2midi_agreement):
#   tests/data/abc2midi/tunes.abc   1,000 public-domain tunes from every ABC collection of the music21
#                                   corpus, renumbered X:1.. (source named in a comment): first, for
#                                   each notation feature from the rarest up, tunes that use it;
#                                   then a seeded random draw for the rest
#   tests/data/abc2midi/notes.json  abc2midi's notes for each tune, flat: pitch, onset, duration,
#                                   pitch, ... in ticks at 480 per quarter (= beats × 480), sorted
#                                   by onset then pitch, read back from its MIDI file with mido
#
#   scripts/abc2midi-golden.sh [ABC_ROOT]       (needs abc2midi: apt-get install abcmidi; pip install mido)
#
# Flags that make abc2midi comparable with a plain score: -NGUI (chord symbols are not played as
# accompaniment), `%%MIDI chordattack 0` (chord notes start together instead of 10 ticks apart),
# and R: lines dropped from its copy (R:hornpipe makes abc2midi swing even pairs as a>b).
# Everything else (grace notes taking a quarter of the next note, staccato, fermata) stays at
# abc2midi's defaults, which cadenza's DSL follows; trills and rolls abc2midi expands into notes
# and cadenza keeps as the written note, a known difference.
set -euo pipefail
root="${1:-corpus/music21/corpus}"
out=tests/data/abc2midi
command -v abc2midi >/dev/null || { echo "abc2midi not found: apt-get install abcmidi" >&2; exit 1; }
mkdir -p "$out"
python3 - "$root" "$out" <<'PY'
import json, os, random, re, subprocess, sys, tempfile
import mido

root, out = sys.argv[1], sys.argv[2]
WANT, PER_FEATURE = 1000, 40
tunes = []
for s in sorted(os.listdir(root)):
    for dp, _, fs in sorted(os.walk(os.path.join(root, s))):
        for f in sorted(fs):
            if not f.endswith(".abc"):
                continue
            text = open(os.path.join(dp, f), "rb").read().decode("latin-1")
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            # Tunes start at X: and end at a blank line (ABC 2.1).
            for m in re.finditer(r"^X:[^\n]*\n(?:[^\n]*\S[^\n]*\n?)*", text, re.M):
                body = m.group(0).rstrip("\n") + "\n"
                if 200 <= len(body) <= 4000 and "\nK:" in body:
                    x = m.group(0).split("\n", 1)[0][2:].strip()
                    tunes.append((f"{s}/{os.path.relpath(os.path.join(dp, f), os.path.join(root, s))} X:{x}", body))

# Notation features, found in the music (after the K: line); a tune is drawn for its rarest.
FEATURES = {
    "voices": r"^V:|\[V:", "inline field": r"\[[IKLMPQ]:", "overlay": r"&", "spacer": r"(?<![a-zA-Z\"!])y",
    "first ending [1": r"\[1", "first ending |1": r"\|1", "second ending": r"\[2|\|2|:\|2",
    "repeat start": r"\|:", "repeat end": r":\|", "double repeat": r"::", "triplet": r"\(3", "tuplet": r"\([2456789]",
    "grace": r"\{", "trill": r"(?<![A-Za-z])T(?=[A-Ga-g^_=])", "roll": r"~", "fermata": r"H(?=[A-Ga-g^_=])",
    "staccato": r"\.(?=[A-Ga-g^_=])", "decoration": r"![^!\n]+!", "broken >": r">", "broken <": r"<",
    "tie": r"-", "slur": r"\((?![0-9])", "chord": r"\[[A-Ga-g^_=]", "chord symbol": r"\"[A-G]",
    "annotation": r"\"[<>^_@]", "comment line": r"^%", "microtone": r"[\^_][0-9]+/", "double accidental": r"\^\^|__",
    "meter change": r"^M:", "key change": r"^K:", "length change": r"^L:", "tempo change": r"^Q:",
    "rest": r"(?<![a-zA-Z])[zZx]", "multi-bar rest": r"Z[0-9]", "line continuation": r"\\$", "dotted bar": r"\.\|",
    "thin-thick": r"\|\]", "thick-thin": r"\[\|", "octave marks": r"[,']", "long note": r"[A-Ga-g][,']*[0-9]{2}",
}
def features(body):
    music = body.split("\nK:", 1)[1].split("\n", 1)[-1] if "\nK:" in body else ""
    return {name for name, rx in FEATURES.items() if re.search(rx, music, re.M)}
feats = [features(b) for _, b in tunes]
count = {name: sum(name in f for f in feats) for name in FEATURES}
rng = random.Random(20261202)
order = list(range(len(tunes)))
rng.shuffle(order)
picked, seen = [], set()
for name in sorted(FEATURES, key=lambda n: count[n]):
    for i in [i for i in order if name in feats[i] and i not in seen][:PER_FEATURE]:
        picked.append(i)
        seen.add(i)
picked += [i for i in order if i not in seen]

version = subprocess.run(["abc2midi", "-ver"], capture_output=True, text=True).stdout.strip()
abc_out, golden = [], []
tmp = tempfile.mkdtemp()
for i in picked:
    source, body = tunes[i]
    if len(golden) == WANT:
        break
    n = len(golden) + 1
    lines = body.split("\n")
    tune = "\n".join([f"X:{n}", f"% from the music21 corpus: {source}"] + lines[1:])
    theirs = "\n".join([f"X:{n}", "%%MIDI chordattack 0"] + [l for l in lines[1:] if not l.startswith("R:")])
    src, mid = os.path.join(tmp, "t.abc"), os.path.join(tmp, "t.mid")
    open(src, "w").write(theirs)
    if os.path.exists(mid):
        os.remove(mid)
    subprocess.run(["abc2midi", src, str(n), "-o", mid, "-NGUI", "-silent", "-quiet"], capture_output=True)
    if not os.path.exists(mid):
        continue
    m = mido.MidiFile(mid)
    notes = []
    for track in m.tracks:
        now, pending = 0, []
        for e in track:
            now += e.time
            t = now * 480 // m.ticks_per_beat
            if e.type == "note_on" and e.velocity > 0:
                pending.append((e.channel, e.note, len(notes)))
                notes.append([e.note, t, 0])
            elif e.type in ("note_on", "note_off"):
                for k, (c, p, idx) in enumerate(pending):
                    if (c, p) == (e.channel, e.note):
                        notes[idx][2] = t - notes[idx][1]
                        del pending[k]
                        break
    if not notes:
        continue
    notes.sort(key=lambda n: (n[1], n[0], n[2]))
    abc_out.append(tune.rstrip("\n") + "\n")
    golden.append({"x": n, "notes": [v for note in notes for v in note]})

open(os.path.join(out, "tunes.abc"), "w").write(
    f"% {len(golden)} tunes from the music21 corpus (public domain), picked by scripts/abc2midi-golden.sh\n\n"
    + "\n".join(abc_out))
json.dump({"abc2midi": version, "flags": "-NGUI, %%MIDI chordattack 0, R: dropped", "tunes": golden},
          open(os.path.join(out, "notes.json"), "w"), separators=(",", ":"))
print(f"{len(golden)} tunes, {sum(len(t['notes']) // 3 for t in golden)} notes; abc2midi {version}")
print("tunes per feature (in the corpus):", {n: count[n] for n in sorted(FEATURES, key=lambda n: count[n])})
PY
ls -la "$out"
