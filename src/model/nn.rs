//! Small layers shared by the models: layer norm, GPT-2's Conv1D, seeded dropout, GELU.
//!
//! Each layer has a training path that can be differentiated (on the CPU, layer norm and GELU
//! are fused ops with hand-written backward passes; elsewhere candle's tensor ops) and an
//! inference path that may use candle's fused kernels (which have no backward pass).

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use candle_nn::VarBuilder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::affine::affine;
use super::cpu_f32::{contiguous_f32, on_cpu_f32, one_plus_minus_tanh};

/// Elements per task when an elementwise op splits its work over the thread pool: large enough
/// that scheduling costs nothing next to the work, small enough to split a GPT activation.
const CHUNK: usize = 1 << 14;

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
        if train && on_cpu_f32(x) {
            let fused = LayerNormFused { eps: self.eps as f32 };
            x.contiguous()?.apply_op3(&self.weight.contiguous()?, &self.bias.contiguous()?, fused)
        } else if train {
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

    /// `x`: `[..., in]` → `[..., out]` (one GEMM over all the rows; on the CPU one fused op,
    /// [`affine`], with its own backward).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if on_cpu_f32(x) {
            return affine(x, &self.weight, &self.bias);
        }
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
        let mask = self.mask(x.elem_count(), p);
        if on_cpu_f32(x) {
            return x.contiguous()?.apply_op1(MaskProduct { mask: Arc::new(mask) });
        }
        let mask = Tensor::from_vec(mask, x.shape(), x.device())?.to_dtype(x.dtype())?;
        x.mul(&mask)
    }

    /// `x + dropout(a)`, the residual connection after a sublayer. On the CPU one op each way,
    /// split over the thread pool (through candle, a mask multiply and an add, each on one
    /// thread, and twice as many gradients to accumulate); the same mask as [`Dropout::apply`].
    pub(crate) fn add_dropped(&mut self, x: &Tensor, a: &Tensor, p: f64) -> Result<Tensor> {
        if p <= 0.0 {
            return x + a;
        }
        if p >= 1.0 || !on_cpu_f32(a) || !on_cpu_f32(x) || x.shape() != a.shape() {
            return x + self.apply(a, p)?;
        }
        let mask = Arc::new(self.mask(a.elem_count(), p));
        x.contiguous()?.apply_op2(&a.contiguous()?, ResidualDropout { mask })
    }

    /// `n` factors, each 0 with probability `p` and `1 / (1 - p)` otherwise. One draw from the
    /// generator keys the whole mask, and each chunk of [`CHUNK`] factors comes from its own
    /// stream of that key: drawn in parallel, and the same whatever the number of threads.
    fn mask(&mut self, n: usize, p: f64) -> Vec<f32> {
        let threshold = (p * u32::MAX as f64) as u32;
        let scale = (1.0 / (1.0 - p)) as f32;
        let key: <ChaCha8Rng as SeedableRng>::Seed = self.rng.gen();
        let mut mask = vec![0f32; n];
        mask.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
            let mut rng = ChaCha8Rng::from_seed(key);
            rng.set_stream(i as u64);
            chunk.iter_mut().for_each(|m| *m = if rng.gen::<u32>() < threshold { 0.0 } else { scale });
        });
        mask
    }
}

/// `(x, a)` → `x + a ⊙ mask` for [`Dropout::add_dropped`].
struct ResidualDropout {
    mask: Arc<Vec<f32>>,
}

impl CustomOp2 for ResidualDropout {
    fn name(&self) -> &'static str {
        "residual-dropout-fused"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, a) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        if x.len() != a.len() || a.len() != self.mask.len() {
            candle_core::bail!(
                "residual dropout: {} inputs, {} added, {} mask factors",
                x.len(),
                a.len(),
                self.mask.len()
            )
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .zip(a.par_chunks(CHUNK))
            .zip(self.mask.par_chunks(CHUNK))
            .for_each(|(((out, x), a), m)| {
                for (o, ((x, a), m)) in out.iter_mut().zip(x.iter().zip(a).zip(m)) {
                    *o = x + a * m;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _a: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let da = grad.contiguous()?.apply_op1_no_bwd(&MaskProduct { mask: Arc::clone(&self.mask) })?;
        Ok((Some(grad.clone()), Some(da)))
    }
}

/// `g` → `g ⊙ mask`: dropout itself ([`Dropout::apply`]) and the gradient of a dropped branch.
struct MaskProduct {
    mask: Arc<Vec<f32>>,
}

impl CustomOp1 for MaskProduct {
    fn name(&self) -> &'static str {
        "dropout-mask-product"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = contiguous_f32(storage, layout)?;
        if g.len() != self.mask.len() {
            candle_core::bail!("dropout: {} values, {} mask factors", g.len(), self.mask.len())
        }
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(self.mask.par_chunks(CHUNK)).for_each(
            |((out, g), m)| {
                for (o, (g, m)) in out.iter_mut().zip(g.iter().zip(m)) {
                    *o = g * m;
                }
            },
        );
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(self)?))
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
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(GeluTanh)
    } else {
        x.gelu()
    }
}

const SQRT_TWO_OVER_PI: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

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

struct GeluTanh;

impl CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "gelu-tanh-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout)?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(out, x)| {
            out.iter_mut().zip(x).for_each(|(o, &v)| *o = gelu_value(v));
        });
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
        let (arg, grad) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        if arg.len() != grad.len() {
            candle_core::bail!("fused GELU backward: {} values, {} gradients", arg.len(), grad.len())
        }
        let mut out = vec![0f32; arg.len()];
        out.par_chunks_mut(CHUNK).zip(arg.par_chunks(CHUNK)).zip(grad.par_chunks(CHUNK)).for_each(
            |((out, arg), grad)| {
                for (o, (&v, g)) in out.iter_mut().zip(arg.iter().zip(grad)) {
                    *o = g * gelu_slope(v);
                }
            },
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Layer norm over the last dimension for training on the CPU, fused with its own backward.
///
/// candle's differentiable layer norm is eight tensor ops whose backward sums broadcasts over the
/// whole batch; this is one pass per row each way (the standard formulas: with x̂ the normalised
/// row and r the reciprocal standard deviation, dx = r · (dx̂ − mean(dx̂) − x̂ · mean(dx̂ · x̂))).
#[derive(Clone, Copy)]
struct LayerNormFused {
    eps: f32,
}

impl LayerNormFused {
    /// Mean and reciprocal standard deviation of one row.
    fn stats(&self, row: &[f32]) -> (f32, f32) {
        let n = row.len() as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        (mean, 1.0 / (var + self.eps).sqrt())
    }
}

impl CustomOp3 for LayerNormFused {
    fn name(&self) -> &'static str {
        "layer-norm-fused"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let c = w.len();
        if c == 0 || b.len() != c || x.len() % c != 0 {
            candle_core::bail!("fused layer norm: rows of {} values, weight {c}, bias {}", x.len(), b.len())
        }
        let mut out = vec![0f32; x.len()];
        let rows_per_task = (CHUNK / c).max(1);
        out.par_chunks_mut(rows_per_task * c).zip(x.par_chunks(rows_per_task * c)).for_each(|(out, x)| {
            for (out, row) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                let (mean, r) = self.stats(row);
                for (o, (v, (w, b))) in out.iter_mut().zip(row.iter().zip(w.iter().zip(b))) {
                    *o = (v - mean) * r * w + b;
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // One op computes all three: rows of dx, then dw, then db, as `[rows + 2, c]`.
        let c = w.elem_count();
        let rows = x.elem_count() / c;
        let all = x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormFusedGrad(*self))?;
        let all = all.reshape((rows + 2, c))?;
        let dx = all.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = all.narrow(0, rows, 1)?.reshape(w.shape())?;
        let db = all.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(x, weight, dy)` → `[dx rows..., dweight, dbias]` for [`LayerNormFused`].
struct LayerNormFusedGrad(LayerNormFused);

impl CustomOp3 for LayerNormFusedGrad {
    fn name(&self) -> &'static str {
        "layer-norm-fused-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let c = w.len();
        if c == 0 || dy.len() != x.len() || x.len() % c != 0 {
            candle_core::bail!("fused layer norm backward: {} values, {} gradients, weight {c}", x.len(), dy.len())
        }
        let rows = x.len() / c;
        let mut out = vec![0f32; (rows + 2) * c];
        let (dx_all, sums) = out.split_at_mut(rows * c);
        // Each task keeps its own weight and bias sums (`[dw, db]`), added up at the end.
        let span = (CHUNK / c).max(1) * c;
        let partial: Vec<Vec<f32>> = dx_all
            .par_chunks_mut(span)
            .zip(x.par_chunks(span))
            .zip(dy.par_chunks(span))
            .map(|((dx_rows, x_rows), g_rows)| {
                let mut sums = vec![0f32; 2 * c];
                let (dw, db) = sums.split_at_mut(c);
                let mut xhat = vec![0f32; c];
                for ((row, g), dx) in
                    x_rows.chunks_exact(c).zip(g_rows.chunks_exact(c)).zip(dx_rows.chunks_exact_mut(c))
                {
                    let (mean, r) = self.0.stats(row);
                    let (mut mean_g, mut mean_gx) = (0f32, 0f32);
                    for k in 0..c {
                        xhat[k] = (row[k] - mean) * r;
                        let gk = g[k] * w[k];
                        mean_g += gk;
                        mean_gx += gk * xhat[k];
                        dw[k] += g[k] * xhat[k];
                        db[k] += g[k];
                    }
                    mean_g /= c as f32;
                    mean_gx /= c as f32;
                    for k in 0..c {
                        dx[k] = r * (g[k] * w[k] - mean_g - xhat[k] * mean_gx);
                    }
                }
                sums
            })
            .collect();
        for part in partial {
            sums.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
        }
        Ok((CpuStorage::F32(out), Shape::from(((rows + 2) * c,))))
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

    /// A few rows (one task), and enough rows that the work splits into several tasks whose
    /// weight and bias sums must add up.
    #[test]
    fn fused_layer_norm_matches_candles_values_and_gradients() -> Result<()> {
        let dev = Device::Cpu;
        for rows in [3, 3 * CHUNK / 8 + 5] {
            let n = 2 * rows * 8;
            let xs: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.3).collect();
            let x = Var::from_vec(xs, (2, rows, 8), &dev)?;
            let w = Var::from_vec((0..8).map(|i| 0.5 + 0.1 * i as f32).collect(), 8, &dev)?;
            let b = Var::from_vec((0..8).map(|i| 0.05 * i as f32 - 0.2).collect(), 8, &dev)?;
            let norm = Norm { weight: w.as_tensor().clone(), bias: b.as_tensor().clone(), eps: 1e-5 };
            let ours = norm.forward(x.as_tensor(), true)?;
            let theirs = candle_nn::ops::layer_norm_slow(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5)?;
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{rows} rows: values differ by {diff}");
            let weight = Tensor::arange(0f32, n as f32, &dev)?.reshape((2, rows, 8))?.cos()?;
            let g_ours = (ours * &weight)?.sum_all()?.backward()?;
            let g_theirs = (theirs * &weight)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                let (a, b) = (g_ours.get(v).expect("grad"), g_theirs.get(v).expect("grad"));
                // Relative: the weight and bias gradients sum thousands of rows.
                let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1.0);
                let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale;
                assert!(diff < 1e-4, "{rows} rows: gradients of {name} differ by {diff} (relative)");
            }
        }
        Ok(())
    }

    /// Seeded masks: the same seed gives the same mask whatever the thread count; about `p` of
    /// the factors are 0 and the rest `1 / (1 - p)`.
    #[test]
    fn dropout_masks_are_seeded_and_independent_of_the_thread_count() {
        let n = 5 * CHUNK + 123;
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
        let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().expect("pool");
        let a = one.install(|| Dropout::new(7).mask(n, 0.25));
        let b = three.install(|| Dropout::new(7).mask(n, 0.25));
        assert_eq!(a, b);
        assert_ne!(a, Dropout::new(8).mask(n, 0.25));
        let zeros = a.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
        assert!((zeros - 0.25).abs() < 0.01, "{zeros} of the factors are 0");
        assert!(a.iter().all(|&m| m == 0.0 || (m - 4.0 / 3.0).abs() < 1e-6));
    }

    /// `x + dropout(a)` in one op: the same values and gradients as candle's add of the masked
    /// branch, with the same mask (a fresh generator with the same seed for each).
    #[test]
    fn residual_dropout_matches_an_add_of_the_dropped_branch() -> Result<()> {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 2 * CHUNK / 3 + 7), &dev)?)?;
        let a = Var::from_tensor(&Tensor::randn(0f32, 1.0, x.shape(), &dev)?)?;
        let weighting = Tensor::randn(0f32, 1.0, x.shape(), &dev)?;
        let fused = Dropout::new(3).add_dropped(x.as_tensor(), a.as_tensor(), 0.3)?;
        let mask = Tensor::from_vec(Dropout::new(3).mask(x.elem_count(), 0.3), x.shape(), &dev)?;
        let unfused = (x.as_tensor() + a.as_tensor().mul(&mask)?)?;
        let diff = (&fused - &unfused)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "values differ by {diff}");
        let g_fused = (fused * &weighting)?.sum_all()?.backward()?;
        let g_unfused = (unfused * &weighting)?.sum_all()?.backward()?;
        for (name, v) in [("x", &x), ("a", &a)] {
            let (p, q) = (g_fused.get(v).expect("grad"), g_unfused.get(v).expect("grad"));
            let diff = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "gradients of {name} differ by {diff}");
        }
        // Plain dropout through the same mask op, and its gradient is the mask.
        let dropped = Dropout::new(3).apply(a.as_tensor(), 0.3)?;
        let diff = (&dropped - a.as_tensor().mul(&mask)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "dropout values differ by {diff}");
        let grad = dropped.sum_all()?.backward()?.get(&a).expect("grad").clone();
        assert!((grad - &mask)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-6);
        Ok(())
    }
}
