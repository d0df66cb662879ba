//! The report as text: the terminal tables, CSV (one number per line, every number) and JSON.

use super::features::FEATURES;
use super::{EvalError, Evaluation, Report};
use std::fmt::Write;
use std::path::Path;

fn num(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

/// The two terminal tables: one line per set (the headline numbers), then the overlap of every
/// feature for every set.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let n = r.rows.first().and_then(|row| row.novelty.as_ref()).map_or(r.options.ngram, |x| x.n);
    let _ = writeln!(
        s,
        "{:<14} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6} {:>9} {:>8} {:>7}",
        "set",
        "n",
        "vs n",
        "overlap",
        "± sd",
        "AUC",
        "± sd",
        format!("copy≥{n}"),
        "run med",
        "BLEU"
    );
    for row in &r.rows {
        let nov = row.novelty.as_ref();
        let _ = writeln!(
            s,
            "{:<14} {:>6} {:>6} {:>8} {:>6} {:>6} {:>6} {:>9} {:>8} {:>7}",
            row.name,
            row.n,
            row.n_reference,
            num(row.mean_overlap, 3),
            num(row.mean_overlap_sd, 3),
            num(row.classifier.as_ref().map(|c| c.auc), 3),
            num(row.classifier.as_ref().map(|c| c.auc_sd), 3),
            num(nov.map(|x| x.share_copied), 3),
            num(nov.map(|x| x.median_longest), 1),
            num(Some(row.bleu.bleu), 4),
        );
    }
    let _ = writeln!(
        s,
        "\noverlap: mean KDE overlap of the headline features with the reference (1 = same distribution), ± sd: its \
         spread over {resamples} resamples of the set's tunes; AUC: cross-validated classifier (0.5 = cannot tell), \
         ± sd: its spread over the repeats; copy≥{n}: share of tunes sharing a run of {n}+ notes with a \
         training tune; run med: median longest shared run; real vs real's novelty is all held-out tunes'.\n",
        resamples = super::OVERLAP_RESAMPLES
    );
    let _ = write!(s, "{:<24}", "feature");
    for row in &r.rows {
        let _ = write!(s, " {:>13}", truncate(&row.name, 13));
    }
    s.push('\n');
    for (i, f) in r.features.iter().enumerate() {
        let mark = if f.headline { "" } else { " (len)" };
        let _ = write!(s, "{:<24}", format!("{}{mark}", f.name));
        for row in &r.rows {
            let _ = write!(s, " {:>13}", num(row.overlaps[i], 3));
        }
        s.push('\n');
    }
    s
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Every number as `set,measure,value` lines (a long table: easy to filter and pivot).
pub fn csv(r: &Report) -> String {
    let mut s = String::from("set,measure,value\n");
    let mut put = |set: &str, measure: &str, v: Option<f64>| {
        let _ = writeln!(
            s,
            "{},{},{}",
            quote(set),
            quote(measure),
            v.filter(|x| x.is_finite()).map_or(String::new(), |x| x.to_string())
        );
    };
    for row in &r.rows {
        let name = row.name.as_str();
        put(name, "n", Some(row.n as f64));
        put(name, "n_reference", Some(row.n_reference as f64));
        put(name, "mean_overlap", row.mean_overlap);
        put(name, "mean_overlap_sd", row.mean_overlap_sd);
        for (f, o) in r.features.iter().zip(&row.overlaps) {
            put(name, &format!("overlap:{}", f.name), *o);
        }
        for (f, m) in r.features.iter().zip(&row.means) {
            put(name, &format!("mean:{}", f.name), *m);
        }
        for (f, m) in r.features.iter().zip(&row.reference_means) {
            put(name, &format!("reference_mean:{}", f.name), *m);
        }
        if let Some(c) = &row.classifier {
            put(name, "auc", Some(c.auc));
            put(name, "auc_sd", Some(c.auc_sd));
            for (i, a) in c.repeat_aucs.iter().enumerate() {
                put(name, &format!("auc_repeat:{}", i + 1), Some(*a));
            }
            for (i, a) in c.fold_aucs.iter().enumerate() {
                put(name, &format!("auc_fold:{}", i + 1), Some(*a));
            }
            put(name, "classifier_per_class", Some(c.per_class as f64));
        }
        if let Some(nv) = &row.novelty {
            put(name, "novelty_tunes", Some(nv.tunes as f64));
            put(name, &format!("share_copied_{}", nv.n), Some(nv.share_copied));
            put(name, "median_longest_run", Some(nv.median_longest));
            put(name, "max_longest_run", Some(nv.max_longest as f64));
            put(name, &format!("mean_copied_{}grams", nv.n), nv.mean_copied_ngrams);
        }
        put(name, "bleu", Some(row.bleu.bleu));
        for (i, p) in row.bleu.precisions.iter().enumerate() {
            put(name, &format!("bleu_precision:{}", i + 1), Some(*p));
        }
        put(name, "bleu_brevity_penalty", Some(row.bleu.brevity_penalty));
    }
    s
}

/// Every tune's features, one line per tune (`set,tune,<feature>...`; `tune` counts from 1 in
/// the order the set was read: file names in order for a folder), empty where a tune lacks the
/// feature: what the plots are drawn from, for looking at single takes.
pub fn tunes_csv(e: &Evaluation) -> String {
    let mut s = String::from("set,tune");
    for f in FEATURES {
        s.push(',');
        s.push_str(&quote(f.name));
    }
    s.push('\n');
    for set in &e.sets {
        for (i, values) in set.values.iter().enumerate() {
            let _ = write!(s, "{},{}", quote(&set.name), i + 1);
            for v in values.iter() {
                s.push(',');
                if let Some(x) = v.filter(|x| x.is_finite()) {
                    let _ = write!(s, "{x}");
                }
            }
            s.push('\n');
        }
    }
    s
}

fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `text` to `path`, naming the path in the error.
pub fn write(path: &Path, text: &str) -> Result<(), EvalError> {
    std::fs::write(path, text).map_err(|e| EvalError::Io { path: path.display().to_string(), reason: e.to_string() })
}

/// The report as pretty JSON (options, features with their meaning, every row, the notes).
pub fn json(r: &Report) -> String {
    serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}
