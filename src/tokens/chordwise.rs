//! Payne's chordwise encoding: one token per grid step naming the set of pitches sounding then.
//!
//! After `<bos>` and the conditioning comes one token per step of `PPQ / steps_per_quarter`
//! ticks up to the score's length, then `<eos>`. A step's token is the set of pitches sounding in
//! it (`Rest`, `Chord_60`, `Chord_60.64.67`); sets the vocabulary lacks become `Chord_<unk>`. The
//! chord list is collected from a corpus ([`Chordwise::from_scores`]): the empty set and every
//! single pitch always, then the most frequent multi-pitch sets up to `max_chords`.
//!
//! Decoding: a pitch present in consecutive steps is one held note; it ends at the first step
//! without it. So what is lost: voices and velocity (merged; notes decode in voice 0 at velocity
//! 80), and a note repeated with no gap merges with the one before. `Chord_<unk>` decodes as a
//! rest step. Any chord may follow any chord; `<eos>` may come at any step.

use super::condition::{CondSpec, CondTable, Header};
use super::{
    mask_by, prefix_ids, prefix_tokens, Conditioning, Decoded, Decoder, DecoderState, Encoding, Sounding, TokenError,
    TokenKind, Vocab, DEFAULT_VELOCITY, EOS,
};
use crate::score::{Note, Score};
use crate::time::{Meter, Tick, PPQ};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// Settings of a chordwise vocabulary (stored in `vocab.json`, chords included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ChordwiseConfig {
    /// Grid steps per quarter note; must divide [`PPQ`] (480).
    pub steps_per_quarter: u32,
    pub pitch_lo: u8,
    pub pitch_hi: u8,
    /// Most chord tokens (multi-pitch sets) kept when collecting from a corpus.
    pub max_chords: usize,
    /// The multi-pitch sets with a token, each sorted ascending (filled by `from_scores`).
    pub chords: Vec<Vec<u8>>,
    pub cond: CondSpec,
}

impl Default for ChordwiseConfig {
    fn default() -> Self {
        ChordwiseConfig {
            steps_per_quarter: 4,
            pitch_lo: 21,
            pitch_hi: 108,
            max_chords: 2000,
            chords: Vec::new(),
            cond: CondSpec::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    cfg: ChordwiseConfig,
    vocab: Vocab,
    kinds: Vec<TokenKind>,
    cond: CondTable,
    step: Tick,
    unk: u32,
    index: HashMap<Vec<u8>, u32>,
}

/// The chordwise encoding (see the module docs).
#[derive(Debug, Clone)]
pub struct Chordwise {
    inner: Arc<Inner>,
}

impl Chordwise {
    pub fn new(cfg: ChordwiseConfig) -> Result<Self, TokenError> {
        let bad = |r: String| TokenError::Other(format!("chordwise settings: {r}"));
        let step = super::check_grid("chordwise", cfg.steps_per_quarter, cfg.pitch_lo, cfg.pitch_hi)?;
        for c in &cfg.chords {
            if c.len() < 2
                || c.windows(2).any(|w| w[0] >= w[1])
                || c.iter().any(|&p| p < cfg.pitch_lo || p > cfg.pitch_hi)
            {
                return Err(bad(format!("chord {c:?} must hold 2+ ascending pitches inside the range")));
            }
        }
        let cond = CondTable::new(&cfg.cond);
        let (mut tokens, mut kinds) = prefix_tokens(&cond);
        let unk = tokens.len() as u32;
        tokens.push("Chord_<unk>".into());
        kinds.push(TokenKind::ChordUnk);
        let mut index = HashMap::new();
        let singles = (cfg.pitch_lo..=cfg.pitch_hi).map(|p| vec![p]);
        for set in std::iter::once(Vec::new()).chain(singles).chain(cfg.chords.iter().cloned()) {
            if index.contains_key(&set) {
                return Err(bad(format!("chord {set:?} is listed twice")));
            }
            index.insert(set.clone(), tokens.len() as u32);
            tokens.push(chord_name(&set));
            kinds.push(TokenKind::Chord(set));
        }
        let vocab = Vocab::with_settings("chordwise", serde_json::to_value(&cfg).unwrap_or_default(), tokens);
        Ok(Chordwise { inner: Arc::new(Inner { cfg, vocab, kinds, cond, step, unk, index }) })
    }

    /// A vocabulary whose chords are the `max_chords` most frequent multi-pitch sets in `scores`
    /// (ties broken by the sets themselves, so the result does not depend on score order).
    pub fn from_scores(mut cfg: ChordwiseConfig, scores: &[Score]) -> Result<Self, TokenError> {
        let step = (PPQ / cfg.steps_per_quarter.max(1)) as Tick;
        let mut counts: HashMap<Vec<u8>, usize> = HashMap::new();
        for s in scores {
            for set in steps(s, step, cfg.pitch_lo, cfg.pitch_hi) {
                if set.len() >= 2 {
                    *counts.entry(set).or_insert(0) += 1;
                }
            }
        }
        let mut by_count: Vec<(Vec<u8>, usize)> = counts.into_iter().collect();
        by_count.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        cfg.chords = by_count.into_iter().take(cfg.max_chords).map(|(c, _)| c).collect();
        Chordwise::new(cfg)
    }

    pub fn config(&self) -> &ChordwiseConfig {
        &self.inner.cfg
    }
}

fn chord_name(set: &[u8]) -> String {
    if set.is_empty() {
        "Rest".into()
    } else {
        let p: Vec<String> = set.iter().map(|p| p.to_string()).collect();
        format!("Chord_{}", p.join("."))
    }
}

/// The sorted set of pitches (in range) sounding in each grid step up to the score's length.
fn steps(score: &Score, step: Tick, lo: u8, hi: u8) -> Vec<Vec<u8>> {
    let snap = |x: Tick| (x + step / 2) / step;
    let end = snap(score.length).max(score.notes.iter().map(|n| snap(n.end())).max().unwrap_or(0)) as usize;
    let mut sets = vec![Vec::new(); end];
    for n in &score.notes {
        if n.pitch < lo || n.pitch > hi {
            continue;
        }
        let s = snap(n.start) as usize;
        let e = (snap(n.end()) as usize).max(s + 1).min(end);
        for set in &mut sets[s.min(end)..e] {
            set.push(n.pitch);
        }
    }
    for set in &mut sets {
        set.sort_unstable();
        set.dedup();
    }
    sets
}

impl Encoding for Chordwise {
    fn name(&self) -> &'static str {
        "chordwise"
    }

    encoding_tables!();

    fn encode(&self, score: &Score) -> Vec<u32> {
        let t = &self.inner;
        let mut ids = prefix_ids(&t.cond, &Conditioning::from_score(score));
        for set in steps(score, t.step, t.cfg.pitch_lo, t.cfg.pitch_hi) {
            ids.push(t.index.get(&set).copied().unwrap_or(t.unk));
        }
        ids.push(EOS);
        ids
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(ChordwiseDecoder {
            t: self.inner.clone(),
            header: Header::default(),
            pos: 0,
            open: Vec::new(),
            notes: Vec::new(),
            ended: false,
            skipped: 0,
        })
    }
}

#[derive(Debug, Clone)]
struct ChordwiseDecoder {
    t: Arc<Inner>,
    header: Header,
    pos: Tick,
    /// (pitch, start) of notes sounding in the last step.
    open: Vec<(u8, Tick)>,
    notes: Vec<Note>,
    ended: bool,
    skipped: usize,
}

impl ChordwiseDecoder {
    fn accepts(&self, kind: &TokenKind) -> bool {
        match kind {
            _ if self.ended => false,
            TokenKind::Bos | TokenKind::Cond(_) => self.header.accepts(kind),
            TokenKind::Chord(_) | TokenKind::ChordUnk | TokenKind::Eos => true,
            _ => false,
        }
    }

    fn meter(&self) -> Meter {
        self.t.cond.effective_meter(self.header.cond.meter)
    }

    /// Ends every open note not in `keep` at the current position.
    fn close_except(&mut self, keep: &[u8]) -> Vec<Note> {
        let pos = self.pos;
        let mut done = Vec::new();
        self.open.retain(|&(pitch, start)| {
            if keep.contains(&pitch) {
                return true;
            }
            done.push(Note {
                start,
                dur: pos - start,
                pitch,
                velocity: DEFAULT_VELOCITY,
                channel: 0,
                voice: 0,
                program: 0,
            });
            false
        });
        self.notes.extend(&done);
        done
    }
}

impl Decoder for ChordwiseDecoder {
    fn push(&mut self, id: u32) -> Vec<Note> {
        let t = self.t.clone();
        let Some(kind) = t.kinds.get(id as usize).filter(|k| self.accepts(k)) else {
            self.skipped += 1;
            return Vec::new();
        };
        match kind {
            TokenKind::Bos | TokenKind::Cond(_) => {
                self.header.push(kind, &t.cond);
                Vec::new()
            }
            TokenKind::Chord(set) => {
                self.header.end();
                let done = self.close_except(set);
                for &p in set {
                    if !self.open.iter().any(|o| o.0 == p) {
                        self.open.push((p, self.pos));
                    }
                }
                self.pos += t.step;
                done
            }
            TokenKind::ChordUnk => {
                self.header.end();
                let done = self.close_except(&[]);
                self.pos += t.step;
                done
            }
            TokenKind::Eos => {
                self.header.end();
                self.ended = true;
                self.close_except(&[])
            }
            _ => Vec::new(),
        }
    }

    fn position(&self) -> Tick {
        self.pos
    }

    fn bars(&self) -> u32 {
        (self.pos / self.meter().bar_ticks().max(1)) as u32
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn mask(&self, out: &mut [bool]) {
        mask_by(&self.t.kinds, out, |k| self.accepts(k));
    }

    fn state(&self) -> DecoderState {
        let bar = self.meter().bar_ticks().max(1);
        DecoderState {
            position: self.pos,
            bar_start: Some(self.pos - self.pos % bar),
            bar_ticks: bar,
            bars: self.bars(),
            // Open notes sound up to now; whether they go on is the next token's choice.
            sounding: self
                .open
                .iter()
                .map(|&(pitch, start)| Sounding { pitch, voice: 0, start, end: Some(self.pos) })
                .collect(),
            in_prefix: !self.header.done,
            ended: self.ended,
        }
    }

    fn box_clone(&self) -> Box<dyn Decoder> {
        Box::new(self.clone())
    }

    fn finish(self: Box<Self>) -> Decoded {
        let mut d = *self;
        d.close_except(&[]);
        let mut score = Score::new();
        d.header.cond.apply_to(&mut score.meta);
        score.notes = d.notes;
        score.length = d.pos;
        score.normalize();
        Decoded { score, skipped: d.skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_become_chords_and_back() {
        let mut s = Score::new();
        // A C major triad for a quarter, then D alone for an eighth, then an eighth rest.
        s.notes = vec![Note::new(0, 480, 60), Note::new(0, 480, 64), Note::new(0, 480, 67), Note::new(480, 240, 62)];
        s.length = 960;
        s.normalize();
        let c = Chordwise::from_scores(ChordwiseConfig::default(), std::slice::from_ref(&s)).expect("config");
        assert_eq!(c.config().chords, vec![vec![60, 64, 67]]);
        let ids = c.encode(&s);
        let text: Vec<&str> = ids[7..].iter().map(|&i| c.vocab().token(i).unwrap_or("?")).collect();
        assert_eq!(
            text.join(" "),
            "Chord_60.64.67 Chord_60.64.67 Chord_60.64.67 Chord_60.64.67 Chord_62 Chord_62 Rest Rest <eos>"
        );
        let d = c.decode(&ids);
        assert_eq!(d.skipped, 0);
        assert_eq!(d.score.notes, s.notes);
        // A set the vocabulary lacks is <unk> and decodes as a rest.
        let mut other = s.clone();
        other.notes.push(Note::new(0, 120, 72));
        let ids = c.encode(&other);
        assert_eq!(c.vocab().token(ids[7]), Some("Chord_<unk>"));
    }
}
