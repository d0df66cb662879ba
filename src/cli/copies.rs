//! `cadenza copies --out models/NAME/copies.bin`: indexes the training tunes a model learnt
//! from (the training side of `cadenza train`'s split), so sessions can say when a take copies
//! 16 or more notes from one of them, and which.

use super::training_tunes::TrainingTunes;
use crate::eval::copies::CopyIndex;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub tunes: TrainingTunes,
    /// Where to write the index (beside the model's weights: `models/NAME/copies.bin`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let tunes: Vec<(String, crate::score::Score)> =
        args.tunes.load()?.into_iter().map(|t| (t.title.unwrap_or(t.id), t.score)).collect();
    let index = CopyIndex::build(&tunes);
    index.save(&args.out)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!("{}: {} training tunes indexed, {size} bytes", args.out.display(), index.len());
    Ok(())
}
