//! Can a classifier tell the takes from real tunes? Logistic regression (smartcore) on
//! standardized feature vectors, k-fold cross-validated on balanced classes, repeated with fresh
//! subsamples and folds, scored by ROC AUC: 0.5 means it cannot tell, 1 that every take is
//! recognised.

use super::EvalError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::logistic_regression::{LogisticRegression, LogisticRegressionParameters};

/// Tunes per class the classifier sees at most (a seeded subsample beyond): the AUC is stable
/// long before, and fitting stays a matter of seconds.
pub const MAX_PER_CLASS: usize = 5000;

/// L2 penalty of the logistic regression. Some feature sets separate perfectly (a model that
/// never writes a dotted note); without a penalty the weights would run off to infinity.
pub const ALPHA: f64 = 1.0;

/// Repeats of the cross-validation by default. With few real tunes (18 held-out chorales) one
/// run of 5 folds scores 3 or 4 of them per fold, and its AUC moved from 0.40 to 0.80 with the
/// seed alone on one set of 300 takes; ten repeats, each on a fresh subsample of the larger side
/// and fresh folds, bring the spread of the mean down by about three.
pub const DEFAULT_REPEATS: usize = 20;

/// The cross-validated result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// Mean of the repeats' AUCs.
    pub auc: f64,
    /// Standard deviation of the repeats' AUCs (0 with one repeat): how far one run of the
    /// cross-validation strays from their mean.
    pub auc_sd: f64,
    /// Each repeat's AUC (the mean of its folds').
    pub repeat_aucs: Vec<f64>,
    /// Every fold's AUC, repeat after repeat.
    pub fold_aucs: Vec<f64>,
    /// Tunes per class after balancing.
    pub per_class: usize,
    pub folds: usize,
    pub repeats: usize,
}

/// ROC AUC from scores, by the Mann-Whitney U statistic: the probability that a random
/// positive scores above a random negative, ties counting one half. Average ranks handle ties
/// in O(n log n). NaN when either side is empty.
pub fn auc(positives: &[f64], negatives: &[f64]) -> f64 {
    let (np, nn) = (positives.len(), negatives.len());
    if np == 0 || nn == 0 {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> =
        positives.iter().map(|&s| (s, true)).chain(negatives.iter().map(|&s| (s, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based), tied scores sharing their mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let mean_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mean_rank * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let u = rank_sum - (np * (np + 1)) as f64 / 2.0;
    u / (np * nn) as f64
}

/// Cross-validated AUC of telling `positives` (takes) from `negatives` (real tunes), `repeats`
/// times: each time both sides subsampled afresh to the smaller size (at most
/// [`MAX_PER_CLASS`]), split into `k` stratified folds, each fold scored by a model fitted on the
/// others with features standardized on those others. `None` when a side has fewer than two
/// tunes or there are no features.
pub fn cross_validate(
    positives: &[Vec<f64>],
    negatives: &[Vec<f64>],
    k: usize,
    repeats: usize,
    seed: u64,
) -> Result<Option<Classification>, EvalError> {
    let per_class = positives.len().min(negatives.len()).min(MAX_PER_CLASS);
    let dims = positives.first().map_or(0, Vec::len);
    if per_class < 2 || dims == 0 {
        return Ok(None);
    }
    let k = k.clamp(2, per_class);
    let repeats = repeats.max(1);
    // One stream for every repeat: the first repeat is what a single run with this seed gives.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut fold_aucs = Vec::with_capacity(k * repeats);
    let mut repeat_aucs = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let folds = one_cross_validation(positives, negatives, per_class, dims, k, &mut rng)?;
        repeat_aucs.push(folds.iter().sum::<f64>() / folds.len() as f64);
        fold_aucs.extend(folds);
    }
    let n = repeat_aucs.len() as f64;
    let auc = repeat_aucs.iter().sum::<f64>() / n;
    let auc_sd = (repeat_aucs.iter().map(|a| (a - auc).powi(2)).sum::<f64>() / n).sqrt();
    Ok(Some(Classification { auc, auc_sd, repeat_aucs, fold_aucs, per_class, folds: k, repeats }))
}

/// One run of `k`-fold cross-validation on fresh subsamples: the folds' AUCs.
fn one_cross_validation(
    positives: &[Vec<f64>],
    negatives: &[Vec<f64>],
    per_class: usize,
    dims: usize,
    k: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Vec<f64>, EvalError> {
    let mut pick = |set: &[Vec<f64>]| {
        let mut idx: Vec<usize> = (0..set.len()).collect();
        idx.shuffle(rng);
        idx.truncate(per_class);
        idx.into_iter().map(|i| set[i].clone()).collect::<Vec<_>>()
    };
    let (pos, neg) = (pick(positives), pick(negatives));
    // Fold of each row: rows are already in random order, so i % k stratifies.
    let rows: Vec<(&Vec<f64>, i32, usize)> = pos
        .iter()
        .enumerate()
        .map(|(i, x)| (x, 1, i % k))
        .chain(neg.iter().enumerate().map(|(i, x)| (x, 0, i % k)))
        .collect();
    let mut fold_aucs = Vec::with_capacity(k);
    for fold in 0..k {
        let train: Vec<&(&Vec<f64>, i32, usize)> = rows.iter().filter(|r| r.2 != fold).collect();
        let test: Vec<&(&Vec<f64>, i32, usize)> = rows.iter().filter(|r| r.2 == fold).collect();
        let (mean, scale) = standardizer(train.iter().map(|r| r.0.as_slice()), dims);
        let standard = |x: &[f64]| x.iter().enumerate().map(|(j, v)| (v - mean[j]) / scale[j]).collect::<Vec<f64>>();
        let x: Vec<Vec<f64>> = train.iter().map(|r| standard(r.0)).collect();
        let y: Vec<i32> = train.iter().map(|r| r.1).collect();
        let xm = DenseMatrix::from_2d_vec(&x).map_err(|e| EvalError::Classifier(e.to_string()))?;
        let params = LogisticRegressionParameters::default().with_alpha(ALPHA);
        let model = LogisticRegression::fit(&xm, &y, params).map_err(|e| EvalError::Classifier(e.to_string()))?;
        // The decision function w·x + b: smartcore orders classes ascending, so it is the log-odds
        // of class 1 (a take). Ranking by it is ranking by the predicted probability.
        let w = model.coefficients();
        let b = *model.intercept().get((0, 0));
        let score = |x: &[f64]| standard(x).iter().enumerate().map(|(j, v)| v * *w.get((0, j))).sum::<f64>() + b;
        let (mut sp, mut sn) = (Vec::new(), Vec::new());
        for r in &test {
            let side = if r.1 == 1 { &mut sp } else { &mut sn };
            side.push(score(r.0));
        }
        fold_aucs.push(auc(&sp, &sn));
    }
    Ok(fold_aucs)
}

/// Per-feature mean and standard deviation (1 where a feature is constant, so it stays 0).
fn standardizer<'a>(rows: impl Iterator<Item = &'a [f64]> + Clone, dims: usize) -> (Vec<f64>, Vec<f64>) {
    let n = rows.clone().count().max(1) as f64;
    let mut mean = vec![0.0; dims];
    for r in rows.clone() {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / n;
        }
    }
    let mut var = vec![0.0; dims];
    for r in rows {
        for (j, v) in r.iter().enumerate() {
            var[j] += (v - mean[j]).powi(2) / n;
        }
    }
    let scale = var.into_iter().map(|v| if v > 1e-24 { v.sqrt() } else { 1.0 }).collect();
    (mean, scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn auc_from_known_ranks() {
        // Pairs: 0.9 and 0.8 beat all four negatives (8), 0.4 beats 0.3 and 0.1, ties 0.4 (half)
        // and loses to 0.5: 10.5 of 12 pairs. sklearn.metrics.roc_auc_score gives the same 0.875.
        assert_eq!(auc(&[0.9, 0.8, 0.4], &[0.5, 0.3, 0.4, 0.1]), 0.875);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 1.0], &[1.0]), 0.5);
        assert!(auc(&[], &[1.0]).is_nan());
    }

    #[test]
    fn separable_sets_are_told_apart_and_equal_ones_are_not() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut draw = |shift: f64, n: usize| -> Vec<Vec<f64>> {
            (0..n).map(|_| vec![rng.gen::<f64>() + shift, rng.gen::<f64>(), 5.0]).collect()
        };
        let (a, b) = (draw(3.0, 60), draw(0.0, 80));
        let c = cross_validate(&a, &b, 5, 1, 1).unwrap().unwrap();
        assert_eq!((c.per_class, c.folds, c.repeats, c.auc_sd), (60, 5, 1, 0.0));
        assert!(c.auc > 0.99, "{c:?}");
        let (d, e) = (draw(0.0, 200), draw(0.0, 200));
        let c = cross_validate(&d, &e, 5, 1, 1).unwrap().unwrap();
        assert!((c.auc - 0.5).abs() < 0.12, "{c:?}");
        assert_eq!(cross_validate(&a[..1], &b, 5, 1, 1).unwrap(), None);
    }

    #[test]
    fn repeats_extend_the_first_run_and_average() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let mut draw = |shift: f64, n: usize| -> Vec<Vec<f64>> {
            (0..n).map(|_| vec![rng.gen::<f64>() + shift, rng.gen::<f64>()]).collect()
        };
        // Overlapping classes, the smaller one small: single runs disagree.
        let (a, b) = (draw(0.3, 300), draw(0.0, 18));
        let one = cross_validate(&a, &b, 5, 1, 7).unwrap().unwrap();
        let ten = cross_validate(&a, &b, 5, 10, 7).unwrap().unwrap();
        assert_eq!((ten.repeats, ten.repeat_aucs.len(), ten.fold_aucs.len()), (10, 10, 50));
        // The first repeat is the single run with the same seed.
        assert_eq!(ten.repeat_aucs[0], one.auc);
        assert_eq!(ten.fold_aucs[..5], one.fold_aucs[..]);
        let mean = ten.repeat_aucs.iter().sum::<f64>() / 10.0;
        assert!((ten.auc - mean).abs() < 1e-12);
        assert!(ten.auc_sd > 0.0, "{ten:?}");
        let spread = ten.repeat_aucs.iter().fold(0.0f64, |m, a| m.max((a - ten.auc).abs()));
        assert!(ten.auc_sd <= spread, "{ten:?}");
    }
}
