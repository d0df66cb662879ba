//! `cadenza takes [FILE]`: the take history sessions keep, one line a take, in a shell.

use crate::script::takes::read_entries;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The history file (default: `takes.jsonl` beside the REPL history).
    pub file: Option<PathBuf>,
    /// Only the last N takes.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let Some(file) = args.file.or_else(super::repl::default_takes_file) else {
        anyhow::bail!("no take history: give a file (there is no data folder for the default)");
    };
    if !file.is_file() {
        anyhow::bail!("{}: no take history here yet (sessions write it as they generate)", file.display());
    }
    // Streamed: a long history is never held whole, only the last N lines when asked.
    let mut shown = 0;
    match args.last {
        Some(n) => {
            let mut tail = std::collections::VecDeque::with_capacity(n.min(10_000));
            for e in read_entries(&file) {
                if tail.len() == n {
                    tail.pop_front();
                }
                if n > 0 {
                    tail.push_back(e.summary());
                }
            }
            for line in tail {
                println!("{line}");
                shown += 1;
            }
        }
        None => {
            for e in read_entries(&file) {
                println!("{}", e.summary());
                shown += 1;
            }
        }
    }
    if shown == 0 {
        eprintln!("{}: no readable takes", file.display());
    }
    Ok(())
}
