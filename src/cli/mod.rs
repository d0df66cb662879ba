//! Command-line subcommands: each file parses its arguments (clap) and drives the library.

pub mod convert;
pub mod copies;
pub mod eval;
pub mod export;
pub mod generate;
pub mod header_prior;
pub mod heap;
pub mod likelihood;
pub mod repl;
pub mod run;
pub mod takes;
pub mod train;
pub mod training_tunes;
pub mod weights;

/// The error and those causes its message does not already quote. Our error types print their
/// source inside their own message (a DSL error's caret must stay under its line), so anyhow's
/// default report would print the same caret twice.
pub fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str("\ncaused by: ");
            out.push_str(&c);
        }
    }
    out
}
