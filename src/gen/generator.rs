//! A loaded model ready to generate: finds bundled models, loads weights + vocabulary + encoding, knows its labels.

use super::constraints::Effects;
use super::job::{Batch, Job, Progress, Request, Take};
use super::likelihood::{self, Likelihood};
use super::parts::Parts;
use super::GenError;
use crate::model::LanguageModel;
use crate::score::GenSettings;
use crate::score::Score;
use crate::tokens::{Encoding, Vocab};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A model found on disk or built in code, ready to generate: its [`Parts`] (what batches and
/// likelihoods use), its folder and its sampling defaults. Derefs to its parts.
pub struct Generator {
    parts: Arc<Parts>,
    dir: PathBuf,
    /// What this model sounds best with when neither prompt nor caller says otherwise
    /// (`generation_config.json`).
    defaults: Defaults,
}

impl std::ops::Deref for Generator {
    type Target = Parts;
    fn deref(&self) -> &Parts {
        &self.parts
    }
}

/// `generation_config.json` beside a model: Hugging Face's file for sampling defaults, read
/// with its field names, plus cadenza's `max_polyphony` (1 for melody models, whose corpus
/// never sounds two notes at once), `mono_voices` (for part-writing models: each voice a
/// single line) and `whole_bars` (bar lines where the meter puts them). Absent fields leave cadenza's defaults.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    temperature: Option<f64>,
    top_k: Option<u32>,
    top_p: Option<f64>,
    repetition_penalty: Option<f64>,
    max_polyphony: Option<u32>,
    #[serde(default)]
    mono_voices: bool,
    /// No parallel fifths or octaves between voices (for part-writing models).
    #[serde(default)]
    no_parallels: bool,
    /// A whole tune ends on the tonic of its key.
    #[serde(default)]
    end_on_tonic: bool,
    /// A whole tune ends on a degree its style's tunes end on (`header_prior.json`).
    #[serde(default)]
    end_on_final: bool,
    /// Bar lines only where the meter puts them (every bar full): for models whose bar lines
    /// are ids that do not move time (`tune`), which a small model otherwise places loosely.
    #[serde(default)]
    whole_bars: bool,
    /// A repeated strain is at least this many bars.
    min_strain_bars: Option<u32>,
    /// At most this many notes of one pitch in a row.
    max_repeats: Option<u32>,
    /// Added to the logit of a note on the previous note's pitch (negative: fewer repeats).
    same_pitch_bias: Option<f64>,
    /// Added to each id that would play an earlier bar again (see `Sampling::recall_bias`).
    recall_bias: Option<f64>,
    /// How much the recall bias varies from take to take (see `Sampling::recall_spread`).
    recall_spread: Option<f64>,
    /// A whole tune past this many bars gets `end_bias_per_bar` nats per bar on its end id.
    end_after_bars: Option<u32>,
    end_bias_per_bar: Option<f64>,
    /// Each whole take ends near a length drawn from its style's tunes (`header_prior.json`).
    #[serde(default)]
    length_prior: bool,
    /// Temperature and top-p for note lengths (see `Sampling::length_temperature`).
    length_temperature: Option<f64>,
    length_top_p: Option<f64>,
    /// Classifier-free guidance on the labels (see `Sampling::guidance`).
    guidance: Option<f64>,
    /// A scale as `%%scale` writes it (`key pentatonic`, `D dorian`, `any`).
    scale: Option<String>,
    /// Settings for takes of one style, over the ones above (`"styles": {"chinese": {"scale":
    /// "key pentatonic"}}`); nested `styles` are not read.
    #[serde(default)]
    styles: std::collections::BTreeMap<String, GenerationConfig>,
    /// Forms drawn per take when the caller gives neither a form nor a length (model-wide;
    /// see `gen::form::FormPrior`).
    #[serde(default)]
    forms: Vec<super::form::FormChoice>,
}

impl GenerationConfig {
    fn settings(&self, path: &Path) -> Result<GenSettings, GenError> {
        let mut g = GenSettings {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            max_polyphony: self.max_polyphony,
            mono_voices: self.mono_voices,
            no_parallels: self.no_parallels,
            end_on_tonic: self.end_on_tonic,
            end_on_final: self.end_on_final,
            whole_bars: self.whole_bars,
            min_strain_bars: self.min_strain_bars,
            max_repeats: self.max_repeats,
            same_pitch_bias: self.same_pitch_bias,
            recall_bias: self.recall_bias,
            recall_spread: self.recall_spread,
            end_after_bars: self.end_after_bars,
            end_bias_per_bar: self.end_bias_per_bar,
            length_prior: self.length_prior,
            length_temperature: self.length_temperature,
            length_top_p: self.length_top_p,
            guidance: self.guidance,
            ..GenSettings::default()
        };
        if let Some(text) = &self.scale {
            let scale = crate::dsl::fields::scale_value(text).map_err(|e| GenError::ModelFiles {
                path: path.display().to_string(),
                reason: format!("scale `{text}`: expected {}", e.expected),
            })?;
            g.set_scale(scale);
        }
        Ok(g)
    }
}

/// A model's sampling defaults: for every take, and per style over those.
#[derive(Debug, Clone, Default)]
struct Defaults {
    all: GenSettings,
    styles: std::collections::BTreeMap<String, GenSettings>,
    forms: Option<super::form::FormPrior>,
}

fn read_generation_config(dir: &Path) -> Result<Defaults, GenError> {
    let path = dir.join("generation_config.json");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Defaults::default()) };
    let c: GenerationConfig = serde_json::from_str(&text)
        .map_err(|e| GenError::ModelFiles { path: path.display().to_string(), reason: e.to_string() })?;
    let mut styles = std::collections::BTreeMap::new();
    for (style, sc) in &c.styles {
        styles.insert(style.clone(), sc.settings(&path)?);
    }
    let forms =
        if c.forms.is_empty() {
            None
        } else {
            Some(super::form::FormPrior::new(&c.forms).map_err(|e| GenError::ModelFiles {
                path: path.display().to_string(),
                reason: format!("forms: {e}"),
            })?)
        };
    Ok(Defaults { all: c.settings(&path)?, styles, forms })
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
        Arc::make_mut(&mut g.parts).header_prior =
            super::header_prior::HeaderPrior::load(&dir, g.parts.encoding().as_ref())?.map(Arc::new);
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
        Generator {
            parts: Arc::new(Parts::new(name, model, encoding, model_hash)),
            dir: PathBuf::new(),
            defaults: Defaults::default(),
        }
    }

    /// The settings this model generates with unless the prompt or the caller set them.
    pub fn defaults(&self) -> &GenSettings {
        &self.defaults.all
    }

    /// The defaults for takes of `style`: the style's own settings over [`Self::defaults`].
    pub fn defaults_for(&self, style: Option<&str>) -> GenSettings {
        match style.and_then(|s| self.defaults.styles.get(s)) {
            Some(own) => own.or(&self.defaults.all),
            None => self.defaults.all.clone(),
        }
    }

    /// The forms this model's takes are drawn from when the caller gives neither a form nor a
    /// length (`"forms"` in `generation_config.json`).
    pub fn form_prior(&self) -> Option<&super::form::FormPrior> {
        self.defaults.forms.as_ref()
    }

    /// Draws open keys from `prior` (what `header_prior.json` gives a loaded model).
    pub fn with_header_prior(mut self, prior: super::HeaderPrior) -> Generator {
        Arc::make_mut(&mut self.parts).header_prior = Some(Arc::new(prior));
        self
    }

    /// Replaces the token meanings (tests with a hand-made vocabulary).
    pub fn with_effects(mut self, effects: Effects) -> Generator {
        Arc::make_mut(&mut self.parts).effects = Arc::new(effects);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One take, blocking.
    pub fn generate(&self, request: &Request) -> Result<Take, GenError> {
        self.generate_cancellable(request, &AtomicBool::new(false))
    }

    /// One take, blocking, stopped before its next token once `cancel` is set (the take then
    /// records `cancelled`).
    pub fn generate_cancellable(&self, request: &Request, cancel: &AtomicBool) -> Result<Take, GenError> {
        let batch = self.batch(request, 1, cancel, &mut |_| {})?;
        batch.takes().pop().ok_or_else(|| GenError::Worker("no take came back".into()))
    }

    /// `n` takes batched on the model (batch dimension `n`); take `i` uses seed `seed + i`.
    pub fn generate_batch(&self, request: &Request, n: usize) -> Result<Vec<Take>, GenError> {
        let batch = self.batch(request, n, &AtomicBool::new(false), &mut |_| {})?;
        Ok(batch.takes())
    }

    /// Runs `n` takes to their length and returns the live batch (to read the takes and to
    /// continue them with [`Batch::extend`], reusing the model state).
    pub fn batch(
        &self,
        request: &Request,
        n: usize,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Progress),
    ) -> Result<Batch, GenError> {
        let seeds: Vec<u64> = (0..n as u64).map(|i| request.seed.wrapping_add(i)).collect();
        self.batch_seeded(request, &seeds, cancel, on_event)
    }

    /// [`Generator::batch`] with one seed per take, in any order (`generate -n` batches the
    /// takes of a form prior that draw no form, whose seeds are not consecutive).
    pub fn batch_seeded(
        &self,
        request: &Request,
        seeds: &[u64],
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Progress),
    ) -> Result<Batch, GenError> {
        let mut s = Batch::start_seeded(&self.parts, request, seeds)?;
        s.run(cancel, on_event)?;
        Ok(s)
    }

    /// Starts `n` takes on a worker thread that streams notes and can be cancelled.
    pub fn spawn(&self, request: Request, n: usize) -> Job {
        Job::spawn(self.parts.clone(), request, n)
    }

    /// Log-likelihood of a score under this model (see [`likelihood`]).
    pub fn likelihood(&self, score: &Score) -> Result<Likelihood, GenError> {
        likelihood::score(&self.parts, score)
    }
}
