//! The `cadenza` binary: parses the command line and hands over to the library.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// A terminal live-coding environment for neural symbolic music.
#[derive(Parser, Debug)]
#[command(name = "cadenza", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// With no subcommand: the REPL (or `-e EXPR`).
    #[command(flatten)]
    repl: cadenza::cli::repl::Args,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Convert between .abc, .mid and MusicXML (.xml, .musicxml, .mxl) by file extension.
    Convert(cadenza::cli::convert::Args),
    /// Train a model on a corpus.
    Train(cadenza::cli::train::Args),
    /// Continue a prompt with a model and write MIDI or ABC.
    Generate(cadenza::cli::generate::Args),
    /// Print the log-likelihood of scores under a model.
    Score(cadenza::cli::likelihood::Args),
    /// Run a Rhai script and exit.
    Run(cadenza::cli::run::Args),
    /// Compare generated takes with held-out real tunes (feature overlap, classifier AUC,
    /// novelty, BLEU).
    Eval(cadenza::cli::eval::Args),
    /// List the take history sessions keep (every gen and harmonize, replayable).
    Takes(cadenza::cli::takes::Args),
    /// Index a model's training tunes so sessions say when a take copies one.
    Copies(cadenza::cli::copies::Args),
    /// Count the keys, lengths and finals of a model's training tunes (open keys, lengths and
    /// endings are drawn from them).
    HeaderPrior(cadenza::cli::header_prior::Args),
    /// Store a model's weights in another float type (f16 halves their size).
    Weights(cadenza::cli::weights::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cadenza::sink::out::silence_alsa_diagnostics();
    let result = match cli.command {
        Some(Command::Convert(a)) => cadenza::cli::convert::run(a),
        Some(Command::Train(a)) => cadenza::cli::train::run(a),
        Some(Command::Generate(a)) => cadenza::cli::generate::run(a),
        Some(Command::Score(a)) => cadenza::cli::likelihood::run(a),
        Some(Command::Run(a)) => cadenza::cli::run::run(a),
        Some(Command::Eval(a)) => cadenza::cli::eval::run(a),
        Some(Command::Takes(a)) => cadenza::cli::takes::run(a),
        Some(Command::Copies(a)) => cadenza::cli::copies::run(a),
        Some(Command::HeaderPrior(a)) => cadenza::cli::header_prior::run(a),
        Some(Command::Weights(a)) => cadenza::cli::weights::run(a),
        None => cadenza::cli::repl::run(cli.repl),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cadenza::cli::report(&e));
            ExitCode::FAILURE
        }
    }
}
