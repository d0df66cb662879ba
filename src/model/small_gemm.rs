//! Matrix products of a few rows by a fixed weight matrix, packed once: at load for the CPU
//! decoder (a batch of takes), once per call for the LSTM's recurrence in training (a thread's
//! rows at each time step).
//!
//! Why: batched generation multiplies 2-16 rows a thread by each weight matrix per step. The
//! matrix-vector loop of `gpt_cpu` (one weight row streamed through every row's outputs) loads and
//! stores each output for every four weights, so it is bound by loads, not arithmetic; a general
//! GEMM (the gemm crate) repacks the whole weight matrix on every call, which at 8 rows cost more
//! than the product itself (measured: batch 16 went from 677-798 to 500-544 tokens per CPU-second).
//! Here the weights are packed once into panels of [`PANEL`] columns, each panel's rows contiguous,
//! and a block of up to [`MAX_ROWS`] input rows keeps all its partial sums in registers while the
//! panel streams past once: two loads and `2 × rows` fused multiply-adds per weight row.

/// Columns per panel: two AVX vectors of f32.
pub const PANEL: usize = 16;
/// Input rows whose sums a block keeps in registers (2 × 6 accumulators + 2 weights + 1
/// broadcast = 15 of the 16 AVX registers).
pub const MAX_ROWS: usize = 6;

/// A `[n_in, n_out]` weight matrix packed in panels of [`PANEL`] columns (the last padded with
/// zeros): `data[(p · n_in + i) · PANEL + c] = w[i, p · PANEL + c]`.
#[derive(Debug, Clone)]
pub struct Packed {
    data: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Packed {
    /// Packs a row-major `[n_in, n_out]` matrix (`w[i * n_out + o]`).
    pub fn from_row_major(w: &[f32], n_in: usize, n_out: usize) -> Packed {
        Packed::build(n_in, n_out, |i, o| w[i * n_out + o])
    }

    /// Packs the transpose of a row-major `[n_out, n_in]` matrix (`w[o * n_in + i]`): the GPT's
    /// output layer, whose weights are the token embeddings.
    pub fn from_transposed(w: &[f32], n_in: usize, n_out: usize) -> Packed {
        Packed::build(n_in, n_out, |i, o| w[o * n_in + i])
    }

    fn build(n_in: usize, n_out: usize, at: impl Fn(usize, usize) -> f32) -> Packed {
        let panels = n_out.div_ceil(PANEL);
        let mut data = vec![0f32; panels * n_in * PANEL];
        for p in 0..panels {
            for i in 0..n_in {
                let dst = &mut data[(p * n_in + i) * PANEL..(p * n_in + i + 1) * PANEL];
                for (c, d) in dst.iter_mut().enumerate() {
                    let o = p * PANEL + c;
                    if o < n_out {
                        *d = at(i, o);
                    }
                }
            }
        }
        Packed { data, n_in, n_out }
    }

    /// `out[r] += x[r] · W` for every row `r` of `x` (`[rows, n_in]`; `out` `[rows, n_out]`).
    pub fn add_product(&self, x: &[f32], out: &mut [f32]) {
        let rows = x.len() / self.n_in.max(1);
        assert!(x.len() == rows * self.n_in, "shapes of a packed product");
        self.add_product_strided(rows, x, self.n_in, out, self.n_out);
    }

    /// [`Packed::add_product`] for `rows` rows that lie `x_stride` and `out_stride` floats apart
    /// (a batch's rows at one time step of `[rows, t, ·]` buffers, as the LSTM keeps them).
    pub fn add_product_strided(&self, rows: usize, x: &[f32], x_stride: usize, out: &mut [f32], out_stride: usize) {
        let (n_in, n_out) = (self.n_in, self.n_out);
        if rows == 0 {
            return;
        }
        assert!(
            x_stride >= n_in
                && out_stride >= n_out
                && x.len() >= (rows - 1) * x_stride + n_in
                && out.len() >= (rows - 1) * out_stride + n_out,
            "shapes of a packed product"
        );
        // Blocks of equal size (8 rows: 4 + 4, not 6 + 2): a block of few rows has too few
        // independent sums to keep the multiply-add units busy while each waits on the last.
        let per_block = rows.div_ceil(rows.div_ceil(MAX_ROWS).max(1)).max(1);
        // Panels outside, row blocks inside: each panel (16 columns × n_in, 16 KB at 256 inputs)
        // comes from memory once per call and serves every block from L1; the rows, far
        // smaller than the weights, are what is read again. (At 8-16 rows a thread, the sizes
        // `cadenza generate` runs, no difference from the other order could be measured on
        // this machine; the weights are read once however many rows there are.)
        for p in 0..n_out.div_ceil(PANEL) {
            let panel = &self.data[p * n_in * PANEL..(p + 1) * n_in * PANEL];
            let c0 = p * PANEL;
            let width = PANEL.min(n_out - c0);
            let mut r0 = 0;
            while r0 < rows {
                let r1 = (r0 + per_block).min(rows);
                let mut sums = [[0f32; PANEL]; MAX_ROWS];
                block(&x[r0 * x_stride..], x_stride, n_in, panel, &mut sums[..r1 - r0]);
                for (r, s) in (r0..r1).zip(&sums) {
                    for (o, v) in out[r * out_stride + c0..r * out_stride + c0 + width].iter_mut().zip(s) {
                        *o += v;
                    }
                }
                r0 = r1;
            }
        }
    }
}

/// The sums of one block of rows (`stride` floats apart in `x`) against one panel.
fn block(x: &[f32], stride: usize, n_in: usize, panel: &[f32], sums: &mut [[f32; PANEL]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the features this function was compiled for are present on this CPU.
            unsafe {
                match sums.len() {
                    1 => block_avx2::<1>(x, stride, n_in, panel, sums),
                    2 => block_avx2::<2>(x, stride, n_in, panel, sums),
                    3 => block_avx2::<3>(x, stride, n_in, panel, sums),
                    4 => block_avx2::<4>(x, stride, n_in, panel, sums),
                    5 => block_avx2::<5>(x, stride, n_in, panel, sums),
                    _ => block_avx2::<6>(x, stride, n_in, panel, sums),
                }
            }
            return;
        }
    }
    block_portable(x, stride, n_in, panel, sums)
}

fn block_portable(x: &[f32], stride: usize, n_in: usize, panel: &[f32], sums: &mut [[f32; PANEL]]) {
    for (i, w) in panel.chunks_exact(PANEL).enumerate().take(n_in) {
        for (r, s) in sums.iter_mut().enumerate() {
            let xi = x[r * stride + i];
            for (sc, wc) in s.iter_mut().zip(w) {
                *sc += xi * wc;
            }
        }
    }
}

/// `R` rows' sums stay in `2R` AVX registers for the whole panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2<const R: usize>(x: &[f32], stride: usize, n_in: usize, panel: &[f32], sums: &mut [[f32; PANEL]]) {
    use std::arch::x86_64::*;
    assert!(sums.len() >= R && stride >= n_in && x.len() >= (R - 1) * stride + n_in && panel.len() >= n_in * PANEL);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let w = panel.as_ptr();
    let xp = x.as_ptr();
    for i in 0..n_in {
        // SAFETY: i < n_in, so the panel's row i (16 floats) and x[r * stride + i] (r < R) are
        // inside the slices, as asserted above.
        let w0 = _mm256_loadu_ps(w.add(i * PANEL));
        let w1 = _mm256_loadu_ps(w.add(i * PANEL + 8));
        for (r, a) in acc.iter_mut().enumerate() {
            let xb = _mm256_broadcast_ss(&*xp.add(r * stride + i));
            a[0] = _mm256_fmadd_ps(xb, w0, a[0]);
            a[1] = _mm256_fmadd_ps(xb, w1, a[1]);
        }
    }
    for (a, s) in acc.iter().zip(sums.iter_mut()) {
        _mm256_storeu_ps(s.as_mut_ptr(), a[0]);
        _mm256_storeu_ps(s.as_mut_ptr().add(8), a[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32], n_in: usize, n_out: usize) -> Vec<f32> {
        let rows = x.len() / n_in;
        let mut out = vec![0f32; rows * n_out];
        for r in 0..rows {
            for o in 0..n_out {
                out[r * n_out + o] = (0..n_in).map(|i| x[r * n_in + i] * w[i * n_out + o]).sum();
            }
        }
        out
    }

    /// Every row count up to past two blocks, widths that leave a partial panel, both packings,
    /// against the textbook triple loop; the output is added to, not overwritten.
    #[test]
    fn packed_products_match_the_triple_loop() {
        let value = |k: usize| ((k * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0;
        for (n_in, n_out) in [(1, 1), (7, 5), (16, 16), (33, 40), (64, 100)] {
            let w: Vec<f32> = (0..n_in * n_out).map(value).collect();
            let wt: Vec<f32> = (0..n_out * n_in).map(|k| w[(k % n_in) * n_out + k / n_in]).collect();
            for rows in 1..=13 {
                let x: Vec<f32> = (0..rows * n_in).map(|k| value(k + 7)).collect();
                let want = naive(&x, &w, n_in, n_out);
                for packed in [Packed::from_row_major(&w, n_in, n_out), Packed::from_transposed(&wt, n_in, n_out)] {
                    let mut out = vec![1f32; rows * n_out];
                    packed.add_product(&x, &mut out);
                    for (o, w) in out.iter().zip(&want) {
                        assert!((o - 1.0 - w).abs() < 1e-4, "{rows}×{n_in}×{n_out}: {o} vs 1 + {w}");
                    }
                }
            }
        }
    }

    /// Rows spread through larger buffers (as the LSTM's steps lie in `[rows, t, ·]`): the
    /// same sums, and the floats between the rows are left alone.
    #[test]
    fn strided_rows_match_the_triple_loop_and_leave_the_gaps() {
        let value = |k: usize| ((k * 2_654_435_761) % 1000) as f32 / 500.0 - 1.0;
        let (n_in, n_out, rows, x_stride, out_stride) = (37, 45, 11, 50, 61);
        let w: Vec<f32> = (0..n_in * n_out).map(value).collect();
        let x: Vec<f32> = (0..rows * n_in).map(|k| value(k + 3)).collect();
        let want = naive(&x, &w, n_in, n_out);
        let mut spread = vec![f32::NAN; (rows - 1) * x_stride + n_in];
        for r in 0..rows {
            spread[r * x_stride..r * x_stride + n_in].copy_from_slice(&x[r * n_in..(r + 1) * n_in]);
        }
        let mut out = vec![-3f32; (rows - 1) * out_stride + n_out];
        Packed::from_row_major(&w, n_in, n_out).add_product_strided(rows, &spread, x_stride, &mut out, out_stride);
        for (k, o) in out.iter().enumerate() {
            let (r, c) = (k / out_stride, k % out_stride);
            if c < n_out {
                let w = want[r * n_out + c];
                assert!((o + 3.0 - w).abs() < 1e-4, "row {r} column {c}: {o} vs -3 + {w}");
            } else {
                assert_eq!(*o, -3.0, "row {r} column {c} was written");
            }
        }
    }
}
