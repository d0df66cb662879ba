//! Small layers shared by the models: layer norm, GPT-2's Conv1D, seeded dropout, fused GELU.
//!
//! Each layer has a training path made of differentiable tensor ops and an inference path that
//! may use candle's fused kernels (which have no backward pass).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Layer normalisation with weight and bias (`ln_1`, `ln_2`, `ln_f`).
#[derive(Debug, Clone)]
pub(crate) struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    pub(crate) fn load(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Norm { weight, bias, eps })
    }

    pub(crate) fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train {
            candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)
        } else {
            candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps as f32)
        }
    }
}

/// GPT-2's "Conv1D": a linear layer whose weight is stored `[in, out]` (transposed from
/// `nn.Linear`), so `y = x · W + b` with no transpose.
#[derive(Debug, Clone)]
pub(crate) struct Conv1D {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1D {
    pub(crate) fn load(input: usize, output: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((input, output), "weight", candle_nn::Init::Const(0.0))?;
        let bias = vb.get_with_hints(output, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Conv1D { weight, bias })
    }

    /// `x`: `[..., in]` → `[..., out]` (flattened to 2-D so the matmul is one GEMM).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let input = dims[dims.len() - 1];
        let rows = x.elem_count() / input.max(1);
        let y = x.reshape((rows, input))?.matmul(&self.weight)?.broadcast_add(&self.bias)?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = self.weight.dim(1)?;
        y.reshape(out)
    }
}

/// Dropout with a seeded generator, so a training run (and a resumed one) is reproducible;
/// candle's own dropout draws from an unseedable CPU generator.
pub struct Dropout {
    rng: ChaCha8Rng,
}

impl Dropout {
    pub fn new(seed: u64) -> Self {
        Dropout { rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// Zeroes each element with probability `p` and scales the rest by `1 / (1 - p)`.
    pub fn apply(&mut self, x: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return Ok(x.clone());
        }
        if p >= 1.0 {
            candle_core::bail!("dropout probability must be below 1, got {p}")
        }
        let threshold = (p * u32::MAX as f64) as u32;
        let scale = (1.0 / (1.0 - p)) as f32;
        let n = x.elem_count();
        let mut mask = Vec::with_capacity(n);
        for _ in 0..n {
            mask.push(if self.rng.gen::<u32>() < threshold { 0.0f32 } else { scale });
        }
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }
}

/// Softmax over the last dimension: differentiable ops when training, the fused kernel otherwise.
pub(crate) fn softmax_last(x: &Tensor, train: bool) -> Result<Tensor> {
    if train {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(&x.contiguous()?)
    }
}

/// GPT-2's GELU (`gelu_new`, the tanh approximation), fused with its own backward on the CPU.
///
/// candle's `gelu()` is one kernel forward but its backward is about ten tensor ops, two of
/// them `powf`, each writing a full-size temporary: in a GPT training step that was a fifth of
/// the time. Here each direction is one pass. Other devices and dtypes use candle's op.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(GeluTanh)
    } else {
        x.gelu()
    }
}

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// `(1 + tanh u, 1 - tanh u)` through one `exp` (glibc's `tanhf` is several times slower, and
/// training calls this for every hidden unit twice per step), with no cancellation near 0.
/// Past |u| = 15 tanh is ±1 to within f32's precision.
fn one_plus_minus_tanh(u: f32) -> (f32, f32) {
    let e = (2.0 * u.clamp(-15.0, 15.0)).exp();
    let r = 2.0 / (e + 1.0);
    (e * r, r)
}

/// GELU with the tanh approximation (within 1e-6 of candle's kernel).
fn gelu_value(v: f32) -> f32 {
    let (plus, _) = one_plus_minus_tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_C * v * v));
    0.5 * v * plus
}

/// d gelu / dv.
fn gelu_slope(v: f32) -> f32 {
    let (plus, minus) = one_plus_minus_tanh(SQRT_TWO_OVER_PI * v * (1.0 + GELU_C * v * v));
    0.5 * plus + 0.5 * v * plus * minus * SQRT_TWO_OVER_PI * (1.0 + 3.0 * GELU_C * v * v)
}

/// A contiguous f32 slice of `storage` as `layout` views it.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("fused GELU wants f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("fused GELU wants a contiguous tensor"),
    }
}

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let out = f32_slice(storage, layout)?.iter().map(|&v| gelu_value(v)).collect();
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad_res.contiguous()?, &GeluTanhGrad)?))
    }
}

/// `(arg, grad)` → `grad · gelu'(arg)`.
struct GeluTanhGrad;

impl CustomOp2 for GeluTanhGrad {
    fn name(&self) -> &'static str {
        "gelu-tanh-fused-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (arg, grad) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if arg.len() != grad.len() {
            candle_core::bail!("fused GELU backward: {} values, {} gradients", arg.len(), grad.len())
        }
        let out = arg.iter().zip(grad).map(|(&v, &g)| g * gelu_slope(v)).collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn fused_gelu_matches_candles_values_and_gradients() -> Result<()> {
        // -6..6 in steps of 0.15, with the two ends pushed far out (where tanh saturates).
        let mut xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.15).collect();
        (xs[0], xs[80]) = (-30.0, 30.0);
        let x = Var::from_vec(xs, (9, 9), &Device::Cpu)?;
        // A weighting so each element's gradient differs.
        let w = Tensor::arange(0f32, 81.0, &Device::Cpu)?.reshape((9, 9))?;
        let ours = gelu_tanh(x.as_tensor())?;
        let theirs = x.as_tensor().gelu()?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "values differ by {diff}");
        let g_ours = (ours * &w)?.sum_all()?.backward()?;
        let g_theirs = (theirs * &w)?.sum_all()?.backward()?;
        let (a, b) = (g_ours.get(&x).expect("grad"), g_theirs.get(&x).expect("grad"));
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "gradients differ by {diff}");
        Ok(())
    }
}
