#!/usr/bin/env bash
# Fetches the music21 wheel from PyPI (pip download, nothing installed) and unpacks its corpus
# into corpus/music21/corpus/ at the repository root (git-ignored). Idempotent: does nothing when
# the corpus is already there. Offline: set M21_WHEEL=/path/to/music21-*.whl (or put the wheel
# in $M21_WHEEL_DIR) to skip the download.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/corpus/music21"
version="${M21_VERSION:-10.5.1}"

if [ -d "$dest/corpus/essenFolksong" ] && [ -d "$dest/corpus/bach" ]; then
    echo "music21 corpus already in $dest/corpus"
    exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

wheel="${M21_WHEEL:-}"
if [ -z "$wheel" ] && [ -n "${M21_WHEEL_DIR:-}" ]; then
    wheel="$(ls "$M21_WHEEL_DIR"/music21-*.whl 2>/dev/null | head -n1 || true)"
fi
if [ -z "$wheel" ]; then
    echo "downloading music21 $version from PyPI ..."
    python3 -m pip download --no-deps --only-binary=:all: --dest "$tmp" "music21==$version" >&2
    wheel="$(ls "$tmp"/music21-*.whl | head -n1)"
fi
echo "unpacking the corpus from $(basename "$wheel") ..."
mkdir -p "$tmp/unpacked"
python3 - "$wheel" "$tmp/unpacked" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("music21/corpus/")]
    if not names:
        sys.exit(f"{wheel} has no music21/corpus/")
    z.extractall(out, names)
PY
mkdir -p "$dest"
rm -rf "$dest/corpus.partial"
mv "$tmp/unpacked/music21/corpus" "$dest/corpus.partial"
rm -rf "$dest/corpus"
mv "$dest/corpus.partial" "$dest/corpus"
echo "corpus in $dest/corpus: $(find "$dest/corpus" -name '*.abc' | wc -l) ABC files, $(find "$dest/corpus/bach" -name '*.mxl' | wc -l) chorale .mxl files"
