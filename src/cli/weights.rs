//! `cadenza weights MODEL --dtype f16`: rewrites a model's weights in another float type, to
//! halve what a bundled model costs the repository where that costs no validation loss (check
//! with `cadenza train ... --evaluate`).

use anyhow::{bail, Context};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundled model name or model folder; its `model.safetensors` is rewritten.
    pub model: String,
    /// Float type to store: f16, bf16 or f32 (loading converts to f32 either way).
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// Write here instead of over the model's `model.safetensors`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let dtype = match args.dtype.to_ascii_lowercase().as_str() {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => bail!("--dtype {other}: expected f16, bf16 or f32"),
    };
    let dir = crate::model::load::find(&args.model)?;
    let path = dir.join("model.safetensors");
    let before = crate::model::load::read_weights(&path)?;
    let tensors = candle_core::safetensors::load_buffer(&before, &Device::Cpu)
        .with_context(|| format!("{}: not readable as tensors", path.display()))?;
    let (converted, worst) = convert(&tensors, dtype).with_context(|| format!("{}: converting", path.display()))?;
    let bytes = safetensors::serialize(&converted, None)?;
    // Overflow to infinity (f16 tops out at 65504) must not be written: check as loading would.
    let check = safetensors::SafeTensors::deserialize(&bytes)?;
    crate::model::load::check_finite(&check)
        .map_err(|e| anyhow::anyhow!("{}: in {}, {e}; keep this model in f32", path.display(), args.dtype))?;
    let target = args.out.unwrap_or_else(|| path.clone());
    // Write beside the target and rename, so a stopped run never leaves half a weights file.
    let tmp = target.with_extension("safetensors.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &target).with_context(|| format!("renaming {} to {}", tmp.display(), target.display()))?;
    eprintln!(
        "{}: {} tensors, {} → {} bytes in {}; largest change of a weight {worst:.2e}",
        target.display(),
        converted.len(),
        before.len(),
        bytes.len(),
        args.dtype
    );
    Ok(())
}

/// Every floating-point tensor in `dtype` (others as they are), and the largest absolute change
/// of any weight.
fn convert(tensors: &HashMap<String, Tensor>, dtype: DType) -> candle_core::Result<(HashMap<String, Tensor>, f32)> {
    let mut out = HashMap::with_capacity(tensors.len());
    let mut worst = 0f32;
    for (name, t) in tensors {
        if !t.dtype().is_float() {
            out.insert(name.clone(), t.clone());
            continue;
        }
        let c = t.to_dtype(dtype)?;
        let diff =
            (c.to_dtype(DType::F32)? - t.to_dtype(DType::F32)?)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        worst = worst.max(diff);
        out.insert(name.clone(), c);
    }
    Ok((out, worst))
}
