//! MIDI → Score throughput (files/s, notes/s) over a directory of real .mid files, parsed from
//! bytes already in memory. Compare with symusic on the same files: scripts/bench_symusic.py.
//!
//!     scripts/make-midi-corpus.sh            # ~10,500 folk tunes rendered by abc2midi
//!     cargo bench --bench midi_read          # criterion, plus a one-line summary
//!     CADENZA_MIDI_SUMMARY=1 cargo bench --bench midi_read   # the summary only
//!
//! `CADENZA_MIDI_DIR` picks the directory (default corpus/midi, else tests/data/midi).

use cadenza::sink::midi_file;
use criterion::{black_box, Criterion, Throughput};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("mid") || x.eq_ignore_ascii_case("midi")) {
            out.push(p);
        }
    }
}

fn load() -> (PathBuf, Vec<Vec<u8>>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("CADENZA_MIDI_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let corpus = root.join("corpus/midi");
        if corpus.is_dir() {
            corpus
        } else {
            root.join("tests/data/midi")
        }
    });
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    let bytes = files.iter().filter_map(|f| std::fs::read(f).ok()).collect();
    (dir, bytes)
}

/// Reads every file once; returns (files read, notes).
fn read_all(files: &[Vec<u8>]) -> (usize, usize) {
    let (mut ok, mut notes) = (0, 0);
    for f in files {
        if let Ok(s) = midi_file::read_bytes(black_box(f)) {
            ok += 1;
            notes += s.notes.len();
        }
    }
    (ok, notes)
}

fn main() {
    let (dir, files) = load();
    let (ok, notes) = read_all(&files);
    let bytes: usize = files.iter().map(Vec::len).sum();
    // Best of several passes: a plain figure that scripts/bench_symusic.py reads.
    let mut best = f64::INFINITY;
    for _ in 0..7 {
        let t = Instant::now();
        black_box(read_all(&files));
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!(
        "cadenza-midi-read: dir {} files {} read {} notes {} bytes {} best_s {:.6} files_per_s {:.0} notes_per_s {:.0}",
        dir.display(),
        files.len(),
        ok,
        notes,
        bytes,
        best,
        files.len() as f64 / best,
        notes as f64 / best
    );
    if std::env::var_os("CADENZA_MIDI_SUMMARY").is_some() {
        return;
    }
    // No plots: plotters (built for `cadenza eval` with a bundled-font backend) finds no system
    // font for criterion's charts and would panic after the measurements.
    let mut c = Criterion::default().configure_from_args().sample_size(10).without_plots();
    let mut g = c.benchmark_group("midi_read");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.bench_function("files", |b| b.iter(|| read_all(&files)));
    g.throughput(Throughput::Elements(notes as u64));
    g.bench_function("notes", |b| b.iter(|| read_all(&files)));
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bytes", |b| b.iter(|| read_all(&files)));
    g.finish();
    c.final_summary();
}
