//! A hand-written CPU decoder for GPT-2 weights: the same numbers as `model::gpt`, without per-op overhead.
//! `model::load` picks it for GPT-2 on the CPU; callers never name it.
//!
//! Why: at batch 1 a 4-layer, 256-wide GPT spends about 0.3 ms per token in matrix-vector
//! products but about 2 ms per token through candle, because each of the ~110 tensor ops per step
//! pays allocation, dispatch and (for the KV cache) concatenation costs. Generation is a chain of
//! tiny matrix-vector products, so here every step runs straight loops over weights laid out for
//! it: one pass over each weight matrix serves every row of the batch, the KV cache grows in
//! place, and nothing is allocated per op. Rows of a batch are independent, so large batches are
//! split across threads; within a thread several rows are a small matrix product over weights
//! packed at load ([`crate::model::small_gemm`]). Logits match the candle model to float
//! rounding (tested).
//!
//! Only inference lives here; training and likelihood over long sequences keep using candle.

use crate::model::cpu_f32::{decoder_ids, exp_approx, on_threads, one_plus_minus_tanh, rows_per_thread};
use crate::model::small_gemm::Packed;
use crate::model::{GptConfig, LanguageModel, ModelError, State, WeightError};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// An affine map `x · w + b`, `w` `[n_in, n_out]` row-major (Hugging Face Conv1D), kept twice:
/// as read, for one row (a matrix-vector product bound by reading the weights), and packed for
/// several rows ([`Packed`]). The second copy doubles the weights' memory (14 MB → 27 MB for
/// the bundled folk GPT); with the per-head KV cache below it made batch 16 2.3-2.6 times as
/// fast (`benches/gen_speed.rs`).
struct Linear {
    w: Vec<f32>,
    b: Vec<f32>,
    packed: Packed,
    n_in: usize,
    n_out: usize,
}

impl Linear {
    fn new(w: Vec<f32>, b: Vec<f32>, n_in: usize, n_out: usize) -> Linear {
        let packed = Packed::from_row_major(&w, n_in, n_out);
        Linear { w, b, packed, n_in, n_out }
    }

    /// `out[r] = x[r] · w + b` for every row `r` of `x`.
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.n_in;
        if rows <= 1 {
            return matmul_rows(x, &self.w, &self.b, out, self.n_in, self.n_out);
        }
        for o in out[..rows * self.n_out].chunks_exact_mut(self.n_out) {
            o.copy_from_slice(&self.b);
        }
        self.packed.add_product(x, &mut out[..rows * self.n_out]);
    }
}

/// One transformer block's weights.
struct Layer {
    ln1_g: Vec<f32>,
    ln1_b: Vec<f32>,
    attn: Linear,
    proj: Linear,
    ln2_g: Vec<f32>,
    ln2_b: Vec<f32>,
    fc: Linear,
    out: Linear,
    /// Factor on query·key scores.
    scale: f32,
}

/// GPT-2 inference on the CPU with plain loops.
pub struct CpuGpt {
    cfg: GptConfig,
    wte: Vec<f32>,
    /// The output layer: the embeddings, transposed and packed ([`Packed`]).
    head: Packed,
    wpe: Vec<f32>,
    layers: Vec<Layer>,
    lnf_g: Vec<f32>,
    lnf_b: Vec<f32>,
    erf_gelu: bool,
    device: Device,
    threads: usize,
}

/// One row's keys (or values) in one layer: per head, `[seen, head size]`, grown in place. Each
/// head's keys lie together so that attention streams through them in order: with the keys of
/// all heads interleaved (`[seen, n_embd]`) a batch of 16 spent most of its attention waiting
/// on memory.
type RowCache = Vec<Vec<f32>>;

/// Keys and values per layer and row ([`RowCache`]).
pub struct CpuState {
    k: Vec<Vec<RowCache>>,
    v: Vec<Vec<RowCache>>,
    len: usize,
    batch: usize,
}

impl State for CpuState {
    fn len(&self) -> usize {
        self.len
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn retain_rows(&mut self, keep: &[bool]) -> Result<bool, ModelError> {
        if keep.len() != self.batch {
            return Err(ModelError::BatchMismatch { ids: keep.len(), state: self.batch });
        }
        // Each row's cache is its own vector: dropping rows moves no keys or values.
        for layer in self.k.iter_mut().chain(self.v.iter_mut()) {
            let mut flags = keep.iter();
            layer.retain(|_| flags.next().copied().unwrap_or(false));
        }
        self.batch = keep.iter().filter(|&&k| k).count();
        Ok(true)
    }
}

fn load_err(path: &Path, reason: impl std::fmt::Display) -> ModelError {
    ModelError::Load { path: path.display().to_string(), reason: reason.to_string() }
}

impl CpuGpt {
    /// Loads `dir/config.json` (must be GPT-2) and `dir/model.safetensors`.
    pub fn load(dir: &Path) -> Result<CpuGpt, ModelError> {
        match crate::model::load::read_config(dir)? {
            crate::model::Config::Gpt2(c) => CpuGpt::load_weights(dir, &c),
            _ => Err(load_err(dir, "not a GPT-2 model")),
        }
    }

    /// Loads `dir/model.safetensors` for a config already read.
    pub(crate) fn load_weights(dir: &Path, cfg: &GptConfig) -> Result<CpuGpt, ModelError> {
        let path = dir.join("model.safetensors");
        let bytes = crate::model::load::read_weights(&path)?;
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| load_err(&path, e))?;
        CpuGpt::from_tensors(cfg, &tensors).map_err(|e| load_err(&path, e))
    }

    /// Builds from named tensors (Hugging Face GPT-2 names, with or without `transformer.`).
    pub fn from_tensors(cfg: &GptConfig, tensors: &HashMap<String, Tensor>) -> Result<CpuGpt, WeightError> {
        cfg.validate()?;
        let e = cfg.n_embd;
        let inner = cfg.inner();
        let get = |name: &str, len: usize| -> Result<Vec<f32>, WeightError> {
            let t = tensors
                .get(name)
                .or_else(|| tensors.get(&format!("transformer.{name}")))
                .ok_or_else(|| WeightError::Missing(name.to_string()))?;
            let v = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|err| WeightError::Unreadable { name: name.to_string(), reason: err.to_string() })?;
            if v.len() != len {
                return Err(WeightError::Shape { name: name.to_string(), values: v.len(), expected: len });
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(WeightError::NotFinite { name: name.to_string(), index: i });
            }
            Ok(v)
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("h.{i}.{s}");
            let scale = cfg.attn_scale(i);
            layers.push(Layer {
                ln1_g: get(&p("ln_1.weight"), e)?,
                ln1_b: get(&p("ln_1.bias"), e)?,
                attn: Linear::new(
                    get(&p("attn.c_attn.weight"), e * 3 * e)?,
                    get(&p("attn.c_attn.bias"), 3 * e)?,
                    e,
                    3 * e,
                ),
                proj: Linear::new(get(&p("attn.c_proj.weight"), e * e)?, get(&p("attn.c_proj.bias"), e)?, e, e),
                ln2_g: get(&p("ln_2.weight"), e)?,
                ln2_b: get(&p("ln_2.bias"), e)?,
                fc: Linear::new(get(&p("mlp.c_fc.weight"), e * inner)?, get(&p("mlp.c_fc.bias"), inner)?, e, inner),
                out: Linear::new(get(&p("mlp.c_proj.weight"), inner * e)?, get(&p("mlp.c_proj.bias"), e)?, inner, e),
                scale: scale as f32,
            });
        }
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let wte = get("wte.weight", cfg.vocab_size * e)?;
        Ok(CpuGpt {
            head: Packed::from_transposed(&wte, e, cfg.vocab_size),
            wte,
            wpe: get("wpe.weight", cfg.n_positions * e)?,
            lnf_g: get("ln_f.weight", e)?,
            lnf_b: get("ln_f.bias", e)?,
            erf_gelu: cfg.exact_gelu(),
            cfg: cfg.clone(),
            layers,
            device: Device::Cpu,
            threads,
        })
    }

    /// Limits the threads large batches are split over (1 = never split).
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// Runs `ids` (`[batch, t]`) through the network; returns logits for every position
    /// (`all`) or only the last, as one flat `[batch, rows, vocab]` buffer.
    fn run(&self, ids: &Tensor, state: &mut dyn State, all: bool) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let st = super::own_state::<CpuState>(state, "GPT")?;
        let rows_ids = decoder_ids(ids, st.batch, self.cfg.vocab_size)?;
        let (b, t) = (rows_ids.len(), rows_ids[0].len());
        if st.len + t > self.cfg.n_positions {
            return Err(ModelError::ContextFull { context: self.cfg.n_positions, needed: st.len + t });
        }
        let out_rows = if all { t } else { 1 };
        let v = self.cfg.vocab_size;
        let mut out = vec![0f32; b * out_rows * v];
        let past = st.len;
        let per = rows_per_thread(b, self.threads);
        let chunks_out: Vec<&mut [f32]> = out.chunks_mut(per * out_rows * v).collect();
        // Caches are [layer][row]; regroup as [row chunk][layer][row] via per-layer splitting.
        let mut k_layers: Vec<std::slice::ChunksMut<RowCache>> = st.k.iter_mut().map(|l| l.chunks_mut(per)).collect();
        let mut v_layers: Vec<std::slice::ChunksMut<RowCache>> = st.v.iter_mut().map(|l| l.chunks_mut(per)).collect();
        let mut jobs = Vec::new();
        for (c, o) in chunks_out.into_iter().enumerate() {
            let kc: Vec<&mut [RowCache]> = k_layers.iter_mut().filter_map(|it| it.next()).collect();
            let vc: Vec<&mut [RowCache]> = v_layers.iter_mut().filter_map(|it| it.next()).collect();
            let ids_c = &rows_ids[c * per..((c + 1) * per).min(b)];
            jobs.push((ids_c, kc, vc, o));
        }
        on_threads(jobs, |(ids_c, mut kc, mut vc, o)| self.run_rows(ids_c, past, &mut kc, &mut vc, all, o));
        st.len += t;
        Ok((out, b, out_rows))
    }

    /// The network for a group of rows; `k[layer][row]`, `v[layer][row]` are their caches.
    fn run_rows(
        &self,
        ids: &[Vec<u32>],
        past: usize,
        k: &mut [&mut [RowCache]],
        v: &mut [&mut [RowCache]],
        all: bool,
        out: &mut [f32],
    ) {
        let e = self.cfg.n_embd;
        let inner = self.cfg.inner();
        let nb = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        let vocab = self.cfg.vocab_size;
        let d = e / self.cfg.n_head;
        // Scratch, reused for every position.
        let mut x = vec![0f32; nb * e];
        let mut a = vec![0f32; nb * e];
        let mut qkv = vec![0f32; nb * 3 * e];
        let mut y = vec![0f32; nb * e];
        let mut m = vec![0f32; nb * inner];
        let mut scores = vec![0f32; past + t];
        let mut logits = vec![0f32; nb * vocab];
        for step in 0..t {
            let pos = past + step;
            for (row, xr) in ids.iter().zip(x.chunks_exact_mut(e)) {
                let tok = row[step] as usize;
                let token = &self.wte[tok * e..(tok + 1) * e];
                let position = &self.wpe[pos * e..(pos + 1) * e];
                for ((xj, t), p) in xr.iter_mut().zip(token).zip(position) {
                    *xj = t + p;
                }
            }
            for (li, l) in self.layers.iter().enumerate() {
                layer_norm(&x, &mut a, &l.ln1_g, &l.ln1_b, e, self.cfg.layer_norm_epsilon as f32);
                l.attn.apply(&a, &mut qkv);
                for r in 0..nb {
                    let new_k = &qkv[r * 3 * e + e..r * 3 * e + 2 * e];
                    let new_v = &qkv[r * 3 * e + 2 * e..r * 3 * e + 3 * e];
                    for (head, (kh, vh)) in k[li][r].iter_mut().zip(v[li][r].iter_mut()).enumerate() {
                        kh.extend_from_slice(&new_k[head * d..(head + 1) * d]);
                        vh.extend_from_slice(&new_v[head * d..(head + 1) * d]);
                    }
                    let q = &qkv[r * 3 * e..r * 3 * e + e];
                    let yr = &mut y[r * e..(r + 1) * e];
                    attend(q, &k[li][r], &v[li][r], l.scale, &mut scores[..pos + 1], yr);
                }
                l.proj.apply(&y, &mut a);
                x.iter_mut().zip(&a).for_each(|(xi, ai)| *xi += ai);
                layer_norm(&x, &mut a, &l.ln2_g, &l.ln2_b, e, self.cfg.layer_norm_epsilon as f32);
                l.fc.apply(&a, &mut m);
                if self.erf_gelu {
                    m.iter_mut().for_each(|z| *z = 0.5 * *z * (1.0 + erf(*z / std::f32::consts::SQRT_2)));
                } else {
                    m.iter_mut().for_each(|z| {
                        // 1 + tanh through `exp_approx`, which vectorises: glibc's `tanhf` per
                        // element (and the `expm1f` inside it) took 4.8% of a batch-16 profile
                        // where the packed products took 10.4%.
                        let u = 0.797_884_6 * (*z + 0.044715 * *z * *z * *z);
                        *z = 0.5 * *z * one_plus_minus_tanh(u).0;
                    });
                }
                l.out.apply(&m, &mut a);
                x.iter_mut().zip(&a).for_each(|(xi, ai)| *xi += ai);
            }
            if all || step + 1 == t {
                layer_norm(&x, &mut a, &self.lnf_g, &self.lnf_b, e, self.cfg.layer_norm_epsilon as f32);
                let rows_out = if all { t } else { 1 };
                let slot = if all { step } else { 0 };
                // Every row's logits at once (one row too: a single pass over the packed
                // embeddings), then each into its place (rows `rows_out` apart in `out`).
                logits.iter_mut().for_each(|l| *l = 0.0);
                self.head.add_product(&a, &mut logits);
                for (r, row) in logits.chunks_exact(vocab).enumerate() {
                    out[(r * rows_out + slot) * vocab..(r * rows_out + slot + 1) * vocab].copy_from_slice(row);
                }
            }
        }
    }
}

/// One row's causal self-attention at its newest position: for each head, softmax of
/// `scale · q · k_j` over the `scores.len()` cached keys, and the values mixed by it into `y`.
/// `k`, `v`: the row's cache ([`RowCache`]).
fn attend(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32, scores: &mut [f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features this function was compiled for are present on this CPU.
            return unsafe { attend_avx2(q, k, v, scale, scores, y) };
        }
    }
    attend_body(q, k, v, scale, scores, y)
}

/// [`attend_body`] with AVX2 and FMA by hand, for head sizes that are a multiple of 8 (every
/// bundled model's: 48 and 64); any other size takes the portable body. Written out because the
/// portable body, compiled for AVX2, kept separate multiplies and adds, summed each key's 16
/// lanes on its own, ran the softmax's exponentials one at a time (the running sum beside them
/// kept that loop scalar) and loaded and stored the head's output for every value it added:
/// attention took 31% of a batch-16 profile for a tenth of the arithmetic.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32, scores: &mut [f32], y: &mut [f32]) {
    let d = q.len() / k.len().max(1);
    if !d.is_multiple_of(8) {
        return attend_body(q, k, v, scale, scores, y);
    }
    let n = scores.len();
    for (head, (kh, vh)) in k.iter().zip(v).enumerate() {
        let qh = &q[head * d..(head + 1) * d];
        assert!(kh.len() >= n * d && vh.len() >= n * d, "a head's cache holds every attended key and value");
        // SAFETY: `qh` is d floats, `kh` and `vh` at least n · d (asserted), `scores` n.
        unsafe { scores_avx2(qh, kh, scale, scores) };
        // The loops below vectorise once compiled with AVX2: the maximum and the sum through
        // eight lanes, the exponentials alone in theirs.
        let mut lanes = [f32::NEG_INFINITY; 8];
        let mut chunks = scores.chunks_exact(8);
        for c in &mut chunks {
            for (l, s) in lanes.iter_mut().zip(c) {
                *l = l.max(*s);
            }
        }
        let max =
            chunks.remainder().iter().fold(lanes.iter().fold(f32::NEG_INFINITY, |m, l| m.max(*l)), |m, s| m.max(*s));
        for s in scores.iter_mut() {
            *s = exp_approx(*s - max);
        }
        let mut sums = [0f32; 8];
        let mut chunks = scores.chunks_exact(8);
        for c in &mut chunks {
            for (l, s) in sums.iter_mut().zip(c) {
                *l += s;
            }
        }
        let sum = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
        let yh = &mut y[head * d..(head + 1) * d];
        // SAFETY: as above; `yh` is d floats.
        unsafe { mix_values_avx2(scores, vh, 1.0 / sum, yh) };
    }
}

/// `scores[j] = scale · q · k_j` for the `scores.len()` keys of one head (`k` `[n, d]`, d a
/// multiple of 8). Eight keys at a time, each with its own accumulator (eight independent chains
/// of multiply-adds), then one transposing reduction gives the eight scores in one vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scores_avx2(q: &[f32], k: &[f32], scale: f32, scores: &mut [f32]) {
    use std::arch::x86_64::*;
    let d = q.len();
    let n = scores.len();
    // Checked here, not left to the caller: the loads below rely on both.
    assert!(d.is_multiple_of(8) && k.len() >= n * d, "scores_avx2 wants d a multiple of 8 and n keys of d");
    let (qp, kp) = (q.as_ptr(), k.as_ptr());
    let scale_v = _mm256_set1_ps(scale);
    let mut j = 0;
    while j + 8 <= n {
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut c = 0;
        while c < d {
            // SAFETY: c + 8 <= d, and key j + kk < n lies inside k (n · d floats).
            let qv = unsafe { _mm256_loadu_ps(qp.add(c)) };
            for (kk, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qv, unsafe { _mm256_loadu_ps(kp.add((j + kk) * d + c)) }, *a);
            }
            c += 8;
        }
        // Lane sums of acc[0..8] into one vector: two rounds of pairwise adds within 128-bit
        // halves, then the halves' partial sums added across.
        let t0 = _mm256_hadd_ps(acc[0], acc[1]);
        let t1 = _mm256_hadd_ps(acc[2], acc[3]);
        let t2 = _mm256_hadd_ps(acc[4], acc[5]);
        let t3 = _mm256_hadd_ps(acc[6], acc[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let s = _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
        // SAFETY: j + 8 <= n = scores.len().
        unsafe { _mm256_storeu_ps(scores.as_mut_ptr().add(j), _mm256_mul_ps(s, scale_v)) };
        j += 8;
    }
    for (jj, s) in scores.iter_mut().enumerate().skip(j) {
        *s = dot_lanes(q, &k[jj * d..(jj + 1) * d]) * scale;
    }
}

/// `y = inv · Σ_j p[j] · v_j` over one head's values (`v` `[n, d]`, d a multiple of 8): up to 64
/// of the head's outputs stay in registers while every value streams past once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mix_values_avx2(p: &[f32], v: &[f32], inv: f32, y: &mut [f32]) {
    let d = y.len();
    let mut c0 = 0;
    while c0 < d {
        // SAFETY (each arm): columns c0..c0 + 8W lie inside d, as the callee requires.
        unsafe {
            match (d - c0) / 8 {
                1 => mix_columns_avx2::<1>(p, v, d, c0, inv, y),
                2 => mix_columns_avx2::<2>(p, v, d, c0, inv, y),
                3 => mix_columns_avx2::<3>(p, v, d, c0, inv, y),
                4 => mix_columns_avx2::<4>(p, v, d, c0, inv, y),
                5 => mix_columns_avx2::<5>(p, v, d, c0, inv, y),
                6 => mix_columns_avx2::<6>(p, v, d, c0, inv, y),
                7 => mix_columns_avx2::<7>(p, v, d, c0, inv, y),
                _ => mix_columns_avx2::<8>(p, v, d, c0, inv, y),
            }
        }
        c0 += 64.min(d - c0);
    }
}

/// Columns `c0..c0 + 8W` of [`mix_values_avx2`], their `W` sums in registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mix_columns_avx2<const W: usize>(p: &[f32], v: &[f32], d: usize, c0: usize, inv: f32, y: &mut [f32]) {
    use std::arch::x86_64::*;
    assert!(c0 + 8 * W <= d && y.len() >= d && v.len() >= p.len() * d);
    let mut acc = [_mm256_setzero_ps(); W];
    let vp = v.as_ptr();
    for (j, &pj) in p.iter().enumerate() {
        let w = _mm256_set1_ps(pj);
        for (c, a) in acc.iter_mut().enumerate() {
            // SAFETY: j < n and c0 + 8c + 8 <= d (asserted), inside v's n · d floats.
            *a = _mm256_fmadd_ps(w, unsafe { _mm256_loadu_ps(vp.add(j * d + c0 + c * 8)) }, *a);
        }
    }
    let inv_v = _mm256_set1_ps(inv);
    for (c, a) in acc.iter().enumerate() {
        // SAFETY: c0 + 8c + 8 <= d <= y.len().
        unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(c0 + c * 8), _mm256_mul_ps(*a, inv_v)) };
    }
}

#[inline(always)]
fn attend_body(q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], scale: f32, scores: &mut [f32], y: &mut [f32]) {
    let d = q.len() / k.len().max(1);
    for (head, (kh, vh)) in k.iter().zip(v).enumerate() {
        let qh = &q[head * d..(head + 1) * d];
        let mut max = f32::NEG_INFINITY;
        for (s, kj) in scores.iter_mut().zip(kh.chunks_exact(d)) {
            *s = dot_lanes(qh, kj) * scale;
            max = max.max(*s);
        }
        // `exp_approx` keeps this loop vectorised; `f32::exp` is a library call per score.
        let mut sum = 0f32;
        for s in scores.iter_mut() {
            *s = exp_approx(*s - max);
            sum += *s;
        }
        let yh = &mut y[head * d..(head + 1) * d];
        yh.iter_mut().for_each(|o| *o = 0.0);
        let inv = 1.0 / sum;
        for (s, vj) in scores.iter().zip(vh.chunks_exact(d)) {
            axpy(s * inv, vj, yh);
        }
    }
}

/// A dot product in 16 independent lanes (two AVX vectors' worth), summed once at the end; short
/// enough to inline into [`attend_body`].
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let n = a.len().min(b.len());
    let (ac, bc) = (a[..n].chunks_exact(16), b[..n].chunks_exact(16));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        // As arrays, so the lengths are known and the loop has no bounds checks to keep it scalar.
        let (x, y): (&[f32; 16], &[f32; 16]) = (x.try_into().unwrap_or(&[0.0; 16]), y.try_into().unwrap_or(&[0.0; 16]));
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn layer_norm(x: &[f32], out: &mut [f32], g: &[f32], b: &[f32], e: usize, eps: f32) {
    for (xr, or) in x.chunks_exact(e).zip(out.chunks_exact_mut(e)) {
        let mean = xr.iter().sum::<f32>() / e as f32;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / e as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for j in 0..e {
            or[j] = (xr[j] - mean) * inv * g[j] + b[j];
        }
    }
}

/// `out[r] = x[r] · w + bias` for every row `r`; `w` is `[n_in, n_out]` row-major. Each weight
/// row is read once and applied to all rows of the batch while it is in L1. With several rows
/// the outputs are done in column blocks, so the block of every row's output stays in L1 too.
fn matmul_rows(x: &[f32], w: &[f32], bias: &[f32], out: &mut [f32], n_in: usize, n_out: usize) {
    let rows = x.len() / n_in;
    for r in 0..rows {
        out[r * n_out..(r + 1) * n_out].copy_from_slice(bias);
    }
    // About 16 KB of outputs per block: 4096 floats shared by the rows.
    let block = if rows <= 1 { n_out } else { (4096 / rows).max(64).min(n_out) };
    let mut c0 = 0;
    while c0 < n_out {
        let c1 = (c0 + block.max(8)).min(n_out);
        // Four input rows at a time: four weight rows stream through each output block.
        let mut i = 0;
        while i + 4 <= n_in {
            let w0 = &w[i * n_out + c0..i * n_out + c1];
            let w1 = &w[(i + 1) * n_out + c0..(i + 1) * n_out + c1];
            let w2 = &w[(i + 2) * n_out + c0..(i + 2) * n_out + c1];
            let w3 = &w[(i + 3) * n_out + c0..(i + 3) * n_out + c1];
            for r in 0..rows {
                let xs = [x[r * n_in + i], x[r * n_in + i + 1], x[r * n_in + i + 2], x[r * n_in + i + 3]];
                axpy4(xs, w0, w1, w2, w3, &mut out[r * n_out + c0..r * n_out + c1]);
            }
            i += 4;
        }
        while i < n_in {
            let wi = &w[i * n_out + c0..i * n_out + c1];
            for r in 0..rows {
                axpy(x[r * n_in + i], wi, &mut out[r * n_out + c0..r * n_out + c1]);
            }
            i += 1;
        }
        c0 = c1;
    }
}

#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `y += a0 w0 + a1 w1 + a2 w2 + a3 w3`, with AVX2+FMA when the CPU has them (checked once per
/// call, cheaply), else the portable loop the compiler vectorizes with SSE.
#[inline]
fn axpy4(a: [f32; 4], w0: &[f32], w1: &[f32], w2: &[f32], w3: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features this function was compiled for are present on this CPU.
            unsafe { axpy4_avx2(a, w0, w1, w2, w3, y) };
            return;
        }
    }
    axpy4_portable(a, w0, w1, w2, w3, y)
}

#[inline(always)]
fn axpy4_portable(a: [f32; 4], w0: &[f32], w1: &[f32], w2: &[f32], w3: &[f32], y: &mut [f32]) {
    let n = y.len().min(w0.len()).min(w1.len()).min(w2.len()).min(w3.len());
    let (w0, w1, w2, w3, y) = (&w0[..n], &w1[..n], &w2[..n], &w3[..n], &mut y[..n]);
    for j in 0..n {
        y[j] += a[0] * w0[j] + a[1] * w1[j] + a[2] * w2[j] + a[3] * w3[j];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy4_avx2(a: [f32; 4], w0: &[f32], w1: &[f32], w2: &[f32], w3: &[f32], y: &mut [f32]) {
    // Fused multiply-adds in two short chains (depth 3 instead of 5) so consecutive vectors
    // overlap in the pipeline.
    let n = y.len().min(w0.len()).min(w1.len()).min(w2.len()).min(w3.len());
    let (w0, w1, w2, w3, y) = (&w0[..n], &w1[..n], &w2[..n], &w3[..n], &mut y[..n]);
    for j in 0..n {
        let t1 = a[1].mul_add(w1[j], a[0] * w0[j]);
        let t2 = a[3].mul_add(w3[j], a[2].mul_add(w2[j], y[j]));
        y[j] = t1 + t2;
    }
}

/// erf with Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), for the exact-GELU variant.
fn erf(x: f32) -> f32 {
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let x = x.abs() as f64;
    let t = 1.0 / (1.0 + 0.3275911 * x);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    sign * (1.0 - poly * (-x * x).exp()) as f32
}

impl LanguageModel for CpuGpt {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn context(&self) -> usize {
        self.cfg.n_positions
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn new_state(&self, batch: usize) -> Result<Box<dyn State>, ModelError> {
        let n = self.cfg.n_layer;
        Ok(Box::new(CpuState {
            k: vec![vec![vec![Vec::new(); self.cfg.n_head]; batch]; n],
            v: vec![vec![vec![Vec::new(); self.cfg.n_head]; batch]; n],
            len: 0,
            batch,
        }))
    }
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (out, b, _) = self.run(ids, state, false)?;
        Ok(Tensor::from_vec(out, (b, self.cfg.vocab_size), &self.device)?)
    }
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (out, b, rows) = self.run(ids, state, true)?;
        Ok(Tensor::from_vec(out, (b, rows, self.cfg.vocab_size), &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-vectorised attention against the portable body: head sizes that take every
    /// register width of the value mix (8 to 64 and past it) and one that is not a multiple of 8
    /// (the fallback), key counts around the 8-key blocks of the scores and a long cache.
    #[test]
    fn vectorised_attention_matches_the_portable_body() {
        let value = |k: usize| ((k * 2_654_435_761) % 2000) as f32 / 1000.0 - 1.0;
        for d in [8usize, 12, 24, 48, 64, 72, 136] {
            let heads = 3;
            for n in [1usize, 7, 8, 9, 16, 23, 300] {
                let q: Vec<f32> = (0..heads * d).map(value).collect();
                let cache = |seed: usize| -> Vec<Vec<f32>> {
                    (0..heads).map(|h| (0..n * d).map(|i| value(seed + h * 7919 + i)).collect()).collect()
                };
                let (k, v) = (cache(11), cache(5003));
                let (mut want, mut got) = (vec![0f32; heads * d], vec![f32::NAN; heads * d]);
                attend_body(&q, &k, &v, 0.3, &mut vec![0f32; n], &mut want);
                attend(&q, &k, &v, 0.3, &mut vec![0f32; n], &mut got);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() < 1e-5, "head size {d}, {n} keys, output {i}: {g} vs {w}");
                }
            }
        }
    }
}
