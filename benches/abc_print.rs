//! Score → ABC text against Score → MIDI bytes, at 10 k to 1 M notes: printing must stay linear
//! (issue 13: `find_repeats` compared every note with every bar, so 1 M notes took over 60 s to
//! print against 0.46 s to write as MIDI). Reports CPU seconds, nanoseconds per note and the
//! print / MIDI ratio at each size; a linear printer keeps both flat as the size grows.
//! Run: `cargo bench --bench abc_print`.

#[path = "common/cpu.rs"]
mod cpu;

use cadenza::score::{Note, Score};
use cadenza::time::{Meter, Tick};

/// A jig-like melody of `notes` sixteenth notes in 6/8, each 8-bar strain played twice (so the
/// printer folds repeats), with a chord symbol per bar and a second voice of held notes.
/// Sixteenths, so a million notes stay within a score's bound of 2^27 ticks.
fn tune(notes: usize) -> Score {
    let mut s = Score::new();
    s.meta.meters = vec![(0, Meter::new(6, 8))];
    let eighth: Tick = 120; // a sixteenth: the name keeps the tune's shape
    let strain = 96; // 8 bars of twelve sixteenths
    let mut t = 0;
    let mut i = 0;
    while s.notes.len() < notes {
        let in_strain = i % (2 * strain) % strain;
        let section = i / (2 * strain);
        let pitch = 60 + ((in_strain * 7 + section * 3) % 19) as u8;
        s.notes.push(Note::new(t, eighth, pitch));
        if in_strain % 12 == 0 {
            s.notes.push(Note { voice: 1, ..Note::new(t, 12 * eighth, pitch - 12) });
            s.meta.chord_symbols.push((t, ["G", "D", "Em", "C"][(in_strain / 12) % 4].to_string()));
        }
        t += eighth;
        i += 1;
    }
    s.length = t;
    s.normalize();
    s
}

/// Least CPU seconds of `runs` calls of `f`.
fn least_cpu(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let c = cpu::thread_cpu_seconds();
            f();
            cpu::thread_cpu_seconds() - c
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    println!(
        "{:>9} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "notes", "print s", "MIDI s", "print ns/n", "MIDI ns/n", "ratio"
    );
    for n in [10_000, 100_000, 1_000_000] {
        let score = tune(n);
        let runs = if n >= 1_000_000 { 2 } else { 5 };
        let mut text_len = 0;
        let print = least_cpu(runs, || text_len = std::hint::black_box(cadenza::dsl::print(&score)).len());
        let midi = least_cpu(runs, || {
            std::hint::black_box(cadenza::sink::midi_file::to_bytes(&score).unwrap());
        });
        let per = |s: f64| s * 1e9 / score.notes.len() as f64;
        println!(
            "{:>9} {print:>10.3} {midi:>10.3} {:>12.0} {:>12.0} {:>8.2}   ({text_len} bytes of ABC)",
            score.notes.len(),
            per(print),
            per(midi),
            print / midi
        );
    }
}
