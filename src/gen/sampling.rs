//! Turning logits into one token: mask, repetition penalty, temperature, top-k, top-p, seeded draw.
//!
//! Everything after the logits runs in f64 with our own categorical draw over a ChaCha20 stream,
//! so the same logits and the same seed pick the same token on every machine and with any version
//! of `rand` (ChaCha20's output is fixed by its specification; `rand`'s distributions are not).

use super::GenError;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

/// Largest same-pitch bias, in nats (e^20: past it the bias is a mask, which `max_repeats` is).
pub const MAX_SAME_PITCH_BIAS: f64 = 20.0;
/// Largest bar recall bias, either way, in nats (as the same-pitch bias).
pub const MAX_RECALL_BIAS: f64 = 20.0;
/// Largest end-of-tune bias per bar past `end_after_bars` (nats).
pub const MAX_END_BIAS_PER_BAR: f64 = 5.0;
/// Largest classifier-free guidance: past a few the difference of the two rows swamps the
/// model and takes fall apart; 10 leaves room to hear that.
pub const MAX_GUIDANCE: f64 = 10.0;

/// How to pick the next token from the model's logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// Logits are divided by this; 0 means greedy (always the most likely token).
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f64,
    /// CTRL-style penalty (Keskar et al. 2019) on tokens seen in the last `repetition_window`
    /// tokens: positive logits are divided by it, negative ones multiplied. 1 is off.
    pub repetition_penalty: f64,
    pub repetition_window: usize,
    /// Added (in nats, before the temperature) to the logit of a note on the pitch the previous
    /// note had; 0 is off. A small model sampled from its own output repeats pitches about twice
    /// as often as the tunes it learnt from (`cadenza eval`'s repeat_share); a negative bias
    /// brings that back to the corpus's rate. Applied by the generation loop, which knows which
    /// ids are notes of which pitch.
    pub same_pitch_bias: f64,
    /// Added (in nats, before the temperature) to each id that would continue, note for note,
    /// an earlier bar of the take whose opening the current bar has played so far (see
    /// [`crate::gen::recall`]); 0 is off, negative steers away from repeating bars. Small models
    /// bring bars back less often than the tunes they learnt from.
    pub recall_bias: f64,
    /// How much the recall bias varies from take to take, 0 to 1: each take's is drawn
    /// uniformly from `recall_bias × [1 − spread, 1 + spread]` by its seed. Real tunes range from
    /// bringing nothing back to almost every bar; with one bias for all, takes all bring back
    /// about as much as the average tune (`cadenza eval`'s repeat features: folk-lstm's Irish
    /// takes' repeat_2bar quartiles 0.27/0.34/0.38 against the tunes' 0.12/0.29/0.44). In a form
    /// each section draws its own, as each section has a seed of its own.
    pub recall_spread: f64,
    /// A whole tune (no length asked for) longer than this many bars, counted from the tune's
    /// start, gets `end_bias_per_bar` nats more on its end-of-tune id for every bar beyond: a
    /// small model that has slid past its context rarely ends by itself (chorale takes ran to
    /// 48 bars where Bach's have 16), so the end is pushed towards the next place the model
    /// finds fit to end. 0 is off.
    pub end_after_bars: u32,
    pub end_bias_per_bar: f64,
    /// With `end_after_bars` 0: each whole take draws its own `end_after_bars` from the
    /// lengths of its style's training tunes (the model's `header_prior.json`), so takes come
    /// out as long as the style's tunes are, not as long as the model rambles.
    pub length_prior: bool,
    /// Temperature and top-p for a step whose every allowed id is a note length (REMI
    /// `Duration`, tune `Len`), in place of `temperature` and `top_p`; `None` keeps those.
    /// Truncation that keeps a model's pitches in the style also cuts its rarer lengths:
    /// chorale takes at top-p 0.95 held a quarter of the long notes Bach writes (half notes
    /// closing phrases), and the same weights with lengths drawn untruncated hold most of them.
    pub length_temperature: Option<f64>,
    pub length_top_p: Option<f64>,
    /// Classifier-free guidance on the labels (Ho & Salimans 2022): each step also runs the
    /// model with the style, composer and instrument set to `<unk>`, and draws from
    /// `unconditioned + guidance × (conditioned − unconditioned)` logits (pitches and the
    /// rest; a step that only chooses a note length keeps the model's own). 1 is off (the model
    /// as it is); above 1 a take leans further towards what sets its style apart from the
    /// corpus as a whole. Only for models trained with labels dropped now and then
    /// (`cadenza train --cond-dropout`), which is what taught them `<unk>`; costs a second row
    /// per take.
    pub guidance: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            repetition_window: 64,
            same_pitch_bias: 0.0,
            recall_bias: 0.0,
            recall_spread: 0.0,
            end_after_bars: 0,
            end_bias_per_bar: 0.0,
            length_prior: false,
            length_temperature: None,
            length_top_p: None,
            guidance: 1.0,
        }
    }
}

impl Sampling {
    /// Rejects settings that would make the distribution meaningless.
    pub fn validate(&self) -> Result<(), GenError> {
        let t_ok = |t: f64| t.is_finite() && t >= 0.0;
        let p_ok = |p: f64| p > 0.0 && p <= 1.0;
        if !t_ok(self.temperature) {
            return Err(GenError::Sampling(format!("temperature must be ≥ 0, got {}", self.temperature)));
        }
        if !p_ok(self.top_p) {
            return Err(GenError::Sampling(format!("top-p must be in (0, 1], got {}", self.top_p)));
        }
        if let Some(t) = self.length_temperature.filter(|&t| !t_ok(t)) {
            return Err(GenError::Sampling(format!("length temperature must be ≥ 0, got {t}")));
        }
        if let Some(p) = self.length_top_p.filter(|&p| !p_ok(p)) {
            return Err(GenError::Sampling(format!("length top-p must be in (0, 1], got {p}")));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return Err(GenError::Sampling(format!("repetition penalty must be > 0, got {}", self.repetition_penalty)));
        }
        if self.same_pitch_bias.is_nan() || self.same_pitch_bias.abs() > MAX_SAME_PITCH_BIAS {
            return Err(GenError::Sampling(format!(
                "same-pitch bias must be within ±{MAX_SAME_PITCH_BIAS} nats, got {}",
                self.same_pitch_bias
            )));
        }
        if self.recall_bias.is_nan() || self.recall_bias.abs() > MAX_RECALL_BIAS {
            return Err(GenError::Sampling(format!(
                "recall bias must be within ±{MAX_RECALL_BIAS} nats, got {}",
                self.recall_bias
            )));
        }
        if !(0.0..=1.0).contains(&self.recall_spread) {
            return Err(GenError::Sampling(format!("recall spread must be within 0..=1, got {}", self.recall_spread)));
        }
        if !(0.0..=MAX_END_BIAS_PER_BAR).contains(&self.end_bias_per_bar) {
            return Err(GenError::Sampling(format!(
                "end bias per bar must be within 0..={MAX_END_BIAS_PER_BAR} nats, got {}",
                self.end_bias_per_bar
            )));
        }
        if !(0.0..=MAX_GUIDANCE).contains(&self.guidance) {
            return Err(GenError::Sampling(format!(
                "guidance must be within 0..={MAX_GUIDANCE} (1 is off), got {}",
                self.guidance
            )));
        }
        Ok(())
    }

    /// Whether each step also runs the model without its labels (see [`Sampling::guidance`]).
    pub fn guided(&self) -> bool {
        self.guidance != 1.0
    }

    /// Whether lengths are drawn with settings of their own.
    pub fn has_length_settings(&self) -> bool {
        self.length_temperature.is_some() || self.length_top_p.is_some()
    }

    /// The settings for a step that chooses a note length: `length_temperature` and
    /// `length_top_p` where set, the rest as they are.
    pub fn for_lengths(&self) -> Sampling {
        Sampling {
            temperature: self.length_temperature.unwrap_or(self.temperature),
            top_p: self.length_top_p.unwrap_or(self.top_p),
            ..self.clone()
        }
    }

    /// The distribution the next token is drawn from, in id order (zeros where excluded).
    ///
    /// `allowed` (one flag per id) comes from the constraints; `history` holds the ids generated
    /// so far, for the repetition penalty. Returns `None` when the mask excludes every token.
    pub fn distribution(&self, logits: &[f32], allowed: Option<&[bool]>, history: &[u32]) -> Option<Vec<f64>> {
        let mut z: Vec<f64> = logits.iter().map(|&l| l as f64).collect();
        if let Some(mask) = allowed {
            for (v, &ok) in z.iter_mut().zip(mask) {
                if !ok {
                    *v = f64::NEG_INFINITY;
                }
            }
        }
        // NaN logits (a broken model) must never be picked.
        for v in z.iter_mut() {
            if v.is_nan() {
                *v = f64::NEG_INFINITY;
            }
        }
        if self.repetition_penalty != 1.0 {
            let start = history.len().saturating_sub(self.repetition_window);
            let mut seen = vec![false; z.len()];
            for &id in &history[start..] {
                if let Some(s) = seen.get_mut(id as usize) {
                    *s = true;
                }
            }
            for (v, &s) in z.iter_mut().zip(&seen) {
                if s && v.is_finite() {
                    *v = if *v > 0.0 { *v / self.repetition_penalty } else { *v * self.repetition_penalty };
                }
            }
        }
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max == f64::NEG_INFINITY {
            return None;
        }
        if self.temperature == 0.0 {
            // Greedy: all mass on the first maximum (lowest id breaks ties, deterministically).
            let best = z.iter().position(|&v| v == max).unwrap_or(0);
            let mut p = vec![0.0; z.len()];
            p[best] = 1.0;
            return Some(p);
        }
        let mut p: Vec<f64> = z.iter().map(|&v| ((v - max) / self.temperature).exp()).collect();
        normalize(&mut p);
        let nonzero = p.iter().filter(|&&x| x > 0.0).count();
        if (self.top_k > 0 && self.top_k < nonzero) || self.top_p < 1.0 {
            // Most likely first; the lower id wins ties so the cut is the same everywhere.
            let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i] > 0.0).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let mut keep = order.len();
            if self.top_k > 0 {
                keep = keep.min(self.top_k);
            }
            if self.top_p < 1.0 {
                // Smallest prefix whose mass reaches top_p (of what top-k kept, as HF does).
                let kept_mass: f64 = order[..keep].iter().map(|&i| p[i]).sum();
                let mut cum = 0.0;
                for (n, &i) in order[..keep].iter().enumerate() {
                    cum += p[i] / kept_mass;
                    if cum >= self.top_p - 1e-12 {
                        keep = n + 1;
                        break;
                    }
                }
            }
            for &i in &order[keep..] {
                p[i] = 0.0;
            }
            normalize(&mut p);
        }
        Some(p)
    }
}

fn normalize(p: &mut [f64]) {
    let total: f64 = p.iter().sum();
    if total > 0.0 {
        for x in p.iter_mut() {
            *x /= total;
        }
    }
}

/// A seeded source of draws. One per take, so a take replays from its seed alone.
#[derive(Debug, Clone)]
pub struct Rng {
    inner: ChaCha20Rng,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { inner: ChaCha20Rng::seed_from_u64(seed) }
    }

    /// A uniform draw in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Draws an index from `probs` (non-negative, any total) by walking the cumulative sum in
    /// id order. Returns `None` when every probability is zero.
    pub fn categorical(&mut self, probs: &[f64]) -> Option<u32> {
        let total: f64 = probs.iter().sum();
        // NaN is not finite, so it is refused here too.
        if !total.is_finite() || total <= 0.0 {
            return None;
        }
        let u = self.uniform() * total;
        let mut cum = 0.0;
        let mut last = None;
        for (i, &p) in probs.iter().enumerate() {
            if p <= 0.0 {
                continue;
            }
            cum += p;
            last = Some(i as u32);
            if u < cum {
                return last;
            }
        }
        // Rounding can leave u a hair above the final sum: the last possible token.
        last
    }
}

/// Draws one token from `logits` under `sampling`, or explains why none can be drawn.
pub fn sample(
    sampling: &Sampling,
    rng: &mut Rng,
    logits: &[f32],
    allowed: Option<&[bool]>,
    history: &[u32],
) -> Result<u32, GenError> {
    if let Some(i) = logits.iter().position(|l| l.is_nan()) {
        // Finite weights can still overflow; say so rather than blame the constraints.
        return Err(GenError::Model(crate::model::ModelError::NanOutput { token: i, of: logits.len() }));
    }
    let p = sampling.distribution(logits, allowed, history).ok_or(GenError::NoValidToken)?;
    rng.categorical(&p).ok_or(GenError::NoValidToken)
}

/// log-softmax of one row of logits, in f64 (for likelihoods).
pub fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().map(|&l| l as f64).fold(f64::NEG_INFINITY, f64::max);
    let lse = max + logits.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    logits.iter().map(|&l| l as f64 - lse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_logits_are_named_not_blamed_on_the_constraints() {
        let e = sample(&Sampling::default(), &mut Rng::new(1), &[0.0, f32::NAN, 1.0], None, &[]).unwrap_err();
        assert!(e.to_string().contains("NaN (token 1 of 3)"), "{e}");
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn length_settings_replace_temperature_and_top_p_only() {
        let s = Sampling { temperature: 0.9, top_p: 0.95, top_k: 7, ..Sampling::default() };
        assert!(!s.has_length_settings());
        assert_eq!(s.for_lengths(), s);
        let l = Sampling { length_temperature: Some(1.1), ..s.clone() };
        assert!(l.has_length_settings());
        let f = l.for_lengths();
        assert_eq!((f.temperature, f.top_p, f.top_k), (1.1, 0.95, 7));
        let f = Sampling { length_top_p: Some(1.0), ..l }.for_lengths();
        assert_eq!((f.temperature, f.top_p), (1.1, 1.0));
        for bad in [
            Sampling { length_temperature: Some(-0.1), ..Sampling::default() },
            Sampling { length_temperature: Some(f64::NAN), ..Sampling::default() },
            Sampling { length_top_p: Some(0.0), ..Sampling::default() },
            Sampling { length_top_p: Some(1.5), ..Sampling::default() },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    // Hand computation: logits [2, 1, 0, -1] → softmax weights e^2, e^1, e^0, e^-1
    // = 7.389056, 2.718282, 1.0, 0.367879 (sum 11.475217) → 0.643914, 0.236883, 0.087144, 0.032059.
    #[test]
    fn plain_softmax_matches_hand_numbers() {
        let s = Sampling::default();
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[]).unwrap();
        close(&p, &[0.6439142598879722, 0.23688281808991013, 0.08714431874203257, 0.03205860328008499]);
    }

    // top-k 2 keeps e^2 and e^1: 7.389056/10.107338 = 0.731059, 0.268941.
    #[test]
    fn top_k_two() {
        let s = Sampling { top_k: 2, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[]).unwrap();
        close(&p, &[0.7310585786300049, 0.2689414213699951, 0.0, 0.0]);
    }

    // top-p 0.85: cumulative 0.6439, 0.8808 (≥ 0.85, stop) → same two tokens as top-k 2.
    // top-p 0.9: 0.8808 < 0.9, so the third joins: e^2, e^1, e^0 over 11.107338.
    #[test]
    fn top_p_cuts_at_the_crossing_token() {
        let s = Sampling { top_p: 0.85, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[]).unwrap();
        close(&p, &[0.7310585786300049, 0.2689414213699951, 0.0, 0.0]);
        let s = Sampling { top_p: 0.9, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[]).unwrap();
        close(&p, &[0.6652409557748219, 0.24472847105479767, 0.09003057317038046, 0.0]);
    }

    // Temperature 2: logits halve → [1, 0.5, 0, -0.5]; e^1, e^.5, 1, e^-.5 = 2.718282, 1.648721,
    // 1.0, 0.606531 (sum 5.973534).
    #[test]
    fn temperature_flattens() {
        let s = Sampling { temperature: 2.0, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[]).unwrap();
        close(&p, &[0.45505423392341127, 0.27600434470659363, 0.16740509727844333, 0.1015363240915518]);
    }

    #[test]
    fn greedy_and_mask() {
        let s = Sampling { temperature: 0.0, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 3.0, -1.0], Some(&[true, true, false, true]), &[]).unwrap();
        close(&p, &[1.0, 0.0, 0.0, 0.0]);
        assert!(s.distribution(&[1.0, 2.0], Some(&[false, false]), &[]).is_none());
    }

    // Penalty 2 on ids 0 and 3: logits become [1, 1, 0, -2] → e, e, 1, e^-2 over 6.571929.
    #[test]
    fn repetition_penalty_ctrl_style() {
        let s = Sampling { repetition_penalty: 2.0, ..Sampling::default() };
        let p = s.distribution(&[2.0, 1.0, 0.0, -1.0], None, &[3, 0, 0]).unwrap();
        close(&p, &[0.4136219764199625, 0.4136219764199625, 0.1521630215416033, 0.02059302561847168]);
    }

    #[test]
    fn categorical_is_seeded_and_follows_probabilities() {
        let probs = [0.1, 0.0, 0.6, 0.3];
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u32> = (0..1000).map(|_| a.categorical(&probs).unwrap()).collect();
        let ys: Vec<u32> = (0..1000).map(|_| b.categorical(&probs).unwrap()).collect();
        assert_eq!(xs, ys);
        assert!(!xs.contains(&1));
        let twos = xs.iter().filter(|&&x| x == 2).count();
        // 1000 draws at p = 0.6: mean 600, sd 15.5; ±80 is over 5 sd.
        assert!((520..680).contains(&twos), "{twos}");
        assert_eq!(Rng::new(0).categorical(&[0.0, 0.0]), None);
    }

    // The first draws of seed 42, pinned: if a dependency update changed the stream, every
    // recorded take would replay differently, and this test says so first.
    #[test]
    fn rng_stream_is_pinned() {
        let mut r = Rng::new(42);
        let first: Vec<u64> = (0..3).map(|_| r.inner.next_u64()).collect();
        assert_eq!(first, vec![9482535800248027256, 7566832397956113305, 1804347359131428821]);
        let mut r = Rng::new(42);
        assert_eq!(r.uniform(), (9482535800248027256u64 >> 11) as f64 / (1u64 << 53) as f64);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let l = log_softmax(&[2.0, 1.0, 0.0, -1.0]);
        let s: f64 = l.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-12);
        assert!((l[0] - 0.6439142598879722f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn validation_rejects_nonsense() {
        assert!(Sampling { temperature: -1.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling { top_p: 0.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling { repetition_penalty: 0.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling::default().validate().is_ok());
    }
}
