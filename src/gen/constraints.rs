//! Hard constraints as masks on the next token: pitch-class set, range, polyphony, whole bars, exactly N bars.
//!
//! Constraints must hold for *every* sampled take, so they act before sampling: each step the
//! [`Tracker`] follows what the ids so far did to the music (position, sounding notes) and
//! [`Tracker::mask`] clears every id whose effect would break a rule. What an id does comes from
//! an [`Effects`] table (one [`Effect`] per id) that the encoding's vocabulary describes; the
//! constraints never look at token strings themselves. The encoding's own grammar mask (which
//! successions are valid at all) is combined with this one by the caller.

use crate::time::{Meter, Tick};
use serde::{Deserialize, Serialize};

/// What one token does to the music, as far as constraints care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Conditioning, padding, anything that neither moves time nor starts or ends notes.
    Other,
    /// Starts a note of this pitch in this voice at the current position (notewise note-on,
    /// REMI pitch).
    NoteOn { pitch: u8, voice: u8 },
    /// Must be followed by a note start (REMI velocity): allowed only where a note may start,
    /// or a take could walk into a state where the grammar and the rules allow nothing.
    NoteLead,
    /// Ends the sounding note of this pitch (notewise note-off).
    NoteOff(u8),
    /// Sets the duration of the note started last (REMI duration).
    Duration(Tick),
    /// Moves time forward (notewise wait, time shift).
    Advance(Tick),
    /// Starts the next bar (REMI bar).
    Bar,
    /// Moves to this offset inside the current bar (REMI position).
    Position(Tick),
    /// One time step of `step` ticks in which exactly these pitches sound (chordwise).
    Chord { pitches: Vec<u8>, step: Tick },
    /// A meter change inside the music (REMI: a meter token right after `Bar`).
    MeterChange,
    /// Sets the length of the note started last (if any) and moves time on by it (the `tune`
    /// encoding's `Len`, after a pitch or a rest).
    NoteLength(Tick),
    /// A bar line that does not move time (`tune`): the bar starts where the music is.
    BarLine,
    /// A rest whose length follows (`tune`): allowed only where some length still fits.
    RestLead,
    /// Repeat signs and endings (`tune`): the decoder plays a strain again, which the tracker
    /// takes from the decoder after it; they are refused under a bar count.
    Structure(Sign),
    /// End of the piece.
    End,
}

/// Which repeat sign a [`Effect::Structure`] id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    RepeatStart,
    RepeatEnd,
    /// A first (1) or second (2) ending.
    Ending(u8),
}

/// One [`Effect`] per id, plus what the vocabulary contains as a whole.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub table: Vec<Effect>,
    /// The vocabulary marks bars explicitly (REMI); otherwise bars follow from time alone.
    pub explicit_bars: bool,
    /// A started note waits for a length id before anything else (REMI `Duration`, tune `Len`).
    pub has_lengths: bool,
    /// Lengths move time on (`tune`): notes follow one another.
    pub sequential: bool,
    /// The shortest such length (one grid step), 0 when there are none.
    pub min_length: Tick,
    /// The end-of-piece id, found once: the generation loop asks at every step.
    end: Option<u32>,
}

impl Effects {
    pub fn new(table: Vec<Effect>) -> Self {
        let explicit_bars = table.iter().any(|e| matches!(e, Effect::Bar | Effect::BarLine));
        let has_lengths = table.iter().any(|e| matches!(e, Effect::Duration(_) | Effect::NoteLength(_)));
        let min_length = table
            .iter()
            .filter_map(|e| match e {
                Effect::NoteLength(d) => Some(*d),
                _ => None,
            })
            .min()
            .unwrap_or(0);
        let end = table.iter().position(|e| matches!(e, Effect::End)).map(|i| i as u32);
        Effects { table, explicit_bars, has_lengths, sequential: min_length > 0, min_length, end }
    }

    pub fn get(&self, id: u32) -> &Effect {
        self.table.get(id as usize).unwrap_or(&Effect::Other)
    }

    /// Whether the ids `allowed` leaves are all note lengths (`Duration`, `NoteLength`): the
    /// step chooses how long the note just started lasts.
    pub fn only_lengths(&self, allowed: &[bool]) -> bool {
        let mut any = false;
        for (e, _) in self.table.iter().zip(allowed).filter(|(_, &ok)| ok) {
            if !matches!(e, Effect::Duration(_) | Effect::NoteLength(_)) {
                return false;
            }
            any = true;
        }
        any
    }

    pub fn end_id(&self) -> Option<u32> {
        self.end
    }

    /// Refuses the rests of a sequential encoding (`Rest` before its length) where anything else
    /// is still allowed.
    pub fn forbid_rests(&self, allowed: &mut [bool]) {
        let is_rest = |e: &Effect| matches!(e, Effect::RestLead);
        if self.table.iter().zip(allowed.iter()).any(|(e, &ok)| ok && !is_rest(e)) {
            for (e, a) in self.table.iter().zip(allowed.iter_mut()) {
                if is_rest(e) {
                    *a = false;
                }
            }
        }
    }

    /// `logits` with `bias` added to every id that starts a note on `pitch` (the same-pitch
    /// bias of [`super::Sampling`]).
    pub fn bias_pitch(&self, logits: &[f32], pitch: u8, bias: f64) -> Vec<f32> {
        let mut out = logits.to_vec();
        for (l, e) in out.iter_mut().zip(&self.table) {
            if matches!(e, Effect::NoteOn { pitch: p, .. } if *p == pitch) {
                *l += bias as f32;
            }
        }
        out
    }
}

/// The hard rules a take must obey. All optional; the default constrains nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// Allowed pitch classes (0 = C .. 11 = B), e.g. from `Key::pitch_classes`.
    pub pitch_classes: Option<Vec<u8>>,
    /// Keep to the key of the (conditioned) prompt where generation starts, or the key a take
    /// sampled when the prompt left it open; resolved into `pitch_classes` (intersected with
    /// them when both are set) for each take by [`Constraints::for_key`].
    pub in_key: bool,
    /// With `in_key`: only the key's pentatonic scale ([`crate::score::Key::pentatonic`]), as
    /// Chinese folk tunes keep to it (97% of their notes in the collection).
    #[serde(default)]
    pub pentatonic: bool,
    /// Lowest and highest allowed MIDI pitch, inclusive.
    pub range: Option<(u8, u8)>,
    /// Most notes sounding at once (1 = monophonic).
    pub max_polyphony: Option<usize>,
    /// One note at a time in each voice (a four-part chorale: four lines, never a chord
    /// inside one part).
    pub mono_voices: bool,
    /// Bars add up to the meter: no position past the bar's length, no wait across a bar line
    /// in encodings that mark bars, no bar line before the bar is full.
    pub whole_bars: bool,
    /// Exactly this many bars after the prompt, then stop (set from `Length::Bars`).
    pub bars: Option<u32>,
    /// A repeated strain is at least this many bars, its first ending included (a small model
    /// otherwise repeats a bar or two and calls it a strain; real tunes repeat 8-bar strains,
    /// some 4).
    pub min_strain_bars: Option<u32>,
    /// At most this many notes of one pitch in a row (a melody model otherwise hammers one
    /// pitch far more than real tunes do).
    pub max_repeats: Option<u32>,
    /// With a bar count, in encodings whose lengths move time (`tune`): the last note must have
    /// one of these pitch classes (a cadence; forms set it, see `gen::form`).
    pub cadence: Option<Vec<u8>>,
    /// One voice given note for note (harmonising a melody): the take plays exactly these notes
    /// in that voice and samples only the others. Encodings with positions (REMI).
    pub fixed: Option<FixedVoice>,
    /// No parallel fifths or octaves: a note may not make a perfect fifth (or octave, unison,
    /// compound ones too) with another voice that was a fifth (octave) from it at the previous
    /// onset when both move the same way, as `cadenza eval` counts them. Bach's chorales have
    /// 0.02 per 100 voice-pair moves; a small model writes them fifty times as often.
    #[serde(default)]
    pub no_parallels: bool,
    /// A whole tune (no bar count) ends on the tonic of its key: resolved per take, once its key
    /// is known, into a `cadence` of the tonic ([`Constraints::for_take`]), which the end id
    /// waits for: the last note in `tune`; with parts (REMI) a last chord with the tonic in the
    /// bass and on top and a consonant triad between ([`Tracker::closes_on`]). The chorale
    /// model's REMI takes otherwise ended where the end bias met a chord the model found final,
    /// on the dominant as often as not.
    #[serde(default)]
    pub end_on_tonic: bool,
    /// A whole tune ends on one of its style's finals: the degrees of the key that at least one
    /// in ten of the style's training tunes end on (`header_prior.json`, see
    /// [`crate::gen::HeaderPrior::finals`]), the model choosing among them, its end id less
    /// ready after a rarer one (`Finals::end_bias`); the tonic for a model without the table.
    /// Resolved per take like `end_on_tonic`, which wins when both are set. The Chinese tunes
    /// end on the fifth of their `K:` key more often than on its tonic (the zhi mode), so the
    /// tonic alone made their takes less like them.
    #[serde(default)]
    pub end_on_final: bool,
}

/// Voices the parallel check follows (a chorale has four; more are not checked).
const SLICE_VOICES: usize = 8;

/// The highest pitch each voice sounds at one onset.
type Slice = [Option<u8>; SLICE_VOICES];

/// A voice whose notes are given: `(start, duration, pitch)` in ticks from where generation
/// starts, in time order, one at a time.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FixedVoice {
    pub voice: u8,
    pub notes: Vec<(Tick, Tick, u8)>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        *self == Constraints::default()
    }

    /// Checks the rules are satisfiable at all, with a reason a user can act on.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(pcs) = &self.pitch_classes {
            if pcs.is_empty() {
                return Err("the pitch-class set is empty".into());
            }
            if let Some(bad) = pcs.iter().find(|&&p| p > 11) {
                return Err(format!("pitch class {bad} is not in 0..=11"));
            }
        }
        if let Some((lo, hi)) = self.range {
            if lo > hi || hi > 127 {
                return Err(format!("pitch range {lo}..={hi} is empty or outside MIDI's 0..=127"));
            }
        }
        if self.max_polyphony == Some(0) {
            return Err("maximum polyphony 0 allows no notes".into());
        }
        Ok(())
    }

    /// These rules for a take in `key`: `in_key` (and `pentatonic`) become pitch classes.
    pub fn for_key(&self, key: &crate::score::Key) -> Constraints {
        let mut c = self.clone();
        if c.in_key {
            let in_key = if c.pentatonic { key.pentatonic() } else { key.pitch_classes() };
            c.pitch_classes = Some(match c.pitch_classes.take() {
                Some(pcs) => pcs.into_iter().filter(|pc| in_key.contains(pc)).collect(),
                None => in_key,
            });
            c.in_key = false;
            c.pentatonic = false;
        }
        c
    }

    /// These rules for one take: [`Constraints::for_key`] with the take's key (C major when it
    /// has none), and `end_on_tonic` (`end_on_final`) as a cadence of that key's tonic (of
    /// `finals`, degrees in semitones above the tonic; the tonic when there are none) when the
    /// key is known and no bar count or cadence decides the end already.
    pub fn for_take(&self, key: Option<&crate::score::Key>, finals: Option<&[u8]>) -> Constraints {
        let mut c = self.for_key(&key.cloned().unwrap_or_default());
        let ends = c.end_on_tonic || c.end_on_final;
        if let Some(k) = key.filter(|_| ends && c.bars.is_none() && c.cadence.is_none()) {
            let degrees = finals.filter(|d| self.ends_on_finals() && !d.is_empty()).unwrap_or(&[0]);
            c.cadence = Some(degrees.iter().map(|d| (k.tonic_pc() + d) % 12).collect());
        }
        c.end_on_tonic = false;
        c.end_on_final = false;
        c
    }

    /// Whether a whole take's end is decided by its style's finals: `end_on_final`, with
    /// neither `end_on_tonic`, a bar count nor a cadence of the caller's deciding it instead.
    pub fn ends_on_finals(&self) -> bool {
        self.end_on_final && !self.end_on_tonic && self.bars.is_none() && self.cadence.is_none()
    }

    fn pitch_ok(&self, p: u8) -> bool {
        if let Some(pcs) = &self.pitch_classes {
            if !pcs.contains(&(p % 12)) {
                return false;
            }
        }
        if let Some((lo, hi)) = self.range {
            if p < lo || p > hi {
                return false;
            }
        }
        true
    }
}

/// A note the tracker believes is sounding: its pitch and, once known, its end.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sounding {
    pitch: u8,
    voice: u8,
    end: Option<Tick>,
}

/// Follows the music the ids describe, so the mask for the next id can be computed.
#[derive(Debug, Clone)]
pub struct Tracker {
    rules: Constraints,
    bar_ticks: Tick,
    /// Absolute position of the next event.
    pos: Tick,
    /// Start of the current bar in encodings with explicit bars (None before the first bar).
    bar_start: Option<Tick>,
    sounding: Vec<Sounding>,
    /// Index in `sounding` of the note waiting for its duration (REMI).
    pending: Option<usize>,
    /// Where the constrained part begins (end of the prompt, on a bar line) and, with a bar
    /// count, where it must end.
    start: Tick,
    end: Option<Tick>,
    ended: bool,
    /// Precomputed: ids whose pitches break the pitch rules (they never become valid).
    static_ok: Vec<bool>,
    /// The voices the vocabulary can start notes in (for `mono_voices`).
    voices: Vec<u8>,
    /// Pitch of the note started last (for `cadence`).
    last_pitch: Option<u8>,
    /// Notes in a row of `last_pitch` so far.
    same_run: u32,
    /// Index of the next given note (`fixed`) not yet written.
    fixed_next: usize,
    /// Complete bars since the open strain's `RepeatStart` (None: no strain open).
    strain_bars: Option<u32>,
    /// The voices (below [`SLICE_VOICES`]) that have started a note, one bit each (for
    /// `cadence` with parts: the final chord must have them all).
    voices_heard: u8,
    /// The last onset and each voice's pitch there, and the slice at the onset before it (for
    /// `no_parallels`).
    onset: Option<Tick>,
    slice_now: Slice,
    slice_before: Slice,
}

impl Tracker {
    pub fn new(rules: Constraints, effects: &Effects, meter: Meter) -> Self {
        let static_ok = effects
            .table
            .iter()
            .map(|e| match e {
                Effect::NoteOn { pitch, .. } => rules.pitch_ok(*pitch),
                Effect::Chord { pitches, .. } => {
                    pitches.iter().all(|&p| rules.pitch_ok(p)) && rules.max_polyphony.is_none_or(|m| pitches.len() <= m)
                }
                _ => true,
            })
            .collect();
        let mut voices: Vec<u8> = effects
            .table
            .iter()
            .filter_map(|e| match e {
                Effect::NoteOn { voice, .. } => Some(*voice),
                _ => None,
            })
            .collect();
        voices.sort_unstable();
        voices.dedup();
        Tracker {
            rules,
            bar_ticks: meter.bar_ticks().max(1),
            pos: 0,
            bar_start: None,
            sounding: Vec::new(),
            pending: None,
            start: 0,
            end: None,
            ended: false,
            static_ok,
            voices,
            last_pitch: None,
            same_run: 0,
            fixed_next: 0,
            strain_bars: None,
            voices_heard: 0,
            onset: None,
            slice_now: [None; SLICE_VOICES],
            slice_before: [None; SLICE_VOICES],
        }
    }

    /// Takes the decoder's word for where the music is: after a repeat sign the decoder has
    /// played a strain again, and after a meter change its bar has a new length, which the
    /// effects alone do not tell.
    pub fn resync(&mut self, state: &crate::tokens::DecoderState) {
        self.bar_start = state.bar_start;
        self.bar_ticks = state.bar_ticks.max(1);
        self.advance_to(state.position.max(self.pos));
    }

    /// The pitch of the last note started (rests do not reset it).
    pub fn last_pitch(&self) -> Option<u8> {
        self.last_pitch
    }

    pub fn position(&self) -> Tick {
        self.pos
    }

    /// Ticks in a bar of the meter the tracker counts in.
    pub fn bar_ticks(&self) -> Tick {
        self.bar_ticks
    }

    /// Where the `bars` limit ends, if there is one.
    pub fn end_tick(&self) -> Option<Tick> {
        self.end
    }

    /// Marks the end of the prompt: the constrained part starts at the next bar line at or after
    /// `prompt_end` (the prompt's length), and with a bar count, ends that many bars later.
    pub fn begin(&mut self, prompt_end: Tick) {
        let start = prompt_end.div_ceil(self.bar_ticks) * self.bar_ticks;
        self.start = start;
        self.end = self.rules.bars.map(|n| start + n as Tick * self.bar_ticks);
    }

    fn sounding_at(&self, t: Tick) -> usize {
        self.sounding.iter().filter(|s| s.end.is_none_or(|e| e > t)).count()
    }

    /// Each voice's highest pitch among the notes that started before `t` and sound at `t`.
    fn held_at(&self, t: Tick) -> Slice {
        let mut slice = [None; SLICE_VOICES];
        for s in self.sounding.iter().filter(|s| s.end.is_none_or(|e| e > t)) {
            if let Some(v) = slice.get_mut(s.voice as usize) {
                *v = Some(v.map_or(s.pitch, |p: u8| p.max(s.pitch)));
            }
        }
        slice
    }

    /// The slices a note starting now is measured against: the onset before and this one so far.
    fn slices_for_now(&self) -> (Slice, Slice) {
        if self.onset == Some(self.pos) {
            (self.slice_before, self.slice_now)
        } else {
            (self.slice_now, self.held_at(self.pos))
        }
    }

    /// Records a note starting now in the onset slices (before it joins `sounding`).
    fn note_in_slice(&mut self, pitch: u8, voice: u8) {
        if self.onset != Some(self.pos) {
            (self.slice_before, self.slice_now) = self.slices_for_now();
            self.onset = Some(self.pos);
        }
        if let Some(v) = self.slice_now.get_mut(voice as usize) {
            *v = Some(v.map_or(pitch, |p| p.max(pitch)));
        }
    }

    /// Whether `pitch` in `voice` now would move in parallel fifths or octaves with a voice
    /// already placed at this onset (`before` and `now` from [`Tracker::slices_for_now`]).
    fn makes_parallels(before: &Slice, now: &Slice, pitch: u8, voice: u8) -> bool {
        let v = voice as usize;
        let Some(a0) = before.get(v).copied().flatten() else { return false };
        let da = pitch as i32 - a0 as i32;
        if da == 0 {
            return false;
        }
        (0..SLICE_VOICES).filter(|&w| w != v).any(|w| {
            let (Some(b0), Some(b1)) = (before[w], now[w]) else { return false };
            let db = b1 as i32 - b0 as i32;
            if db == 0 || db.signum() != da.signum() {
                return false;
            }
            // The interval from the lower-numbered voice (the higher part), as the eval reads it.
            let (i0, i1) = if v < w {
                ((a0 as i32 - b0 as i32).rem_euclid(12), (pitch as i32 - b1 as i32).rem_euclid(12))
            } else {
                ((b0 as i32 - a0 as i32).rem_euclid(12), (b1 as i32 - pitch as i32).rem_euclid(12))
            };
            (i0 == 7 && i1 == 7) || (i0 == 0 && i1 == 0)
        })
    }

    /// Whether the music with parts may end now on `cadence`. Its final chord is what sounds at
    /// the last onset (the notes struck there and those held through it, `slice_now`): every
    /// voice heard so far sounds in it, its bass and top note are on a cadence pitch class, and
    /// above the bass there is nothing but a consonant triad (unisons and octaves, thirds of
    /// either kind, fifths). Bach's chorales end so: in 385 of 408 the soprano ends on the
    /// bass's pitch class (16 on its third), all four parts in a triad without dissonance. The
    /// bass alone, the rule before, let 66% of the chorale model's takes end with the soprano off
    /// the bass's pitch class (a third, fifth, sixth or fourth above it) and 4% on one or two
    /// voices.
    fn closes_on(&self, cadence: &[u8]) -> bool {
        let chord = || self.slice_now.iter().flatten().copied();
        let (Some(bass), Some(top)) = (chord().min(), chord().max()) else {
            return self.last_pitch.is_some_and(|p| cadence.contains(&(p % 12)));
        };
        let all_voices = (0..SLICE_VOICES).all(|v| self.voices_heard & (1 << v) == 0 || self.slice_now[v].is_some());
        all_voices
            && crate::score::triad_above(bass, chord())
            && cadence.contains(&(bass % 12))
            && cadence.contains(&(top % 12))
    }

    /// Whether a note may start in `voice` at `t` under `mono_voices`.
    fn voice_free_at(&self, voice: u8, t: Tick) -> bool {
        !self.rules.mono_voices || !self.sounding.iter().any(|s| s.voice == voice && s.end.is_none_or(|e| e > t))
    }

    /// Whether some voice is free at `t` (so a note can follow a position or velocity there).
    fn any_voice_free_at(&self, t: Tick) -> bool {
        !self.rules.mono_voices || self.voices.is_empty() || self.voices.iter().any(|&v| self.voice_free_at(v, t))
    }

    /// True once the take is complete under the rules: the bar limit is reached and no note is
    /// left open, or an end token was accepted.
    pub fn finished(&self) -> bool {
        if self.ended {
            return true;
        }
        match self.end {
            Some(end) => self.pos >= end && self.pending.is_none() && self.sounding.iter().all(|s| s.end.is_some()),
            None => false,
        }
    }

    /// Feeds one id (prompt or generated) into the tracker.
    pub fn push(&mut self, effect: &Effect) {
        match effect {
            // Takes with a bar count or whole bars never change meter (the mask forbids it);
            // elsewhere the generation loop resyncs the tracker from the decoder after a change,
            // so positions, polyphony and parallels are checked in the bar the decoder plays.
            Effect::Other | Effect::MeterChange | Effect::NoteLead => {}
            Effect::NoteOn { pitch, voice } => {
                if let Some(f) = &self.rules.fixed {
                    if f.voice == *voice && self.fixed_next < f.notes.len() {
                        self.fixed_next += 1;
                    }
                }
                self.same_run = if self.last_pitch == Some(*pitch) { self.same_run + 1 } else { 1 };
                self.last_pitch = Some(*pitch);
                self.note_in_slice(*pitch, *voice);
                if (*voice as usize) < SLICE_VOICES {
                    self.voices_heard |= 1 << voice;
                }
                self.sounding.push(Sounding { pitch: *pitch, voice: *voice, end: None });
                self.pending = Some(self.sounding.len() - 1);
            }
            Effect::NoteOff(p) => {
                if let Some(s) = self.sounding.iter_mut().find(|s| s.pitch == *p && s.end.is_none()) {
                    s.end = Some(self.pos);
                }
                self.pending = None;
            }
            Effect::Duration(d) => {
                if let Some(i) = self.pending.take() {
                    if let Some(s) = self.sounding.get_mut(i) {
                        s.end = Some(self.pos + d);
                    }
                }
            }
            Effect::Advance(d) => self.advance_to(self.pos + d),
            Effect::NoteLength(d) => {
                if let Some(i) = self.pending.take() {
                    if let Some(s) = self.sounding.get_mut(i) {
                        s.end = Some(self.pos + d);
                    }
                }
                self.advance_to(self.pos + d);
            }
            Effect::BarLine => {
                // The bar line that opens the music starts no bar of a strain; the others
                // close one.
                if self.bar_start.is_some() {
                    self.strain_bars = self.strain_bars.map(|n| n + 1);
                }
                self.bar_start = Some(self.pos);
            }
            Effect::RestLead => {}
            Effect::Structure(Sign::RepeatStart) => self.strain_bars = Some(0),
            Effect::Structure(Sign::RepeatEnd) => self.strain_bars = None,
            Effect::Structure(_) => {}
            Effect::Bar => {
                let next = match self.bar_start {
                    Some(b) => b + self.bar_ticks,
                    // The first bar token opens the bar the position is in.
                    None => self.pos - self.pos % self.bar_ticks,
                };
                self.bar_start = Some(next);
                self.advance_to(next.max(self.pos));
            }
            Effect::Position(t) => {
                let b = self.bar_start.unwrap_or(self.pos - self.pos % self.bar_ticks);
                self.advance_to((b + t).max(self.pos));
            }
            Effect::Chord { pitches, step } => {
                // Each chord step sounds its pitches for one step; they end at the next step.
                let end = self.pos + step;
                for &p in pitches {
                    self.sounding.push(Sounding { pitch: p, voice: 0, end: Some(end) });
                }
                self.advance_to(end);
            }
            Effect::End => self.ended = true,
        }
    }

    fn advance_to(&mut self, t: Tick) {
        self.pos = t;
        // Forget notes that are over, so polyphony counts only what sounds.
        let pos = self.pos;
        let pending = self.pending.map(|i| self.sounding[i]);
        self.sounding.retain(|s| s.end.is_none_or(|e| e > pos));
        self.pending = pending.and_then(|p| self.sounding.iter().position(|s| *s == p));
    }

    /// Clears in `allowed` every id that would break a rule now. Ids already cleared stay so.
    pub fn mask(&self, effects: &Effects, allowed: &mut [bool]) {
        let r = &self.rules;
        let bar_end = self.bar_start.map(|b| b + self.bar_ticks);
        let in_bar = self.bar_start.map(|b| self.pos.saturating_sub(b));
        let open = self.sounding.iter().any(|s| s.end.is_none());
        let at_end = self.end.is_some_and(|e| self.pos >= e);
        // In sequential encodings (`tune`) a pitch or rest is followed by a length that must
        // fit: under whole bars, none fits in a full bar (the bar line comes first).
        let bar_full =
            effects.sequential && r.whole_bars && self.bar_start.is_some_and(|b| self.pos >= b + self.bar_ticks);
        // A cadence: near the end only a cadence note may start (one step must stay for it),
        // and the length that reaches the end must close a cadence note (or a rest after one).
        let cadence = r.cadence.as_ref().filter(|_| effects.sequential).zip(self.end);
        let in_cadence = |p: Option<u8>| r.cadence.as_ref().is_some_and(|c| p.is_some_and(|p| c.contains(&(p % 12))));
        let pending_pitch = self.pending.and_then(|i| self.sounding.get(i)).map(|s| s.pitch);
        let room_for_two = cadence.is_none_or(|(_, end)| end.saturating_sub(self.pos) >= 2 * effects.min_length);
        // The given voice is never refused (the others are checked against it).
        let parallels = r.no_parallels.then(|| self.slices_for_now());
        let checked = |voice: u8| r.fixed.as_ref().is_none_or(|f| f.voice != voice);
        let note_may_start = !at_end
            && !bar_full
            && self.pending.is_none_or(|_| !effects.has_lengths)
            && r.max_polyphony.is_none_or(|m| self.sounding_at(self.pos) < m);
        for (id, ok) in allowed.iter_mut().enumerate() {
            if !*ok {
                continue;
            }
            if !self.static_ok.get(id).copied().unwrap_or(true) {
                *ok = false;
                continue;
            }
            let e = effects.table.get(id).unwrap_or(&Effect::Other);
            *ok = match e {
                Effect::Other | Effect::NoteOff(_) => true,
                // Bars are counted and checked in the request's meter.
                Effect::MeterChange => !r.whole_bars && r.bars.is_none(),
                Effect::NoteOn { pitch, .. }
                    if r.max_repeats.is_some_and(|m| self.last_pitch == Some(*pitch) && self.same_run >= m) =>
                {
                    false
                }
                Effect::NoteOn { voice, pitch } => {
                    note_may_start
                        && self.voice_free_at(*voice, self.pos)
                        && (room_for_two || in_cadence(Some(*pitch)))
                        && !parallels.as_ref().is_some_and(|(before, now)| {
                            checked(*voice) && Self::makes_parallels(before, now, *pitch, *voice)
                        })
                }
                Effect::NoteLead => note_may_start && self.any_voice_free_at(self.pos),
                Effect::Duration(d) => self.end.is_none_or(|end| self.pos + d <= end),
                Effect::NoteLength(d) => {
                    let to = self.pos + d;
                    let within_bar = !r.whole_bars || self.bar_start.is_none_or(|b| to <= b + self.bar_ticks);
                    let closes = match pending_pitch {
                        Some(p) => in_cadence(Some(p)),
                        None => in_cadence(self.last_pitch),
                    };
                    let cadence_ok = cadence.is_none_or(|(_, end)| to < end || closes);
                    self.end.is_none_or(|end| to <= end) && within_bar && cadence_ok
                }
                // Under whole bars a bar line comes when the bar is full (the first one opens
                // the music); never past the bar limit.
                Effect::BarLine => {
                    let full = !r.whole_bars || in_bar.is_none_or(|ib| ib == self.bar_ticks);
                    full && self.end.is_none_or(|end| self.pos <= end)
                }
                Effect::Structure(sign) => {
                    let bars = self.strain_bars.unwrap_or(0);
                    r.bars.is_none()
                        && match (sign, r.min_strain_bars) {
                            (Sign::RepeatEnd, Some(m)) => bars >= m,
                            // A first ending lasts at least a bar: the body before it is one
                            // short of the whole strain.
                            (Sign::Ending(1), Some(m)) => bars + 1 >= m,
                            _ => true,
                        }
                }
                Effect::RestLead => !at_end && !bar_full && (room_for_two || in_cadence(self.last_pitch)),
                Effect::Advance(d) => {
                    let to = self.pos + d;
                    let within_limit = self.end.is_none_or(|end| to <= end);
                    let within_bar = !(r.whole_bars && effects.explicit_bars) || bar_end.is_none_or(|be| to <= be);
                    within_limit && within_bar && !at_end
                }
                Effect::Bar => {
                    // With explicit positions a bar may end early (the rest is silence); with
                    // waits only, the bar line must come exactly when the bar is full.
                    let full = !r.whole_bars
                        || has_positions(effects)
                        || in_bar.is_none_or(|ib| ib == self.bar_ticks || (ib == 0 && self.pos == 0));
                    // A bar line that would open a bar past the limit is where we stop instead.
                    let next = match self.bar_start {
                        Some(b) => b + self.bar_ticks,
                        None => self.pos - self.pos % self.bar_ticks,
                    };
                    // A bar line reaching the limit ends the take there (`finished`); one past
                    // it would open a bar too many.
                    full && self.end.is_none_or(|end| next <= end)
                }
                Effect::Position(t) => {
                    let b = self.bar_start.unwrap_or(self.pos - self.pos % self.bar_ticks);
                    let to = b + t;
                    // A position is always followed by a note (REMI), so one must fit there.
                    (!r.whole_bars || *t < self.bar_ticks)
                        && to >= self.pos
                        && self.end.is_none_or(|end| to < end)
                        && r.max_polyphony.is_none_or(|m| self.sounding_at(to) < m)
                        && self.any_voice_free_at(to)
                }
                Effect::Chord { step, .. } => !at_end && self.end.is_none_or(|end| self.pos + step <= end),
                // With a bar count the model may end only at the limit or, where bars are
                // explicit, inside the last bar (the rest of it is silence).
                Effect::End => {
                    let in_last_bar = effects.explicit_bars && bar_end.zip(self.end).is_some_and(|(be, end)| be >= end);
                    // With no bar limit (an open last section) the cadence still decides
                    // where the tune may end: on its last note, or with parts, on its final
                    // chord ([`Tracker::closes_on`]).
                    let cadence_ok = match &r.cadence {
                        None => true,
                        Some(_) if effects.sequential => in_cadence(self.last_pitch),
                        Some(c) => self.closes_on(c),
                    };
                    self.end.is_none_or(|end| self.pos >= end || in_last_bar) && !open && cadence_ok
                }
            };
        }
        if r.fixed.is_some() {
            self.mask_fixed(effects, allowed);
        }
    }

    /// Whether a voice other than `fixed` may start a note at `t` (under `mono_voices`).
    fn other_voice_free(&self, fixed: u8, t: Tick) -> bool {
        !self.rules.mono_voices || self.voices.iter().any(|&v| v != fixed && self.voice_free_at(v, t))
    }

    /// The given voice (`fixed`): its next note must be written at its onset, first among the
    /// notes there (REMI orders an onset's notes by voice), with its pitch and duration; time
    /// may not pass an onset still owed, and the piece may not end before the last one.
    fn mask_fixed(&self, effects: &Effects, allowed: &mut [bool]) {
        let Some(f) = &self.rules.fixed else { return };
        let next = f.notes.get(self.fixed_next).map(|&(s, d, p)| (self.start + s, d, p));
        let owed_here = next.filter(|&(s, _, _)| s == self.pos);
        let pending_fixed = self
            .pending
            .and_then(|i| self.sounding.get(i))
            .filter(|s| s.voice == f.voice)
            .and_then(|_| self.fixed_next.checked_sub(1).and_then(|i| f.notes.get(i)));
        let bar_start = self.bar_start.unwrap_or(self.pos - self.pos % self.bar_ticks);
        for (id, ok) in allowed.iter_mut().enumerate() {
            if !*ok {
                continue;
            }
            *ok = match effects.table.get(id).unwrap_or(&Effect::Other) {
                Effect::NoteOn { voice, pitch } if *voice == f.voice => owed_here.is_some_and(|(_, _, p)| p == *pitch),
                Effect::NoteOn { .. } | Effect::NoteLead => owed_here.is_none(),
                Effect::Duration(d) => pending_fixed.is_none_or(|&(_, fd, _)| fd == *d),
                // Up to the owed onset (REMI writes a position before the notes there); before
                // it, only where another voice is free to start the note a position needs.
                Effect::Position(t) => {
                    let to = bar_start + t;
                    let owed_at = next.is_some_and(|(s, _, _)| to == s);
                    next.is_none_or(|(s, _, _)| to <= s) && (owed_at || self.other_voice_free(f.voice, to))
                }
                // The first bar line opens the bar the music is in; a later one may not skip an
                // owed onset.
                Effect::Bar => match self.bar_start {
                    Some(b) => next.is_none_or(|(s, _, _)| s >= b + self.bar_ticks),
                    None => true,
                },
                Effect::End => next.is_none(),
                _ => true,
            };
        }
    }
}

fn has_positions(effects: &Effects) -> bool {
    effects.table.iter().any(|e| matches!(e, Effect::Position(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_chooses_a_length_when_only_lengths_are_allowed() {
        let fx = Effects::new(vec![
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::Duration(12),
            Effect::NoteLength(480),
            Effect::End,
        ]);
        assert!(fx.only_lengths(&[false, true, true, false]));
        assert!(fx.only_lengths(&[false, true, false, false]));
        assert!(!fx.only_lengths(&[true, true, false, false]), "a pitch beside the lengths");
        assert!(!fx.only_lengths(&[false, false, true, true]), "the end beside a length");
        assert!(!fx.only_lengths(&[false; 4]), "nothing allowed is no length step");
    }

    /// With parts, a cadence holds the end for a final chord, the notes sounding at the last
    /// onset, with every voice in it, the cadence's pitch class in the bass and on top and a
    /// consonant triad between, whether the chord still sounds or a bar line has passed it.
    #[test]
    fn parts_end_on_a_full_chord_with_the_tonic_in_bass_and_top() {
        // D major, voices 0 (top) to 3 (bass).
        let (d2, a2, fs3, e3, d4, fs4) = (38u8, 45u8, 54u8, 52u8, 62u8, 66u8);
        let notes: Vec<(u8, u8)> =
            [d2, a2, fs3, e3, d4, fs4].iter().flat_map(|&pitch| (0..4).map(move |voice| (pitch, voice))).collect();
        let mut table: Vec<Effect> = notes.iter().map(|&(pitch, voice)| Effect::NoteOn { pitch, voice }).collect();
        let dur = table.len();
        table.extend([Effect::Duration(480), Effect::Bar, Effect::End, Effect::Position(0), Effect::Position(480)]);
        let (bar, end, pos) = (dur + 1, dur + 2, [dur + 3, dur + 4]);
        let fx = Effects::new(table);
        let id = |p: u8, v: u8| notes.iter().position(|&n| n == (p, v)).unwrap();
        let rules = Constraints { cadence: Some(vec![2]), ..Default::default() };
        // Onsets of one 2/4 bar: each a position and its notes (pitch, voice), a quarter each.
        let may_end = |onsets: &[&[(u8, u8)]], then_bar: bool| {
            let mut t = Tracker::new(rules.clone(), &fx, Meter::new(2, 4));
            t.push(&fx.table[bar]);
            for (i, chord) in onsets.iter().enumerate() {
                t.push(&fx.table[pos[i]]);
                for &(p, v) in chord.iter() {
                    t.push(&fx.table[id(p, v)]);
                    t.push(&fx.table[dur]);
                }
            }
            if then_bar {
                t.push(&fx.table[bar]);
            }
            let mut a = vec![true; fx.table.len()];
            t.mask(&fx, &mut a);
            a[end]
        };
        let tonic_chord: &[(u8, u8)] = &[(d4, 0), (fs3, 1), (a2, 2), (d2, 3)];
        for then_bar in [false, true] {
            assert!(may_end(&[tonic_chord], then_bar), "tonic triad, tonic on top ({then_bar})");
            assert!(!may_end(&[&[(fs4, 0), (d4, 1), (a2, 2), (d2, 3)]], then_bar), "the third on top ({then_bar})");
            assert!(!may_end(&[&[(d4, 0), (e3, 1), (a2, 2), (d2, 3)]], then_bar), "a second in the chord ({then_bar})");
            assert!(
                !may_end(&[&[(d4, 0), (fs3, 1), (d4, 2), (a2, 3)]], then_bar),
                "the fifth in the bass ({then_bar})"
            );
            // The full chord, then two voices alone: the others have stopped, so the last onset
            // sounds half a chord even though its lowest note is the tonic.
            assert!(!may_end(&[tonic_chord, &[(fs4, 0), (d4, 1)]], then_bar), "two voices of four ({then_bar})");
            assert!(!may_end(&[tonic_chord, &[(d4, 0), (d2, 3)]], then_bar), "bare octave of four voices ({then_bar})");
        }
    }

    /// `max_repeats`: a pitch may come at most that many times in a row; another pitch resets it.
    #[test]
    fn no_more_than_max_repeats_of_one_pitch_in_a_row() {
        // 0 pitch 60, 1 pitch 62, 2 a quarter.
        let fx = Effects::new(vec![
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::NoteOn { pitch: 62, voice: 0 },
            Effect::NoteLength(480),
        ]);
        let rules = Constraints { max_repeats: Some(2), ..Default::default() };
        let mut t = Tracker::new(rules, &fx, Meter::new(4, 4));
        let may = |t: &Tracker| {
            let mut a = vec![true; 3];
            t.mask(&fx, &mut a);
            (a[0], a[1])
        };
        for (id, want) in [(0, (true, true)), (0, (false, true)), (1, (true, true)), (1, (true, false))] {
            t.push(&fx.table[id]);
            t.push(&fx.table[2]);
            assert_eq!(may(&t), want, "after pitch id {id}");
        }
    }

    /// The same-pitch bias lands on the note ids of the previous note's pitch and nowhere else.
    #[test]
    fn same_pitch_bias_moves_only_that_pitch() {
        let fx = Effects::new(vec![
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::NoteOn { pitch: 62, voice: 0 },
            Effect::NoteLength(480),
            Effect::NoteOn { pitch: 60, voice: 1 },
        ]);
        let mut t = Tracker::new(Constraints::default(), &fx, Meter::new(4, 4));
        assert_eq!(t.last_pitch(), None);
        t.push(&fx.table[0]);
        t.push(&fx.table[2]);
        let p = t.last_pitch().unwrap();
        assert_eq!(fx.bias_pitch(&[1.0, 2.0, 3.0, 4.0], p, -1.5), vec![-0.5, 2.0, 3.0, 2.5]);
    }

    /// A strain must be `min_strain_bars` long before it may repeat: a `tune`-like table, 4/4,
    /// bars of one whole note.
    #[test]
    fn a_strain_repeats_only_once_it_has_its_bars() {
        // 0 BarLine, 1 RepeatStart, 2 RepeatEnd, 3 Ending_1, 4 Ending_2, 5 pitch, 6 whole note.
        let fx = Effects::new(vec![
            Effect::BarLine,
            Effect::Structure(Sign::RepeatStart),
            Effect::Structure(Sign::RepeatEnd),
            Effect::Structure(Sign::Ending(1)),
            Effect::Structure(Sign::Ending(2)),
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::NoteLength(1920),
        ]);
        let rules = Constraints { min_strain_bars: Some(4), ..Default::default() };
        let mut t = Tracker::new(rules, &fx, Meter::new(4, 4));
        let allowed = |t: &Tracker| {
            let mut a = vec![true; fx.table.len()];
            t.mask(&fx, &mut a);
            (a[2], a[3])
        };
        t.push(&fx.table[0]); // the bar line that opens the music
        t.push(&fx.table[1]); // |:
        for bar in 1..=4u32 {
            t.push(&fx.table[5]);
            t.push(&fx.table[6]);
            t.push(&fx.table[0]);
            // After `bar` complete bars: a first ending from 3, `:|` from 4.
            assert_eq!(allowed(&t), (bar >= 4, bar >= 3), "after {bar} bars");
        }
        t.push(&fx.table[2]); // :|
        assert_eq!(allowed(&t), (false, false), "no strain open");
        // Without the rule, a strain of one bar may repeat.
        let mut free = Tracker::new(Constraints::default(), &fx, Meter::new(4, 4));
        for id in [0, 1, 5, 6, 0] {
            free.push(&fx.table[id]);
        }
        assert_eq!(allowed(&free), (true, true));
    }

    /// A notewise-like table: 0 End, 1..=3 NoteOn 60/62/61, 4..=6 NoteOff, 7 wait 480, 8 wait 960.
    fn effects() -> Effects {
        Effects::new(vec![
            Effect::End,
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::NoteOn { pitch: 62, voice: 0 },
            Effect::NoteOn { pitch: 61, voice: 0 },
            Effect::NoteOff(60),
            Effect::NoteOff(62),
            Effect::NoteOff(61),
            Effect::Advance(480),
            Effect::Advance(960),
        ])
    }

    fn mask(t: &Tracker, e: &Effects) -> Vec<bool> {
        let mut m = vec![true; e.table.len()];
        t.mask(e, &mut m);
        m
    }

    #[test]
    fn key_masks_out_of_scale_pitches() {
        let e = effects();
        let c = Constraints { pitch_classes: Some(crate::score::Key::default().pitch_classes()), ..Default::default() };
        let t = Tracker::new(c, &e, Meter::new(4, 4));
        let m = mask(&t, &e);
        assert_eq!(&m[1..4], &[true, true, false]);
    }

    /// Two voices a fifth apart may not both move the same way to another fifth (or octave to
    /// octave); contrary or oblique motion into a fifth, and other intervals, stay allowed.
    #[test]
    fn no_parallels_refuses_fifths_and_octaves_in_similar_motion() {
        let mut table = vec![Effect::Other];
        for voice in 0..2u8 {
            for pitch in 48..=80u8 {
                table.push(Effect::NoteOn { pitch, voice });
            }
        }
        table.push(Effect::Duration(480));
        table.push(Effect::Advance(480));
        let e = Effects::new(table);
        let id = |pitch: u8, voice: u8| 1 + voice as usize * 33 + (pitch - 48) as usize;
        let (dur, wait) = (&e.table[67], &e.table[68]);
        let rules = Constraints { no_parallels: true, mono_voices: true, ..Default::default() };
        let mut t = Tracker::new(rules, &e, Meter::new(4, 4));
        // Soprano G4 (67) over alto C4 (60): a fifth. Then the alto moves up to D4 first.
        for (p, v) in [(67, 0), (60, 1)] {
            t.push(&e.table[id(p, v)]);
            t.push(dur);
        }
        t.push(wait);
        t.push(&e.table[id(62, 1)]);
        t.push(dur);
        let m = mask(&t, &e);
        assert!(!m[id(69, 0)], "G4/C4 to A4/D4 is parallel fifths");
        assert!(m[id(65, 0)], "down to F4 against D4 up is contrary motion");
        assert!(m[id(67, 0)], "G4 held over D4 is oblique");
        assert!(m[id(71, 0)], "B4 over D4 is a sixth");
        assert!(m[id(74, 0)], "D5 over D4 after a fifth is not parallel octaves");
        // Octaves: both an octave apart, both move up by a step, an octave again.
        let rules = Constraints { no_parallels: true, ..Default::default() };
        let mut t = Tracker::new(rules.clone(), &e, Meter::new(4, 4));
        for (p, v) in [(72, 0), (60, 1)] {
            t.push(&e.table[id(p, v)]);
            t.push(dur);
        }
        t.push(wait);
        t.push(&e.table[id(74, 0)]);
        t.push(dur);
        let m = mask(&t, &e);
        assert!(!m[id(62, 1)], "C5/C4 to D5/D4 is parallel octaves");
        assert!(m[id(59, 1)]);
        // Without the rule the same note is allowed.
        let mut free = Tracker::new(Constraints::default(), &e, Meter::new(4, 4));
        for eff in [&e.table[id(72, 0)], dur, &e.table[id(60, 1)], dur, wait, &e.table[id(74, 0)], dur] {
            free.push(eff);
        }
        assert!(mask(&free, &e)[id(62, 1)]);
    }

    #[test]
    fn end_on_final_resolves_to_the_finals_above_the_takes_tonic() {
        let g = crate::score::Key::new(4, 0, crate::score::Mode::Major);
        let finals = Constraints { end_on_final: true, ..Default::default() };
        let c = finals.for_take(Some(&g), Some(&[7, 9]));
        assert_eq!((c.cadence, c.end_on_final), (Some(vec![2, 4]), false), "D and E above G");
        assert_eq!(finals.for_take(Some(&g), None).cadence, Some(vec![7]), "no table: the tonic");
        assert_eq!(finals.for_take(Some(&g), Some(&[])).cadence, Some(vec![7]));
        assert_eq!(finals.for_take(None, Some(&[7])).cadence, None, "no key: no cadence");
        let both = Constraints { end_on_tonic: true, ..finals.clone() };
        assert_eq!(both.for_take(Some(&g), Some(&[7, 9])).cadence, Some(vec![7]), "the tonic wins");
        let counted = Constraints { bars: Some(8), ..finals.clone() };
        assert_eq!(counted.for_take(Some(&g), Some(&[7])).cadence, None, "a bar count decides the end");
    }

    #[test]
    fn in_key_resolves_to_the_keys_scale_or_its_pentatonic() {
        use crate::score::{Key, Mode};
        let a_minor = Key::new(5, 0, Mode::Minor);
        let c = Constraints { in_key: true, ..Default::default() };
        assert_eq!(c.for_key(&a_minor).pitch_classes, Some(vec![0, 2, 4, 5, 7, 9, 11]));
        let p = Constraints { in_key: true, pentatonic: true, ..Default::default() };
        // A minor pentatonic: the same five as C major's.
        assert_eq!(p.for_key(&a_minor).pitch_classes, Some(vec![0, 2, 4, 7, 9]));
        assert_eq!(p.for_key(&Key::new(4, 0, Mode::Major)).pitch_classes, Some(vec![2, 4, 7, 9, 11]));
        // Intersected with a set the caller gave; resolved rules say nothing more about the key.
        let both = Constraints { pitch_classes: Some(vec![0, 1, 2]), ..p.clone() }.for_key(&a_minor);
        assert_eq!(both.pitch_classes, Some(vec![0, 2]));
        assert!(!both.in_key && !both.pentatonic);
        // Without in_key, pentatonic alone does nothing.
        let alone = Constraints { pentatonic: true, ..Default::default() };
        assert_eq!(alone.for_key(&a_minor), alone);
    }

    #[test]
    fn polyphony_one_needs_a_note_off_first() {
        let e = effects();
        let c = Constraints { max_polyphony: Some(1), ..Default::default() };
        let mut t = Tracker::new(c, &e, Meter::new(4, 4));
        t.push(&Effect::NoteOn { pitch: 60, voice: 0 });
        assert_eq!(&mask(&t, &e)[1..4], &[false, false, false]);
        t.push(&Effect::Advance(480));
        t.push(&Effect::NoteOff(60));
        assert_eq!(&mask(&t, &e)[1..4], &[true, true, true]);
    }

    #[test]
    fn bar_limit_blocks_waits_past_the_end_and_then_finishes() {
        let e = effects();
        let c = Constraints { bars: Some(1), ..Default::default() };
        let mut t = Tracker::new(c, &e, Meter::new(2, 4));
        t.begin(0);
        assert_eq!(t.end_tick(), Some(960));
        assert!(!mask(&t, &e)[0], "no end token before the bar is full");
        t.push(&Effect::NoteOn { pitch: 60, voice: 0 });
        t.push(&Effect::Advance(480));
        let m = mask(&t, &e);
        assert!(m[7] && !m[8], "480 more fits, 960 does not");
        t.push(&Effect::Advance(480));
        assert!(!t.finished(), "the note is still open");
        let m = mask(&t, &e);
        assert!(!m[1] && !m[7] && m[4], "at the end only note-offs remain");
        t.push(&Effect::NoteOff(60));
        assert!(t.finished());
    }

    #[test]
    fn prompt_end_rounds_up_to_a_bar_line() {
        let e = effects();
        let mut t = Tracker::new(Constraints { bars: Some(2), ..Default::default() }, &e, Meter::new(3, 4));
        t.begin(1500);
        assert_eq!(t.end_tick(), Some(2880 + 2 * 1440));
    }

    #[test]
    fn remi_positions_stay_inside_the_meter() {
        let e = Effects::new(vec![
            Effect::Bar,
            Effect::Position(0),
            Effect::Position(1440),
            Effect::Position(1800),
            Effect::NoteOn { pitch: 60, voice: 0 },
            Effect::Duration(480),
        ]);
        let c = Constraints { whole_bars: true, bars: Some(1), ..Default::default() };
        let mut t = Tracker::new(c, &e, Meter::new(3, 4));
        t.begin(0);
        t.push(&Effect::Bar);
        t.push(&Effect::Position(0));
        let m = mask(&t, &e);
        // The bar line is allowed: it reaches the limit exactly, which ends the take.
        assert_eq!(m, vec![true, true, false, false, true, true]);
        t.push(&Effect::NoteOn { pitch: 60, voice: 0 });
        assert!(!mask(&t, &e)[4], "a pitch waits for its duration first");
        t.push(&Effect::Duration(480));
        assert!(mask(&t, &e)[4]);
        assert!(!t.finished());
        t.push(&Effect::Bar);
        assert!(t.finished());
    }

    #[test]
    fn mono_voices_keeps_one_note_per_voice_and_lets_the_others_sound() {
        // REMI-like: positions 0 and 240, pitches in voices 0 and 1, a quarter duration.
        let e = Effects::new(vec![
            Effect::Bar,
            Effect::Position(0),
            Effect::Position(240),
            Effect::NoteOn { pitch: 72, voice: 0 },
            Effect::NoteOn { pitch: 60, voice: 1 },
            Effect::NoteLead,
            Effect::Duration(480),
        ]);
        let mut t = Tracker::new(Constraints { mono_voices: true, ..Default::default() }, &e, Meter::new(4, 4));
        t.begin(0);
        t.push(&Effect::Bar);
        t.push(&Effect::Position(0));
        t.push(&Effect::NoteOn { pitch: 72, voice: 0 });
        t.push(&Effect::Duration(480));
        let m = mask(&t, &e);
        assert!(!m[3] && m[4] && m[5], "voice 0 is busy, voice 1 is free: {m:?}");
        t.push(&Effect::NoteOn { pitch: 60, voice: 1 });
        t.push(&Effect::Duration(480));
        let m = mask(&t, &e);
        assert!(!m[3] && !m[4] && !m[5], "both voices sound: no note, no velocity: {m:?}");
        assert!(!m[2], "no position where no voice is free (240 is inside both notes)");
        // Without the rule the same state allows a second note in voice 0.
        let mut free = t.clone();
        free.rules.mono_voices = false;
        assert!(mask(&free, &e)[3]);
    }
}
