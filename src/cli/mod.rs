//! Command-line subcommands: each file parses its arguments (clap) and drives the library.

pub mod convert;
pub mod eval;
pub mod export;
pub mod generate;
pub mod likelihood;
pub mod repl;
pub mod run;
pub mod train;
