//! The training side of `cadenza train`'s split, read again for the tables that ship beside a
//! model (`cadenza copies`, `cadenza header-prior`): the same collections, fraction and seed.

use crate::corpus::{Collection, Filter, Tune};
use anyhow::Context;
use std::path::PathBuf;

/// Which corpus tunes a model learnt from.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainingTunes {
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
}

impl TrainingTunes {
    /// Loads the corpus and returns its training tunes (never the validation ones).
    pub fn load(&self) -> anyhow::Result<Vec<Tune>> {
        let collections = match self.collections.as_str() {
            "folk" => Collection::FOLK.to_vec(),
            "chorales" => vec![Collection::Chorales],
            other => anyhow::bail!("--collections {other}: expected folk or chorales"),
        };
        let filter = Filter { collections, valid_fraction: self.valid_fraction, seed: self.seed, ..Filter::default() };
        let corpus = crate::corpus::load(&self.corpus, &filter).with_context(|| {
            format!("reading the corpus at {} (see scripts/fetch-corpus.sh)", self.corpus.display())
        })?;
        Ok(corpus.train)
    }
}
