//! A vocabulary: token strings ⇄ ids, saved as `vocab.json` beside each model.
//!
//! The file holds the encoding's name, its settings (grid, ranges, conditioning labels; the
//! encoding's own config struct as JSON) and the token list in id order. Loading rebuilds the
//! encoding from the settings and checks that it produces exactly the saved token list, so a
//! model is never run with ids that mean something else (see [`super::by_name`]).

use super::TokenError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Token strings in id order, with a reverse index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vocab {
    /// Which encoding these tokens belong to (checked on load).
    pub encoding: String,
    /// The encoding's settings (its config struct serialized), enough to rebuild it.
    #[serde(default)]
    pub settings: serde_json::Value,
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        self.encoding == other.encoding && self.settings == other.settings && self.tokens == other.tokens
    }
}

impl Vocab {
    pub fn new(encoding: &str, tokens: Vec<String>) -> Self {
        let mut v =
            Vocab { encoding: encoding.to_string(), settings: serde_json::Value::Null, tokens, index: HashMap::new() };
        v.reindex();
        v
    }

    /// A vocabulary with the settings that rebuild it.
    pub fn with_settings(encoding: &str, settings: serde_json::Value, tokens: Vec<String>) -> Self {
        let mut v = Vocab::new(encoding, tokens);
        v.settings = settings;
        v
    }

    fn reindex(&mut self) {
        self.index = self.tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let mut v: Vocab = serde_json::from_str(text)?;
        v.reindex();
        Ok(v)
    }

    /// Reads `vocab.json` (or a directory holding one).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let file = if path.is_dir() { path.join("vocab.json") } else { path.to_path_buf() };
        let err = |reason: String| TokenError::Vocab { path: file.display().to_string(), reason };
        let text = std::fs::read_to_string(&file).map_err(|e| err(e.to_string()))?;
        let v = Vocab::from_json(&text).map_err(|e| err(format!("not a vocabulary: {e}")))?;
        if v.index.len() != v.tokens.len() {
            return Err(err("the token list has duplicates".into()));
        }
        Ok(v)
    }

    /// Writes `vocab.json` (or `dir/vocab.json` when `path` is a directory).
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let file = if path.is_dir() { path.join("vocab.json") } else { path.to_path_buf() };
        std::fs::write(&file, self.to_json() + "\n")
            .map_err(|e| TokenError::Vocab { path: file.display().to_string(), reason: e.to_string() })
    }
}
