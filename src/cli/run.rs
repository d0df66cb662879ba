//! `cadenza run`.

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cadenza run` is not built yet")
}
