//! What the tokens of an encoding mean to generation: token effects for constraints, labels, the encoding by name.

use super::constraints::{Effect, Effects, Sign};
use super::GenError;
use crate::tokens::{Category, Encoding, TokenKind, Vocab};
use std::sync::Arc;

/// The encoding a vocabulary was saved for (checked against its token list).
pub fn encoding_for(vocab: &Vocab) -> Result<Arc<dyn Encoding>, GenError> {
    Ok(Arc::from(crate::tokens::from_vocab(vocab)?))
}

/// One constraint effect per id, from the encoding's token kinds.
pub fn effects(encoding: &dyn Encoding) -> Effects {
    let step = encoding.step();
    Effects::new(encoding.kinds().iter().map(|k| effect_of(k, step)).collect())
}

fn effect_of(kind: &TokenKind, step: crate::time::Tick) -> Effect {
    match kind {
        TokenKind::Cond(c) if c.category == Category::Meter => Effect::MeterChange,
        TokenKind::Pad | TokenKind::Bos | TokenKind::Cond(_) => Effect::Other,
        TokenKind::Velocity(_) => Effect::NoteLead,
        TokenKind::Eos => Effect::End,
        TokenKind::Bar => Effect::Bar,
        TokenKind::Position(t) => Effect::Position(*t),
        TokenKind::Pitch { pitch, voice } | TokenKind::NoteOn { pitch, voice } => {
            Effect::NoteOn { pitch: *pitch, voice: *voice }
        }
        TokenKind::Duration(d) => Effect::Duration(*d),
        TokenKind::NoteOff { pitch, .. } => Effect::NoteOff(*pitch),
        TokenKind::Wait(t) => Effect::Advance(*t),
        TokenKind::Chord(pitches) => Effect::Chord { pitches: pitches.clone(), step },
        TokenKind::ChordUnk => Effect::Chord { pitches: Vec::new(), step },
        TokenKind::BarLine => Effect::BarLine,
        TokenKind::RepeatStart => Effect::Structure(Sign::RepeatStart),
        TokenKind::RepeatEnd => Effect::Structure(Sign::RepeatEnd),
        TokenKind::Ending(n) => Effect::Structure(Sign::Ending(*n)),
        TokenKind::Rest => Effect::RestLead,
        TokenKind::Step(d) => Effect::NoteLength(*d),
    }
}

/// Style and instrument labels the encoding has conditioning tokens for.
pub fn labels(encoding: &dyn Encoding) -> (Vec<String>, Vec<String>) {
    (encoding.labels(Category::Style), encoding.labels(Category::Instrument))
}
