//! Novelty: how much of a take is copied from the training tunes. For each take, the longest
//! run of consecutive notes (as (interval, duration) tokens, see `features::tokens`) that also
//! occurs in some training tune, and whether it shares a whole n-gram (16 notes by default).
//!
//! Linear in the sizes: one suffix automaton of all training tunes answers "longest run" for a
//! take in one pass over the take, and a hash set of every training n-gram answers "copied
//! n-gram"; no take is ever compared with each training tune.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

/// Marks the border between two training tunes: no take contains it, so no run crosses it.
const SEP: u32 = u32::MAX;
const NONE: u32 = u32::MAX;

/// A suffix automaton (Blumer et al. 1985) over dense symbol ids. State 0 is the root.
/// Transitions live in one hash map keyed by (state, symbol); each state also keeps a linked
/// list of its symbols, because splitting a state ("clone") copies all its transitions.
#[derive(Debug, Default)]
struct SuffixAutomaton {
    len: Vec<u32>,
    link: Vec<u32>,
    trans: HashMap<u64, u32>,
    head: Vec<u32>,
    edge_sym: Vec<u32>,
    edge_next: Vec<u32>,
    last: u32,
}

fn key(state: u32, sym: u32) -> u64 {
    ((state as u64) << 32) | sym as u64
}

impl SuffixAutomaton {
    fn new() -> Self {
        let mut s = SuffixAutomaton::default();
        s.add_state(0, NONE);
        s
    }

    fn add_state(&mut self, len: u32, link: u32) -> u32 {
        self.len.push(len);
        self.link.push(link);
        self.head.push(NONE);
        (self.len.len() - 1) as u32
    }

    fn get(&self, state: u32, sym: u32) -> Option<u32> {
        self.trans.get(&key(state, sym)).copied()
    }

    fn set(&mut self, state: u32, sym: u32, to: u32) {
        if self.trans.insert(key(state, sym), to).is_none() {
            self.edge_sym.push(sym);
            self.edge_next.push(self.head[state as usize]);
            self.head[state as usize] = (self.edge_sym.len() - 1) as u32;
        }
    }

    /// Appends one symbol (the textbook online construction).
    fn extend(&mut self, sym: u32) {
        let cur = self.add_state(self.len[self.last as usize] + 1, 0);
        let mut p = self.last;
        while p != NONE && self.get(p, sym).is_none() {
            self.set(p, sym, cur);
            p = self.link[p as usize];
        }
        if p != NONE {
            let q = self.get(p, sym).unwrap_or(0);
            if self.len[p as usize] + 1 == self.len[q as usize] {
                self.link[cur as usize] = q;
            } else {
                let clone = self.add_state(self.len[p as usize] + 1, self.link[q as usize]);
                let mut e = self.head[q as usize];
                while e != NONE {
                    let s = self.edge_sym[e as usize];
                    let to = self.get(q, s).unwrap_or(0);
                    self.set(clone, s, to);
                    e = self.edge_next[e as usize];
                }
                while p != NONE && self.get(p, sym) == Some(q) {
                    self.set(p, sym, clone);
                    p = self.link[p as usize];
                }
                self.link[q as usize] = clone;
                self.link[cur as usize] = clone;
            }
        }
        self.last = cur;
    }
}

/// Everything the training tunes can be matched against.
#[derive(Debug)]
pub struct Index {
    sam: SuffixAutomaton,
    /// Token → dense symbol id (tokens no training tune has are absent).
    ids: HashMap<u64, u32>,
    ngrams: HashSet<u64>,
    n: usize,
}

/// One take's novelty.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Novelty {
    /// Longest run of tokens the take shares with a training tune.
    pub longest: usize,
    /// Share of the take's n-grams that occur in a training tune (`None` if it has none).
    pub copied_ngrams: Option<f64>,
}

fn hash_ngram(window: &[u64]) -> u64 {
    let mut h = DefaultHasher::new();
    window.hash(&mut h);
    h.finish()
}

impl Index {
    /// Indexes the token sequences of the training tunes, with n-grams of length `n`.
    pub fn build(training: &[Vec<u64>], n: usize) -> Index {
        let mut ids: HashMap<u64, u32> = HashMap::new();
        let mut sam = SuffixAutomaton::new();
        let mut ngrams = HashSet::new();
        for seq in training {
            for &t in seq {
                let next = ids.len() as u32;
                let id = *ids.entry(t).or_insert(next);
                sam.extend(id);
            }
            sam.extend(SEP);
            if n > 0 {
                ngrams.extend(seq.windows(n).map(hash_ngram));
            }
        }
        Index { sam, ids, ngrams, n }
    }

    /// Length of the longest run of `seq` that occurs in a training tune (one pass over `seq`).
    pub fn longest_run(&self, seq: &[u64]) -> usize {
        let sam = &self.sam;
        let (mut state, mut len, mut best) = (0u32, 0usize, 0usize);
        for t in seq {
            let Some(&sym) = self.ids.get(t) else {
                (state, len) = (0, 0);
                continue;
            };
            while state != 0 && sam.get(state, sym).is_none() {
                state = sam.link[state as usize];
                len = sam.len[state as usize] as usize;
            }
            match sam.get(state, sym) {
                Some(to) => {
                    state = to;
                    len += 1;
                }
                None => (state, len) = (0, 0),
            }
            best = best.max(len);
        }
        best
    }

    /// Both measures for one take.
    pub fn novelty(&self, seq: &[u64]) -> Novelty {
        let windows = if self.n == 0 { 0 } else { seq.len().saturating_sub(self.n - 1) };
        let copied_ngrams = (windows > 0).then(|| {
            seq.windows(self.n).filter(|w| self.ngrams.contains(&hash_ngram(w))).count() as f64 / windows as f64
        });
        Novelty { longest: self.longest_run(seq), copied_ngrams }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The longest common run by brute force, for checking the automaton.
    fn brute(training: &[Vec<u64>], seq: &[u64]) -> usize {
        let mut best = 0;
        for t in training {
            for i in 0..seq.len() {
                for j in 0..t.len() {
                    let mut k = 0;
                    while i + k < seq.len() && j + k < t.len() && seq[i + k] == t[j + k] {
                        k += 1;
                    }
                    best = best.max(k);
                }
            }
        }
        best
    }

    #[test]
    fn runs_on_hand_made_sequences() {
        let training = vec![vec![1, 2, 3, 4, 5], vec![7, 8, 9]];
        let idx = Index::build(&training, 3);
        assert_eq!(idx.longest_run(&[9, 1, 2, 3, 8, 9, 7]), 3);
        // 5 | 7 8: tune borders are not crossed.
        assert_eq!(idx.longest_run(&[5, 7, 8]), 2);
        assert_eq!(idx.longest_run(&[42, 43]), 0);
        assert_eq!(idx.longest_run(&[]), 0);
        let n = idx.novelty(&[1, 2, 3, 4, 6, 2, 3, 4]);
        // Windows 123 234 346 462 623 234: three of six are training 3-grams.
        assert_eq!(n, Novelty { longest: 4, copied_ngrams: Some(0.5) });
        assert_eq!(idx.novelty(&[1, 2]).copied_ngrams, None);
    }

    #[test]
    fn automaton_agrees_with_brute_force() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..40 {
            let training: Vec<Vec<u64>> = (0..rng.gen_range(1..5))
                .map(|_| (0..rng.gen_range(0..30)).map(|_| rng.gen_range(0..3)).collect())
                .collect();
            let idx = Index::build(&training, 4);
            for _ in 0..10 {
                let seq: Vec<u64> = (0..rng.gen_range(0..25)).map(|_| rng.gen_range(0..4)).collect();
                assert_eq!(idx.longest_run(&seq), brute(&training, &seq), "{training:?} {seq:?}");
            }
        }
    }
}
