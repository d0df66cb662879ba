//! The output layer and the loss fused into one CPU op each way: `logits = x·Wᵀ + b`, then the
//! mean cross-entropy of the logits against the targets.
//!
//! Why: candle's `cross_entropy` is a log-softmax, a gather and a mean, about eight ops, each
//! with its own `[rows, vocabulary]` tensor, and backward every such tensor's gradient is a fresh
//! zero-filled tensor that the incoming gradient is added into (`backprop` accumulates so). At the
//! LSTM bench's shape (32 × 96 rows, 454 ids) each is 5.6 MB; the zero-fills and adds of the loss
//! chain and the head's bias were most of the 8% that `memset` and `binary_map` took of a step,
//! and the log-softmax itself 3%. Here the logits never leave the op: forward keeps the softmax
//! for backward, and backward is `softmax − one-hot` and three products (the gradients of `x`,
//! `W` and `b`), with no gradient tensor of the logits' size in the graph.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::cpu_f32::{contiguous_f32, exp_approx, matmul, Threads};

/// Mean cross-entropy (nats) of `logits` `[b, t, v]` against `targets` `[b, t]` with candle's
/// ops: the way where [`linear_cross_entropy`] does not apply (other devices and dtypes), and
/// for logits a caller already has.
pub(crate) fn from_logits(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    candle_nn::loss::cross_entropy(&logits.reshape((b * t, v))?, &targets.reshape(b * t)?)
}

/// Mean cross-entropy (nats) of `x · wᵀ + b` against `targets`: `x` `[n, d]`, `w` `[v, d]`, `b`
/// `[v]`, `targets` `n` ids below `v`. A scalar, differentiable in all three tensors when `train`.
/// f32 tensors on the CPU only (callers check [`super::cpu_f32::on_cpu_f32`]).
pub(crate) fn linear_cross_entropy(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    targets: &Tensor,
    train: bool,
) -> Result<Tensor> {
    let targets = targets.flatten_all()?.to_vec1::<u32>()?;
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    let op = LinearCrossEntropy { targets, keep: train, saved: Mutex::new(None) };
    if train {
        x.apply_op3(&w, &b, op)
    } else {
        x.apply_op3_no_bwd(&w, &b, &op)
    }
}

struct LinearCrossEntropy {
    targets: Vec<u32>,
    /// Keep the softmax for backward.
    keep: bool,
    /// The softmax of the logits, `[n, v]`, from forward.
    saved: Mutex<Option<Vec<f32>>>,
}

/// Rows, input width and vocabulary of one call.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    d: usize,
    v: usize,
}

impl LinearCrossEntropy {
    fn dims(&self, x: &Shape, w: &Shape, b: &Shape) -> Result<Dims> {
        let dims = match (x.dims(), w.dims(), b.dims()) {
            (&[n, d], &[v, d2], &[v2]) if d == d2 && v == v2 && v > 0 => Dims { n, d, v },
            _ => {
                candle_core::bail!("fused cross-entropy wants x [n, d], w [v, d] and b [v], got {x:?}, {w:?} and {b:?}")
            }
        };
        if self.targets.len() != dims.n {
            candle_core::bail!("fused cross-entropy: {} targets for {} rows", self.targets.len(), dims.n)
        }
        if let Some(bad) = self.targets.iter().find(|&&t| t as usize >= dims.v) {
            candle_core::bail!("fused cross-entropy: target id {bad} is outside the vocabulary of {}", dims.v)
        }
        if dims.n == 0 {
            candle_core::bail!("fused cross-entropy: no rows")
        }
        Ok(dims)
    }
}

/// Turns one row of logits into its softmax in place and returns the row's loss,
/// `log Σ exp(l) − l[target]`.
fn softmax_row(row: &mut [f32], bias: &[f32], target: usize) -> f64 {
    for (l, b) in row.iter_mut().zip(bias) {
        *l += b;
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let picked = row[target];
    let mut sum = 0f32;
    for l in row.iter_mut() {
        *l = exp_approx(*l - max);
        sum += *l;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|p| *p *= inv);
    (max as f64 + (sum as f64).ln()) - picked as f64
}

impl CustomOp3 for LinearCrossEntropy {
    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Dims { n, d, v } = self.dims(xl.shape(), wl.shape(), bl.shape())?;
        let (x, w, b) = (contiguous_f32(xs, xl)?, contiguous_f32(ws, wl)?, contiguous_f32(bs, bl)?);
        let mut probs = vec![0f32; n * v];
        // SAFETY: `probs` is n × v, `x` n × d and `w` v × d (read as its transpose, d × v), as
        // `dims` checked; `probs` is a fresh buffer.
        unsafe {
            matmul(
                (n, v, d),
                probs.as_mut_ptr(),
                (v, 1),
                false,
                x.as_ptr(),
                (d, 1),
                w.as_ptr(),
                (1, d),
                1.0,
                Threads::Pool,
            )
        };
        // Row losses summed in order, so that a step's loss does not depend on the thread split.
        let losses: Vec<f64> = probs
            .par_chunks_mut(v)
            .zip(self.targets.par_iter())
            .map(|(row, &t)| softmax_row(row, b, t as usize))
            .collect();
        let total: f64 = losses.iter().sum();
        if self.keep {
            *self.saved.lock().map_err(|_| candle_core::Error::msg("fused cross-entropy: lock poisoned"))? =
                Some(probs);
        }
        Ok((CpuStorage::F32(vec![(total / n as f64) as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Dims { n, d, v } = self.dims(x.shape(), w.shape(), b.shape())?;
        let mut dlogits = self
            .saved
            .lock()
            .map_err(|_| candle_core::Error::msg("fused cross-entropy: lock poisoned"))?
            .take()
            .ok_or_else(|| {
                candle_core::Error::msg("fused cross-entropy: backward ran twice or without a training forward")
            })?;
        // d(mean loss)/d(logit) = (softmax − one-hot) / n, times the incoming gradient.
        let scale = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()? / n as f32;
        dlogits.par_chunks_mut(v).zip(self.targets.par_iter()).for_each(|(row, &t)| {
            row[t as usize] -= 1.0;
            row.iter_mut().for_each(|g| *g *= scale);
        });
        let (x_guard, x_layout) = x.storage_and_layout();
        let (w_guard, w_layout) = w.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws)) = (&*x_guard, &*w_guard) else {
            candle_core::bail!("fused cross-entropy runs on the CPU")
        };
        let (xd, wd) = (contiguous_f32(xs, x_layout)?, contiguous_f32(ws, w_layout)?);
        let mut dx = vec![0f32; n * d];
        let mut dw = vec![0f32; v * d];
        // SAFETY: dx is n × d = dlogits (n × v) · w (v × d); dw is v × d = dlogitsᵀ (v × n, read
        // through strides) · x (n × d); every buffer has the size `dims` checked, and the outputs
        // are fresh.
        unsafe {
            matmul(
                (n, d, v),
                dx.as_mut_ptr(),
                (d, 1),
                false,
                dlogits.as_ptr(),
                (v, 1),
                wd.as_ptr(),
                (d, 1),
                1.0,
                Threads::Pool,
            );
            matmul(
                (v, d, n),
                dw.as_mut_ptr(),
                (d, 1),
                false,
                dlogits.as_ptr(),
                (1, v),
                xd.as_ptr(),
                (d, 1),
                1.0,
                Threads::Pool,
            );
        }
        drop((x_guard, w_guard));
        let db = dlogits.chunks_exact(v).fold(vec![0f32; v], |mut acc, row| {
            acc.iter_mut().zip(row).for_each(|(a, g)| *a += g);
            acc
        });
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dw, w.shape(), w.device())?),
            Some(Tensor::from_vec(db, b.shape(), b.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Loss and all three gradients equal candle's `matmul + broadcast_add + cross_entropy`.
    #[test]
    fn matches_candles_linear_and_cross_entropy() -> Result<()> {
        let dev = Device::Cpu;
        let (n, d, v) = (37, 19, 23);
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (n, d), &dev)?))?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 0.5, (v, d), &dev)?))?;
        let b = Var::from_tensor(&(Tensor::randn(0f32, 0.5, v, &dev)?))?;
        let targets = Tensor::from_vec((0..n as u32).map(|i| (i * 7) % v as u32).collect::<Vec<u32>>(), n, &dev)?;
        let reference = candle_nn::loss::cross_entropy(&x.matmul(&w.t()?)?.broadcast_add(&b)?, &targets)?;
        let fused = linear_cross_entropy(&x, &w, &b, &targets, true)?;
        let close = |a: &Tensor, b: &Tensor, what: &str| -> Result<()> {
            let diff = (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff < 2e-5, "{what}: differs by {diff}");
            Ok(())
        };
        close(&fused, &reference, "loss")?;
        let (gr, gf) = (reference.backward()?, fused.backward()?);
        for (var, what) in [(&x, "dx"), (&w, "dw"), (&b, "db")] {
            close(gf.get(var).expect("fused gradient"), gr.get(var).expect("candle gradient"), what)?;
        }
        // Evaluation: the same loss, nothing kept.
        close(&linear_cross_entropy(&x, &w, &b, &targets, false)?, &reference, "loss without backward")?;
        Ok(())
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), candle_core::DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 3), candle_core::DType::F32, &dev).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &dev).unwrap();
        let t = Tensor::from_vec(vec![1u32, 4], 2, &dev).unwrap();
        let err = linear_cross_entropy(&x, &w, &b, &t, false).unwrap_err().to_string();
        assert!(err.contains("target id 4"), "{err}");
    }
}
