//! Multi-layer LSTM language model (embedding → LSTM layers → linear head), state outside the weights.
//!
//! Weight names follow a PyTorch module with `wte = nn.Embedding`, `lstm = nn.LSTM(batch_first)`,
//! `head = nn.Linear`: `wte.weight`, `lstm.weight_ih_lK`, `lstm.weight_hh_lK`, `lstm.bias_ih_lK`,
//! `lstm.bias_hh_lK` (gate order i, f, g, o), `head.weight`, `head.bias`.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::LstmConfig;
use super::nn::Dropout;
use super::{LanguageModel, ModelError, State};

#[derive(Debug, Clone)]
struct Layer {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
}

/// The LSTM network; each generation keeps its hidden and cell states in an [`LstmState`].
#[derive(Debug, Clone)]
pub struct Lstm {
    cfg: LstmConfig,
    wte: Tensor,
    layers: Vec<Layer>,
    head_w: Tensor,
    head_b: Tensor,
    device: Device,
}

/// Hidden and cell state per layer, each `[batch, hidden]`.
pub struct LstmState {
    h: Vec<Tensor>,
    c: Vec<Tensor>,
    len: usize,
    batch: usize,
}

impl State for LstmState {
    fn len(&self) -> usize {
        self.len
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn retain_rows(&mut self, keep: &[bool]) -> std::result::Result<bool, ModelError> {
        if keep.len() != self.batch {
            return Err(ModelError::BatchMismatch { ids: keep.len(), state: self.batch });
        }
        let rows: Vec<u32> = (0..keep.len() as u32).filter(|&i| keep[i as usize]).collect();
        if rows.is_empty() {
            return Ok(false);
        }
        let Some(device) = self.h.first().map(|t| t.device().clone()) else { return Ok(false) };
        let index = Tensor::from_vec(rows.clone(), rows.len(), &device)?;
        for t in self.h.iter_mut().chain(self.c.iter_mut()) {
            *t = t.index_select(&index, 0)?;
        }
        self.batch = rows.len();
        Ok(true)
    }
}

impl Lstm {
    pub fn new(cfg: &LstmConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let zero = candle_nn::Init::Const(0.0);
        let h = cfg.hidden_size;
        let wte = vb.get_with_hints((cfg.vocab_size, cfg.n_embd), "wte.weight", zero)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        let lv = vb.pp("lstm");
        for l in 0..cfg.n_layer {
            let input = if l == 0 { cfg.n_embd } else { h };
            layers.push(Layer {
                w_ih: lv.get_with_hints((4 * h, input), &format!("weight_ih_l{l}"), zero)?,
                w_hh: lv.get_with_hints((4 * h, h), &format!("weight_hh_l{l}"), zero)?,
                b_ih: lv.get_with_hints(4 * h, &format!("bias_ih_l{l}"), zero)?,
                b_hh: lv.get_with_hints(4 * h, &format!("bias_hh_l{l}"), zero)?,
            });
        }
        let head_w = vb.get_with_hints((cfg.vocab_size, h), "head.weight", zero)?;
        let head_b = vb.get_with_hints(cfg.vocab_size, "head.bias", zero)?;
        Ok(Lstm { cfg: cfg.clone(), wte, layers, head_w, head_b, device: vb.device().clone() })
    }

    pub fn config(&self) -> &LstmConfig {
        &self.cfg
    }

    fn zero_state(&self, batch: usize) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let z = Tensor::zeros((batch, self.cfg.hidden_size), candle_core::DType::F32, &self.device)?;
        Ok((vec![z.clone(); self.cfg.n_layer], vec![z; self.cfg.n_layer]))
    }

    /// Runs `ids` (`[batch, seq]`) from states `h`, `c` (updated in place). Returns logits for
    /// every position, or only the last one.
    ///
    /// Every time step's input is its own tensor, never a slice of a `[batch, seq, ...]` one:
    /// candle's backward pass turns each slice into a zero-padded gradient the size of the whole
    /// sequence, so slicing per step made training cost grow with the square of the sequence
    /// length (at 96 steps, most of a training step went to memset and memmove).
    pub(crate) fn run(
        &self,
        ids: &Tensor,
        h: &mut [Tensor],
        c: &mut [Tensor],
        mut dropout: Option<&mut Dropout>,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            candle_core::bail!("the LSTM needs at least one id")
        }
        let hs = self.cfg.hidden_size;
        let p = self.cfg.dropout;
        let mut xs = Vec::with_capacity(t);
        for s in 0..t {
            let x = self.wte.index_select(&ids.narrow(1, s, 1)?.flatten_all()?, 0)?;
            xs.push(match dropout.as_deref_mut() {
                Some(d) => d.apply(&x, p)?,
                None => x,
            });
        }
        for (l, layer) in self.layers.iter().enumerate() {
            // Transposed views, no copies: generation runs this once per token.
            let (w_ih_t, w_hh_t) = (layer.w_ih.t()?, layer.w_hh.t()?);
            let bias = (&layer.b_ih + &layer.b_hh)?;
            for x in xs.iter_mut() {
                let gates = (x.matmul(&w_ih_t)?.broadcast_add(&bias)? + h[l].matmul(&w_hh_t)?)?;
                let i = candle_nn::ops::sigmoid(&gates.narrow(1, 0, hs)?)?;
                let f = candle_nn::ops::sigmoid(&gates.narrow(1, hs, hs)?)?;
                let g = gates.narrow(1, 2 * hs, hs)?.tanh()?;
                let o = candle_nn::ops::sigmoid(&gates.narrow(1, 3 * hs, hs)?)?;
                c[l] = ((f * &c[l])? + (i * g)?)?;
                h[l] = (o * c[l].tanh()?)?;
                *x = match dropout.as_deref_mut() {
                    Some(d) => d.apply(&h[l], p)?,
                    None => h[l].clone(),
                };
            }
        }
        let x = if last_only { xs[t - 1].unsqueeze(1)? } else { Tensor::stack(&xs, 1)? };
        let rows = x.dim(1)?;
        let logits = x.reshape((b * rows, hs))?.matmul(&self.head_w.t()?)?.broadcast_add(&self.head_b)?;
        logits.reshape((b, rows, self.cfg.vocab_size))
    }

    /// Logits for every position from a zero state (training and evaluation).
    pub(crate) fn run_fresh(&self, ids: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let (b, _) = ids.dims2()?;
        let (mut h, mut c) = self.zero_state(b)?;
        self.run(ids, &mut h, &mut c, dropout, false)
    }

    fn state<'a>(&self, state: &'a mut dyn State) -> std::result::Result<&'a mut LstmState, ModelError> {
        state.as_any_mut().downcast_mut::<LstmState>().ok_or_else(|| ModelError::ForeignState { model: "LSTM" })
    }

    fn step(&self, ids: &Tensor, state: &mut dyn State, last_only: bool) -> std::result::Result<Tensor, ModelError> {
        let state = self.state(state)?;
        let (b, t) = ids.dims2()?;
        if b != state.batch {
            return Err(ModelError::BatchMismatch { ids: b, state: state.batch });
        }
        if t == 0 {
            return Err(ModelError::NoIds);
        }
        let logits = self.run(ids, &mut state.h, &mut state.c, None, last_only)?;
        state.len += t;
        Ok(logits)
    }
}

impl LanguageModel for Lstm {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context(&self) -> usize {
        usize::MAX
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn new_state(&self, batch: usize) -> std::result::Result<Box<dyn State>, ModelError> {
        let (h, c) = self.zero_state(batch)?;
        Ok(Box::new(LstmState { h, c, len: 0, batch }))
    }

    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> std::result::Result<Tensor, ModelError> {
        Ok(self.step(ids, state, true)?.squeeze(1)?)
    }

    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> std::result::Result<Tensor, ModelError> {
        self.step(ids, state, false)
    }
}
