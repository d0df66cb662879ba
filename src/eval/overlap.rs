//! Overlapping area of two feature distributions (Yang & Lerch 2018, "On the evaluation of
//! generative models in music"): a Gaussian kernel density estimate of each set's per-tune
//! values, and the integral of the smaller of the two densities, computed on a grid.
//!
//! 1 means the two sets are indistinguishable on this feature, 0 that they never meet.
//! Bandwidths follow scipy's `gaussian_kde` default (Scott's rule), as the paper's reference
//! code; only constant sets, whose KDE scipy cannot estimate, are treated apart.

/// Bandwidth rule for the kernel density estimate (both as scipy's `gaussian_kde` applies them
/// in one dimension: the rule's factor times the sample standard deviation, ddof = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bandwidth {
    /// `n^(-1/5)`: scipy's default.
    Scott,
    /// `(3n/4)^(-1/5)`.
    Silverman,
}

/// Points of the integration grid. Densities are binned onto it and smoothed there (see
/// [`density_on_grid`]), which keeps the cost linear in the set size.
pub const GRID: usize = 1024;

/// Sample standard deviation (ddof = 1); 0 for fewer than two values.
pub fn std_dev(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
}

/// The kernel's standard deviation for `values` under `rule`.
pub fn bandwidth(values: &[f64], rule: Bandwidth) -> f64 {
    let n = values.len() as f64;
    let factor = match rule {
        Bandwidth::Scott => n.powf(-0.2),
        Bandwidth::Silverman => (n * 3.0 / 4.0).powf(-0.2),
    };
    factor * std_dev(values)
}

/// The Gaussian KDE's density at `x`, summed exactly over every point (for tests and plots
/// of small sets; the overlap uses the binned [`density_on_grid`]).
pub fn pdf(values: &[f64], bw: f64, x: f64) -> f64 {
    let norm = 1.0 / (values.len() as f64 * bw * (2.0 * std::f64::consts::PI).sqrt());
    values.iter().map(|v| (-0.5 * ((x - v) / bw).powi(2)).exp()).sum::<f64>() * norm
}

/// An evenly spaced grid `lo + i * step` of [`GRID`] points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    pub lo: f64,
    pub step: f64,
}

impl Grid {
    pub fn x(&self, i: usize) -> f64 {
        self.lo + i as f64 * self.step
    }
}

/// The KDE of `values` with bandwidth `bw` at each grid point. Each value is split between its
/// two neighbouring grid points (linear binning), then the bins are smoothed with the kernel
/// truncated at 5 bandwidths: cost `GRID × kernel width` whatever the number of values, and an
/// error far below the differences that matter when the step is a fraction of `bw`.
pub fn density_on_grid(values: &[f64], bw: f64, grid: Grid) -> Vec<f64> {
    let mut bins = vec![0.0; GRID];
    for &v in values {
        let pos = ((v - grid.lo) / grid.step).clamp(0.0, (GRID - 1) as f64);
        let i = (pos.floor() as usize).min(GRID - 2);
        let frac = pos - i as f64;
        bins[i] += 1.0 - frac;
        bins[i + 1] += frac;
    }
    let reach = ((5.0 * bw / grid.step).ceil() as usize).min(GRID - 1);
    let norm = 1.0 / (values.len() as f64 * bw * (2.0 * std::f64::consts::PI).sqrt());
    let kernel: Vec<f64> = (0..=reach).map(|k| (-0.5 * (k as f64 * grid.step / bw).powi(2)).exp() * norm).collect();
    let mut out = vec![0.0; GRID];
    for (j, &w) in bins.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        for (i, o) in out.iter_mut().enumerate().take((j + reach + 1).min(GRID)).skip(j.saturating_sub(reach)) {
            *o += w * kernel[i.abs_diff(j)];
        }
    }
    out
}

/// Each set's kernel bandwidth: Scott's rule, except for a set whose values are all equal (common:
/// no sixteenth notes in any take), whose KDE is otherwise undefined (scipy refuses it): it
/// borrows the mean bandwidth of the sets that have one, so that "all zero" against "mostly
/// zero" overlaps by about the share of zeros. When every set is constant, 5% of the pooled
/// standard deviation (or of 1 if the values are all equal).
pub fn set_bandwidths(sets: &[&[f64]]) -> Vec<f64> {
    let own: Vec<f64> = sets.iter().map(|s| bandwidth(s, Bandwidth::Scott)).collect();
    let positive: Vec<f64> = own.iter().copied().filter(|b| *b > 0.0).collect();
    let fallback = if positive.is_empty() {
        let all: Vec<f64> = sets.iter().flat_map(|s| s.iter().copied()).collect();
        let pooled = std_dev(&all);
        0.05 * if pooled > 0.0 { pooled } else { 1.0 }
    } else {
        positive.iter().sum::<f64>() / positive.len() as f64
    };
    own.into_iter().map(|b| if b > 0.0 { b } else { fallback }).collect()
}

/// Bandwidths (see [`set_bandwidths`]) and grid for comparing two sets; the grid spans both sets
/// and 4 kernels beyond, and no kernel is narrower than 2 grid steps. `None` when either set has
/// fewer than two values.
pub fn kernels(a: &[f64], b: &[f64]) -> Option<(f64, f64, Grid)> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let bws = set_bandwidths(&[a, b]);
    let all = a.iter().chain(b);
    let min = all.clone().copied().fold(f64::INFINITY, f64::min);
    let max = all.copied().fold(f64::NEG_INFINITY, f64::max);
    let widest = bws[0].max(bws[1]);
    let lo = min - 4.0 * widest;
    let step = (max + 4.0 * widest - lo) / (GRID - 1) as f64;
    Some((bws[0].max(2.0 * step), bws[1].max(2.0 * step), Grid { lo, step }))
}

/// The overlapping area of the two sets' KDEs (trapezoid rule on the grid), in 0..=1.
/// `None` when either set has fewer than two values.
pub fn overlap(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ba, bb, grid) = kernels(a, b)?;
    let (da, db) = (density_on_grid(a, ba, grid), density_on_grid(b, bb, grid));
    let m: Vec<f64> = da.iter().zip(&db).map(|(x, y)| x.min(*y)).collect();
    let area = (m.iter().sum::<f64>() - 0.5 * (m[0] + m[GRID - 1])) * grid.step;
    Some(area.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V: [f64; 7] = [1.0, 2.0, 2.5, 4.0, 7.0, 7.5, 9.0];

    #[test]
    fn bandwidth_matches_scipy() {
        // python3 -c "import numpy as np; from scipy.stats import gaussian_kde; \
        //   v=np.array([1,2,2.5,4,7,7.5,9.]); k=gaussian_kde(v); print(np.sqrt(k.covariance[0,0]), k(3.0), k(8.0)); \
        //   print(np.sqrt(gaussian_kde(v, bw_method='silverman').covariance[0,0]))"
        // scipy 1.17.1: 2.1054802698838695 0.09959562968651686 0.08059883006725638 / 2.230174898718882
        let bw = bandwidth(&V, Bandwidth::Scott);
        assert!((bw - 2.1054802698838695).abs() < 1e-12, "{bw}");
        assert!((bandwidth(&V, Bandwidth::Silverman) - 2.230174898718882).abs() < 1e-12);
        assert!((pdf(&V, bw, 3.0) - 0.09959562968651686).abs() < 1e-12);
        assert!((pdf(&V, bw, 8.0) - 0.08059883006725638).abs() < 1e-12);
    }

    #[test]
    fn binned_density_follows_the_exact_one() {
        let bw = bandwidth(&V, Bandwidth::Scott);
        let grid = Grid { lo: -10.0, step: 30.0 / (GRID - 1) as f64 };
        let d = density_on_grid(&V, bw, grid);
        for (i, &y) in d.iter().enumerate().step_by(37) {
            assert!((y - pdf(&V, bw, grid.x(i))).abs() < 1e-4, "at {}", grid.x(i));
        }
    }

    #[test]
    fn overlap_of_same_disjoint_and_scipy_sets() {
        let same = overlap(&V, &V).unwrap();
        assert!((same - 1.0).abs() < 1e-3, "{same}");
        let far: Vec<f64> = V.iter().map(|v| v + 1000.0).collect();
        assert!(overlap(&V, &far).unwrap() < 1e-6);
        // python3: a=[0,.5,1,1.5,2]; b=[1,1.5,2,2.5,3,3.5]; ka,kb=gaussian_kde(a),gaussian_kde(b);
        //   x=np.linspace(-10,15,200001); np.trapezoid(np.minimum(ka(x),kb(x)),x)  -> 0.5604708483644858
        let a = [0.0, 0.5, 1.0, 1.5, 2.0];
        let b = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        let o = overlap(&a, &b).unwrap();
        assert!((o - 0.5604708483644858).abs() < 2e-3, "{o}");
        // Constant sets: equal ones overlap fully, different ones not at all, and a constant set
        // against one mostly at the same value overlaps by about that share.
        assert!((overlap(&[0.0; 5], &[0.0; 8]).unwrap() - 1.0).abs() < 1e-3);
        assert!(overlap(&[0.0; 5], &[1.0; 8]).unwrap() < 1e-6);
        let mostly: Vec<f64> = [0.0; 18].iter().chain(&[5.0, 7.0]).copied().collect();
        let o = overlap(&[0.0; 10], &mostly).unwrap();
        assert!((0.85..=0.95).contains(&o), "{o}");
        assert_eq!(overlap(&[1.0], &V), None);
    }
}
