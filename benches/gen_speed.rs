//! Generation speed: tokens/s with KV cache at batch 1 and 16, time to first note, 8 bars of folk,
//! the LSTM, PyTorch `generate` side by side, and the machine's roofline with its arithmetic.
//!
//! `cargo bench --bench gen_speed` (set `GEN_BENCH_TORCH=0` to skip PyTorch, `GEN_BENCH_NEW=N`
//! for the number of generated tokens per run). Numbers are best-of-N wall times: other
//! processes on the machine only ever make a run slower.

#[path = "common/cpu.rs"]
mod cpu;

use cadenza::gen::sampling::{sample, Rng, Sampling};
use cadenza::gen::{Generator, Length, Request};
use cadenza::model::gpt::Gpt;
use cadenza::model::gpt_cpu::CpuGpt;
use cadenza::model::lstm::Lstm;
use cadenza::model::lstm_cpu::CpuLstm;
use cadenza::model::{GptConfig, LanguageModel, LstmConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CPU time of this process so far (every thread): on a shared, loaded machine wall time mostly
/// measures the neighbours; CPU time measures the work.
fn cpu_seconds() -> f64 {
    cpu::process_cpu_seconds()
}

thread_local! {
    static LAST_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(f64::NAN) };
}

/// Best wall time of `reps` runs of `f`, in seconds; the best CPU time of the same runs is
/// left for [`last_cpu`].
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    let mut best_cpu = f64::INFINITY;
    for _ in 0..reps {
        let c = cpu_seconds();
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        best_cpu = best_cpu.min(cpu_seconds() - c);
    }
    LAST_CPU.with(|l| l.set(best_cpu));
    best
}

/// CPU seconds of the best run of the last [`best_of`].
fn last_cpu() -> f64 {
    LAST_CPU.with(|l| l.get())
}

/// Fills every variable with N(0, 0.02) noise (the layer norms get 1 ± noise), like GPT-2's init.
fn randomize(varmap: &VarMap) -> candle_core::Result<()> {
    for (name, var) in varmap.data().lock().map_err(|_| candle_core::Error::msg("varmap lock"))?.iter() {
        let shape = var.shape().clone();
        let noise = Tensor::randn(0f32, 0.02, shape, &Device::Cpu)?;
        let value = if name.contains("ln") && name.ends_with("weight") { (noise + 1.0)? } else { noise };
        var.set(&value)?;
    }
    Ok(())
}

/// The candle GPT with random weights, and the same weights by name (for the fast path).
fn random_gpt(cfg: &GptConfig) -> candle_core::Result<(Gpt, HashMap<String, Tensor>)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let gpt = Gpt::new(cfg, vb)?;
    randomize(&varmap)?;
    let tensors = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::msg("varmap lock"))?
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    Ok((gpt, tensors))
}

fn random_lstm(cfg: &LstmConfig) -> candle_core::Result<Lstm> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let m = Lstm::new(cfg, vb)?;
    randomize(&varmap)?;
    Ok(m)
}

/// Prompt `prompt` ids, then `new` sampled tokens for `batch` rows, through the KV cache.
/// Returns (seconds for the whole run, seconds until the first sampled token).
fn decode(model: &dyn LanguageModel, batch: usize, prompt: usize, new: usize) -> (f64, f64) {
    let t0 = Instant::now();
    let v = model.vocab_size() as u32;
    let ids: Vec<u32> = (0..batch * prompt).map(|i| 3 + (i as u32 * 7919) % (v - 3)).collect();
    let mut state = model.new_state(batch).expect("state");
    let input = Tensor::from_vec(ids, (batch, prompt), &Device::Cpu).expect("tensor");
    let mut logits = model.forward(&input, state.as_mut()).expect("forward");
    let sampling = Sampling::default();
    let mut rngs: Vec<Rng> = (0..batch).map(|i| Rng::new(i as u64)).collect();
    let mut first = 0.0;
    for step in 0..new {
        let rows = logits.to_vec2::<f32>().expect("logits");
        let next: Vec<u32> = rows
            .iter()
            .zip(rngs.iter_mut())
            .map(|(l, r)| sample(&sampling, r, l, None, &[]).expect("sample"))
            .collect();
        if step == 0 {
            first = t0.elapsed().as_secs_f64();
        }
        let input = Tensor::from_vec(next, (batch, 1), &Device::Cpu).expect("tensor");
        logits = model.forward(&input, state.as_mut()).expect("forward");
    }
    (t0.elapsed().as_secs_f64(), first)
}

/// Read bandwidth of summing `bytes` of f32 (GB/s), best of several passes.
fn bandwidth(bytes: usize, reps: usize) -> f64 {
    let n = bytes / 4;
    let data: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let t = best_of(reps, || {
        // Eight independent sums so the adds pipeline and vectorize.
        let mut acc = [0f32; 8];
        for c in data.chunks_exact(8) {
            for k in 0..8 {
                acc[k] += c[k];
            }
        }
        black_box(acc);
    });
    bytes as f64 / t / 1e9
}

/// GFLOP/s and seconds of one batch-1 pass over the GPT's weight matrices through candle's
/// matmul (what the model itself runs): [1, e] × [e, 3e], [e, e], [e, 4e], [4e, e] per layer
/// and the [e, vocab] head.
fn matvec(cfg: &GptConfig, reps: usize) -> (f64, f64) {
    let e = cfg.n_embd;
    let shapes = [(e, 3 * e), (e, e), (e, 4 * e), (4 * e, e)];
    let mut mats = Vec::new();
    for _ in 0..cfg.n_layer {
        for &(i, o) in &shapes {
            mats.push(Tensor::randn(0f32, 0.02, (i, o), &Device::Cpu).expect("randn"));
        }
    }
    mats.push(Tensor::randn(0f32, 0.02, (e, cfg.vocab_size), &Device::Cpu).expect("randn"));
    let xs: Vec<Tensor> =
        mats.iter().map(|m| Tensor::randn(0f32, 1.0, (1, m.dim(0).unwrap_or(e)), &Device::Cpu).expect("x")).collect();
    let flops: f64 = mats.iter().map(|m| 2.0 * m.elem_count() as f64).sum();
    let t = best_of(reps, || {
        for _ in 0..10 {
            for (x, m) in xs.iter().zip(&mats) {
                black_box(x.matmul(m).expect("matmul"));
            }
        }
    }) / 10.0;
    (flops / t / 1e9, t)
}

fn run_torch(new: usize) -> Vec<serde_json::Value> {
    if std::env::var("GEN_BENCH_TORCH").is_ok_and(|v| v == "0") {
        return Vec::new();
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_gen_torch.py");
    let out = std::process::Command::new("python3")
        .args([script, "--new", &new.to_string(), "--batches", "1,16", "--threads", "2"])
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .collect(),
        Ok(o) => {
            eprintln!("PyTorch reference failed: {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or(""));
            Vec::new()
        }
        Err(e) => {
            eprintln!("PyTorch reference not run: {e}");
            Vec::new()
        }
    }
}

fn main() {
    let new = env_usize("GEN_BENCH_NEW", 256);
    let reps = env_usize("GEN_BENCH_REPS", 3);
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "(all)".into());
    println!("# cadenza generation benchmark ({} new tokens per run, best of {reps}; candle threads {threads})", new);

    // Through JSON, as config.json would give it: fields added later keep their defaults.
    let cfg: GptConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": 512, "n_positions": 1024, "n_embd": 256, "n_layer": 4, "n_head": 4,
        "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0
    }))
    .expect("GPT config");
    let (gpt, tensors) = random_gpt(&cfg).expect("random GPT");
    let fast = CpuGpt::from_tensors(&cfg, &tensors).expect("fast GPT");
    println!(
        "\n## GPT-2 {} layers × {} wide, vocabulary {}, {} parameters",
        cfg.n_layer,
        cfg.n_embd,
        cfg.vocab_size,
        cfg.param_count()
    );

    let mut ours = Vec::new();
    let mut candle = Vec::new();
    for (label, model) in [("candle", &gpt as &dyn LanguageModel), ("fast", &fast as &dyn LanguageModel)] {
        decode(model, 1, 16, 8); // warm-up: first-touch allocations, thread pool
        for batch in [1usize, 16] {
            let mut first = f64::INFINITY;
            let t = best_of(reps, || {
                let (_, f) = decode(model, batch, 16, new);
                first = first.min(f);
            });
            let tps = (batch * new) as f64 / t;
            let cpu_tps = (batch * new) as f64 / last_cpu();
            println!(
                "cadenza {label:>6} batch {batch:>2}: {tps:>8.0} tokens/s wall, {cpu_tps:>8.0} per CPU-second ({:.3} ms per step; prompt of 16 + first token {:.2} ms)",
                t / new as f64 * 1e3,
                first * 1e3
            );
            if label == "fast" {
                ours.push((batch, tps, cpu_tps));
            } else {
                candle.push((batch, tps, cpu_tps));
            }
        }
    }
    for ((b, f, fc), (_, c, cc)) in ours.iter().zip(&candle) {
        println!("fast path / candle at batch {b}: {:.1}× wall, {:.1}× per CPU-second", f / c, fc / cc);
    }

    let torch = run_torch(new);
    for v in torch.iter().filter(|v| v["impl"].as_str() != Some("torch-lstm")) {
        if v["impl"].as_str() != Some("torch") {
            println!(
                "PyTorch batch {:>2}: {:>8.0} tokens/s wall, {:>8.0} per CPU-second (hand-written loop: model forward with past_key_values + multinomial, no generate)",
                v["batch"].as_u64().unwrap_or(0),
                v["tokens_per_s"].as_f64().unwrap_or(f64::NAN),
                v["tokens_per_cpu_s"].as_f64().unwrap_or(f64::NAN)
            );
            continue;
        }
        let batch = v["batch"].as_u64().unwrap_or(0) as usize;
        let tps = v["tokens_per_s"].as_f64().unwrap_or(0.0);
        let cpu_tps = v["tokens_per_cpu_s"].as_f64().unwrap_or(f64::NAN);
        let (ratio, cpu_ratio) = ours
            .iter()
            .find(|(b, ..)| *b == batch)
            .map(|(_, t, c)| (t / tps, c / cpu_tps))
            .unwrap_or((f64::NAN, f64::NAN));
        println!(
            "PyTorch batch {batch:>2}: {tps:>8.0} tokens/s wall, {cpu_tps:>8.0} per CPU-second (HF generate, 2 threads) → cadenza fast path is {ratio:.1}× wall, {cpu_ratio:.1}× per CPU-second"
        );
    }

    println!("\n## Roofline (batch 1: every step reads every weight once)");
    let weight_bytes = 4.0 * (cfg.param_count() - cfg.n_positions * cfg.n_embd + cfg.n_embd) as f64;
    let dram = bandwidth(256 << 20, 3);
    let cache = bandwidth(weight_bytes as usize, 20);
    let (gflops, mat_t) = matvec(&cfg, reps.max(3));
    let flops_per_token = 2.0 * (cfg.param_count() - cfg.n_positions * cfg.n_embd) as f64;
    println!("weights read per token: {:.2} MB (all matrices + embeddings row; wpe one row)", weight_bytes / 1e6);
    println!("memory read bandwidth, 256 MB sum: {dram:.1} GB/s → ceiling {:.0} tokens/s", dram * 1e9 / weight_bytes);
    println!(
        "cache-resident bandwidth, {:.0} MB sum: {cache:.1} GB/s → ceiling {:.0} tokens/s",
        weight_bytes / 1e6,
        cache * 1e9 / weight_bytes
    );
    println!(
        "matrix-vector (candle matmul, the model's shapes): {gflops:.1} GFLOP/s; {:.3} ms per token for {:.1} MFLOP → ceiling {:.0} tokens/s",
        mat_t * 1e3,
        flops_per_token / 1e6,
        1.0 / mat_t
    );
    let ceiling = (dram.max(cache) * 1e9 / weight_bytes).min(1.0 / mat_t);
    if let Some((_, b1, _)) = ours.first() {
        println!(
            "batch 1 reaches {b1:.0} / {ceiling:.0} = {:.0}% of the tighter ceiling (min of bandwidth and matvec)",
            100.0 * b1 / ceiling
        );
    }

    println!("\n## LSTM");
    let lcfg = LstmConfig { vocab_size: 512, n_embd: 256, hidden_size: 512, n_layer: 2, dropout: 0.0 };
    let lstm = random_lstm(&lcfg).expect("random LSTM");
    let fast_lstm = CpuLstm::from_candle(&lstm).expect("fast LSTM");
    let mut lstm_rates = Vec::new();
    for (label, model) in [("candle", &lstm as &dyn LanguageModel), ("fast", &fast_lstm as &dyn LanguageModel)] {
        decode(model, 1, 16, 8);
        for batch in [1usize, 16] {
            let t = best_of(reps, || {
                decode(model, batch, 16, new);
            });
            let tps = (batch * new) as f64 / t;
            println!(
                "LSTM {}×{} (emb {}) {label:>6} batch {batch:>2}: {tps:>8.0} tokens/s wall, {:>8.0} per CPU-second",
                lcfg.n_layer,
                lcfg.hidden_size,
                lcfg.n_embd,
                (batch * new) as f64 / last_cpu()
            );
            lstm_rates.push((label, batch, tps));
        }
    }
    for batch in [1usize, 16] {
        let rate = |l: &str| lstm_rates.iter().find(|(x, b, _)| *x == l && *b == batch).map_or(f64::NAN, |r| r.2);
        println!("LSTM fast path / candle at batch {batch}: {:.1}× wall", rate("fast") / rate("candle"));
    }
    for v in torch.iter().filter(|v| v["impl"].as_str() == Some("torch-lstm")) {
        let batch = v["batch"].as_u64().unwrap_or(0) as usize;
        let tps = v["tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        let ours = lstm_rates.iter().find(|(l, b, _)| *l == "fast" && *b == batch).map_or(f64::NAN, |r| r.2);
        println!(
            "PyTorch LSTM batch {batch:>2}: {tps:>8.0} tokens/s wall, {:>8.0} per CPU-second (nn.LSTM stepped with its state + multinomial) → cadenza fast path is {:.1}× wall",
            v["tokens_per_cpu_s"].as_f64().unwrap_or(f64::NAN),
            ours / tps
        );
    }

    println!("\n## Bundled models through the whole pipeline (encode, mask, sample, decode)");
    // Extra model folders (e.g. a training checkpoint) can be added with GEN_BENCH_MODELS=a,b.
    let extra = std::env::var("GEN_BENCH_MODELS").unwrap_or_default();
    let names: Vec<&str> =
        ["folk", "folk-lstm", "chorale"].into_iter().chain(extra.split(',').filter(|s| !s.is_empty())).collect();
    for name in names {
        let gen = match Generator::load(name) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                println!("{name}: not measured ({e})");
                continue;
            }
        };
        let mut prompt = cadenza::score::Score::new();
        prompt.meta.meters = vec![(0, cadenza::time::Meter::new(6, 8))];
        prompt.meta.keys = vec![(0, cadenza::score::Key::new(1, 0, cadenza::score::Mode::Major))];
        let mut req = Request::new(prompt, Length::Bars(8));
        req.seed = 1;
        let mut first_note = f64::INFINITY;
        let mut notes = 0;
        let t = best_of(reps, || {
            let t0 = Instant::now();
            let job = gen.spawn(req.clone(), 1);
            let mut first = None;
            for e in job.events.iter() {
                if first.is_none() && matches!(e, cadenza::gen::Progress::Note { .. }) {
                    first = Some(t0.elapsed().as_secs_f64());
                }
            }
            if let Ok(s) = job.join() {
                notes = s.takes()[0].notes.len();
            }
            first_note = first_note.min(first.unwrap_or(f64::NAN));
        });
        println!(
            "{name}: 8 bars of 6/8 ({notes} notes) in {:.1} ms; first note after {:.1} ms",
            t * 1e3,
            first_note * 1e3
        );
    }
}
