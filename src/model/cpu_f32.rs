//! Raw f32 helpers shared by the fused CPU ops (`attention`, `lstm_fused`): storage access, GEMM.

use candle_core::{CpuStorage, Layout, Result};

/// The elements of a contiguous f32 CPU tensor, as a slice; an error for any other layout.
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else { candle_core::bail!("a fused CPU op wants f32") };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("a fused CPU op wants a contiguous tensor"),
    }
}

/// A pointer that tasks may share because each writes only its own disjoint elements.
#[derive(Clone, Copy)]
pub(crate) struct Shared(pub(crate) *mut f32);
// SAFETY: every user hands each task a disjoint set of elements to write, see the callers.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// How a [`matmul`] may use the thread pool: not at all inside tasks that already split the
/// work, all of it for one large product.
#[derive(Clone, Copy)]
pub(crate) enum Threads {
    One,
    Pool,
}

/// `dst (m × n, row stride dst_rs) = [dst +] beta · lhs (m × k) · rhs (k × n)`, any strides.
///
/// # Safety
/// Every pointer must be valid for the elements the sizes and strides reach, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: usize,
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
        1,
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
