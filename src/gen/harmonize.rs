//! Harmonising a given melody: the melody is one voice of the take, note for note; the model samples the others.
//!
//! The melody (its top line) becomes a [`FixedVoice`] constraint on voice 0 (the soprano of the
//! four-voice chorale model): at each of its onsets the take must write that note first, with its
//! pitch and length, and time may not pass an onset still owed. The other voices are sampled as
//! usual (one line each, `mono_voices`), for exactly the melody's bars, in its key and meter.

use super::constraints::FixedVoice;
use super::generator::Generator;
use super::job::{Length, Request, Take};
use super::GenError;
use crate::score::Score;
use crate::time::Tick;
use crate::tokens::TokenKind;
use std::sync::atomic::AtomicBool;

/// Most notes a melody to harmonise may have.
pub const MAX_MELODY_NOTES: usize = 4096;

/// The melody's top line, `(start, dur, pitch)`: the highest of notes starting together, each
/// cut where the next starts.
fn top_line(melody: &Score) -> Vec<(Tick, Tick, u8)> {
    let mut notes: Vec<_> = melody.notes.iter().map(|n| (n.start, n.dur, n.pitch)).collect();
    notes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)));
    notes.dedup_by_key(|n| n.0);
    for i in 0..notes.len() {
        let next = notes.get(i + 1).map_or(Tick::MAX, |n| n.0);
        notes[i].1 = notes[i].1.min(next - notes[i].0);
    }
    notes
}

/// Harmonises `melody` with `gen`'s model, sampling with `base`'s settings (its prompt is
/// ignored: the melody's key, meter and tempo condition the take); `cancel` stops it before
/// its next token.
pub fn harmonize(gen: &Generator, melody: &Score, base: &Request, cancel: &AtomicBool) -> Result<Take, GenError> {
    let enc = gen.encoding();
    let bad = |why: String| GenError::Request(format!("harmonize: {why}"));
    let has_voice = |v: u8| enc.kinds().iter().any(|k| matches!(k, TokenKind::Pitch { voice, .. } if *voice == v));
    if !(has_voice(0) && has_voice(1)) {
        return Err(bad(format!(
            "model `{}` writes a single line; harmonising needs a model with several voices (chorale)",
            gen.name()
        )));
    }
    let aligned = melody.align_pickup();
    let notes = top_line(&aligned);
    if notes.is_empty() {
        return Err(bad("the melody has no notes".into()));
    }
    if notes.len() > MAX_MELODY_NOTES {
        return Err(bad(format!("the melody has {} notes; at most {MAX_MELODY_NOTES}", notes.len())));
    }
    let step = enc.step();
    let pitch_ok = |p: u8| enc.kinds().iter().any(|k| matches!(k, TokenKind::Pitch { pitch, voice: 0 } if *pitch == p));
    let dur_ok = |d: Tick| enc.kinds().iter().any(|k| matches!(k, TokenKind::Duration(x) if *x == d));
    let bar = aligned.meter().bar_ticks().max(1);
    for &(s, d, p) in &notes {
        let at = format!("bar {} (tick {s})", s / bar + 1);
        if s % step != 0 || d % step != 0 || !dur_ok(d) {
            return Err(bad(format!("the note at {at} is off the model's grid of {step} ticks or too long")));
        }
        if !pitch_ok(p) {
            return Err(bad(format!("the note at {at} (pitch {p}) is outside the voice's range")));
        }
    }
    let bars = aligned.length.max(notes.last().map_or(0, |n| n.0 + n.1)).div_ceil(bar) as u32;
    let mut prompt = Score::new();
    prompt.meta = aligned.meta.clone();
    let mut request = Request::new(prompt, Length::Bars(bars.max(1)));
    request.sampling = base.sampling.clone();
    request.seed = base.seed;
    request.overrides = base.overrides.clone();
    request.constraints = base.constraints.clone();
    request.constraints.mono_voices = true;
    request.constraints.fixed = Some(FixedVoice { voice: 0, notes });
    gen.generate_cancellable(&request, cancel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Note;

    #[test]
    fn the_top_line_keeps_the_highest_note_and_cuts_overlaps() {
        let mut s = Score::new();
        s.notes = vec![Note::new(0, 960, 60), Note::new(0, 480, 67), Note::new(480, 480, 65)];
        s.normalize();
        assert_eq!(top_line(&s), vec![(0, 480, 67), (480, 480, 65)]);
    }
}
