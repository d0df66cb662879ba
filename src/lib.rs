//! cadenza: a terminal live-coding environment for neural symbolic music.
//!
//! The data path runs one way (see `DESIGN.md`): text → [`dsl`] → [`score::Score`] →
//! [`tokens`] → [`model`] / [`gen`] → [`score::Score`] → [`play`] and [`sink`].

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
pub mod time;
pub mod tokens;
