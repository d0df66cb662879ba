//! `cadenza generate`.

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cadenza generate` is not built yet")
}
