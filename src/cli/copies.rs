//! `cadenza copies --out models/NAME/copies.bin`: indexes the training tunes a model learnt
//! from (the training side of `cadenza train`'s split), so sessions can say when a take copies
//! 16 or more notes from one of them, and which.

use crate::corpus::{Collection, Filter};
use crate::eval::copies::CopyIndex;
use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The unpacked music21 corpus (see scripts/fetch-corpus.sh).
    #[arg(long, default_value = "corpus/music21")]
    pub corpus: PathBuf,
    /// `folk` or `chorales`: the collections the model was trained on.
    #[arg(long, default_value = "folk")]
    pub collections: String,
    /// Fraction held out for validation and the split's seed, as the model was trained.
    #[arg(long, default_value_t = 0.05)]
    pub valid_fraction: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where to write the index (beside the model's weights: `models/NAME/copies.bin`).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let collections = match args.collections.as_str() {
        "folk" => Collection::FOLK.to_vec(),
        "chorales" => vec![Collection::Chorales],
        other => anyhow::bail!("--collections {other}: expected folk or chorales"),
    };
    let filter = Filter { collections, valid_fraction: args.valid_fraction, seed: args.seed, ..Filter::default() };
    let corpus = crate::corpus::load(&args.corpus, &filter)
        .with_context(|| format!("reading the corpus at {} (see scripts/fetch-corpus.sh)", args.corpus.display()))?;
    let tunes: Vec<(String, crate::score::Score)> =
        corpus.train.into_iter().map(|t| (t.title.unwrap_or(t.id), t.score)).collect();
    let index = CopyIndex::build(&tunes);
    index.save(&args.out)?;
    let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!("{}: {} training tunes indexed, {size} bytes", args.out.display(), index.len());
    Ok(())
}
