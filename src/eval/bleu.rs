//! Corpus-level BLEU (Papineni et al. 2002) of note sequences, as NLTK's `corpus_bleu`
//! computes it: every take is a hypothesis and every held-out tune one of its references.
//!
//! Tokens are `features::tokens`: (interval from the previous note, duration) pairs, so BLEU
//! counts shared melodic-rhythmic figures whatever the key. It rewards sounding like the
//! references locally; it does not reward novelty (see `novelty`) or form.

use super::EvalError;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// The default n-gram weights (BLEU-4).
pub const DEFAULT_WEIGHTS: [f64; 4] = [0.25; 4];

/// BLEU with its parts.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Bleu {
    pub bleu: f64,
    /// Clipped n-gram precision for n = 1, 2, ...
    pub precisions: Vec<f64>,
    pub brevity_penalty: f64,
    /// Total hypothesis length and total closest reference length.
    pub hyp_len: usize,
    pub ref_len: usize,
}

/// Parses `0.25,0.25,0.25,0.25`: 1 to 8 non-negative weights, not all zero.
pub fn parse_weights(text: &str) -> Result<Vec<f64>, EvalError> {
    let bad = |why: &str| EvalError::BleuWeights(format!("`{text}`: {why}"));
    let w: Vec<f64> = text
        .split(',')
        .map(|s| s.trim().parse::<f64>().map_err(|_| bad("write numbers separated by commas")))
        .collect::<Result<_, _>>()?;
    if w.is_empty() || w.len() > 8 {
        return Err(bad("give 1 to 8 weights (one per n-gram length)"));
    }
    if w.iter().any(|x| !x.is_finite() || *x < 0.0) || w.iter().sum::<f64>() <= 0.0 {
        return Err(bad("weights must be non-negative and not all zero"));
    }
    Ok(w)
}

fn hash_ngram(g: &[u64]) -> u64 {
    let mut h = DefaultHasher::new();
    g.hash(&mut h);
    h.finish()
}

fn counts(seq: &[u64], n: usize) -> HashMap<u64, u32> {
    let mut c = HashMap::new();
    for g in seq.windows(n) {
        *c.entry(hash_ngram(g)).or_insert(0) += 1;
    }
    c
}

/// Corpus BLEU of `hyps`, each against all of `refs`. N-gram counts are clipped by the most
/// any single reference has; the brevity penalty compares the total hypothesis length with the
/// sum of each hypothesis's closest reference length (the shorter on a tie). As in NLTK without
/// smoothing, BLEU is 0 when some weighted n-gram length has no match at all.
pub fn corpus_bleu(hyps: &[Vec<u64>], refs: &[Vec<u64>], weights: &[f64]) -> Bleu {
    // The references are shared by every hypothesis: their maximum counts are computed once.
    let max_counts: Vec<HashMap<u64, u32>> = (1..=weights.len())
        .map(|n| {
            let mut m: HashMap<u64, u32> = HashMap::new();
            for r in refs {
                for (g, c) in counts(r, n) {
                    let e = m.entry(g).or_insert(0);
                    *e = (*e).max(c);
                }
            }
            m
        })
        .collect();
    let mut ref_lens: Vec<usize> = refs.iter().map(Vec::len).collect();
    ref_lens.sort_unstable();
    let (mut matched, mut total) = (vec![0u64; weights.len()], vec![0u64; weights.len()]);
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for h in hyps {
        for (n, max) in max_counts.iter().enumerate() {
            for (g, c) in counts(h, n + 1) {
                matched[n] += c.min(max.get(&g).copied().unwrap_or(0)) as u64;
                total[n] += c as u64;
            }
        }
        hyp_len += h.len();
        ref_len += closest(&ref_lens, h.len());
    }
    let precisions: Vec<f64> =
        matched.iter().zip(&total).map(|(&m, &t)| if t == 0 { 0.0 } else { m as f64 / t as f64 }).collect();
    let brevity_penalty = if hyp_len == 0 {
        0.0
    } else if hyp_len > ref_len {
        1.0
    } else {
        (1.0 - ref_len as f64 / hyp_len as f64).exp()
    };
    let any_zero = precisions.iter().zip(weights).any(|(&p, &w)| w > 0.0 && p == 0.0);
    let bleu = if any_zero || hyp_len == 0 {
        0.0
    } else {
        let sum: f64 = precisions.iter().zip(weights).filter(|(_, w)| **w > 0.0).map(|(p, w)| w * p.ln()).sum();
        brevity_penalty * sum.exp()
    };
    Bleu { bleu, precisions, brevity_penalty, hyp_len, ref_len }
}

/// The reference length closest to `len` (the shorter on a tie); 0 without references.
fn closest(sorted: &[usize], len: usize) -> usize {
    let i = sorted.partition_point(|&r| r < len);
    let above = sorted.get(i).copied();
    let below = i.checked_sub(1).map(|j| sorted[j]);
    match (below, above) {
        (Some(b), Some(a)) => {
            if len - b <= a - len {
                b
            } else {
                a
            }
        }
        (Some(b), None) => b,
        (None, Some(a)) => a,
        (None, None) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_nltk_corpus_bleu() {
        // python3 -c "from nltk.translate.bleu_score import corpus_bleu; \
        //   h=[[1,2,3,4,5,6,7,8],[2,3,4,9,9,2,3,4,5]]; r=[[1,2,3,4,5,6,9,8,7],[9,9,2,3,4,1,2,3],[5,6,7,8]]; \
        //   print(corpus_bleu([r,r],h), corpus_bleu([r,r],h,weights=(0.5,0.5)))"
        // nltk 3.10.4: 0.7949160929023952 0.9031535165794373
        let h = vec![vec![1, 2, 3, 4, 5, 6, 7, 8], vec![2, 3, 4, 9, 9, 2, 3, 4, 5]];
        let r = vec![vec![1, 2, 3, 4, 5, 6, 9, 8, 7], vec![9, 9, 2, 3, 4, 1, 2, 3], vec![5, 6, 7, 8]];
        let b = corpus_bleu(&h, &r, &DEFAULT_WEIGHTS);
        assert!((b.bleu - 0.7949160929023952).abs() < 1e-12, "{b:?}");
        assert!((corpus_bleu(&h, &r, &[0.5, 0.5]).bleu - 0.9031535165794373).abs() < 1e-12);
        // Short hypotheses: the brevity penalty. h=[[1,2,3],[4,5]]; r=[[1..=7],[4..=9]];
        // corpus_bleu([r,r],h,weights=(0.5,0.5)) -> 0.2465969639416065 (= exp(1 - 12/5)).
        let h = vec![vec![1, 2, 3], vec![4, 5]];
        let r = vec![vec![1, 2, 3, 4, 5, 6, 7], vec![4, 5, 6, 7, 8, 9]];
        let b = corpus_bleu(&h, &r, &[0.5, 0.5]);
        assert!((b.bleu - 0.2465969639416065).abs() < 1e-12, "{b:?}");
        assert_eq!((b.hyp_len, b.ref_len), (5, 12));
        // No 4-gram in common: 0, as NLTK (without smoothing).
        assert_eq!(corpus_bleu(&[vec![1, 2, 3, 4]], &[vec![1, 2, 3, 5]], &DEFAULT_WEIGHTS).bleu, 0.0);
    }

    #[test]
    fn weights_parse() {
        assert_eq!(parse_weights("0.5, 0.5").unwrap(), vec![0.5, 0.5]);
        assert!(parse_weights("a,b").is_err());
        assert!(parse_weights("0,0").is_err());
        assert!(parse_weights("-1,2").is_err());
    }
}
