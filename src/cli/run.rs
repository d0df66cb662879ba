//! `cadenza run FILE.rhai [ARGS]`: runs a script, waits for its music, exits non-zero on error.

use crate::script::{self, Session};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The script.
    pub file: PathBuf,
    /// Arguments for the script, as the array `ARGS`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
    #[command(flatten)]
    pub session: super::repl::SessionArgs,
}

/// Why a script run failed: the file and position come first, as compilers print them.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{file}:{line}:{column}: error\n{detail}")]
    At { file: String, line: usize, column: usize, detail: String },
    #[error("{file}: {detail}")]
    Whole { file: String, detail: String },
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let options = super::repl::options(&args.session, script::stdout_output())?;
    let mut session = Session::new(options);
    let cancel = Arc::new(AtomicBool::new(false));
    // Ctrl-C and SIGTERM stop the script and the wait. Notes go off either way.
    let _sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, session.cancel_flag());
    let _sigint2 = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _sigterm = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    // Registering a flag replaces SIGTERM's default of ending the process, so the script must be
    // stopped by it too, or a busy script would never end.
    let _sigterm2 = signal_hook::flag::register(signal_hook::consts::SIGTERM, session.cancel_flag());
    session.set_var("ARGS", args.args.iter().map(|a| rhai::Dynamic::from(a.clone())).collect::<rhai::Array>().into());
    let result = run_file(&mut session, &args.file);
    if result.is_ok() {
        super::repl::finish(&session, args.session.for_seconds, &cancel);
    }
    session.shutdown();
    result.map_err(Into::into)
}

/// Runs the script in `session`, turning a script error into a positioned [`RunError`].
pub fn run_file(session: &mut Session, file: &std::path::Path) -> Result<(), RunError> {
    let name = file.display().to_string();
    match session.eval_file(file) {
        Ok(_) => Ok(()),
        Err(e) => Err(match e.position() {
            Some((line, column)) => RunError::At { file: name, line, column, detail: e.to_string() },
            None => RunError::Whole { file: name, detail: e.to_string() },
        }),
    }
}
