//! Small layers shared by the models: layer norm, GPT-2's Conv1D, seeded dropout.
//!
//! Each layer has a training path made of differentiable tensor ops and an inference path that
//! may use candle's fused kernels (which have no backward pass).

use candle_core::{Result, Tensor, D};
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
