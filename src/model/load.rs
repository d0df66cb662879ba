//! Loading a model directory: `config.json` + `model.safetensors` → a shared [`LanguageModel`].

use std::path::Path;
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

/// Refuses weights holding NaN or infinity, naming the first tensor and index: corrupted weights
/// would otherwise only show later as "no token satisfies the constraints".
pub fn check_finite(tensors: &safetensors::SafeTensors<'_>) -> Result<(), String> {
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
            return Err(format!("weight `{name}` holds NaN or infinity (value {i}): the file is corrupted"));
        }
    }
    Ok(())
}

/// Loads the model in `dir` onto `device`. Weights may be f32, f16 or bf16 (converted to f32);
/// GPT-2 weights may carry Hugging Face's `transformer.` prefix.
pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Arc<dyn LanguageModel>, ModelError> {
    let dir = dir.as_ref();
    let config = read_config(dir)?;
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).map_err(|e| load_err(&path, e))?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| load_err(&path, format!("not a safetensors file: {e}")))?;
    check_finite(&tensors).map_err(|e| load_err(&path, e))?;
    let names: Vec<String> = tensors.names().into_iter().map(str::to_string).collect();
    let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, device).map_err(|e| load_err(&path, e))?;
    let model: Arc<dyn LanguageModel> = match &config {
        Config::Gpt2(cfg) => {
            let vb = if names.iter().any(|n| n.starts_with("transformer.")) { vb.pp("transformer") } else { vb };
            Arc::new(Gpt::new(cfg, vb).map_err(|e| load_err(&path, e))?)
        }
        Config::Lstm(cfg) => Arc::new(Lstm::new(cfg, vb).map_err(|e| load_err(&path, e))?),
    };
    Ok(model)
}
