//! `cadenza score`.

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cadenza score` is not built yet")
}
