//! One LSTM layer's recurrence over a whole sequence, fused into one CPU op each way (training).
//!
//! Why: run step by step with candle's ops, each of the sequence's time steps is a dozen small
//! tensors per layer (a matmul, four gate slices, five element-wise ops), each a fresh
//! allocation, a dispatch and, backward, as many again plus the gradient sums; at the folk
//! LSTM's batch of 16 that bookkeeping, not arithmetic, was most of a training step (0.28x
//! PyTorch on `benches/train_speed.rs`). Here the input projection of every step is one matmul
//! done by candle beforehand (`xg = x · W_ihᵀ`), and this op runs the recurrence itself: per
//! step one GEMM of the previous hidden state against `W_hh` and one vectorised pass over the
//! gates. Forward keeps the activated gates and cell states for backward (kept in the op, so
//! nothing is recomputed); backward walks the steps in reverse (BPTT) with one GEMM per step
//! for the hidden state's gradient, and the gradients of `W_hh` and the bias are one GEMM and
//! one sum over all steps at the end.
//!
//! How it is fast: the batch rows are independent sequences, so each thread runs the whole
//! recurrence of its share of the rows with no synchronisation per step; the per-step products
//! (a few rows by `W_hh`) go through `small_gemm` with `W_hh` packed once per call, forward
//! and backward each in its own orientation. The gemm crate, used before, managed 32 GFLOP/s
//! on one core at 16 rows × 256 → 1,024 and 9 at the folk LSTM's 8 × 640 → 2,560, where the
//! packed product reaches 58 (`benches/train_speed.rs`, 32 × 96: 0.82-0.90x → 0.99-1.06x PyTorch).
//!
//! Gate order i, f, g, o, as PyTorch's `nn.LSTM`; the state starts at zero.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu_f32::{contiguous_f32, exp_approx, matmul, one_plus_minus_tanh, Threads};
use super::small_gemm::Packed;

/// Every hidden state `[b, t, h]` of one LSTM layer from a zero state, given the input
/// projections `xg = x · W_ihᵀ` (`[b, t, 4h]`), `w_hh` (`[4h, h]`) and the gates' bias
/// (`b_ih + b_hh`, `[4h]`; added here so that its gradient is a plain sum over the rows, which
/// candle's reduction over the first dimension of a broadcast made slow). Differentiable in
/// all three when `train`.
pub(crate) fn lstm_recurrence(xg: &Tensor, w_hh: &Tensor, bias: &Tensor, train: bool) -> Result<Tensor> {
    let (xg, w_hh, bias) = (xg.contiguous()?, w_hh.contiguous()?, bias.contiguous()?);
    let op = LstmRecurrence { keep: train, saved: Mutex::new(None) };
    if train {
        xg.apply_op3(&w_hh, &bias, op)
    } else {
        xg.apply_op3_no_bwd(&w_hh, &bias, &op)
    }
}

struct LstmRecurrence {
    /// Keep the gates and cell states for backward.
    keep: bool,
    saved: Mutex<Option<Saved>>,
}

/// What forward leaves for backward, each in `[b, t, ·]` order.
struct Saved {
    /// The activated gates σ(i), σ(f), tanh(g), σ(o), `[b, t, 4h]`.
    gates: Vec<f32>,
    /// Cell states `[b, t, h]`.
    cells: Vec<f32>,
    /// `tanh` of the cell states `[b, t, h]`.
    cells_tanh: Vec<f32>,
}

/// The sizes of a recurrence: rows, steps, hidden units.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
}

impl Dims {
    fn of(xg: &Shape, w_hh: &Shape, bias: &Shape) -> Result<Dims> {
        match (xg.dims(), w_hh.dims(), bias.dims()) {
            (&[b, t, g], &[g2, h], &[g3]) if t > 0 && h > 0 && g == 4 * h && g2 == g && g3 == g => Ok(Dims { b, t, h }),
            _ => candle_core::bail!(
                "fused LSTM wants xg [batch, t, 4h], w_hh [4h, h] and bias [4h], got {xg:?}, {w_hh:?} and {bias:?}"
            ),
        }
    }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_approx(-x))
}

#[inline(always)]
fn tanh(x: f32) -> f32 {
    1.0 - one_plus_minus_tanh(x).1
}

/// One row's step: activates `gates` (`[4h]`, pre-activations in) in place and writes the new
/// cell state, its tanh and the hidden state. Shared with the CPU decoder (`lstm_cpu`), so that
/// training and generation run the same cell.
#[inline]
pub(crate) fn step_row(
    gates: &mut [f32],
    c_prev: Option<&[f32]>,
    c: &mut [f32],
    c_tanh: &mut [f32],
    h_out: &mut [f32],
) {
    let h = c.len();
    let (gi, rest) = gates.split_at_mut(h);
    let (gf, rest) = rest.split_at_mut(h);
    let (gg, go) = rest.split_at_mut(h);
    // Iterators, not indices: no bounds checks, so each loop vectorises.
    gi.iter_mut().for_each(|x| *x = sigmoid(*x));
    gf.iter_mut().for_each(|x| *x = sigmoid(*x));
    gg.iter_mut().for_each(|x| *x = tanh(*x));
    go.iter_mut().for_each(|x| *x = sigmoid(*x));
    let input = gi.iter().zip(gg.iter()).map(|(i, g)| i * g);
    match c_prev {
        Some(c_prev) => {
            for (((c, i), f), cp) in c.iter_mut().zip(input).zip(gf.iter()).zip(c_prev) {
                *c = f * cp + i;
            }
        }
        None => c.iter_mut().zip(input).for_each(|(c, i)| *c = i),
    }
    for (((ct, h), c), o) in c_tanh.iter_mut().zip(h_out.iter_mut()).zip(c.iter()).zip(go.iter()) {
        *ct = tanh(*c);
        *h = o * *ct;
    }
}

/// Rows per task: the batch split evenly over the thread pool. Rows are independent sequences,
/// so each task runs the whole recurrence of its rows with no synchronisation per step (one
/// parallel GEMM per step instead cost a thread hand-off per step, a sixth of the time).
fn rows_per_task(b: usize) -> usize {
    b.div_ceil(rayon::current_num_threads().clamp(1, b.max(1)))
}

impl LstmRecurrence {
    fn forward(&self, xg: &[f32], w_hh: &[f32], bias: &[f32], dims: Dims) -> (Vec<f32>, Saved) {
        let Dims { b, t, h } = dims;
        let g = 4 * h;
        let mut gates = xg.to_vec();
        for row in gates.chunks_exact_mut(g) {
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
        let mut cells = vec![0f32; b * t * h];
        let mut cells_tanh = vec![0f32; b * t * h];
        let mut hidden = vec![0f32; b * t * h];
        // W_hhᵀ (`[h, 4h]`) packed once for all the steps of all the threads.
        let w_t = Packed::from_transposed(w_hh, h, g);
        let n = rows_per_task(b);
        gates
            .par_chunks_mut(n * t * g)
            .zip(cells.par_chunks_mut(n * t * h))
            .zip(cells_tanh.par_chunks_mut(n * t * h))
            .zip(hidden.par_chunks_mut(n * t * h))
            .for_each(|(((gates, cells), cells_tanh), hidden)| {
                forward_rows(gates, cells, cells_tanh, hidden, &w_t, t, h)
            });
        (hidden, Saved { gates, cells, cells_tanh })
    }

    /// `(dxg, dW_hh, dbias)` from the output gradient `dh` `[b, t, h]` and the forward's `hidden`.
    fn backward(saved: &Saved, hidden: &[f32], w_hh: &[f32], dh: &[f32], dims: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let Dims { b, t, h } = dims;
        let g = 4 * h;
        // W_hh (`[4h, h]`) packed once: the per-step product dh = dgates · W_hh.
        let w_hh = &Packed::from_row_major(w_hh, g, h);
        let mut dgates = vec![0f32; b * t * g];
        let n = rows_per_task(b);
        dgates
            .par_chunks_mut(n * t * g)
            .zip(saved.gates.par_chunks(n * t * g))
            .zip(saved.cells.par_chunks(n * t * h))
            .zip(saved.cells_tanh.par_chunks(n * t * h))
            .zip(dh.par_chunks(n * t * h))
            .for_each(|((((dgates, gates), cells), cells_tanh), dh)| {
                backward_rows(dgates, Rows { gates, cells, cells_tanh }, dh, w_hh, t, h)
            });
        // dW_hh = Σ_{r, s ≥ 1} dgates[r, s]ᵀ · h[r, s − 1]: one GEMM over all steps, against
        // the hidden states shifted one step later (zero before the first).
        let mut h_prev = vec![0f32; b * t * h];
        for r in 0..b {
            let row = r * t * h;
            h_prev[row + h..row + t * h].copy_from_slice(&hidden[row..row + (t - 1) * h]);
        }
        let mut dw = vec![0f32; g * h];
        // SAFETY: `dgates` is [b·t, 4h] read transposed, `h_prev` [b·t, h], `dw` [4h, h].
        unsafe {
            matmul(
                (g, h, b * t),
                dw.as_mut_ptr(),
                (h, 1),
                false,
                dgates.as_ptr(),
                (1, g),
                h_prev.as_ptr(),
                (h, 1),
                1.0,
                Threads::Pool,
            );
        }
        let mut dbias = vec![0f32; g];
        for row in dgates.chunks_exact(g) {
            dbias.iter_mut().zip(row).for_each(|(d, x)| *d += x);
        }
        (dgates, dw, dbias)
    }
}

/// Forward over some rows of the batch (all `[rows, t, ·]`): `gates` holds the input
/// projections plus bias and is activated in place; `w_t` is W_hhᵀ packed (`[h, 4h]`).
fn forward_rows(
    gates: &mut [f32],
    cells: &mut [f32],
    cells_tanh: &mut [f32],
    hidden: &mut [f32],
    w_t: &Packed,
    t: usize,
    h: usize,
) {
    let g = 4 * h;
    let b = hidden.len() / (t * h);
    for s in 0..t {
        if s > 0 {
            // gates[:, s] += h[:, s − 1] · W_hhᵀ: row r of step s is at (r·t + s)·4h in `gates`
            // and (r·t + s − 1)·h in `hidden`.
            w_t.add_product_strided(b, &hidden[(s - 1) * h..], t * h, &mut gates[s * g..], t * g);
        }
        for r in 0..b {
            let at = (r * t + s) * h;
            let (before, now) = cells.split_at_mut(at);
            let c_prev = (s > 0).then(|| &before[at - h..at]);
            step_row(
                &mut gates[(r * t + s) * g..][..g],
                c_prev,
                &mut now[..h],
                &mut cells_tanh[at..at + h],
                &mut hidden[at..at + h],
            );
        }
    }
}

/// What forward kept for some rows of the batch.
struct Rows<'a> {
    gates: &'a [f32],
    cells: &'a [f32],
    cells_tanh: &'a [f32],
}

/// Backward through time over some rows of the batch: the gates' gradients into `dgates`.
fn backward_rows(dgates: &mut [f32], saved: Rows, dh: &[f32], w_hh: &Packed, t: usize, h: usize) {
    let g = 4 * h;
    let b = dh.len() / (t * h);
    // Gradients flowing back into step s from step s + 1.
    let mut dh_next = vec![0f32; b * h];
    let mut dc_next = vec![0f32; b * h];
    let zeros = vec![0f32; h];
    for s in (0..t).rev() {
        for r in 0..b {
            let at = (r * t + s) * h;
            let act = &saved.gates[(r * t + s) * g..][..g];
            let (ai, af, ag, ao) = (&act[..h], &act[h..2 * h], &act[2 * h..3 * h], &act[3 * h..]);
            let dg = &mut dgates[(r * t + s) * g..][..g];
            let (di, rest) = dg.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dgg, d_o) = rest.split_at_mut(h);
            let tc = &saved.cells_tanh[at..at + h];
            let dh_s = &dh[at..at + h];
            let dhn = &dh_next[r * h..][..h];
            let dcn = &mut dc_next[r * h..][..h];
            // The cell state before this step; zero before the first.
            let c_prev = if s > 0 { &saved.cells[at - h..at] } else { &zeros[..] };
            for j in 0..h {
                let dhj = dh_s[j] + dhn[j];
                let (i, f, gg, o) = (ai[j], af[j], ag[j], ao[j]);
                d_o[j] = dhj * tc[j] * o * (1.0 - o);
                let dc = dhj * o * (1.0 - tc[j] * tc[j]) + dcn[j];
                di[j] = dc * gg * i * (1.0 - i);
                df[j] = dc * c_prev[j] * f * (1.0 - f);
                dgg[j] = dc * i * (1.0 - gg * gg);
                dcn[j] = dc * f;
            }
        }
        if s > 0 {
            // dh_next = dgates[:, s] · W_hh: b rows of 4h at stride t·4h from step s.
            dh_next.fill(0.0);
            w_hh.add_product_strided(b, &dgates[s * g..], t * g, &mut dh_next, h);
        }
    }
}

impl CustomOp3 for LstmRecurrence {
    fn name(&self) -> &'static str {
        "lstm-recurrence-fused"
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
        let dims = Dims::of(l1.shape(), l2.shape(), l3.shape())?;
        let (xg, w_hh, bias) = (contiguous_f32(s1, l1)?, contiguous_f32(s2, l2)?, contiguous_f32(s3, l3)?);
        let (hidden, saved) = self.forward(xg, w_hh, bias, dims);
        if self.keep {
            *self.saved.lock().map_err(|_| candle_core::Error::msg("fused LSTM: lock poisoned"))? = Some(saved);
        }
        Ok((CpuStorage::F32(hidden), Shape::from((dims.b, dims.t, dims.h))))
    }

    fn bwd(
        &self,
        xg: &Tensor,
        w_hh: &Tensor,
        bias: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::of(xg.shape(), w_hh.shape(), bias.shape())?;
        let saved =
            self.saved.lock().map_err(|_| candle_core::Error::msg("fused LSTM: lock poisoned"))?.take().ok_or_else(
                || candle_core::Error::msg("fused LSTM: backward ran twice or without a training forward"),
            )?;
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (hidden, w, dh) = (flat(res)?, flat(w_hh)?, flat(grad)?);
        let (dxg, dw, dbias) = Self::backward(&saved, &hidden, &w, &dh, dims);
        Ok((
            Some(Tensor::from_vec(dxg, xg.shape(), xg.device())?),
            Some(Tensor::from_vec(dw, w_hh.shape(), w_hh.device())?),
            Some(Tensor::from_vec(dbias, bias.shape(), bias.device())?),
        ))
    }
}
