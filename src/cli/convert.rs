//! `cadenza convert IN OUT`.

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`cadenza convert IN OUT` is not built yet")
}
