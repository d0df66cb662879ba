//! Causal self-attention over a whole sequence, fused into one CPU op each way (training and scoring).
//!
//! Why: candle's attention is a batched matmul, a scale, a mask, a softmax and a second matmul,
//! each writing a `[batch, heads, t, t]` tensor (134 MB per layer for the folk GPT's batch of
//! 8 × 1,024), and backward is as many again. Those element-wise passes run on one thread, and
//! each of their outputs is fresh memory the kernel zeroes page by page: profiled at batch 8 ×
//! 1,024, half the step's time was `clear_page` under candle's `binary_map`. Here each (row,
//! head) pair is one task on the thread pool; it walks its queries in blocks of [`BLOCK`] rows,
//! scores each block against the keys it may see (none of the masked upper triangle is
//! computed), and keeps the block's scores in a scratch buffer that stays in cache. Backward
//! recomputes a block's probabilities instead of storing them, as FlashAttention does, and uses
//! `D_i = Σ_j P_ij dP_ij` so it needs neither the output nor a saved normaliser.
//!
//! Input is the `c_attn` projection as it comes, `[b, t, 3·h·d]` (queries, keys, values, each
//! `[h, d]`), and output is `[b, t, h·d]`, as `c_proj` takes it: no permutes, no copies, and no
//! reshapes (whose backward, in candle, is a copy and an accumulation).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32::{contiguous_f32, exp_approx, matmul, Shared, Threads};

/// Query rows per block: the block's scores (`BLOCK × t` floats, 256 KiB at t = 1,024) and
/// their gradients stay within a core's L2 cache.
const BLOCK: usize = 64;

/// `softmax(scale · q kᵀ + causal mask) · v` for every row and head: `qkv` `[b, t, 3 · e]`
/// (queries, keys, values, each `heads` heads of `e / heads`) → `[b, t, e]`. Differentiable
/// when `train` (through the fused backward).
pub(crate) fn causal_self_attention(qkv: &Tensor, heads: usize, scale: f64, train: bool) -> Result<Tensor> {
    let op = CausalAttention { scale: scale as f32, heads };
    let qkv = qkv.contiguous()?;
    if train {
        qkv.apply_op1(op)
    } else {
        qkv.apply_op1_no_bwd(&op)
    }
}

#[derive(Clone, Copy)]
struct CausalAttention {
    scale: f32,
    heads: usize,
}

/// The sizes of a `[b, t, 3 · h · d]` input, laid out as `[b, t, 3, h, d]`.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    d: usize,
}

impl Dims {
    fn of(shape: &Shape, h: usize) -> Result<Dims> {
        match *shape.dims() {
            [b, t, c] if t > 0 && h > 0 && c > 0 && c % (3 * h) == 0 => Ok(Dims { b, t, h, d: c / (3 * h) }),
            _ => candle_core::bail!("fused attention wants [batch, t, 3 × {h} heads × head_dim], got {shape:?}"),
        }
    }

    /// Distance between consecutive positions in `[b, t, 3, h, d]`.
    fn qkv_row(&self) -> usize {
        3 * self.h * self.d
    }

    /// Offset of position 0 of `part` (0 queries, 1 keys, 2 values) of `(batch, head)`.
    fn qkv_at(&self, batch: usize, head: usize, part: usize) -> usize {
        batch * self.t * self.qkv_row() + (part * self.h + head) * self.d
    }

    /// Distance between consecutive positions in the `[b, t, h, d]` output.
    fn out_row(&self) -> usize {
        self.h * self.d
    }

    fn out_at(&self, batch: usize, head: usize) -> usize {
        batch * self.t * self.out_row() + head * self.d
    }
}

/// Scores of queries `i0..i0 + m` against keys `0..i0 + m` into `p` (row stride `i0 + m`),
/// turned into causal softmax probabilities (zero where a key lies after its query).
///
/// # Safety
/// `q` and `k` point at position 0 of one head's queries and keys in a `[b, t, 3, h, d]` buffer.
unsafe fn block_probabilities(
    dims: Dims,
    q: *const f32,
    k: *const f32,
    i0: usize,
    m: usize,
    scale: f32,
    p: &mut [f32],
) {
    let keys = i0 + m;
    let row = dims.qkv_row();
    matmul(
        (m, keys, dims.d),
        p.as_mut_ptr(),
        (keys, 1),
        false,
        q.add(i0 * row),
        (row, 1),
        k,
        (1, row),
        scale,
        Threads::One,
    );
    for (r, scores) in p[..m * keys].chunks_exact_mut(keys).enumerate() {
        let seen = i0 + r + 1;
        let (visible, masked) = scores.split_at_mut(seen);
        let max = visible.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        // `exp_approx` vectorises; the library's `expf` was a call per score (4% of a step).
        visible.iter_mut().for_each(|s| *s = exp_approx(*s - max));
        let sum: f32 = visible.iter().sum();
        let inv = 1.0 / sum;
        visible.iter_mut().for_each(|s| *s *= inv);
        masked.fill(0.0);
    }
}

impl CustomOp1 for CausalAttention {
    fn name(&self) -> &'static str {
        "causal-attention-fused"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = Dims::of(layout.shape(), self.heads)?;
        let qkv = contiguous_f32(storage, layout)?;
        let Dims { b, t, h, d } = dims;
        let mut out = vec![0f32; b * t * h * d];
        let out_ptr = Shared(out.as_mut_ptr());
        let (row, out_row) = (dims.qkv_row(), dims.out_row());
        (0..b * h).into_par_iter().for_each_init(
            || vec![0f32; BLOCK * t],
            |p, task| {
                let (batch, head) = (task / h, task % h);
                // The whole `Shared` (Send), not its raw pointer field, goes into the closure.
                #[allow(clippy::redundant_locals)]
                let out_ptr = out_ptr;
                // SAFETY: the offsets stay inside `qkv` and `out` (sizes from `dims`), and this
                // task writes only rows of its own (batch, head) in `out`.
                unsafe {
                    let q = qkv.as_ptr().add(dims.qkv_at(batch, head, 0));
                    let k = qkv.as_ptr().add(dims.qkv_at(batch, head, 1));
                    let v = qkv.as_ptr().add(dims.qkv_at(batch, head, 2));
                    let y = out_ptr.0.add(dims.out_at(batch, head));
                    for i0 in (0..t).step_by(BLOCK) {
                        let m = BLOCK.min(t - i0);
                        let keys = i0 + m;
                        block_probabilities(dims, q, k, i0, m, self.scale, p);
                        matmul(
                            (m, d, keys),
                            y.add(i0 * out_row),
                            (out_row, 1),
                            false,
                            p.as_ptr(),
                            (keys, 1),
                            v,
                            (row, 1),
                            1.0,
                            Threads::One,
                        );
                    }
                }
            },
        );
        Ok((CpuStorage::F32(out), Shape::from((b, t, h * d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(qkv.apply_op2_no_bwd(&grad.contiguous()?, &CausalAttentionGrad(*self))?))
    }
}

/// `(qkv, dy)` → `dqkv` for [`CausalAttention`], in the input's `[b, t, 3, h, d]` layout.
struct CausalAttentionGrad(CausalAttention);

impl CustomOp2 for CausalAttentionGrad {
    fn name(&self) -> &'static str {
        "causal-attention-fused-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dims = Dims::of(l1.shape(), self.0.heads)?;
        let (qkv, dy) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?);
        let Dims { b, t, h, d } = dims;
        if dy.len() != b * t * h * d {
            candle_core::bail!("fused attention backward: {} gradients for {b}×{t}×{h}×{d} outputs", dy.len())
        }
        let scale = self.0.scale;
        // Zeroed: keys and values gather their gradients over every query block.
        let mut dqkv = vec![0f32; qkv.len()];
        let grad_ptr = Shared(dqkv.as_mut_ptr());
        let (row, out_row) = (dims.qkv_row(), dims.out_row());
        (0..b * h).into_par_iter().for_each_init(
            || (vec![0f32; BLOCK * t], vec![0f32; BLOCK * t]),
            |(p, dp), task| {
                let (batch, head) = (task / h, task % h);
                // The whole `Shared` (Send), not its raw pointer field, goes into the closure.
                #[allow(clippy::redundant_locals)]
                let grad_ptr = grad_ptr;
                // SAFETY: offsets stay inside `qkv`, `dy` and `dqkv` (sizes from `dims`); this task
                // writes only the query, key and value slots of its own (batch, head).
                unsafe {
                    let q = qkv.as_ptr().add(dims.qkv_at(batch, head, 0));
                    let k = qkv.as_ptr().add(dims.qkv_at(batch, head, 1));
                    let v = qkv.as_ptr().add(dims.qkv_at(batch, head, 2));
                    let dq = grad_ptr.0.add(dims.qkv_at(batch, head, 0));
                    let dk = grad_ptr.0.add(dims.qkv_at(batch, head, 1));
                    let dv = grad_ptr.0.add(dims.qkv_at(batch, head, 2));
                    let g = dy.as_ptr().add(dims.out_at(batch, head));
                    for i0 in (0..t).step_by(BLOCK) {
                        let m = BLOCK.min(t - i0);
                        let keys = i0 + m;
                        block_probabilities(dims, q, k, i0, m, scale, p);
                        let g_block = g.add(i0 * out_row);
                        // dP = dY · Vᵀ
                        matmul(
                            (m, keys, d),
                            dp.as_mut_ptr(),
                            (keys, 1),
                            false,
                            g_block,
                            (out_row, 1),
                            v,
                            (1, row),
                            1.0,
                            Threads::One,
                        );
                        // dS = P ⊙ (dP − Σ_j P dP), row by row.
                        for (pr, dpr) in p[..m * keys].chunks_exact(keys).zip(dp[..m * keys].chunks_exact_mut(keys)) {
                            let dot: f32 = pr.iter().zip(dpr.iter()).map(|(a, b)| a * b).sum();
                            dpr.iter_mut().zip(pr).for_each(|(ds, &pv)| *ds = pv * (*ds - dot));
                        }
                        // dQ = scale · dS · K
                        matmul(
                            (m, d, keys),
                            dq.add(i0 * row),
                            (row, 1),
                            false,
                            dp.as_ptr(),
                            (keys, 1),
                            k,
                            (row, 1),
                            scale,
                            Threads::One,
                        );
                        // dK += scale · dSᵀ · Q
                        matmul(
                            (keys, d, m),
                            dk,
                            (row, 1),
                            true,
                            dp.as_ptr(),
                            (1, keys),
                            q.add(i0 * row),
                            (row, 1),
                            scale,
                            Threads::One,
                        );
                        // dV += Pᵀ · dY
                        matmul(
                            (keys, d, m),
                            dv,
                            (row, 1),
                            true,
                            p.as_ptr(),
                            (1, keys),
                            g_block,
                            (out_row, 1),
                            1.0,
                            Threads::One,
                        );
                    }
                }
            },
        );
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var, D};

    /// The unfused reference: candle's own ops, as `model::gpt` runs them elsewhere.
    fn reference(qkv: &Tensor, scale: f64) -> Result<Tensor> {
        let (b, t, _, h, d) = qkv.dims5()?;
        let parts = qkv.permute((2, 0, 3, 1, 4))?;
        let (q, k, v) = (parts.get(0)?.contiguous()?, parts.get(1)?.contiguous()?, parts.get(2)?.contiguous()?);
        let mut mask = vec![0f32; t * t];
        for i in 0..t {
            for j in i + 1..t {
                mask[i * t + j] = f32::NEG_INFINITY;
            }
        }
        let mask = Tensor::from_vec(mask, (t, t), qkv.device())?;
        let att = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax(&att, D::Minus1)?;
        att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h, d))
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Sizes that leave a partial last block (t = 150 = 2 × 64 + 22) and several heads and rows.
    #[test]
    fn matches_candles_ops_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let (b, t, h, d) = (2, 150, 3, 8);
        let qkv = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (b, t, 3, h, d), &dev)? * 2.0)?)?;
        // A fixed random weighting of the outputs, so every output element has its own gradient.
        let weights = Tensor::randn(0f32, 1.0, (b, t, h * d), &dev)?;
        let scale = 1.0 / (d as f64).sqrt();

        let fused = causal_self_attention(&qkv.as_tensor().reshape((b, t, 3 * h * d))?, h, scale, true)?;
        let unfused = reference(qkv.as_tensor(), scale)?.reshape((b, t, h * d))?;
        assert!(max_diff(&fused, &unfused) < 1e-5, "forward differs by {}", max_diff(&fused, &unfused));

        let grad_fused = (fused * &weights)?.sum_all()?.backward()?.get(&qkv).unwrap().clone();
        let grad_unfused = (unfused * &weights)?.sum_all()?.backward()?.get(&qkv).unwrap().clone();
        let diff = max_diff(&grad_fused, &grad_unfused);
        assert!(diff < 1e-4, "gradients differ by {diff}");
        // Not vacuous: every part (queries, keys, values) gets a gradient.
        for part in 0..3 {
            let g = grad_fused.narrow(2, part, 1)?.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(g > 1.0, "part {part} has no gradient ({g})");
        }
        Ok(())
    }

    #[test]
    fn first_position_sees_only_itself_and_a_single_position_works() -> Result<()> {
        let dev = Device::Cpu;
        let qkv = Tensor::randn(0f32, 1.0, (1, 5, 3, 2, 4), &dev)?;
        let flat = qkv.reshape((1, 5, 24))?;
        let y = causal_self_attention(&flat, 2, 0.5, false)?;
        // Position 0 attends only to itself: its output is its own value vector.
        let v0 = qkv.narrow(1, 0, 1)?.narrow(2, 2, 1)?.reshape((2, 4))?;
        assert!(max_diff(&y.narrow(1, 0, 1)?.reshape((2, 4))?, &v0) < 1e-6);
        let one = causal_self_attention(&flat.narrow(1, 0, 1)?, 2, 0.5, false)?;
        assert!(max_diff(&one.reshape((2, 4))?, &v0) < 1e-6);
        // Not three parts of whole heads, or not `[b, t, c]`.
        assert!(causal_self_attention(&Tensor::zeros((1, 5, 20), DType::F32, &dev)?, 2, 0.5, false).is_err());
        assert!(causal_self_attention(&qkv, 2, 0.5, false).is_err());
        Ok(())
    }
}
