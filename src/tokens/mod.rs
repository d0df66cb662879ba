//! Encodings: Score ⇄ token ids, vocabularies with conditioning tokens, incremental decoding, grammar masks.
//!
//! Contract shared with `gen` and `model` (owned by the tokens engineer; change with care):
//! - [`Encoding`] turns a Score into ids (conditioning prefix first) and back.
//! - [`Decoder`] consumes ids one at a time and yields each note as soon as it is complete.
//! - Decoding never panics on any id sequence: invalid successions are skipped and counted.
//!
//! # Encodings
//! - [`remi::Remi`] (`remi`): `Bar`, `Position`, optional `Velocity` bin, `Pitch` (combined with
//!   the voice when `voices > 1`), `Duration`; bars and positions on a grid of
//!   `steps_per_quarter`. Used by the bundled folk and chorale models.
//! - [`notewise::Notewise`] (`notewise`): Payne's note-on / note-off / wait-N-steps.
//! - [`chordwise::Chordwise`] (`chordwise`): one token per set of sounding pitches per step, the
//!   chord list built from a corpus, with `<unk-chord>`.
//! - [`tune::Tune`] (`tune`): one melody as ABC writes it: `Pitch`/`Rest` + `Len` (time moves on),
//!   bar lines, and repeats with first and second endings as ids (folded by the encoder,
//!   expanded in playing order by the decoder), so a whole folk tune fits a model's context.
//!   Used by the bundled folk GPT.
//!
//! Every sequence is `<bos>`, six conditioning tokens ([`condition`], one per category, `<unk>`
//! when missing), the music, `<eos>`. Id 0 is `<pad>` in every encoding.
//!
//! # Vocabularies
//! `encoding.vocab().save(dir)` writes `vocab.json` (name, settings, tokens);
//! [`load`]`(dir)` / [`by_name`]`(name, &vocab)` rebuild the encoding from the settings and
//! refuse a file whose token list differs from what the settings produce. To make a new
//! vocabulary use [`build`] (chordwise needs the training Scores to collect its chords) or the
//! encodings' own `new(Config)`.
//!
//! # Grammar masks (for `gen`)
//! Each id has a [`TokenKind`] (`encoding.kinds()[id]`): what it does to the music, so `gen`
//! never parses token strings. Per step, with the decoder that has seen every id so far:
//! ```ignore
//! let mut allowed = vec![true; enc.vocab().len()];
//! decoder.mask(&mut allowed); // the grammar
//! // `gen::constraints::Tracker::mask` then clears what the user's hard rules forbid
//! // sample among allowed ids, then:
//! let notes = decoder.push(id);
//! ```
//! [`Decoder::mask`] gives the grammar (what may follow at all: in REMI a `Duration` must
//! follow a `Pitch`, positions increase within a bar, nothing but `Bar` before the first bar).
//! Masks only clear entries, so several can be combined on one buffer; an id the mask allows is
//! always accepted by `push` (never skipped). The hard rules users set (key, range, polyphony,
//! bar count) live in `gen::constraints`, which sees ids only through their [`TokenKind`].

use crate::score::{Note, Score};
use crate::time::Tick;

/// The `Encoding` methods every encoding answers straight from the tables in its `inner`
/// (`vocab`, `kinds`, `cond`, `step`), written once here.
macro_rules! encoding_tables {
    () => {
        fn vocab(&self) -> &$crate::tokens::Vocab {
            &self.inner.vocab
        }

        fn condition(&self, cond: &$crate::tokens::Conditioning) -> Vec<u32> {
            $crate::tokens::prefix_ids(&self.inner.cond, cond)
        }

        fn kinds(&self) -> &[$crate::tokens::TokenKind] {
            &self.inner.kinds
        }

        fn cond_table(&self) -> &$crate::tokens::CondTable {
            &self.inner.cond
        }

        fn step(&self) -> $crate::time::Tick {
            self.inner.step
        }
    };
}

/// Clears in `out` every id whose kind `accepts` refuses, and every id past the vocabulary
/// (a model's output layer may be wider than the vocabulary it was trained with).
pub(crate) fn mask_by(kinds: &[TokenKind], out: &mut [bool], accepts: impl Fn(&TokenKind) -> bool) {
    for (i, ok) in out.iter_mut().enumerate() {
        if *ok {
            *ok = kinds.get(i).is_some_and(&accepts);
        }
    }
}

pub mod chordwise;
pub mod condition;
pub mod notewise;
pub mod remi;
pub mod tune;
pub mod vocab;

pub use condition::{Category, CondSpec, CondTable, CondToken};
pub use vocab::Vocab;

/// Errors from encoding or loading vocabularies.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown encoding `{0}` (known: notewise, chordwise, remi, tune)")]
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

/// What one id means, so generation can reason about ids without parsing strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Padding for batches (id 0); never valid in a sequence.
    Pad,
    /// Start of a sequence (before the conditioning).
    Bos,
    /// End of the piece.
    Eos,
    /// A conditioning label (a meter token right after `Bar` also changes the meter there).
    Cond(CondToken),
    /// REMI: a new bar starts.
    Bar,
    /// REMI: onset offset inside the current bar, in ticks.
    Position(Tick),
    /// REMI: the velocity of the next note (the bin's centre).
    Velocity(u8),
    /// REMI: a note of this pitch and voice starts at the current position; its `Duration` follows.
    Pitch { pitch: u8, voice: u8 },
    /// REMI: length of the note just started, in ticks.
    Duration(Tick),
    /// Notewise: a note starts now.
    NoteOn { pitch: u8, voice: u8 },
    /// Notewise: the sounding note of this pitch ends now.
    NoteOff { pitch: u8, voice: u8 },
    /// Notewise: time moves on by this many ticks.
    Wait(Tick),
    /// Chordwise: exactly these pitches sound for one grid step ([`Encoding::step`]; empty =
    /// rest), then time moves on by that step.
    Chord(Vec<u8>),
    /// Chordwise: a set of pitches the vocabulary does not have (decoded as a rest step).
    ChordUnk,
    /// Tune: a bar line; it does not move time (bars may be short, as pickups are).
    BarLine,
    /// Tune: `|:`, a strain that will be played twice starts here.
    RepeatStart,
    /// Tune: `:|`, play the strain again (up to its first ending) from here.
    RepeatEnd,
    /// Tune: `[1` or `[2`, the first or second ending of a repeated strain.
    Ending(u8),
    /// Tune: a rest; its `Step` follows.
    Rest,
    /// Tune: length of the note or rest just named; time moves on by it.
    Step(Tick),
}

/// A note a decoder knows is sounding (or waiting for its length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sounding {
    pub pitch: u8,
    pub voice: u8,
    pub start: Tick,
    /// `None` while the end is not yet known (REMI before its `Duration`, notewise before
    /// its note-off).
    pub end: Option<Tick>,
}

/// Where a decoder stands: what masks and constraints need to know.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecoderState {
    /// Where the next event would land, in ticks.
    pub position: Tick,
    /// Start of the current bar (`None` before the first bar is known).
    pub bar_start: Option<Tick>,
    /// Length of the current bar in ticks (its meter).
    pub bar_ticks: Tick,
    /// Bars completed so far (see [`Decoder::bars`]).
    pub bars: u32,
    /// Notes sounding at `position` or waiting for their end.
    pub sounding: Vec<Sounding>,
    /// Still reading the `<bos>` + conditioning prefix (no music token yet).
    pub in_prefix: bool,
    /// `<eos>` was read.
    pub ended: bool,
}

/// One way to write music as a sequence of token ids.
pub trait Encoding: Send + Sync {
    /// `notewise`, `chordwise` or `remi`.
    fn name(&self) -> &'static str;
    fn vocab(&self) -> &Vocab;
    /// The conditioning prefix for `cond`: `<bos>` and one token per category (unknown or
    /// missing labels map to that category's `<unk>`).
    fn condition(&self, cond: &Conditioning) -> Vec<u32>;
    /// Conditioning read from the score's meta, then the music, then `<eos>`. Notes the
    /// vocabulary cannot express (pitch out of range, voice beyond the encoding's voices) are
    /// left out; times are rounded to the grid.
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
    /// What each id means, indexed by id.
    fn kinds(&self) -> &[TokenKind];
    /// The meaning of one id (`None` outside the vocabulary).
    fn kind(&self, id: u32) -> Option<&TokenKind> {
        self.kinds().get(id as usize)
    }
    /// The conditioning tokens of this vocabulary (labels, meters).
    fn cond_table(&self) -> &CondTable;
    /// The known labels of a category, for listing to users (`style` → `irish`, ...).
    fn labels(&self, category: Category) -> Vec<String> {
        self.cond_table().labels(category)
    }
    /// Ticks per grid step: every time this encoding writes is a multiple of it.
    fn step(&self) -> Tick;
}

/// Result of decoding: the score and how many ids were skipped as invalid.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    pub score: Score,
    pub skipped: usize,
}

/// Incremental decoder: push ids, get notes as soon as each one's end is known.
pub trait Decoder: Send {
    /// Feeds one id; returns the notes completed by it (usually none or one). An id that is
    /// invalid here (out of range, or not allowed by the grammar) is skipped and counted.
    fn push(&mut self, id: u32) -> Vec<Note>;
    /// Current musical position in ticks (where the next event would land).
    fn position(&self) -> crate::time::Tick;
    /// Bars completed so far: in REMI the `Bar` tokens after the first; in the time-based
    /// encodings the bar lines the position has passed (by the conditioning meter).
    fn bars(&self) -> u32;
    /// Ids skipped as invalid so far.
    fn skipped(&self) -> usize;
    /// Clears in `out` every id the grammar forbids next (see the module docs).
    fn mask(&self, out: &mut [bool]);
    /// Position, bar and sounding notes, for constraints.
    fn state(&self) -> DecoderState;
    /// A copy with the same state (to branch a take).
    fn box_clone(&self) -> Box<dyn Decoder>;
    /// Ends the sequence: closes open notes and returns everything decoded.
    fn finish(self: Box<Self>) -> Decoded;
}

/// The encoding a vocabulary was saved for, rebuilt from its settings. Fails with a clear
/// reason when `name` differs from the vocabulary's encoding, the settings do not parse, or the
/// tokens differ from what the settings produce (a vocabulary from another version or model).
pub fn by_name(name: &str, vocab: &Vocab) -> Result<Box<dyn Encoding>, TokenError> {
    let err = |reason: String| TokenError::Vocab { path: "vocab.json".into(), reason };
    if vocab.encoding != name {
        return Err(err(format!("it is for the `{}` encoding, not `{name}`", vocab.encoding)));
    }
    let settings = |e: serde_json::Error| err(format!("bad `{name}` settings: {e}"));
    let enc: Box<dyn Encoding> = match name {
        "remi" => Box::new(remi::Remi::new(serde_json::from_value(vocab.settings.clone()).map_err(settings)?)?),
        "notewise" => {
            Box::new(notewise::Notewise::new(serde_json::from_value(vocab.settings.clone()).map_err(settings)?)?)
        }
        "chordwise" => {
            Box::new(chordwise::Chordwise::new(serde_json::from_value(vocab.settings.clone()).map_err(settings)?)?)
        }
        "tune" => Box::new(tune::Tune::new(serde_json::from_value(vocab.settings.clone()).map_err(settings)?)?),
        other => return Err(TokenError::UnknownEncoding(other.to_string())),
    };
    check_tokens(enc.vocab(), vocab).map_err(err)?;
    Ok(enc)
}

/// The encoding a vocabulary names (see [`by_name`]).
pub fn from_vocab(vocab: &Vocab) -> Result<Box<dyn Encoding>, TokenError> {
    by_name(&vocab.encoding, vocab)
}

/// Reads `dir/vocab.json` (or a vocab file) and rebuilds its encoding, with the path in errors.
pub fn load(path: &std::path::Path) -> Result<Box<dyn Encoding>, TokenError> {
    let vocab = Vocab::load(path)?;
    from_vocab(&vocab).map_err(|e| match e {
        TokenError::Vocab { reason, .. } => TokenError::Vocab { path: path.display().to_string(), reason },
        e => e,
    })
}

fn check_tokens(built: &Vocab, saved: &Vocab) -> Result<(), String> {
    if built.tokens == saved.tokens {
        return Ok(());
    }
    if built.len() != saved.len() {
        return Err(format!(
            "it has {} tokens but its settings give {} (saved by another version?)",
            saved.len(),
            built.len()
        ));
    }
    let (i, (a, b)) = built
        .tokens
        .iter()
        .zip(&saved.tokens)
        .enumerate()
        .find(|(_, (a, b))| a != b)
        .unwrap_or((0, (&built.tokens[0], &saved.tokens[0])));
    Err(format!("token {i} is `{b}` but its settings give `{a}`"))
}

/// A new encoding with default settings for `name`, conditioning labels from `spec`; chordwise
/// collects its chords from `scores` (the training set), the others ignore them.
pub fn build(name: &str, spec: &CondSpec, scores: &[Score]) -> Result<Box<dyn Encoding>, TokenError> {
    Ok(match name {
        "remi" => Box::new(remi::Remi::new(remi::RemiConfig { cond: spec.clone(), ..Default::default() })?),
        "notewise" => {
            Box::new(notewise::Notewise::new(notewise::NotewiseConfig { cond: spec.clone(), ..Default::default() })?)
        }
        "chordwise" => Box::new(chordwise::Chordwise::from_scores(
            chordwise::ChordwiseConfig { cond: spec.clone(), ..Default::default() },
            scores,
        )?),
        "tune" => Box::new(tune::Tune::new(tune::TuneConfig { cond: spec.clone(), ..Default::default() })?),
        other => return Err(TokenError::UnknownEncoding(other.to_string())),
    })
}

/// Names of the encodings [`by_name`] knows.
pub const ENCODINGS: [&str; 4] = ["remi", "notewise", "chordwise", "tune"];

/// Special tokens every vocabulary starts with, in id order.
pub const SPECIALS: [&str; 3] = ["<pad>", "<bos>", "<eos>"];
pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;

/// Default velocity for notes when the encoding keeps none.
pub const DEFAULT_VELOCITY: u8 = 80;

/// Velocity bins: `bins` equal slices of 1..=127; returns the bin of `v`.
pub fn velocity_bin(v: u8, bins: u32) -> u32 {
    let v = v.clamp(1, 127) as u32;
    ((v - 1) * bins / 127).min(bins.saturating_sub(1))
}

/// The centre velocity of bin `b` of `bins` (maps back to `b`).
pub fn bin_velocity(b: u32, bins: u32) -> u8 {
    let bins = bins.max(1);
    let lo = (b * 127).div_ceil(bins) + 1;
    let hi = ((b + 1) * 127).div_ceil(bins);
    ((lo + hi.max(lo)) / 2).clamp(1, 127) as u8
}

/// The shared first part of every vocabulary: specials, then the conditioning tokens.
pub(crate) fn prefix_tokens(cond: &CondTable) -> (Vec<String>, Vec<TokenKind>) {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut kinds = vec![TokenKind::Pad, TokenKind::Bos, TokenKind::Eos];
    tokens.extend(cond.tokens.iter().cloned());
    kinds.extend(cond.meanings.iter().map(|m| TokenKind::Cond(*m)));
    (tokens, kinds)
}

/// Checks the settings every encoding shares and returns its grid step in ticks: grid steps
/// per quarter that divide [`crate::time::PPQ`] (at most 48), and a pitch range inside MIDI's.
pub(crate) fn check_grid(name: &str, steps_per_quarter: u32, pitch_lo: u8, pitch_hi: u8) -> Result<Tick, TokenError> {
    use crate::time::PPQ;
    let bad = |r: String| TokenError::Other(format!("{name} settings: {r}"));
    let spq = steps_per_quarter;
    if spq == 0 || !PPQ.is_multiple_of(spq) || spq > 48 {
        return Err(bad(format!("steps_per_quarter {spq} must divide {PPQ} and be at most 48")));
    }
    if pitch_lo > pitch_hi || pitch_hi > 127 {
        return Err(bad(format!("pitch range {pitch_lo}..={pitch_hi} is empty or beyond 127")));
    }
    Ok((PPQ / spq) as Tick)
}

/// Writes the meter changes a decoder read into `meta`: `initial` at tick 0 when the first
/// change comes later, a later change at the same tick replacing an earlier one.
pub(crate) fn apply_meter_changes(
    meta: &mut crate::score::Meta,
    changes: &[(Tick, crate::time::Meter)],
    initial: crate::time::Meter,
) {
    for (tick, m) in changes {
        if meta.meters.is_empty() && *tick > 0 {
            meta.meters.push((0, initial));
        }
        meta.meters.retain(|(t, _)| t != tick);
        meta.meters.push((*tick, *m));
    }
}

/// `<bos>` and the six conditioning ids for `c` (conditioning ids follow the specials).
pub(crate) fn prefix_ids(cond: &CondTable, c: &Conditioning) -> Vec<u32> {
    let mut ids = vec![BOS];
    ids.extend(cond.prefix(c).iter().map(|&i| (i + SPECIALS.len()) as u32));
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn velocity_bins_round_trip() {
        for bins in [1u32, 4, 8, 16, 32, 127] {
            for b in 0..bins {
                assert_eq!(velocity_bin(bin_velocity(b, bins), bins), b, "bins {bins} bin {b}");
            }
        }
        assert_eq!(velocity_bin(1, 8), 0);
        assert_eq!(velocity_bin(127, 8), 7);
    }
}
