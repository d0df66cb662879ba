//! Candle language models over token ids: GPT (KV cache) and LSTM behind one trait, loading, training.
//!
//! Contract shared with `gen` (owned by the model engineer; change with care): a model sees only
//! ids. Per-generation state (KV cache, LSTM hidden state) lives outside the weights, so many
//! generations can share one loaded model.

use candle_core::{Device, Tensor};

mod adamw_cpu;
mod affine;
mod attention;
pub mod config;
mod cpu_f32;
mod cross_entropy;
pub mod device;
pub mod gpt;
pub mod gpt_cpu;
pub mod load;
pub mod lstm;
pub mod lstm_cpu;
mod lstm_fused;
pub mod markov;
pub(crate) mod nn;
mod small_gemm;
pub mod train;

pub use config::{Config, ConfigError, GptConfig, LstmConfig};
pub use device::default_device;
pub use load::{find, list, load, load_candle, roots, weights_sha256, DEFAULT_MODEL};
pub use nn::Dropout;

/// What is wrong with a weights file: said once for both GPT implementations.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("weight `{0}` is missing")]
    Missing(String),
    #[error("weight `{name}`: {reason}")]
    Unreadable { name: String, reason: String },
    #[error("weight `{name}` has {values} values, expected {expected}")]
    Shape { name: String, values: usize, expected: usize },
    #[error("weight `{name}` holds NaN or infinity (value {index}): the file is corrupted")]
    NotFinite { name: String, index: usize },
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("model `{name}` not found (looked in {searched}); known models: {known}")]
    NotFound { name: String, searched: String, known: String },
    /// A GPT was asked to attend past its `n_positions`; the caller must restart with a shorter
    /// window (e.g. re-feed the last part of the sequence into a fresh state).
    #[error("context full: {needed} positions needed, the model attends to {context}")]
    ContextFull { context: usize, needed: usize },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{model} given a state made by another model")]
    ForeignState { model: &'static str },
    #[error("ids have batch {ids}, the state was made for {state}")]
    BatchMismatch { ids: usize, state: usize },
    #[error("forward needs at least one id")]
    NoIds,
    #[error("{what} id {id} is outside the vocabulary of {vocab}")]
    IdOutsideVocab { what: &'static str, id: u32, vocab: usize },
    #[error("the model's output holds NaN (token {token} of {of}): its weights or input overflowed")]
    NanOutput { token: usize, of: usize },
    #[error("bad device `{0}` (expected cpu, cuda or cuda:N)")]
    BadDevice(String),
    #[error("this build has no CUDA support (rebuild with `--features cuda`)")]
    NoCuda,
    #[error("invalid training options: {0}")]
    TrainOptions(String),
    #[error("{what} set has fewer than two ids")]
    TooLittleData { what: &'static str },
    #[error("training data gives {windows} windows of {len} ids, fewer than one batch of {batch}")]
    TooFewWindows { windows: usize, len: usize, batch: usize },
    #[error("loss became {loss} at step {step}")]
    Diverged { loss: f64, step: usize },
}

/// Per-generation state: whatever the model must remember between calls, for a batch of rows.
pub trait State: Send {
    /// Positions already consumed (the same for every row of the batch).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
    /// Keeps only the rows marked in `keep` (one flag per row, order kept), so a batch stops
    /// computing takes that have ended. `Ok(false)`: this state cannot drop rows and is left as
    /// it was (the caller feeds the ended rows along instead).
    fn retain_rows(&mut self, keep: &[bool]) -> Result<bool, ModelError> {
        let _ = keep;
        Ok(false)
    }
}

/// `state` as the concrete state of the model named `model`, or the error that says it is another
/// model's (every implementation's first step with a state it is handed).
pub(crate) fn own_state<'a, S: 'static>(
    state: &'a mut dyn State,
    model: &'static str,
) -> Result<&'a mut S, ModelError> {
    state.as_any_mut().downcast_mut::<S>().ok_or(ModelError::ForeignState { model })
}

/// A boxed state is a state, so `&mut model.new_state(1)?` can be passed straight to `forward`.
impl<S: State + ?Sized> State for Box<S> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        (**self).as_any_mut()
    }
    fn retain_rows(&mut self, keep: &[bool]) -> Result<bool, ModelError> {
        (**self).retain_rows(keep)
    }
}

/// Ids in, logits out.
pub trait LanguageModel: Send + Sync {
    fn vocab_size(&self) -> usize;
    /// Longest sequence the model can attend to (usize::MAX for an LSTM).
    fn context(&self) -> usize;
    fn device(&self) -> &Device;
    /// Empty state for `batch` parallel sequences.
    fn new_state(&self, batch: usize) -> Result<Box<dyn State>, ModelError>;
    /// Feeds `ids` (shape `[batch, seq]`, u32) after what `state` has seen; returns logits for
    /// the last position, shape `[batch, vocab]` (f32), and advances the state.
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError>;
    /// Logits for every position, shape `[batch, seq, vocab]` (for training and likelihood).
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError>;
}
