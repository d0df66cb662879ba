//! Raw f32 helpers shared by the fused CPU ops (`attention`, `lstm_fused`, `nn`, `adamw_cpu`) and
//! the CPU decoders: where they apply, storage access, GEMM, a vectorising `exp` and `tanh`, and
//! the split of a batch over threads.

use candle_core::{CpuStorage, DType, Layout, Result, Tensor};

use super::ModelError;

/// Whether a fused CPU op can take `t`: an f32 tensor on the CPU (other devices and dtypes keep
/// candle's ops).
pub(crate) fn on_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// The elements of a contiguous f32 CPU tensor, as a slice; an error for any other layout.
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("a fused CPU op wants f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("a fused CPU op wants a contiguous tensor"),
    }
}

/// [`contiguous_f32`] for an op that writes its input in place.
pub(crate) fn contiguous_f32_mut<'a>(storage: &'a mut CpuStorage, layout: &Layout) -> Result<&'a mut [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("a fused CPU op wants f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&mut data[start..end]),
        None => candle_core::bail!("a fused CPU op wants a contiguous tensor"),
    }
}

/// A pointer that tasks may share because each writes only its own disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: every user hands each task a disjoint set of elements to write, see the callers.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// Rows per thread for the hand-written decoders (`gpt_cpu`, `lstm_cpu`): a batch's rows are
/// independent, so a batch of 4 or more is split evenly over up to `threads` threads; smaller
/// ones stay on one (a thread's start costs more than their work).
pub(crate) fn rows_per_thread(batch: usize, threads: usize) -> usize {
    let threads = if batch >= 4 { threads.clamp(1, batch) } else { 1 };
    batch.div_ceil(threads).max(1)
}

/// The ids a CPU decoder was handed (`[batch, t]`), as rows, checked against its state's batch
/// and its vocabulary: an error names what is wrong rather than a panic inside a loop.
pub(crate) fn decoder_ids(ids: &Tensor, batch: usize, vocab: usize) -> std::result::Result<Vec<Vec<u32>>, ModelError> {
    let rows = ids.to_dtype(DType::U32)?.to_vec2::<u32>()?;
    if rows.len() != batch {
        return Err(ModelError::BatchMismatch { ids: rows.len(), state: batch });
    }
    if rows.first().is_none_or(Vec::is_empty) {
        return Err(ModelError::NoIds);
    }
    if let Some(bad) = rows.iter().flatten().find(|&&id| id as usize >= vocab) {
        return Err(ModelError::IdOutsideVocab { what: "input", id: *bad, vocab });
    }
    Ok(rows)
}

/// Runs `work` on every job: the first on this thread, each other on a thread of its own for
/// this call (a decoder step's shares of the batch).
pub(crate) fn on_threads<J: Send>(mut jobs: Vec<J>, work: impl Fn(J) + Sync) {
    if jobs.is_empty() {
        return;
    }
    let first = jobs.remove(0);
    let work = &work;
    std::thread::scope(|s| {
        for job in jobs {
            s.spawn(move || work(job));
        }
        work(first);
    });
}

/// How a [`matmul`] may use the thread pool: not at all inside tasks that already split the
/// work, all of it for one large product.
#[derive(Clone, Copy)]
pub(crate) enum Threads {
    One,
    Pool,
}

/// `dst (m × n) = [dst +] beta · lhs (m × k) · rhs (k × n)`, each with any (row, column) strides.
///
/// # Safety
/// Every pointer must be valid for the elements the sizes and strides reach, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (dst_rs, dst_cs): (usize, usize),
    accumulate: bool,
    lhs: *const f32,
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: *const f32,
    (rhs_rs, rhs_cs): (usize, usize),
    beta: f32,
    threads: Threads,
) {
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Pool => gemm::Parallelism::Rayon(0),
    };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        dst_cs as isize,
        dst_rs as isize,
        accumulate,
        lhs,
        lhs_cs as isize,
        lhs_rs as isize,
        rhs,
        rhs_cs as isize,
        rhs_rs as isize,
        1.0,
        beta,
        false,
        false,
        false,
        parallelism,
    )
}

/// `exp(x)` to about one part in 10⁷, written so the compiler can vectorise loops over it
/// (`f32::exp` is a library call per element: in the LSTM's gates it cost as much as the step's GEMM).
/// Cephes' `expf`: `x = k ln 2 + r`, a degree-6 polynomial for `exp(r)`, `2^k` by the exponent bits.
/// NaN stays NaN, as with `f32::exp`, so a diverged run still shows in its loss.
#[inline(always)]
// `clamp` is what the comment below avoids; the coefficients are Cephes' as published.
#[allow(clippy::manual_clamp, clippy::excessive_precision)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    // min/max and integer bit tricks rather than `clamp` and `as i32`, whose NaN and saturation
    // checks kept the loops scalar.
    let x_in = x;
    let x = x.max(-87.0).min(88.0);
    let kf = x * LOG2E + ROUND;
    let k = kf - ROUND;
    // 1.5 · 2²³ + k has k in its low mantissa bits.
    let ki = (kf.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let r = x - k * LN2_HI - k * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1) * r
        + 5.000_000_1e-1;
    let e = p * z + r + 1.0;
    let y = e * f32::from_bits((ki.wrapping_add(127) << 23) as u32);
    // A select, not a branch: the loops stay vectorised. `max`/`min` above turned NaN into -87.
    if x_in.is_nan() {
        x_in
    } else {
        y
    }
}

/// `(1 + tanh u, 1 − tanh u)` through one [`exp_approx`] (glibc's `tanhf` is several times
/// slower), with no cancellation near 0 in either. Past |u| = 15 tanh is ±1 to within f32's
/// precision.
#[inline(always)]
pub(crate) fn one_plus_minus_tanh(u: f32) -> (f32, f32) {
    let e = exp_approx(2.0 * u.clamp(-15.0, 15.0));
    let r = 2.0 / (e + 1.0);
    (e * r, r)
}

#[cfg(test)]
mod tests {
    use super::exp_approx;

    /// Within a few parts in 10⁷ of the C library's `exp` over the whole range the ops use,
    /// and finite (no infinity, no NaN) beyond it.
    #[test]
    fn exp_approx_matches_exp_and_saturates() {
        let mut worst = 0f64;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (got, want) = (exp_approx(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 5e-7, "relative error up to {worst}");
        for x in [-1e30f32, -1000.0, 1000.0, 1e30] {
            assert!(exp_approx(x).is_finite() && exp_approx(x) >= 0.0, "exp_approx({x}) = {}", exp_approx(x));
        }
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(f32::NAN).is_nan());
    }
}
