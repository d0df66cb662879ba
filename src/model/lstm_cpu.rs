//! A hand-written CPU decoder for the LSTM: the same numbers as `model::lstm`, one pass per step.
//! `model::load` picks it for LSTMs on the CPU; callers never name it.
//!
//! Why: through candle each layer of each step is a dozen small tensor ops (two matmuls against
//! transposed views, four gate slices, the activations, the cell update), each allocated and
//! dispatched, and the batch's rows share nothing but the dispatch: a batch of 16 made fewer
//! tokens a second in all than one row did (`benches/gen_speed.rs`: 2,108 against 2,635 for
//! 2 × 512). Here the input and recurrent weights and the head are packed once at load
//! ([`crate::model::small_gemm`]), so a layer's step is two products of the batch's rows over
//! packed weights and one pass over the gates with the training recurrence's own cell
//! ([`crate::model::lstm_fused::step_row`]); batches are split over threads as in
//! [`crate::model::gpt_cpu`]. Logits match the candle model to float rounding (tested).
//!
//! Only inference lives here; training keeps the candle model and its fused recurrence.

use candle_core::{DType, Device, Tensor};

use crate::model::cpu_f32::{decoder_ids, on_threads, rows_per_thread};
use crate::model::lstm::Lstm;
use crate::model::lstm_fused::step_row;
use crate::model::small_gemm::Packed;
use crate::model::{LanguageModel, LstmConfig, ModelError, State};

/// One layer's weights, packed for products of a few rows.
struct Layer {
    /// `W_ihᵀ`, `[input, 4h]`.
    w_ih: Packed,
    /// `W_hhᵀ`, `[h, 4h]`.
    w_hh: Packed,
    /// `b_ih + b_hh`, `[4h]`.
    bias: Vec<f32>,
}

/// The LSTM language model for inference on the CPU.
pub struct CpuLstm {
    cfg: LstmConfig,
    /// `[vocab, n_embd]`.
    wte: Vec<f32>,
    layers: Vec<Layer>,
    /// The head's weights transposed, `[h, vocab]`.
    head: Packed,
    head_b: Vec<f32>,
    device: Device,
    threads: usize,
}

/// Hidden and cell states per layer, each `[batch · hidden]` row after row.
pub struct CpuLstmState {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
    len: usize,
    batch: usize,
    hidden: usize,
}

impl State for CpuLstmState {
    fn len(&self) -> usize {
        self.len
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn retain_rows(&mut self, keep: &[bool]) -> Result<bool, ModelError> {
        if keep.len() != self.batch {
            return Err(ModelError::BatchMismatch { ids: keep.len(), state: self.batch });
        }
        let hs = self.hidden;
        for layer in self.h.iter_mut().chain(self.c.iter_mut()) {
            let mut kept = 0;
            for (r, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
                layer.copy_within(r * hs..(r + 1) * hs, kept * hs);
                kept += 1;
            }
            layer.truncate(kept * hs);
        }
        self.batch = keep.iter().filter(|&&k| k).count();
        Ok(true)
    }
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

impl CpuLstm {
    /// The candle model's weights (as loaded and checked by `model::load`), packed.
    pub fn from_candle(model: &Lstm) -> candle_core::Result<CpuLstm> {
        let cfg = model.config().clone();
        let weights = model.weights();
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (l, (w_ih, w_hh, b_ih, b_hh)) in weights.layers.iter().enumerate() {
            let input = if l == 0 { cfg.n_embd } else { cfg.hidden_size };
            let gates = 4 * cfg.hidden_size;
            let bias = flat(&(*b_ih + *b_hh)?)?;
            layers.push(Layer {
                // PyTorch keeps W_ih as [4h, input]: its transpose is what x · W_ihᵀ multiplies by.
                w_ih: Packed::from_transposed(&flat(w_ih)?, input, gates),
                w_hh: Packed::from_transposed(&flat(w_hh)?, cfg.hidden_size, gates),
                bias,
            });
        }
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        Ok(CpuLstm {
            wte: flat(weights.wte)?,
            head: Packed::from_transposed(&flat(weights.head_w)?, cfg.hidden_size, cfg.vocab_size),
            head_b: flat(weights.head_b)?,
            layers,
            cfg,
            device: Device::Cpu,
            threads,
        })
    }

    /// Limits the threads large batches are split over (1 = never split).
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// Runs `ids` (`[batch, t]`) from the state; returns logits for every position (`all`) or
    /// only the last, as one flat `[batch, rows, vocab]` buffer.
    fn run(&self, ids: &Tensor, state: &mut dyn State, all: bool) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let st = super::own_state::<CpuLstmState>(state, "LSTM")?;
        let rows_ids = decoder_ids(ids, st.batch, self.cfg.vocab_size)?;
        let (b, t) = (rows_ids.len(), rows_ids[0].len());
        let (hs, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let out_rows = if all { t } else { 1 };
        let mut out = vec![0f32; b * out_rows * v];
        let per = rows_per_thread(b, self.threads);
        // Each thread's share: its ids, its rows of every layer's h and c, its rows of `out`.
        let mut h_layers: Vec<_> = st.h.iter_mut().map(|l| l.chunks_mut(per * hs)).collect();
        let mut c_layers: Vec<_> = st.c.iter_mut().map(|l| l.chunks_mut(per * hs)).collect();
        let mut jobs = Vec::new();
        for (share, o) in out.chunks_mut(per * out_rows * v).enumerate() {
            let hc: Vec<&mut [f32]> = h_layers.iter_mut().filter_map(|it| it.next()).collect();
            let cc: Vec<&mut [f32]> = c_layers.iter_mut().filter_map(|it| it.next()).collect();
            jobs.push((&rows_ids[share * per..((share + 1) * per).min(b)], hc, cc, o));
        }
        on_threads(jobs, |(ids, mut hc, mut cc, o)| self.run_rows(ids, &mut hc, &mut cc, all, o));
        st.len += t;
        Ok((out, b, out_rows))
    }

    /// The network for a group of rows; `h[layer]`, `c[layer]` are their states.
    fn run_rows(&self, ids: &[Vec<u32>], h: &mut [&mut [f32]], c: &mut [&mut [f32]], all: bool, out: &mut [f32]) {
        let (e, hs, v) = (self.cfg.n_embd, self.cfg.hidden_size, self.cfg.vocab_size);
        let nb = ids.len();
        let t = ids.first().map_or(0, Vec::len);
        // Scratch, reused for every step.
        let mut x = vec![0f32; nb * e.max(hs)];
        let mut gates = vec![0f32; nb * 4 * hs];
        let mut c_prev = vec![0f32; hs];
        let mut c_tanh = vec![0f32; hs];
        let mut logits = vec![0f32; nb * v];
        for step in 0..t {
            for (row, xr) in ids.iter().zip(x.chunks_exact_mut(e)) {
                let tok = row[step] as usize;
                xr.copy_from_slice(&self.wte[tok * e..(tok + 1) * e]);
            }
            let mut width = e;
            for (l, layer) in self.layers.iter().enumerate() {
                for g in gates.chunks_exact_mut(4 * hs) {
                    g.copy_from_slice(&layer.bias);
                }
                layer.w_ih.add_product(&x[..nb * width], &mut gates);
                layer.w_hh.add_product(&h[l][..nb * hs], &mut gates);
                for r in 0..nb {
                    let rows = r * hs..(r + 1) * hs;
                    c_prev.copy_from_slice(&c[l][rows.clone()]);
                    step_row(
                        &mut gates[r * 4 * hs..(r + 1) * 4 * hs],
                        Some(&c_prev),
                        &mut c[l][rows.clone()],
                        &mut c_tanh,
                        &mut h[l][rows],
                    );
                }
                x[..nb * hs].copy_from_slice(&h[l][..nb * hs]);
                width = hs;
            }
            if all || step + 1 == t {
                let rows_out = if all { t } else { 1 };
                let slot = if all { step } else { 0 };
                for l in logits.chunks_exact_mut(v) {
                    l.copy_from_slice(&self.head_b);
                }
                self.head.add_product(&x[..nb * hs], &mut logits);
                for (r, row) in logits.chunks_exact(v).enumerate() {
                    out[(r * rows_out + slot) * v..(r * rows_out + slot + 1) * v].copy_from_slice(row);
                }
            }
        }
    }
}

impl LanguageModel for CpuLstm {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn context(&self) -> usize {
        usize::MAX
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn new_state(&self, batch: usize) -> Result<Box<dyn State>, ModelError> {
        let (n, hs) = (self.cfg.n_layer, self.cfg.hidden_size);
        Ok(Box::new(CpuLstmState {
            h: vec![vec![0f32; batch * hs]; n],
            c: vec![vec![0f32; batch * hs]; n],
            len: 0,
            batch,
            hidden: hs,
        }))
    }
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (out, b, _) = self.run(ids, state, false)?;
        Ok(Tensor::from_vec(out, (b, self.cfg.vocab_size), &self.device)?)
    }
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (out, b, rows) = self.run(ids, state, true)?;
        Ok(Tensor::from_vec(out, (b, rows, self.cfg.vocab_size), &self.device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::train::init_params;
    use crate::model::Config;
    use candle_nn::{VarBuilder, VarMap};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The packed decoder against the candle model it is built from: every position of a
    /// prompt, then token by token through the states, at batch 1 (one row, one thread), 5 and
    /// 16 (split over two threads), and after rows are dropped from the batch.
    #[test]
    fn the_cpu_lstm_matches_the_candle_lstm() {
        // Sizes that leave partial panels (4h = 44 and vocabulary 13 are not multiples of 16).
        let cfg = LstmConfig { vocab_size: 13, n_embd: 6, hidden_size: 11, n_layer: 2, dropout: 0.0 };
        let varmap = VarMap::new();
        let slow = Lstm::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu)).unwrap();
        init_params(&varmap, &Config::Lstm(cfg.clone()), 7).unwrap();
        let mut fast = CpuLstm::from_candle(&slow).unwrap();
        fast.set_threads(2);
        for batch in [1usize, 5, 16] {
            let ids: Vec<u32> = (0..batch * 9).map(|i| ((i * 7 + i / 3) % 13) as u32).collect();
            let ids = Tensor::from_vec(ids, (batch, 9), &Device::Cpu).unwrap();
            let mut s1 = slow.new_state(batch).unwrap();
            let mut s2 = fast.new_state(batch).unwrap();
            let a = slow.forward_all(&ids, s1.as_mut()).unwrap();
            let b = fast.forward_all(&ids, s2.as_mut()).unwrap();
            assert!(max_diff(&a, &b) < 1e-4, "batch {batch}: {}", max_diff(&a, &b));
            for step in 0..3u32 {
                let next: Vec<u32> = (0..batch as u32).map(|i| (i + step * 5) % 13).collect();
                let next = Tensor::from_vec(next, (batch, 1), &Device::Cpu).unwrap();
                let a = slow.forward(&next, s1.as_mut()).unwrap();
                let b = fast.forward(&next, s2.as_mut()).unwrap();
                assert_eq!(b.dims(), &[batch, 13]);
                assert!(max_diff(&a, &b) < 1e-4, "batch {batch} step {step}: {}", max_diff(&a, &b));
            }
            assert_eq!(s2.len(), 12);
            if batch > 1 {
                // Every other row ends: the rows left go on from their own states.
                let keep: Vec<bool> = (0..batch).map(|r| r % 2 == 0).collect();
                s1.retain_rows(&keep).unwrap();
                assert!(s2.retain_rows(&keep).unwrap());
                let left = keep.iter().filter(|k| **k).count();
                let next =
                    Tensor::from_vec((0..left as u32).map(|i| i % 13).collect::<Vec<_>>(), (left, 1), &Device::Cpu)
                        .unwrap();
                let a = slow.forward(&next, s1.as_mut()).unwrap();
                let b = fast.forward(&next, s2.as_mut()).unwrap();
                assert!(max_diff(&a, &b) < 1e-4, "batch {batch} after dropping rows: {}", max_diff(&a, &b));
            }
        }
        // Ids past the vocabulary and a state of another size or model are errors, not panics.
        let mut s = fast.new_state(2).unwrap();
        let bad = Tensor::from_vec(vec![13u32, 0], (2, 1), &Device::Cpu).unwrap();
        assert!(matches!(fast.forward(&bad, s.as_mut()), Err(ModelError::IdOutsideVocab { .. })));
        let one = Tensor::from_vec(vec![1u32], (1, 1), &Device::Cpu).unwrap();
        assert!(matches!(fast.forward(&one, s.as_mut()), Err(ModelError::BatchMismatch { .. })));
        // The candle model's state is another model's to this one.
        let mut foreign = slow.new_state(1).unwrap();
        assert!(matches!(fast.forward(&one, foreign.as_mut()), Err(ModelError::ForeignState { model: "LSTM" })));
    }
}
