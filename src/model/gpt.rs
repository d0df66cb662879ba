//! GPT-2 (Hugging Face layout and weight names) with its key/value cache kept outside the weights.
//!
//! Weight names are those of `GPT2Model` in Hugging Face's safetensors: `wte`, `wpe`,
//! `h.N.ln_1`, `h.N.attn.c_attn`, `h.N.attn.c_proj`, `h.N.ln_2`, `h.N.mlp.c_fc`,
//! `h.N.mlp.c_proj`, `ln_f` (a `transformer.` prefix, as in `GPT2LMHeadModel` files, is
//! handled by the loader). The output head is tied to `wte`.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::attention;
use super::config::GptConfig;
use super::nn::{softmax_last, Conv1D, Dropout, Norm};
use super::{LanguageModel, ModelError, State};

#[derive(Debug, Clone)]
struct Attention {
    c_attn: Conv1D,
    c_proj: Conv1D,
    n_head: usize,
    head_dim: usize,
    /// Factor applied to query·key scores.
    scale: f64,
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: Norm,
    attn: Attention,
    ln_2: Norm,
    c_fc: Conv1D,
    c_proj: Conv1D,
}

/// Cached keys and values of one layer, each `[batch, heads, seen, head_dim]`.
/// One layer's keys and values, `[batch, heads, positions, head_dim]`, written in place into
/// storage that grows 256 positions at a time (candle-nn's `KvCache`) rather than copied whole
/// by a concatenation at every step.
type LayerCache = candle_nn::kv_cache::KvCache;

/// The GPT-2 network. Cheap to share: generations keep their caches in [`GptState`].
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: Norm,
    device: Device,
}

/// Per-generation key/value cache.
pub struct GptState {
    layers: Vec<LayerCache>,
    len: usize,
    batch: usize,
}

impl State for GptState {
    fn len(&self) -> usize {
        self.len
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Dropout rates and generator, present only while training.
pub(crate) struct TrainCtx<'a> {
    pub dropout: &'a mut Dropout,
}

impl Gpt {
    /// Builds the network from `vb` (a safetensors file, or a `VarMap` when training).
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let e = cfg.n_embd;
        let zero = candle_nn::Init::Const(0.0);
        let wte = vb.get_with_hints((cfg.vocab_size, e), "wte.weight", zero)?;
        let wpe = vb.get_with_hints((cfg.n_positions, e), "wpe.weight", zero)?;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let vb = vb.pp(format!("h.{i}"));
            blocks.push(Block {
                ln_1: Norm::load(e, cfg.layer_norm_epsilon, vb.pp("ln_1"))?,
                attn: Attention {
                    c_attn: Conv1D::load(e, 3 * e, vb.pp("attn.c_attn"))?,
                    c_proj: Conv1D::load(e, e, vb.pp("attn.c_proj"))?,
                    n_head: cfg.n_head,
                    head_dim: cfg.head_dim(),
                    scale: cfg.attn_scale(i),
                },
                ln_2: Norm::load(e, cfg.layer_norm_epsilon, vb.pp("ln_2"))?,
                c_fc: Conv1D::load(e, cfg.inner(), vb.pp("mlp.c_fc"))?,
                c_proj: Conv1D::load(cfg.inner(), e, vb.pp("mlp.c_proj"))?,
            });
        }
        let ln_f = Norm::load(e, cfg.layer_norm_epsilon, vb.pp("ln_f"))?;
        Ok(Gpt { cfg: cfg.clone(), wte, wpe, blocks, ln_f, device: vb.device().clone() })
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    fn check_ids(&self, ids: &Tensor, state: &GptState) -> std::result::Result<(usize, usize), ModelError> {
        let (b, t) = ids.dims2()?;
        if b != state.batch {
            return Err(ModelError::BatchMismatch { ids: b, state: state.batch });
        }
        if t == 0 {
            return Err(ModelError::NoIds);
        }
        if state.len + t > self.cfg.n_positions {
            return Err(ModelError::ContextFull { context: self.cfg.n_positions, needed: state.len + t });
        }
        Ok((b, t))
    }

    /// The whole network. `caches`: one slot per layer, extended in place (inference);
    /// `past`: positions already in the caches; `last_only`: logits for the last position only.
    pub(crate) fn run(
        &self,
        ids: &Tensor,
        past: usize,
        caches: Option<&mut [LayerCache]>,
        train: Option<TrainCtx>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self.cfg.n_embd;
        let mut h = self.body(ids, past, caches, train)?;
        if last_only && t > 1 {
            h = h.narrow(1, t - 1, 1)?;
        }
        let rows = h.dim(1)?;
        let logits = h.reshape((b * rows, e))?.matmul(&self.wte.t()?)?;
        logits.reshape((b, rows, self.cfg.vocab_size))
    }

    /// Mean cross-entropy (nats) of the next-id predictions for `ids` (`[batch, seq]`, from
    /// position 0) against `targets` (same shape). On the CPU the tied head and the loss are one
    /// op ([`super::cross_entropy`]): the logits are never a tensor of the graph.
    pub(crate) fn loss(&self, ids: &Tensor, targets: &Tensor, train: Option<TrainCtx>) -> Result<Tensor> {
        if !super::cpu_f32::on_cpu_f32(&self.wte) {
            return super::cross_entropy::from_logits(&self.run(ids, 0, None, train, false)?, targets);
        }
        let (b, t) = ids.dims2()?;
        let is_train = train.is_some();
        let h = self.body(ids, 0, None, train)?.reshape((b * t, self.cfg.n_embd))?;
        // GPT-2's head has no bias: a zero one, whose gradient nobody reads.
        let no_bias = Tensor::zeros(self.cfg.vocab_size, DType::F32, ids.device())?;
        super::cross_entropy::linear_cross_entropy(&h, &self.wte, &no_bias, targets, is_train)
    }

    /// Embeddings, the blocks and the final layer norm: `[batch, seq, n_embd]`.
    fn body(
        &self,
        ids: &Tensor,
        past: usize,
        mut caches: Option<&mut [LayerCache]>,
        mut train: Option<TrainCtx>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let e = self.cfg.n_embd;
        let is_train = train.is_some();
        let positions = Tensor::arange(past as u32, (past + t) as u32, ids.device())?;
        let tok = self.wte.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, e))?;
        let pos = self.wpe.index_select(&positions, 0)?;
        let mut x = tok.broadcast_add(&pos)?;
        if let Some(ctx) = train.as_mut() {
            x = ctx.dropout.apply(&x, self.cfg.embd_pdrop)?;
        }
        let mask = causal_mask(t, past, ids.device())?;
        for (i, block) in self.blocks.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            x = block.forward(&x, cache, mask.as_ref(), &self.cfg, train.as_mut())?;
        }
        self.ln_f.forward(&x, is_train)
    }
}

/// `[t, past + t]` additive mask: query `i` (absolute position `past + i`) sees keys `0..=past + i`.
fn causal_mask(t: usize, past: usize, device: &Device) -> Result<Option<Tensor>> {
    if t <= 1 {
        return Ok(None);
    }
    let total = past + t;
    let mut data = vec![0f32; t * total];
    for i in 0..t {
        for j in (past + i + 1)..total {
            data[i * total + j] = f32::NEG_INFINITY;
        }
    }
    Ok(Some(Tensor::from_vec(data, (t, total), device)?))
}

impl Block {
    fn forward(
        &self,
        x: &Tensor,
        cache: Option<&mut LayerCache>,
        mask: Option<&Tensor>,
        cfg: &GptConfig,
        mut train: Option<&mut TrainCtx>,
    ) -> Result<Tensor> {
        let is_train = train.is_some();
        let a = self.ln_1.forward(x, is_train)?;
        let a = self.attn.forward(&a, cache, mask, cfg, train.as_deref_mut())?;
        let x = match train.as_deref_mut() {
            Some(ctx) => ctx.dropout.add_dropped(x, &a, cfg.resid_pdrop)?,
            None => (x + a)?,
        };
        let m = self.c_fc.forward(&self.ln_2.forward(&x, is_train)?)?;
        let m = if cfg.exact_gelu() { m.gelu_erf()? } else { super::nn::gelu_tanh(&m)? };
        let m = self.c_proj.forward(&m)?;
        match train {
            Some(ctx) => ctx.dropout.add_dropped(&x, &m, cfg.resid_pdrop),
            None => x + m,
        }
    }
}

impl Attention {
    fn forward(
        &self,
        x: &Tensor,
        cache: Option<&mut LayerCache>,
        mask: Option<&Tensor>,
        cfg: &GptConfig,
        train: Option<&mut TrainCtx>,
    ) -> Result<Tensor> {
        let (b, t, e) = x.dims3()?;
        let (h, d) = (self.n_head, self.head_dim);
        let qkv = self.c_attn.forward(x)?;
        // A whole sequence with no cache (training, scoring): one fused op each way, unless
        // dropout must act on the attention probabilities themselves. No reshapes around it:
        // each would cost a full pass in the backward (candle accumulates every gradient).
        let attention_dropout = train.is_some() && cfg.attn_pdrop > 0.0;
        if cache.is_none() && !attention_dropout && super::cpu_f32::on_cpu_f32(&qkv) {
            let y = attention::causal_self_attention(&qkv, h, self.scale, train.is_some())?;
            return self.c_proj.forward(&y);
        }
        let qkv = qkv.reshape((b, t, 3, h, d))?;
        // [b, t, 3, h, d] → [3, b, h, t, d]
        let qkv = qkv.permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let mut k = qkv.get(1)?.contiguous()?;
        let mut v = qkv.get(2)?.contiguous()?;
        if let Some(cache) = cache {
            (k, v) = cache.append(&k, &v)?;
        }
        let mut att = (q.matmul(&k.t()?)? * self.scale)?;
        if let Some(mask) = mask {
            att = att.broadcast_add(mask)?;
        }
        let is_train = train.is_some();
        let mut att = softmax_last(&att, is_train)?;
        if let Some(ctx) = train {
            att = ctx.dropout.apply(&att, cfg.attn_pdrop)?;
        }
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, e))?;
        self.c_proj.forward(&y)
    }
}

impl LanguageModel for Gpt {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context(&self) -> usize {
        self.cfg.n_positions
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn new_state(&self, batch: usize) -> std::result::Result<Box<dyn State>, ModelError> {
        // Room for 256 positions at a time (it grows by as much when full): a batch of hundreds
        // of takes must not reserve the whole context up front.
        let chunk = self.cfg.n_positions.min(256);
        let layers = (0..self.cfg.n_layer).map(|_| LayerCache::new(2, chunk)).collect();
        Ok(Box::new(GptState { layers, len: 0, batch }))
    }

    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> std::result::Result<Tensor, ModelError> {
        let state = super::own_state::<GptState>(state, "GPT")?;
        let (_, t) = self.check_ids(ids, state)?;
        let logits = self.run(ids, state.len, Some(&mut state.layers), None, true)?;
        state.len += t;
        Ok(logits.squeeze(1)?)
    }

    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> std::result::Result<Tensor, ModelError> {
        let state = super::own_state::<GptState>(state, "GPT")?;
        let (_, t) = self.check_ids(ids, state)?;
        let logits = self.run(ids, state.len, Some(&mut state.layers), None, false)?;
        state.len += t;
        Ok(logits)
    }
}

impl Module for Gpt {
    /// Logits for every position of `ids` with no cache (`[batch, seq, vocab]`).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.run(ids, 0, None, None, false)
    }
}
