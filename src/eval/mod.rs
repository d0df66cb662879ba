//! `cadenza eval`: measures a set of generated takes against held-out real tunes of a style.
//!
//! The measures, one module each: per-tune [`features`] and the [`overlap`] of their
//! distributions between two sets (Yang & Lerch 2018); a [`classify`]er that tries to tell the
//! sets apart (cross-validated ROC AUC); [`novelty`], how much a take copies from the training
//! tunes; [`bleu`] of note n-grams against the held-out tunes. [`sampler`] draws the Markov
//! baseline's takes, [`report`] prints and writes the numbers, [`plot`] draws the distributions.
//!
//! Every comparison is made for three rows: the takes against the held-out tunes; the held-out
//! tunes split in two halves ("real vs real": what indistinguishable looks like on this data);
//! and, on request, Markov-chain takes (what a trivial model reaches).

pub mod bleu;
pub mod classify;
pub mod copies;
pub mod features;
pub mod novelty;
pub mod overlap;
pub mod plot;
pub mod report;
pub mod sampler;

use crate::score::Score;
use features::{Features, Group, FEATURES};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Takes (and reference tunes) one evaluation accepts at most.
pub const MAX_TUNES: usize = 100_000;
/// Training tunes indexed for novelty at most (the whole music21 folk corpus is about 12,700).
pub const MAX_TRAINING: usize = 1_000_000;
/// Notes one tune may have at most (a long chorale has about 1,000).
pub const MAX_NOTES: usize = 200_000;

/// Resamples of a set whose mean overlaps give [`Row::mean_overlap_sd`]: each costs one more
/// overlap per feature (300 takes against 156 tunes: the whole eval 1.96 s -> 2.33 s).
pub const OVERLAP_RESAMPLES: usize = 20;

/// What can go wrong in an evaluation.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{what}: {count} tunes; `cadenza eval` takes at most {max} (evaluate a sample)")]
    TooMany { what: String, count: usize, max: usize },
    #[error("{what}: tune {index} has {notes} notes; at most {max} are evaluated")]
    TooLong { what: String, index: usize, notes: usize, max: usize },
    #[error("{what}: no tune with notes to evaluate")]
    Empty { what: String },
    #[error("--bleu-weights {0}")]
    BleuWeights(String),
    #[error("the classifier failed: {0}")]
    Classifier(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("plot {path}: {reason}")]
    Plot { path: String, reason: String },
}

/// Settings of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Options {
    /// Seeds the halves of "real vs real", the classifier's subsamples and folds, and the
    /// Markov takes.
    pub seed: u64,
    /// Put the length features in the headline mean and the classifier.
    pub with_length: bool,
    /// BLEU n-gram weights (n = 1, 2, ...).
    pub bleu_weights: Vec<f64>,
    /// Cross-validation folds.
    pub folds: usize,
    /// Runs of the cross-validation, each on fresh subsamples and folds, averaged.
    pub repeats: usize,
    /// Run length counted as a copy for novelty (notes, as tokens).
    pub ngram: usize,
    /// Add the 3rd-order Markov baseline row.
    pub markov: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: 1,
            with_length: false,
            bleu_weights: bleu::DEFAULT_WEIGHTS.to_vec(),
            folds: 5,
            repeats: classify::DEFAULT_REPEATS,
            ngram: 16,
            markov: false,
        }
    }
}

/// The three kinds of music an evaluation reads.
#[derive(Debug, Clone, Copy)]
pub struct Sets<'a> {
    /// The generated takes.
    pub takes: &'a [Score],
    /// Real tunes the model never trained on (the corpus's validation split, or a folder).
    pub held_out: &'a [Score],
    /// The tunes the model trained on: novelty is measured against them, the Markov baseline
    /// is fitted on them. May be empty (then both are left out).
    pub training: &'a [Score],
}

/// A feature as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FeatureInfo {
    pub name: &'static str,
    pub group: Group,
    pub doc: &'static str,
    /// Counted in the mean overlap and used by the classifier.
    pub headline: bool,
}

/// Novelty of one set against the training tunes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoveltySummary {
    /// Tunes measured.
    pub tunes: usize,
    /// The run length counted as a copy.
    pub n: usize,
    /// Share of tunes with a run of `n` or more notes found in a training tune.
    pub share_copied: f64,
    pub median_longest: f64,
    pub max_longest: usize,
    /// Mean share of a tune's n-grams found in the training tunes.
    pub mean_copied_ngrams: Option<f64>,
    /// Each tune's longest run, in the set's order.
    pub longest: Vec<usize>,
}

/// One row of the report: a set compared with its reference.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// What it is compared with.
    pub reference: String,
    pub n: usize,
    pub n_reference: usize,
    /// Per feature (in [`Report::features`] order); `None` where a set has fewer than two values.
    pub overlaps: Vec<Option<f64>>,
    /// Per feature, the mean over the set's tunes and over the reference's (which way a low
    /// overlap leans); `None` where no tune has the feature.
    pub means: Vec<Option<f64>>,
    pub reference_means: Vec<Option<f64>>,
    /// Mean of the headline features' overlaps.
    pub mean_overlap: Option<f64>,
    /// Standard deviation of `mean_overlap` over [`OVERLAP_RESAMPLES`] resamples (with
    /// replacement) of the set's tunes, the reference kept: how far another draw of as many
    /// takes would move it (300 folk-lstm takes from two seed ranges differed by 0.002-0.016).
    pub mean_overlap_sd: Option<f64>,
    /// Features the classifier used.
    pub classifier_features: Vec<&'static str>,
    pub classifier: Option<classify::Classification>,
    pub novelty: Option<NoveltySummary>,
    pub bleu: bleu::Bleu,
}

/// Everything an evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub options: Options,
    pub features: Vec<FeatureInfo>,
    pub rows: Vec<Row>,
    /// What novelty and BLEU count as a token.
    pub tokens: &'static str,
    /// How the numbers were made, and what was left out and why.
    pub notes: Vec<String>,
}

/// A set's per-tune features, kept for the plots.
#[derive(Debug, Clone)]
pub struct FeatureSet {
    pub name: String,
    pub values: Vec<Features>,
}

impl FeatureSet {
    /// The values of feature `f` of the tunes that have it.
    pub fn column(&self, f: usize) -> Vec<f64> {
        self.values.iter().filter_map(|v| v[f]).collect()
    }
}

/// The report and the per-tune features behind it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub report: Report,
    /// Held-out tunes first, then the takes, then the Markov takes if any.
    pub sets: Vec<FeatureSet>,
}

pub const TOKENS: &str =
    "(interval from the previous note in semitones, duration in ticks at 480 per quarter), one per \
                          note of the top voice after its first";

fn check(what: &str, tunes: &[Score], max: usize) -> Result<(), EvalError> {
    if tunes.len() > max {
        return Err(EvalError::TooMany { what: what.into(), count: tunes.len(), max });
    }
    if let Some((index, s)) = tunes.iter().enumerate().find(|(_, s)| s.notes.len() > MAX_NOTES) {
        return Err(EvalError::TooLong { what: what.into(), index, notes: s.notes.len(), max: MAX_NOTES });
    }
    Ok(())
}

/// One set measured once: features and tokens of each tune.
struct Measured {
    features: Vec<Features>,
    tokens: Vec<Vec<u64>>,
}

fn measure(tunes: &[Score]) -> Measured {
    let mut features = Vec::with_capacity(tunes.len());
    let mut tokens = Vec::with_capacity(tunes.len());
    for s in tunes {
        features.push(features::features(s));
        tokens.push(features::tokens(&features::melody(s)));
    }
    Measured { features, tokens }
}

/// Runs every measure on `sets` (see the module documentation for the rows).
pub fn evaluate(sets: Sets, opts: &Options) -> Result<Evaluation, EvalError> {
    check("takes", sets.takes, MAX_TUNES)?;
    check("held-out tunes", sets.held_out, MAX_TUNES)?;
    check("training tunes", sets.training, MAX_TRAINING)?;
    let with_notes = |s: &[Score]| s.iter().any(|t| t.notes.iter().any(|n| n.channel != 9));
    if !with_notes(sets.takes) {
        return Err(EvalError::Empty { what: "takes".into() });
    }
    if !with_notes(sets.held_out) {
        return Err(EvalError::Empty { what: "held-out tunes".into() });
    }
    let mut notes = vec![
        "overlap: Gaussian KDE per set (Scott's rule, as scipy's gaussian_kde; a constant set borrows the other \
         set's bandwidth), area under the smaller density on a 1024-point grid"
            .to_string(),
        format!(
            "classifier: smartcore logistic regression (L2 alpha {}) on standardized headline features, {}-fold \
             stratified cross-validation on classes balanced by subsampling (at most {} per class), repeated {} \
             times on fresh subsamples and folds; AUC = mean over the repeats of the folds' mean Mann-Whitney AUC, \
             ± the repeats' standard deviation; a feature missing in a tune is filled with its mean",
            classify::ALPHA,
            opts.folds,
            classify::MAX_PER_CLASS,
            opts.repeats
        ),
        "BLEU: corpus BLEU (NLTK's definition, no smoothing), each tune of the set a hypothesis with every tune of the \
         reference as its references; real vs real has half as many references, which lowers it slightly"
            .to_string(),
    ];
    let features: Vec<FeatureInfo> = FEATURES
        .iter()
        .map(|f| FeatureInfo {
            name: f.name,
            group: f.group,
            doc: f.doc,
            headline: f.group != Group::Length || opts.with_length,
        })
        .collect();
    if !opts.with_length {
        notes.push(
            "length features (n_bars, n_notes, duration_quarters) are reported but not in the mean overlap or \
                    the classifier (--with-length adds them)"
                .into(),
        );
    }

    let held = measure(sets.held_out);
    let takes = measure(sets.takes);
    let training_tokens: Vec<Vec<u64>> = sets.training.iter().map(|s| features::tokens(&features::melody(s))).collect();
    let index = (!sets.training.is_empty()).then(|| novelty::Index::build(&training_tokens, opts.ngram));
    if index.is_none() {
        notes.push("no training tunes given: novelty and the Markov baseline are left out".into());
    }
    let novelty_of = |tokens: &[Vec<u64>]| index.as_ref().map(|ix| summarize(ix, tokens, opts.ngram));

    let mut rows = Vec::new();
    rows.push(compare("takes", "held-out", &takes, &held, novelty_of(&takes.tokens), &features, opts)?);

    // Real vs real: the held-out tunes in two seeded halves.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed);
    let mut order: Vec<usize> = (0..sets.held_out.len()).collect();
    order.shuffle(&mut rng);
    let half = order.len() / 2;
    if half >= 2 {
        let part = |idx: &[usize]| Measured {
            features: idx.iter().map(|&i| held.features[i].clone()).collect(),
            tokens: idx.iter().map(|&i| held.tokens[i].clone()).collect(),
        };
        let (a, b) = (part(&order[..half]), part(&order[half..]));
        // Novelty here is the baseline of all held-out tunes: how much real tunes share.
        rows.push(compare("real vs real", "other half", &a, &b, novelty_of(&held.tokens), &features, opts)?);
    } else {
        notes.push("fewer than 4 held-out tunes: no real-vs-real row".into());
    }

    let mut feature_sets = vec![
        FeatureSet { name: "held-out".into(), values: held.features.clone() },
        FeatureSet { name: "takes".into(), values: takes.features.clone() },
    ];
    let lengths: Vec<(usize, crate::time::Meter)> =
        sets.held_out.iter().map(|s| (features::melody(s).len(), s.meter())).filter(|(n, _)| *n >= 2).collect();
    if opts.markov && lengths.is_empty() {
        notes.push("no held-out tune has two notes to take a length from: no Markov row".into());
    }
    if opts.markov && !sets.training.is_empty() && !lengths.is_empty() {
        let starts: Vec<u8> =
            sets.training.iter().filter_map(|s| features::melody(s).first().map(|n| n.pitch)).collect();
        let baseline = sampler::Baseline::fit(&training_tokens, starts, 3);
        // As many Markov takes as takes, each as long (in notes) and in the meter of a random
        // held-out tune, so length and meter match the real music.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(opts.seed.wrapping_add(0x6d61_726b));
        let markov_scores: Vec<Score> = (0..sets.takes.len())
            .map(|_| {
                let (len, meter) = lengths[rng.gen_range(0..lengths.len())];
                baseline.sample(len, meter, &mut rng)
            })
            .collect();
        let m = measure(&markov_scores);
        rows.push(compare("markov", "held-out", &m, &held, novelty_of(&m.tokens), &features, opts)?);
        notes.push(format!(
            "markov: {} melodies from a 3rd-order chain over the tokens of {} training tunes (alpha 1), lengths and \
             meters of random held-out tunes, first pitch of a random training tune",
            markov_scores.len(),
            sets.training.len()
        ));
        feature_sets.push(FeatureSet { name: "markov".into(), values: m.features });
    }
    let report = Report { options: opts.clone(), features, rows, tokens: TOKENS, notes };
    Ok(Evaluation { report, sets: feature_sets })
}

fn summarize(index: &novelty::Index, tokens: &[Vec<u64>], n: usize) -> NoveltySummary {
    let per: Vec<novelty::Novelty> = tokens.iter().map(|t| index.novelty(t)).collect();
    let longest: Vec<usize> = per.iter().map(|x| x.longest).collect();
    let copied: Vec<f64> = per.iter().filter_map(|x| x.copied_ngrams).collect();
    NoveltySummary {
        tunes: per.len(),
        n,
        share_copied: longest.iter().filter(|&&l| l >= n).count() as f64 / per.len().max(1) as f64,
        median_longest: median(&longest),
        max_longest: longest.iter().copied().max().unwrap_or(0),
        mean_copied_ngrams: (!copied.is_empty()).then(|| copied.iter().sum::<f64>() / copied.len() as f64),
        longest,
    }
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn median(values: &[usize]) -> f64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2] as f64,
        n => (v[n / 2 - 1] + v[n / 2]) as f64 / 2.0,
    }
}

fn compare(
    name: &str,
    reference: &str,
    set: &Measured,
    against: &Measured,
    novelty: Option<NoveltySummary>,
    features: &[FeatureInfo],
    opts: &Options,
) -> Result<Row, EvalError> {
    let column = |m: &Measured, f: usize| m.features.iter().filter_map(|v| v[f]).collect::<Vec<f64>>();
    let overlaps: Vec<Option<f64>> =
        (0..features.len()).map(|f| overlap::overlap(&column(set, f), &column(against, f))).collect();
    let headline: Vec<f64> =
        overlaps.iter().zip(features).filter(|(_, i)| i.headline).filter_map(|(o, _)| *o).collect();
    let mean_overlap = mean(&headline);
    let mean_overlap_sd = resampled_overlap_sd(set, against, features, opts.seed);

    // Classifier features: headline features that at least half the tunes of each set have.
    let enough = |m: &Measured, f: usize| 2 * column(m, f).len() >= m.features.len().max(1);
    let used: Vec<usize> =
        (0..features.len()).filter(|&f| features[f].headline && enough(set, f) && enough(against, f)).collect();
    let fill: Vec<f64> = used
        .iter()
        .map(|&f| {
            let all: Vec<f64> = column(set, f).into_iter().chain(column(against, f)).collect();
            all.iter().sum::<f64>() / all.len().max(1) as f64
        })
        .collect();
    let rows = |m: &Measured| -> Vec<Vec<f64>> {
        m.features.iter().map(|v| used.iter().zip(&fill).map(|(&f, &mean)| v[f].unwrap_or(mean)).collect()).collect()
    };
    let classifier = classify::cross_validate(&rows(set), &rows(against), opts.folds, opts.repeats, opts.seed)?;
    let bleu = bleu::corpus_bleu(&set.tokens, &against.tokens, &opts.bleu_weights);
    Ok(Row {
        name: name.into(),
        reference: reference.into(),
        n: set.features.len(),
        n_reference: against.features.len(),
        overlaps,
        means: (0..features.len()).map(|f| mean(&column(set, f))).collect(),
        reference_means: (0..features.len()).map(|f| mean(&column(against, f))).collect(),
        mean_overlap,
        mean_overlap_sd,
        classifier_features: used.iter().map(|&f| features[f].name).collect(),
        classifier,
        novelty,
        bleu,
    })
}

/// [`Row::mean_overlap_sd`]: the mean headline overlap of `set` against `against` over seeded
/// resamples of `set`'s tunes; `None` where fewer than two resamples give a mean.
fn resampled_overlap_sd(set: &Measured, against: &Measured, features: &[FeatureInfo], seed: u64) -> Option<f64> {
    let n = set.features.len();
    if n < 2 {
        return None;
    }
    let headline: Vec<usize> = (0..features.len()).filter(|&f| features[f].headline).collect();
    let reference: Vec<Vec<f64>> =
        headline.iter().map(|&f| against.features.iter().filter_map(|v| v[f]).collect()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(0x7265_7361_6d70));
    let means: Vec<f64> = (0..OVERLAP_RESAMPLES)
        .filter_map(|_| {
            let pick: Vec<usize> = (0..n).map(|_| rng.gen_range(0..n)).collect();
            let overlaps: Vec<f64> = headline
                .iter()
                .zip(&reference)
                .filter_map(|(&f, b)| {
                    let a: Vec<f64> = pick.iter().filter_map(|&i| set.features[i][f]).collect();
                    overlap::overlap(&a, b)
                })
                .collect();
            mean(&overlaps)
        })
        .collect();
    (means.len() >= 2).then(|| overlap::std_dev(&means))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Note;
    use crate::time::Meter;

    /// A jig-like tune in 6/8 built from a seeded walk: `leap` widens its intervals.
    fn tune(seed: u64, leap: i32, bars: usize) -> Score {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut s = Score::new();
        s.meta.meters.push((0, Meter::new(6, 8)));
        let mut pitch = 67i32;
        let phrase: Vec<(i32, u64)> =
            (0..12).map(|_| (rng.gen_range(-2 - leap..=2 + leap), if rng.gen_bool(0.2) { 480 } else { 240 })).collect();
        let mut t = 0;
        for b in 0..bars {
            // Bars 3-4 repeat 1-2, as folk tunes do.
            let part = if b % 4 >= 2 { b - 2 } else { b };
            let mut used = 0;
            for &(step, dur) in phrase.iter().cycle().skip(part * 3 % 12) {
                if used + dur > 1440 {
                    break;
                }
                pitch = (pitch + step).clamp(55, 84);
                s.notes.push(Note::new(t + used, dur, pitch as u8));
                used += dur;
            }
            t += 1440;
        }
        s.normalize();
        s.length = t;
        s
    }

    #[test]
    fn whole_evaluation_on_small_sets() {
        let real: Vec<Score> = (0..40).map(|i| tune(i, 0, 8)).collect();
        let training: Vec<Score> = (100..140).map(|i| tune(i, 0, 8)).collect();
        // Takes: wide leaps, and two verbatim copies of training tunes.
        let mut takes: Vec<Score> = (200..230).map(|i| tune(i, 9, 8)).collect();
        takes.push(training[0].clone());
        takes.push(training[1].clone());
        let opts = Options { markov: true, ..Options::default() };
        let eval = evaluate(Sets { takes: &takes, held_out: &real, training: &training }, &opts).unwrap();
        let r = &eval.report;
        assert_eq!(r.rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["takes", "real vs real", "markov"]);
        let (t, rr) = (&r.rows[0], &r.rows[1]);
        assert_eq!((t.n, t.n_reference, rr.n, rr.n_reference), (32, 40, 20, 20));
        let leap = FEATURES.iter().position(|f| f.name == "interval_mean").unwrap();
        assert!(t.overlaps[leap].unwrap() < 0.3, "{:?}", t.overlaps[leap]);
        assert!(rr.overlaps[leap].unwrap() > 0.6, "{:?}", rr.overlaps[leap]);
        assert!(t.mean_overlap.unwrap() < rr.mean_overlap.unwrap());
        assert!(t.classifier.as_ref().unwrap().auc > 0.9, "{:?}", t.classifier);
        assert!(rr.classifier.as_ref().unwrap().auc < 0.8, "{:?}", rr.classifier);
        assert!(!t.classifier_features.contains(&"n_notes"));
        // The two copies are found whole; the rest share little.
        let nov = t.novelty.as_ref().unwrap();
        assert_eq!(nov.share_copied, 2.0 / 32.0);
        assert_eq!(
            nov.max_longest,
            features::tokens(&features::melody(&training[0]))
                .len()
                .max(features::tokens(&features::melody(&training[1])).len())
        );
        assert!(t.bleu.bleu < rr.bleu.bleu, "{} vs {}", t.bleu.bleu, rr.bleu.bleu);
        assert_eq!(eval.sets.len(), 3);
        // Identical sets: every overlap near 1.
        let same = evaluate(Sets { takes: &real, held_out: &real, training: &[] }, &Options::default()).unwrap();
        assert!(same.report.rows[0].mean_overlap.unwrap() > 0.99);
        assert!(same.report.rows[0].novelty.is_none());
        // The reports serialize, and the tables print every row.
        let json = serde_json::to_string(&eval.report).unwrap();
        assert!(json.contains("\"real vs real\""));
        let text = report::table(&eval.report);
        assert!(text.contains("markov") && text.contains("interval_mean"), "{text}");
        let csv = report::csv(&eval.report);
        assert!(csv.lines().count() > 3 * FEATURES.len());
        let dir = tempfile::tempdir().unwrap();
        let written = plot::write_plots(dir.path(), &eval).unwrap();
        assert!(written.len() >= 30, "{}", written.len());
        assert!(std::fs::metadata(&written[0]).unwrap().len() > 1000);
    }

    /// The overlap's spread over resamples of the takes: seeded (the same twice), small beside
    /// the gap between a set like the reference and one unlike it, and smaller for more takes
    /// (a bootstrap's spread falls about as one over the square root of the set's size).
    #[test]
    fn the_overlap_spread_is_seeded_and_shrinks_with_more_takes() {
        let real: Vec<Score> = (0..60).map(|i| tune(i, 0, 8)).collect();
        let sd_of = |n: u64, leap: i32| {
            let takes: Vec<Score> = (300..300 + n).map(|i| tune(i, leap, 8)).collect();
            let r = evaluate(Sets { takes: &takes, held_out: &real, training: &[] }, &Options::default()).unwrap();
            (r.report.rows[0].mean_overlap.unwrap(), r.report.rows[0].mean_overlap_sd.unwrap())
        };
        let (like, sd_few) = sd_of(12, 0);
        assert_eq!(sd_of(12, 0), (like, sd_few));
        let (unlike, _) = sd_of(12, 9);
        assert!(sd_few > 0.0 && sd_few < (like - unlike) / 2.0, "sd {sd_few}, overlaps {like} and {unlike}");
        let (_, sd_many) = sd_of(120, 0);
        assert!(sd_many < sd_few, "120 takes: {sd_many}, 12 takes: {sd_few}");
        let one = [tune(7, 0, 8)];
        let r = evaluate(Sets { takes: &one, held_out: &real, training: &[] }, &Options::default()).unwrap();
        assert_eq!(r.report.rows[0].mean_overlap_sd, None);
    }

    #[test]
    fn limits_and_empty_sets_are_errors() {
        let empty = vec![Score::new()];
        let real: Vec<Score> = (0..4).map(|i| tune(i, 0, 4)).collect();
        let e = evaluate(Sets { takes: &empty, held_out: &real, training: &[] }, &Options::default()).unwrap_err();
        assert!(e.to_string().contains("takes: no tune with notes"), "{e}");
        let mut long = Score::new();
        long.notes = vec![Note::new(0, 1, 60); MAX_NOTES + 1];
        let e = evaluate(Sets { takes: &[long], held_out: &real, training: &[] }, &Options::default()).unwrap_err();
        assert!(matches!(e, EvalError::TooLong { .. }), "{e}");
    }
}
