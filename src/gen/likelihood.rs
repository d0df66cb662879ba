//! Scoring a Score under a model: total and per-note log-probability, and per-bar surprise (NLL per note).

use super::parts::Parts;
use super::sampling::log_softmax;
use super::GenError;
use crate::model::LanguageModel;
use crate::score::Score;
use crate::time::Tick;
use candle_core::Tensor;
use serde::Serialize;

/// Surprise of one bar: how unlikely the model found the tokens written in it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BarSurprise {
    /// Bar index from 0.
    pub bar: usize,
    /// Notes that start in this bar.
    pub notes: usize,
    /// Negative log-likelihood (nats) of the tokens in this bar.
    pub nll: f64,
    /// `nll / notes` (the bar's NLL when it has no notes).
    pub surprise: f64,
}

/// Log-likelihood of a score's tokens under a model (natural logs).
#[derive(Debug, Clone, Serialize)]
pub struct Likelihood {
    /// Tokens scored (every id after the first: the first has nothing to be predicted from).
    pub tokens: usize,
    pub notes: usize,
    /// Sum of log p(id_t | ids before t).
    pub total: f64,
    /// log p of each id given the ones before it; entry 0 (the first id) is 0.
    pub per_token: Vec<f64>,
    /// `total / notes`.
    pub per_note: f64,
    pub bars: Vec<BarSurprise>,
}

impl Likelihood {
    /// Bits per note: −total / notes / ln 2.
    pub fn bits_per_note(&self) -> f64 {
        -self.per_note / std::f64::consts::LN_2
    }
}

/// log p(ids[t] | ids[..t]) for t ≥ 1 (entry 0 is 0). Sequences longer than the context are
/// scored in windows that overlap by half, each position scored once with the longest history
/// the window gives it.
pub fn token_log_probs(model: &dyn LanguageModel, ids: &[u32]) -> Result<Vec<f64>, GenError> {
    let mut out = vec![0.0; ids.len()];
    if ids.len() < 2 {
        return Ok(out);
    }
    let ctx = model.context().max(2);
    let stride = (ctx / 2).max(1);
    // `scored` = how many positions (from the start) already have their log-prob.
    let mut scored = 1;
    let mut start = 0;
    loop {
        let end = (start + ctx).min(ids.len());
        let window = &ids[start..end];
        let mut state = model.new_state(1)?;
        let t = Tensor::from_vec(window.to_vec(), (1, window.len()), model.device())?;
        let logits = model.forward_all(&t, state.as_mut())?;
        let rows = logits.squeeze(0)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        // Logits at window index i predict ids[start + i + 1].
        for (i, row) in rows.iter().enumerate().take(window.len() - 1) {
            let target = start + i + 1;
            if target >= scored {
                out[target] = log_softmax(row).get(ids[target] as usize).copied().unwrap_or(f64::NEG_INFINITY);
            }
        }
        scored = end;
        if end == ids.len() {
            break;
        }
        start += stride;
    }
    Ok(out)
}

/// Scores `score` under `gen`'s model and encoding.
pub fn score(gen: &Parts, score: &Score) -> Result<Likelihood, GenError> {
    let encoding = gen.encoding();
    // Bar-aware encodings see a pickup as the end of a silent bar, as in training; the pickup
    // is then bar 0 of the surprise list.
    let score = &score.align_pickup();
    let ids = encoding.encode(score);
    let per_token = token_log_probs(gen.model().as_ref(), &ids)?;
    let total: f64 = per_token.iter().sum();

    // Attribute each token to the bar where the decoder stands when it reads it, and each note
    // to the bar it starts in.
    let mut d = encoding.decoder();
    let mut positions = Vec::with_capacity(ids.len());
    for &id in &ids {
        positions.push(d.position());
        d.push(id);
    }
    let notes = d.finish().score.notes;
    let mut s = score.clone();
    let end = notes.iter().map(|n| n.end()).max().unwrap_or(0);
    s.length = s.length.max(end).max(positions.last().copied().unwrap_or(0) + 1);
    let starts = s.bar_starts();
    let bar_of = |t: Tick| starts.partition_point(|&b| b <= t).saturating_sub(1);
    let nbars = starts.len().max(1);
    let mut bars: Vec<BarSurprise> =
        (0..nbars).map(|bar| BarSurprise { bar, notes: 0, nll: 0.0, surprise: 0.0 }).collect();
    for (i, lp) in per_token.iter().enumerate().skip(1) {
        let b = bar_of(positions[i]).min(nbars - 1);
        bars[b].nll -= lp;
    }
    for n in &notes {
        let b = bar_of(n.start).min(nbars - 1);
        bars[b].notes += 1;
    }
    for b in &mut bars {
        b.surprise = if b.notes > 0 { b.nll / b.notes as f64 } else { b.nll };
    }
    let n = notes.len();
    Ok(Likelihood {
        tokens: ids.len().saturating_sub(1),
        notes: n,
        total,
        per_note: if n > 0 { total / n as f64 } else { total },
        per_token,
        bars,
    })
}
