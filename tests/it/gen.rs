//! Integration tests: gen — seeded replay, constraints on many takes, cancel, streaming, continuation, likelihood.
//!
//! Most tests run a tiny fake model (a bigram table, so every number can be recomputed by hand)
//! over a tiny notewise-style encoding written here, so they pin the generation machinery
//! independently of the real models and encodings; `real_*` tests use the bundled ones.

use cadenza::gen::{Constraints, Generator, Length, Progress, Request, Sampling};
use cadenza::model::{LanguageModel, ModelError, State};
use cadenza::score::{Key, Note, Score};
use cadenza::time::{Meter, Tick};
use cadenza::tokens::{
    CondSpec, CondTable, Conditioning, Decoded, Decoder, DecoderState, Encoding, Sounding, TokenKind, Vocab,
};
use candle_core::{Device, Tensor};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

// ---------------------------------------------------------------- a toy encoding

const LOW: u8 = 60;
const PITCHES: u32 = 12;
const END: u32 = 0;
const fn on(p: u8) -> u32 {
    1 + (p - LOW) as u32
}
const fn off(p: u8) -> u32 {
    1 + PITCHES + (p - LOW) as u32
}
const WAIT240: u32 = 1 + 2 * PITCHES;
const WAIT480: u32 = WAIT240 + 1;
const START: u32 = WAIT480 + 1;
const VOCAB: usize = START as usize + 1;

/// Notewise in miniature: `<end>`, `on:60..71`, `off:60..71`, `wait:240`, `wait:480`, `<start>`.
struct Toy {
    vocab: Vocab,
    kinds: Vec<TokenKind>,
    cond: CondTable,
}

impl Toy {
    fn new() -> Self {
        let mut t = vec!["<end>".to_string()];
        t.extend((0..PITCHES).map(|i| format!("on:{}", LOW as u32 + i)));
        t.extend((0..PITCHES).map(|i| format!("off:{}", LOW as u32 + i)));
        t.extend(["wait:240".to_string(), "wait:480".to_string(), "<start>".to_string()]);
        let mut kinds = vec![TokenKind::Eos];
        kinds.extend((0..PITCHES as u8).map(|i| TokenKind::NoteOn { pitch: LOW + i, voice: 0 }));
        kinds.extend((0..PITCHES as u8).map(|i| TokenKind::NoteOff { pitch: LOW + i, voice: 0 }));
        kinds.extend([TokenKind::Wait(240), TokenKind::Wait(480), TokenKind::Bos]);
        let spec = CondSpec { styles: vec!["reel".into(), "jig".into()], ..CondSpec::default() };
        Toy { vocab: Vocab::new("toy", t), kinds, cond: CondTable::new(&spec) }
    }
}

impl Encoding for Toy {
    fn name(&self) -> &'static str {
        "toy"
    }
    fn vocab(&self) -> &Vocab {
        &self.vocab
    }
    fn condition(&self, _cond: &Conditioning) -> Vec<u32> {
        vec![START]
    }
    fn encode(&self, score: &Score) -> Vec<u32> {
        // Events at each time: offs before ons; waits in 480/240 chunks on a 240 grid.
        let mut events: BTreeMap<Tick, (Vec<u32>, Vec<u32>)> = BTreeMap::new();
        for n in &score.notes {
            if (LOW..LOW + PITCHES as u8).contains(&n.pitch) {
                events.entry(n.start / 240 * 240).or_default().1.push(on(n.pitch));
                events.entry(n.end() / 240 * 240).or_default().0.push(off(n.pitch));
            }
        }
        let mut ids = vec![START];
        let mut pos = 0;
        for (t, (offs, ons)) in events {
            while pos < t {
                let step = if t - pos >= 480 { 480 } else { 240 };
                ids.push(if step == 480 { WAIT480 } else { WAIT240 });
                pos += step;
            }
            ids.extend(offs);
            ids.extend(ons);
        }
        ids
    }
    fn decoder(&self) -> Box<dyn Decoder> {
        Box::new(ToyDecoder::default())
    }
    fn kinds(&self) -> &[TokenKind] {
        &self.kinds
    }
    fn cond_table(&self) -> &CondTable {
        &self.cond
    }
    fn step(&self) -> Tick {
        240
    }
}

#[derive(Default, Clone)]
struct ToyDecoder {
    pos: Tick,
    open: BTreeMap<u8, Tick>,
    notes: Vec<Note>,
    skipped: usize,
}

impl Decoder for ToyDecoder {
    fn push(&mut self, id: u32) -> Vec<Note> {
        match id {
            1..=12 => {
                let p = LOW + (id - 1) as u8;
                if self.open.insert(p, self.pos).is_some() {
                    self.skipped += 1;
                }
                vec![]
            }
            13..=24 => {
                let p = LOW + (id - 13) as u8;
                match self.open.remove(&p) {
                    Some(s) if self.pos > s => {
                        let n = Note::new(s, self.pos - s, p);
                        self.notes.push(n);
                        vec![n]
                    }
                    _ => {
                        self.skipped += 1;
                        vec![]
                    }
                }
            }
            WAIT240 => {
                self.pos += 240;
                vec![]
            }
            WAIT480 => {
                self.pos += 480;
                vec![]
            }
            END => vec![],
            _ => vec![],
        }
    }
    fn position(&self) -> Tick {
        self.pos
    }
    fn bars(&self) -> u32 {
        (self.pos / 1920) as u32
    }
    fn skipped(&self) -> usize {
        self.skipped
    }
    /// Grammar: a pitch can only start when silent and only end when sounding, after time moved.
    fn mask(&self, out: &mut [bool]) {
        for p in 0..PITCHES as u8 {
            let open = self.open.get(&(LOW + p));
            if open.is_some() {
                out[on(LOW + p) as usize] = false;
            }
            if open.is_none_or(|&s| s >= self.pos) {
                out[off(LOW + p) as usize] = false;
            }
        }
    }
    fn state(&self) -> DecoderState {
        DecoderState {
            position: self.pos,
            bar_start: Some(self.pos / 1920 * 1920),
            bar_ticks: 1920,
            bars: self.bars(),
            sounding: self.open.iter().map(|(&pitch, &start)| Sounding { pitch, voice: 0, start, end: None }).collect(),
            in_prefix: false,
            ended: false,
        }
    }
    fn box_clone(&self) -> Box<dyn Decoder> {
        Box::new(self.clone())
    }
    fn finish(self: Box<Self>) -> Decoded {
        let mut score = Score::new();
        score.notes = self.notes.clone();
        for (&p, &s) in &self.open {
            if self.pos > s {
                score.notes.push(Note::new(s, self.pos - s, p));
            }
        }
        score.normalize();
        score.length = score.length.max(self.pos);
        Decoded { score, skipped: self.skipped }
    }
}

// ---------------------------------------------------------------- a toy model

/// Logits depend only on the previous id: `table[prev][next]`. Grammatical successions (on →
/// wait → off → on) get a bonus, the rest a deterministic pseudo-random value in [-1, 1].
fn bigram(prev: u32, next: u32) -> f32 {
    let noise = ((prev * 31 + next * 17) as f32 * 0.7).sin();
    let is_on = (1..=12).contains(&next);
    let is_off = (13..=24).contains(&next);
    let is_wait = next == WAIT240 || next == WAIT480;
    let bonus = match prev {
        1..=12 if is_wait => 2.5,
        WAIT240 | WAIT480 if is_off || is_on => 1.5,
        13..=24 if is_on => 2.0,
        START if is_on => 2.0,
        _ => 0.0,
    };
    noise + bonus
}

struct Bigram {
    context: usize,
    device: Device,
    calls: Arc<AtomicUsize>,
    /// Set this flag when the forward call with this number (1-based) runs.
    cancel_at: Option<(usize, Arc<AtomicBool>)>,
}

impl Bigram {
    fn new(context: usize) -> Self {
        Bigram { context, device: Device::Cpu, calls: Arc::new(AtomicUsize::new(0)), cancel_at: None }
    }
}

struct BigramState {
    len: usize,
    /// Per row, whether it was fed `Leaning::only_after` (unused by the other test models).
    seen: Vec<bool>,
}

impl State for BigramState {
    fn len(&self) -> usize {
        self.len
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

impl LanguageModel for Bigram {
    fn vocab_size(&self) -> usize {
        VOCAB
    }
    fn context(&self) -> usize {
        self.context
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn new_state(&self, _batch: usize) -> Result<Box<dyn State>, ModelError> {
        Ok(Box::new(BigramState { len: 0, seen: Vec::new() }))
    }
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let all = self.forward_all(ids, state)?;
        let t = all.dim(1)?;
        Ok(all.narrow(1, t - 1, 1)?.squeeze(1)?)
    }
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((k, flag)) = &self.cancel_at {
            if n == *k {
                flag.store(true, Ordering::SeqCst);
            }
        }
        let rows = ids.to_vec2::<u32>()?;
        let (b, t) = (rows.len(), rows[0].len());
        let st =
            state.as_any_mut().downcast_mut::<BigramState>().ok_or(ModelError::ForeignState { model: "bigram" })?;
        if st.len + t > self.context {
            return Err(ModelError::ContextFull { context: self.context, needed: st.len + t });
        }
        st.len += t;
        let mut out = Vec::with_capacity(b * t * VOCAB);
        for row in &rows {
            for &prev in row {
                out.extend((0..VOCAB as u32).map(|next| bigram(prev, next)));
            }
        }
        Ok(Tensor::from_vec(out, (b, t, VOCAB), &self.device)?)
    }
}

fn toy_gen(model: Bigram) -> Generator {
    Generator::from_parts("toy", Arc::new(model), Arc::new(Toy::new()), "0000")
}

fn prompt() -> Score {
    let mut s = Score::new();
    s.notes = vec![Note::new(0, 480, 60), Note::new(480, 480, 64), Note::new(960, 960, 67)];
    s.meta.meters = vec![(0, Meter::new(4, 4))];
    s.normalize();
    s.length = 1920;
    s
}

fn request(length: Length, seed: u64) -> Request {
    let mut r = Request::new(prompt(), length);
    r.seed = seed;
    r.sampling = Sampling { temperature: 1.0, top_k: 8, top_p: 0.95, ..Sampling::default() };
    r
}

// ---------------------------------------------------------------- tests

#[test]
fn same_seed_same_notes_and_pinned_golden_ids() {
    let g = toy_gen(Bigram::new(1024));
    let a = g.generate(&request(Length::Tokens(24), 7)).unwrap();
    let b = g.generate(&request(Length::Tokens(24), 7)).unwrap();
    let c = g.generate(&request(Length::Tokens(24), 8)).unwrap();
    assert_eq!(a.record.ids, b.record.ids);
    assert_eq!(a.notes, b.notes);
    assert_ne!(a.record.ids, c.record.ids);
    // Pinned once from this run: the ChaCha20 stream, our categorical draw and the top-k/top-p
    // cut together decide these; any change to them shows up here.
    assert_eq!(a.record.ids, GOLDEN_SEED7, "ids {:?}", a.record.ids);
}

const GOLDEN_SEED7: &[u32] = &[1, 12, 26, 5, 10, 13, 6, 26, 22, 10, 11, 26, 23, 3, 26, 22, 8, 25, 10, 20, 7, 25, 2, 26];

#[test]
fn batch_rows_equal_single_takes_with_their_seeds() {
    let g = toy_gen(Bigram::new(1024));
    let batch = g.generate_batch(&request(Length::Bars(2), 100), 4).unwrap();
    assert_eq!(batch.len(), 4);
    for (i, t) in batch.iter().enumerate() {
        assert_eq!(t.record.seed, 100 + i as u64);
        let single = g.generate(&request(Length::Bars(2), 100 + i as u64)).unwrap();
        assert_eq!(single.record.ids, t.record.ids, "take {i}");
    }
}

/// Regression (`generate --style irish --bars 16 -n 16 --seed 1000` panicked in `slide`): rows
/// that end at different lengths and then slide past the context still make one batch, and each
/// row is still the take its seed gives alone.
#[test]
fn batches_whose_rows_end_at_different_lengths_slide() {
    // The end id and the note-offs a little likelier than the rest, so notes close and the end
    // comes (after a row's first note) after a different number of ids in each row.
    let mut raised = vec![(END, 2.0)];
    raised.extend((0..PITCHES as u8).map(|i| (off(LOW + i), 2.0)));
    let model = Leaning { raised, context: 12, ..Leaning::uniform(VOCAB) };
    let g = Generator::from_parts("toy", Arc::new(model), Arc::new(Toy::new()), "0000");
    let request = |seed| Request { sampling: Sampling::default(), ..request(Length::Tune, seed) };
    let batch = g.generate_batch(&request(40), 8).unwrap();
    let lengths: std::collections::BTreeSet<usize> = batch.iter().map(|t| t.record.ids.len()).collect();
    assert!(lengths.len() > 2, "the rows should end at different lengths: {lengths:?}");
    assert!(lengths.iter().any(|&l| l > 24), "some row must slide (context 12): {lengths:?}");
    for t in &batch {
        let single = g.generate(&request(t.record.seed)).unwrap();
        assert_eq!(single.record.ids, t.record.ids, "seed {}", t.record.seed);
        assert_eq!(t.score.meta.gen.seed, Some(t.record.seed), "each take carries its own seed");
    }
}

/// With no length a take is a whole tune: it ends at the model's end id. The key and meter the
/// caller left open are sampled, per take and replayably, and written into the take.
#[test]
fn whole_tunes_sample_their_header_and_end_where_the_model_ends_them() {
    let g = real_gen("tune");
    let mut r = Request::new(Score::new(), Length::Tune);
    r.seed = 3;
    let takes = g.generate_batch(&r, 8).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    for t in &takes {
        assert!(!t.record.truncated, "seed {}", t.record.seed);
        assert_eq!(t.record.ids.last(), Some(&cadenza::tokens::EOS), "seed {}", t.record.seed);
        let key = t.record.sampled.key.clone().expect("a sampled key");
        let meter = t.record.sampled.meter.clone().expect("a sampled meter");
        assert_eq!(t.score.key().to_string(), key);
        assert_eq!(t.score.meter().to_string(), meter);
        keys.insert(key);
        let again = g.generate(&Request { seed: t.record.seed, ..r.clone() }).unwrap();
        assert_eq!(again.record.ids, t.record.ids);
        assert_eq!(again.record.sampled, t.record.sampled);
    }
    assert!(keys.len() > 1, "every take sampled the same key: {keys:?}");
    // A key the caller sets is a condition, not sampled.
    let mut set = r.clone();
    set.overrides.key = Some(Key::new(5, 0, cadenza::score::Mode::Minor));
    let t = g.generate(&set).unwrap();
    assert_eq!(t.record.sampled.key, None);
    assert_eq!(t.score.key().to_string(), "Am");
}

/// An open key is drawn from the keys the training tunes use (`header_prior.json`), for the
/// style and, when the caller fixed it, the meter; never from the model's blur of transpositions.
/// An open meter is drawn from the meters of the style's tunes in that key.
#[test]
fn open_keys_come_from_the_training_tunes_keys() {
    use cadenza::gen::HeaderPrior;
    let tune = |key: Key, meter: Meter| {
        let mut s = Score::new();
        s.meta.style = Some("irish".into());
        s.meta.keys = vec![(0, key)];
        s.meta.meters = vec![(0, meter)];
        s
    };
    let d = Key::new(1, 0, cadenza::score::Mode::Major);
    let am = Key::new(5, 0, cadenza::score::Mode::Minor);
    let tunes = [tune(d.clone(), Meter::new(6, 8)), tune(am.clone(), Meter::new(4, 4)), tune(am, Meter::new(4, 4))];
    let plain = real_gen("tune");
    let prior = HeaderPrior::build(plain.encoding().as_ref(), &tunes);
    let g = real_gen("tune").with_header_prior(prior);
    let mut r = Request::new(Score::new(), Length::Bars(2));
    r.overrides.style = Some("irish".into());
    r.seed = 11;
    let takes = g.generate_batch(&r, 24).unwrap();
    let keys: std::collections::BTreeSet<String> =
        takes.iter().map(|t| t.record.sampled.key.clone().expect("sampled")).collect();
    assert_eq!(keys, ["Am", "D"].map(String::from).into(), "the uniform model alone would give any of 84 keys");
    // An open meter follows from the key drawn, as the tunes pair them: D jigs, A minor reels.
    for t in &takes {
        let pair = (t.record.sampled.key.as_deref(), t.record.sampled.meter.as_deref());
        assert!(matches!(pair, (Some("D"), Some("6/8")) | (Some("Am"), Some("4/4"))), "{pair:?}");
    }
    // The caller's meter narrows the draw to the tunes in it: only the jig is in 6/8.
    r.overrides.meter = Some(Meter::new(6, 8));
    for t in g.generate_batch(&r, 8).unwrap() {
        assert_eq!(t.record.sampled.key.as_deref(), Some("D"));
    }
}

/// `in_key` keeps each take in the key it plays in: with an open key, the key that take
/// sampled (not the prompt's C); `pentatonic` narrows that to the key's pentatonic scale.
#[test]
fn in_key_follows_each_takes_sampled_key_and_pentatonic_narrows_it() {
    let g = real_gen("tune");
    let mut r = Request::new(Score::new(), Length::Bars(4));
    r.seed = 5;
    r.constraints.in_key = true;
    let mut keys = std::collections::BTreeSet::new();
    for t in g.generate_batch(&r, 12).unwrap() {
        let key = t.score.key();
        keys.insert(key.to_string());
        assert!(!t.notes.is_empty());
        let in_key = key.pitch_classes();
        assert!(t.notes.iter().all(|n| in_key.contains(&(n.pitch % 12))), "{key}: {:?}", t.notes);
    }
    assert!(keys.len() > 2, "the takes should sample several keys: {keys:?}");
    r.constraints.pentatonic = true;
    let mut outside_major_pentatonic = 0;
    for t in g.generate_batch(&r, 12).unwrap() {
        let key = t.score.key();
        let five = key.pentatonic();
        assert_eq!(five.len(), 5);
        assert!(t.notes.iter().all(|n| five.contains(&(n.pitch % 12))), "{key}: {:?}", t.notes);
        outside_major_pentatonic += t.notes.iter().filter(|n| ![0, 2, 4, 7, 9].contains(&(n.pitch % 12))).count();
    }
    assert!(outside_major_pentatonic > 0, "some takes are in keys other than C");
}

/// A model's `generation_config.json` may set defaults per style (here Chinese takes kept to the
/// pentatonic of their key, and no other style).
#[test]
fn style_defaults_from_generation_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/models/folk");
    for f in ["config.json", "vocab.json", "model.safetensors"] {
        if !std::path::Path::new(src).join(f).is_file() {
            eprintln!("models/folk is not there yet: skipped");
            return;
        }
        std::fs::copy(std::path::Path::new(src).join(f), dir.path().join(f)).unwrap();
    }
    let config = r#"{ "temperature": 0.9, "styles": { "chinese": { "scale": "key pentatonic", "top_p": 0.8 } } }"#;
    std::fs::write(dir.path().join("generation_config.json"), config).unwrap();
    let g = Generator::load(dir.path().to_str().unwrap()).unwrap();
    let chinese = g.defaults_for(Some("chinese"));
    assert!(chinese.in_key && chinese.pentatonic);
    assert_eq!((chinese.temperature, chinese.top_p), (Some(0.9), Some(0.8)));
    for other in [Some("irish"), None] {
        let d = g.defaults_for(other);
        assert!(!d.in_key && !d.pentatonic && d.top_p.is_none(), "{other:?}: {d:?}");
    }
    std::fs::write(dir.path().join("generation_config.json"), r#"{ "styles": { "chinese": { "scale": "Q" } } }"#)
        .unwrap();
    let err = Generator::load(dir.path().to_str().unwrap()).err().expect("a bad scale is refused").to_string();
    assert!(err.contains("generation_config.json") && err.contains("scale `Q`"), "{err}");
    // The shipped folk model keeps no style to a scale: with whole tunes that open as the
    // training tunes do, Chinese takes measure closer to the real ones without it (its card).
    let shipped = Generator::load(src).unwrap();
    assert!(!shipped.defaults_for(Some("chinese")).in_key);
    assert!(!shipped.defaults_for(Some("irish")).in_key);
}

fn sounding_at_most(notes: &[Note], max: usize) -> bool {
    notes.iter().all(|n| notes.iter().filter(|m| m.start <= n.start && m.end() > n.start).count() <= max)
}

#[test]
fn constraints_hold_on_many_takes() {
    let g = toy_gen(Bigram::new(1024));
    let c_major = Key::default().pitch_classes();
    for bars in [1u32, 2, 3] {
        let mut r = request(Length::Bars(bars), 1000 + bars as u64);
        r.constraints = Constraints {
            pitch_classes: Some(c_major.clone()),
            range: Some((62, 69)),
            max_polyphony: Some(1),
            ..Constraints::default()
        };
        let takes = g.generate_batch(&r, 24).unwrap();
        for t in &takes {
            let end = 1920 + bars as Tick * 1920;
            assert!(!t.record.truncated && !t.record.cancelled);
            for n in &t.notes {
                assert!(c_major.contains(&(n.pitch % 12)), "pitch {} outside C major", n.pitch);
                assert!((62..=69).contains(&n.pitch), "pitch {} outside 62..=69", n.pitch);
                assert!(n.start >= 1920 && n.end() <= end, "note {n:?} outside bars 2..{}", bars + 1);
            }
            assert!(sounding_at_most(&t.notes, 1), "polyphony above 1: {:?}", t.notes);
            // Exactly N bars: the decoded music reaches the end of the last bar, not beyond.
            let decoded = g.encoding().decode(&[prompt_ids(&g), t.record.ids.clone()].concat());
            assert_eq!(decoded.score.length, end, "take with seed {} has the wrong length", t.record.seed);
        }
    }
}

fn prompt_ids(g: &Generator) -> Vec<u32> {
    g.encoding().encode(&prompt())
}

#[test]
fn polyphony_and_range_hold_without_bar_limit() {
    let g = toy_gen(Bigram::new(1024));
    for seed in 0..40 {
        let mut r = request(Length::Notes(12), seed);
        r.sampling.top_k = 0;
        r.constraints = Constraints { max_polyphony: Some(2), range: Some((60, 64)), ..Constraints::default() };
        let t = g.generate(&r).unwrap();
        assert!(sounding_at_most(&t.notes, 2));
        assert!(t.notes.iter().all(|n| (60..=64).contains(&n.pitch)));
    }
}

#[test]
fn cancel_stops_within_one_token() {
    let flag = Arc::new(AtomicBool::new(false));
    let mut model = Bigram::new(1024);
    let calls = model.calls.clone();
    // Call 1 feeds the prompt; the flag goes up during call 10 (the 9th generated token's
    // logits). The loop must check it before drawing another token.
    model.cancel_at = Some((10, flag.clone()));
    let g = toy_gen(model);
    let s = g.batch(&request(Length::Tokens(500), 3), 1, &flag, &mut |_| {}).unwrap();
    let take = &s.takes()[0];
    assert!(take.record.cancelled);
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    assert_eq!(take.record.ids.len(), 9);
}

#[test]
fn spawned_job_streams_each_note_and_can_be_cancelled() {
    let g = Arc::new(toy_gen(Bigram::new(1024)));
    let job = g.spawn(request(Length::Bars(4), 11), 1);
    let mut streamed = Vec::new();
    let mut finished = false;
    for e in job.events.iter() {
        match e {
            Progress::Note { take, note } => {
                assert_eq!(take, 0);
                streamed.push(note);
            }
            Progress::Finished { .. } => finished = true,
        }
    }
    assert!(finished);
    let take = job.join().unwrap().takes().remove(0);
    // Every streamed note is in the take; the take may add notes closed at the very end.
    assert!(!streamed.is_empty());
    for n in &streamed {
        assert!(take.notes.contains(n), "{n:?} streamed but not in the take");
    }

    let job = g.spawn(request(Length::Tokens(1_000_000), 12), 1);
    // Wait for the first note, then cancel: the job must end instead of running a million tokens.
    let first = job.events.recv().unwrap();
    assert!(matches!(first, Progress::Note { .. } | Progress::Finished { .. }));
    job.cancel();
    let take = job.join().unwrap().takes().remove(0);
    assert!(take.record.cancelled);
    assert!(take.record.ids.len() < 1_000_000);
}

#[test]
fn continuing_a_take_reuses_the_state() {
    let model = Bigram::new(4096);
    let calls = model.calls.clone();
    let g = toy_gen(model);
    let mut s = g.batch(&request(Length::Bars(2), 5), 1, &AtomicBool::new(false), &mut |_| {}).unwrap();
    let before = s.takes()[0].record.ids.len();
    let calls_before = calls.load(Ordering::SeqCst);
    s.extend(Length::Bars(2), &AtomicBool::new(false), &mut |_| {}).unwrap();
    let after = s.takes()[0].record.ids.len();
    // One forward call per new token and no re-read of the prompt.
    assert_eq!(calls.load(Ordering::SeqCst) - calls_before, after - before);
    let t = &s.takes()[0];
    assert_eq!(t.score.length, 1920 * 5);
    // A length in notes counts the continuation's finished notes, not the take's.
    let notes = s.takes()[0].record.notes;
    s.extend(Length::Notes(6), &AtomicBool::new(false), &mut |_| {}).unwrap();
    let added = s.takes()[0].record.notes - notes;
    assert!((6..=8).contains(&added), "{added} notes added");
}

#[test]
fn prompts_and_takes_longer_than_the_context_slide() {
    // Context 12: the prompt (about 12 ids) and 300 tokens must slide many times. A bigram
    // model sees only the last id, so sliding must not change a single token.
    let short = toy_gen(Bigram::new(12)).generate(&request(Length::Tokens(300), 9)).unwrap();
    let long = toy_gen(Bigram::new(100_000)).generate(&request(Length::Tokens(300), 9)).unwrap();
    assert_eq!(short.record.ids, long.record.ids);
}

#[test]
fn likelihood_equals_the_sum_of_token_log_probs() {
    let g = toy_gen(Bigram::new(1024));
    let score = prompt();
    let lik = g.likelihood(&score).unwrap();
    // Independently: log-softmax of the bigram table row of each previous id.
    let ids = g.encoding().encode(&score);
    let mut total = 0.0f64;
    for w in ids.windows(2) {
        let row: Vec<f64> = (0..VOCAB as u32).map(|n| bigram(w[0], n) as f64).collect();
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        total += row[w[1] as usize] - lse;
    }
    assert!((lik.total - total).abs() < 1e-4, "{} vs {}", lik.total, total);
    assert_eq!(lik.tokens, ids.len() - 1);
    assert_eq!(lik.notes, 3);
    assert!((lik.per_note - total / 3.0).abs() < 1e-4);
    let bar_nll: f64 = lik.bars.iter().map(|b| b.nll).sum();
    assert!((bar_nll + total).abs() < 1e-4);

    // Windows overlapping by half give the same total for a bigram model.
    let small = toy_gen(Bigram::new(4));
    let lik_small = small.likelihood(&score).unwrap();
    assert!((lik_small.total - total).abs() < 1e-4);
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let g = toy_gen(Bigram::new(1024));
    let mut r = request(Length::Bars(0), 1);
    assert!(g.generate(&r).is_err());
    // Lengths past any tune are refused before anything is generated (`--bars 100000`).
    for (length, want) in [
        (Length::Bars(100_000), "at most 1024 bars"),
        (Length::Notes(10_000_000), "at most 100000 notes"),
        (Length::Tokens(usize::MAX), "at most 1000000 tokens"),
        (Length::Seconds(1e9), "at most 3600 seconds"),
    ] {
        r.length = length;
        let e = g.generate(&r).unwrap_err().to_string();
        assert!(e.contains(want), "{e}");
    }
    r.length = Length::Bars(1);
    r.sampling.top_p = 0.0;
    assert!(g.generate(&r).is_err());
    r.sampling.top_p = 1.0;
    r.constraints.pitch_classes = Some(vec![]);
    assert!(g.generate(&r).is_err());
    r.constraints.pitch_classes = None;
    r.overrides.style = Some("martian".into());
    let e = g.generate(&r).unwrap_err().to_string();
    assert!(e.contains("martian") && e.contains("reel, jig"), "{e}");
}

// ---------------------------------------------------------------- the fast GPT path

fn random_gpt_tensors(activation: &str) -> (cadenza::model::GptConfig, std::collections::HashMap<String, Tensor>) {
    random_gpt(activation, 40, 64)
}

fn random_gpt(
    activation: &str,
    vocab: usize,
    positions: usize,
) -> (cadenza::model::GptConfig, std::collections::HashMap<String, Tensor>) {
    let cfg: cadenza::model::GptConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": vocab, "n_positions": positions, "n_embd": 32, "n_layer": 2, "n_head": 4,
        "activation_function": activation, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "resid_pdrop": 0.0
    }))
    .unwrap();
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    cadenza::model::gpt::Gpt::new(&cfg, vb).unwrap();
    let mut tensors = std::collections::HashMap::new();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        // Large enough weights that every op matters (GPT-2's init would make the net near-linear).
        let t = Tensor::randn(0f32, 0.3, var.shape().clone(), &Device::Cpu).unwrap();
        tensors.insert(name.clone(), t);
    }
    (cfg, tensors)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn fast_gpt_matches_the_candle_gpt() {
    for activation in ["gelu_new", "gelu"] {
        let (cfg, tensors) = random_gpt_tensors(activation);
        let vb = candle_nn::VarBuilder::from_tensors(tensors.clone(), candle_core::DType::F32, &Device::Cpu);
        let slow = cadenza::model::gpt::Gpt::new(&cfg, vb).unwrap();
        let mut fast = cadenza::model::gpt_cpu::CpuGpt::from_tensors(&cfg, &tensors).unwrap();
        fast.set_threads(2);
        // 1: the matrix-vector path; 5 and 16: the matrix-product path, split over two threads.
        for batch in [1usize, 5, 16] {
            let ids: Vec<u32> = (0..batch * 9).map(|i| (i as u32 * 7 + 3) % 40).collect();
            let ids = Tensor::from_vec(ids, (batch, 9), &Device::Cpu).unwrap();
            // Whole sequence at once.
            let mut s1 = slow.new_state(batch).unwrap();
            let mut s2 = fast.new_state(batch).unwrap();
            let a = slow.forward_all(&ids, s1.as_mut()).unwrap();
            let b = fast.forward_all(&ids, s2.as_mut()).unwrap();
            assert!(max_diff(&a, &b) < 1e-3, "{activation} batch {batch}: {}", max_diff(&a, &b));
            // Then token by token through the caches.
            let next = Tensor::from_vec((0..batch as u32).map(|i| i + 5).collect::<Vec<_>>(), (batch, 1), &Device::Cpu)
                .unwrap();
            let a = slow.forward(&next, s1.as_mut()).unwrap();
            let b = fast.forward(&next, s2.as_mut()).unwrap();
            assert_eq!(s2.len(), 10);
            assert!(max_diff(&a, &b) < 1e-3, "{activation} cached batch {batch}: {}", max_diff(&a, &b));
        }
        // Past the context is an error, not a panic.
        let mut s = fast.new_state(1).unwrap();
        let long = Tensor::from_vec(vec![1u32; 65], (1, 65), &Device::Cpu).unwrap();
        assert!(fast.forward(&long, s.as_mut()).is_err());
    }
}

/// A model that counts the rows it is fed, one per row and forward call.
struct RowCounting {
    inner: cadenza::model::gpt_cpu::CpuGpt,
    rows: Arc<AtomicUsize>,
}

impl LanguageModel for RowCounting {
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }
    fn context(&self) -> usize {
        self.inner.context()
    }
    fn device(&self) -> &Device {
        self.inner.device()
    }
    fn new_state(&self, batch: usize) -> Result<Box<dyn State>, ModelError> {
        self.inner.new_state(batch)
    }
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        self.rows.fetch_add(ids.dim(0)?, Ordering::SeqCst);
        self.inner.forward(ids, state)
    }
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        self.inner.forward_all(ids, state)
    }
}

#[test]
fn a_batch_drops_the_rows_that_end_and_each_take_is_the_one_it_is_alone() {
    let vocab = Toy::new().vocab().len();
    let (cfg, tensors) = random_gpt("gelu_new", vocab, 512);
    let rows = Arc::new(AtomicUsize::new(0));
    let model = RowCounting {
        inner: cadenza::model::gpt_cpu::CpuGpt::from_tensors(&cfg, &tensors).unwrap(),
        rows: rows.clone(),
    };
    let g = Generator::from_parts("toy", Arc::new(model), Arc::new(Toy::new()), "0000");
    let no = AtomicBool::new(false);
    let req = request(Length::Notes(6), 3);
    let mut batch = g.batch(&req, 6, &no, &mut |_| {}).unwrap();
    let together: Vec<Vec<u32>> = batch.takes().iter().map(|t| t.record.ids.clone()).collect();
    // Rows end at different lengths, and an ended row is fed no more: the prompt once per row,
    // then every id drawn but each take's last, not six rows per step until the longest ends.
    assert!(together.iter().any(|ids| ids.len() != together[0].len()), "{together:?}");
    let drawn: usize = together.iter().map(Vec::len).sum();
    assert_eq!(rows.load(Ordering::SeqCst), 6 + (drawn - 6), "{together:?}");
    for (i, ids) in together.iter().enumerate() {
        let alone = g.batch(&request(Length::Notes(6), 3 + i as u64), 1, &no, &mut |_| {}).unwrap();
        assert_eq!(&alone.takes()[0].record.ids, ids, "take {i}");
    }
    // The dropped rows come back to be continued: every take grows by five ids.
    batch.extend(Length::Tokens(5), &no, &mut |_| {}).unwrap();
    for (take, before) in batch.takes().iter().zip(&together) {
        assert!(take.record.ids.starts_with(before) && take.record.ids.len() == before.len() + 5, "{:?}", take.record);
    }
}

// ---------------------------------------------------------------- the real encodings, a uniform model

/// Every token equally likely (`Leaning::uniform`): only the grammar and the constraints shape the music, so any
/// rule the masks fail to enforce shows up quickly.
fn real_gen(encoding: &str) -> Generator {
    let enc = cadenza::tokens::build(encoding, &CondSpec::default(), &[]).unwrap();
    let vocab = enc.vocab().len();
    let model = Leaning::uniform(vocab);
    Generator::from_parts(encoding, Arc::new(model), Arc::from(enc), "0000")
}

#[test]
fn real_encodings_obey_every_constraint_under_a_uniform_model() {
    let d_major = Key::new(1, 0, cadenza::score::Mode::Major);
    for encoding in ["remi", "notewise", "tune"] {
        let g = real_gen(encoding);
        for (i, meter) in [Meter::new(6, 8), Meter::new(3, 4)].into_iter().enumerate() {
            let mut prompt = Score::new();
            prompt.meta.meters = vec![(0, meter)];
            prompt.meta.keys = vec![(0, d_major.clone())];
            let mut r = Request::new(prompt, Length::Bars(4));
            r.seed = 50 + i as u64;
            r.constraints = Constraints {
                pitch_classes: Some(d_major.pitch_classes()),
                range: Some((62, 81)),
                max_polyphony: Some(1),
                whole_bars: true,
                ..Constraints::default()
            };
            let takes = g.generate_batch(&r, 6).unwrap();
            let end = 4 * meter.bar_ticks();
            for t in &takes {
                assert!(!t.record.truncated, "{encoding} seed {} hit the token cap", t.record.seed);
                assert_eq!(t.record.skipped, 0, "{encoding}: the grammar mask let an invalid id through");
                assert_eq!(t.score.length, end, "{encoding} {meter}: not exactly 4 bars");
                for n in &t.notes {
                    assert!(d_major.pitch_classes().contains(&(n.pitch % 12)), "{encoding}: {n:?} not in D major");
                    assert!((62..=81).contains(&n.pitch), "{encoding}: {n:?} out of range");
                    assert!(n.end() <= end, "{encoding}: {n:?} runs past bar 4");
                }
                assert!(sounding_at_most(&t.notes, 1), "{encoding}: two notes at once: {:?}", t.notes);
            }
        }
    }
}

/// A prompt file alone sets the length, sampling and hard constraints (`%%` directives), and
/// the take carries them back so printing it reproduces the request.
#[test]
fn prompt_directives_set_the_request_and_travel_with_the_take() {
    let text = "X:1\n%%bars 3\n%%seed 11\n%%temperature 1.5\n%%scale A minor pentatonic\n%%range A3 A5\n\
                %%polyphony 1\n%%whole_bars\nM:3/4\nL:1/8\nK:Am\nA2 c2 e2|\n";
    let prompt = cadenza::dsl::parse(text).unwrap();
    // The model's defaults fill only what the prompt leaves unset.
    let model_defaults = cadenza::score::GenSettings {
        temperature: Some(0.8),
        top_p: Some(0.9),
        max_polyphony: Some(4),
        ..Default::default()
    };
    let r = Request::from_prompt(prompt.clone(), Length::Bars(8), &model_defaults);
    assert_eq!((r.length, r.seed, r.sampling.temperature, r.sampling.top_p), (Length::Bars(3), 11, 1.5, 0.9));
    assert_eq!(r.constraints.pitch_classes, Some(vec![0, 2, 4, 7, 9]));
    assert_eq!(
        (r.constraints.range, r.constraints.max_polyphony, r.constraints.whole_bars),
        (Some((57, 81)), Some(1), true)
    );
    let g = real_gen("remi");
    for take in g.generate_batch(&r, 4).unwrap() {
        let bar = Meter::new(3, 4).bar_ticks();
        assert_eq!(take.score.length, prompt.length + 3 * bar);
        for n in take.notes.iter().filter(|n| n.start >= prompt.length) {
            assert!([0, 2, 4, 7, 9].contains(&(n.pitch % 12)) && (57..=81).contains(&n.pitch), "{n:?}");
        }
        assert!(sounding_at_most(&take.notes, 1));
        let back = cadenza::dsl::parse(&cadenza::dsl::print(&take.score)).unwrap();
        assert_eq!(back.meta.gen, take.score.meta.gen, "the settings print back");
        assert_eq!(back.meta.gen.pitch_classes, Some(vec![0, 2, 4, 7, 9]));
    }
    // `%%scale key` keeps to the key the generation starts in (the prompt's, or the override's).
    let mut r = Request::from_prompt(
        cadenza::dsl::parse("X:1\n%%scale key\nK:Bb\nB2d2|\n").unwrap(),
        Length::Bars(2),
        &Default::default(),
    );
    r.overrides.key = Some(Key::new(1, 0, cadenza::score::Mode::Major));
    assert!(r.constraints.in_key);
    let d_major = Key::new(1, 0, cadenza::score::Mode::Major).pitch_classes();
    for take in g.generate_batch(&r, 3).unwrap() {
        assert!(take.notes.iter().filter(|n| n.start >= r.prompt.length).all(|n| d_major.contains(&(n.pitch % 12))));
    }
}

/// A prompt with a pickup reaches the model with its bars where the notation has them (as the
/// training data did), and the take comes back written with the same pickup.
#[test]
fn a_pickup_is_aligned_for_the_model_and_restored_in_the_take() {
    let prompt = cadenza::dsl::parse("X:1\nM:6/8\nL:1/8\nK:D\nFG|AFA dFA|\n").unwrap();
    assert_eq!(prompt.meta.pickup, 480);
    let r = Request::new(prompt.clone(), Length::Bars(2));
    assert_eq!((r.pickup, r.prompt.meta.pickup), (480, 0));
    // The pickup ends the first (silent) bar; the full bar starts on bar line 1.
    assert_eq!(r.prompt.notes[0].start, 1440 - 480);
    assert_eq!(r.prompt.notes[2].start, 1440);
    let take = real_gen("remi").generate(&r).unwrap();
    let written = take.score.restore_pickup(r.pickup);
    assert_eq!(written.meta.pickup, 480);
    assert_eq!(&written.notes[..prompt.notes.len()], &prompt.notes[..], "the prompt comes back as written");
    // (A uniform model's notes may overlap the last prompt note, so only its start is checked.)
    // Printed, the pickup stands before the first bar line (in whatever `L:` the take needs).
    let text = cadenza::dsl::print(&written);
    let before_bar = text.split("K:D\n").nth(1).and_then(|b| b.split('|').next()).unwrap_or("");
    assert_eq!(before_bar.chars().filter(|c| c.is_ascii_alphabetic()).collect::<String>(), "FG", "{text}");
    assert_eq!(cadenza::dsl::parse(&text).unwrap().meta.pickup, 480, "{text}");
}

#[test]
fn a_length_in_seconds_follows_the_prompts_tempo_changes() {
    // The prompt's bar runs at 120 bpm; from its end (tick 1920) the tempo halves to 60 bpm, so
    // two seconds of continuation are two beats (960 ticks), not the four beats 120 bpm would give.
    let mut p = prompt();
    p.meta.tempo.set(1920, cadenza::time::bpm_to_micros(60.0));
    let mut r = Request::new(p, Length::Seconds(2.0));
    r.sampling = Sampling { temperature: 1.0, top_k: 8, top_p: 0.95, ..Sampling::default() };
    let g = toy_gen(Bigram::new(1024));
    let mut last_start = 0;
    for seed in 0..8 {
        r.seed = seed;
        let take = g.generate(&r).unwrap();
        for n in take.notes.iter() {
            assert!(n.start < 1920 + 960, "seed {seed}: note {n:?} starts after two seconds at 60 bpm");
            last_start = last_start.max(n.start);
        }
    }
    assert!(last_start >= 1920 + 480, "takes reach into the second beat: last start {last_start}");
}

// ---------------------------------------------------------------- the bundled folk model

/// The committed folk model, if this checkout has it (it is trained in the background and
/// committed by the model engineer).
fn folk() -> Option<Generator> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/folk");
    if !std::path::Path::new(dir).join("model.safetensors").is_file() {
        eprintln!("models/folk is not there yet: bundled-model checks skipped");
        return None;
    }
    Some(Generator::load(dir).expect("the bundled folk model loads"))
}

#[test]
fn real_folk_model_continues_a_jig_in_key_for_exactly_eight_bars() {
    let Some(g) = folk() else { return };
    assert!(g.header_prior().is_some_and(|p| p.tunes() > 10_000.0), "models/folk/header_prior.json is read");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/gen/jig_prompt.abc")).unwrap();
    let prompt = cadenza::dsl::parse(&text).unwrap();
    let mut r = Request::new(prompt.clone(), Length::Bars(8));
    r.seed = 2026;
    r.constraints.pitch_classes = Some(prompt.key().pitch_classes());
    let a = g.generate(&r).unwrap();
    let b = g.generate(&r).unwrap();
    assert_eq!(a.record.ids, b.record.ids, "same seed, same take");
    assert!(!a.notes.is_empty());
    let g_major = prompt.key().pitch_classes();
    assert!(a.notes.iter().all(|n| g_major.contains(&(n.pitch % 12))));
    let bar = prompt.meter().bar_ticks();
    let prompt_end = prompt.length.div_ceil(bar) * bar;
    assert_eq!(a.score.length, prompt_end + 8 * bar);
    assert_eq!(a.record.model_hash.len(), 64);
    // The take's likelihood under the model is the sum of its tokens' log-probabilities.
    let lik = g.likelihood(&a.score).unwrap();
    assert!(lik.total.is_finite() && lik.total < 0.0);
}

#[test]
fn real_chorale_model_writes_four_single_lines_from_its_generation_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models/chorale");
    if !std::path::Path::new(dir).join("model.safetensors").is_file() {
        eprintln!("models/chorale is not there yet: skipped");
        return;
    }
    let g = Generator::load(dir).expect("the bundled chorale model loads");
    // The card's generation_config.json: four voices, each a single line.
    assert!(g.defaults().mono_voices && g.defaults().max_polyphony == Some(4), "{:?}", g.defaults());
    let prompt =
        cadenza::dsl::parse("X:1\nM:4/4\nL:1/4\nK:C\nV:S\nc d e d|\nV:A\nG A G G|\nV:T\nE F C B,|\nV:B\nC, F, C G,|\n")
            .unwrap();
    // ...and no parallel fifths or octaves, counted as `cadenza eval` counts them (the prompt
    // has none, so a take with any made them).
    assert!(g.defaults().no_parallels, "{:?}", g.defaults());
    let parallels = |s: &Score| {
        let f = cadenza::eval::features::features(s);
        let at = |name: &str| cadenza::eval::features::FEATURES.iter().position(|d| d.name == name).unwrap();
        (f[at("parallel_fifths")], f[at("parallel_octaves")])
    };
    assert_eq!(parallels(&prompt), (Some(0.0), Some(0.0)));
    let r = Request::from_prompt(prompt, Length::Bars(2), g.defaults());
    assert!(r.constraints.mono_voices && r.constraints.no_parallels);
    for seed in 0..3 {
        let take = g.generate(&Request { seed, ..r.clone() }).unwrap();
        assert_eq!(
            parallels(&take.score),
            (Some(0.0), Some(0.0)),
            "seed {seed}:\n{}",
            cadenza::dsl::print(&take.score)
        );
        let n = &take.notes;
        assert!(!n.is_empty());
        for (i, a) in n.iter().enumerate() {
            assert!(a.voice < 4);
            for b in &n[i + 1..] {
                assert!(
                    b.voice != a.voice || b.start >= a.end() || a.start >= b.end(),
                    "seed {seed}: {a:?} and {b:?} overlap"
                );
            }
        }
    }
}

/// Forms (`gen::form`): a repeated section is the same notes, a primed one keeps its letter's
/// first bars, every section has its bars, and the last note is the tonic (the cadence).
#[test]
fn forms_reuse_sections_and_end_on_the_tonic() {
    use cadenza::gen::{generate_form, FormSpec};
    let g = real_gen("tune");
    let a_minor = Key::new(5, 0, cadenza::score::Mode::Minor);
    for seed in 0..6u64 {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(3, 4))];
        prompt.meta.keys = vec![(0, a_minor.clone())];
        let mut r = Request::new(prompt, Length::Tune);
        r.seed = seed;
        let spec = FormSpec::parse("AABA'", 2).unwrap();
        let take = generate_form(&g, &r, &spec, &AtomicBool::new(false)).unwrap();
        let bar = 1440;
        let starts: Vec<Tick> = take.sections.iter().map(|p| p.start).collect();
        assert_eq!(starts, [0, 2 * bar, 4 * bar, 6 * bar], "seed {seed}");
        assert_eq!(take.score.length, 8 * bar, "seed {seed}");
        let notes_in = |from: Tick, to: Tick| -> Vec<(Tick, Tick, u8)> {
            take.score
                .notes
                .iter()
                .filter(|n| n.start >= from && n.start < to)
                .map(|n| (n.start - from, n.dur, n.pitch))
                .collect()
        };
        assert_eq!(notes_in(0, 2 * bar), notes_in(2 * bar, 4 * bar), "seed {seed}: A twice");
        let clipped = |v: Vec<(Tick, Tick, u8)>| -> Vec<(Tick, Tick, u8)> {
            v.into_iter().map(|(s, d, p)| (s, d.min(bar - s), p)).collect()
        };
        assert_eq!(clipped(notes_in(0, bar)), notes_in(6 * bar, 7 * bar), "seed {seed}: A' keeps A's first bar");
        assert!(take.score.notes.iter().all(|n| n.end() <= 8 * bar));
        let last = take.score.notes.iter().max_by_key(|n| n.start).expect("notes");
        assert_eq!(last.pitch % 12, 9, "seed {seed}: the tune ends on A, not {}", last.pitch);
        assert_eq!(take.records.len(), 3, "A, B and the new half of A' were generated");
    }
}

/// An open last section (`AB*`) runs until the model ends the tune, after the given sections;
/// the shipped chorale model draws such forms for about two takes in five, as the corpus has.
#[test]
fn an_open_last_section_ends_where_the_model_ends_and_the_chorale_model_draws_forms() {
    use cadenza::gen::{generate_form, FormSpec};
    let g = real_gen("tune");
    let bar = 1440;
    for seed in 0..6u64 {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(3, 4))];
        prompt.meta.keys = vec![(0, Key::new(1, 0, cadenza::score::Mode::Major))];
        let r = Request { seed, ..Request::new(prompt, Length::Tune) };
        let spec = FormSpec::parse("AB*", 2).unwrap();
        let take = generate_form(&g, &r, &spec, &AtomicBool::new(false)).unwrap();
        assert_eq!(take.sections.len(), 2);
        let b = &take.sections[1];
        assert_eq!(b.start, 2 * bar, "seed {seed}");
        assert!(b.end > b.start && b.end == take.score.length, "seed {seed}: B runs to the end of the tune");
        let last = take.score.notes.iter().max_by_key(|n| n.start).expect("notes");
        assert_eq!(last.pitch % 12, 2, "seed {seed}: the tune ends on the tonic D");
    }
    let chorale = concat!(env!("CARGO_MANIFEST_DIR"), "/models/chorale");
    if std::path::Path::new(chorale).join("model.safetensors").is_file() {
        let prior = Generator::load(chorale).unwrap().form_prior().cloned().expect("the chorale model draws forms");
        let formed = (0..2000u64).filter(|&s| prior.pick(s).is_some()).count();
        assert!((700..900).contains(&formed), "{formed} of 2000 takes drew a form; the corpus has 40%");
    }
}

/// The default model is the bundled folk LSTM, and an unprompted whole take from it opens as
/// the training tunes do: before its first bar line (the grammar's first id is a `Bar`, then a
/// pickup rest, `|:` or a note as the model likes), whole, and ended by the model.
#[test]
fn the_default_model_is_the_folk_lstm_and_its_takes_open_like_tunes() {
    assert_eq!(cadenza::model::DEFAULT_MODEL, "folk-lstm");
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/folk-lstm"));
    if !src.join("model.safetensors").is_file() {
        eprintln!("models/folk-lstm is not there yet: skipped");
        return;
    }
    assert_eq!(
        cadenza::model::find(cadenza::model::DEFAULT_MODEL).unwrap().canonicalize().unwrap(),
        src.canonicalize().unwrap()
    );
    let g = Generator::load(cadenza::model::DEFAULT_MODEL).unwrap();
    let vocab = cadenza::tokens::Vocab::from_json(&std::fs::read_to_string(src.join("vocab.json")).unwrap()).unwrap();
    let mut prompt = Score::new();
    prompt.meta.style = Some("irish".into());
    let mut req = Request::new(prompt, Length::Tune);
    req.sampling.end_after_bars = 8;
    req.sampling.end_bias_per_bar = 5.0;
    let mut opened_with = std::collections::BTreeSet::new();
    for seed in 1..=6 {
        req.seed = seed;
        let take = g.generate(&req).unwrap();
        let first = take.record.ids.first().copied().expect("a take has ids");
        opened_with.insert(vocab.token(first).unwrap().to_string());
        assert!(!take.notes.is_empty());
    }
    assert_eq!(
        opened_with.into_iter().collect::<Vec<_>>(),
        vec!["Bar".to_string()],
        "the model draws the first bar line"
    );
    // A take of a set length from nothing (a loop's cycle) starts on its downbeat, never with
    // the silent lead bar a pickup is learnt as.
    let mut bars = Request::new(Score::new(), Length::Bars(4));
    bars.overrides.style = Some("irish".into());
    for seed in 1..=6 {
        bars.seed = seed;
        let take = g.generate(&bars).unwrap();
        assert_eq!(take.notes.first().map(|n| n.start), Some(0), "seed {seed}");
    }
}

/// `cadenza generate` with neither a form nor a length: a model with a form prior draws one per
/// take from the take's seed (so some takes have a form and some none), records it, and each
/// take's file carries the seed that makes it again alone.
#[test]
fn generate_draws_forms_from_the_models_prior_and_each_take_replays_alone() {
    let src = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/folk-lstm"));
    if !src.join("model.safetensors").is_file() {
        eprintln!("models/folk-lstm is not there yet: skipped");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "vocab.json", "model.safetensors", "header_prior.json"] {
        std::fs::copy(src.join(f), model.join(f)).unwrap();
    }
    // Short takes: a strong end bias after two bars, forms of one-bar sections.
    let config = r#"{ "whole_bars": true, "end_after_bars": 2, "end_bias_per_bar": 5.0,
        "forms": [ { "form": "AB*", "part_bars": 1, "weight": 1 }, { "weight": 1 } ] }"#;
    std::fs::write(model.join("generation_config.json"), config).unwrap();
    let prior = Generator::load(model.to_str().unwrap()).unwrap().form_prior().cloned().unwrap();
    let generate = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cadenza"))
            .args(["generate", "--model", model.to_str().unwrap(), "--style", "irish"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let dir = tmp.path().join("takes");
    generate(&["-n", "6", "--seed", "1", "-o", dir.to_str().unwrap()]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("takes.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    for (i, line) in lines.iter().enumerate() {
        let seed = 1 + i as u64;
        assert_eq!(line["seed"], seed);
        let drawn = prior.pick(seed).map(|_| "AB*");
        assert_eq!(line["form"].as_str(), drawn, "take {}: {line}", i + 1);
        let abc = std::fs::read_to_string(dir.join(format!("take-{:02}.abc", i + 1))).unwrap();
        assert!(abc.contains(&format!("%%seed {seed}\n")), "take {}:\n{abc}", i + 1);
    }
    assert!(lines.iter().any(|l| l["form"].is_null()) && lines.iter().any(|l| !l["form"].is_null()));
    // A take with a form, and one without (made in a batch with the other formless takes), each
    // made again alone from its seed, is the same music.
    let notes = |p: &std::path::Path| cadenza::dsl::parse(&std::fs::read_to_string(p).unwrap()).unwrap().notes;
    for with_form in [true, false] {
        let (i, _) = lines.iter().enumerate().find(|(_, l)| l["form"].is_null() != with_form).unwrap();
        let again = tmp.path().join(format!("again-{with_form}.abc"));
        generate(&["--seed", &(1 + i).to_string(), "-o", again.to_str().unwrap()]);
        assert_eq!(notes(&again), notes(&dir.join(format!("take-{:02}.abc", i + 1))), "take {}", i + 1);
    }
}

/// `end_after_bars`: a whole tune past that many bars is pushed to end (its end id gets
/// `end_bias_per_bar` more nats per bar); tunes with a length asked for are not touched.
#[test]
fn the_end_bias_ends_whole_tunes_soon_after_its_bar_count() {
    let g = real_gen("tune");
    let bar = 1440;
    let length_of = |end_after_bars: u32, length: Length, seed: u64| -> Tick {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(3, 4))];
        let mut r = Request { seed, ..Request::new(prompt, length) };
        r.sampling.end_after_bars = end_after_bars;
        r.sampling.end_bias_per_bar = 5.0;
        g.generate(&r).unwrap().score.length
    };
    for seed in 0..6 {
        // A uniform model ends a tune on its own only by chance, one id in ~300 (and not
        // before its first note, which may come after bars of rests).
        let pushed = length_of(2, Length::Tune, seed);
        assert!(pushed <= 6 * bar, "seed {seed}: {} bars", pushed as f64 / bar as f64);
        assert_eq!(length_of(2, Length::Bars(8), seed), 8 * bar, "seed {seed}: a length asked for stands");
    }
    let free: Tick = (0..6).map(|seed| length_of(0, Length::Tune, seed)).sum();
    assert!(free > 6 * 5 * bar, "without the bias the uniform model runs on ({} bars in all)", free / bar);
    let mut bad = Request::new(Score::new(), Length::Tune);
    bad.sampling.end_bias_per_bar = f64::NAN;
    assert!(g.generate(&bad).is_err(), "a NaN bias is refused");
}

/// `length_prior`: each whole take draws the bar count it is pushed to end after from its
/// style's tunes (`header_prior.json`), records the draw, and leaves a fixed `end_after_bars`
/// and a length asked for as they are.
#[test]
fn the_length_prior_ends_each_take_near_a_length_of_its_styles_tunes() {
    let bar = 1440;
    let tune = |style: &str, bars: usize| {
        let mut s = cadenza::dsl::parse(&format!("X:1\nM:3/4\nL:1/4\nK:D\n{}|]\n", "A B c|".repeat(bars))).unwrap();
        s.meta.style = Some(style.into());
        s
    };
    let enc = cadenza::tokens::build("tune", &CondSpec::default(), &[]).unwrap();
    // Every Irish tune three bars long, every Scottish one forty.
    let prior =
        cadenza::gen::HeaderPrior::build(enc.as_ref(), &[tune("irish", 3), tune("irish", 3), tune("scottish", 40)]);
    let g = real_gen("tune").with_header_prior(prior);
    let take = |style: &str, seed: u64, fixed: u32, length: Length| {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(3, 4))];
        prompt.meta.style = Some(style.into());
        let mut r = Request { seed, ..Request::new(prompt, length) };
        r.sampling.length_prior = true;
        r.sampling.end_after_bars = fixed;
        r.sampling.end_bias_per_bar = 5.0;
        g.generate(&r).unwrap()
    };
    let mut scottish = 0;
    for seed in 0..6 {
        let t = take("irish", seed, 0, Length::Tune);
        assert_eq!(t.record.sampled.bars, Some(3), "seed {seed}: drawn from the Irish lengths");
        assert!(t.score.length <= 7 * bar, "seed {seed}: {} bars", t.score.length as f64 / bar as f64);
        let s = take("scottish", seed, 0, Length::Tune);
        assert_eq!(s.record.sampled.bars, Some(40));
        scottish += s.score.length;
        // A fixed bar count wins over the prior; a length asked for stands.
        assert_eq!(take("irish", seed, 12, Length::Tune).record.sampled.bars, None);
        let asked = take("irish", seed, 0, Length::Bars(8));
        assert_eq!((asked.record.sampled.bars, asked.score.length), (None, 8 * bar));
    }
    // The uniform model rarely ends by itself before the push; Scottish takes run longer.
    assert!(scottish > 6 * 8 * bar, "Scottish takes: {} bars in all", scottish / bar);
}

/// Harmonising (`gen::harmonize`): the melody comes back as the soprano note for note, the
/// other voices are sampled (one line each), for exactly the melody's bars; a one-line model is
/// refused with a reason.
#[test]
fn harmonizing_keeps_the_melody_as_the_soprano() {
    use cadenza::tokens::remi::{Remi, RemiConfig};
    let enc = Remi::new(RemiConfig::chorale(CondSpec::default())).unwrap();
    let vocab = enc.vocab().len();
    let model = Leaning::uniform(vocab);
    let g = Generator::from_parts("choir", Arc::new(model), Arc::new(enc), "0000");
    let melody = cadenza::dsl::parse("X:1\nM:3/4\nL:1/4\nK:D\nA|d c B|A2 F|G F E|D2|]\n").unwrap();
    for seed in 0..4 {
        let base = Request { seed, ..Request::new(Score::new(), Length::Tune) };
        let take = cadenza::gen::harmonize(&g, &melody, &base, &AtomicBool::new(false)).unwrap();
        assert_eq!(take.record.skipped, 0);
        let aligned = melody.align_pickup();
        let mut want: Vec<(Tick, Tick, u8)> = aligned.notes.iter().map(|n| (n.start, n.dur, n.pitch)).collect();
        want.sort_unstable();
        let mut soprano: Vec<(Tick, Tick, u8)> =
            take.score.notes.iter().filter(|n| n.voice == 0).map(|n| (n.start, n.dur, n.pitch)).collect();
        soprano.sort_unstable();
        assert_eq!(soprano, want, "seed {seed}");
        assert!(take.score.notes.iter().any(|n| n.voice != 0), "seed {seed}: no other voice");
        assert_eq!(take.score.length, 5 * 1440, "seed {seed}: the melody's five bars");
        for v in 1..4u8 {
            let line: Vec<&Note> = take.score.notes.iter().filter(|n| n.voice == v).collect();
            assert!(sounding_at_most(&line.iter().map(|n| **n).collect::<Vec<_>>(), 1), "voice {v} is one line");
        }
    }
    let e = cadenza::gen::harmonize(
        &real_gen("tune"),
        &melody,
        &Request::new(Score::new(), Length::Tune),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert!(e.to_string().contains("several voices"), "{e}");
}

// ---------------------------------------------------------------- note lengths, empty takes, the last bar

/// Uniform but for a few ids raised by a fixed number of nats: a model that leans one way
/// (none raised: every token equally likely).
struct Leaning {
    vocab: usize,
    raised: Vec<(u32, f32)>,
    device: Device,
    context: usize,
    /// Raise only in the rows that were fed this id (a style label), uniform in the others:
    /// the simplest model whose output depends on its style. `None`: in every row.
    only_after: Option<u32>,
}

impl Leaning {
    fn uniform(vocab: usize) -> Self {
        Leaning { vocab, raised: Vec::new(), device: Device::Cpu, context: usize::MAX, only_after: None }
    }
}

impl LanguageModel for Leaning {
    fn vocab_size(&self) -> usize {
        self.vocab
    }
    fn context(&self) -> usize {
        self.context
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn new_state(&self, batch: usize) -> Result<Box<dyn State>, ModelError> {
        Ok(Box::new(BigramState { len: 0, seen: vec![false; batch] }))
    }
    fn forward(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (b, t) = ids.dims2()?;
        let st =
            state.as_any_mut().downcast_mut::<BigramState>().ok_or(ModelError::ForeignState { model: "leaning" })?;
        st.len += t;
        if st.len > self.context {
            return Err(ModelError::ContextFull { context: self.context, needed: st.len });
        }
        let mut row = vec![0f32; self.vocab];
        for &(id, nats) in &self.raised {
            row[id as usize] = nats;
        }
        let Some(label) = self.only_after else {
            let rows: Vec<f32> = (0..b).flat_map(|_| row.iter().copied()).collect();
            return Ok(Tensor::from_vec(rows, (b, self.vocab), &self.device)?);
        };
        assert_eq!(st.seen.len(), b, "every forward pass feeds every row the state holds");
        let uniform = vec![0f32; self.vocab];
        let mut rows = Vec::with_capacity(b * self.vocab);
        for (r, fed) in ids.to_vec2::<u32>()?.iter().enumerate() {
            st.seen[r] |= fed.contains(&label);
            rows.extend_from_slice(if st.seen[r] { &row } else { &uniform });
        }
        Ok(Tensor::from_vec(rows, (b, self.vocab), &self.device)?)
    }
    fn forward_all(&self, ids: &Tensor, state: &mut dyn State) -> Result<Tensor, ModelError> {
        let (b, t) = ids.dims2()?;
        Ok(self.forward(ids, state)?.unsqueeze(1)?.broadcast_as((b, t, self.vocab))?.contiguous()?)
    }
}

fn leaning_gen(encoding: &str, raised: &[(&str, f32)]) -> (Generator, Vec<String>) {
    let enc = cadenza::tokens::build(encoding, &CondSpec::default(), &[]).unwrap();
    let names: Vec<String> = (0..enc.vocab().len()).map(|i| enc.vocab().token(i as u32).unwrap().to_string()).collect();
    let raised = raised
        .iter()
        .map(|(tok, nats)| (names.iter().position(|n| n == tok).unwrap_or_else(|| panic!("no {tok}")) as u32, *nats))
        .collect();
    let model = Leaning { raised, ..Leaning::uniform(names.len()) };
    (Generator::from_parts(encoding, Arc::new(model), Arc::from(enc), "0000"), names)
}

/// `length_temperature` / `length_top_p` act on the steps that choose a note's length and on
/// no others: greedy lengths under a uniform model are all one length while the pitches stay
/// drawn, and the take's file records the settings so it replays.
#[test]
fn length_settings_draw_only_the_lengths() {
    for encoding in ["remi", "tune"] {
        let g = real_gen(encoding);
        let take = |length_temperature: Option<f64>| {
            let mut prompt = Score::new();
            prompt.meta.meters = vec![(0, Meter::new(4, 4))];
            let mut r = Request { seed: 3, ..Request::new(prompt, Length::Bars(8)) };
            r.sampling.length_temperature = length_temperature;
            g.generate(&r).unwrap()
        };
        let distinct = |notes: &[Note], f: fn(&Note) -> u64| {
            let mut v: Vec<u64> = notes.iter().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v.len()
        };
        let free = take(None);
        assert!(
            distinct(&free.notes, |n| n.dur) > 3,
            "{encoding}: a uniform model draws many lengths: {:?}",
            free.notes
        );
        let greedy = take(Some(0.0));
        assert_eq!(distinct(&greedy.notes, |n| n.dur), 1, "{encoding}: {:?}", greedy.notes);
        assert!(distinct(&greedy.notes, |n| n.pitch as u64) > 3, "{encoding}: pitches are still drawn");
        let abc = cadenza::dsl::print::print(&greedy.score);
        assert!(abc.contains("%%length_temperature 0\n"), "{abc}");
        let again = cadenza::dsl::parse(&abc).unwrap();
        assert_eq!(again.meta.gen.length_temperature, Some(0.0));
    }
    let mut bad = Request::new(Score::new(), Length::Bars(1));
    bad.sampling.length_top_p = Some(0.0);
    assert!(real_gen("remi").generate(&bad).unwrap_err().to_string().contains("length top-p"));
    bad.sampling = Sampling { length_temperature: Some(f64::INFINITY), ..Sampling::default() };
    assert!(real_gen("remi").generate(&bad).unwrap_err().to_string().contains("length temperature"));
}

/// A whole tune is never empty: a model that would end at once (its end id 30 nats above the
/// rest) still writes a note first. A length asked for in notes is that many notes.
#[test]
fn a_whole_tune_has_a_note_before_its_end_and_notes_asked_for_all_come() {
    for encoding in ["remi", "tune"] {
        let (g, _) = leaning_gen(encoding, &[("<eos>", 30.0)]);
        for seed in 0..4 {
            let take = g.generate(&Request { seed, ..Request::new(Score::new(), Length::Tune) }).unwrap();
            assert!(!take.notes.is_empty(), "{encoding} seed {seed}: {:?}", take.record.ids);
            assert_eq!(take.record.ids.last(), Some(&cadenza::tokens::EOS), "{encoding}: then it ends");
            let take = g.generate(&Request { seed, ..Request::new(Score::new(), Length::Notes(12)) }).unwrap();
            assert_eq!(take.notes.len(), 12, "{encoding} seed {seed}: {:?}", take.record.ids);
        }
    }
}

/// A whole tune ends with the bar its last note ends in: a `Bar` id just before the end id
/// (REMI) does not add an empty bar.
#[test]
fn a_whole_tune_ends_with_the_bar_of_its_last_note() {
    let (g, names) = leaning_gen("remi", &[("Bar", 3.0)]);
    let bar_id = names.iter().position(|n| n == "Bar").unwrap() as u32;
    let mut closed_by_bar = 0;
    for seed in 0..24 {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(4, 4))];
        let mut r = Request { seed, ..Request::new(prompt, Length::Tune) };
        r.sampling.end_after_bars = 1;
        r.sampling.end_bias_per_bar = 5.0;
        let take = g.generate(&r).unwrap();
        let ids = &take.record.ids;
        if ids.len() >= 2 && ids[ids.len() - 2] == bar_id {
            closed_by_bar += 1;
        }
        let last = take.score.notes.iter().map(Note::end).max().unwrap();
        let length = take.score.length;
        assert!(
            length >= last && take.score.bar_line_at_or_after(last).is_none(),
            "seed {seed}: {length} after {last}"
        );
    }
    assert!(closed_by_bar > 0, "some take must end `Bar <eos>` for the test to mean anything");
}

/// `end_on_tonic`: a whole tune in a known key ends on its tonic, on the last note (`tune`) or
/// with its last chord (REMI; one line here, so that chord is one note); a bar count leaves the
/// end to itself.
#[test]
fn end_on_tonic_holds_the_end_for_the_tonic() {
    let key = Key::new(2, 0, cadenza::score::Mode::Major);
    let tonic = key.tonic_pc();
    for encoding in ["remi", "tune"] {
        // The end id likely wherever it is allowed: without the rule takes end after a note.
        let (g, _) = leaning_gen(encoding, &[("<eos>", 6.0)]);
        let mut free_off_tonic = 0;
        for seed in 0..8 {
            let mut prompt = Score::new();
            prompt.meta.keys = vec![(0, key.clone())];
            prompt.meta.meters = vec![(0, Meter::new(4, 4))];
            let mut r = Request { seed, ..Request::new(prompt, Length::Tune) };
            // One line: a uniform model's chords of long notes would rarely let the bass move.
            r.constraints.max_polyphony = Some(1);
            let last_sounding = |notes: &[Note]| {
                let at = notes.iter().map(|n| n.start).max().unwrap();
                notes.iter().filter(|n| n.start <= at && n.end() > at).map(|n| n.pitch).min().unwrap()
            };
            let free = g.generate(&r).unwrap();
            free_off_tonic += usize::from(last_sounding(&free.notes) % 12 != tonic);
            r.constraints.end_on_tonic = true;
            let held = g.generate(&r).unwrap();
            assert_eq!(
                held.record.ids.last(),
                Some(&cadenza::tokens::EOS),
                "{encoding} seed {seed}: it ends: {} ids, {} notes, {:?}",
                held.record.ids.len(),
                held.notes.len(),
                &held.notes[held.notes.len().saturating_sub(6)..]
            );
            assert_eq!(last_sounding(&held.notes) % 12, tonic, "{encoding} seed {seed}: {:?}", held.notes);
            let abc = cadenza::dsl::print::print(&held.score);
            assert!(abc.contains("%%end_on_tonic\n"), "recorded: {abc}");
            // A bar count decides the end itself.
            r.length = Length::Bars(2);
            assert_eq!(g.generate(&r).unwrap().score.length, 2 * Meter::new(4, 4).bar_ticks());
        }
        assert!(free_off_tonic > 0, "{encoding}: without the rule some takes end elsewhere");
    }
}

/// `end_on_final`: a whole tune ends on one of the degrees its style's training tunes end on
/// (`header_prior.json`): here the Chinese tunes end on the fifth and sixth of D, the Irish
/// ones on D; `end_on_tonic` wins when both are set.
#[test]
fn end_on_final_ends_on_a_degree_the_styles_tunes_end_on() {
    let tune = |style: &str, body: &str| {
        let mut s = cadenza::dsl::parse(&format!("X:1\nM:2/4\nL:1/8\nK:D\n{body}|]\n")).unwrap();
        s.meta.style = Some(style.into());
        s
    };
    let (plain, _) = leaning_gen("tune", &[("<eos>", 6.0)]);
    let tunes = [
        tune("chinese", "de fe|d2 A2"),
        tune("chinese", "de fe|d2 B2"),
        tune("chinese", "de fe|d2 A2"),
        tune("irish", "de fe|A2 d2"),
    ];
    let prior = cadenza::gen::HeaderPrior::build(plain.encoding().as_ref(), &tunes);
    let g = plain.with_header_prior(prior);
    let last_pc = |notes: &[Note]| notes.iter().max_by_key(|n| n.start).map(|n| n.pitch % 12).unwrap();
    let (a, b, d) = (9, 11, 2);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..12 {
        let mut prompt = Score::new();
        prompt.meta.keys = vec![(0, Key::new(1, 0, cadenza::score::Mode::Major))];
        prompt.meta.meters = vec![(0, Meter::new(2, 4))];
        prompt.meta.style = Some("chinese".into());
        let mut r = Request { seed, ..Request::new(prompt, Length::Tune) };
        r.constraints.end_on_final = true;
        let take = g.generate(&r).unwrap();
        assert_eq!(take.record.ids.last(), Some(&cadenza::tokens::EOS), "seed {seed}: it ends");
        let pc = last_pc(&take.notes);
        assert!(pc == a || pc == b, "seed {seed}: a Chinese take ends on A or B, not {pc}: {:?}", take.notes);
        seen.insert(pc);
        assert!(cadenza::dsl::print::print(&take.score).contains("%%end_on_final\n"), "recorded");
        r.constraints.end_on_tonic = true;
        assert_eq!(last_pc(&g.generate(&r).unwrap().notes), d, "seed {seed}: the tonic wins");
        r.constraints.end_on_tonic = false;
        r.prompt.meta.style = Some("irish".into());
        assert_eq!(last_pc(&g.generate(&r).unwrap().notes), d, "seed {seed}: Irish tunes end on D");
    }
    assert_eq!(seen, [a, b].into(), "the model chooses among the finals");
    // The end comes less readily after a rarer final: with B one tune's final in ten (A nine),
    // fewer takes end on B than when the two are even.
    let ends_on_b = |a_tunes: usize, b_tunes: usize| {
        let mut tunes: Vec<Score> = (0..a_tunes).map(|_| tune("chinese", "de fe|d2 A2")).collect();
        tunes.extend((0..b_tunes).map(|_| tune("chinese", "de fe|d2 B2")));
        let (plain, _) = leaning_gen("tune", &[("<eos>", 2.0)]);
        let prior = cadenza::gen::HeaderPrior::build(plain.encoding().as_ref(), &tunes);
        let g = plain.with_header_prior(prior);
        let mut prompt = Score::new();
        prompt.meta.keys = vec![(0, Key::new(1, 0, cadenza::score::Mode::Major))];
        prompt.meta.meters = vec![(0, Meter::new(2, 4))];
        prompt.meta.style = Some("chinese".into());
        let mut r = Request { seed: 100, ..Request::new(prompt, Length::Tune) };
        r.constraints.end_on_final = true;
        g.generate_batch(&r, 40).unwrap().iter().filter(|t| last_pc(&t.notes) == b).count()
    };
    let (even, rare) = (ends_on_b(5, 5), ends_on_b(9, 1));
    assert!(rare < even, "B endings: {rare} of 40 when B is 1 final in 10, {even} when 1 in 2");
}

/// Regression: a REMI whole tune may change meter mid-tune (`Bar meter:7/8`); the tracker
/// counted on in the old bars, so one line under `max_polyphony 1` overlapped itself.
#[test]
fn meter_changes_inside_a_whole_tune_keep_the_rules() {
    let names = leaning_gen("remi", &[]).1;
    let raised: Vec<(&str, f32)> =
        names.iter().filter(|n| n.starts_with("meter:")).map(|n| (n.as_str(), 2.0)).collect();
    let (g, _) = leaning_gen("remi", &raised);
    let mut changed = 0;
    for seed in 0..6 {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(4, 4))];
        let mut r = Request { seed, ..Request::new(prompt, Length::Tune) };
        r.constraints.max_polyphony = Some(1);
        let take = g.generate(&r).unwrap();
        changed += take.record.ids.iter().filter(|&&id| names[id as usize].starts_with("meter:")).count();
        let mut notes = take.notes.clone();
        notes.sort_unstable();
        for w in notes.windows(2) {
            assert!(w[0].end() <= w[1].start, "seed {seed}: {:?} overlaps {:?}", w[0], w[1]);
        }
    }
    assert!(changed > 0, "some take must change meter for the test to mean anything");
}

// ---------------------------------------------------------------- classifier-free guidance

/// Guidance draws from `unset + g × (styled − unset)`: a pitch the styled rows raise by 1 nat
/// is raised by g nats, so it comes far more often; the recorded likelihood stays the model's
/// own; with no style set guidance changes nothing; the take's file carries `%%guidance`.
#[test]
fn guidance_leans_pitches_into_the_style_and_records_the_models_likelihood() {
    let enc = cadenza::tokens::build("tune", &CondSpec::default(), &[]).unwrap();
    let vocab = enc.vocab().len();
    let id_of = |tok: &str| (0..vocab as u32).find(|&i| enc.vocab().token(i) == Some(tok)).unwrap();
    let (label, pitch) = (id_of("style:irish"), id_of("Pitch_67"));
    let model = Leaning { raised: vec![(pitch, 1.0)], only_after: Some(label), ..Leaning::uniform(vocab) };
    let g = Generator::from_parts("style", Arc::new(model), Arc::from(enc), "0000");
    let run = |style: Option<&str>, guidance: f64| {
        let mut prompt = Score::new();
        prompt.meta.meters = vec![(0, Meter::new(4, 4))];
        prompt.meta.keys = vec![(0, Key::new(4, 0, cadenza::score::Mode::Major))];
        let mut r = Request { seed: 9, ..Request::new(prompt, Length::Bars(16)) };
        r.overrides.style = style.map(String::from);
        r.sampling.guidance = guidance;
        g.generate_batch(&r, 4).unwrap()
    };
    let share = |takes: &[cadenza::gen::Take]| {
        let notes: Vec<&Note> = takes.iter().flat_map(|t| &t.notes).collect();
        notes.iter().filter(|n| n.pitch == 67).count() as f64 / notes.len() as f64
    };
    let plain = run(Some("irish"), 1.0);
    let guided = run(Some("irish"), 4.0);
    // Among ~64 pitches, +1 nat gives G about 4% of the notes, +4 nats about 46%.
    assert!(share(&plain) < 0.15, "unguided: {}", share(&plain));
    assert!(share(&guided) > 0.3, "guided: {}", share(&guided));
    // The model's own likelihood: a G costs what the styled rows give it, not the guided draw.
    let norm = ((vocab - 1) as f64 + 1f64.exp()).ln();
    for t in &guided {
        let ids = &t.record.ids;
        let own: f64 = ids.iter().map(|&i| if i == pitch { 1.0 } else { 0.0 } - norm).sum();
        assert!(
            (t.record.log_likelihood - own).abs() < 1e-6 * ids.len() as f64,
            "{} vs {own}",
            t.record.log_likelihood
        );
    }
    let abc = cadenza::dsl::print::print(&guided[0].score);
    assert!(abc.contains("%%guidance 4\n"), "{abc}");
    assert_eq!(cadenza::dsl::parse(&abc).unwrap().meta.gen.guidance, Some(4.0));
    assert!(!cadenza::dsl::print::print(&plain[0].score).contains("%%guidance"));
    // A same-pitch bias is written too (a take's file alone replays it), and read back.
    let mut biased = Request { seed: 2, ..Request::new(Score::new(), Length::Bars(2)) };
    biased.sampling.same_pitch_bias = -0.7;
    let abc = cadenza::dsl::print::print(&g.generate(&biased).unwrap().score);
    assert!(abc.contains("%%same_pitch_bias -0.7\n"), "{abc}");
    assert_eq!(cadenza::dsl::parse(&abc).unwrap().meta.gen.same_pitch_bias, Some(-0.7));
    // No style to lean on: the same takes as without guidance.
    let ids = |takes: &[cadenza::gen::Take]| takes.iter().map(|t| t.record.ids.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&run(None, 4.0)), ids(&run(None, 1.0)));
    let mut bad = Request::new(Score::new(), Length::Bars(1));
    bad.sampling.guidance = 11.0;
    assert!(g.generate(&bad).unwrap_err().to_string().contains("guidance must be within"));
    assert!(cadenza::dsl::parse("X:1\n%%guidance -1\nK:C\nC|]\n").is_err());
}

// ---------------------------------------------------------------- bar recall

/// Bar recall: once a bar opens like an earlier bar of the take, the id that plays that bar
/// again gets the bias. A uniform model over five pitches and every length almost never writes
/// the same bar twice by chance; with the bias most bars that open like an earlier one finish
/// like it. With a spread each take draws its own bias, so takes differ in how much they bring
/// back. The take's file carries `%%recall_bias` and `%%recall_spread`, and out-of-range values
/// are refused.
#[test]
fn recall_bias_plays_earlier_bars_again() {
    let enc = cadenza::tokens::build("tune", &CondSpec::default(), &[]).unwrap();
    let vocab = enc.vocab().len();
    let g = Generator::from_parts("recall", Arc::new(Leaning::uniform(vocab)), Arc::from(enc), "0000");
    // Per take (seeds 0..takes), the share of its bars (from its second on) whose notes, placed
    // in the bar, equal an earlier bar's.
    let repeated_shares = |bias: f64, spread: f64, takes: u64| -> Vec<f64> {
        (0..takes)
            .map(|seed| {
                let mut prompt = Score::new();
                prompt.meta.meters = vec![(0, Meter::new(4, 4))];
                let mut r = Request { seed, ..Request::new(prompt, Length::Bars(16)) };
                r.constraints.range = Some((60, 64));
                r.constraints.whole_bars = true;
                r.sampling.recall_bias = bias;
                r.sampling.recall_spread = spread;
                let take = g.generate(&r).unwrap();
                let bar = Meter::new(4, 4).bar_ticks();
                let mut by_bar: BTreeMap<Tick, Vec<(Tick, u8, Tick)>> = BTreeMap::new();
                for n in &take.notes {
                    by_bar.entry(n.start / bar).or_default().push((n.start % bar, n.pitch, n.dur));
                }
                let contents: Vec<&Vec<(Tick, u8, Tick)>> = by_bar.values().collect();
                let repeated = (1..contents.len()).filter(|&i| contents[..i].contains(&contents[i])).count();
                repeated as f64 / (contents.len() - 1).max(1) as f64
            })
            .collect()
    };
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (plain, recalled) = (mean(&repeated_shares(0.0, 0.0, 4)), mean(&repeated_shares(20.0, 0.0, 4)));
    assert!(plain < 0.1, "without recall {plain}");
    assert!(recalled > 0.3 && recalled > 3.0 * plain, "with recall {recalled}, without {plain}");
    // A spread of 1 at 4 nats: each take's bias from 0 to 8, so the least and the most
    // repetitive takes lie further apart than with 4 nats for every take.
    let range = |v: Vec<f64>| v.iter().cloned().fold(f64::MIN, f64::max) - v.iter().cloned().fold(f64::MAX, f64::min);
    let (fixed, spread) = (range(repeated_shares(4.0, 0.0, 12)), range(repeated_shares(4.0, 1.0, 12)));
    assert!(spread > fixed, "shares' range with a spread {spread}, without {fixed}");
    let mut r = Request { seed: 3, ..Request::new(Score::new(), Length::Bars(2)) };
    r.sampling.recall_bias = 2.5;
    r.sampling.recall_spread = 0.5;
    let abc = cadenza::dsl::print::print(&g.generate(&r).unwrap().score);
    assert!(abc.contains("%%recall_bias 2.5\n") && abc.contains("%%recall_spread 0.5\n"), "{abc}");
    let replayed = cadenza::dsl::parse(&abc).unwrap().meta.gen;
    assert_eq!((replayed.recall_bias, replayed.recall_spread), (Some(2.5), Some(0.5)));
    r.sampling.recall_spread = 1.5;
    assert!(g.generate(&r).unwrap_err().to_string().contains("recall spread must be within 0..=1"));
    r.sampling.recall_bias = 21.0;
    assert!(g.generate(&r).unwrap_err().to_string().contains("recall bias must be within"));
    assert!(cadenza::dsl::parse("X:1\n%%recall_bias 30\nK:C\nC|]\n").is_err());
    let e = cadenza::dsl::parse("X:1\n%%recall_spread 2\nK:C\nC|]\n").unwrap_err().to_string();
    assert!(e.contains("a spread from 0 to 1"), "{e}");
}
