//! `cadenza (the REPL)`.

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cadenza (the REPL)` is not built yet")
}
