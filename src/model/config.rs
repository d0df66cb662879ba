//! Model configuration (`config.json`): GPT-2 with Hugging Face field names, or a multi-layer LSTM.

use serde::{Deserialize, Serialize};

/// A GPT-2 configuration. Field names are Hugging Face's, so a `config.json` written by
/// `transformers` loads as is (unknown fields are ignored) and ours loads in `transformers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Longest sequence (learned position embeddings).
    pub n_positions: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Width of the MLP; `None` means 4 × `n_embd`, as in Hugging Face.
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_epsilon: f64,
    /// `gelu_new` (tanh approximation, GPT-2's) or `gelu` (exact erf).
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Divide attention scores by √head_dim (GPT-2: yes).
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    /// Also divide them by layer index + 1 (a Hugging Face option, off in GPT-2).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Dropout rates, used only while training.
    #[serde(default = "default_pdrop")]
    pub embd_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub attn_pdrop: f64,
    #[serde(default = "default_pdrop")]
    pub resid_pdrop: f64,
}

fn default_ln_eps() -> f64 {
    1e-5
}
fn default_activation() -> String {
    "gelu_new".to_string()
}
fn default_true() -> bool {
    true
}
fn default_pdrop() -> f64 {
    0.1
}

impl GptConfig {
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// What attention scores are multiplied by in `layer` (from 0), by Hugging Face's rules:
    /// 1/sqrt(head_dim) with `scale_attn_weights`, divided by `layer + 1` with
    /// `scale_attn_by_inverse_layer_idx`. Both GPT implementations read it here.
    pub fn attn_scale(&self, layer: usize) -> f64 {
        let base = if self.scale_attn_weights { 1.0 / (self.head_dim() as f64).sqrt() } else { 1.0 };
        if self.scale_attn_by_inverse_layer_idx {
            base / (layer + 1) as f64
        } else {
            base
        }
    }

    /// Whether the MLP's GELU is the exact (erf) one, `gelu`; else GPT-2's tanh approximation
    /// (`gelu_new`, `gelu_pytorch_tanh`).
    pub fn exact_gelu(&self) -> bool {
        self.activation_function == "gelu"
    }

    /// Checks the numbers fit together; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vocab_size == 0 || self.n_embd == 0 || self.n_layer == 0 || self.n_head == 0 || self.n_positions == 0 {
            return Err(ConfigError::NotPositive("vocab_size, n_positions, n_embd, n_layer and n_head"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(ConfigError::HeadsDoNotDivide { n_embd: self.n_embd, n_head: self.n_head });
        }
        if !matches!(self.activation_function.as_str(), "gelu_new" | "gelu" | "gelu_pytorch_tanh") {
            return Err(ConfigError::Activation(self.activation_function.clone()));
        }
        Ok(())
    }

    /// Parameters (weights tied: the output head reuses `wte`).
    pub fn param_count(&self) -> usize {
        let e = self.n_embd;
        let i = self.inner();
        let block = 2 * 2 * e + (e * 3 * e + 3 * e) + (e * e + e) + (e * i + i) + (i * e + e);
        self.vocab_size * e + self.n_positions * e + self.n_layer * block + 2 * e
    }
}

/// A multi-layer LSTM language model: embedding → LSTM layers → linear head.
/// Weight names follow PyTorch's `nn.LSTM` (`weight_ih_l0`, gate order i, f, g, o).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LstmConfig {
    pub vocab_size: usize,
    /// Embedding width (input of the first layer).
    pub n_embd: usize,
    pub hidden_size: usize,
    pub n_layer: usize,
    /// Dropout between layers and before the head, used only while training.
    #[serde(default = "default_pdrop")]
    pub dropout: f64,
}

impl LstmConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vocab_size == 0 || self.n_embd == 0 || self.hidden_size == 0 || self.n_layer == 0 {
            return Err(ConfigError::NotPositive("vocab_size, n_embd, hidden_size and n_layer"));
        }
        Ok(())
    }

    pub fn param_count(&self) -> usize {
        let h = self.hidden_size;
        let mut n = self.vocab_size * self.n_embd + h * self.vocab_size + self.vocab_size;
        for l in 0..self.n_layer {
            let input = if l == 0 { self.n_embd } else { h };
            n += 4 * h * input + 4 * h * h + 8 * h;
        }
        n
    }
}

/// Why a `config.json` cannot describe a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("no `arch` field (expected \"gpt2\" or \"lstm\")")]
    NoArch,
    #[error("unknown arch `{0}` (expected \"gpt2\" or \"lstm\")")]
    UnknownArch(String),
    #[error("{arch} config: {reason}")]
    Fields { arch: &'static str, reason: String },
    #[error("{0} must all be positive")]
    NotPositive(&'static str),
    #[error("n_embd {n_embd} is not a multiple of n_head {n_head}")]
    HeadsDoNotDivide { n_embd: usize, n_head: usize },
    #[error("activation_function `{0}` is not supported")]
    Activation(String),
}

/// Which architecture a `config.json` describes.
#[derive(Debug, Clone, PartialEq)]
pub enum Config {
    Gpt2(GptConfig),
    Lstm(LstmConfig),
}

impl Config {
    /// Reads a `config.json`. The architecture comes from `arch` (`gpt2` | `lstm`); a Hugging
    /// Face file has none, so `model_type: "gpt2"` also selects GPT-2.
    pub fn from_json(text: &str) -> Result<Config, ConfigError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Json(e.to_string()))?;
        let arch = value
            .get("arch")
            .or_else(|| value.get("model_type"))
            .and_then(|v| v.as_str())
            .ok_or(ConfigError::NoArch)?
            .to_string();
        let config = match arch.as_str() {
            "gpt2" | "gpt" => Config::Gpt2(
                serde_json::from_value(value)
                    .map_err(|e| ConfigError::Fields { arch: "GPT-2", reason: e.to_string() })?,
            ),
            "lstm" => Config::Lstm(
                serde_json::from_value(value)
                    .map_err(|e| ConfigError::Fields { arch: "LSTM", reason: e.to_string() })?,
            ),
            other => return Err(ConfigError::UnknownArch(other.to_string())),
        };
        config.validate()?;
        Ok(config)
    }

    /// Writes `config.json`: `arch` plus the fields; GPT-2 also gets Hugging Face's
    /// `model_type` and `architectures`, so `transformers` can load what we train.
    pub fn to_json(&self) -> String {
        let mut value = match self {
            Config::Gpt2(c) => serde_json::to_value(c),
            Config::Lstm(c) => serde_json::to_value(c),
        }
        .unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("arch".into(), self.arch().into());
            if let Config::Gpt2(_) = self {
                map.insert("model_type".into(), "gpt2".into());
                map.insert("architectures".into(), serde_json::json!(["GPT2LMHeadModel"]));
                map.insert("tie_word_embeddings".into(), true.into());
            }
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    pub fn arch(&self) -> &'static str {
        match self {
            Config::Gpt2(_) => "gpt2",
            Config::Lstm(_) => "lstm",
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Config::Gpt2(c) => c.vocab_size,
            Config::Lstm(c) => c.vocab_size,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Config::Gpt2(c) => c.validate(),
            Config::Lstm(c) => c.validate(),
        }
    }

    pub fn param_count(&self) -> usize {
        match self {
            Config::Gpt2(c) => c.param_count(),
            Config::Lstm(c) => c.param_count(),
        }
    }
}
