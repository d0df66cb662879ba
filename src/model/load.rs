//! Finding model folders (bundled names or paths), hashing their weights, and loading one:
//! `config.json` + `model.safetensors` → a shared [`LanguageModel`], choosing the implementation
//! (the hand-written CPU GPT or candle's) so that callers never name one.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::config::Config;
use super::gpt::Gpt;
use super::lstm::Lstm;
use super::{LanguageModel, ModelError};

fn load_err(path: &Path, reason: impl std::fmt::Display) -> ModelError {
    ModelError::Load { path: path.display().to_string(), reason: reason.to_string() }
}

/// Reads and checks `dir/config.json`.
pub fn read_config(dir: &Path) -> Result<Config, ModelError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| load_err(&path, e))?;
    Config::from_json(&text).map_err(|e| load_err(&path, e))
}

/// The bytes of a weights file, checked to be safetensors holding only finite numbers, so both
/// GPT implementations refuse a bad file with the same words.
pub fn read_weights(path: &Path) -> Result<Vec<u8>, ModelError> {
    let bytes = std::fs::read(path).map_err(|e| load_err(path, e))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| load_err(path, format!("not a safetensors file: {e}")))?;
    check_finite(&tensors).map_err(|e| load_err(path, e))?;
    Ok(bytes)
}

/// Refuses weights holding NaN or infinity, naming the first tensor and index: corrupted weights
/// would otherwise only show later as "no token satisfies the constraints".
pub fn check_finite(tensors: &safetensors::SafeTensors<'_>) -> Result<(), super::WeightError> {
    use safetensors::Dtype;
    for (name, view) in tensors.tensors() {
        let data = view.data();
        // Bit patterns whose exponent is all ones are infinities or NaNs.
        let bad = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).position(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()),
            Dtype::F16 => data.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7C00 == 0x7C00),
            Dtype::BF16 => data.chunks_exact(2).position(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7F80 == 0x7F80),
            Dtype::F64 => {
                data.chunks_exact(8).position(|c| !f64::from_le_bytes(c.try_into().unwrap_or([0; 8])).is_finite())
            }
            _ => None,
        };
        if let Some(i) = bad {
            return Err(super::WeightError::NotFinite { name, index: i });
        }
    }
    Ok(())
}

/// Where bundled models are looked for, in order: `$CADENZA_MODELS`, `./models`, and the
/// `models/` folder of the source tree this binary was built from.
pub fn roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = std::env::var_os("CADENZA_MODELS") {
        roots.push(PathBuf::from(dir));
    }
    roots.push(PathBuf::from("models"));
    roots.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")));
    roots
}

/// Every model found under [`roots`] (a folder with `config.json`), by name; the first root
/// that has a name wins.
pub fn list() -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for root in roots() {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut here: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.join("config.json").is_file())
            .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
            .collect();
        here.sort();
        for (name, path) in here {
            if !found.iter().any(|(n, _)| *n == name) {
                found.push((name, path));
            }
        }
    }
    found
}

/// The bundled model the REPL, `cadenza run`, `generate` and `score` use unless told otherwise:
/// the folk LSTM, whose takes measure closest to the real tunes (its card, `cadenza eval`).
pub const DEFAULT_MODEL: &str = "folk-lstm";

/// Finds `name_or_dir`: a folder with `config.json`, or the name of a bundled model.
pub fn find(name_or_dir: &str) -> Result<PathBuf, ModelError> {
    let direct = Path::new(name_or_dir);
    if direct.join("config.json").is_file() {
        return Ok(direct.to_path_buf());
    }
    let models = list();
    if let Some((_, p)) = models.iter().find(|(n, _)| n == name_or_dir) {
        return Ok(p.clone());
    }
    if direct.is_dir() {
        // A folder was meant: say what it lacks rather than that no model has its name.
        return Err(load_err(
            direct,
            "has no config.json (a model folder holds config.json, model.safetensors and vocab.json)",
        ));
    }
    let searched = roots().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let known = if models.is_empty() {
        "(none)".to_string()
    } else {
        models.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    };
    Err(ModelError::NotFound { name: name_or_dir.to_string(), searched, known })
}

/// SHA-256 of a model folder's `model.safetensors`, hex: the model's identity in a take's
/// record.
pub fn weights_sha256(dir: &Path) -> Result<String, ModelError> {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Loads the model in `dir` for `device`. On the CPU both architectures run through their
/// hand-written decoders ([`super::gpt_cpu`], [`super::lstm_cpu`]: the same logits, several
/// times faster); other devices, or any model when `CADENZA_CANDLE` is set, through candle.
pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Arc<dyn LanguageModel>, ModelError> {
    let dir = dir.as_ref();
    let config = read_config(dir)?;
    if !device.is_cpu() || std::env::var_os("CADENZA_CANDLE").is_some() {
        return load_candle_with(dir, config, device);
    }
    match config {
        Config::Gpt2(cfg) => Ok(Arc::new(super::gpt_cpu::CpuGpt::load_weights(dir, &cfg)?)),
        Config::Lstm(cfg) => {
            let path = dir.join("model.safetensors");
            let vb = weights_var_builder(dir, &Config::Lstm(cfg.clone()), device)?;
            let lstm = Lstm::new(&cfg, vb).map_err(|e| load_err(&path, e))?;
            Ok(Arc::new(super::lstm_cpu::CpuLstm::from_candle(&lstm).map_err(|e| load_err(&path, e))?))
        }
    }
}

/// Loads the model in `dir` onto `device` as a candle model. Weights may be f32, f16 or bf16
/// (converted to f32); GPT-2 weights may carry Hugging Face's `transformer.` prefix.
pub fn load_candle(dir: impl AsRef<Path>, device: &Device) -> Result<Arc<dyn LanguageModel>, ModelError> {
    let dir = dir.as_ref();
    load_candle_with(dir, read_config(dir)?, device)
}

/// [`load_candle`] for a config already read.
fn load_candle_with(dir: &Path, config: Config, device: &Device) -> Result<Arc<dyn LanguageModel>, ModelError> {
    let path = dir.join("model.safetensors");
    let vb = weights_var_builder(dir, &config, device)?;
    let model: Arc<dyn LanguageModel> = match &config {
        Config::Gpt2(cfg) => Arc::new(Gpt::new(cfg, vb).map_err(|e| load_err(&path, e))?),
        Config::Lstm(cfg) => Arc::new(Lstm::new(cfg, vb).map_err(|e| load_err(&path, e))?),
    };
    Ok(model)
}

/// The weights in `dir/model.safetensors` as f32 variables for `config`'s network, checked to be
/// finite; GPT-2 names with Hugging Face's `transformer.` prefix are found under it.
pub fn weights_var_builder(dir: &Path, config: &Config, device: &Device) -> Result<VarBuilder<'static>, ModelError> {
    let path = dir.join("model.safetensors");
    let bytes = read_weights(&path)?;
    let prefixed = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| load_err(&path, e))?
        .names()
        .iter()
        .any(|n| n.starts_with("transformer."));
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(|e| load_err(&path, e))?;
    Ok(match config {
        Config::Gpt2(_) if prefixed => vb.pp("transformer"),
        _ => vb,
    })
}
