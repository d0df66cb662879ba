#!/usr/bin/env bash
# Coverage-guided fuzzing of one reader with AFL++ through cargo-afl (stable toolchain), seeded
# from the project's real test files. Usage: scripts/fuzz.sh TARGET SECONDS [EXTRA AFL ARGS]
# TARGET: abc | midi | musicxml | tokens (fuzz/src/TARGET.rs). Needs `cargo install cargo-afl`
# (it builds AFL++'s runtime on first use; `cargo afl config --build` does it ahead of time).
# Limits: 1 s per input (-t 1000: a slower one is a hang). AFL's -m (an address-space rlimit)
# stops this binary before it runs (its allocator and thread pools reserve more than they use),
# so each target counts its live heap instead and aborts past 1 GiB (fuzz/src/common/
# memory_cap.rs): an input that allocates that much is saved as a crash. Prints
# executions, crashes and hangs; the inputs that crash or hang are in fuzz/out/TARGET/default/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${1:?target: abc, midi, musicxml or tokens}"
seconds="${2:?seconds to fuzz}"
shift 2
seeds="$root/fuzz/seeds/$target"
out="$root/fuzz/out/$target"
# Each run starts from its seeds with a fresh output folder, so the counts it prints are its
# own (afl-fuzz also refuses to reuse a folder holding more than 25 minutes of an earlier run).
rm -rf "$seeds" "$out" && mkdir -p "$seeds" "$out"
case "$target" in
abc)
    # One seed per tune of the abc2midi golden set (real tunes of every collection), the
    # smallest first, and the DSL test files (errors included).
    python3 - "$root/tests/data/abc2midi/tunes.abc" "$seeds" <<'PY'
import sys, re, os
text = open(sys.argv[1], encoding="utf-8").read()
tunes = [t for t in re.split(r"\n(?=X:)", text) if t.strip()]
for i, t in enumerate(sorted(tunes, key=len)[:300]):
    open(os.path.join(sys.argv[2], f"tune{i:03}.abc"), "w", encoding="utf-8").write(t)
PY
    find "$root/tests/data/dsl" -name '*.abc' -size -8k -exec cp {} "$seeds/" \; ;;
midi) find "$root/tests/data" -name '*.mid' -size -64k -exec cp {} "$seeds/" \; ;;
musicxml) find "$root/tests/data/musicxml" \( -name '*.xml' -o -name '*.mxl' \) -size -64k -exec cp {} "$seeds/" \; ;;
tokens)
    # A model byte and a few ids each, including real sequences' first ids (<bos>, labels).
    for m in 0 1 2; do
        printf "\\x0$m\\x00\\x00\\x01\\x00\\x02\\x00\\x03\\x00\\x04\\x00" >"$seeds/ids$m"
        head -c 256 /dev/urandom >"$seeds/random$m"
    done
    # With CADENZA_BIN (a built `cadenza`) and the corpus: real validation tunes of the folk
    # (`tune`, model bytes 0 and 1) and chorale (`remi`, byte 2) encodings, the first 400 ids of
    # 20 tunes each, every 16th word asking for the mask (fuzz/src/tokens.rs), so that the
    # fuzzer starts from states deep inside real tunes rather than from a header.
    if [ -n "${CADENZA_BIN:-}" ] && [ -d "$root/corpus/music21" ]; then
        tmp="$(mktemp -d)"
        trap 'rm -rf "$tmp"' EXIT
        for spec in "0 folk tune" "2 chorales remi"; do
            read -r byte collection encoding <<<"$spec"
            voices=""; [ "$encoding" = remi ] && voices="--voices 4"
            (cd "$root" && "$CADENZA_BIN" train --corpus corpus/music21 --collections "$collection" \
                --encoding "$encoding" $voices --context 256 --seed 1 --export "$tmp/$collection" \
                --export-epochs 1 --out "$tmp/out-$collection" --quiet) >/dev/null
            python3 - "$tmp/$collection/valid.u32" "$seeds" "$byte" <<'PY'
import sys, struct, os
data = open(sys.argv[1], "rb").read()
ids = struct.unpack(f"<{len(data) // 4}I", data)
tunes, cur = [], []
for i in ids:
    if i == ids[0] and cur:
        tunes.append(cur); cur = []
    cur.append(i)
tunes.append(cur)
for n, t in enumerate(tunes[:20]):
    words = [(w | 0xF000) if k % 16 == 15 else w for k, w in enumerate(t[:400])]
    open(os.path.join(sys.argv[2], f"tune{sys.argv[3]}-{n:02}"), "wb").write(bytes([int(sys.argv[3])]) + struct.pack(f"<{len(words)}H", *words))
PY
        done
    fi ;;
*) echo "unknown target $target" >&2; exit 2 ;;
esac
cd "$root/fuzz"
CARGO_TARGET_DIR="$root/fuzz/target" cargo afl build --release --bin "$target"
export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
cargo afl fuzz -i "$seeds" -o "$out" -t 1000 -m none -V "$seconds" "$@" "$root/fuzz/target/release/$target" >"$out/afl.log" 2>&1 || {
    tail -20 "$out/afl.log" >&2
    exit 1
}
stats="$out/default/fuzzer_stats"
execs=$(awk -F: '/^execs_done/ {gsub(/ /,"",$2); print $2}' "$stats")
crashes=$(awk -F: '/^saved_crashes/ {gsub(/ /,"",$2); print $2}' "$stats")
hangs=$(awk -F: '/^saved_hangs/ {gsub(/ /,"",$2); print $2}' "$stats")
speed=$(awk -F: '/^execs_per_sec/ {gsub(/ /,"",$2); print $2}' "$stats")
edges=$(awk -F: '/^edges_found/ {gsub(/ /,"",$2); print $2}' "$stats")
echo "fuzz $target: $execs executions in ${seconds}s ($speed/s), $edges edges, $crashes crashes, $hangs hangs"
