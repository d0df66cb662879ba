//! What one generation session or likelihood needs of a loaded model: the model, its encoding,
//! what each token means, its labels and identity. [`super::Generator`] wraps these with the
//! folder and defaults; sessions ([`super::job`]) and likelihoods see only this, so the lower
//! files never reach up to the generator.

use super::constraints::Effects;
use super::header_prior::HeaderPrior;
use super::GenError;
use crate::model::LanguageModel;
use crate::score::Score;
use crate::tokens::Encoding;
use std::sync::Arc;

/// A model, its encoding and what its tokens mean, shared by every job that uses it.
#[derive(Clone)]
pub struct Parts {
    name: String,
    model: Arc<dyn LanguageModel>,
    encoding: Arc<dyn Encoding>,
    pub(super) effects: Arc<Effects>,
    model_hash: String,
    styles: Vec<String>,
    instruments: Vec<String>,
    /// The keys the training tunes use, drawn from when a take's key is open (`None`: the
    /// model draws it).
    pub(super) header_prior: Option<Arc<HeaderPrior>>,
}

impl Parts {
    pub fn new(name: &str, model: Arc<dyn LanguageModel>, encoding: Arc<dyn Encoding>, model_hash: &str) -> Parts {
        let effects = Arc::new(super::adapt::effects(encoding.as_ref()));
        let (styles, instruments) = super::adapt::labels(encoding.as_ref());
        Parts {
            name: name.to_string(),
            model,
            encoding,
            effects,
            model_hash: model_hash.to_string(),
            styles,
            instruments,
            header_prior: None,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn model(&self) -> &Arc<dyn LanguageModel> {
        &self.model
    }
    pub fn encoding(&self) -> &Arc<dyn Encoding> {
        &self.encoding
    }
    pub fn effects(&self) -> &Arc<Effects> {
        &self.effects
    }
    pub fn model_hash(&self) -> &str {
        &self.model_hash
    }
    /// The table open keys are drawn from, when the model has one.
    pub fn header_prior(&self) -> Option<&HeaderPrior> {
        self.header_prior.as_deref()
    }
    /// Style labels the model was trained with.
    pub fn styles(&self) -> &[String] {
        &self.styles
    }
    /// Instrument labels the model was trained with.
    pub fn instruments(&self) -> &[String] {
        &self.instruments
    }

    /// Unknown style or instrument names are errors that list the names the model knows
    /// (silently mapping them to "unknown" would hand the user a different piece than asked).
    /// `style` and `instrument` are the caller's; the prompt's own labels are checked too.
    pub(crate) fn check_labels(
        &self,
        style: &Option<String>,
        instrument: &Option<String>,
        prompt: &Score,
    ) -> Result<(), GenError> {
        let check = |what: &'static str, name: &Option<String>, known: &[String]| -> Result<(), GenError> {
            match name {
                Some(n) if !known.iter().any(|k| k.eq_ignore_ascii_case(n)) => Err(GenError::UnknownLabel {
                    what,
                    name: n.clone(),
                    model: self.name.clone(),
                    known: if known.is_empty() {
                        "(none: this model is not conditioned on it)".into()
                    } else {
                        known.join(", ")
                    },
                }),
                _ => Ok(()),
            }
        };
        check("style", style, &self.styles)?;
        // A prompt's own `%%style` is checked only against a model conditioned on style at all.
        if style.is_none() && !self.styles.is_empty() {
            check("style", &prompt.meta.style, &self.styles)?;
        }
        check("instrument", instrument, &self.instruments)
    }
}
