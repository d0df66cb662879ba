//! GPT-2's `Conv1D` on the CPU as one op each way: `x · W + b` and its three gradients.
//!
//! Through candle's ops the product is a matmul, a broadcast bias add and two reshapes, and the
//! backward sums the bias gradient with candle's strided reduction: in a GPT training step those
//! (single-threaded, each a full pass over the activations, each again when candle's backprop
//! accumulates a gradient into a zeroed tensor) took about a fifth of the main thread's time.
//! Here the bias is the product's starting value and the gradients are two products and one
//! column sum.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use super::cpu_f32::{contiguous_f32, matmul, Threads};

/// Rows per task where the bias is copied in and where its gradient is summed.
const ROWS_PER_TASK: usize = 256;

/// `x · w + b` over the last dimension of `x` (`[..., in]`, `w` `[in, out]`, `b` `[out]`):
/// `[..., out]`, differentiable in all three.
pub(crate) fn affine(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Affine)
}

struct Affine;

/// `(rows, in, out)` of an affine map, after checking that the three shapes agree.
fn sizes(x: &Shape, w: &Shape, b: &Shape) -> Result<(usize, usize, usize)> {
    let (n_in, n_out) = w.dims2()?;
    let x_in = x.dims().last().copied().unwrap_or(0);
    if x_in != n_in || b.elem_count() != n_out || n_in == 0 {
        candle_core::bail!("fused affine map: input {x:?}, weight {w:?}, bias {b:?}")
    }
    Ok((x.elem_count() / n_in, n_in, n_out))
}

impl CustomOp3 for Affine {
    fn name(&self) -> &'static str {
        "affine-fused"
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
        let (rows, n_in, n_out) = sizes(l1.shape(), l2.shape(), l3.shape())?;
        let (x, w, b) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let mut out = vec![0f32; rows * n_out];
        out.par_chunks_mut(ROWS_PER_TASK * n_out).for_each(|block| {
            block.chunks_exact_mut(n_out).for_each(|row| row.copy_from_slice(b));
        });
        // SAFETY: `x` is rows × n_in, `w` n_in × n_out and `out` rows × n_out, all row-major
        // and contiguous (checked above); `out` is a fresh buffer.
        unsafe {
            matmul(
                (rows, n_out, n_in),
                out.as_mut_ptr(),
                (n_out, 1),
                true,
                x.as_ptr(),
                (n_in, 1),
                w.as_ptr(),
                (n_out, 1),
                1.0,
                Threads::Pool,
            );
        }
        let mut dims = l1.shape().dims().to_vec();
        *dims.last_mut().expect("checked: at least one dimension") = n_out;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n_in, n_out) = w.dims2()?;
        let rows = x.elem_count() / n_in;
        let g = grad.contiguous()?.reshape((rows, n_out))?;
        let dx = g.matmul(&w.t()?)?.reshape(x.shape())?;
        let dw = x.reshape((rows, n_in))?.t()?.matmul(&g)?;
        let db = g.apply_op1_no_bwd(&ColumnSums)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `[rows, n]` → `[n]`: the sum of each column (the bias gradient), one pass over the rows in
/// memory order.
struct ColumnSums;

impl CustomOp1 for ColumnSums {
    fn name(&self) -> &'static str {
        "column-sums"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, n) = layout.shape().dims2()?;
        let values = contiguous_f32(storage, layout)?;
        if n == 0 {
            return Ok((CpuStorage::F32(Vec::new()), Shape::from(0)));
        }
        // Each task sums its own block of rows; the blocks' sums are added at the end.
        let span = (ROWS_PER_TASK * n).max(n);
        let sums = values
            .par_chunks(span)
            .map(|block| {
                let mut sums = vec![0f32; n];
                for row in block.chunks_exact(n) {
                    sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
                }
                sums
            })
            .reduce(
                || vec![0f32; n],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        Ok((CpuStorage::F32(sums), Shape::from(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// Values and all three gradients against candle's matmul and broadcast add, on a 3-D input
    /// (as the GPT passes it) with sizes that fill no SIMD register evenly.
    #[test]
    fn matches_candles_ops_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        // 21 rows (one task), and 3 × 300 rows: several tasks for the bias and its gradient.
        for t in [7, 300] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, t, 13), &dev)?)?;
            let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (13, 10), &dev)?)?;
            let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, 10, &dev)?)?;
            let weighting = Tensor::randn(0f32, 1.0, (3, t, 10), &dev)?;

            let fused = affine(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
            let flat = x.as_tensor().reshape((3 * t, 13))?;
            let unfused = flat.matmul(w.as_tensor())?.broadcast_add(b.as_tensor())?.reshape((3, t, 10))?;
            assert_eq!(fused.dims(), &[3, t, 10]);
            assert!(max_diff(&fused, &unfused) < 1e-5, "forward differs by {}", max_diff(&fused, &unfused));

            let g_fused = (fused * &weighting)?.sum_all()?.backward()?;
            let g_unfused = (unfused * &weighting)?.sum_all()?.backward()?;
            for (name, v) in [("x", &x), ("weight", &w), ("bias", &b)] {
                let (a, c) = (g_fused.get(v).expect("fused grad"), g_unfused.get(v).expect("grad"));
                assert_eq!(a.dims(), v.dims(), "gradient of {name} has the wrong shape");
                let diff = max_diff(a, c);
                assert!(diff < 1e-3, "{t} steps: gradients of {name} differ by {diff}");
                assert!(a.abs()?.sum_all()?.to_scalar::<f32>()? > 1.0, "gradient of {name} is empty");
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_shapes_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 5), candle_core::DType::F32, &dev)?;
        let w = Tensor::zeros((4, 3), candle_core::DType::F32, &dev)?;
        assert!(affine(&x, &w, &Tensor::zeros(3, candle_core::DType::F32, &dev)?).is_err());
        let w = Tensor::zeros((5, 3), candle_core::DType::F32, &dev)?;
        assert!(affine(&x, &w, &Tensor::zeros(4, candle_core::DType::F32, &dev)?).is_err());
        Ok(())
    }
}
