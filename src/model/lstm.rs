//! Multi-layer LSTM language model (embedding → LSTM layers → linear head), state outside the weights.
//!
//! Weight names follow a PyTorch module with `wte = nn.Embedding`, `lstm = nn.LSTM(batch_first)`,
//! `head = nn.Linear`: `wte.weight`, `lstm.weight_ih_lK`, `lstm.weight_hh_lK`, `lstm.bias_ih_lK`,
//! `lstm.bias_hh_lK` (gate order i, f, g, o), `head.weight`, `head.bias`.

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::LstmConfig;
use super::nn::Dropout;
use super::{cross_entropy, lstm_fused};
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

/// [`Lstm`]'s weights: the embedding, per layer `(W_ih, W_hh, b_ih, b_hh)` in PyTorch's layout,
/// the head.
pub(crate) struct LstmWeights<'a> {
    pub wte: &'a Tensor,
    pub layers: Vec<(&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor)>,
    pub head_w: &'a Tensor,
    pub head_b: &'a Tensor,
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

    /// The weights by role, for the CPU decoder ([`super::lstm_cpu`]) to pack.
    pub(crate) fn weights(&self) -> LstmWeights<'_> {
        LstmWeights {
            wte: &self.wte,
            layers: self.layers.iter().map(|l| (&l.w_ih, &l.w_hh, &l.b_ih, &l.b_hh)).collect(),
            head_w: &self.head_w,
            head_b: &self.head_b,
        }
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

    /// Logits for every position from a zero state (training and evaluation); dropout, and
    /// gradients through the fused recurrence, when `dropout` is given.
    pub(crate) fn run_fresh(&self, ids: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        if super::cpu_f32::on_cpu_f32(&self.wte) {
            return self.run_fused(ids, dropout);
        }
        let (b, _) = ids.dims2()?;
        let (mut h, mut c) = self.zero_state(b)?;
        self.run(ids, &mut h, &mut c, dropout, false)
    }

    /// [`Lstm::run_fresh`] on the CPU: each layer's input projection for all steps as one
    /// matmul, then the recurrence as one fused op ([`lstm_fused`]). Same arithmetic as
    /// [`Lstm::run`], with the dropout masks drawn for the whole sequence at once.
    fn run_fused(&self, ids: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let x = self.top_fused(ids, dropout)?;
        let logits = x.matmul(&self.head_w.t()?)?.broadcast_add(&self.head_b)?;
        logits.reshape((b, t, self.cfg.vocab_size))
    }

    /// Mean cross-entropy (nats) of the next-id predictions for `ids` (`[batch, seq]`) against
    /// `targets` (same shape) from a zero state. On the CPU the head and the loss are one op
    /// ([`cross_entropy`]): the logits are never a tensor of the graph.
    pub(crate) fn loss_fresh(&self, ids: &Tensor, targets: &Tensor, dropout: Option<&mut Dropout>) -> Result<Tensor> {
        if !super::cpu_f32::on_cpu_f32(&self.wte) {
            return cross_entropy::from_logits(&self.run_fresh(ids, dropout)?, targets);
        }
        let train = dropout.is_some();
        let x = self.top_fused(ids, dropout)?;
        cross_entropy::linear_cross_entropy(&x, &self.head_w, &self.head_b, targets, train)
    }

    /// The top layer's output `[batch · seq, hidden]` (after its dropout) on the fused CPU path.
    fn top_fused(&self, ids: &Tensor, mut dropout: Option<&mut Dropout>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            candle_core::bail!("the LSTM needs at least one id")
        }
        let p = self.cfg.dropout;
        let train = dropout.is_some();
        let mut drop = |x: Tensor| match dropout.as_deref_mut() {
            Some(d) => d.apply(&x, p),
            None => Ok(x),
        };
        let mut x = drop(self.wte.index_select(&ids.flatten_all()?, 0)?)?;
        for layer in &self.layers {
            let bias = (&layer.b_ih + &layer.b_hh)?;
            let xg = x.matmul(&layer.w_ih.t()?)?.reshape((b, t, ()))?;
            let hidden = lstm_fused::lstm_recurrence(&xg, &layer.w_hh, &bias, train)?;
            x = drop(hidden.reshape((b * t, ()))?)?;
        }
        Ok(x)
    }

    fn step(&self, ids: &Tensor, state: &mut dyn State, last_only: bool) -> std::result::Result<Tensor, ModelError> {
        let state = super::own_state::<LstmState>(state, "LSTM")?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::init_params;
    use crate::model::Config;
    use candle_core::DType;
    use candle_nn::VarMap;

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
    }

    /// The fused CPU path ([`Lstm::run_fresh`]) against the step-by-step candle ops
    /// ([`Lstm::run`]): the same logits and the same gradient for every weight, over a
    /// sequence long enough for the gradient to travel many steps back.
    #[test]
    fn the_fused_recurrence_matches_the_step_by_step_ops_forward_and_backward() -> Result<()> {
        let cfg = LstmConfig { vocab_size: 13, n_embd: 6, hidden_size: 8, n_layer: 2, dropout: 0.0 };
        let varmap = VarMap::new();
        let model = Lstm::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
        init_params(&varmap, &Config::Lstm(cfg.clone()), 3)?;
        let (b, t) = (3, 40);
        let ids: Vec<u32> = (0..b * t).map(|i| ((i * 7 + i / 5) % 13) as u32).collect();
        let ids = Tensor::from_vec(ids, (b, t), &Device::Cpu)?;
        // A fixed random weighting of the logits, so every output has its own gradient.
        let weights = Tensor::randn(0f32, 1.0, (b, t, cfg.vocab_size), &Device::Cpu)?;

        // Dropout 0 with a dropout generator: the training path (gradients) without masks.
        let fused = model.run_fresh(&ids, Some(&mut Dropout::new(1)))?;
        let (mut h, mut c) = model.zero_state(b)?;
        let stepped = model.run(&ids, &mut h, &mut c, None, false)?;
        assert!(max_diff(&fused, &stepped) < 1e-5, "logits differ by {}", max_diff(&fused, &stepped));

        let grads_fused = (&fused * &weights)?.sum_all()?.backward()?;
        let grads_stepped = (&stepped * &weights)?.sum_all()?.backward()?;
        let vars = varmap.all_vars();
        assert_eq!(vars.len(), 3 + 4 * cfg.n_layer);
        for var in &vars {
            let (a, b) = (grads_fused.get(var).expect("fused gradient"), grads_stepped.get(var).expect("gradient"));
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            let diff = max_diff(a, b);
            assert!(diff < 1e-4 * scale, "a {:?} gradient differs by {diff}", var.shape());
            assert!(b.abs()?.sum_all()?.to_scalar::<f32>()? > 1e-3, "a {:?} gradient is zero", var.shape());
        }
        // Evaluation (no dropout given) takes the same path without keeping anything for backward.
        assert!(max_diff(&model.run_fresh(&ids, None)?, &stepped) < 1e-5);
        Ok(())
    }
}
