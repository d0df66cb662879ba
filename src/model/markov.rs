//! A smoothed n-th order Markov chain over ids: the baseline a neural model must beat.
//!
//! Smoothing is recursive Dirichlet ("add-α with a backoff prior"): the order-n estimate is
//! `P_n(w | h) = (c(h, w) + α · P_{n-1}(w | h')) / (c(h) + α)` where `h'` drops the oldest id,
//! down to an add-one unigram. Unseen contexts fall back smoothly to shorter ones, and every
//! distribution sums to one, so the loss is a fair per-id cross-entropy.

use std::collections::HashMap;

/// For one context: how often it was seen, and what followed it how often.
type Followers = (u64, HashMap<u32, u64>);

/// Counts of what followed each context of length 0..=order.
#[derive(Debug, Clone)]
pub struct Markov {
    order: usize,
    vocab: usize,
    alpha: f64,
    /// `counts[k]`: context of length k → (total, next id → count).
    counts: Vec<HashMap<Vec<u32>, Followers>>,
}

impl Markov {
    /// Counts every transition of `stream` (an id stream; sequences already joined).
    pub fn fit(stream: &[u32], order: usize, vocab: usize, alpha: f64) -> Markov {
        let mut counts = vec![HashMap::new(); order + 1];
        for i in 0..stream.len() {
            let next = stream[i];
            for (k, table) in counts.iter_mut().enumerate() {
                if k > i {
                    break;
                }
                let ctx = stream[i - k..i].to_vec();
                let entry: &mut Followers = table.entry(ctx).or_default();
                entry.0 += 1;
                *entry.1.entry(next).or_default() += 1;
            }
        }
        Markov { order, vocab, alpha, counts }
    }

    pub fn order(&self) -> usize {
        self.order
    }

    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    pub fn set_alpha(&mut self, alpha: f64) {
        self.alpha = alpha;
    }

    /// P(next | history), using at most the last `order` ids of `history`.
    pub fn prob(&self, history: &[u32], next: u32) -> f64 {
        // Unigram with add-one smoothing so no id has probability zero.
        let (total, map) = self.counts[0].get(&Vec::new()).map(|(t, m)| (*t, Some(m))).unwrap_or((0, None));
        let c = map.and_then(|m| m.get(&next)).copied().unwrap_or(0);
        let mut p = (c as f64 + 1.0) / (total as f64 + self.vocab as f64);
        let longest = self.order.min(history.len());
        for k in 1..=longest {
            let ctx = &history[history.len() - k..];
            if let Some((total, map)) = self.counts[k].get(ctx) {
                let c = map.get(&next).copied().unwrap_or(0);
                p = (c as f64 + self.alpha * p) / (*total as f64 + self.alpha);
            }
        }
        p
    }

    /// Mean negative log-likelihood (nats per id) of every id of `stream` after the first,
    /// each predicted from the ids before it.
    pub fn loss(&self, stream: &[u32]) -> f64 {
        if stream.len() < 2 {
            return f64::NAN;
        }
        let mut total = 0.0;
        for i in 1..stream.len() {
            let from = i.saturating_sub(self.order);
            total -= self.prob(&stream[from..i], stream[i]).ln();
        }
        total / (stream.len() - 1) as f64
    }

    /// Fits on `train` and picks α from a small grid by the loss on `tune` (the caller decides
    /// whether that is a held-out part of training or the validation set itself; the latter
    /// flatters the baseline, which only makes beating it harder).
    pub fn fit_tuned(train: &[u32], tune: &[u32], order: usize, vocab: usize) -> (Markov, f64) {
        let mut m = Markov::fit(train, order, vocab, 1.0);
        let mut best = (f64::INFINITY, 1.0);
        for alpha in [0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0] {
            m.set_alpha(alpha);
            let l = m.loss(tune);
            if l < best.0 {
                best = (l, alpha);
            }
        }
        m.set_alpha(best.1);
        (m, best.0)
    }
}
