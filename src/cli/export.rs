//! `cadenza train --export DIR`: the encoded corpus (ids, split, vocabulary, model config) for a PyTorch run.
//!
//! Users with GPUs outgrow two cores: `scripts/train_hf.py` trains the same GPT-2 in Hugging
//! Face layout from what this writes (with `accelerate launch` on many GPUs), and cadenza plays
//! the checkpoint it saves (`config.json` + `model.safetensors` + this `vocab.json`). The files:
//!
//! - `train-NN.u32`: epoch NN's training tunes, each `<bos>` ... `<eos>`, joined, as
//!   little-endian u32 ids; epoch 00 unaugmented, later ones transposed and label-dropped as
//!   `cadenza train` would (the same seeds), so both trainers see the same data;
//! - `valid.u32`: the validation tunes, joined (never augmented);
//! - `vocab.json`, `config.json` (GPT-2 with Hugging Face field names);
//! - `export.json`: counts, context, the split and how the files were made.

use crate::model::train::DataSource;
use anyhow::Context;
use std::io::Write;
use std::path::Path;

/// Most augmented epochs one export writes (each is a full copy of the training ids).
pub const MAX_EXPORT_EPOCHS: usize = 100;

fn write_ids(path: &Path, seqs: &[Vec<u32>]) -> anyhow::Result<usize> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut n = 0;
    for id in seqs.iter().flatten() {
        w.write_all(&id.to_le_bytes()).with_context(|| format!("writing {}", path.display()))?;
        n += 1;
    }
    w.flush().with_context(|| format!("writing {}", path.display()))?;
    Ok(n)
}

/// Writes the export into `dir`: `epochs` training epochs from `source`, its validation ids,
/// the vocabulary and `config_json`; `meta` goes into `export.json` beside the counts.
pub fn export(
    dir: &Path,
    source: &mut dyn DataSource,
    epochs: usize,
    vocab_json: &str,
    config_json: &str,
    mut meta: serde_json::Value,
) -> anyhow::Result<()> {
    if !(1..=MAX_EXPORT_EPOCHS).contains(&epochs) {
        anyhow::bail!("--export-epochs must be 1..={MAX_EXPORT_EPOCHS}, got {epochs}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files = Vec::new();
    for epoch in 0..epochs {
        let seqs = source.train_epoch(epoch)?;
        let name = format!("train-{epoch:02}.u32");
        let ids = write_ids(&dir.join(&name), &seqs)?;
        files.push(serde_json::json!({ "file": name, "tunes": seqs.len(), "ids": ids }));
    }
    let valid_ids = write_ids(&dir.join("valid.u32"), source.valid())?;
    std::fs::write(dir.join("vocab.json"), vocab_json).context("writing vocab.json")?;
    std::fs::write(dir.join("config.json"), config_json).context("writing config.json")?;
    if let Some(m) = meta.as_object_mut() {
        m.insert("train".into(), files.into());
        m.insert(
            "valid".into(),
            serde_json::json!({ "file": "valid.u32", "tunes": source.valid().len(), "ids": valid_ids }),
        );
        m.insert("dtype".into(), "u32 little-endian".into());
    }
    let text = serde_json::to_string_pretty(&meta)?;
    std::fs::write(dir.join("export.json"), text).context("writing export.json")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::FixedData;

    #[test]
    fn export_writes_ids_as_little_endian_u32_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = FixedData { train: vec![vec![1, 7, 300, 2], vec![1, 9, 2]], valid: vec![vec![1, 70_000, 2]] };
        export(dir.path(), &mut data, 2, "{}", "{}", serde_json::json!({ "context": 8 })).unwrap();
        let bytes = std::fs::read(dir.path().join("train-01.u32")).unwrap();
        let ids: Vec<u32> = bytes.chunks(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(ids, [1, 7, 300, 2, 1, 9, 2]);
        let valid = std::fs::read(dir.path().join("valid.u32")).unwrap();
        assert_eq!(valid, [1, 0, 0, 0, 0x70, 0x11, 0x01, 0, 2, 0, 0, 0]);
        let meta: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("export.json")).unwrap()).unwrap();
        assert_eq!(meta["train"][0]["ids"], 7);
        assert_eq!(meta["valid"]["tunes"], 1);
        assert_eq!(meta["context"], 8);
        assert!(export(dir.path(), &mut data, 0, "{}", "{}", serde_json::json!({})).is_err());
    }
}
