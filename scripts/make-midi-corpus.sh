#!/usr/bin/env bash
# Renders real ABC folk tunes to MIDI with abc2midi (Debian package `abcmidi`), for the MIDI
# reading benchmark (benches/midi_read.rs, scripts/bench_symusic.py). Output: corpus/midi/<set>/
# (git-ignored). Needs the music21 corpus unpacked under corpus/music21 (see the corpus script).
#
#   scripts/make-midi-corpus.sh [ABC_ROOT] [OUT]
#
# Collections: essenFolksong (German, Chinese ... ~8,500 tunes) and oneills1850 (Irish, ~2,000).
# abc2midi flags: -silent -quiet (no chatter); it writes one file per tune, <stem><X>.mid.
set -euo pipefail
root="${1:-corpus/music21/corpus}"
out="${2:-corpus/midi}"
command -v abc2midi >/dev/null || { echo "abc2midi not found: apt-get install abcmidi" >&2; exit 1; }
[ -d "$root" ] || { echo "no ABC corpus at $root" >&2; exit 1; }
for set in essenFolksong oneills1850; do
  mkdir -p "$out/$set"
  find "$root/$set" -name '*.abc' | sort | while read -r f; do
    # abc2midi writes beside its input, so it reads a copy inside the output folder.
    stem="$(basename "$f" .abc)"
    cp "$f" "$out/$set/$stem.abc"
    # It exits non-zero on some tunes with errors but still writes the others.
    (cd "$out/$set" && abc2midi "$stem.abc" -silent -quiet >/dev/null 2>&1) || true
    rm -f "$out/$set/$stem.abc"
  done
done
echo "$(find "$out" -name '*.mid' | wc -l) MIDI files in $out ($(du -sh "$out" | cut -f1))"
