//! Generation requests and jobs: prompt → ids → model → sampled ids → notes, streamed, cancellable, replayable.
//!
//! A [`Batch`] holds everything one (batched) generation needs between tokens: the model state
//! (KV cache or LSTM state), the ids in the model's window, and per take its RNG, decoder and
//! constraint tracker. Keeping it alive is what lets a take be continued without re-reading its
//! prompt. [`Job`] runs a batch on a worker thread and streams each note as soon as the
//! decoder completes it.

use super::constraints::{Constraints, Effect, Tracker};
use super::parts::Parts;
use super::recall::BarRecall;
use super::sampling::{log_softmax, sample, Rng, Sampling};
use super::GenError;
use crate::model::{LanguageModel, State};
use crate::score::{Key, Note, Score};
use crate::time::{Meter, Tick};
use crate::tokens::{Category, Decoder, Encoding, TokenKind};
use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// How much to generate after the prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Length {
    /// Exactly this many bars (a hard constraint), then stop.
    Bars(u32),
    /// Stop once this many notes are complete.
    Notes(usize),
    /// Stop once this much music (at the prompt's tempo) is written.
    Seconds(f64),
    /// Stop after this many generated tokens.
    Tokens(usize),
    /// A whole tune: stop where the model ends it (its end id), with at most
    /// [`MAX_TUNE_TOKENS`] generated ids.
    Tune,
}

/// Most ids one whole-tune take may generate (a take that reaches it is marked truncated): four
/// times the longest folk tune of the corpus in the `tune` encoding (695 ids).
pub const MAX_TUNE_TOKENS: usize = 3000;

/// What the model chose for the header when the caller left it open (a whole tune's key and
/// meter, as folk-rnn samples its own `M:` and `K:` lines).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampled {
    pub key: Option<String>,
    pub meter: Option<String>,
    /// The length in bars the take was pushed to end near, drawn from its style's tunes.
    pub bars: Option<u32>,
}

/// Mixed into a take's seed for the stream its length is drawn from.
const LENGTH_STREAM: u64 = 0x6c65_6e67_7468_5f70;

/// Conditioning that overrides what the prompt's `%%` directives and fields say.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Overrides {
    pub style: Option<String>,
    pub key: Option<Key>,
    pub meter: Option<Meter>,
    pub instrument: Option<String>,
}

/// Everything that decides a take: with the same model, the same request gives the same notes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub prompt: Score,
    pub overrides: Overrides,
    pub sampling: Sampling,
    pub length: Length,
    pub constraints: Constraints,
    pub seed: u64,
    /// The pickup the prompt was written with: `prompt` itself is aligned (see
    /// [`Score::align_pickup`]), and a take goes back to this with [`Score::restore_pickup`].
    pub pickup: Tick,
}

impl Request {
    /// A request continuing `prompt` for `length`, with default sampling and seed 0. A prompt
    /// with a pickup is aligned so the model sees its bars where the notation has them.
    pub fn new(prompt: Score, length: Length) -> Self {
        Request {
            pickup: prompt.meta.pickup,
            prompt: prompt.align_pickup(),
            overrides: Overrides::default(),
            sampling: Sampling::default(),
            length,
            constraints: Constraints::default(),
            seed: 0,
        }
    }

    /// The prompt with the overrides applied to its meta: what the encoding sees.
    pub fn conditioned_prompt(&self) -> Score {
        let mut p = self.prompt.clone();
        let o = &self.overrides;
        if let Some(s) = &o.style {
            p.meta.style = Some(s.clone());
        }
        if let Some(i) = &o.instrument {
            p.meta.instrument = Some(i.clone());
        }
        if let Some(k) = &o.key {
            p.meta.keys.retain(|(t, _)| *t != 0);
            p.meta.keys.insert(0, (0, k.clone()));
        }
        if let Some(m) = o.meter {
            p.meta.meters.retain(|(t, _)| *t != 0);
            p.meta.meters.insert(0, (0, m));
        }
        p
    }

    /// Constraints with the length's bar count folded in; `in_key` is resolved per take, with
    /// the key each take plays in ([`Constraints::for_key`]).
    fn effective_constraints(&self) -> Constraints {
        let mut c = self.constraints.clone();
        if let Length::Bars(n) = self.length {
            c.bars = Some(n);
        }
        c
    }

    /// A request continuing `prompt` with what its `%%` directives set (length, sampling,
    /// constraints, seed), then what the model's `defaults` set, then `default_length` when
    /// neither names a length. Callers then override what their own flags or options set, so a
    /// prompt file alone reproduces a take.
    pub fn from_prompt(prompt: Score, default_length: Length, defaults: &crate::score::GenSettings) -> Self {
        let g = prompt.meta.gen.or(defaults);
        let d = Sampling::default();
        let sampling = Sampling {
            temperature: g.temperature.unwrap_or(d.temperature),
            top_k: g.top_k.map_or(d.top_k, |k| k as usize),
            top_p: g.top_p.unwrap_or(d.top_p),
            repetition_penalty: g.repetition_penalty.unwrap_or(d.repetition_penalty),
            same_pitch_bias: g.same_pitch_bias.unwrap_or(d.same_pitch_bias),
            recall_bias: g.recall_bias.unwrap_or(d.recall_bias),
            recall_spread: g.recall_spread.unwrap_or(d.recall_spread),
            end_after_bars: g.end_after_bars.unwrap_or(d.end_after_bars),
            end_bias_per_bar: g.end_bias_per_bar.unwrap_or(d.end_bias_per_bar),
            length_prior: g.length_prior,
            length_temperature: g.length_temperature,
            length_top_p: g.length_top_p,
            guidance: g.guidance.unwrap_or(d.guidance),
            ..d
        };
        let constraints = Constraints {
            pitch_classes: g.pitch_classes.clone(),
            in_key: g.in_key,
            pentatonic: g.pentatonic,
            range: g.range,
            max_polyphony: g.max_polyphony.map(|n| n as usize),
            whole_bars: g.whole_bars,
            mono_voices: g.mono_voices,
            no_parallels: g.no_parallels,
            end_on_tonic: g.end_on_tonic,
            end_on_final: g.end_on_final,
            min_strain_bars: g.min_strain_bars,
            max_repeats: g.max_repeats,
            bars: None,
            cadence: None,
            fixed: None,
        };
        let length = g.bars.map_or(default_length, Length::Bars);
        Request { sampling, constraints, seed: g.seed.unwrap_or(0), ..Request::new(prompt, length) }
    }

    fn validate(&self) -> Result<(), GenError> {
        self.sampling.validate()?;
        self.constraints.validate().map_err(GenError::Request)?;
        match self.length {
            Length::Bars(0) | Length::Notes(0) | Length::Tokens(0) => {
                Err(GenError::Request("the length must be at least one bar, note or token".into()))
            }
            Length::Seconds(s) if !(s > 0.0 && s.is_finite()) => {
                Err(GenError::Request(format!("the length in seconds must be positive, got {s}")))
            }
            Length::Bars(b) if b > MAX_TAKE_BARS => Err(GenError::Request(format!(
                "{b} bars: a take is at most {MAX_TAKE_BARS} bars (chain takes for more)"
            ))),
            Length::Notes(n) if n > MAX_TAKE_NOTES => {
                Err(GenError::Request(format!("{n} notes: a take is at most {MAX_TAKE_NOTES} notes")))
            }
            Length::Tokens(n) if n > MAX_TAKE_TOKENS => {
                Err(GenError::Request(format!("{n} tokens: a take is at most {MAX_TAKE_TOKENS} tokens")))
            }
            Length::Seconds(s) if s > MAX_TAKE_SECONDS => {
                Err(GenError::Request(format!("{s} s: a take is at most {MAX_TAKE_SECONDS} seconds")))
            }
            _ => Ok(()),
        }
    }
}

/// Longest take one request may ask for, by each kind of length: far past any tune (a reel is
/// 16 bars, a long air 64), short enough that a typo (`--bars 100000`) is an error, not hours.
pub const MAX_TAKE_BARS: u32 = 1024;
pub const MAX_TAKE_NOTES: usize = 100_000;
pub const MAX_TAKE_TOKENS: usize = 1_000_000;
pub const MAX_TAKE_SECONDS: f64 = 3600.0;

/// Everything needed to replay a take exactly (written to `takes.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakeRecord {
    pub model: String,
    /// SHA-256 of `model.safetensors`, hex.
    pub model_hash: String,
    pub encoding: String,
    /// The prompt as ABC text (the overrides are separate).
    pub prompt_abc: String,
    pub overrides: Overrides,
    pub sampling: Sampling,
    pub length: Length,
    pub constraints: Constraints,
    /// This take's own seed (batched takes get `seed + index`).
    pub seed: u64,
    /// Generated ids, so a replay can be checked token by token.
    pub ids: Vec<u32>,
    /// Sum of the model's log-probabilities (natural log, before sampling's truncation) of the
    /// generated ids.
    pub log_likelihood: f64,
    pub notes: usize,
    /// Ids the decoder skipped as invalid successions.
    pub skipped: usize,
    /// Stopped by a cancel request or by the token cap rather than by its length.
    pub cancelled: bool,
    pub truncated: bool,
    /// The header the model sampled (what neither the prompt nor the caller set).
    #[serde(default)]
    pub sampled: Sampled,
}

/// A finished (or cancelled) take: the music and its record.
#[derive(Debug, Clone)]
pub struct Take {
    /// Prompt and continuation, as decoded, with the request's meta.
    pub score: Score,
    /// Only the generated notes (absolute ticks, after the prompt).
    pub notes: Vec<Note>,
    pub record: TakeRecord,
}

/// What a running job reports.
#[derive(Debug, Clone)]
pub enum Progress {
    /// A generated note is complete (take index within the batch).
    Note { take: usize, note: Note },
    /// A take reached its length.
    Finished { take: usize },
}

/// One take's progress inside a batch.
struct Row {
    seed: u64,
    rng: Rng,
    decoder: Option<Box<dyn Decoder>>,
    tracker: Tracker,
    /// The take's bars so far, for [`Sampling::recall_bias`].
    recall: BarRecall,
    /// This take's factor on the recall bias ([`Sampling::recall_spread`]; 1 without one).
    recall_scale: f64,
    /// Every id fed to the model for this row (prompt, then generated).
    ids: Vec<u32>,
    /// This row's conditioning prefix (`<bos>` and the labels, sampled ones included), re-fed
    /// first whenever the window slides.
    prefix: Vec<u32>,
    prompt_len: usize,
    /// Generated ids since the last (re)start, for the length limit.
    generated: usize,
    /// A note was started since the last (re)start (a whole tune may end only then).
    started_note: bool,
    notes: Vec<Note>,
    /// `notes.len()` at the last (re)start: a length in notes counts from there.
    notes_before: usize,
    ll: f64,
    /// Where the prompt ended (notes that start earlier belong to the prompt).
    prompt_end: Tick,
    limit_tick: Option<Tick>,
    /// Past this many bars a whole take's end id is pushed up (0: never): the request's
    /// `end_after_bars`, or a length drawn for this take ([`Sampling::length_prior`]).
    end_after_bars: u32,
    /// With `end_on_final`: nats on the end id after a last note of each pitch class (the
    /// rarer the final among the style's tunes, the less; see `Finals::end_bias`).
    final_bias: Option<[f32; 12]>,
    /// Whether `end_after_bars` was drawn for this take.
    drawn_bars: bool,
    done: bool,
    cancelled: bool,
    truncated: bool,
}

/// A live (batched) generation: the model state plus each take's sampler, decoder and tracker.
/// Keep it to continue the takes later without re-reading the prompt.
pub struct Batch {
    model: Arc<dyn LanguageModel>,
    encoding: Arc<dyn Encoding>,
    effects: Arc<super::constraints::Effects>,
    state: Box<dyn State>,
    /// Logits for the next token of each row, from the last forward pass (guided, when
    /// [`Sampling::guidance`] is on).
    logits: Vec<Vec<f32>>,
    /// With guidance: the model's own logits for each row (its likelihood is recorded from
    /// these), and the map from each id to the id the unlabelled twin row is fed instead.
    model_logits: Vec<Vec<f32>>,
    unlabelled: Option<Vec<u32>>,
    rows: Vec<Row>,
    /// The rows the model state holds, in its order (`logits[r]` is row `live[r]`'s): every
    /// row at first; rows that end leave it when the state can drop them, so a batch of whole
    /// tunes does not keep computing the short ones until the longest ends.
    live: Vec<usize>,
    request: Request,
    record_base: TakeRecord,
    meta: crate::score::Meta,
    /// Scratch for the mask (vocabulary size).
    allowed: Vec<bool>,
    /// The keys of the training tunes, for an open key (see [`super::header_prior`]).
    header_prior: Option<Arc<super::header_prior::HeaderPrior>>,
    /// Ids drawn but not yet fed to the model (the run stopped right after drawing them);
    /// `logits` are stale until they are fed.
    unfed: Option<Vec<u32>>,
}

/// The rules for one take in `key` whose style ends on `finals` ([`Constraints::for_take`]),
/// and the end id's bias after each pitch class when those finals decide its end (`None`
/// otherwise: no key, no table, or another rule decides the end).
fn take_rules(
    rules: &Constraints,
    key: Option<&Key>,
    finals: Option<&super::header_prior::Finals>,
) -> (Constraints, Option<[f32; 12]>) {
    let degrees = finals.map(|f| f.degrees());
    let bias = key.zip(finals).filter(|_| rules.ends_on_finals()).map(|(k, f)| f.end_bias(k.tonic_pc()));
    (rules.for_take(key, degrees.as_deref()), bias)
}

/// Mixed into a take's seed for the stream its recall factor is drawn from (not the sampler's,
/// so a spread of 0 leaves every take as it was).
const RECALL_STREAM: u64 = 0x7265_6361_6c6c;

/// A take's factor on the recall bias: uniform in `[1 − spread, 1 + spread]`, drawn from its seed.
fn recall_scale(seed: u64, spread: f64) -> f64 {
    if spread == 0.0 {
        return 1.0;
    }
    1.0 + spread * (2.0 * Rng::new(seed ^ RECALL_STREAM).uniform() - 1.0)
}

/// Upper bound on generated tokens per bar (or per note), so a model that never moves time
/// cannot loop forever under a bar or note limit.
const TOKENS_PER_BAR_CAP: usize = 256;

impl Batch {
    /// Encodes the prompt, feeds it (sliding past the context if it is too long) to a fresh
    /// state for `n` rows, and readies each row's sampler and decoder.
    pub(crate) fn start(gen: &Parts, request: &Request, n: usize) -> Result<Batch, GenError> {
        let seeds: Vec<u64> = (0..n as u64).map(|i| request.seed.wrapping_add(i)).collect();
        Batch::start_seeded(gen, request, &seeds)
    }

    /// [`Batch::start`] with a seed of its own for each row (row `i` draws with `seeds[i]`, as
    /// the take of that seed made alone would).
    pub(crate) fn start_seeded(gen: &Parts, request: &Request, seeds: &[u64]) -> Result<Batch, GenError> {
        let n = seeds.len();
        request.validate()?;
        if n == 0 {
            return Err(GenError::Request("a batch needs at least one take".into()));
        }
        gen.check_labels(&request.overrides.style, &request.overrides.instrument, &request.prompt)?;
        let model = gen.model().clone();
        let encoding = gen.encoding().clone();
        let effects = gen.effects().clone();
        let prompt = request.conditioned_prompt();
        let mut ids = encoding.encode(&prompt);
        // A trailing end token would tell the model the piece is over: drop it to continue.
        while ids.last().is_some_and(|&id| matches!(effects.get(id), Effect::End)) {
            ids.pop();
        }
        // The conditioning prefix (`<bos>` and the labels) is kept whenever the window slides.
        let prefix_len = ids
            .iter()
            .take_while(|&&id| matches!(encoding.kind(id), Some(TokenKind::Bos) | Some(TokenKind::Cond(_))))
            .count();
        let prefix = ids[..prefix_len].to_vec();
        if ids.is_empty() {
            return Err(GenError::Request(format!(
                "the {} encoding gives no tokens for this prompt and there is nothing to start from",
                encoding.name()
            )));
        }
        let constraints = request.effective_constraints();
        let to_sample = open_header(&prompt, encoding.as_ref(), prefix_len);
        let vocab = model.vocab_size();
        // Guidance needs a label to lean on: with none set the twin rows would be the same rows.
        let unlabelled = request
            .sampling
            .guided()
            .then(|| unlabel_map(encoding.as_ref(), vocab))
            .filter(|map| prefix.iter().any(|&id| map.get(id as usize).is_some_and(|&u| u != id)));
        let state = model.new_state(n * if unlabelled.is_some() { 2 } else { 1 })?;
        let mut rows = Vec::with_capacity(n);
        for &seed in seeds {
            rows.push(Row {
                seed,
                rng: Rng::new(seed),
                decoder: None,
                tracker: Tracker::new(constraints.clone(), &effects, prompt.meter()),
                recall: BarRecall::default(),
                recall_scale: recall_scale(seed, request.sampling.recall_spread),
                ids: Vec::new(),
                prefix: prefix.clone(),
                prompt_len: ids.len(),
                generated: 0,
                started_note: false,
                notes: Vec::new(),
                notes_before: 0,
                ll: 0.0,
                prompt_end: 0,
                limit_tick: None,
                end_after_bars: request.sampling.end_after_bars,
                drawn_bars: false,
                final_bias: None,
                done: false,
                cancelled: false,
                truncated: false,
            });
        }
        let mut meta = prompt.meta.clone();
        meta.gen.model = Some(gen.name().to_string());
        meta.gen.temperature = Some(request.sampling.temperature);
        meta.gen.top_k = (request.sampling.top_k > 0).then_some(request.sampling.top_k as u32);
        // Recorded even at 1 (untruncated): a model whose default truncates would otherwise
        // replay the take's file with its own top-p.
        meta.gen.top_p = Some(request.sampling.top_p);
        meta.gen.length_temperature = request.sampling.length_temperature;
        meta.gen.length_top_p = request.sampling.length_top_p;
        meta.gen.guidance = request.sampling.guided().then_some(request.sampling.guidance);
        // Written into the take's file, so the file alone replays it.
        meta.gen.same_pitch_bias =
            (request.sampling.same_pitch_bias != 0.0).then_some(request.sampling.same_pitch_bias);
        meta.gen.recall_bias = (request.sampling.recall_bias != 0.0).then_some(request.sampling.recall_bias);
        meta.gen.recall_spread = (request.sampling.recall_spread != 0.0).then_some(request.sampling.recall_spread);
        meta.gen.seed = Some(request.seed);
        meta.gen.bars = match request.length {
            Length::Bars(b) => Some(b),
            _ => None,
        };
        meta.gen.repetition_penalty =
            (request.sampling.repetition_penalty != 1.0).then_some(request.sampling.repetition_penalty);
        let c = &request.constraints;
        meta.gen.pitch_classes = c.pitch_classes.clone();
        meta.gen.in_key = c.in_key;
        meta.gen.pentatonic = c.pentatonic;
        meta.gen.range = c.range;
        meta.gen.max_polyphony = c.max_polyphony.map(|n| n as u32);
        meta.gen.whole_bars = c.whole_bars;
        meta.gen.mono_voices = c.mono_voices;
        meta.gen.no_parallels = c.no_parallels;
        meta.gen.end_on_tonic = c.end_on_tonic;
        meta.gen.end_on_final = c.end_on_final;
        let record_base = TakeRecord {
            model: gen.name().to_string(),
            model_hash: gen.model_hash().to_string(),
            encoding: encoding.name().to_string(),
            prompt_abc: crate::dsl::print(&request.prompt),
            overrides: request.overrides.clone(),
            sampling: request.sampling.clone(),
            length: request.length,
            constraints: request.constraints.clone(),
            seed: request.seed,
            ids: Vec::new(),
            log_likelihood: 0.0,
            notes: 0,
            skipped: 0,
            cancelled: false,
            truncated: false,
            sampled: Sampled::default(),
        };
        let mut s = Batch {
            model,
            encoding,
            effects,
            state,
            logits: Vec::new(),
            model_logits: Vec::new(),
            unlabelled,
            rows,
            live: (0..n).collect(),
            request: request.clone(),
            record_base,
            meta,
            allowed: vec![true; vocab],
            header_prior: gen.header_prior.clone(),
            unfed: None,
        };
        s.feed_prompt(&ids, prefix_len, &to_sample)?;
        s.draw_lengths();
        let meter_of = |row: &Row| {
            let head = s.encoding.decode(&row.prefix).score;
            if head.meta.meters.is_empty() {
                prompt.meter()
            } else {
                head.meter()
            }
        };
        let meters: Vec<Meter> = s.rows.iter().map(meter_of).collect();
        let keys = s.row_keys();
        let finals = s.row_finals();
        for (((row, meter), key), finals) in s.rows.iter_mut().zip(meters).zip(keys).zip(finals) {
            let mut decoder = s.encoding.decoder();
            let rules;
            (rules, row.final_bias) = take_rules(&constraints, key.as_ref(), finals.as_ref());
            let mut tracker = Tracker::new(rules, &s.effects, meter);
            for &id in &row.ids {
                decoder.push(id);
                tracker.push(s.effects.get(id));
            }
            // Repeat signs in the prompt: the decoder knows where the music really is.
            if s.effects.sequential {
                tracker.resync(&decoder.state());
            }
            row.prompt_end = tracker.position();
            tracker.begin(row.prompt_end);
            row.decoder = Some(decoder);
            row.tracker = tracker;
        }
        s.set_limits(request.length);
        Ok(s)
    }

    /// With [`Sampling::length_prior`], a whole take with no `end_after_bars` draws its own
    /// from the lengths of its style's training tunes (the style set or sampled in its
    /// prefix). The draw has its own random stream, derived from the take's seed, so the
    /// notes up to the length drawn are the ones the take would have without it.
    fn draw_lengths(&mut self) {
        let sampling = &self.request.sampling;
        if !sampling.length_prior || sampling.end_after_bars > 0 || self.request.length != Length::Tune {
            return;
        }
        let Some(prior) = self.header_prior.as_ref() else { return };
        for row in &mut self.rows {
            let Some(&style) = row.prefix.get(1 + Category::Style.index()) else { continue };
            let mut rng = Rng::new(row.seed ^ LENGTH_STREAM);
            if let Some(bars) = prior.draw_bars(style, &mut rng) {
                row.end_after_bars = bars;
                row.drawn_bars = true;
            }
        }
    }

    /// Feeds the prompt to the fresh state. The header ids in `to_sample` (positions inside the
    /// prefix) are drawn from the model for each row, one position at a time, among the labels
    /// of their category; the rest is fed as one block. A prompt longer than the context keeps
    /// the conditioning prefix and the most recent ids.
    fn feed_prompt(&mut self, ids: &[u32], prefix_len: usize, to_sample: &[usize]) -> Result<(), GenError> {
        let n = self.rows.len();
        let ctx = self.model.context();
        let body = &ids[prefix_len..];
        let keep = ctx.saturating_sub(prefix_len).saturating_sub(ctx / 4).max(1);
        let window_body = if ids.len() >= ctx { &body[body.len().saturating_sub(keep)..] } else { body };
        let Some(&first) = to_sample.first() else {
            let mut window = ids[..prefix_len].to_vec();
            window.extend_from_slice(window_body);
            for r in &mut self.rows {
                r.ids = ids.to_vec();
            }
            return self.forward_rows(&vec![window; n]);
        };
        for r in &mut self.rows {
            r.ids = ids[..first].to_vec();
        }
        self.forward_rows(&vec![ids[..first].to_vec(); n])?;
        for pos in first..prefix_len {
            let mut column = Vec::with_capacity(n);
            for (i, row) in self.rows.iter_mut().enumerate() {
                let id = if to_sample.contains(&pos) {
                    let category = match self.encoding.kind(ids[pos]) {
                        Some(TokenKind::Cond(c)) => c.category,
                        _ => return Err(GenError::Request("the conditioning prefix is malformed".into())),
                    };
                    self.allowed.iter_mut().enumerate().for_each(|(id, a)| {
                        *a = matches!(self.encoding.kind(id as u32),
                            Some(TokenKind::Cond(c)) if c.category == category && c.value.is_some())
                    });
                    let logits = &self.logits[i];
                    // An open key comes from the keys the training tunes use (the model's own
                    // key token learnt the transpositions it was trained on), an open meter
                    // from the meters of the style's tunes in that key (the model's leans to
                    // the largest style's).
                    let style = row.ids.get(1 + Category::Style.index()).copied();
                    let prior = match (category, &self.header_prior, style) {
                        (Category::Key, Some(p), Some(style)) => p.key_weights(
                            self.encoding.as_ref(),
                            style,
                            super::header_prior::fixed_meter(ids),
                            self.allowed.len(),
                        ),
                        (Category::Meter, Some(p), Some(style)) => p.meter_weights(
                            self.encoding.as_ref(),
                            style,
                            row.ids.get(1 + Category::Key.index()).copied(),
                            self.allowed.len(),
                        ),
                        _ => None,
                    };
                    let id = match prior.and_then(|w| row.rng.categorical(&w)) {
                        Some(id) => id,
                        None => sample(&self.request.sampling, &mut row.rng, logits, Some(&self.allowed), &[])?,
                    };
                    let own = self.model_logits.get(i).unwrap_or(logits);
                    row.ll += log_softmax(own).get(id as usize).copied().unwrap_or(f64::NEG_INFINITY);
                    id
                } else {
                    ids[pos]
                };
                row.ids.push(id);
                column.push(vec![id]);
            }
            self.forward_rows(&column)?;
        }
        for r in &mut self.rows {
            r.prefix = r.ids.clone();
            r.ids.extend_from_slice(body);
        }
        if window_body.is_empty() {
            return Ok(());
        }
        self.forward_rows(&vec![window_body.to_vec(); n])
    }

    /// The key each row plays in where generation starts: the (conditioned) prompt's, else the
    /// one the row sampled for its header (`None`: neither has one).
    fn row_keys(&self) -> Vec<Option<Key>> {
        let p = self.request.conditioned_prompt();
        let prompt_key = (!p.meta.keys.is_empty()).then(|| p.key_at(p.length));
        self.rows
            .iter()
            .map(|row| match &prompt_key {
                Some(k) => Some(k.clone()),
                None => self.encoding.decode(&row.prefix).score.meta.keys.first().map(|(_, k)| k.clone()),
            })
            .collect()
    }

    /// The degrees each row's style ends on (`header_prior.json`, for `end_on_final`): `None`
    /// without the table or a style in the row's prefix.
    fn row_finals(&self) -> Vec<Option<super::header_prior::Finals>> {
        self.rows
            .iter()
            .map(|row| {
                let style = *row.prefix.get(1 + Category::Style.index())?;
                self.header_prior.as_ref()?.finals(style)
            })
            .collect()
    }

    /// Rows the model state holds: one per take, two with guidance (the take and its
    /// unlabelled twin, which sits `n` rows below it).
    fn model_rows(&self) -> usize {
        self.live.len() * if self.unlabelled.is_some() { 2 } else { 1 }
    }

    /// Runs the model on one block of ids per live row (all the same length), storing the logits.
    /// With guidance each row's twin is fed the same ids with its labels unset, and the logits
    /// kept for drawing are the guided ones.
    fn forward_rows(&mut self, block: &[Vec<u32>]) -> Result<(), GenError> {
        let t = block.first().map_or(0, Vec::len);
        let mut flat: Vec<u32> = block.iter().flatten().copied().collect();
        if let Some(map) = &self.unlabelled {
            let twins: Vec<u32> = flat.iter().map(|&id| map.get(id as usize).copied().unwrap_or(id)).collect();
            flat.extend(twins);
        }
        let b = self.model_rows();
        let ids = Tensor::from_vec(flat, (b, t), self.model.device())?;
        let logits = self.model.forward(&ids, self.state.as_mut())?;
        let mut all = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        if self.unlabelled.is_none() {
            self.logits = all;
            return Ok(());
        }
        let twins = all.split_off(block.len());
        let g = self.request.sampling.guidance as f32;
        self.logits =
            all.iter().zip(&twins).map(|(c, u)| c.iter().zip(u).map(|(&c, &u)| u + g * (c - u)).collect()).collect();
        self.model_logits = all;
        Ok(())
    }

    /// Sets each row's stopping point for `length`, counted from where it stands now.
    /// Seconds follow the prompt's tempo map, so a `Q:` change inside it counts.
    fn set_limits(&mut self, length: Length) {
        let tempo = &self.meta.tempo;
        for r in &mut self.rows {
            r.generated = 0;
            r.started_note = false;
            r.notes_before = r.notes.len();
            r.limit_tick = match length {
                Length::Seconds(s) => {
                    let here = r.tracker.position();
                    // A nanosecond of slack: float error must not lose the last tick.
                    Some(tempo.tick_at(tempo.seconds_at(here) + s + 1e-9).max(here + 1))
                }
                _ => None,
            };
        }
    }

    fn token_cap(&self) -> usize {
        match self.request.length {
            Length::Bars(b) => TOKENS_PER_BAR_CAP * b as usize + 64,
            Length::Notes(n) => 64 * n + 64,
            Length::Seconds(s) => (TOKENS_PER_BAR_CAP as f64 * s).ceil() as usize + 64,
            Length::Tokens(n) => n,
            Length::Tune => MAX_TUNE_TOKENS,
        }
    }

    /// Generates until every take reaches its length, `cancel` is set (checked before every
    /// token), or an error. Each completed note goes to `on_event` at once.
    pub fn run(&mut self, cancel: &AtomicBool, on_event: &mut dyn FnMut(Progress)) -> Result<(), GenError> {
        let cap = self.token_cap();
        if let Some(next) = self.unfed.take() {
            self.feed(next)?;
        }
        loop {
            if cancel.load(Ordering::Relaxed) {
                for r in self.rows.iter_mut().filter(|r| !r.done) {
                    r.done = true;
                    r.cancelled = true;
                }
                return Ok(());
            }
            if self.rows.iter().all(|r| r.done) {
                return Ok(());
            }
            let mut next = Vec::with_capacity(self.live.len());
            for (r, &i) in self.live.iter().enumerate() {
                let row = &mut self.rows[i];
                if row.done {
                    // An ended row the state could not drop rides along; its outputs are ignored.
                    next.push(*row.ids.last().unwrap_or(&0));
                    continue;
                }
                self.allowed.iter_mut().for_each(|a| *a = true);
                // The encoding's grammar first (no invalid successions), then the hard rules.
                if let Some(d) = row.decoder.as_ref() {
                    d.mask(&mut self.allowed);
                }
                row.tracker.mask(&self.effects, &mut self.allowed);
                // Where a take may end: a length asked for in notes, seconds or ids is that
                // length (bars: the tracker decides), and a whole tune has notes of its own (the
                // end id, however unlikely before the first note, is drawn now and then
                // untruncated and left takes empty). The grammar's last word stands.
                let end_refused = match self.request.length {
                    Length::Tune => !row.started_note,
                    Length::Bars(_) => false,
                    Length::Notes(_) | Length::Seconds(_) | Length::Tokens(_) => true,
                };
                if let Some(end) = self.effects.end_id().map(|e| e as usize).filter(|_| end_refused) {
                    if self.allowed.iter().enumerate().any(|(i, &ok)| ok && i != end) {
                        self.allowed[end] = false;
                    }
                }
                // A take of a set length from nothing starts on its first downbeat: the models
                // learnt a pickup as a silent lead bar (`Score::align_pickup`), which would open
                // every cycle of a loop with silence. A whole tune keeps its pickup (it is
                // printed and played as one, see `Score::restore_pickup`).
                if row.prompt_end == 0 && row.notes.is_empty() && self.request.length != Length::Tune {
                    self.effects.forbid_rests(&mut self.allowed);
                }
                // Guidance leans the pitches into the style; a length is drawn from the model's
                // own logits (guided lengths ran to odd ones: at 4, 6% of Irish notes, real 2%).
                // Only asked where an answer changes the draw: it walks the whole mask.
                let sampling = &self.request.sampling;
                let lengths_only = (sampling.has_length_settings() || self.unlabelled.is_some())
                    && self.effects.only_lengths(&self.allowed);
                let logits = match self.model_logits.get(r) {
                    Some(own) if lengths_only => own,
                    _ => &self.logits[r],
                };
                let history = &row.ids[row.prompt_len..];
                let bias = sampling.same_pitch_bias;
                let end_bias = match self.request.length {
                    Length::Tune if row.end_after_bars > 0 => {
                        // Bars begun so far beyond the first `end_after_bars`.
                        let begun = row.tracker.position() / row.tracker.bar_ticks().max(1) + 1;
                        sampling.end_bias_per_bar * begun.saturating_sub(row.end_after_bars.into()) as f64
                    }
                    _ => 0.0,
                };
                let mut biased = None;
                if let Some(pitch) = row.tracker.last_pitch().filter(|_| bias != 0.0) {
                    biased = Some(self.effects.bias_pitch(logits, pitch, bias));
                }
                // After a rarer final the end comes less readily (see `Finals::end_bias`).
                let after_final = match (&row.final_bias, row.tracker.last_pitch()) {
                    (Some(bias), Some(pitch)) => bias[pitch as usize % 12],
                    _ => 0.0,
                };
                if let Some(end) = self.effects.end_id().filter(|_| end_bias > 0.0 || after_final != 0.0) {
                    let b = biased.get_or_insert_with(|| logits.clone());
                    if let Some(l) = b.get_mut(end as usize) {
                        *l += end_bias as f32 + after_final;
                    }
                }
                if sampling.recall_bias != 0.0 {
                    row.recall.catch_up(&row.ids, &self.effects);
                    row.recall.bias(logits, &mut biased, sampling.recall_bias * row.recall_scale);
                }
                let draw_from = biased.as_ref().unwrap_or(logits);
                let for_lengths;
                let settings = if lengths_only && sampling.has_length_settings() {
                    for_lengths = sampling.for_lengths();
                    &for_lengths
                } else {
                    sampling
                };
                let id = sample(settings, &mut row.rng, draw_from, Some(&self.allowed), history)?;
                let own = self.model_logits.get(r).unwrap_or(logits);
                row.ll += log_softmax(own).get(id as usize).copied().unwrap_or(f64::NEG_INFINITY);
                row.ids.push(id);
                row.generated += 1;
                let effect = self.effects.get(id);
                row.tracker.push(effect);
                row.started_note |= matches!(effect, Effect::NoteOn { .. } | Effect::Chord { .. });
                if let Some(d) = row.decoder.as_mut() {
                    for note in d.push(id) {
                        if note.start >= row.prompt_end {
                            row.notes.push(note);
                            on_event(Progress::Note { take: i, note });
                        }
                    }
                    // The decoder knows where a repeat sign or a meter change put the music (a
                    // REMI take changing meter mid-tune had its notes checked in the old bars:
                    // one line under `max_polyphony 1` overlapped itself).
                    if matches!(effect, Effect::Structure(_) | Effect::MeterChange) {
                        row.tracker.resync(&d.state());
                    }
                }
                let reached = match self.request.length {
                    Length::Bars(_) => row.tracker.finished(),
                    Length::Notes(n) => row.notes.len() - row.notes_before >= n,
                    Length::Seconds(_) => row.limit_tick.is_some_and(|l| row.tracker.position() >= l),
                    Length::Tokens(n) => row.generated >= n,
                    Length::Tune => false,
                };
                if reached || matches!(effect, Effect::End) {
                    row.done = true;
                } else if row.generated >= cap {
                    row.done = true;
                    row.truncated = true;
                }
                if row.done {
                    on_event(Progress::Finished { take: i });
                }
                next.push(id);
            }
            if self.rows.iter().all(|r| r.done) {
                // Feeding the last ids would be wasted unless the takes are continued.
                self.unfed = Some(next);
                return Ok(());
            }
            let next = self.drop_ended_rows(next)?;
            self.feed(next)?;
        }
    }

    /// Drops the rows that have ended from the model state (when it can), with their ids in
    /// `next`. Their last ids are never fed: [`Batch::extend`] feeds them again.
    fn drop_ended_rows(&mut self, next: Vec<u32>) -> Result<Vec<u32>, GenError> {
        let keep: Vec<bool> = self.live.iter().map(|&i| !self.rows[i].done).collect();
        if keep.iter().all(|&k| k) {
            return Ok(next);
        }
        // A guided row's twin sits `live.len()` rows below it and goes with it.
        let state_keep: Vec<bool> = match self.unlabelled {
            Some(_) => keep.iter().chain(&keep).copied().collect(),
            None => keep.clone(),
        };
        if !self.state.retain_rows(&state_keep)? {
            return Ok(next);
        }
        let mut flags = keep.iter();
        self.live.retain(|_| flags.next().copied().unwrap_or(false));
        Ok(next.into_iter().zip(&keep).filter(|(_, &k)| k).map(|(id, _)| id).collect())
    }

    /// Takes the rows a finished run dropped back into a fresh state, so that they can be
    /// continued: each row's window is its conditioning prefix and its most recent ids, all
    /// windows as long as the shortest row allows (the state needs one length), ending just
    /// before each row's last id, which is left to be fed next.
    fn restore_dropped_rows(&mut self) -> Result<(), GenError> {
        if self.live.len() == self.rows.len() {
            return Ok(());
        }
        let ctx = self.model.context();
        let longest_prefix = self.rows.iter().map(|r| r.prefix.len()).max().unwrap_or(0);
        let room = ctx.saturating_sub(ctx / 4).max(longest_prefix + 1);
        let width = self.rows.iter().map(|r| r.ids.len().saturating_sub(1)).min().unwrap_or(0).min(room);
        let block: Vec<Vec<u32>> = self
            .rows
            .iter()
            .map(|r| {
                let body = &r.ids[..r.ids.len().saturating_sub(1)];
                let prefix = &r.prefix[..r.prefix.len().min(width)];
                let mut w = prefix.to_vec();
                w.extend_from_slice(&body[body.len() - (width - prefix.len())..]);
                w
            })
            .collect();
        self.live = (0..self.rows.len()).collect();
        self.state = self.model.new_state(self.model_rows())?;
        self.unfed = Some(self.rows.iter().map(|r| *r.ids.last().unwrap_or(&0)).collect());
        if width == 0 {
            return Ok(());
        }
        self.forward_rows(&block)
    }

    /// Feeds one id per row, sliding the window first when the context is full.
    fn feed(&mut self, next: Vec<u32>) -> Result<(), GenError> {
        if self.state.len() + 1 > self.model.context() {
            self.slide()?;
        }
        let block: Vec<Vec<u32>> = next.into_iter().map(|id| vec![id]).collect();
        self.forward_rows(&block)
    }

    /// The window is full: start a fresh state with the conditioning prefix and the most recent
    /// half of the context (one forward pass), then carry on.
    fn slide(&mut self) -> Result<(), GenError> {
        let ctx = self.model.context();
        let prefix_len = self.live.iter().map(|&i| self.rows[i].prefix.len()).max().unwrap_or(0);
        let keep = (ctx / 2).saturating_sub(prefix_len).max(1);
        self.state = self.model.new_state(self.model_rows())?;
        // The last id of each row is fed by the caller next; the window ends just before it.
        let mut block: Vec<Vec<u32>> = self
            .live
            .iter()
            .map(|&i| {
                let r = &self.rows[i];
                let body = &r.ids[..r.ids.len().saturating_sub(1)];
                let mut w = r.prefix.clone();
                w.extend_from_slice(&body[body.len().saturating_sub(keep)..]);
                w
            })
            .collect();
        // Rows that finished earlier stopped growing, so their windows can be shorter; the
        // batch needs one length. Their outputs are ignored: pad them in front.
        let width = block.iter().map(Vec::len).max().unwrap_or(0);
        for w in &mut block {
            if w.len() < width {
                let mut padded = vec![crate::tokens::PAD; width - w.len()];
                padded.append(w);
                *w = padded;
            }
        }
        self.forward_rows(&block)
    }

    /// Continues every take by `length` from where it stopped, reusing the model state.
    pub fn extend(
        &mut self,
        length: Length,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Progress),
    ) -> Result<(), GenError> {
        self.restore_dropped_rows()?;
        self.request.length = length;
        let constraints = self.request.effective_constraints();
        let prompt_meter = self.meta.meters.first().map(|(_, m)| *m).unwrap_or_default();
        let keys = self.row_keys();
        let finals = self.row_finals();
        for ((r, key), finals) in self.rows.iter_mut().zip(keys).zip(finals) {
            // A meter the row sampled is its own (the prompt had none).
            let head = self.encoding.decode(&r.prefix).score;
            let meter = if head.meta.meters.is_empty() { prompt_meter } else { head.meter() };
            r.done = false;
            r.cancelled = false;
            r.truncated = false;
            // A fresh tracker would forget open notes; replaying the ids rebuilds it exactly.
            let rules;
            (rules, r.final_bias) = take_rules(&constraints, key.as_ref(), finals.as_ref());
            let mut t = Tracker::new(rules, &self.effects, meter);
            for &id in &r.ids {
                t.push(self.effects.get(id));
            }
            if let Some(d) = r.decoder.as_ref().filter(|_| self.effects.sequential) {
                t.resync(&d.state());
            }
            t.begin(t.position());
            r.tracker = t;
        }
        self.set_limits(length);
        self.run(cancel, on_event)
    }

    /// The takes as they stand (the batch stays usable for [`Batch::extend`]).
    pub fn takes(&self) -> Vec<Take> {
        self.rows
            .iter()
            .map(|r| {
                // Finishing consumes a decoder: finish a copy, so the batch can go on.
                let decoded = match r.decoder.as_ref() {
                    Some(d) => d.box_clone().finish(),
                    None => self.encoding.decode(&r.ids),
                };
                let mut score = decoded.score;
                let head = score.meta.clone();
                score.meta = self.meta.clone();
                score.meta.gen.seed = Some(r.seed);
                // A header the model sampled is the take's own key and meter.
                let sampled = Sampled {
                    key: (score.meta.keys.is_empty() && !head.keys.is_empty()).then(|| head.keys[0].1.to_string()),
                    meter: (score.meta.meters.is_empty() && !head.meters.is_empty())
                        .then(|| head.meters[0].1.to_string()),
                    bars: r.drawn_bars.then_some(r.end_after_bars),
                };
                if sampled.key.is_some() {
                    score.meta.keys = head.keys.clone();
                }
                if sampled.meter.is_some() {
                    score.meta.meters = head.meters.clone();
                }
                score.normalize();
                // Exactly N bars: the take spans the whole last bar even when it ended early
                // (end token in its last bar), and not the bar a final bar line opens (REMI's
                // decoder counts a `Bar` as the start of one more bar).
                let last = score.notes.iter().map(Note::end).max().unwrap_or(0);
                if let Some(end) = r.tracker.end_tick() {
                    score.length = end.max(last);
                } else if let Some(line) = score.bar_line_at_or_after(last).filter(|_| last > 0) {
                    // Otherwise the take ends with the bar its last note ends in: a `Bar` just
                    // before the end id opened one more, empty bar, printed as a bar of rest
                    // (`| z4|]`) at the end of 53 of 300 chorale takes.
                    score.length = line;
                }
                let mut record = self.record_base.clone();
                record.seed = r.seed;
                record.ids = r.ids[r.prompt_len..].to_vec();
                record.log_likelihood = r.ll;
                record.notes = r.notes.len();
                record.skipped = decoded.skipped;
                record.cancelled = r.cancelled;
                record.truncated = r.truncated;
                record.length = self.request.length;
                record.sampled = sampled;
                // From the decoded ids rather than the stream, so notes still open when
                // generation stopped (closed by decoding) are included too.
                let mut notes: Vec<Note> = score.notes.iter().filter(|n| n.start >= r.prompt_end).copied().collect();
                notes.sort_unstable();
                Take { score, notes, record }
            })
            .collect()
    }

    pub fn batch(&self) -> usize {
        self.rows.len()
    }
}

/// A generation running on a worker thread.
pub struct Job {
    pub events: mpsc::Receiver<Progress>,
    cancel: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<Batch, GenError>>>,
}

impl Job {
    /// Starts `n` takes of `request` on a new thread.
    pub fn spawn(gen: Arc<Parts>, request: Request, n: usize) -> Job {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = cancel.clone();
        let handle = std::thread::Builder::new().name("cadenza-gen".into()).spawn(move || {
            let mut batch = Batch::start(&gen, &request, n)?;
            // A dropped receiver only means nobody listens any more; keep generating.
            batch.run(&flag, &mut |e| {
                let _ = tx.send(e);
            })?;
            Ok(batch)
        });
        match handle {
            Ok(h) => Job { events: rx, cancel, handle: Some(h) },
            Err(e) => {
                // Spawning failed: report it through join().
                let h = std::thread::spawn(move || Err(GenError::Worker(format!("could not start a thread: {e}"))));
                Job { events: rx, cancel, handle: Some(h) }
            }
        }
    }

    /// Asks the job to stop before its next token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The shared cancel flag (for wiring to Ctrl-C or a loop's stop).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    /// Waits for the job and returns its batch (call `takes()` on it; keep it to continue).
    pub fn join(mut self) -> Result<Batch, GenError> {
        match self.handle.take() {
            Some(h) => h.join().map_err(|_| GenError::Worker("the generation thread panicked".into()))?,
            None => Err(GenError::Worker("the job was already joined".into())),
        }
    }
}

/// For guidance: each id, or the `<unk>` of its category where it is a style, composer or
/// instrument label (the labels `cadenza train --cond-dropout` drops while training).
fn unlabel_map(encoding: &dyn Encoding, vocab: usize) -> Vec<u32> {
    use crate::tokens::CondToken;
    let dropped = [Category::Style, Category::Composer, Category::Instrument];
    let unk_of = |category: Category| {
        (0..vocab as u32).find(
            |&id| matches!(encoding.kind(id), Some(TokenKind::Cond(c)) if c.category == category && c.value.is_none()),
        )
    };
    let unks: Vec<Option<u32>> = dropped.iter().map(|&c| unk_of(c)).collect();
    (0..vocab as u32)
        .map(|id| match encoding.kind(id) {
            Some(TokenKind::Cond(CondToken { category, value: Some(_) })) => {
                dropped.iter().position(|&c| c == *category).and_then(|i| unks[i]).unwrap_or(id)
            }
            _ => id,
        })
        .collect()
}

/// Positions in the prefix of the header ids the model samples: the key and the meter when
/// neither the prompt nor the caller set them. Only where the music's ids do not depend on
/// them: an empty prompt, or the `tune` encoding (its bar lines do not move time).
fn open_header(prompt: &Score, encoding: &dyn Encoding, prefix_len: usize) -> Vec<usize> {
    if !(prompt.notes.is_empty() || encoding.name() == "tune") {
        return Vec::new();
    }
    let mut out = Vec::new();
    if prompt.meta.keys.is_empty() {
        out.push(1 + Category::Key.index());
    }
    if prompt.meta.meters.is_empty() {
        out.push(1 + Category::Meter.index());
    }
    // Only when the prefix really has one id per category after `<bos>`.
    out.retain(|&p| p < prefix_len);
    out
}

#[cfg(test)]
mod tests {
    use super::recall_scale;

    /// A take's recall factor: exactly 1 without a spread (the take is as it was), else uniform
    /// in `[1 − spread, 1 + spread]` by the take's seed, the same for the same seed.
    #[test]
    fn recall_scales_are_seeded_and_uniform_within_the_spread() {
        assert!((0..100).all(|seed| recall_scale(seed, 0.0) == 1.0));
        let scales: Vec<f64> = (0..2000).map(|seed| recall_scale(seed, 1.0)).collect();
        assert!(scales.iter().all(|s| (0.0..=2.0).contains(s)));
        let mean = scales.iter().sum::<f64>() / scales.len() as f64;
        assert!((mean - 1.0).abs() < 0.05, "mean {mean}");
        let below_half = scales.iter().filter(|&&s| s < 0.5).count() as f64 / scales.len() as f64;
        assert!((below_half - 0.25).abs() < 0.04, "share below 0.5: {below_half}");
        assert_eq!(recall_scale(7, 1.0), scales[7]);
        assert!((0..100).map(|seed| recall_scale(seed, 0.5)).all(|s| (0.5..=1.5).contains(&s)));
    }
}
