//! cadenza: a terminal live-coding environment for neural symbolic music.
//!
//! The data path runs one way (see `ARCHITECTURE.md`): text → [`dsl`] → [`score::Score`] →
//! [`tokens`] → [`model`] / [`gen`] → [`score::Score`] → [`play`] and [`sink`].
//!
//! ABC text to a score to the bytes of a Standard MIDI File, and back:
//!
//! ```
//! let tune = cadenza::dsl::parse("X:1\nT:Kesh\nM:6/8\nL:1/8\nK:G\nGAG GAB|ABA ABd|\n").unwrap();
//! assert_eq!(tune.notes.len(), 12);
//! assert_eq!(tune.notes[0].pitch, 67); // G above middle C
//! assert_eq!(tune.bar_count(), 2);
//!
//! let bytes = cadenza::sink::midi_file::to_bytes(&tune).unwrap();
//! assert_eq!(&bytes[..4], b"MThd");
//! let back = cadenza::sink::midi_file::read_bytes(&bytes).unwrap();
//! assert_eq!(back.notes, tune.notes);
//! ```

pub mod cli;
pub mod corpus;
pub mod dsl;
pub mod eval;
pub mod gen;
pub mod model;
pub mod play;
pub mod repl;
pub mod score;
pub mod script;
pub mod sink;
pub mod strains;
pub mod time;
pub mod tokens;
