//! `cadenza header-prior --model NAME`: counts the keys (per style and meter), each style's
//! tune lengths and the degrees its tunes end on, over the training tunes a model learnt from,
//! into `header_prior.json` beside its weights, which generation draws an open key (with
//! `length_prior`, a take's length; with `end_on_final`, its last note) from (see
//! `gen::header_prior` for why the model's own draw is not used).

use super::training_tunes::TrainingTunes;
use crate::gen::header_prior::{HeaderPrior, FILE};
use crate::gen::Generator;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub tunes: TrainingTunes,
    /// The model (bundled name or folder) whose vocabulary spells the table; it is written
    /// into that folder.
    #[arg(long)]
    pub model: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let g = Generator::load(&args.model)?;
    let tunes: Vec<crate::score::Score> = args.tunes.load()?.into_iter().map(|t| t.score).collect();
    let prior = HeaderPrior::build(g.encoding().as_ref(), &tunes);
    if prior.is_empty() {
        anyhow::bail!("none of the {} training tunes has a key this model's vocabulary knows", tunes.len());
    }
    let path = g.dir().join(FILE);
    let t = &args.tunes;
    let about = format!(
        "training tunes per (style, key, meter), per length and per final, untransposed: \
         cadenza header-prior --model {} --collections {} --valid-fraction {} --seed {}",
        args.model, t.collections, t.valid_fraction, t.seed
    );
    prior.save(g.encoding().as_ref(), &path, &about)?;
    eprintln!(
        "{}: keys of {} of {} training tunes, their lengths and finals",
        path.display(),
        prior.tunes(),
        tunes.len()
    );
    Ok(())
}
