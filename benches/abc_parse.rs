//! ABC → Score throughput in MB/s over a directory of real tunes (criterion).
//!
//! `CADENZA_ABC_DIR` names the directory (default `corpus/music21/corpus`, the unpacked
//! music21 wheel); every file ending `.abc` below it is read once, then each iteration parses
//! every tune of every file with `dsl::parse_file` (parse + lower to a Score, repeats expanded).
//! Run: `cargo bench --bench abc_parse`. Goal from issue 2: at least 50 MB/s.

#[path = "common/cpu.rs"]
mod cpu;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::{Path, PathBuf};

fn abc_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            abc_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "abc") {
            out.push(p);
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::var("CADENZA_ABC_DIR").unwrap_or_else(|_| "corpus/music21/corpus".into());
    let mut files = Vec::new();
    abc_files(Path::new(&dir), &mut files);
    files.sort();
    let texts: Vec<String> =
        files.iter().filter_map(|f| std::fs::read(f).ok()).map(|b| String::from_utf8_lossy(&b).into_owned()).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    if bytes == 0 {
        eprintln!("abc_parse: no .abc files under {dir} (set CADENZA_ABC_DIR); nothing to measure");
        return;
    }
    let (mut ok, mut failed) = (0, 0);
    for t in &texts {
        for r in cadenza::dsl::parse_file(t) {
            if r.result.is_ok() {
                ok += 1
            } else {
                failed += 1
            }
        }
    }
    eprintln!("abc_parse: {} files, {bytes} bytes, {ok} tunes parsed, {failed} failed", texts.len());
    // The build machine is shared, so wall-clock numbers sag under load; this thread's CPU
    // time gives a throughput that other processes hardly disturb.
    let before = cpu::thread_cpu_seconds();
    let rounds = 10;
    for _ in 0..rounds {
        for t in &texts {
            std::hint::black_box(cadenza::dsl::parse_file(t));
        }
    }
    let secs = cpu::thread_cpu_seconds() - before;
    eprintln!(
        "abc_parse: {rounds} rounds in {secs:.2} s of CPU time = {:.1} MB/s (CPU time)",
        (bytes * rounds) as f64 / 1e6 / secs.max(1e-9)
    );
    let mut g = c.benchmark_group("abc_parse");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.sample_size(20);
    g.bench_function("parse_file corpus", |b| {
        b.iter(|| {
            let mut notes = 0usize;
            for t in &texts {
                for r in cadenza::dsl::parse_file(t) {
                    if let Ok(s) = r.result {
                        notes += s.notes.len();
                    }
                }
            }
            notes
        })
    });
    // The syntax tree alone (no lowering), to see where the time goes.
    g.bench_function("syntax tree only", |b| {
        b.iter(|| {
            let mut items = 0usize;
            for t in &texts {
                let p = cadenza::dsl::parser::Parser::new(t);
                let (_, slices) = p.file();
                for s in slices {
                    if let Ok(tune) = p.tune(s) {
                        items += tune.body.len();
                    }
                }
            }
            items
        })
    });
    g.finish();
}

// No plots: plotters, built with a bundled-font backend for `cadenza eval`, finds no system
// font for criterion's charts and would panic after the measurements.
criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = bench
}
criterion_main!(benches);
