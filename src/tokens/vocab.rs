//! A vocabulary: token strings ⇄ ids, saved as `vocab.json` beside each model.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Token strings in id order, with a reverse index.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Vocab {
    /// Which encoding these tokens belong to (checked on load).
    pub encoding: String,
    pub tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Vocab {
    pub fn new(encoding: &str, tokens: Vec<String>) -> Self {
        let mut v = Vocab { encoding: encoding.to_string(), tokens, index: HashMap::new() };
        v.reindex();
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
}
