//! Payne's notewise encoding: note-on p, note-off p and wait-N-steps tokens on a fixed grid.
//!
//! After `<bos>` and the conditioning, time is written as events in order: at each grid time the
//! note-offs that happen there (by pitch), then the note-ons (by voice, then pitch), then a wait
//! to the next event time (`Wait_n`, n = 1..=`max_wait_steps`; longer gaps chain several
//! waits). The music ends with a wait up to the score's length and `<eos>`. With `voices > 1` the
//! note tokens carry the voice (`NoteOn_v1_60`), otherwise every voice is merged.
//!
//! What is lost: velocity (notes decode at 80), meter changes (bars follow the conditioning
//! meter), and a note that starts while the same pitch still sounds in the same voice ends the
//! earlier one there (notewise has no way to say which of two equal pitches stops).
//!
//! Grammar: a note-on only for a pitch not sounding in that voice; a note-off only for a sounding
//! pitch that started before now (no zero-length notes); `<eos>` only when nothing sounds.

use super::condition::{CondSpec, CondTable, Header};
use super::{
    mask_by, prefix_ids, prefix_tokens, Conditioning, Decoded, Decoder, DecoderState, Encoding, Sounding, TokenError,
    TokenKind, Vocab, DEFAULT_VELOCITY, EOS,
};
use crate::score::{Note, Score, Voice};
use crate::time::{Meter, Tick};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings of a notewise vocabulary (stored in `vocab.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NotewiseConfig {
    /// Grid steps per quarter note; must divide [`crate::time::PPQ`] (480).
    pub steps_per_quarter: u32,
    /// Longest single wait token, in steps.
    pub max_wait_steps: u32,
    /// Voices with their own note tokens; 1 merges every voice.
    pub voices: u32,
    pub pitch_lo: u8,
    pub pitch_hi: u8,
    pub cond: CondSpec,
}

impl Default for NotewiseConfig {
    fn default() -> Self {
        NotewiseConfig {
            steps_per_quarter: 12,
            max_wait_steps: 48,
            voices: 1,
            pitch_lo: 0,
            pitch_hi: 127,
            cond: CondSpec::default(),
        }
    }
}

#[derive(Debug)]
struct Inner {
    cfg: NotewiseConfig,
    vocab: Vocab,
    kinds: Vec<TokenKind>,
    cond: CondTable,
    step: Tick,
    on0: u32,
    off0: u32,
    wait0: u32,
    span: u32,
}

/// The notewise encoding (see the module docs).
#[derive(Debug, Clone)]
pub struct Notewise {
    inner: Arc<Inner>,
}

impl Notewise {
    pub fn new(cfg: NotewiseConfig) -> Result<Self, TokenError> {
        let bad = |r: String| TokenError::Other(format!("notewise settings: {r}"));
        let step = super::check_grid("notewise", cfg.steps_per_quarter, cfg.pitch_lo, cfg.pitch_hi)?;
        if !(1..=16).contains(&cfg.voices) || !(1..=4096).contains(&cfg.max_wait_steps) {
            return Err(bad("voices must be 1..=16 and max_wait_steps 1..=4096".into()));
        }
        let cond = CondTable::new(&cfg.cond);
        let (mut tokens, mut kinds) = prefix_tokens(&cond);
        let span = (cfg.pitch_hi - cfg.pitch_lo) as u32 + 1;
        let name = |what: &str, v: u32, p: u8| {
            if cfg.voices > 1 {
                format!("{what}_v{v}_{p}")
            } else {
                format!("{what}_{p}")
            }
        };
        let on0 = tokens.len() as u32;
        for v in 0..cfg.voices {
            for p in cfg.pitch_lo..=cfg.pitch_hi {
                tokens.push(name("NoteOn", v, p));
                kinds.push(TokenKind::NoteOn { pitch: p, voice: v as u8 });
            }
        }
        let off0 = tokens.len() as u32;
        for v in 0..cfg.voices {
            for p in cfg.pitch_lo..=cfg.pitch_hi {
                tokens.push(name("NoteOff", v, p));
                kinds.push(TokenKind::NoteOff { pitch: p, voice: v as u8 });
            }
        }
        let wait0 = tokens.len() as u32;
        for n in 1..=cfg.max_wait_steps {
            tokens.push(format!("Wait_{n}"));
            kinds.push(TokenKind::Wait(n as Tick * step));
        }
        let vocab = Vocab::with_settings("notewise", serde_json::to_value(&cfg).unwrap_or_default(), tokens);
        Ok(Notewise { inner: Arc::new(Inner { cfg, vocab, kinds, cond, step, on0, off0, wait0, span }) })
    }

    pub fn config(&self) -> &NotewiseConfig {
        &self.inner.cfg
    }
}

impl Inner {
    fn note_index(&self, pitch: u8, voice: u8) -> Option<u32> {
        if pitch < self.cfg.pitch_lo || pitch > self.cfg.pitch_hi {
            return None;
        }
        let v = if self.cfg.voices == 1 { 0 } else { voice as u32 };
        (v < self.cfg.voices).then(|| v * self.span + (pitch - self.cfg.pitch_lo) as u32)
    }

    fn meter(&self, m: Option<Meter>) -> Meter {
        self.cond.effective_meter(m)
    }

    fn waits(&self, mut steps: u64, ids: &mut Vec<u32>) {
        let max = self.cfg.max_wait_steps as u64;
        while steps > 0 {
            let n = steps.min(max);
            ids.push(self.wait0 + n as u32 - 1);
            steps -= n;
        }
    }
}

impl Encoding for Notewise {
    fn name(&self) -> &'static str {
        "notewise"
    }

    encoding_tables!();

    fn encode(&self, score: &Score) -> Vec<u32> {
        let t = &self.inner;
        let step = t.step;
        let mut ids = prefix_ids(&t.cond, &Conditioning::from_score(score));
        let snap = |x: Tick| (x + step / 2) / step;
        // (start step, end step, note index) in start order.
        let mut notes: Vec<(u64, u64, u32)> = score
            .notes
            .iter()
            .filter_map(|n| {
                let i = t.note_index(n.pitch, n.voice)?;
                let s = snap(n.start);
                Some((s, snap(n.start + n.dur).max(s + 1), i))
            })
            .collect();
        notes.sort_unstable();
        // A note that starts while the same pitch sounds ends the earlier one there.
        let mut last: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
        for k in 0..notes.len() {
            if let Some(&j) = last.get(&notes[k].2) {
                if notes[j].1 > notes[k].0 {
                    notes[j].1 = notes[k].0;
                }
            }
            last.insert(notes[k].2, k);
        }
        // Events: (time, 0 = off / 1 = on, index); offs sort before ons at the same time.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(notes.len() * 2);
        for &(s, e, i) in &notes {
            if e > s {
                events.push((s, 1, i));
                events.push((e, 0, i));
            }
        }
        events.sort_unstable();
        let mut now = 0;
        for (time, kind, i) in events {
            t.waits(time - now, &mut ids);
            now = time;
            ids.push(if kind == 1 { t.on0 + i } else { t.off0 + i });
        }
        t.waits(snap(score.length).saturating_sub(now), &mut ids);
        ids.push(EOS);
        ids
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(NotewiseDecoder {
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
struct NotewiseDecoder {
    t: Arc<Inner>,
    header: Header,
    pos: Tick,
    /// (pitch, voice, start) of sounding notes.
    open: Vec<(u8, u8, Tick)>,
    notes: Vec<Note>,
    ended: bool,
    skipped: usize,
}

impl NotewiseDecoder {
    fn accepts(&self, kind: &TokenKind) -> bool {
        if self.ended {
            return false;
        }
        match kind {
            TokenKind::Bos | TokenKind::Cond(_) => self.header.accepts(kind),
            TokenKind::NoteOn { pitch, voice } => !self.open.iter().any(|o| o.0 == *pitch && o.1 == *voice),
            TokenKind::NoteOff { pitch, voice } => {
                self.open.iter().any(|o| o.0 == *pitch && o.1 == *voice && o.2 < self.pos)
            }
            TokenKind::Wait(_) => true,
            TokenKind::Eos => self.open.is_empty(),
            _ => false,
        }
    }

    fn bar_ticks(&self) -> Tick {
        self.t.meter(self.header.cond.meter).bar_ticks().max(1)
    }

    fn close(&mut self, pitch: u8, voice: u8) -> Option<Note> {
        let i = self.open.iter().position(|o| o.0 == pitch && o.1 == voice)?;
        let (pitch, voice, start) = self.open.remove(i);
        let note = Note {
            start,
            dur: self.pos - start,
            pitch,
            velocity: DEFAULT_VELOCITY,
            channel: voice.min(15),
            voice,
            program: 0,
        };
        self.notes.push(note);
        Some(note)
    }
}

impl Decoder for NotewiseDecoder {
    fn push(&mut self, id: u32) -> Vec<Note> {
        let t = self.t.clone();
        let Some(kind) = t.kinds.get(id as usize).filter(|k| self.accepts(k)) else {
            self.skipped += 1;
            return Vec::new();
        };
        match kind {
            TokenKind::Bos | TokenKind::Cond(_) => self.header.push(kind, &t.cond),
            TokenKind::NoteOn { pitch, voice } => {
                self.header.end();
                self.open.push((*pitch, *voice, self.pos));
            }
            TokenKind::NoteOff { pitch, voice } => {
                self.header.end();
                return self.close(*pitch, *voice).into_iter().collect();
            }
            TokenKind::Wait(d) => {
                self.header.end();
                self.pos += d;
            }
            TokenKind::Eos => {
                self.header.end();
                self.ended = true;
            }
            _ => {}
        }
        Vec::new()
    }

    fn position(&self) -> Tick {
        self.pos
    }

    fn bars(&self) -> u32 {
        (self.pos / self.bar_ticks()) as u32
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn mask(&self, out: &mut [bool]) {
        mask_by(&self.t.kinds, out, |k| self.accepts(k));
    }

    fn state(&self) -> DecoderState {
        let bar = self.bar_ticks();
        DecoderState {
            position: self.pos,
            bar_start: Some(self.pos - self.pos % bar),
            bar_ticks: bar,
            bars: self.bars(),
            sounding: self
                .open
                .iter()
                .map(|&(pitch, voice, start)| Sounding { pitch, voice, start, end: None })
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
        // Notes still sounding end where the music stopped (if they lasted at all).
        while let Some(&(pitch, voice, start)) = d.open.first() {
            if start < d.pos {
                d.close(pitch, voice);
            } else {
                d.open.remove(0);
                d.skipped += 1;
            }
        }
        let mut score = Score::new();
        d.header.cond.apply_to(&mut score.meta);
        if d.t.cfg.voices > 1 {
            score.voices = (0..d.t.cfg.voices as u8)
                .map(|v| Voice { name: (v + 1).to_string(), channel: v, program: 0 })
                .collect();
        }
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
    fn events_read_as_payne_writes_them() {
        let n = Notewise::new(NotewiseConfig::default()).expect("config");
        let mut s = Score::new();
        // C4 for a quarter, then E4 and G4 together for a half (a chord), length one 4/4 bar.
        s.notes = vec![Note::new(0, 480, 60), Note::new(480, 960, 64), Note::new(480, 960, 67)];
        s.length = 1920;
        let ids = n.encode(&s);
        let text: Vec<&str> = ids[7..].iter().map(|&i| n.vocab().token(i).unwrap_or("?")).collect();
        assert_eq!(
            text.join(" "),
            "NoteOn_60 Wait_12 NoteOff_60 NoteOn_64 NoteOn_67 Wait_24 NoteOff_64 NoteOff_67 Wait_12 <eos>"
        );
        let d = n.decode(&ids);
        assert_eq!(d.skipped, 0);
        assert_eq!(d.score.notes, s.notes);
        assert_eq!(d.score.length, 1920);
    }
}
