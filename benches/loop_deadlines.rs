//! Deadline-aware loops under load (issue 14): four loops, each regenerating 4 bars every cycle
//! at 120 bpm with the bundled models (folk GPT and folk LSTM, continuing and varying), on this
//! machine's cores, for `LOOP_BENCH_SECONDS` (default 64: eight 8-second cycles). Reports each
//! loop's margins (how long before it was due each cycle arrived: median, worst) and how many
//! cycles were replayed because the next was not ready. Goal: none replayed.
//! Run: `cargo bench --bench loop_deadlines` (needs `models/folk` and `models/folk-lstm`).

use cadenza::script::{stdout_output, Options, Session};

fn main() {
    let seconds: f64 = std::env::var("LOOP_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(64.0);
    let mut o = Options::new(stdout_output());
    o.no_midi = true;
    o.model = "folk".into();
    let mut s = Session::new(o);
    let setup = r#"
        tempo(120);
        let t = abc("X:1\nM:4/4\nL:1/8\nK:D\nDFAd fdAF|GBdB AFED|");
        loop("gpt_continue", #{prompt: t, bars: 4, mode: "continue", model: "folk", seed: 1});
        loop("gpt_vary", #{prompt: t, bars: 4, model: "folk", seed: 2});
        loop("lstm_continue", #{prompt: t, bars: 4, mode: "continue", model: "folk-lstm", seed: 3});
        loop("lstm_vary", #{prompt: t, bars: 4, model: "folk-lstm", seed: 4});
    "#;
    if let Err(e) = s.eval(setup) {
        eprintln!("loop_deadlines: {e}");
        std::process::exit(1);
    }
    std::thread::sleep(std::time::Duration::from_secs_f64(seconds));
    println!("after {seconds:.0} s at 120 bpm (4 bars = 8 s a cycle), four generating loops:");
    for line in s.ctx().stage.describe_loops() {
        println!("  {line}");
    }
    let _ = s.eval("stop()");
    s.shutdown();
}
