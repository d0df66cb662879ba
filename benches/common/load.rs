//! What the timing benches play and the load they play it under: four grooves of 16th-note
//! chords, and threads doing a model's kind of work on the same cores.

#![allow(dead_code)] // each bench uses what it needs

use cadenza::score::{Note, Score};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One bar of 16ths on `channel`: a three-note chord on every 16th, accents on the beats.
pub fn groove(channel: u8, base: u8) -> Score {
    let mut s = Score::new();
    for i in 0..16u64 {
        for (k, iv) in [0u8, 7, 12].iter().enumerate() {
            let mut n = Note::new(i * 120, 90, base + iv + (i % 4) as u8);
            n.channel = channel;
            n.velocity = if i % 4 == 0 { 110 } else { 70 + k as u8 };
            s.notes.push(n);
        }
    }
    s.length = 1920;
    s.normalize();
    s
}

pub fn load(stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    let s1 = stop.clone();
    let model_like = std::thread::spawn(move || {
        use candle_core::{Device, Tensor};
        let Ok(a) = Tensor::randn(0f32, 1.0, (384, 384), &Device::Cpu) else { return };
        let Ok(b) = Tensor::randn(0f32, 1.0, (384, 384), &Device::Cpu) else { return };
        while !s1.load(Ordering::Relaxed) {
            let _ = a.matmul(&b).and_then(|c| c.tanh());
        }
    });
    let busy = std::thread::spawn(move || {
        let mut x = 1u64;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            }
            std::hint::black_box(x);
        }
    });
    vec![model_like, busy]
}
