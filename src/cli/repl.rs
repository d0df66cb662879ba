//! `cadenza` with no subcommand: the REPL, or `-e EXPR` to evaluate one expression and exit.

use crate::script::{self, Options, Session};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Arguments of the top-level binary (no subcommand).
#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Evaluate EXPR, print its value and exit (after what it played has sounded).
    #[arg(short = 'e', long = "eval", value_name = "EXPR")]
    pub eval: Option<String>,
    #[command(flatten)]
    pub session: SessionArgs,
    /// vi key bindings in the REPL.
    #[arg(long)]
    pub vi: bool,
    /// History file (default: $CADENZA_HISTORY, else the XDG data dir).
    #[arg(long, value_name = "FILE")]
    pub history: Option<std::path::PathBuf>,
}

/// What every way of running scripts (REPL, `-e`, `run`) shares: model, port, time limit.
#[derive(clap::Args, Debug, Default)]
pub struct SessionArgs {
    /// Model for gen() until a script calls model() (a name in models/ or a directory).
    #[arg(long, default_value = crate::model::DEFAULT_MODEL)]
    pub model: String,
    /// MIDI output port (substring of its name, or its number); default: a virtual port `cadenza`.
    #[arg(long)]
    pub port: Option<String>,
    /// Open no MIDI port (music is scheduled but sounds nowhere).
    #[arg(long)]
    pub no_midi: bool,
    /// With -e or run: let loops play at most this long after the script ends, then stop them
    /// at the end of their cycle (without it, until the script stops them).
    #[arg(long = "for", value_name = "SECONDS")]
    pub for_seconds: Option<f64>,
    /// Where takes are kept as JSON lines (default: `takes.jsonl` beside the REPL history,
    /// `$CADENZA_HISTORY` or the XDG data dir); `cadenza takes` lists them.
    #[arg(long, value_name = "FILE")]
    pub takes: Option<std::path::PathBuf>,
    /// A folder scripts may read and write besides the working folder (repeatable). Scripts
    /// may use no other files: load, save, abc of a file, read_text and write_text refuse
    /// paths outside, symbolic links followed.
    #[arg(long = "allow-dir", value_name = "DIR")]
    pub allow_dirs: Vec<std::path::PathBuf>,
}

/// The take history every session shares unless told otherwise: `takes.jsonl` beside the
/// default REPL history.
pub fn default_takes_file() -> Option<std::path::PathBuf> {
    crate::repl::default_history_path().map(|h| script::takes::beside(&h))
}

/// Session options from the shared flags; a granted folder that does not exist is an error.
pub fn options(args: &SessionArgs, output: script::Output) -> anyhow::Result<Options> {
    let mut o = Options::new(output);
    o.sandbox = script::sandbox::Sandbox::new(&args.allow_dirs)?;
    o.takes_file = args.takes.clone().or_else(default_takes_file);
    o.model = args.model.clone();
    o.port = args.port.clone();
    o.no_midi = args.no_midi;
    o.exit_handlers = true;
    Ok(o)
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(expr) = args.eval else {
        let options = options(&args.session, script::stdout_output())?;
        return crate::repl::run(crate::repl::ReplConfig { vi: args.vi, history: args.history, options });
    };
    let mut session = Session::new(options(&args.session, script::stdout_output())?);
    let cancel = Arc::new(AtomicBool::new(false));
    let _sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, session.cancel_flag());
    let _sigint2 = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _sigterm = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    // Registering a flag replaces SIGTERM's default of ending the process, so the script must be
    // stopped by it too, or a busy script would never end.
    let _sigterm2 = signal_hook::flag::register(signal_hook::consts::SIGTERM, session.cancel_flag());
    let result = session.eval(&expr);
    let status = match &result {
        Ok(v) => {
            if let Some(d) = session.describe(v) {
                println!("{d}");
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!("{e}")),
    };
    if status.is_ok() {
        finish(&session, args.session.for_seconds, &cancel);
    }
    session.shutdown();
    status
}

/// Waits until the music the script started has sounded: loops play until the script stops
/// them, or for `for_seconds` and are then stopped at the end of their cycle. `cancel` (Ctrl-C,
/// SIGTERM) ends the wait early; the caller then shuts down with every note off.
pub fn finish(session: &Session, for_seconds: Option<f64>, cancel: &AtomicBool) {
    if let Some(secs) = for_seconds {
        session.ctx().stage.sleep_while_playing(secs.max(0.0), cancel);
        session.ctx().stage.stop_all();
    }
    if !cancel.load(Ordering::Relaxed) {
        session.wait_idle(cancel, true);
    }
}
