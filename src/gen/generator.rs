//! A loaded model ready to generate: finds bundled models, loads weights + vocabulary + encoding, knows its labels.

use super::constraints::Effects;
use super::job::{Event, Job, Overrides, Request, Session, Take};
use super::likelihood::{self, Likelihood};
use super::GenError;
use crate::model::LanguageModel;
use crate::score::GenSettings;
use crate::score::Score;
use crate::tokens::{Encoding, Vocab};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A model, its encoding and what its tokens mean, shared by every job that uses it.
pub struct Generator {
    name: String,
    dir: PathBuf,
    model: Arc<dyn LanguageModel>,
    encoding: Arc<dyn Encoding>,
    effects: Arc<Effects>,
    model_hash: String,
    styles: Vec<String>,
    instruments: Vec<String>,
    /// What this model sounds best with when neither prompt nor caller says otherwise
    /// (`generation_config.json`).
    defaults: GenSettings,
}

/// `generation_config.json` beside a model: Hugging Face's file for sampling defaults, read
/// with its field names, plus cadenza's `max_polyphony` (1 for melody models, whose corpus
/// never sounds two notes at once) and `mono_voices` (for part-writing models: each voice a
/// single line). Absent fields leave cadenza's defaults.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    temperature: Option<f64>,
    top_k: Option<u32>,
    top_p: Option<f64>,
    repetition_penalty: Option<f64>,
    max_polyphony: Option<u32>,
    #[serde(default)]
    mono_voices: bool,
}

fn read_generation_config(dir: &Path) -> Result<GenSettings, GenError> {
    let path = dir.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(GenSettings::default()) };
    let c: GenerationConfig = serde_json::from_str(&text)
        .map_err(|e| GenError::ModelFiles { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(GenSettings {
        temperature: c.temperature,
        top_k: c.top_k,
        top_p: c.top_p,
        repetition_penalty: c.repetition_penalty,
        max_polyphony: c.max_polyphony,
        mono_voices: c.mono_voices,
        ..GenSettings::default()
    })
}

impl Generator {
    /// Loads a model by bundled name or folder: weights (`model::load` on the default device),
    /// `vocab.json`, and the encoding the vocabulary names.
    pub fn load(name_or_dir: &str) -> Result<Generator, GenError> {
        let dir = crate::model::find(name_or_dir)?;
        let vocab_path = dir.join("vocab.json");
        let text = std::fs::read_to_string(&vocab_path)
            .map_err(|e| GenError::ModelFiles { path: vocab_path.display().to_string(), reason: e.to_string() })?;
        let vocab = Vocab::from_json(&text)
            .map_err(|e| GenError::ModelFiles { path: vocab_path.display().to_string(), reason: e.to_string() })?;
        let encoding = super::adapt::encoding_for(&vocab)?;
        let model = crate::model::load(&dir, &crate::model::default_device())?;
        if model.vocab_size() != encoding.vocab().len() {
            return Err(GenError::ModelFiles {
                path: dir.display().to_string(),
                reason: format!(
                    "the model has {} outputs but vocab.json has {} tokens",
                    model.vocab_size(),
                    encoding.vocab().len()
                ),
            });
        }
        let model_hash = crate::model::weights_sha256(&dir)?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| name_or_dir.to_string());
        let mut g = Generator::from_parts(&name, model, encoding, &model_hash);
        g.defaults = read_generation_config(&dir)?;
        g.dir = dir;
        Ok(g)
    }

    /// Assembles a generator from parts already in memory (tests, models built in code).
    pub fn from_parts(
        name: &str,
        model: Arc<dyn LanguageModel>,
        encoding: Arc<dyn Encoding>,
        model_hash: &str,
    ) -> Generator {
        let effects = Arc::new(super::adapt::effects(encoding.as_ref()));
        let (styles, instruments) = super::adapt::labels(encoding.as_ref());
        Generator {
            name: name.to_string(),
            dir: PathBuf::new(),
            model,
            encoding,
            effects,
            model_hash: model_hash.to_string(),
            styles,
            instruments,
            defaults: GenSettings::default(),
        }
    }

    /// The settings this model generates with unless the prompt or the caller set them.
    pub fn defaults(&self) -> &GenSettings {
        &self.defaults
    }

    /// Replaces the token meanings (tests with a hand-made vocabulary).
    pub fn with_effects(mut self, effects: Effects) -> Generator {
        self.effects = Arc::new(effects);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dir(&self) -> &Path {
        &self.dir
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
    pub(crate) fn check_labels(&self, o: &Overrides, prompt: &Score) -> Result<(), GenError> {
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
        check("style", &o.style, &self.styles)?;
        // A prompt's own `%%style` is checked only against a model conditioned on style at all.
        if o.style.is_none() && !self.styles.is_empty() {
            check("style", &prompt.meta.style, &self.styles)?;
        }
        check("instrument", &o.instrument, &self.instruments)
    }

    /// One take, blocking.
    pub fn generate(&self, request: &Request) -> Result<Take, GenError> {
        self.generate_cancellable(request, &AtomicBool::new(false))
    }

    /// One take, blocking, stopped before its next token once `cancel` is set (the take then
    /// records `cancelled`).
    pub fn generate_cancellable(&self, request: &Request, cancel: &AtomicBool) -> Result<Take, GenError> {
        let session = self.session(request, 1, cancel, &mut |_| {})?;
        session.takes().pop().ok_or_else(|| GenError::Worker("no take came back".into()))
    }

    /// `n` takes batched on the model (batch dimension `n`); take `i` uses seed `seed + i`.
    pub fn generate_batch(&self, request: &Request, n: usize) -> Result<Vec<Take>, GenError> {
        let session = self.session(request, n, &AtomicBool::new(false), &mut |_| {})?;
        Ok(session.takes())
    }

    /// Runs `n` takes to their length and returns the live session (to read the takes and to
    /// continue them with [`Session::extend`], reusing the model state).
    pub fn session(
        &self,
        request: &Request,
        n: usize,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<Session, GenError> {
        let mut s = Session::start(self, request, n)?;
        s.run(cancel, on_event)?;
        Ok(s)
    }

    /// Starts `n` takes on a worker thread that streams notes and can be cancelled.
    pub fn spawn(self: &Arc<Self>, request: Request, n: usize) -> Job {
        Job::spawn(self.clone(), request, n)
    }

    /// Log-likelihood of a score under this model (see [`likelihood`]).
    pub fn likelihood(&self, score: &Score) -> Result<Likelihood, GenError> {
        likelihood::score(self, score)
    }
}
