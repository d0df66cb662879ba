//! Hard constraints on the next token (key or pitch-class set, range, polyphony, whole bars, an end).
//!
//! The grammar (which successions are valid at all) is each decoder's own [`super::Decoder::mask`];
//! this module adds the rules a user sets, judged from the [`TokenKind`] of each id and the
//! decoder's [`DecoderState`], so it works the same for every encoding:
//!
//! - `pitch_classes` / `range`: a note start (`Pitch`, `NoteOn`, every pitch of a `Chord`) must
//!   use an allowed pitch; note-offs are always allowed, so a note can always end.
//! - `max_polyphony`: a note may start only while fewer notes sound (`Chord` sizes too).
//! - `whole_bars`: time never jumps over a bar line (a notewise wait stops at the line), so bars
//!   add up to the meter; REMI positions stay inside the bar (its grammar already does this).
//! - `end`: the absolute tick where the piece must stop (see [`Constraints::bars_from`]): no note
//!   starts at or after it, no note lasts past it, no time moves past it, no REMI bar opens at or
//!   after it, the meter does not change, and `<eos>` is allowed only once it is reached with
//!   every note closed.

use super::{DecoderState, TokenKind};
use crate::time::Tick;
use serde::{Deserialize, Serialize};

/// Hard rules for generation. The default constrains nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Constraints {
    /// Allowed pitch classes (0 = C .. 11 = B), e.g. `Key::pitch_classes()`.
    pub pitch_classes: Option<Vec<u8>>,
    /// Lowest and highest allowed MIDI pitch, inclusive.
    pub range: Option<(u8, u8)>,
    /// Most notes sounding at once (1 = monophonic).
    pub max_polyphony: Option<usize>,
    /// Time moves bar line to bar line: no wait jumps across one.
    pub whole_bars: bool,
    /// Absolute tick where the music must end.
    pub end: Option<Tick>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        *self == Constraints::default()
    }

    /// Sets `end` to exactly `n` bars after `state`: counted from the next bar line at or after
    /// the state's position (the current bar when it is empty so far).
    pub fn bars_from(mut self, state: &DecoderState, n: u32) -> Self {
        let bar = state.bar_ticks.max(1);
        let origin = state.bar_start.unwrap_or(0);
        let rel = state.position.saturating_sub(origin);
        let line = origin + rel.div_ceil(bar) * bar;
        self.end = Some(line + n as Tick * bar);
        self
    }

    /// True when `pitch` passes the pitch-class and range rules.
    pub fn pitch_ok(&self, pitch: u8) -> bool {
        self.pitch_classes.as_ref().is_none_or(|pcs| pcs.contains(&(pitch % 12)))
            && self.range.is_none_or(|(lo, hi)| pitch >= lo && pitch <= hi)
    }
}

/// Clears in `out` every id whose kind would break `c` in `state`. Ids already false stay false.
/// `step` is the encoding's grid step (how far a chordwise token moves time).
pub fn apply(kinds: &[TokenKind], step: Tick, state: &DecoderState, c: &Constraints, out: &mut [bool]) {
    let pos = state.position;
    let sounding = state.sounding.iter().filter(|s| s.end.is_none_or(|e| e > pos)).count();
    let open = state.sounding.iter().any(|s| s.end.is_none());
    let explicit_bars = kinds.iter().any(|k| matches!(k, TokenKind::Bar));
    let bar = state.bar_ticks.max(1);
    let bar_origin = state.bar_start.unwrap_or(0);
    // With explicit bars, the piece may stop once the current bar reaches the end; with time
    // only, once the position does.
    let reached = match c.end {
        None => true,
        Some(end) if explicit_bars => state.bar_start.is_some_and(|b| b + bar >= end) || pos >= end,
        Some(end) => pos >= end,
    };
    let before_end = |t: Tick| c.end.is_none_or(|e| t < e);
    let within_end = |t: Tick| c.end.is_none_or(|e| t <= e);
    let room = c.max_polyphony.is_none_or(|m| sounding < m);
    for (id, ok) in out.iter_mut().enumerate() {
        if !*ok {
            continue;
        }
        let Some(k) = kinds.get(id) else { continue };
        *ok = match k {
            TokenKind::Pitch { pitch, .. } | TokenKind::NoteOn { pitch, .. } => {
                c.pitch_ok(*pitch) && room && before_end(pos)
            }
            TokenKind::Duration(d) => within_end(pos + d),
            TokenKind::Wait(d) => {
                let to = pos + d;
                let next_line = bar_origin + (pos.saturating_sub(bar_origin) / bar + 1) * bar;
                within_end(to) && (!c.whole_bars || to <= next_line)
            }
            // A position or velocity promises a note next: only where one may start.
            TokenKind::Position(t) => {
                let to = bar_origin + t;
                let busy = state.sounding.iter().filter(|s| s.end.is_none_or(|e| e > to)).count();
                before_end(to) && (!c.whole_bars || *t < bar) && c.max_polyphony.is_none_or(|m| busy < m)
            }
            TokenKind::Velocity(_) => room && before_end(pos),
            TokenKind::Bar => {
                let next = match state.bar_start {
                    Some(b) => b + bar,
                    None => pos - pos % bar,
                };
                before_end(next)
            }
            TokenKind::Chord(pitches) => {
                pitches.iter().all(|&p| c.pitch_ok(p))
                    && c.max_polyphony.is_none_or(|m| pitches.len() <= m)
                    && within_end(pos + step)
                    && (!c.whole_bars || pos + step <= bar_origin + (pos.saturating_sub(bar_origin) / bar + 1) * bar)
            }
            // An unknown chord decodes as a rest step; it cannot break pitch rules.
            TokenKind::ChordUnk => within_end(pos + step),
            TokenKind::Eos => reached && !open,
            // A meter change inside the music would move the bar lines an end was counted in.
            TokenKind::Cond(_) => state.in_prefix || c.end.is_none(),
            _ => true,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Sounding;

    fn kinds() -> Vec<TokenKind> {
        vec![
            TokenKind::Eos,
            TokenKind::NoteOn { pitch: 60, voice: 0 },
            TokenKind::NoteOn { pitch: 61, voice: 0 },
            TokenKind::NoteOff { pitch: 60, voice: 0 },
            TokenKind::Wait(480),
            TokenKind::Wait(960),
        ]
    }

    fn run(state: &DecoderState, c: &Constraints) -> Vec<bool> {
        let mut out = vec![true; 6];
        apply(&kinds(), 40, state, c, &mut out);
        out
    }

    #[test]
    fn key_and_polyphony() {
        let s = DecoderState { bar_ticks: 1920, ..Default::default() };
        let c = Constraints { pitch_classes: Some(vec![0, 2, 4, 5, 7, 9, 11]), ..Default::default() };
        assert_eq!(run(&s, &c), [true, true, false, true, true, true]);
        let s2 = DecoderState {
            sounding: vec![Sounding { pitch: 60, voice: 0, start: 0, end: None }],
            bar_ticks: 1920,
            ..Default::default()
        };
        let c = Constraints { max_polyphony: Some(1), ..Default::default() };
        assert_eq!(run(&s2, &c), [false, false, false, true, true, true], "no new note, no end while open");
    }

    #[test]
    fn end_and_whole_bars() {
        // 2/4 bar (960 ticks), at 480 with one bar to go: only a 480 wait fits.
        let s = DecoderState { position: 480, bar_start: Some(0), bar_ticks: 960, ..Default::default() };
        let c = Constraints::default().bars_from(&DecoderState { bar_ticks: 960, ..Default::default() }, 1);
        assert_eq!(c.end, Some(960));
        assert_eq!(run(&s, &c), [false, true, true, true, true, false]);
        let at_end = DecoderState { position: 960, ..s.clone() };
        assert_eq!(run(&at_end, &c), [true, false, false, true, false, false]);
        let wb = Constraints { whole_bars: true, ..Default::default() };
        assert_eq!(run(&s, &wb)[4..], [true, false], "a wait may not jump the bar line");
    }
}
