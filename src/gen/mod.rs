//! Generation jobs on worker threads: prompt → stream of notes; sampling, constraints, cancel, chaining, likelihood.
//!
//! The path: a [`Request`] (prompt Score, conditioning, sampling, length, constraints, seed) is
//! encoded to ids, fed to a [`crate::model::LanguageModel`], and each next id is drawn by
//! [`sampling`] from logits masked by [`constraints`]; the incremental decoder turns ids back
//! into notes as soon as each is complete. Everything needed to replay a take is kept in a
//! [`Take`].

pub mod adapt;
pub mod constraints;
pub mod form;
pub mod generator;
pub mod harmonize;
pub mod header_prior;
pub mod job;
pub mod likelihood;
pub mod parts;
pub mod recall;
pub mod sampling;

pub use constraints::{Constraints, Effect, Effects, FixedVoice, Sign};
pub use form::{generate_form, FormChoice, FormPrior, FormSpec, FormTake};
pub use generator::Generator;
pub use harmonize::harmonize;
pub use header_prior::HeaderPrior;
pub use job::{Batch, Job, Length, Overrides, Progress, Request, Take, TakeRecord};
pub use likelihood::{BarSurprise, Likelihood};
pub use parts::Parts;
pub use sampling::{Rng, Sampling};

use crate::model::ModelError;
use crate::tokens::TokenError;

/// What can go wrong while generating or scoring.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("model {path}: {reason}")]
    ModelFiles { path: String, reason: String },
    #[error("unknown {what} `{name}` for model `{model}`; known: {known}")]
    UnknownLabel { what: &'static str, name: String, model: String, known: String },
    #[error("invalid sampling setting: {0}")]
    Sampling(String),
    #[error("invalid request: {0}")]
    Request(String),
    #[error("no token satisfies the constraints here (they contradict each other or the model)")]
    NoValidToken,
    #[error("generation was cancelled")]
    Cancelled,
    #[error("generation worker stopped unexpectedly: {0}")]
    Worker(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
