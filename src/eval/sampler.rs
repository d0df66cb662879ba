//! The Markov baseline for `--markov`: a 3rd-order chain over (interval, duration) tokens fitted
//! on the training tunes, sampled into melodies. If a model's takes score no better than these,
//! the model has learnt nothing a chain of four notes could not.
//!
//! The chain is the one `model::markov::Markov` defines (recursive Dirichlet smoothing down to
//! an add-one unigram), sampled exactly without building the distribution: with probability
//! `c(h) / (c(h) + α)` draw from what followed the context `h`, else back off to a shorter one.

use crate::score::{Note, Score};
use crate::time::{Meter, Tick};
use rand::Rng;
use std::collections::HashMap;

/// For one context: how often it was seen, and what followed it how often (sorted by id).
type Followers = (u64, Vec<(u32, u64)>);

/// Counts of what followed each context of length 0..=order, with the followers listed so a
/// draw is a walk through them.
#[derive(Debug, Clone)]
pub struct Chain {
    order: usize,
    alpha: f64,
    vocab: usize,
    /// `counts[k]`: context of length k → (total, [(next id, count)]).
    counts: Vec<HashMap<Vec<u32>, Followers>>,
}

impl Chain {
    /// Counts every transition of `stream`, as `Markov::fit` does.
    pub fn fit(stream: &[u32], order: usize, vocab: usize, alpha: f64) -> Chain {
        type Counting = (u64, HashMap<u32, u64>);
        let mut maps: Vec<HashMap<Vec<u32>, Counting>> = vec![HashMap::new(); order + 1];
        for i in 0..stream.len() {
            for (k, table) in maps.iter_mut().enumerate().take(i.min(order) + 1) {
                let e = table.entry(stream[i - k..i].to_vec()).or_default();
                e.0 += 1;
                *e.1.entry(stream[i]).or_default() += 1;
            }
        }
        let counts = maps
            .into_iter()
            .map(|t| {
                t.into_iter()
                    .map(|(ctx, (total, next))| {
                        let mut v: Vec<(u32, u64)> = next.into_iter().collect();
                        v.sort_unstable(); // a draw must not depend on hash order
                        (ctx, (total, v))
                    })
                    .collect()
            })
            .collect();
        Chain { order, alpha, vocab, counts }
    }

    /// Draws the id that follows `history` (at most the last `order` ids are used).
    pub fn draw<R: Rng>(&self, history: &[u32], rng: &mut R) -> u32 {
        let longest = self.order.min(history.len());
        for k in (1..=longest).rev() {
            if let Some((total, next)) = self.counts[k].get(&history[history.len() - k..]) {
                if rng.gen_bool(*total as f64 / (*total as f64 + self.alpha)) {
                    return pick(next, *total, rng);
                }
            }
        }
        match self.counts[0].get::<[u32]>(&[]) {
            Some((total, next)) if rng.gen_bool(*total as f64 / (*total + self.vocab as u64) as f64) => {
                pick(next, *total, rng)
            }
            _ => rng.gen_range(0..self.vocab.max(1) as u32),
        }
    }
}

fn pick<R: Rng>(next: &[(u32, u64)], total: u64, rng: &mut R) -> u32 {
    let mut r = rng.gen_range(0..total);
    for &(id, c) in next {
        if r < c {
            return id;
        }
        r -= c;
    }
    next.last().map_or(0, |x| x.0)
}

/// The baseline fitted on training token sequences, with what it needs to turn tokens back into
/// scores: the tokens by id, and the training tunes' first pitches.
#[derive(Debug, Clone)]
pub struct Baseline {
    chain: Chain,
    tokens: Vec<u64>,
    starts: Vec<u8>,
}

/// Id of the start-of-tune marker (after every real token id).
fn bos(tokens: &[u64]) -> u32 {
    tokens.len() as u32
}

impl Baseline {
    /// Fits a chain of `order` over `training` (token sequences, see `features::tokens`), each
    /// tune preceded by a start marker; `starts` are first pitches to begin melodies on.
    pub fn fit(training: &[Vec<u64>], starts: Vec<u8>, order: usize) -> Baseline {
        let mut ids: HashMap<u64, u32> = HashMap::new();
        let mut tokens = Vec::new();
        for seq in training {
            for &t in seq {
                ids.entry(t).or_insert_with(|| {
                    tokens.push(t);
                    (tokens.len() - 1) as u32
                });
            }
        }
        let start = bos(&tokens);
        let mut stream = Vec::new();
        for seq in training {
            stream.push(start);
            stream.extend(seq.iter().map(|t| ids[t]));
        }
        // α = 1: the middle of the grid `Markov::fit_tuned` searches; tuning it would need
        // another held-out set, and the baseline only has to be a reasonable chain.
        let chain = Chain::fit(&stream, order, tokens.len() + 1, 1.0);
        Baseline { chain, tokens, starts }
    }

    /// One melody of `len` notes in `meter`: a start pitch drawn from the training tunes, then
    /// drawn (interval, duration) tokens laid end to end. Pitches that would leave 36..=96 are
    /// folded back by octaves.
    pub fn sample<R: Rng>(&self, len: usize, meter: Meter, rng: &mut R) -> Score {
        let start = bos(&self.tokens);
        let mut history = vec![start];
        let mut pitch = self.starts.get(rng.gen_range(0..self.starts.len().max(1))).copied().unwrap_or(67) as i32;
        let mut score = Score::new();
        score.meta.meters.push((0, meter));
        let mut t: Tick = 0;
        let first_dur = crate::time::PPQ as Tick / 2;
        score.notes.push(Note::new(0, first_dur, pitch as u8));
        t += first_dur;
        while score.notes.len() < len && !self.tokens.is_empty() {
            let id = self.chain.draw(&history, rng);
            if id == start {
                continue; // the marker only begins tunes; draw again
            }
            history.push(id);
            if history.len() > 8 {
                history.drain(..history.len() - 4);
            }
            let (interval, dur) = super::features::untoken(self.tokens[id as usize]);
            pitch += interval;
            while pitch > 96 {
                pitch -= 12;
            }
            while pitch < 36 {
                pitch += 12;
            }
            let dur = dur.max(1);
            score.notes.push(Note::new(t, dur, pitch as u8));
            t += dur;
        }
        score.normalize();
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::markov::Markov;
    use rand::SeedableRng;

    #[test]
    fn draws_follow_the_markov_model() {
        // The sampler's frequencies match `Markov::prob` on the same stream and α.
        let stream: Vec<u32> = [0, 1, 2, 0, 1, 3, 0, 1, 2, 2, 4, 0, 1, 2].to_vec();
        let (vocab, alpha) = (6, 1.0);
        let m = Markov::fit(&stream, 3, vocab, alpha);
        let c = Chain::fit(&stream, 3, vocab, alpha);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for history in [vec![0u32, 1], vec![2, 2], vec![5, 5, 5]] {
            let n = 200_000;
            let mut freq = vec![0usize; vocab];
            for _ in 0..n {
                freq[c.draw(&history, &mut rng) as usize] += 1;
            }
            for (id, f) in freq.iter().enumerate() {
                let p = m.prob(&history, id as u32);
                assert!((*f as f64 / n as f64 - p).abs() < 0.005, "{history:?} -> {id}: {f} vs {p}");
            }
        }
    }

    #[test]
    fn samples_have_the_asked_length() {
        let training =
            vec![vec![super::super::features::token(2, 240); 20], vec![super::super::features::token(-2, 480); 9]];
        let b = Baseline::fit(&training, vec![60, 62], 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let s = b.sample(30, Meter::new(6, 8), &mut rng);
        assert_eq!(s.notes.len(), 30);
        assert!(s.notes.iter().all(|n| (36..=96).contains(&n.pitch)));
        assert!(s.notes.windows(2).all(|w| w[0].end() == w[1].start));
    }
}
