//! Training speed: tokens per second of full training steps (forward, backward, clipping, AdamW)
//! for the GPT and the LSTM, to compare with `scripts/bench_train_torch.py` (PyTorch, same
//! architecture, sequence length, batch and thread count).
//!
//! Run: `RAYON_NUM_THREADS=2 cargo bench --bench train_speed` (env `ARCH=gpt|lstm|both`,
//! `STEPS`, `VOCAB`, GPT `BATCH` `SEQ` `LAYERS` `DIM` `HEADS`, LSTM `LSTM_BATCH` `LSTM_SEQ`
//! `LSTM_LAYERS` `LSTM_DIM` `HIDDEN` override the defaults: GPT 16 x 256, 4 layers of 192;
//! LSTM 32 x 96, 2 layers of 256 over 128-wide embeddings, the shapes PyTorch was measured on.
//! The bundled runs differ: `folk` is `BATCH=8 SEQ=1024 DIM=256`, `folk-lstm` `HIDDEN=640
//! VOCAB=299 LSTM_BATCH=16 LSTM_SEQ=256`, and they do not always move together (a change can
//! speed one and slow the other), so report both. The allocator is set as `cadenza train` sets it
//! (`cli::heap`); `GLIBC_HEAP=default` leaves glibc's defaults.

use std::time::Instant;

use cadenza::model::train::{self, AdamW, Net};
use cadenza::model::{Config, Dropout, GptConfig, LstmConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bench(name: &str, cfg: &Config, batch: usize, seq: usize, steps: usize) -> candle_core::Result<f64> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let net = Net::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    train::init_params(&varmap, cfg, 1)?;
    let mut opt = AdamW::new(&varmap, 0.9, 0.99, 0.01, false)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let vocab = cfg.vocab_size() as u32;
    let mut time = 0.0;
    for step in 0..steps + 2 {
        let x: Vec<u32> = (0..batch * seq).map(|_| rng.gen_range(0..vocab)).collect();
        let y: Vec<u32> = (0..batch * seq).map(|_| rng.gen_range(0..vocab)).collect();
        let x = Tensor::from_vec(x, (batch, seq), &dev)?;
        let y = Tensor::from_vec(y, (batch, seq), &dev)?;
        let start = Instant::now();
        let mut dropout = Dropout::new(step as u64);
        let loss = net.loss(&x, &y, Some(&mut dropout))?;
        let grads = loss.backward()?;
        let norm = opt.grad_norm(&grads)?;
        opt.step(&grads, 1e-3, if norm > 1.0 { 1.0 / norm } else { 1.0 })?;
        // The first two steps warm caches and allocators.
        if step >= 2 {
            time += start.elapsed().as_secs_f64();
        }
    }
    let tps = (batch * seq * steps) as f64 / time;
    println!(
        "candle {name}: {} params, batch {batch} x seq {seq}: {:.1} ms/step, {tps:.0} tokens/s",
        cfg.param_count(),
        1000.0 * time / steps as f64
    );
    Ok(tps)
}

fn main() -> candle_core::Result<()> {
    // As `cadenza train` does; `GLIBC_HEAP=default` measures glibc's own settings instead.
    if std::env::var("GLIBC_HEAP").as_deref() != Ok("default") {
        println!("allocator: keep freed memory ({})", cadenza::cli::heap::keep_freed_memory());
    }
    let arch = std::env::var("ARCH").unwrap_or_else(|_| "both".into());
    let vocab = env("VOCAB", 454);
    let steps = env("STEPS", 5);
    if arch == "gpt" || arch == "both" {
        let cfg = Config::Gpt2(GptConfig {
            vocab_size: vocab,
            n_positions: env("SEQ", 256),
            n_embd: env("DIM", 192),
            n_layer: env("LAYERS", 4),
            n_head: env("HEADS", 4),
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            embd_pdrop: 0.1,
            attn_pdrop: 0.0,
            resid_pdrop: 0.1,
        });
        bench("gpt", &cfg, env("BATCH", 16), env("SEQ", 256), steps)?;
    }
    if arch == "lstm" || arch == "both" {
        let cfg = Config::Lstm(LstmConfig {
            vocab_size: vocab,
            n_embd: env("LSTM_DIM", 128),
            hidden_size: env("HIDDEN", 256),
            n_layer: env("LSTM_LAYERS", 2),
            dropout: 0.1,
        });
        bench("lstm", &cfg, env("LSTM_BATCH", 32), env("LSTM_SEQ", 96), steps)?;
    }
    Ok(())
}
