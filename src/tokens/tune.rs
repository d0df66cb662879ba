//! The `tune` encoding: one melody as ABC writes it, with bar lines, repeats and endings as ids.
//!
//! Made for whole folk tunes in a model's context: a note is two ids (`Pitch_p`, `Len_d`), a
//! rest two (`Rest`, `Len_d`), a bar line one, and a repeated strain is written once between
//! repeat signs, as the tune books write it, instead of twice.
//!
//! A sequence is `<bos>`, the six conditioning tokens, then the music: every bar opens with
//! `Bar` (the bar line before it; the first one at tick 0), optionally a meter token (a meter
//! change there), optionally `RepeatEnd` (`:|`, closing the strain), then optionally
//! `RepeatStart` (`|:`), `Ending_1` (`[1`) or `Ending_2` (`[2`), then the bar's notes and rests in
//! time order; finally the closing `Bar` with its own markers, and `<eos>`.
//!
//! Time is sequential, as in ABC: each `Len_d` moves time on by `d` grid steps (12 per quarter by
//! default); bar lines do not move time, so a pickup or a short last bar needs nothing special.
//! The decoder expands repeats in playing order, as abc2midi plays them: at `:|` it plays again
//! the strain since `|:` (up to its `[1` when it has one) and carries on, so a decoded take is
//! the music as heard and the encoder folds it back: [`crate::strains::fold`] finds strains played twice (up to
//! [`MAX_STRAIN_BARS`] bars, with first and second endings of up to [`MAX_ENDING_BARS`] bars),
//! exact to the tick, so `decode(encode(score))` gives the score's melody note for note.
//!
//! Only one line is kept: where notes overlap, the higher of notes starting together wins and a
//! note is cut where the next one starts (folk tunes are melodies; double stops are rare).
//!
//! Grammar (the decoder's mask; anything else is skipped and counted): `<bos>` only first;
//! conditioning in category order before the music; the music starts with `Bar`; `Pitch` and
//! `Rest` are followed by `Len`; `Bar` only after a complete note or rest or another `Bar` (a
//! note held across a whole bar);
//! a meter token only right after `Bar`; `RepeatEnd` only after `Bar` with a strain open;
//! `RepeatStart` only after `Bar`/`RepeatEnd` with no strain open; `Ending_1` once per strain,
//! after `Bar`, once the strain has music; after a `RepeatEnd` that closed a strain with a first
//! ending, `Ending_2` and nothing else; `<eos>` whenever no note is half written and no second
//! ending is owed.

use super::condition::{CondSpec, CondTable, Header};
use super::{
    mask_by, prefix_ids, prefix_tokens, Category, Conditioning, Decoded, Decoder, DecoderState, Encoding, Sounding,
    TokenError, TokenKind, Vocab, DEFAULT_VELOCITY, EOS,
};
use crate::score::{Note, Score};
use crate::time::{Meter, Tick};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::strains::{fold, Segment};
pub use crate::strains::{MAX_ENDING_BARS, MAX_STRAIN_BARS};

/// Settings of a `tune` vocabulary (stored in `vocab.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TuneConfig {
    /// Grid steps per quarter note; must divide [`crate::time::PPQ`] (480).
    pub steps_per_quarter: u32,
    /// Longest `Len` token, in steps (longer notes are cut to it, longer rests split).
    pub max_duration_steps: u32,
    /// Lowest and highest pitch with a token (inclusive).
    pub pitch_lo: u8,
    pub pitch_hi: u8,
    pub cond: CondSpec,
}

impl Default for TuneConfig {
    fn default() -> Self {
        // 33..=96 (A1..C7) holds every folk tune of the corpus transposed by up to ±5 semitones.
        TuneConfig {
            steps_per_quarter: 12,
            max_duration_steps: 96,
            pitch_lo: 33,
            pitch_hi: 96,
            cond: CondSpec::default(),
        }
    }
}

/// Ids and tables shared by the encoding and its decoders.
#[derive(Debug)]
struct Inner {
    cfg: TuneConfig,
    vocab: Vocab,
    kinds: Vec<TokenKind>,
    cond: CondTable,
    step: Tick,
    bar: u32,
    repeat_start: u32,
    repeat_end: u32,
    ending1: u32,
    ending2: u32,
    rest: u32,
    pitch0: u32,
    len0: u32,
}

/// The `tune` encoding (see the module docs).
#[derive(Debug, Clone)]
pub struct Tune {
    inner: Arc<Inner>,
}

impl Tune {
    /// Builds the vocabulary for `cfg`; fails on settings that cannot work.
    pub fn new(cfg: TuneConfig) -> Result<Self, TokenError> {
        let bad = |r: String| TokenError::Other(format!("tune settings: {r}"));
        let step = super::check_grid("tune", cfg.steps_per_quarter, cfg.pitch_lo, cfg.pitch_hi)?;
        if !(1..=4096).contains(&cfg.max_duration_steps) {
            return Err(bad("max_duration_steps must be 1..=4096".into()));
        }
        let cond = CondTable::new(&cfg.cond);
        let (mut tokens, mut kinds) = prefix_tokens(&cond);
        let mut add = |t: String, k: TokenKind| {
            tokens.push(t);
            kinds.push(k);
            (tokens.len() - 1) as u32
        };
        let bar = add("Bar".into(), TokenKind::BarLine);
        let repeat_start = add("RepeatStart".into(), TokenKind::RepeatStart);
        let repeat_end = add("RepeatEnd".into(), TokenKind::RepeatEnd);
        let ending1 = add("Ending_1".into(), TokenKind::Ending(1));
        let ending2 = add("Ending_2".into(), TokenKind::Ending(2));
        let rest = add("Rest".into(), TokenKind::Rest);
        let pitch0 = bar + 6;
        for p in cfg.pitch_lo..=cfg.pitch_hi {
            add(format!("Pitch_{p}"), TokenKind::Pitch { pitch: p, voice: 0 });
        }
        let len0 = pitch0 + (cfg.pitch_hi - cfg.pitch_lo) as u32 + 1;
        for d in 1..=cfg.max_duration_steps {
            add(format!("Len_{d}"), TokenKind::Step(d as Tick * step));
        }
        let settings = serde_json::to_value(&cfg).unwrap_or_default();
        let vocab = Vocab::with_settings("tune", settings, tokens);
        Ok(Tune {
            inner: Arc::new(Inner {
                cfg,
                vocab,
                kinds,
                cond,
                step,
                bar,
                repeat_start,
                repeat_end,
                ending1,
                ending2,
                rest,
                pitch0,
                len0,
            }),
        })
    }

    pub fn config(&self) -> &TuneConfig {
        &self.inner.cfg
    }
}

/// One event of the melody line: a pitch or a rest (`None`), its start and length in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Event {
    pitch: Option<u8>,
    start: Tick,
    dur: Tick,
}

/// The melody of `score` as a gapless line of events on the grid from 0 to its end: the highest
/// of notes starting together, each cut where the next begins, rests filling the gaps (split at
/// `splits`, the bar lines, so a silent bar is a bar of rests).
fn melody(score: &Score, step: Tick, max_dur: Tick, keep: impl Fn(u8) -> bool, splits: &[Tick]) -> Vec<Event> {
    let snap = |x: Tick| (x + step / 2) / step * step;
    let mut starts: Vec<(Tick, u8, Tick)> = score
        .notes
        .iter()
        .filter(|n| keep(n.pitch))
        .map(|n| {
            let s = snap(n.start);
            (s, n.pitch, snap(n.start + n.dur).max(s + step))
        })
        .collect();
    // Highest pitch first among notes that start together.
    starts.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    starts.dedup_by_key(|n| n.0);
    let end = snap(score.length).max(starts.last().map_or(0, |n| n.2));
    let mut out = Vec::with_capacity(starts.len() * 2);
    let mut pos: Tick = 0;
    let push_rest = |out: &mut Vec<Event>, from: Tick, to: Tick| {
        let mut t = from;
        for &b in splits.iter().filter(|&&b| b > from && b < to) {
            out.push(Event { pitch: None, start: t, dur: b - t });
            t = b;
        }
        if to > t {
            out.push(Event { pitch: None, start: t, dur: to - t });
        }
    };
    for (i, &(s, p, e)) in starts.iter().enumerate() {
        if s > pos {
            push_rest(&mut out, pos, s);
        }
        let next = starts.get(i + 1).map_or(Tick::MAX, |n| n.0);
        // Longer than the longest `Len`: the note is cut and a rest fills the time.
        let e = e.min(next).min(s + max_dur);
        out.push(Event { pitch: Some(p), start: s, dur: e - s });
        pos = e;
    }
    if end > pos {
        push_rest(&mut out, pos, end);
    }
    out
}

impl Inner {
    fn pitch_id(&self, pitch: u8) -> Option<u32> {
        (self.cfg.pitch_lo..=self.cfg.pitch_hi)
            .contains(&pitch)
            .then(|| self.pitch0 + (pitch - self.cfg.pitch_lo) as u32)
    }

    /// `Len` ids for `dur` ticks: one, or several for a rest longer than the longest token.
    fn push_len(&self, ids: &mut Vec<u32>, dur: Tick, rest: bool) {
        let max = self.cfg.max_duration_steps as Tick * self.step;
        let mut left = dur;
        loop {
            let d = left.min(max);
            ids.push(self.len0 + (d / self.step) as u32 - 1);
            left -= d;
            if left == 0 || !rest {
                break;
            }
            ids.push(self.rest);
        }
    }
}

impl Encoding for Tune {
    fn name(&self) -> &'static str {
        "tune"
    }

    encoding_tables!();

    fn encode(&self, score: &Score) -> Vec<u32> {
        let t = &self.inner;
        let cond = Conditioning::from_score(score);
        let mut ids = prefix_ids(&t.cond, &cond);
        let mut starts = score.bar_starts();
        if starts.is_empty() {
            starts.push(0);
        }
        let max_dur = t.cfg.max_duration_steps as Tick * t.step;
        let events = melody(score, t.step, max_dur, |p| t.pitch_id(p).is_some(), &starts);
        // No music, no bar lines: an empty prompt must leave the model where every training
        // tune begins, before its first `Bar`. (It was `Bar Bar`, an empty first bar no tune
        // has: the takes then never opened with a pickup or `|:`, and only one in five had a
        // repeated strain where nine in ten Irish tunes have one.)
        if events.is_empty() {
            ids.push(EOS);
            return ids;
        }
        let end = events.last().map_or(0, |e| e.start + e.dur);
        starts.retain(|&s| s < end.max(1));
        // Events by bar: bar b holds the events starting in [starts[b], starts[b + 1]).
        let nbars = starts.len();
        let mut first_event = vec![0usize; nbars + 1];
        let mut clean = vec![true; nbars + 1];
        let mut e = 0;
        for b in 0..nbars {
            while e < events.len() && events[e].start < starts[b] {
                e += 1;
            }
            first_event[b] = e;
            // A note that started before this line and still sounds crosses it.
            clean[b] = e == 0 || events[e - 1].start + events[e - 1].dur <= starts[b];
        }
        first_event[nbars] = events.len();
        let bar_len = |b: usize| starts.get(b + 1).copied().unwrap_or(end) - starts[b];
        // What makes two bars the same: their length, where their first event starts, their
        // events (pitch and length) and the meter in force.
        type BarKey = (Tick, Tick, Meter, Vec<(Option<u8>, Tick)>);
        let keys: Vec<BarKey> = (0..nbars)
            .map(|b| {
                let evs = &events[first_event[b]..first_event[b + 1]];
                let offset = evs.first().map_or(bar_len(b), |ev| ev.start - starts[b]);
                (bar_len(b), offset, score.meter_at(starts[b]), evs.iter().map(|ev| (ev.pitch, ev.dur)).collect())
            })
            .collect();
        // Folding needs one meter throughout: a meter token belongs to the bar it starts.
        let segments =
            if score.meta.meters.len() > 1 { (0..nbars).map(Segment::Bar).collect() } else { fold(&keys, &clean, 2) };
        let mut meter = t.cond.effective_meter(cond.meter);
        let mut carry: Vec<u32> = Vec::new();
        let mut write_bar = |ids: &mut Vec<u32>, b: usize, markers: &[u32], carry: &mut Vec<u32>| {
            ids.push(t.bar);
            if b > 0 {
                if let Some((id, m)) = t.cond.meter_change(score.meter_at(starts[b]), meter) {
                    meter = m;
                    ids.push(id);
                }
            }
            ids.append(carry);
            ids.extend_from_slice(markers);
            for ev in &events[first_event[b]..first_event[b + 1]] {
                match ev.pitch.and_then(|p| t.pitch_id(p)) {
                    Some(id) => {
                        ids.push(id);
                        t.push_len(ids, ev.dur, false);
                    }
                    None => {
                        ids.push(t.rest);
                        t.push_len(ids, ev.dur, true);
                    }
                }
            }
        };
        for seg in segments {
            match seg {
                Segment::Bar(b) => write_bar(&mut ids, b, &[], &mut carry),
                Segment::Repeat { first, len, ending } => {
                    let common = len - ending;
                    for j in 0..common {
                        let markers: &[u32] = if j == 0 { &[t.repeat_start] } else { &[] };
                        write_bar(&mut ids, first + j, markers, &mut carry);
                    }
                    if ending == 0 {
                        carry.push(t.repeat_end);
                        continue;
                    }
                    for j in 0..ending {
                        let markers: &[u32] = if j == 0 { &[t.ending1] } else { &[] };
                        write_bar(&mut ids, first + common + j, markers, &mut carry);
                    }
                    for j in 0..ending {
                        let markers: &[u32] = if j == 0 { &[t.repeat_end, t.ending2] } else { &[] };
                        write_bar(&mut ids, first + len + common + j, markers, &mut carry);
                    }
                }
            }
        }
        // The closing bar line, with a repeat sign still owed.
        if nbars > 0 {
            ids.push(t.bar);
            ids.append(&mut carry);
        }
        ids.push(EOS);
        ids
    }

    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(TuneDecoder::new(self.inner.clone()))
    }
}

/// What the last accepted music token was (the grammar's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Prefix,
    /// `Bar` or a meter token after it: markers may follow.
    Bar,
    RepeatEnd,
    /// `RepeatStart` or an ending: music follows.
    Marker,
    Pitch,
    Rest,
    Len,
}

/// Where an open strain began: the note index, tick and bar count at its `|:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    note: usize,
    tick: Tick,
    bars: u32,
}

/// Incremental `tune` decoder: expands repeats as it reads them.
#[derive(Debug, Clone)]
struct TuneDecoder {
    t: Arc<Inner>,
    header: Header,
    after: After,
    meter: Meter,
    pos: Tick,
    /// Tick of the last bar line (None before the first).
    bar_start: Option<Tick>,
    /// Bar lines after the first, counting the bars a repeat plays again.
    bars: u32,
    /// Tick of the second bar line when it came before a full bar (the pickup's length).
    pickup: Option<Tick>,
    strain: Option<Mark>,
    ending1: Option<Mark>,
    owes_ending2: bool,
    pending: Option<u8>,
    resting: bool,
    notes: Vec<Note>,
    meters: Vec<(Tick, Meter)>,
    ended: bool,
    skipped: usize,
}

/// Most notes one decoder keeps (a repeat doubles a strain; this bounds a hostile id stream).
const MAX_NOTES: usize = 1 << 20;

impl TuneDecoder {
    fn new(t: Arc<Inner>) -> Self {
        TuneDecoder {
            t,
            header: Header::default(),
            after: After::Prefix,
            meter: Meter::default(),
            pos: 0,
            bar_start: None,
            bars: 0,
            pickup: None,
            strain: None,
            ending1: None,
            owes_ending2: false,
            pending: None,
            resting: false,
            notes: Vec::new(),
            meters: Vec::new(),
            ended: false,
            skipped: 0,
        }
    }

    fn mark(&self) -> Mark {
        Mark { note: self.notes.len(), tick: self.pos, bars: self.bars }
    }

    fn accepts(&self, kind: &TokenKind) -> bool {
        if self.ended {
            return false;
        }
        let music_may_follow = matches!(self.after, After::Bar | After::RepeatEnd | After::Marker | After::Len);
        match kind {
            TokenKind::Bos => self.header.accepts(kind),
            TokenKind::Cond(c) => {
                if self.after == After::Prefix {
                    self.header.accepts(kind)
                } else {
                    self.after == After::Bar
                        && self.bar_start != Some(0)
                        && c.category == Category::Meter
                        && c.value.is_some()
                }
            }
            // Two bar lines in a row: a note held across a whole bar (its length covers it).
            TokenKind::BarLine => {
                self.after == After::Prefix || (matches!(self.after, After::Len | After::Bar) && !self.owes_ending2)
            }
            TokenKind::RepeatEnd => self.after == After::Bar && self.strain.is_some(),
            TokenKind::RepeatStart => {
                matches!(self.after, After::Bar | After::RepeatEnd) && self.strain.is_none() && !self.owes_ending2
            }
            TokenKind::Ending(1) => {
                self.after == After::Bar
                    && self.ending1.is_none()
                    && self.strain.is_some_and(|s| s.tick < self.pos && self.bars > s.bars)
            }
            TokenKind::Ending(2) => self.after == After::RepeatEnd && self.owes_ending2,
            TokenKind::Pitch { .. } | TokenKind::Rest => {
                music_may_follow && self.after != After::Prefix && !self.owes_ending2
            }
            TokenKind::Step(_) => matches!(self.after, After::Pitch | After::Rest),
            TokenKind::Eos => !matches!(self.after, After::Pitch | After::Rest) && !self.owes_ending2,
            _ => false,
        }
    }

    /// `:|`: plays the strain again (up to its first ending) from here.
    fn repeat(&mut self) -> Vec<Note> {
        let Some(s) = self.strain.take() else { return Vec::new() };
        let until = self.ending1.take();
        self.owes_ending2 = until.is_some();
        let (end_note, end_tick, end_bars) = match until {
            Some(e) => (e.note, e.tick, e.bars),
            None => (self.notes.len(), self.pos, self.bars),
        };
        let shift = self.pos - s.tick;
        let room = MAX_NOTES.saturating_sub(self.notes.len());
        let copies: Vec<Note> =
            self.notes[s.note..end_note].iter().take(room).map(|n| Note { start: n.start + shift, ..*n }).collect();
        self.notes.extend_from_slice(&copies);
        self.pos += end_tick - s.tick;
        self.bars += end_bars - s.bars;
        self.bar_start = Some(self.pos);
        copies
    }

    fn take(&mut self, kind: &TokenKind) -> Vec<Note> {
        match kind {
            TokenKind::Bos => self.header.push(kind, &self.t.cond),
            TokenKind::Cond(_) if self.after == After::Prefix => self.header.push(kind, &self.t.cond),
            TokenKind::Cond(c) => {
                if let Some(m) = c.value.and_then(|v| self.t.cond.meter(v)) {
                    self.meter = m;
                    self.meters.push((self.pos, m));
                }
            }
            TokenKind::BarLine => {
                if self.after == After::Prefix {
                    self.header.end();
                    self.meter = self.t.cond.effective_meter(self.header.cond.meter);
                } else {
                    self.bars += 1;
                    if self.bars == 1 && self.pos < self.meter.bar_ticks() {
                        self.pickup = Some(self.pos);
                    }
                }
                self.bar_start = Some(self.pos);
                self.after = After::Bar;
            }
            TokenKind::RepeatEnd => {
                self.after = After::RepeatEnd;
                return self.repeat();
            }
            TokenKind::RepeatStart => {
                self.strain = Some(self.mark());
                self.after = After::Marker;
            }
            TokenKind::Ending(1) => {
                self.ending1 = Some(self.mark());
                self.after = After::Marker;
            }
            TokenKind::Ending(_) => {
                self.owes_ending2 = false;
                self.after = After::Marker;
            }
            TokenKind::Pitch { pitch, .. } => {
                self.pending = Some(*pitch);
                self.after = After::Pitch;
            }
            TokenKind::Rest => {
                self.resting = true;
                self.after = After::Rest;
            }
            TokenKind::Step(d) => {
                self.after = After::Len;
                let start = self.pos;
                self.pos += d;
                self.resting = false;
                if let Some(pitch) = self.pending.take() {
                    if self.notes.len() < MAX_NOTES {
                        let note = Note {
                            start,
                            dur: *d,
                            pitch,
                            velocity: DEFAULT_VELOCITY,
                            channel: 0,
                            voice: 0,
                            program: 0,
                        };
                        self.notes.push(note);
                        return vec![note];
                    }
                }
            }
            TokenKind::Eos => {
                if self.after == After::Prefix {
                    self.header.end();
                }
                self.ended = true;
            }
            _ => {}
        }
        Vec::new()
    }
}

impl Decoder for TuneDecoder {
    fn push(&mut self, id: u32) -> Vec<Note> {
        let t = self.t.clone();
        match t.kinds.get(id as usize) {
            Some(kind) if self.accepts(kind) => self.take(kind),
            _ => {
                self.skipped += 1;
                Vec::new()
            }
        }
    }

    fn position(&self) -> Tick {
        self.pos
    }

    fn bars(&self) -> u32 {
        self.bars
    }

    fn skipped(&self) -> usize {
        self.skipped
    }

    fn mask(&self, out: &mut [bool]) {
        mask_by(&self.t.kinds, out, |k| self.accepts(k));
    }

    fn state(&self) -> DecoderState {
        let sounding = self
            .pending
            .map(|pitch| vec![Sounding { pitch, voice: 0, start: self.pos, end: None }])
            .unwrap_or_default();
        DecoderState {
            position: self.pos,
            bar_start: self.bar_start,
            bar_ticks: if self.bar_start.is_some() {
                self.meter.bar_ticks()
            } else {
                self.t.cond.effective_meter(self.header.cond.meter).bar_ticks()
            },
            bars: self.bars,
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
        score.meta.pickup = d.pickup.unwrap_or(0);
        score.notes = d.notes;
        score.length = d.pos;
        score.normalize();
        // A pitch still waiting for its length is an unfinished note: it counts as skipped.
        let skipped = d.skipped + usize::from(d.pending.is_some());
        Decoded { score, skipped }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Key, Mode};

    fn enc() -> Tune {
        Tune::new(TuneConfig::default()).expect("default config")
    }

    fn text(t: &Tune, ids: &[u32]) -> String {
        ids.iter().map(|&i| t.vocab().token(i).unwrap_or("?")).collect::<Vec<_>>().join(" ")
    }

    /// A 2/4 tune of eighths: strain A (2 bars) twice, then B with first and second endings.
    fn aab_tune() -> Score {
        let mut s = Score::new();
        let a = [[62, 64, 66, 67], [69, 67, 66, 64]];
        let b_common = [71, 69, 67, 66];
        let (e1, e2) = ([64, 66, 67, 69], [62, 62, 62, 62]);
        let bars: Vec<[u8; 4]> = vec![a[0], a[1], a[0], a[1], b_common, e1, b_common, e2];
        for (bi, bar) in bars.iter().enumerate() {
            for (j, &p) in bar.iter().enumerate() {
                s.notes.push(Note::new(bi as Tick * 960 + j as Tick * 240, 240, p));
            }
        }
        s.meta.meters.push((0, Meter::new(2, 4)));
        s.meta.keys.push((0, Key::new(1, 0, Mode::Major)));
        s.meta.style = Some("irish".into());
        s.length = 8 * 960;
        s.normalize();
        s
    }

    #[test]
    fn repeats_and_endings_are_written_once_and_played_twice() {
        let t = enc();
        let ids = t.encode(&aab_tune());
        let e8 = |ps: [u8; 4]| ps.map(|p| format!("Pitch_{p} Len_6")).join(" ");
        let expected = format!(
            "<bos> style:irish composer:<unk> instrument:<unk> key:D meter:2/4 tempo:108-126 \
             Bar RepeatStart {} Bar {} Bar RepeatEnd RepeatStart {} Bar Ending_1 {} Bar RepeatEnd Ending_2 {} Bar <eos>",
            e8([62, 64, 66, 67]),
            e8([69, 67, 66, 64]),
            e8([71, 69, 67, 66]),
            e8([64, 66, 67, 69]),
            e8([62, 62, 62, 62]),
        );
        assert_eq!(text(&t, &ids), expected);
        let d = t.decode(&ids);
        assert_eq!(d.skipped, 0);
        assert_eq!(d.score.notes, aab_tune().notes);
        assert_eq!(d.score.length, 8 * 960);
        assert_eq!(d.score.meter(), Meter::new(2, 4));
        let mut dec = t.decoder();
        for &id in &ids {
            dec.push(id);
        }
        assert_eq!(dec.bars(), 8, "bars count in playing order");
    }

    #[test]
    fn an_empty_score_is_the_header_alone() {
        // An unprompted take starts from this: the model must be free to open with a pickup
        // (a rest, see `Score::align_pickup`) or `|:` as the training tunes do, so no bar line
        // may be written for it.
        let t = enc();
        let mut s = Score::new();
        s.meta.meters.push((0, Meter::new(6, 8)));
        s.meta.style = Some("irish".into());
        let ids = t.encode(&s);
        assert_eq!(
            text(&t, &ids),
            "<bos> style:irish composer:<unk> instrument:<unk> key:<unk> meter:6/8 tempo:108-126 <eos>"
        );
        let mut dec = t.decoder();
        for &id in &ids[..ids.len() - 1] {
            dec.push(id);
        }
        let mut allowed = vec![true; t.vocab().len()];
        dec.mask(&mut allowed);
        let open: Vec<&str> =
            (0..allowed.len()).filter(|&i| allowed[i]).map(|i| t.vocab().token(i as u32).unwrap()).collect();
        assert!(open.contains(&"Bar"), "the music may begin: {open:?}");
        let d = t.decode(&ids);
        assert_eq!((d.skipped, d.score.notes.len(), d.score.length), (0, 0, 0));
    }

    #[test]
    fn pickups_rests_and_long_rests_round_trip() {
        let t = enc();
        let mut s = Score::new();
        s.meta.meters.push((0, Meter::new(3, 4)));
        s.meta.pickup = 480;
        // Pickup quarter, a bar with a rest in the middle, a silent bar, a long final note.
        s.notes.push(Note::new(0, 480, 67));
        s.notes.push(Note::new(480, 480, 72));
        s.notes.push(Note::new(1440, 480, 71));
        s.notes.push(Note::new(3360, 1440 * 6, 72));
        s.length = 3360 + 1440 * 6;
        s.normalize();
        let ids = t.encode(&s);
        let d = t.decode(&ids);
        assert_eq!(d.skipped, 0, "{}", text(&t, &ids));
        assert_eq!(d.score.notes[..3], s.notes[..3]);
        // The last note is longer than the longest `Len` (8 quarters): it is cut to it.
        assert_eq!(d.score.notes[3], Note::new(3360, 96 * 40, 72));
        assert_eq!(d.score.meta.pickup, 480);
    }

    #[test]
    fn melody_keeps_the_top_note_and_cuts_overlaps() {
        let t = enc();
        let mut s = Score::new();
        s.notes = vec![Note::new(0, 960, 60), Note::new(0, 480, 64), Note::new(480, 480, 62)];
        s.length = 1920;
        s.normalize();
        let d = t.decode(&t.encode(&s));
        assert_eq!(d.score.notes, vec![Note::new(0, 480, 64), Note::new(480, 480, 62)]);
        assert_eq!(d.score.length, 1920);
    }

    #[test]
    fn grammar_refuses_unbalanced_repeats() {
        let t = enc();
        let v = t.vocab();
        let id = |s: &str| v.id(s).expect(s);
        // `:|` with no strain open, `[2` with no first ending, a bar line in the middle of a note.
        let ids = [
            id("<bos>"),
            id("Bar"),
            id("RepeatEnd"),
            id("Ending_2"),
            id("Pitch_60"),
            id("Bar"),
            id("Len_12"),
            id("Bar"),
            id("RepeatStart"),
            id("Pitch_62"),
            id("Len_12"),
            id("Bar"),
            id("RepeatEnd"),
            id("<eos>"),
        ];
        let d = t.decode(&ids);
        assert_eq!(d.skipped, 3);
        assert_eq!(d.score.notes, vec![Note::new(0, 480, 60), Note::new(480, 480, 62), Note::new(960, 480, 62)]);
    }

    #[test]
    fn random_ids_never_panic_and_masks_agree_with_push() {
        let t = enc();
        let n = t.vocab().len() as u32;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200 {
            let mut d = t.decoder();
            let mut allowed = vec![true; n as usize];
            for _ in 0..300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                allowed.iter_mut().for_each(|a| *a = true);
                d.mask(&mut allowed);
                let ok: Vec<u32> = (0..n).filter(|&i| allowed[i as usize]).collect();
                if ok.is_empty() {
                    break;
                }
                let id = ok[(x % ok.len() as u64) as usize];
                let before = d.skipped();
                d.push(id);
                assert_eq!(d.skipped(), before, "an id the mask allows is accepted");
            }
            let _ = d.finish();
        }
    }
}
