//! REMI-style events: Bar, Position, Velocity bin, Pitch (with voice), Duration, on a fixed grid.
//!
//! A sequence is `<bos>`, the six conditioning tokens, then for every bar of the score
//! `Bar` [meter change] and, for each onset time in the bar (in time order), `Position_s` once
//! followed by each note starting there (by voice, then pitch): [`Velocity_b`] `Pitch_p`
//! (`Pitch_v<voice>_p` when the encoding has several voices, MuseNet-style combined tokens)
//! `Duration_d`; finally `<eos>`. Positions and durations count grid steps of
//! `PPQ / steps_per_quarter` ticks (12 per quarter by default, so 16ths and triplet 8ths fit).
//!
//! Bars follow the meter of the conditioning prefix (4/4 when it is `<unk>`) and any meter token
//! written right after a `Bar`; the encoder uses exactly the bars the decoder will rebuild, so
//! every note lands back on its tick even when the score's meter is not in the vocabulary.
//!
//! Grammar (the decoder's mask; anything else is skipped and counted): `<bos>` only first;
//! conditioning tokens in category order before the music; nothing but `Bar` (or `<eos>`) starts
//! the music; a meter token only right after `Bar`; `Position` strictly increases inside a bar,
//! stays below the bar's length, and is followed by a note; `Velocity` (when binned) comes before
//! each `Pitch`, `Duration` right after it; `Bar`/`Position`/`<eos>` never cut a note in half.

use super::condition::{CondSpec, CondTable, Header};
use super::{
    bin_velocity, mask_by, prefix_ids, prefix_tokens, velocity_bin, Conditioning, Decoded, Decoder, DecoderState,
    Encoding, Sounding, TokenError, TokenKind, Vocab, DEFAULT_VELOCITY, EOS,
};
use crate::score::{Note, Score, Voice};
use crate::time::{Meter, Tick};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Settings of a REMI vocabulary (stored in `vocab.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemiConfig {
    /// Grid steps per quarter note; must divide [`crate::time::PPQ`] (480).
    pub steps_per_quarter: u32,
    /// Longest duration token, in steps (longer notes are shortened to it).
    pub max_duration_steps: u32,
    /// Velocity bins; 0 writes no velocity tokens (notes decode at velocity 80).
    pub velocity_bins: u32,
    /// Voices with their own pitch tokens; 1 merges every voice into one.
    pub voices: u32,
    /// Names for the decoded voices (`S A T B`); missing names are numbered.
    pub voice_names: Vec<String>,
    /// Lowest and highest pitch with a token (inclusive).
    pub pitch_lo: u8,
    pub pitch_hi: u8,
    pub cond: CondSpec,
}

impl Default for RemiConfig {
    fn default() -> Self {
        RemiConfig {
            steps_per_quarter: 12,
            max_duration_steps: 96,
            velocity_bins: 0,
            voices: 1,
            voice_names: Vec::new(),
            pitch_lo: 0,
            pitch_hi: 127,
            cond: CondSpec::default(),
        }
    }
}

impl RemiConfig {
    /// Four voices (soprano, alto, tenor, bass) over the choir's range, as the chorale model uses.
    pub fn chorale(cond: CondSpec) -> Self {
        RemiConfig {
            voices: 4,
            voice_names: ["S", "A", "T", "B"].map(String::from).to_vec(),
            pitch_lo: 33,
            pitch_hi: 84,
            cond,
            ..Default::default()
        }
    }
}

/// Ids and tables shared by the encoding and its decoders.
#[derive(Debug)]
struct Inner {
    cfg: RemiConfig,
    vocab: Vocab,
    kinds: Vec<TokenKind>,
    cond: CondTable,
    step: Tick,
    bar: u32,
    position0: u32,
    positions: u32,
    velocity0: u32,
    pitch0: u32,
    duration0: u32,
}

/// The REMI encoding (see the module docs).
#[derive(Debug, Clone)]
pub struct Remi {
    inner: Arc<Inner>,
}

impl Remi {
    /// Builds the vocabulary for `cfg`; fails on settings that cannot work (a grid that does not
    /// divide the PPQ, an empty pitch range, a meter whose bar is off the grid ...).
    pub fn new(cfg: RemiConfig) -> Result<Self, TokenError> {
        let bad = |r: String| TokenError::Other(format!("remi settings: {r}"));
        let step = super::check_grid("remi", cfg.steps_per_quarter, cfg.pitch_lo, cfg.pitch_hi)?;
        if !(1..=16).contains(&cfg.voices) {
            return Err(bad(format!("voices {} must be 1..=16", cfg.voices)));
        }
        if cfg.velocity_bins > 127 || !(1..=4096).contains(&cfg.max_duration_steps) {
            return Err(bad("velocity_bins must be at most 127 and max_duration_steps 1..=4096".into()));
        }
        let cond = CondTable::new(&cfg.cond);
        let mut max_bar = Meter::default().bar_ticks();
        for &(n, d) in &cond.spec.meters {
            let m = Meter::new(n, d);
            if d == 0 || n == 0 || !m.bar_ticks().is_multiple_of(step) || m.bar_ticks() == 0 {
                return Err(bad(format!("meter {n}/{d} does not fill whole grid steps")));
            }
            max_bar = max_bar.max(m.bar_ticks());
        }
        let (mut tokens, mut kinds) = prefix_tokens(&cond);
        let bar = tokens.len() as u32;
        tokens.push("Bar".into());
        kinds.push(TokenKind::Bar);
        let position0 = tokens.len() as u32;
        let positions = (max_bar / step) as u32;
        for s in 0..positions {
            tokens.push(format!("Position_{s}"));
            kinds.push(TokenKind::Position(s as Tick * step));
        }
        let velocity0 = tokens.len() as u32;
        for b in 0..cfg.velocity_bins {
            tokens.push(format!("Velocity_{b}"));
            kinds.push(TokenKind::Velocity(bin_velocity(b, cfg.velocity_bins)));
        }
        let pitch0 = tokens.len() as u32;
        for v in 0..cfg.voices {
            for p in cfg.pitch_lo..=cfg.pitch_hi {
                tokens.push(if cfg.voices > 1 { format!("Pitch_v{v}_{p}") } else { format!("Pitch_{p}") });
                kinds.push(TokenKind::Pitch { pitch: p, voice: v as u8 });
            }
        }
        let duration0 = tokens.len() as u32;
        for d in 1..=cfg.max_duration_steps {
            tokens.push(format!("Duration_{d}"));
            kinds.push(TokenKind::Duration(d as Tick * step));
        }
        let settings = serde_json::to_value(&cfg).unwrap_or_default();
        let vocab = Vocab::with_settings("remi", settings, tokens);
        Ok(Remi {
            inner: Arc::new(Inner {
                cfg,
                vocab,
                kinds,
                cond,
                step,
                bar,
                position0,
                positions,
                velocity0,
                pitch0,
                duration0,
            }),
        })
    }

    pub fn config(&self) -> &RemiConfig {
        &self.inner.cfg
    }
}

impl Inner {
    fn pitch_id(&self, pitch: u8, voice: u8) -> Option<u32> {
        let c = &self.cfg;
        if pitch < c.pitch_lo || pitch > c.pitch_hi {
            return None;
        }
        let v = if c.voices == 1 { 0 } else { voice as u32 };
        if v >= c.voices {
            return None;
        }
        let span = (c.pitch_hi - c.pitch_lo) as u32 + 1;
        Some(self.pitch0 + v * span + (pitch - c.pitch_lo) as u32)
    }
}

impl Encoding for Remi {
    fn name(&self) -> &'static str {
        "remi"
    }

    encoding_tables!();

    fn encode(&self, score: &Score) -> Vec<u32> {
        let t = &self.inner;
        let step = t.step;
        let cond = Conditioning::from_score(score);
        let mut ids = prefix_ids(&t.cond, &cond);
        let snap = |x: Tick| (x + step / 2) / step * step;
        // (start, voice, pitch, dur, velocity) of every note the vocabulary can express.
        let mut notes: Vec<(Tick, u8, u8, Tick, u8)> = score
            .notes
            .iter()
            .filter_map(|n| {
                let voice = if t.cfg.voices == 1 { 0 } else { n.voice };
                t.pitch_id(n.pitch, voice)?;
                let start = snap(n.start);
                let dur =
                    (snap(n.start + n.dur).saturating_sub(start)).clamp(step, t.cfg.max_duration_steps as Tick * step);
                Some((start, voice, n.pitch, dur, n.velocity))
            })
            .collect();
        notes.sort_unstable();
        let end = snap(score.length).max(notes.last().map_or(0, |n| n.0 + 1));
        let mut meter = t.cond.effective_meter(cond.meter);
        let mut bar_start: Tick = 0;
        let mut i = 0;
        let mut first = true;
        while bar_start < end {
            ids.push(t.bar);
            if !first {
                // A meter change the vocabulary can write takes effect at this bar.
                if let Some((id, m)) = t.cond.meter_change(score.meter_at(bar_start), meter) {
                    meter = m;
                    ids.push(id);
                }
            }
            first = false;
            let bar_end = bar_start + meter.bar_ticks();
            let mut last_pos = None;
            while i < notes.len() && notes[i].0 < bar_end {
                let (start, voice, pitch, dur, vel) = notes[i];
                i += 1;
                let s = ((start - bar_start) / step) as u32;
                if s >= t.positions {
                    continue;
                }
                if last_pos != Some(s) {
                    ids.push(t.position0 + s);
                    last_pos = Some(s);
                }
                if t.cfg.velocity_bins > 0 {
                    ids.push(t.velocity0 + velocity_bin(vel, t.cfg.velocity_bins));
                }
                ids.extend(t.pitch_id(pitch, voice));
                ids.push(t.duration0 + (dur / step) as u32 - 1);
            }
            bar_start = bar_end;
        }
        ids.push(EOS);
        ids
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(RemiDecoder::new(self.inner.clone()))
    }
}

/// What the last accepted music token was (the grammar's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Prefix,
    Bar,
    Meter,
    Position,
    Velocity,
    Pitch,
    Duration,
}

/// Incremental REMI decoder.
#[derive(Debug, Clone)]
struct RemiDecoder {
    t: Arc<Inner>,
    header: Header,
    after: After,
    meter: Meter,
    bar_start: Option<Tick>,
    bar_tokens: u32,
    /// Position inside the current bar, once one was given.
    pos: Option<Tick>,
    velocity: u8,
    pending: Option<(u8, u8)>,
    notes: Vec<Note>,
    /// Notes that may still sound at the position (pruned as time moves).
    active: Vec<Sounding>,
    meters: Vec<(Tick, Meter)>,
    ended: bool,
    skipped: usize,
}

impl RemiDecoder {
    fn new(t: Arc<Inner>) -> Self {
        RemiDecoder {
            t,
            header: Header::default(),
            after: After::Prefix,
            meter: Meter::default(),
            bar_start: None,
            bar_tokens: 0,
            pos: None,
            velocity: DEFAULT_VELOCITY,
            pending: None,
            notes: Vec::new(),
            active: Vec::new(),
            meters: Vec::new(),
            ended: false,
            skipped: 0,
        }
    }

    fn note_open(&self) -> bool {
        matches!(self.after, After::Velocity | After::Pitch)
    }

    fn accepts(&self, kind: &TokenKind) -> bool {
        if self.ended {
            return false;
        }
        let binned = self.t.cfg.velocity_bins > 0;
        match kind {
            TokenKind::Bos => self.header.accepts(kind),
            TokenKind::Cond(c) => {
                if self.after == After::Prefix {
                    self.header.accepts(kind)
                } else {
                    self.after == After::Bar && c.category == super::Category::Meter && c.value.is_some()
                }
            }
            TokenKind::Eos | TokenKind::Bar => !self.note_open(),
            TokenKind::Position(p) => {
                self.bar_start.is_some()
                    && matches!(self.after, After::Bar | After::Meter | After::Duration)
                    && *p < self.meter.bar_ticks()
                    && self.pos.is_none_or(|q| *p > q)
            }
            TokenKind::Velocity(_) => binned && matches!(self.after, After::Position | After::Duration),
            TokenKind::Pitch { .. } => {
                if binned {
                    self.after == After::Velocity
                } else {
                    matches!(self.after, After::Position | After::Duration)
                }
            }
            TokenKind::Duration(_) => self.after == After::Pitch,
            _ => false,
        }
    }

    fn here(&self) -> Tick {
        self.bar_start.unwrap_or(0) + self.pos.unwrap_or(0)
    }

    fn prune(&mut self) {
        let now = self.here();
        self.active.retain(|s| s.end.is_none_or(|e| e > now));
    }

    fn take(&mut self, kind: &TokenKind) -> Option<Note> {
        match kind {
            TokenKind::Bos => self.header.push(kind, &self.t.cond),
            TokenKind::Cond(c) if self.after == After::Prefix => {
                let _ = c;
                self.header.push(kind, &self.t.cond)
            }
            TokenKind::Cond(c) => {
                if let Some(m) = c.value.and_then(|v| self.t.cond.meter(v)) {
                    self.meter = m;
                    self.meters.push((self.bar_start.unwrap_or(0), m));
                }
                self.after = After::Meter;
            }
            TokenKind::Bar => {
                if self.after == After::Prefix {
                    self.header.end();
                }
                match self.bar_start {
                    None => {
                        self.meter = self.t.cond.effective_meter(self.header.cond.meter);
                        self.bar_start = Some(0);
                    }
                    Some(b) => self.bar_start = Some(b + self.meter.bar_ticks()),
                }
                self.bar_tokens += 1;
                self.pos = None;
                self.after = After::Bar;
                self.prune();
            }
            TokenKind::Position(p) => {
                self.pos = Some(*p);
                self.after = After::Position;
                self.prune();
            }
            TokenKind::Velocity(v) => {
                self.velocity = *v;
                self.after = After::Velocity;
            }
            TokenKind::Pitch { pitch, voice } => {
                self.pending = Some((*pitch, *voice));
                self.after = After::Pitch;
            }
            TokenKind::Duration(d) => {
                self.after = After::Duration;
                let (pitch, voice) = self.pending.take()?;
                let velocity = if self.t.cfg.velocity_bins > 0 { self.velocity } else { DEFAULT_VELOCITY };
                let start = self.here();
                let note = Note { start, dur: *d, pitch, velocity, channel: voice.min(15), voice, program: 0 };
                self.notes.push(note);
                self.active.push(Sounding { pitch, voice, start, end: Some(start + d) });
                return Some(note);
            }
            TokenKind::Eos => {
                if self.after == After::Prefix {
                    self.header.end();
                }
                self.ended = true;
            }
            _ => {}
        }
        None
    }
}

impl Decoder for RemiDecoder {
    fn push(&mut self, id: u32) -> Vec<Note> {
        let t = self.t.clone();
        match t.kinds.get(id as usize) {
            Some(kind) if self.accepts(kind) => self.take(kind).into_iter().collect(),
            _ => {
                self.skipped += 1;
                Vec::new()
            }
        }
    }

    fn position(&self) -> Tick {
        self.here()
    }

    fn bars(&self) -> u32 {
        self.bar_tokens.saturating_sub(1)
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn mask(&self, out: &mut [bool]) {
        mask_by(&self.t.kinds, out, |k| self.accepts(k));
    }

    fn state(&self) -> DecoderState {
        let mut sounding = self.active.clone();
        if let Some((pitch, voice)) = self.pending {
            sounding.push(Sounding { pitch, voice, start: self.here(), end: None });
        }
        DecoderState {
            position: self.here(),
            bar_start: self.bar_start,
            bar_ticks: if self.bar_start.is_some() {
                self.meter.bar_ticks()
            } else {
                self.t.cond.effective_meter(self.header.cond.meter).bar_ticks()
            },
            bars: self.bars(),
            sounding,
            in_prefix: self.after == After::Prefix,
            ended: self.ended,
        }
    }

    fn box_clone(&self) -> Box<dyn Decoder> {
        Box::new(self.clone())
    }

    fn finish(self: Box<Self>) -> Decoded {
        let d = *self;
        let mut score = Score::new();
        d.header.cond.apply_to(&mut score.meta);
        super::apply_meter_changes(&mut score.meta, &d.meters, d.t.cond.effective_meter(d.header.cond.meter));
        if d.t.cfg.voices > 1 {
            score.voices = (0..d.t.cfg.voices as usize)
                .map(|v| Voice {
                    name: d.t.cfg.voice_names.get(v).cloned().unwrap_or_else(|| (v + 1).to_string()),
                    channel: v.min(15) as u8,
                    program: 0,
                })
                .collect();
        }
        score.notes = d.notes;
        score.length = d.bar_start.map_or(0, |b| b + d.meter.bar_ticks());
        score.normalize();
        // A pitch still waiting for its duration is an unfinished note: it counts as skipped.
        let skipped = d.skipped + d.pending.map_or(0, |_| if d.after == After::Pitch { 1 } else { 0 });
        Decoded { score, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Key, Mode};

    fn tune() -> Score {
        let mut s = Score::new();
        // 6/8: a dotted-quarter, two eighths, a triplet-ish 16th pair, across two bars.
        for (start, dur, p) in [(0, 720, 62), (720, 240, 64), (960, 240, 66), (1440, 120, 67), (1560, 1320, 69)] {
            s.notes.push(Note::new(start, dur, p));
        }
        s.meta.meters.push((0, Meter::new(6, 8)));
        s.meta.keys.push((0, Key::new(1, 0, Mode::Major)));
        s.meta.style = Some("irish".into());
        s.length = 2880;
        s.normalize();
        s
    }

    #[test]
    fn tokens_read_as_expected() {
        let r = Remi::new(RemiConfig::default()).expect("default config");
        let ids = r.encode(&tune());
        let text: Vec<&str> = ids.iter().map(|&i| r.vocab().token(i).unwrap_or("?")).collect();
        assert_eq!(
            text.join(" "),
            "<bos> style:irish composer:<unk> instrument:<unk> key:D meter:6/8 tempo:108-126 \
             Bar Position_0 Pitch_62 Duration_18 Position_18 Pitch_64 Duration_6 Position_24 Pitch_66 Duration_6 \
             Bar Position_0 Pitch_67 Duration_3 Position_3 Pitch_69 Duration_33 <eos>"
        );
        let d = r.decode(&ids);
        assert_eq!(d.skipped, 0);
        assert_eq!(d.score.notes, tune().notes);
        assert_eq!(d.score.length, 2880);
        assert_eq!(d.score.meter(), Meter::new(6, 8));
        assert_eq!(d.score.meta.style.as_deref(), Some("irish"));
    }

    #[test]
    fn decoder_yields_notes_at_their_duration_and_counts_bars() {
        let r = Remi::new(RemiConfig::default()).expect("default config");
        let ids = r.encode(&tune());
        let mut d = r.decoder();
        let mut seen = Vec::new();
        for &id in &ids {
            let before = r.kind(id).cloned();
            let notes = d.push(id);
            if matches!(before, Some(TokenKind::Duration(_))) {
                assert_eq!(notes.len(), 1);
            } else {
                assert!(notes.is_empty());
            }
            seen.extend(notes);
        }
        assert_eq!(d.bars(), 1);
        assert_eq!(seen, tune().notes);
    }

    #[test]
    fn invalid_successions_are_skipped() {
        let r = Remi::new(RemiConfig::default()).expect("default config");
        let v = r.vocab();
        let id = |s: &str| v.id(s).expect(s);
        // Pitch before any bar, duration without pitch, position going backwards, id past the end.
        let ids = [
            id("Pitch_60"),
            id("Bar"),
            id("Duration_4"),
            id("Position_12"),
            id("Pitch_60"),
            id("Duration_12"),
            id("Position_0"),
            9999,
            id("Position_24"),
            id("Pitch_62"),
            id("Duration_12"),
        ];
        let d = r.decode(&ids);
        assert_eq!(d.skipped, 4);
        assert_eq!(d.score.notes, vec![Note::new(480, 480, 60), Note::new(960, 480, 62)]);
    }
}
