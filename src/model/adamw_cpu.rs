//! AdamW's update on the CPU: three in-place passes over each variable, no temporaries.
//!
//! Why: written with tensor ops, one update is about a dozen element-wise passes per variable,
//! each allocating a fresh tensor on one thread; for the LSTM that was a tenth of a training
//! step. Here the first moment, the second moment and the weights are each updated in place,
//! split over the thread pool, with the same formulas as [`super::train::AdamW::step`]'s tensor
//! path (which other devices keep using).

use candle_core::{CpuStorage, CustomOp1, InplaceOp2, InplaceOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32::{contiguous_f32, contiguous_f32_mut, on_cpu_f32};

/// Elements per task: large enough that a task outweighs its scheduling.
const CHUNK: usize = 1 << 15;

/// Whether [`update`] and [`sum_of_squares`] can run on these tensors (the CPU, f32, contiguous).
pub(crate) fn available(tensors: &[&Tensor]) -> bool {
    tensors.iter().all(|t| on_cpu_f32(t) && t.is_contiguous())
}

/// The settings of one AdamW update.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Update {
    pub beta1: f32,
    pub beta2: f32,
    /// Multiplies every gradient first (global-norm clipping).
    pub grad_scale: f32,
    /// Bias corrections `1 / (1 − βᵗ)` of the two moments.
    pub scale_m: f32,
    pub scale_v: f32,
    pub eps: f32,
    pub lr: f32,
    /// `1 − lr · weight_decay`, or 1 where the variable has no decay.
    pub decay: f32,
}

/// `m ← β₁m + (1 − β₁)g`, `v ← β₂v + (1 − β₂)g²`, `θ ← decay · θ − lr · m̂ / (√v̂ + ε)`, in place.
pub(crate) fn update(theta: &Tensor, m: &Tensor, v: &Tensor, grad: &Tensor, u: Update) -> Result<()> {
    for t in [m, v, grad] {
        if t.shape() != theta.shape() {
            candle_core::bail!("AdamW: a {:?} moment or gradient for a {:?} variable", t.shape(), theta.shape())
        }
    }
    m.inplace_op2(grad, &Moment { beta: u.beta1, grad_scale: u.grad_scale, square: false })?;
    v.inplace_op2(grad, &Moment { beta: u.beta2, grad_scale: u.grad_scale, square: true })?;
    theta.inplace_op3(m, v, &Apply(u))
}

/// `Σ x²` of a tensor, summed in f64.
pub(crate) fn sum_of_squares(x: &Tensor) -> Result<f64> {
    x.apply_op1_no_bwd(&SumOfSquares)?.to_scalar::<f64>()
}

/// One moment's running average, in place over the moment.
struct Moment {
    beta: f32,
    grad_scale: f32,
    /// The second moment averages the squared gradient.
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (moment, grad) = (contiguous_f32_mut(s1, l1)?, contiguous_f32(s2, l2)?);
        let (beta, rest, gs) = (self.beta, 1.0 - self.beta, self.grad_scale);
        let square = self.square;
        moment.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).for_each(|(m, g)| {
            if square {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = beta * *m + rest * (gs * g) * (gs * g));
            } else {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = beta * *m + rest * (gs * g));
            }
        });
        Ok(())
    }
}

/// The weights' step from both moments, in place over the weights.
struct Apply(Update);

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (theta, m, v) = (contiguous_f32_mut(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let u = self.0;
        theta.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK)).zip(v.par_chunks(CHUNK)).for_each(|((t, m), v)| {
            for ((t, &m), &v) in t.iter_mut().zip(m).zip(v) {
                *t = *t * u.decay - u.lr * ((m * u.scale_m) / ((v * u.scale_v).sqrt() + u.eps));
            }
        });
        Ok(())
    }
}

struct SumOfSquares;

impl CustomOp1 for SumOfSquares {
    fn name(&self) -> &'static str {
        "sum-of-squares"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let sum: f64 = x.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).sum();
        Ok((CpuStorage::F64(vec![sum]), Shape::from(())))
    }
}
