//! Training over id sequences: fixed-length windows, AdamW with warmup and cosine decay, global-norm
//! clipping, dropout, validation, checkpoints with exact resume, early stopping, a progress bar.
//!
//! The trainer sees only ids. Sequences (one per tune) are joined into one stream, each preceded
//! by a separator id when one is given (so the model learns where a piece starts and ends), and the
//! stream is cut into windows of `context + 1` ids that overlap by one, so every id after the
//! first is a target exactly once per epoch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::adamw_cpu;
use super::config::Config;
use super::gpt::{Gpt, TrainCtx};
use super::lstm::Lstm;
use super::nn::Dropout;
use super::ModelError;

/// Hyper-parameters of a run (saved in the checkpoint and the model card).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Windows per optimizer step.
    pub batch: usize,
    /// Ids the model sees per window (targets are the same window shifted by one).
    pub context: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The cosine decay ends at `lr * min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// Clip gradients to this global L2 norm (0 disables).
    pub clip: f64,
    pub epochs: usize,
    /// Total training-time budget in minutes, counted across resumed runs.
    pub minutes: Option<f64>,
    pub seed: u64,
    /// Minutes between checkpoints.
    pub checkpoint_minutes: f64,
    /// Stop after this many validations without improvement (0 disables early stopping).
    pub patience: usize,
    /// Validate every this many steps as well as after each epoch (0: after each epoch only).
    pub eval_every: usize,
    /// Id put before every sequence (start/end marker), if any.
    pub separator: Option<u32>,
    /// Stop once this many optimizer steps have been taken in total (resume continues).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Draw the progress bar (a plain log line is printed every minute either way).
    pub progress: bool,
    /// A fresh run's starting weights: a trained model's `model.safetensors`, grown into this
    /// run's (perhaps deeper) network by [`grow_from`].
    #[serde(default)]
    pub init_from: Option<std::path::PathBuf>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            batch: 16,
            context: 256,
            lr: 1e-3,
            min_lr_ratio: 0.1,
            warmup: 200,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.99,
            clip: 1.0,
            epochs: 10,
            minutes: None,
            seed: 1,
            checkpoint_minutes: 5.0,
            patience: 3,
            eval_every: 0,
            separator: None,
            max_steps: None,
            progress: true,
            init_from: None,
        }
    }
}

/// Where training ids come from. `train_epoch` may differ per epoch (augmentation) but must be
/// a function of `epoch` alone, so that a resumed run sees the same data.
pub trait DataSource {
    fn train_epoch(&mut self, epoch: usize) -> Result<Vec<Vec<u32>>, ModelError>;
    fn valid(&self) -> &[Vec<u32>];
}

/// Fixed train and validation sequences (no augmentation).
pub struct FixedData {
    pub train: Vec<Vec<u32>>,
    pub valid: Vec<Vec<u32>>,
}

impl DataSource for FixedData {
    fn train_epoch(&mut self, _epoch: usize) -> Result<Vec<Vec<u32>>, ModelError> {
        Ok(self.train.clone())
    }
    fn valid(&self) -> &[Vec<u32>] {
        &self.valid
    }
}

/// One validation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalLog {
    pub step: usize,
    pub epoch: usize,
    pub elapsed_secs: f64,
    /// Mean training loss (nats per id) since the previous validation (`None`: no step since).
    pub train_loss: Option<f64>,
    /// Mean validation loss, nats per predicted id.
    pub val_loss: f64,
}

/// Everything needed to continue a run exactly where it stopped (`checkpoints/state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainState {
    pub step: usize,
    pub epoch: usize,
    /// Batches of `epoch` already done.
    pub batch_in_epoch: usize,
    pub seed: u64,
    pub elapsed_secs: f64,
    pub tokens_seen: u64,
    pub best_val: Option<f64>,
    pub best_step: usize,
    pub bad_evals: usize,
    pub total_steps: usize,
    pub history: Vec<EvalLog>,
    pub options: TrainOptions,
    /// Running sums of training loss since the last validation.
    pub loss_sum: f64,
    pub loss_count: usize,
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub params: usize,
    pub steps: usize,
    pub epochs_completed: usize,
    pub tokens_seen: u64,
    pub elapsed_secs: f64,
    pub tokens_per_sec: f64,
    pub best_val_loss: Option<f64>,
    pub best_step: usize,
    /// Validation ids predicted (the loss is averaged over these).
    pub val_tokens: usize,
    pub stopped_because: String,
    pub history: Vec<EvalLog>,
}

/// The network being trained.
pub enum Net {
    Gpt(Gpt),
    Lstm(Lstm),
}

impl Net {
    pub fn new(config: &Config, vb: VarBuilder) -> candle_core::Result<Net> {
        Ok(match config {
            Config::Gpt2(c) => Net::Gpt(Gpt::new(c, vb)?),
            Config::Lstm(c) => Net::Lstm(Lstm::new(c, vb)?),
        })
    }

    /// Logits `[batch, seq, vocab]` from a fresh state; dropout on when `dropout` is given.
    pub fn logits(&self, ids: &Tensor, dropout: Option<&mut Dropout>) -> candle_core::Result<Tensor> {
        match self {
            Net::Gpt(m) => m.run(ids, 0, None, dropout.map(|d| TrainCtx { dropout: d }), false),
            Net::Lstm(m) => m.run_fresh(ids, dropout),
        }
    }

    /// Mean cross-entropy (nats) of the predictions for `ids` against `targets` (both
    /// `[batch, seq]`) from a fresh state; dropout on when `dropout` is given. The same value as
    /// [`loss`] of [`Net::logits`]; on the CPU both fuse their heads into the loss.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor, dropout: Option<&mut Dropout>) -> candle_core::Result<Tensor> {
        match self {
            Net::Lstm(m) => m.loss_fresh(ids, targets, dropout),
            Net::Gpt(m) => m.loss(ids, targets, dropout.map(|d| TrainCtx { dropout: d })),
        }
    }
}

/// Mean cross-entropy (nats) of `logits` `[b, t, v]` against `targets` `[b, t]`.
pub fn loss(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    super::cross_entropy::from_logits(logits, targets)
}

/// Seeded GPT-2 / PyTorch-style initialisation of every variable, chosen by name.
pub fn init_params(varmap: &VarMap, config: &Config, seed: u64) -> candle_core::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().map_err(|_| candle_core::Error::msg("variable map lock poisoned"))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let n = var.elem_count();
        let values: Vec<f32> = match config {
            Config::Gpt2(c) => {
                if name.contains("ln_") && name.ends_with(".weight") {
                    vec![1.0; n]
                } else if name.ends_with(".bias") {
                    vec![0.0; n]
                } else if name.ends_with("c_proj.weight") {
                    normal(&mut rng, n, 0.02 / (2.0 * c.n_layer as f64).sqrt())
                } else {
                    normal(&mut rng, n, 0.02)
                }
            }
            Config::Lstm(c) => {
                if name == "wte.weight" {
                    normal(&mut rng, n, 0.1)
                } else if name == "head.bias" {
                    vec![0.0; n]
                } else {
                    let k = 1.0 / (c.hidden_size as f32).sqrt();
                    (0..n).map(|_| rng.gen_range(-k..k)).collect()
                }
            }
        };
        var.set(&Tensor::from_vec(values, var.shape(), var.device())?)?;
    }
    Ok(())
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    // Box–Muller: the `rand` crate alone has no normal distribution.
    (0..n)
        .map(|_| {
            let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
            let u2: f64 = rng.gen();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect()
}

/// AdamW with the update rule of `candle_nn::AdamW` (decoupled weight decay, bias correction),
/// plus global-norm clipping, no decay on biases and norms, and moments that can be saved and
/// restored (candle-nn keeps them private, so a resumed run would restart them from zero).
pub struct AdamW {
    vars: Vec<AdamVar>,
    pub step_t: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct AdamVar {
    name: String,
    var: Var,
    m: Var,
    v: Var,
    decay: bool,
}

impl AdamW {
    /// Optimizes every float variable of `varmap`; weight decay applies to matrices only
    /// (`decay_all` applies it everywhere, as candle-nn does).
    pub fn new(
        varmap: &VarMap,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        decay_all: bool,
    ) -> candle_core::Result<Self> {
        let data = varmap.data().lock().map_err(|_| candle_core::Error::msg("variable map lock poisoned"))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut vars = Vec::new();
        for name in names {
            let var = data[name].clone();
            if !var.dtype().is_float() {
                continue;
            }
            let m = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let v = Var::zeros(var.shape(), var.dtype(), var.device())?;
            let decay = decay_all || var.rank() >= 2;
            vars.push(AdamVar { name: name.clone(), var, m, v, decay });
        }
        Ok(AdamW { vars, step_t: 0, beta1, beta2, eps: 1e-8, weight_decay })
    }

    /// Global L2 norm of the gradients of the optimized variables.
    pub fn grad_norm(&self, grads: &candle_core::backprop::GradStore) -> candle_core::Result<f64> {
        let mut sum = 0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(&v.var) {
                sum += if adamw_cpu::available(&[g]) {
                    adamw_cpu::sum_of_squares(g)?
                } else {
                    g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?
                };
            }
        }
        Ok(sum.sqrt())
    }

    /// One update at learning rate `lr`, gradients scaled by `grad_scale` (clipping).
    pub fn step(
        &mut self,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        grad_scale: f64,
    ) -> candle_core::Result<()> {
        self.step_t += 1;
        let (b1, b2) = (self.beta1, self.beta2);
        let scale_m = 1.0 / (1.0 - b1.powi(self.step_t as i32));
        let scale_v = 1.0 / (1.0 - b2.powi(self.step_t as i32));
        for v in &self.vars {
            let Some(g) = grads.get(&v.var) else { continue };
            let decay = if v.decay { 1.0 - lr * self.weight_decay } else { 1.0 };
            if adamw_cpu::available(&[v.var.as_tensor(), v.m.as_tensor(), v.v.as_tensor(), g]) {
                let update = adamw_cpu::Update {
                    beta1: b1 as f32,
                    beta2: b2 as f32,
                    grad_scale: grad_scale as f32,
                    scale_m: scale_m as f32,
                    scale_v: scale_v as f32,
                    eps: self.eps as f32,
                    lr: lr as f32,
                    decay: decay as f32,
                };
                adamw_cpu::update(v.var.as_tensor(), v.m.as_tensor(), v.v.as_tensor(), g, update)?;
                continue;
            }
            let g = if grad_scale != 1.0 { (g * grad_scale)? } else { g.clone() };
            let next_m = ((v.m.as_tensor() * b1)? + (&g * (1.0 - b1))?)?;
            let next_v = ((v.v.as_tensor() * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&next_m * scale_m)? / ((&next_v * scale_v)?.sqrt()? + self.eps)?)?;
            let theta = ((v.var.as_tensor() * decay)? - (update * lr)?)?;
            v.m.set(&next_m)?;
            v.v.set(&next_v)?;
            v.var.set(&theta)?;
        }
        Ok(())
    }

    /// Saves both moments (`m.NAME`, `v.NAME`) to a safetensors file.
    pub fn save(&self, path: &Path) -> candle_core::Result<()> {
        let mut map = HashMap::new();
        for v in &self.vars {
            map.insert(format!("m.{}", v.name), v.m.as_tensor().clone());
            map.insert(format!("v.{}", v.name), v.v.as_tensor().clone());
        }
        candle_core::safetensors::save(&map, path)
    }

    /// Restores moments saved by [`AdamW::save`]; every variable must be present.
    pub fn load(&mut self, path: &Path, step_t: usize) -> candle_core::Result<()> {
        let device = self.vars.first().map(|v| v.var.device().clone()).unwrap_or(Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)?;
        for v in &self.vars {
            for (prefix, var) in [("m", &v.m), ("v", &v.v)] {
                let key = format!("{prefix}.{}", v.name);
                let t = map.get(&key).ok_or_else(|| candle_core::Error::msg(format!("missing `{key}`")))?;
                var.set(t)?;
            }
        }
        self.step_t = step_t;
        Ok(())
    }
}

/// Sets every variable from the tensor of its name in the safetensors file at `path`, in the
/// variable's own float type: weights stored in f16 resume as f32.
fn load_vars(varmap: &VarMap, path: &Path) -> candle_core::Result<()> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::msg("variable map lock poisoned"))?;
    let Some(device) = data.values().next().map(|v| v.device().clone()) else { return Ok(()) };
    let tensors = candle_core::safetensors::load(path, &device)?;
    for (name, var) in data.iter() {
        let t = tensors.get(name).ok_or_else(|| candle_core::Error::msg(format!("missing `{name}`")))?;
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// Starts a network from a smaller trained one (progressive stacking): every variable whose
/// name is in the safetensors file at `path` takes its values (the shapes must agree: the same
/// vocabulary, width and context); the variables it lacks, the blocks added on top, keep their
/// fresh initialisation except their two output projections (`attn.c_proj`, `mlp.c_proj`),
/// which start at zero, so each added block passes its input through unchanged and the grown
/// network computes exactly what the smaller one did. Returns (variables copied, added).
pub fn grow_from(varmap: &VarMap, path: &Path) -> candle_core::Result<(usize, usize)> {
    let data = varmap.data().lock().map_err(|_| candle_core::Error::msg("variable map lock poisoned"))?;
    let Some(device) = data.values().next().map(|v| v.device().clone()) else { return Ok((0, 0)) };
    let tensors = candle_core::safetensors::load(path, &device)?;
    // Hugging Face's GPT2LMHeadModel files prefix every name with `transformer.`.
    let find = |name: &str| tensors.get(name).or_else(|| tensors.get(&format!("transformer.{name}")));
    if let Some(extra) = tensors.keys().find(|k| !data.contains_key(k.trim_start_matches("transformer."))) {
        candle_core::bail!("`{extra}` has no place in the new network (only added blocks may differ)")
    }
    let (mut copied, mut added) = (0, 0);
    for (name, var) in data.iter() {
        match find(name) {
            Some(t) if t.dims() != var.dims() => {
                candle_core::bail!("`{name}` is {:?} there and {:?} here", t.dims(), var.dims())
            }
            Some(t) => {
                var.set(&t.to_dtype(var.dtype())?)?;
                copied += 1;
            }
            None => {
                if name.ends_with("c_proj.weight") || name.ends_with("c_proj.bias") {
                    var.set(&var.zeros_like()?)?;
                }
                added += 1;
            }
        }
    }
    if copied == 0 {
        candle_core::bail!("no variable of this network is in the file")
    }
    Ok((copied, added))
}

/// Joins sequences into one stream, `separator` before each.
pub fn stream(seqs: &[Vec<u32>], separator: Option<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(seqs.iter().map(|s| s.len() + 1).sum());
    for s in seqs {
        if let Some(sep) = separator {
            out.push(sep);
        }
        out.extend_from_slice(s);
    }
    out
}

/// Start offsets of windows of `context + 1` ids, overlapping by one, from `offset`.
pub fn window_starts(len: usize, context: usize, offset: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut s = offset;
    while s + context < len {
        starts.push(s);
        s += context;
    }
    starts
}

/// An epoch's training windows: sequences shuffled, a random phase, windows shuffled.
fn epoch_windows(seqs: &[Vec<u32>], opts: &TrainOptions, epoch: usize) -> (Vec<u32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed.wrapping_mul(0x9E37_79B9).wrapping_add(epoch as u64));
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.shuffle(&mut rng);
    let shuffled: Vec<Vec<u32>> = order.iter().map(|&i| seqs[i].clone()).collect();
    let ids = stream(&shuffled, opts.separator);
    let offset = if ids.len() > 2 * (opts.context + 1) { rng.gen_range(0..opts.context) } else { 0 };
    let mut starts = window_starts(ids.len(), opts.context, offset);
    starts.shuffle(&mut rng);
    (ids, starts)
}

fn batch_tensors(
    ids: &[u32],
    starts: &[usize],
    context: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut x = Vec::with_capacity(starts.len() * context);
    let mut y = Vec::with_capacity(starts.len() * context);
    for &s in starts {
        x.extend_from_slice(&ids[s..s + context]);
        y.extend_from_slice(&ids[s + 1..s + context + 1]);
    }
    let shape = (starts.len(), context);
    Ok((Tensor::from_vec(x, shape, device)?, Tensor::from_vec(y, shape, device)?))
}

/// Mean validation loss (nats per predicted id) and the number of ids predicted. Validation
/// windows are consecutive and fixed, so every run measures the same thing.
pub fn evaluate(
    net: &Net,
    valid: &[Vec<u32>],
    opts: &TrainOptions,
    device: &Device,
) -> Result<(f64, usize), ModelError> {
    let ids = stream(valid, opts.separator);
    let starts = window_starts(ids.len(), opts.context, 0);
    let mut total = 0f64;
    let mut count = 0usize;
    for chunk in starts.chunks(opts.batch.max(1)) {
        let (x, y) = batch_tensors(&ids, chunk, opts.context, device)?;
        let l = net.loss(&x, &y, None)?.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let n = chunk.len() * opts.context;
        total += l * n as f64;
        count += n;
    }
    // The tail shorter than a window is scored too, so short validation sets still count.
    let covered = starts.last().map(|s| s + opts.context).unwrap_or(0);
    if ids.len() > covered + 1 {
        let tail = &ids[covered..];
        let n = tail.len() - 1;
        let x = Tensor::from_vec(tail[..n].to_vec(), (1, n), device)?;
        let y = Tensor::from_vec(tail[1..].to_vec(), (1, n), device)?;
        let l = net.loss(&x, &y, None)?.detach().to_dtype(DType::F64)?.to_scalar::<f64>()?;
        total += l * n as f64;
        count += n;
    }
    if count == 0 {
        return Err(ModelError::TooLittleData { what: "validation" });
    }
    Ok((total / count as f64, count))
}

/// Learning rate at `step` with overall progress `progress` ∈ [0, 1]: linear warm-up, then
/// cosine decay from `lr` to `lr * min_lr_ratio`.
pub fn learning_rate(opts: &TrainOptions, step: usize, progress: f64) -> f64 {
    let min = opts.lr * opts.min_lr_ratio;
    let cosine = min + 0.5 * (opts.lr - min) * (1.0 + (std::f64::consts::PI * progress.clamp(0.0, 1.0)).cos());
    if step < opts.warmup {
        cosine * (step + 1) as f64 / opts.warmup as f64
    } else {
        cosine
    }
}

/// The factor on the rate after AdamW's moments restarted at step `from` (a resume without
/// `optimizer.safetensors`): a linear ramp over `warmup` steps, as at the start. Without it the
/// first steps move every weight by about the full rate (Adam divides each gradient by a
/// second moment that has seen one gradient), which threw a trained folk model from 1.382 to
/// 1.412 nats/id within 50 steps.
pub fn rewarm(opts: &TrainOptions, from: Option<usize>, step: usize) -> f64 {
    match from {
        Some(from) if opts.warmup > 0 => ((step.saturating_sub(from) + 1) as f64 / opts.warmup as f64).min(1.0),
        _ => 1.0,
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Load { path: path.display().to_string(), reason: e.to_string() }
}

/// Paths inside the output directory.
pub struct RunDir {
    pub out: PathBuf,
}

impl RunDir {
    pub fn checkpoint(&self) -> PathBuf {
        self.out.join("checkpoints")
    }
    fn ck(&self, name: &str) -> PathBuf {
        self.checkpoint().join(name)
    }
}

/// Trains `config` on `data`, writing `config.json`, `model.safetensors` (the weights with the
/// best validation loss) and `train.json` to `out`, and checkpoints under `out/checkpoints/`.
/// With `resume`, weights, optimizer moments, step, epoch and data position are restored.
pub fn train(
    config: &Config,
    data: &mut dyn DataSource,
    opts: &TrainOptions,
    out: &Path,
    resume: bool,
    device: &Device,
) -> Result<TrainReport, ModelError> {
    config.validate()?;
    if opts.batch == 0 || opts.context == 0 {
        return Err(ModelError::TrainOptions("batch and context must be positive".into()));
    }
    if let Config::Gpt2(c) = config {
        if opts.context > c.n_positions {
            return Err(ModelError::TrainOptions(format!(
                "context {} exceeds n_positions {}",
                opts.context, c.n_positions
            )));
        }
    }
    let vocab = config.vocab_size();
    let check_ids = |seqs: &[Vec<u32>], what: &'static str| -> Result<(), ModelError> {
        match seqs.iter().flatten().chain(opts.separator.iter()).find(|&&id| id as usize >= vocab) {
            Some(id) => Err(ModelError::IdOutsideVocab { what, id: *id, vocab }),
            None => Ok(()),
        }
    };
    check_ids(data.valid(), "validation")?;
    let valid: Vec<Vec<u32>> = data.valid().to_vec();
    let val_tokens = stream(&valid, opts.separator).len().saturating_sub(1);
    if val_tokens == 0 {
        return Err(ModelError::TooLittleData { what: "validation" });
    }
    let dir = RunDir { out: out.to_path_buf() };
    std::fs::create_dir_all(dir.checkpoint()).map_err(|e| err(&dir.checkpoint(), e))?;
    std::fs::write(out.join("config.json"), config.to_json()).map_err(|e| err(&out.join("config.json"), e))?;

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = Net::new(config, vb)?;
    init_params(&varmap, config, opts.seed)?;
    if let (Some(from), false) = (&opts.init_from, resume) {
        let (copied, added) = grow_from(&varmap, from).map_err(|e| err(from, e))?;
        eprintln!("{}: {copied} variables copied, {added} added (new blocks start as the identity)", from.display());
    }
    let mut opt = AdamW::new(&varmap, opts.beta1, opts.beta2, opts.weight_decay, false)?;

    let mut train_seqs = data.train_epoch(0)?;
    check_ids(&train_seqs, "training")?;
    let est_windows = window_starts(stream(&train_seqs, opts.separator).len(), opts.context, 0).len();
    let steps_per_epoch = (est_windows / opts.batch).max(1);
    let mut st = TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        seed: opts.seed,
        elapsed_secs: 0.0,
        tokens_seen: 0,
        best_val: None,
        best_step: 0,
        bad_evals: 0,
        total_steps: steps_per_epoch * opts.epochs,
        history: Vec::new(),
        options: opts.clone(),
        loss_sum: 0.0,
        loss_count: 0,
    };
    // Where AdamW's moments restarted from zero on --resume: the rate warms up again from there.
    let mut fresh_moments_at: Option<usize> = None;
    if resume {
        let sp = dir.ck("state.json");
        let text = std::fs::read_to_string(&sp).map_err(|e| err(&sp, e))?;
        let saved: TrainState = serde_json::from_str(&text).map_err(|e| err(&sp, e))?;
        let mut wp = dir.ck("model.safetensors");
        if !wp.exists() && out.join("model.safetensors").exists() {
            // A bundled model may commit only its best weights (perhaps in f16) and state.json.
            eprintln!("{}: not found; resuming from {}/model.safetensors", wp.display(), out.display());
            wp = out.join("model.safetensors");
        }
        load_vars(&varmap, &wp).map_err(|e| err(&wp, e))?;
        let op = dir.ck("optimizer.safetensors");
        if op.exists() {
            opt.load(&op, saved.step).map_err(|e| err(&op, e))?;
        } else {
            // Bundled models commit their weights and state but not the optimizer's moments
            // (twice the weights' size): AdamW starts them afresh, the step count carries on.
            eprintln!(
                "{}: not found; the optimizer's moments start afresh and the rate warms up again over {} steps",
                op.display(),
                opts.warmup
            );
            fresh_moments_at = Some(saved.step);
        }
        st = TrainState { options: opts.clone(), total_steps: steps_per_epoch * opts.epochs, ..saved };
        if st.epoch > 0 {
            train_seqs = data.train_epoch(st.epoch)?;
            check_ids(&train_seqs, "training")?;
        }
    }
    let params = config.param_count();

    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C (or `kill -INT`) saves a checkpoint and ends the run cleanly.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&stop));

    let pb = if opts.progress {
        indicatif::ProgressBar::new(st.total_steps as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb.set_position(st.step as u64);

    let run_start = Instant::now();
    let base_elapsed = st.elapsed_secs;
    let mut last_ck = Instant::now();
    let mut last_log = Instant::now();
    let mut window_start = Instant::now();
    let mut window_tokens = 0u64;
    let mut tok_per_sec = 0f64;
    let budget = opts.minutes.map(|m| m * 60.0);
    let stopped_because;
    let (mut ids, mut starts) = epoch_windows(&train_seqs, opts, st.epoch);
    let too_few = |n: usize| ModelError::TooFewWindows { windows: n, len: opts.context + 1, batch: opts.batch };
    if starts.len() < opts.batch {
        return Err(too_few(starts.len()));
    }

    let save_checkpoint = |st: &TrainState, opt: &AdamW| -> Result<(), ModelError> {
        let wp = dir.ck("model.safetensors");
        varmap.save(&wp).map_err(|e| err(&wp, e))?;
        let op = dir.ck("optimizer.safetensors");
        opt.save(&op).map_err(|e| err(&op, e))?;
        let sp = dir.ck("state.json");
        let text = serde_json::to_string_pretty(st).map_err(|e| err(&sp, e))?;
        std::fs::write(&sp, text).map_err(|e| err(&sp, e))
    };
    let validate = |st: &mut TrainState, pb: &indicatif::ProgressBar| -> Result<bool, ModelError> {
        let (val, _) = evaluate(&net, &valid, opts, device)?;
        let train_loss = (st.loss_count > 0).then(|| st.loss_sum / st.loss_count as f64);
        st.loss_sum = 0.0;
        st.loss_count = 0;
        st.history.push(EvalLog {
            step: st.step,
            epoch: st.epoch,
            elapsed_secs: st.elapsed_secs,
            train_loss,
            val_loss: val,
        });
        let improved = st.best_val.map(|b| val < b).unwrap_or(true);
        if improved {
            st.best_val = Some(val);
            st.best_step = st.step;
            st.bad_evals = 0;
            let bp = dir.ck("best.safetensors");
            varmap.save(&bp).map_err(|e| err(&bp, e))?;
        } else {
            st.bad_evals += 1;
        }
        pb.suspend(|| {
            eprintln!(
                "validation at step {} (epoch {}): train {}, val {:.4} nats/id{}",
                st.step,
                st.epoch,
                train_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
                val,
                if improved { " (best)" } else { "" }
            )
        });
        Ok(opts.patience > 0 && st.bad_evals >= opts.patience)
    };

    loop {
        st.elapsed_secs = base_elapsed + run_start.elapsed().as_secs_f64();
        if stop.load(Ordering::Relaxed) {
            stopped_because = "interrupted".to_string();
            break;
        }
        if let Some(b) = budget {
            if st.elapsed_secs >= b {
                stopped_because = format!("time budget of {:.1} minutes reached", b / 60.0);
                break;
            }
        }
        if opts.max_steps.is_some_and(|m| st.step >= m) {
            stopped_because = format!("step limit of {} reached", st.step);
            break;
        }
        let first = st.batch_in_epoch * opts.batch;
        if first + opts.batch > starts.len() {
            // End of an epoch: validate, maybe stop early, move to the next epoch's data.
            st.epoch += 1;
            st.batch_in_epoch = 0;
            let early = validate(&mut st, &pb)?;
            if early {
                stopped_because = format!("early stopping: no improvement in {} validations", opts.patience);
                break;
            }
            if st.epoch >= opts.epochs {
                stopped_because = format!("{} epochs done", opts.epochs);
                break;
            }
            train_seqs = data.train_epoch(st.epoch)?;
            check_ids(&train_seqs, "training")?;
            (ids, starts) = epoch_windows(&train_seqs, opts, st.epoch);
            if starts.len() < opts.batch {
                return Err(too_few(starts.len()));
            }
            continue;
        }
        let (x, y) = batch_tensors(&ids, &starts[first..first + opts.batch], opts.context, device)?;
        let mut dropout = Dropout::new(opts.seed ^ (st.step as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let l = net.loss(&x, &y, Some(&mut dropout))?;
        let grads = l.backward()?;
        let loss_value = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            return Err(ModelError::Diverged { loss: loss_value, step: st.step });
        }
        let norm = opt.grad_norm(&grads)?;
        let scale = if opts.clip > 0.0 && norm > opts.clip { opts.clip / (norm + 1e-6) } else { 1.0 };
        let progress = {
            let by_steps = st.step as f64 / st.total_steps.max(1) as f64;
            let by_time = budget.map(|b| st.elapsed_secs / b).unwrap_or(0.0);
            by_steps.max(by_time)
        };
        let lr = learning_rate(opts, st.step, progress) * rewarm(opts, fresh_moments_at, st.step);
        opt.step(&grads, lr, scale)?;
        st.step += 1;
        st.batch_in_epoch += 1;
        st.loss_sum += loss_value;
        st.loss_count += 1;
        let tokens = (opts.batch * opts.context) as u64;
        st.tokens_seen += tokens;
        window_tokens += tokens;
        let secs = window_start.elapsed().as_secs_f64();
        if secs >= 5.0 {
            tok_per_sec = window_tokens as f64 / secs;
            window_start = Instant::now();
            window_tokens = 0;
        }
        let eta = {
            let per_step = if tok_per_sec > 0.0 { tokens as f64 / tok_per_sec } else { 0.0 };
            let by_steps = st.total_steps.saturating_sub(st.step) as f64 * per_step;
            match budget {
                Some(b) => by_steps.min((b - st.elapsed_secs).max(0.0)),
                None => by_steps,
            }
        };
        let msg = format!(
            "ep {} loss {:.3} |g| {:.2} lr {:.1e} {:.0} tok/s ETA {}",
            st.epoch,
            loss_value,
            norm,
            lr,
            tok_per_sec,
            hms(eta)
        );
        pb.set_position(st.step as u64);
        pb.set_message(msg.clone());
        if last_log.elapsed().as_secs() >= 60 || st.step == 1 {
            last_log = Instant::now();
            pb.suspend(|| eprintln!("step {}/{} {}", st.step, st.total_steps, msg));
        }
        if opts.eval_every > 0 && st.step.is_multiple_of(opts.eval_every) && validate(&mut st, &pb)? {
            stopped_because = format!("early stopping: no improvement in {} validations", opts.patience);
            break;
        }
        if last_ck.elapsed().as_secs_f64() >= opts.checkpoint_minutes * 60.0 {
            st.elapsed_secs = base_elapsed + run_start.elapsed().as_secs_f64();
            save_checkpoint(&st, &opt)?;
            last_ck = Instant::now();
        }
    }
    pb.finish_and_clear();
    // A run cut short by its time or step limit validates what it learned since the last check;
    // an interrupted one saves at once (it will be resumed) and validates next time.
    if st.loss_count > 0 && stopped_because != "interrupted" {
        validate(&mut st, &pb)?;
    }
    st.elapsed_secs = base_elapsed + run_start.elapsed().as_secs_f64();
    save_checkpoint(&st, &opt)?;
    let best = dir.ck("best.safetensors");
    let final_path = out.join("model.safetensors");
    let src = if best.exists() { best } else { dir.ck("model.safetensors") };
    std::fs::copy(&src, &final_path).map_err(|e| err(&final_path, e))?;
    let report = TrainReport {
        params,
        steps: st.step,
        epochs_completed: st.epoch,
        tokens_seen: st.tokens_seen,
        elapsed_secs: st.elapsed_secs,
        tokens_per_sec: st.tokens_seen as f64 / st.elapsed_secs.max(1e-9),
        best_val_loss: st.best_val,
        best_step: st.best_step,
        val_tokens,
        stopped_because,
        history: st.history.clone(),
    };
    let rp = out.join("train.json");
    std::fs::write(&rp, serde_json::to_string_pretty(&report).unwrap_or_default()).map_err(|e| err(&rp, e))?;
    Ok(report)
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}
