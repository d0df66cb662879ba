//! Encodings: Score ⇄ token ids, vocabularies with conditioning tokens, incremental decoding, grammar masks.
//!
//! Contract shared with `gen` and `model` (owned by the tokens engineer; change with care):
//! - [`Encoding`] turns a Score into ids (conditioning prefix first) and back.
//! - [`Decoder`] consumes ids one at a time and yields each note as soon as it is complete.
//! - Decoding never panics on any id sequence: invalid successions are skipped and counted.

use crate::score::{Note, Score};

pub mod vocab;

pub use vocab::Vocab;

/// Errors from encoding or loading vocabularies.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown encoding `{0}` (known: notewise, chordwise, remi)")]
    UnknownEncoding(String),
    #[error("vocabulary {path}: {reason}")]
    Vocab { path: String, reason: String },
    #[error("{0}")]
    Other(String),
}

/// What the model is asked to condition on; each becomes a token before the music.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditioning {
    pub style: Option<String>,
    pub composer: Option<String>,
    pub instrument: Option<String>,
    pub key: Option<crate::score::Key>,
    pub meter: Option<crate::time::Meter>,
    pub bpm: Option<f64>,
}

/// One way to write music as a sequence of token ids.
pub trait Encoding: Send + Sync {
    /// `notewise`, `chordwise` or `remi`.
    fn name(&self) -> &'static str;
    fn vocab(&self) -> &Vocab;
    /// The conditioning prefix for `cond` (unknown labels map to the vocabulary's unknown token).
    fn condition(&self, cond: &Conditioning) -> Vec<u32>;
    /// Conditioning read from the score's meta, then the music.
    fn encode(&self, score: &Score) -> Vec<u32>;
    /// A fresh incremental decoder.
    fn decoder(&self) -> Box<dyn Decoder>;
    /// Decodes a whole sequence (conditioning prefix allowed).
    fn decode(&self, ids: &[u32]) -> Decoded {
        let mut d = self.decoder();
        for &id in ids {
            d.push(id);
        }
        d.finish()
    }
}

/// Result of decoding: the score and how many ids were skipped as invalid.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub score: Score,
    pub skipped: usize,
}

/// Incremental decoder: push ids, get notes as soon as each one's end is known.
pub trait Decoder: Send {
    /// Feeds one id; returns the notes completed by it (usually none or one).
    fn push(&mut self, id: u32) -> Vec<Note>;
    /// Current musical position in ticks (where the next event would land).
    fn position(&self) -> crate::time::Tick;
    /// Bars completed so far.
    fn bars(&self) -> u32;
    /// Ends the sequence: closes open notes and returns everything decoded.
    fn finish(self: Box<Self>) -> Decoded;
}
