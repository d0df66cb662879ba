//! The terminal front: line editing, history, completion, highlighting, printing from other threads.
//!
//! The input thread reads with rustyline and runs each entry on the [`Session`] (the session's
//! own loop threads keep the music going meanwhile). Ctrl-C at the prompt clears the line;
//! during a running entry it raises the session's cancel flag (SIGINT, since the terminal is in
//! cooked mode then), which stops the entry and any generation it waits on, not the music.

pub mod commands;
pub mod helper;

use crate::script::{self, Options, Session};
use anyhow::Context as _;
use helper::{CadenzaHelper, Names};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Config, EditMode, Editor, ExternalPrinter as _};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// How to start the REPL.
pub struct ReplConfig {
    pub vi: bool,
    /// History file; `None` uses `$CADENZA_HISTORY` or the XDG data dir.
    pub history: Option<PathBuf>,
    /// Session options (model, ports); `output` is replaced by the REPL's printer.
    pub options: Options,
}

/// The history file: `$CADENZA_HISTORY`, else `<XDG data dir>/cadenza/history.txt`.
pub fn default_history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CADENZA_HISTORY") {
        return Some(PathBuf::from(p));
    }
    directories::ProjectDirs::from("", "", "cadenza").map(|d| d.data_dir().join("history.txt"))
}

pub const PROMPT: &str = "♪ ";
pub const CONTINUATION: &str = "… ";

/// What the loop should do after an entry.
pub enum Flow {
    Continue,
    Quit,
}

/// Runs the REPL until `:quit` or Ctrl-D; every note is off when it returns.
pub fn run(mut config: ReplConfig) -> anyhow::Result<()> {
    let rl_config = Config::builder()
        .edit_mode(if config.vi { EditMode::Vi } else { EditMode::Emacs })
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .history_ignore_space(true)
        .max_history_size(10_000)
        .context("history size")?
        .build();
    let names = Arc::new(Mutex::new(Names::default()));
    let mut rl: Editor<CadenzaHelper, FileHistory> = Editor::with_config(rl_config).context("opening the terminal")?;
    rl.set_helper(Some(CadenzaHelper::new(names.clone())));

    // Output from other threads (generation progress, loop errors, script `print`) goes above
    // the prompt through rustyline's external printer; without a terminal, straight to stdout.
    let output: script::Output = match rl.create_external_printer() {
        Ok(p) => {
            let p = Mutex::new(p);
            Arc::new(move |s: &str| {
                if let Ok(mut p) = p.lock() {
                    let _ = p.print(format!("{s}\n"));
                }
            })
        }
        Err(_) => script::stdout_output(),
    };
    config.options.output = output.clone();
    config.options.preload = true;
    let history = config.history.clone().or_else(default_history_path);
    // Takes go beside the history, unless the caller named a place already.
    if config.options.takes_file.is_none() {
        config.options.takes_file = history.as_deref().map(script::takes::beside);
    }
    println!(
        "cadenza {} — live coding with neural music models. :help for help, Ctrl-D to quit.",
        env!("CARGO_PKG_VERSION")
    );
    println!("loading model `{}` in the background; type while it loads.", config.options.model);
    let mut session = Session::new(config.options);
    // SIGINT (Ctrl-C while an entry runs, terminal in cooked mode) raises the cancel flag
    // instead of killing the process, so the music and the REPL survive it.
    let _sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, session.cancel_flag());

    if let Some(h) = &history {
        if let Some(dir) = h.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = rl.load_history(h);
    }
    helper::refresh(&names, &session);

    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { PROMPT } else { CONTINUATION };
        match rl.readline(prompt) {
            Ok(line) => {
                // Without a terminal the validator never runs: continue incomplete input here.
                if !pending.is_empty() {
                    pending.push('\n');
                }
                pending.push_str(&line);
                let two_blank = pending.split('\n').rev().take_while(|l| l.trim().is_empty()).count() >= 2;
                if !pending.trim_start().starts_with(':') && script::is_incomplete(&pending) && !two_blank {
                    continue;
                }
                let entry = std::mem::take(&mut pending);
                let entry = entry.trim_end().to_string();
                if entry.trim().is_empty() {
                    continue;
                }
                let _ = rl.add_history_entry(entry.as_str());
                if let Some(h) = &history {
                    let _ = rl.append_history(h);
                }
                let flow = handle_entry(&mut session, &entry, &mut rl, history.as_deref());
                helper::refresh(&names, &session);
                if let Flow::Quit = flow {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C at the prompt drops what was typed; the music plays on.
                pending.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("terminal error: {e}");
                break;
            }
        }
    }
    session.shutdown();
    println!("all notes off. bye.");
    Ok(())
}

/// Runs one entry: a colon command or script text. Prints results and errors.
pub fn handle_entry(
    session: &mut Session,
    entry: &str,
    rl: &mut Editor<CadenzaHelper, FileHistory>,
    history: Option<&std::path::Path>,
) -> Flow {
    let trimmed = entry.trim();
    if let Some(cmd) = trimmed.strip_prefix(':') {
        let out = commands::run(session, cmd);
        match out {
            commands::Outcome::Text(t) => {
                if !t.is_empty() {
                    println!("{}", t.trim_end())
                }
            }
            commands::Outcome::Quit => return Flow::Quit,
            commands::Outcome::SaveHistory(path) => {
                let path = path.or_else(|| history.map(|p| p.to_path_buf()));
                match path {
                    Some(p) => match rl.save_history(&p) {
                        Ok(()) => println!("history saved to {}", p.display()),
                        Err(e) => println!("could not save history to {}: {e}", p.display()),
                    },
                    None => println!("no history file (set CADENZA_HISTORY or give a path)"),
                }
            }
            commands::Outcome::EditMode(vi) => {
                use rustyline::config::Configurer;
                rl.set_edit_mode(if vi { EditMode::Vi } else { EditMode::Emacs });
                println!("{} mode", if vi { "vi" } else { "emacs" });
            }
        }
        return Flow::Continue;
    }
    match session.eval(entry) {
        Ok(v) => {
            if let Some(d) = session.describe(&v) {
                println!("=> {d}");
            }
        }
        Err(script::ScriptError::Cancelled) => println!("\ncancelled; the music plays on."),
        Err(e) => println!("{e}"),
    }
    Flow::Continue
}
