//! The music side of a session: current model and style, generation, files, ports, playing, loops.

use super::loops::Loops;
use super::Options;
use crate::gen::{Generator, Length, Request};
use crate::play::{At, FakeClock, PlayOpts, Producer, Transport};
use crate::score::Score;
use crate::sink::out::MidiOut;
use rhai::Map;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::sandbox::{Access, SandboxError};
use super::takes::{TakeEntry, TakeLog};
use crate::eval::copies::{self, CopyIndex};
use crate::gen::TakeRecord;
use serde::{Deserialize, Serialize};

/// Why a call on the stage failed, named by the script function the user called; the Rhai
/// layer shows it as the message of the failing call.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A model that did not load (kept as its message: one load is shared by every caller).
    #[error("model `{name}` did not load: {reason}")]
    ModelLoad { name: String, reason: String },
    #[error("cancelled")]
    Cancelled,
    #[error("abc: {0}")]
    Abc(crate::dsl::DslError),
    #[error("{call}: {source}")]
    Sandbox { call: &'static str, source: SandboxError },
    #[error("load: {0}")]
    Read(crate::sink::files::ReadError),
    #[error("save: {0}")]
    Write(String),
    #[error("save {path}: unknown file type `.{ext}` (use .mid or .abc)")]
    SaveType { path: String, ext: String },
    #[error("style `{name}` is unknown to model `{model}`; known: {known}")]
    UnknownStyle { name: String, model: String, known: String },
    #[error("gen: {0}")]
    Options(&'static str),
    #[error("gen: {what} `{value}`: expected {} at character {}", .field.expected, .field.at + 1)]
    Field { what: &'static str, value: String, field: crate::dsl::fields::FieldError },
    #[error("gen: the model returned no take")]
    NoTake,
    #[error("{call}: {source}")]
    Gen { call: &'static str, source: crate::gen::GenError },
    #[error("{call}: {source}")]
    Play { call: &'static str, source: crate::play::PlayError },
    #[error(transparent)]
    Out(#[from] crate::sink::out::OutError),
    #[error("the session is shutting down")]
    ShuttingDown,
    #[error("{0}: MIDI is off in this session (--no-midi)")]
    NoMidi(&'static str),
    #[error("listen: virtual ports need ALSA or JACK; name an input port")]
    NoVirtualPorts,
    #[error("heard: nothing is listening; call listen(\"port\") first")]
    NotListening,
    #[error("follow_clock: latency {0} ms is not between 0 and 1000")]
    Latency(f64),
    #[error("duet: {0}")]
    Duet(String),
    #[error("take {n} is not in the history ({})", match range { Some((a, b)) => format!("takes {a}..={b} are"), None => "no takes yet".to_string() })]
    NoSuchTake { n: u64, range: Option<(u64, u64)> },
    #[error("replay of take {n} differs from the recorded notes: model `{model}` is not the one that made it (weights {hash}...)")]
    ReplayDiffers { n: u64, model: String, hash: String },
}

impl StageError {
    /// Wraps a generation error as the failure of script call `call`.
    fn gen(call: &'static str) -> impl Fn(crate::gen::GenError) -> StageError {
        move |source| StageError::Gen { call, source }
    }

    /// Wraps a play error as the failure of script call `call`.
    fn play(call: &'static str) -> impl Fn(crate::play::PlayError) -> StageError {
        move |source| StageError::Play { call, source }
    }
}

/// Most phrases one `duet` makes.
pub const MAX_DUET_TURNS: u32 = 64;
/// Most bars of one phrase of a `duet`.
pub const MAX_DUET_BARS: u32 = 16;

/// `s` as one voice named `name` on MIDI channel `channel` (for joining a duet's phrases).
fn voiced(s: &Score, name: &str, channel: u8) -> Score {
    let mut out = s.clone();
    let program = s.voices.first().map_or(0, |v| v.program);
    out.voices = vec![crate::score::Voice { name: name.to_string(), channel, program }];
    for n in &mut out.notes {
        n.voice = 0;
        n.channel = channel;
    }
    out
}

/// The lowercase extension of `path` (empty when none).
fn extension(path: &str) -> String {
    std::path::Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase()
}

/// The `gen` options a script passed (absent fields take the session's defaults).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenOpts {
    pub bars: Option<u32>,
    pub notes: Option<u32>,
    pub tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_k: Option<u32>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub style: Option<String>,
    pub composer: Option<String>,
    pub instrument: Option<String>,
    pub key: Option<String>,
    pub meter: Option<String>,
    pub range: Option<(u8, u8)>,
    /// `scale: "D dorian"` / `[0, 2, 4, 7, 9]`: allowed pitch classes.
    pub pitch_classes: Option<Vec<u8>>,
    /// Keep to the key; `None` = yes when `key` is given, else as the prompt's `%%scale` says.
    pub in_key: Option<bool>,
    /// With `in_key`: only the key's pentatonic scale (`scale: "key pentatonic"`).
    pub pentatonic: Option<bool>,
    pub max_polyphony: Option<u32>,
    pub whole_bars: Option<bool>,
    /// `mono_voices: true`: one note at a time in each voice.
    pub mono_voices: Option<bool>,
    /// `no_parallels: true`: no parallel fifths or octaves between voices.
    pub no_parallels: Option<bool>,
    /// `end_on_tonic: true`: a whole tune ends on its key's tonic.
    pub end_on_tonic: Option<bool>,
    /// `end_on_final: true`: a whole tune ends on a degree its style's tunes end on.
    pub end_on_final: Option<bool>,
    pub model: Option<String>,
    pub repetition_penalty: Option<f64>,
    /// Added to the logit of a note on the previous note's pitch, in nats (`gen::Sampling`).
    pub same_pitch_bias: Option<f64>,
    /// Added to each id that would play an earlier bar again (`gen::Sampling::recall_bias`).
    pub recall_bias: Option<f64>,
    /// How much the recall bias varies from take to take (`gen::Sampling::recall_spread`).
    pub recall_spread: Option<f64>,
    /// Temperature and top-p for note lengths alone (`gen::Sampling::length_temperature`).
    pub length_temperature: Option<f64>,
    pub length_top_p: Option<f64>,
    /// Classifier-free guidance on the labels (`gen::Sampling::guidance`).
    pub guidance: Option<f64>,
    /// `form: "AABB"`: a tune generated section by section (see `gen::form`).
    pub form: Option<String>,
    /// Bars of each section of `form` (default 8).
    pub part_bars: Option<u32>,
    /// Bars a primed section keeps (default: half a section).
    pub keep_bars: Option<u32>,
    /// Sections end on a cadence (default true).
    pub cadence: Option<bool>,
}

impl GenOpts {
    /// These options over `base`: each field set here wins, the others come from `base`
    /// (`branch(n, #{temperature: 1.1})` changes one setting of take `n`).
    pub fn over(&self, base: &GenOpts) -> GenOpts {
        macro_rules! pick {
            ($($f:ident),*) => { GenOpts { $($f: self.$f.clone().or_else(|| base.$f.clone()),)* } };
        }
        pick!(
            bars,
            notes,
            tokens,
            temperature,
            top_k,
            top_p,
            seed,
            style,
            composer,
            instrument,
            key,
            meter,
            range,
            pitch_classes,
            in_key,
            pentatonic,
            max_polyphony,
            whole_bars,
            mono_voices,
            no_parallels,
            end_on_tonic,
            end_on_final,
            model,
            repetition_penalty,
            same_pitch_bias,
            recall_bias,
            recall_spread,
            length_temperature,
            length_top_p,
            guidance,
            form,
            part_bars,
            keep_bars,
            cadence
        )
    }
}

struct Settings {
    model: String,
    style: Option<String>,
    bpm: f64,
}

/// Everything a session plays and generates with.
pub struct Stage {
    settings: Mutex<Settings>,
    pub loops: Loops,
    no_midi: bool,
    models: Models,
    output: super::Output,
    port_names: Mutex<Vec<String>>,
    /// The play engine, started on first use (a session that only edits scores opens no port).
    engine: Mutex<Option<Arc<Transport>>>,
    /// Outputs to start the engine with besides the MIDI port (recorders in tests).
    extra_outputs: Mutex<Vec<Box<dyn MidiOut>>>,
    /// Run the engine on this fake clock (`sleep` and `wait` move it): tests, offline renders.
    fake_clock: Option<FakeClock>,
    port: Option<String>,
    /// Output slot `play` and new loops use (`out` changes it).
    slot: Mutex<u8>,
    /// The MIDI input `listen` opened: what a player plays, for `heard()`.
    input: Mutex<Option<crate::play::input::InputRecorder>>,
    /// The incoming MIDI clock the tempo follows (`follow_clock`); dropping it disconnects.
    follower: Mutex<Option<crate::play::clock_sync::FollowHandle>>,
    closing: Arc<AtomicBool>,
    exit_handlers: bool,
    /// The folders scripts may read and write.
    pub sandbox: super::sandbox::Sandbox,
    /// Every take this session (and earlier ones sharing the file) made.
    pub takes: TakeLog,
    /// Each model folder's index of training tunes, for marking copies.
    copies: Mutex<HashMap<std::path::PathBuf, Option<Arc<CopyIndex>>>>,
}

/// Loaded models by name. A model loads once; callers asking while it loads wait for it.
#[derive(Default)]
struct Models {
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

#[derive(Default)]
struct Slot {
    value: Mutex<Option<Result<Arc<Generator>, String>>>,
    ready: Condvar,
}

impl Stage {
    pub fn new(options: &mut Options) -> Stage {
        Stage {
            settings: Mutex::new(Settings { model: options.model.clone(), style: None, bpm: crate::time::DEFAULT_BPM }),
            loops: Loops::default(),
            no_midi: options.no_midi,
            models: Models::default(),
            output: options.output.clone(),
            port_names: Mutex::new(Vec::new()),
            engine: Mutex::new(None),
            extra_outputs: Mutex::new(std::mem::take(&mut options.outputs)),
            fake_clock: options.clock.clone(),
            port: options.port.clone(),
            slot: Mutex::new(0),
            input: Mutex::new(None),
            follower: Mutex::new(None),
            closing: Arc::new(AtomicBool::new(false)),
            exit_handlers: options.exit_handlers,
            sandbox: options.sandbox.clone(),
            copies: Mutex::new(HashMap::new()),
            takes: match &options.takes_file {
                Some(f) => TakeLog::open(f),
                None => TakeLog::in_memory(),
            },
        }
    }

    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts loading the session's model on a background thread (the REPL prompt appears at
    /// once; a `gen` typed meanwhile waits for it).
    pub fn preload_model(self: &Arc<Self>) {
        let stage = self.clone();
        let name = self.model_name();
        let _ = std::thread::Builder::new().name("cadenza-model-load".into()).spawn(move || {
            let start = std::time::Instant::now();
            match stage.generator(Some(&name), &AtomicBool::new(false)) {
                Ok(g) => (stage.output)(&format!(
                    "model `{}` ready ({} styles) in {:.1} s",
                    g.name(),
                    g.styles().len(),
                    start.elapsed().as_secs_f64()
                )),
                Err(e) => (stage.output)(&format!("model `{name}` did not load: {e}")),
            }
        });
    }

    /// The generator for `name` (the current model when `None`), loading it on first use.
    /// Waiting for a load in progress ends early when `cancel` is raised.
    pub fn generator(&self, name: Option<&str>, cancel: &AtomicBool) -> Result<Arc<Generator>, StageError> {
        let name = name.map(str::to_string).unwrap_or_else(|| self.model_name());
        let (slot, loader) = {
            let mut slots = self.models.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get(&name) {
                Some(s) => (s.clone(), false),
                None => {
                    let s = Arc::new(Slot::default());
                    slots.insert(name.clone(), s.clone());
                    (s, true)
                }
            }
        };
        if loader {
            let result = Generator::load(&name).map(Arc::new).map_err(|e| e.to_string());
            if result.is_err() {
                // A failed load is not remembered: the files may appear (or be fixed) later.
                self.models.slots.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
            }
            *slot.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(result.clone());
            slot.ready.notify_all();
            return result.map_err(|reason| StageError::ModelLoad { name, reason });
        }
        let mut v = slot.value.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(r) = v.as_ref() {
                return r.clone().map_err(|reason| StageError::ModelLoad { name, reason });
            }
            if cancel.load(Ordering::Relaxed) {
                return Err(StageError::Cancelled);
            }
            v = slot.ready.wait_timeout(v, Duration::from_millis(20)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Makes a generator built in code available under `name` (tests, embedding programs).
    pub fn add_model(&self, name: &str, g: Arc<Generator>) {
        let slot = Arc::new(Slot::default());
        *slot.value.lock().unwrap_or_else(|p| p.into_inner()) = Some(Ok(g));
        self.models.slots.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), slot);
    }

    /// The current model if it is already loaded (never blocks: for completion).
    fn loaded_generator(&self) -> Option<Arc<Generator>> {
        let name = self.model_name();
        let slots = self.models.slots.lock().ok()?;
        let slot = slots.get(&name)?.clone();
        drop(slots);
        let v = slot.value.try_lock().ok()?;
        v.as_ref()?.as_ref().ok().cloned()
    }

    /// `abc(text)`: the first tune of `text`, or of the file when `text` is a path to one.
    pub fn abc(&self, text: &str) -> Result<Score, StageError> {
        let t = text.trim();
        if !t.contains('\n') && (t.ends_with(".abc") || t.ends_with(".txt")) {
            // A path is checked before it is looked at, so `abc` cannot probe for files.
            if let Ok(real) = self.sandbox.check(t, Access::Read) {
                if real.is_file() {
                    return self.load(t);
                }
            }
        }
        crate::dsl::parse(text).map_err(StageError::Abc)
    }

    pub fn abc_text(&self, s: &Score) -> Result<String, StageError> {
        Ok(crate::dsl::print(s))
    }

    /// Reads a score by the file's extension, from inside the sandbox.
    pub fn load(&self, path: &str) -> Result<Score, StageError> {
        let real =
            self.sandbox.check(path, Access::Read).map_err(|e| StageError::Sandbox { call: "load", source: e })?;
        crate::sink::files::read(&real, None).map_err(StageError::Read)
    }

    /// Writes a score by the file's extension, inside the sandbox.
    pub fn save(&self, s: &Score, path: &str) -> Result<(), StageError> {
        let real =
            self.sandbox.check(path, Access::Write).map_err(|e| StageError::Sandbox { call: "save", source: e })?;
        match extension(path).as_str() {
            "abc" => crate::sink::abc::write(s, &real).map_err(|e| StageError::Write(e.to_string())),
            "mid" | "midi" => crate::sink::midi_file::write(s, &real).map_err(|e| StageError::Write(e.to_string())),
            other => Err(StageError::SaveType { path: path.to_string(), ext: other.to_string() }),
        }
    }

    /// Makes `name` the model for `gen`, loading it now so a bad name fails here.
    pub fn set_model(&self, name: &str, cancel: &AtomicBool) -> Result<String, StageError> {
        let g = self.generator(Some(name), cancel)?;
        self.settings().model = name.to_string();
        Ok(g.name().to_string())
    }

    pub fn model_name(&self) -> String {
        self.settings().model.clone()
    }

    /// Models found under the model folders.
    pub fn models(&self) -> Vec<String> {
        crate::model::list().into_iter().map(|(n, _)| n).collect()
    }

    /// Sets the default style; checked against the current model when it is loaded.
    pub fn set_style(&self, name: &str) -> Result<String, StageError> {
        if let Some(g) = self.loaded_generator() {
            if !g.styles().iter().any(|s| s.eq_ignore_ascii_case(name)) {
                return Err(StageError::UnknownStyle {
                    name: name.to_string(),
                    model: g.name().to_string(),
                    known: if g.styles().is_empty() { "(none)".to_string() } else { g.styles().join(", ") },
                });
            }
        }
        self.settings().style = Some(name.to_string());
        Ok(name.to_string())
    }

    pub fn style(&self) -> Option<String> {
        self.settings().style.clone()
    }

    /// Styles of the current model (waits for it to load).
    pub fn styles_blocking(&self, cancel: &AtomicBool) -> Result<Vec<String>, StageError> {
        Ok(self.generator(None, cancel)?.styles().to_vec())
    }

    /// Styles of the current model if it is loaded (never blocks: for completion).
    pub fn styles(&self) -> Vec<String> {
        self.loaded_generator().map(|g| g.styles().to_vec()).unwrap_or_default()
    }

    /// `gen(prompt, opts)`: the continuation only (starting at tick 0), with the settings that
    /// made it recorded in its meta so it can be made again.
    pub fn generate(&self, prompt: Option<&Score>, opts: &GenOpts, cancel: &AtomicBool) -> Result<Score, StageError> {
        let g = self.generator(opts.model.as_deref(), cancel)?;
        let opts = self.resolve(&g, opts);
        let bpm = self.tempo();
        let (score, record) = self.generate_resolved(&g, prompt, &opts, bpm, cancel)?;
        self.log_take(&g, "gen", prompt, opts, bpm, record, &score);
        Ok(score)
    }

    /// The options with what the session fills in made explicit, so the call can be made
    /// again exactly: the model's name, the session style (for a model conditioned on style)
    /// and a seed. (`harmonize` names its model already.)
    fn resolve(&self, g: &Generator, opts: &GenOpts) -> GenOpts {
        let mut o = opts.clone();
        // The name or folder the session loaded it by (a folder's name alone may be another model).
        o.model = Some(o.model.unwrap_or_else(|| self.model_name()));
        o.style = o.style.or_else(|| self.style().filter(|_| !g.styles().is_empty()));
        o.seed = Some(o.seed.unwrap_or_else(|| self.next_seed()));
        o
    }

    /// Keeps a take in the history; a history that cannot be written says so once.
    #[allow(clippy::too_many_arguments)]
    fn log_take(
        &self,
        g: &Generator,
        call: &str,
        prompt: Option<&Score>,
        opts: GenOpts,
        bpm: f64,
        record: Option<TakeRecord>,
        score: &Score,
    ) {
        let unix_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let entry = TakeEntry {
            n: 0,
            unix_secs,
            call: call.to_string(),
            prompt: prompt.cloned(),
            opts,
            bpm,
            record,
            copied_from: None,
            score: score.clone(),
        };
        let copy = self.copies_of(g).and_then(|index| index.find(score));
        let entry = TakeEntry { copied_from: copy.as_ref().map(|c| c.title.clone()), ..entry };
        let (n, warning) = self.takes.add(entry);
        if let Some(warning) = warning {
            (self.output)(&warning);
        }
        if let Some(c) = copy {
            (self.output)(&format!(
                "take {n} copies {} notes of “{}”, a tune {} learnt from",
                c.notes,
                c.title,
                g.name()
            ));
        }
    }

    /// The index of `g`'s training tunes (`copies.bin` beside its weights), loaded once per model
    /// folder; none when the model ships without one.
    fn copies_of(&self, g: &Generator) -> Option<Arc<CopyIndex>> {
        let mut cache = self.copies.lock().unwrap_or_else(|p| p.into_inner());
        cache.entry(g.dir().to_path_buf()).or_insert_with(|| copies::beside(g.dir()).map(Arc::new)).clone()
    }

    /// `duet(a, b, #{turns, bars, ...})`: two models answering each other, Magenta-style. Model
    /// `a` answers the prompt (or starts from nothing), `b` answers `a`'s phrase, `a` answers
    /// `b`'s, for `turns` phrases of `bars` bars, each conditioned on the last call alone. The
    /// phrases are joined in one score, each model in its own voice and channel; every phrase is
    /// a take. Bounded by [`MAX_DUET_TURNS`] and [`MAX_DUET_BARS`]; Ctrl-C stops it between
    /// tokens.
    pub fn duet(
        &self,
        prompt: Option<&Score>,
        models: [&str; 2],
        turns: u32,
        opts: &GenOpts,
        cancel: &AtomicBool,
    ) -> Result<Score, StageError> {
        if !(1..=MAX_DUET_TURNS).contains(&turns) {
            return Err(StageError::Duet(format!("turns {turns} must be 1..={MAX_DUET_TURNS}")));
        }
        let bars = opts.bars.unwrap_or(4);
        if !(1..=MAX_DUET_BARS).contains(&bars) {
            return Err(StageError::Duet(format!("bars {bars} must be 1..={MAX_DUET_BARS}")));
        }
        let base_seed = opts.seed.unwrap_or_else(|| self.next_seed());
        let mut phrases: Vec<Score> = Vec::new();
        let mut call: Option<Score> = prompt.cloned();
        if let Some(p) = prompt {
            phrases.push(voiced(p, "call", 0));
        }
        for turn in 0..turns {
            if cancel.load(Ordering::Relaxed) {
                return Err(StageError::Cancelled);
            }
            let side = (turn % 2) as usize;
            let o = GenOpts {
                model: Some(models[side].to_string()),
                bars: Some(bars),
                seed: Some(base_seed.wrapping_add(turn as u64)),
                ..opts.clone()
            };
            let answer = self.generate(call.as_ref(), &o, cancel)?;
            // Voices `a-folk` and `b-folk-lstm`: each side keeps its own line even when both
            // sides are the same model.
            let short =
                std::path::Path::new(models[side]).file_name().map_or(models[side].into(), |n| n.to_string_lossy());
            phrases.push(voiced(&answer, &format!("{}-{short}", ["a", "b"][side]), 1 + side as u8));
            call = Some(answer);
        }
        Ok(Score::concat_all(&phrases))
    }

    /// `take(n)`: the music of take `n`.
    pub fn take(&self, n: u64) -> Result<TakeEntry, StageError> {
        self.takes.get(n).ok_or_else(|| StageError::NoSuchTake { n, range: self.takes.range() })
    }

    /// `replay(n)`: take `n` made again from its prompt, options and seed. It must come out
    /// note for note; if it does not (the model's weights changed), that is an error saying so.
    pub fn replay(&self, n: u64, cancel: &AtomicBool) -> Result<Score, StageError> {
        let e = self.take(n)?;
        let score = self.remake(&e, &e.opts, cancel)?;
        if score.notes != e.score.notes {
            let was = e.record.as_ref().map_or("?", |r| r.model_hash.as_str());
            return Err(StageError::ReplayDiffers {
                n,
                model: e.opts.model.clone().unwrap_or_default(),
                hash: was[..was.len().min(12)].to_string(),
            });
        }
        Ok(score)
    }

    /// `branch(n, opts)`: take `n`'s prompt with its options changed by `opts` (a new take).
    pub fn branch(&self, n: u64, opts: &GenOpts, cancel: &AtomicBool) -> Result<Score, StageError> {
        let e = self.take(n)?;
        let opts = opts.over(&e.opts);
        let score = self.remake(&e, &opts, cancel)?;
        Ok(score)
    }

    /// Makes a take with `opts` from `e`'s call, prompt and tempo, and logs it.
    fn remake(&self, e: &TakeEntry, opts: &GenOpts, cancel: &AtomicBool) -> Result<Score, StageError> {
        let g = self.generator(opts.model.as_deref(), cancel)?;
        let (score, record) = match e.call.as_str() {
            "harmonize" => {
                let melody = e.prompt.clone().unwrap_or_default();
                self.harmonize_resolved(&g, &melody, opts, e.bpm, cancel)?
            }
            _ => self.generate_resolved(&g, e.prompt.as_ref(), opts, e.bpm, cancel)?,
        };
        self.log_take(&g, &e.call, e.prompt.as_ref(), opts.clone(), e.bpm, record, &score);
        Ok(score)
    }

    /// `gen` with options already resolved (see [`Stage::resolve`]) at tempo `bpm`.
    fn generate_resolved(
        &self,
        g: &Arc<Generator>,
        prompt: Option<&Score>,
        opts: &GenOpts,
        bpm: f64,
        cancel: &AtomicBool,
    ) -> Result<(Score, Option<TakeRecord>), StageError> {
        let g = g.clone();
        let request = self.request(&g, prompt, opts, bpm)?;
        let unmeasured = opts.bars.is_none() && opts.notes.is_none() && opts.tokens.is_none();
        let spec = match opts.form.as_deref() {
            Some("none") => None,
            Some(form) => {
                if !unmeasured {
                    return Err(StageError::Options(
                        "`form` sets the length (part_bars per section); drop bars/notes/tokens",
                    ));
                }
                let mut spec =
                    crate::gen::FormSpec::parse(form, opts.part_bars.unwrap_or(8)).map_err(StageError::gen("gen"))?;
                spec.keep_bars = opts.keep_bars.unwrap_or(spec.keep_bars);
                spec.cadence = opts.cadence.unwrap_or(true);
                Some(spec)
            }
            // Neither a form nor a length: a model with a form prior draws one for this seed.
            None if unmeasured => g.form_prior().and_then(|p| p.pick(request.seed)).cloned(),
            None => None,
        };
        if let Some(spec) = spec {
            let take = crate::gen::generate_form(&g, &request, &spec, cancel).map_err(StageError::gen("gen"))?;
            let mut out = take.score.slice_ticks(take.start, take.score.length.max(take.start));
            out.meta.gen.seed = Some(request.seed);
            return Ok((out, take.records.first().cloned()));
        }
        let prompt_len = request.prompt.length;
        let batch = g.batch(&request, 1, cancel, &mut |_| {}).map_err(StageError::gen("gen"))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(StageError::Cancelled);
        }
        let take = batch.takes().pop().ok_or(StageError::NoTake)?;
        let end = take.score.length.max(prompt_len);
        let mut out = take.score.slice_ticks(prompt_len, end);
        out.notes = take
            .notes
            .iter()
            .filter(|n| n.start >= prompt_len)
            .map(|n| crate::score::Note { start: n.start - prompt_len, ..*n })
            .collect();
        out.normalize();
        if let Length::Bars(b) = request.length {
            // Exactly the bars asked for (a loop's cycle must keep its length): a last bar
            // that ends in a rest is filled out, notes ringing past the end are cut there.
            let end = b as u64 * out.meter().bar_ticks();
            out.length = out.length.max(end);
            out = out.slice_ticks(0, end);
        }
        // A whole tune from nothing starts with its pickup, not with the rest the model writes
        // before it (the aligned pickup it learnt).
        if prompt_len == 0 && request.length == Length::Tune {
            out = out.restore_pickup(out.implied_pickup());
        }
        // What made the take (sampling, constraints, seed) travels with it and prints back.
        out.meta.gen = take.score.meta.gen.clone();
        Ok((out, Some(take.record)))
    }

    /// `harmonize(melody, opts)`: the melody as the soprano, the other voices sampled by the
    /// model (`chorale` unless `model` says otherwise).
    pub fn harmonize(&self, melody: &Score, opts: &GenOpts, cancel: &AtomicBool) -> Result<Score, StageError> {
        let mut opts = opts.clone();
        let model = opts.model.get_or_insert_with(|| "chorale".to_string()).clone();
        let g = self.generator(Some(&model), cancel)?;
        let opts = self.resolve(&g, &opts);
        let bpm = self.tempo();
        let (score, record) = self.harmonize_resolved(&g, melody, &opts, bpm, cancel)?;
        self.log_take(&g, "harmonize", Some(melody), opts, bpm, record, &score);
        Ok(score)
    }

    fn harmonize_resolved(
        &self,
        g: &Generator,
        melody: &Score,
        opts: &GenOpts,
        bpm: f64,
        cancel: &AtomicBool,
    ) -> Result<(Score, Option<TakeRecord>), StageError> {
        let request = self.request(g, None, opts, bpm)?;
        let take = crate::gen::harmonize(g, melody, &request, cancel).map_err(StageError::gen("harmonize"))?;
        if take.record.cancelled {
            return Err(StageError::Cancelled);
        }
        let mut out = take.score.restore_pickup(melody.meta.pickup);
        out.meta.gen.seed = Some(request.seed);
        Ok((out, Some(take.record)))
    }

    /// Builds the generation request from the options and the session's defaults.
    fn request(&self, g: &Generator, prompt: Option<&Score>, opts: &GenOpts, bpm: f64) -> Result<Request, StageError> {
        let mut prompt = prompt.cloned().unwrap_or_default();
        let key = match &opts.key {
            Some(k) => Some(crate::dsl::fields::key_value(k).map_err(|e| StageError::Field {
                what: "key",
                value: k.clone(),
                field: e,
            })?),
            None => None,
        };
        let meter = match &opts.meter {
            Some(m) => Some(crate::dsl::fields::meter_value(m).map_err(|e| StageError::Field {
                what: "meter",
                value: m.clone(),
                field: e,
            })?),
            None => None,
        };
        if prompt.notes.is_empty() && prompt.meta.tempo == crate::time::TempoMap::default() {
            prompt.meta.tempo = crate::time::TempoMap::constant(bpm);
        }
        // The session's style applies only to models conditioned on style.
        let default_style = self.style().filter(|_| !g.styles().is_empty());
        let style = opts.style.clone().or(default_style);
        let defaults = g.defaults_for(style.as_deref().or(prompt.meta.style.as_deref()));
        let mut request = Request::from_prompt(prompt, Length::Tune, &defaults);
        match (opts.bars, opts.notes, opts.tokens) {
            (Some(b), _, _) => request.length = Length::Bars(b),
            (None, Some(n), _) => request.length = Length::Notes(n as usize),
            (None, None, Some(t)) => request.length = Length::Tokens(t as usize),
            (None, None, None) => {}
        }
        let s = &mut request.sampling;
        s.temperature = opts.temperature.unwrap_or(s.temperature);
        s.top_k = opts.top_k.map_or(s.top_k, |k| k as usize);
        s.top_p = opts.top_p.unwrap_or(s.top_p);
        s.repetition_penalty = opts.repetition_penalty.unwrap_or(s.repetition_penalty);
        s.same_pitch_bias = opts.same_pitch_bias.unwrap_or(s.same_pitch_bias);
        s.recall_bias = opts.recall_bias.unwrap_or(s.recall_bias);
        s.recall_spread = opts.recall_spread.unwrap_or(s.recall_spread);
        s.length_temperature = opts.length_temperature.or(s.length_temperature);
        s.length_top_p = opts.length_top_p.or(s.length_top_p);
        s.guidance = opts.guidance.unwrap_or(s.guidance);
        request.overrides.style = style;
        request.overrides.instrument = opts.instrument.clone();
        request.overrides.meter = meter;
        let c = &mut request.constraints;
        // `key: "Dmix"` conditions on the key and keeps every note in it, unless `in_key: false`.
        c.in_key = opts.in_key.unwrap_or(key.is_some() || c.in_key);
        c.pentatonic = opts.pentatonic.unwrap_or(c.pentatonic);
        request.overrides.key = key;
        if opts.pitch_classes.is_some() {
            c.pitch_classes = opts.pitch_classes.clone();
        }
        if opts.range.is_some() {
            c.range = opts.range;
        }
        if let Some(n) = opts.max_polyphony {
            c.max_polyphony = Some(n as usize);
        }
        c.whole_bars = opts.whole_bars.unwrap_or(c.whole_bars);
        c.mono_voices = opts.mono_voices.unwrap_or(c.mono_voices);
        c.no_parallels = opts.no_parallels.unwrap_or(c.no_parallels);
        c.end_on_tonic = opts.end_on_tonic.unwrap_or(c.end_on_tonic);
        c.end_on_final = opts.end_on_final.unwrap_or(c.end_on_final);
        // A prompt's `%%seed` is not used here: a take carries the seed that made it, and a loop
        // that continues its last take would otherwise play the same answer every cycle.
        request.seed = opts.seed.unwrap_or_else(|| self.next_seed());
        Ok(request)
    }

    /// A fresh seed when the script gives none (recorded in the take's meta).
    fn next_seed(&self) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish() % 1_000_000
    }

    /// `score_ll(score)`: log-likelihood in nats, total and per note, and surprise per bar.
    pub fn likelihood(&self, s: &Score, model: Option<&str>, cancel: &AtomicBool) -> Result<Map, StageError> {
        let g = self.generator(model, cancel)?;
        let ll = g.likelihood(s).map_err(StageError::gen("score_ll"))?;
        let mut m = Map::new();
        m.insert("model".into(), g.name().to_string().into());
        m.insert("total".into(), ll.total.into());
        m.insert("per_note".into(), ll.per_note.into());
        m.insert("notes".into(), (ll.notes as rhai::INT).into());
        m.insert("tokens".into(), (ll.tokens as rhai::INT).into());
        let bars: rhai::Array = ll
            .bars
            .iter()
            .map(|b| {
                let mut bm = Map::new();
                bm.insert("bar".into(), (b.bar as rhai::INT).into());
                bm.insert("notes".into(), (b.notes as rhai::INT).into());
                bm.insert("nll".into(), b.nll.into());
                bm.insert("surprise".into(), b.surprise.into());
                rhai::Dynamic::from_map(bm)
            })
            .collect();
        m.insert("bars".into(), bars.into());
        Ok(m)
    }

    /// The play engine, started on first use with the MIDI port (or none with `--no-midi`).
    pub fn engine(self: &Arc<Self>) -> Result<Arc<Transport>, StageError> {
        let mut e = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(engine) = e.as_ref() {
            return Ok(engine.clone());
        }
        if self.closing.load(Ordering::Relaxed) {
            return Err(StageError::ShuttingDown);
        }
        let mut outputs: Vec<Box<dyn MidiOut>> = Vec::new();
        if !self.no_midi {
            let out = match &self.port {
                Some(p) => crate::sink::out::connect_output(p),
                None => crate::sink::out::virtual_output(crate::sink::out::CLIENT_NAME),
            };
            match out {
                Ok(o) => {
                    (self.output)(&format!("MIDI out: {}", o.name()));
                    outputs.push(o);
                }
                // No MIDI system here: the music is scheduled and sounds nowhere; say so once.
                Err(err) => (self.output)(&format!("no MIDI output ({err}); playing silently")),
            }
        }
        outputs.append(&mut self.extra_outputs.lock().unwrap_or_else(|p| p.into_inner()));
        let config = crate::play::TransportConfig { bpm: self.tempo(), ..Default::default() };
        let lead = outputs.iter().map(|o| o.lead()).max().unwrap_or(0);
        let engine = match &self.fake_clock {
            Some(clock) => Transport::manual(outputs, config, clock.clone()),
            None => Transport::start(outputs, config),
        }
        .map_err(StageError::play("play"))?;
        let engine = Arc::new(engine);
        if self.fake_clock.is_none() {
            // Said once: how steady the timing can be on this machine.
            match engine.realtime() {
                _ if lead > 0 => (self.output)(&format!(
                    "timing: the MIDI system places each message at its due time (handed over {} ms \
                     ahead), so the player thread's wake-up does not reach the output",
                    lead / 1_000_000
                )),
                Some(true) => (self.output)("timing: the player thread runs with real-time priority"),
                Some(false) => (self.output)(
                    "timing: normal scheduling (no real-time rights: expect a few ms of jitter; \
                     rtprio in /etc/security/limits.conf or the audio group gives real-time priority)",
                ),
                None => {}
            }
            spawn_reporter(Arc::downgrade(&engine), self.output.clone(), self.closing.clone());
            if self.exit_handlers {
                engine.install_panic_hook();
                if let Err(err) = engine.install_exit_handlers() {
                    (self.output)(&format!("warning: {err}"));
                }
            }
        }
        *e = Some(engine.clone());
        Ok(engine)
    }

    /// The engine if it was started (stopping things must not start it).
    fn started(&self) -> Option<Arc<Transport>> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn opts(&self, at: At) -> PlayOpts {
        PlayOpts { port: *self.slot.lock().unwrap_or_else(|p| p.into_inner()), at }
    }

    /// `play(score)`: once, from the next bar line.
    pub fn play(self: &Arc<Self>, s: &Score) -> Result<(), StageError> {
        let e = self.engine()?;
        e.play_with(s, self.opts(At::NextBar)).map_err(StageError::play("play"))?;
        self.flush_reports(&e);
        Ok(())
    }

    /// Starts or replaces a loop; the producer's first cycle is already made.
    pub fn set_loop(self: &Arc<Self>, name: &str, producer: Box<dyn Producer>) -> Result<(), StageError> {
        let e = self.engine()?;
        e.set_loop(name, crate::play::LoopSource::Producer(producer), self.opts(At::NextCycle))
            .map_err(StageError::play("loop"))
    }

    /// One line per loop for `:loops`: what it made, and for a loop that generates, how far
    /// ahead of its deadline the last cycle arrived, the worst margin, and how many cycles
    /// were late (the last good one played again).
    pub fn describe_loops(&self) -> Vec<String> {
        let timing = self.started().map(|e| e.loop_timing()).unwrap_or_default();
        self.loops
            .describe()
            .into_iter()
            .map(|(name, line)| match timing.get(&name) {
                Some(t) => format!(
                    "{line}; ahead {:.0} ms (median {:.0}, worst {:.0}), {} replayed{}",
                    t.last_margin_ms,
                    t.median_margin_ms(),
                    t.worst_margin_ms,
                    t.replayed,
                    if t.replayed > 0 || t.worst_margin_ms < 0.0 { "  ← lagging" } else { "" }
                ),
                None => line,
            })
            .collect()
    }

    /// `stop(name)`: the loop ends with its current cycle.
    pub fn stop_loop(&self, name: &str) -> bool {
        let known = self.loops.forget(name);
        if let Some(e) = self.started() {
            let _ = e.stop_loop(name, At::NextCycle);
        }
        known
    }

    /// `sleep(seconds)`: waits while the music plays; on a fake clock, moves it instead.
    pub fn sleep(&self, seconds: f64, cancel: &AtomicBool) {
        if let (Some(_), Some(e)) = (&self.fake_clock, self.started()) {
            let _ = e.advance_to(e.now() + (seconds * 1e9) as u64);
            self.flush_reports(&e);
            return;
        }
        let end = std::time::Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0));
        while std::time::Instant::now() < end && !cancel.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10).min(end.saturating_duration_since(std::time::Instant::now())));
        }
    }

    /// Like `sleep`, but returns as soon as nothing plays any more (no loop, no pending note):
    /// `--for 20` is a limit, not a wait after the music has ended.
    pub fn sleep_while_playing(&self, seconds: f64, cancel: &AtomicBool) {
        if self.fake_clock.is_some() {
            return self.sleep(seconds, cancel);
        }
        let end = std::time::Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 86_400.0));
        while std::time::Instant::now() < end && !cancel.load(Ordering::Relaxed) {
            if self.started().is_none_or(|e| e.is_idle(true)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(std::time::Instant::now())));
        }
    }

    /// Prints what the engine has to say (a fake-clock engine has no reporter thread).
    fn flush_reports(&self, e: &Transport) {
        if self.fake_clock.is_some() {
            for r in e.take_reports() {
                (self.output)(&r.to_string());
            }
        }
    }

    pub fn set_tempo(&self, bpm: f64) -> Result<f64, StageError> {
        if !(bpm.is_finite() && (10.0..=1000.0).contains(&bpm)) {
            return Err(StageError::play("tempo")(crate::play::PlayError::BadTempo(bpm)));
        }
        if let Some(e) = self.started() {
            e.set_tempo(bpm, At::NextBar).map_err(StageError::play("tempo"))?;
        }
        self.settings().bpm = bpm;
        Ok(bpm)
    }

    pub fn tempo(&self) -> f64 {
        self.settings().bpm
    }

    /// MIDI output ports the system offers now.
    pub fn ports(&self) -> Result<Vec<String>, StageError> {
        let names = crate::sink::out::list_ports()?;
        *self.port_names.lock().unwrap_or_else(|p| p.into_inner()) = names.clone();
        Ok(names)
    }

    /// Port names as last listed (completion must not block on the MIDI system).
    pub fn cached_ports(&self) -> Vec<String> {
        self.port_names.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// `out(name)`: connects the port whose name contains `name` (or has that number) and sends
    /// what is played from now on there.
    pub fn out(self: &Arc<Self>, name: &str) -> Result<String, StageError> {
        let e = self.engine()?;
        let o = crate::sink::out::connect_output(name)?;
        let full = o.name().to_string();
        let slot = e.add_output(o).map_err(StageError::play("out"))?;
        *self.slot.lock().unwrap_or_else(|p| p.into_inner()) = slot;
        Ok(full)
    }

    /// `listen(port)`: records what is played on a MIDI input (name substring or number; empty:
    /// a virtual input named `cadenza-in` other programs connect to). Replaces the last one.
    pub fn listen(&self, port: &str) -> Result<String, StageError> {
        if self.no_midi {
            return Err(StageError::NoMidi("listen"));
        }
        let rec = if port.is_empty() {
            #[cfg(unix)]
            {
                crate::play::input::InputRecorder::virtual_port("cadenza-in")
            }
            #[cfg(not(unix))]
            {
                return Err(StageError::NoVirtualPorts);
            }
        } else {
            crate::play::input::InputRecorder::open(port)
        }
        .map_err(StageError::play("listen"))?;
        let name = rec.name().to_string();
        *self.input.lock().unwrap_or_else(|p| p.into_inner()) = Some(rec);
        Ok(name)
    }

    /// Listens to `recorder` from now on (a detached one in tests, fed by hand).
    pub fn set_input(&self, recorder: crate::play::input::InputRecorder) {
        *self.input.lock().unwrap_or_else(|p| p.into_inner()) = Some(recorder);
    }

    /// Messages the input has received so far and whether notes wait to be heard; `None`
    /// while nothing is listening.
    pub fn input_activity(&self) -> Option<(u64, bool)> {
        let input = self.input.lock().unwrap_or_else(|p| p.into_inner());
        input.as_ref().map(|r| (r.activity(), r.has_notes()))
    }

    /// `heard()`: what was played since `listen` or the last `heard`, at the session tempo,
    /// snapped to sixteenths, starting at 0; ready to be a prompt.
    pub fn heard(&self) -> Result<Score, StageError> {
        let input = self.input.lock().unwrap_or_else(|p| p.into_inner());
        let rec = input.as_ref().ok_or(StageError::NotListening)?;
        Ok(rec.take(self.tempo(), Some(crate::time::PPQ as crate::time::Tick / 4)))
    }

    /// `send_clock(on)`: MIDI clock (24 ppqn, Start at the next bar; Stop when off) on the
    /// output `play` uses, so a DAW or drum machine follows cadenza.
    pub fn send_clock(self: &Arc<Self>, on: bool) -> Result<(), StageError> {
        let e = self.engine()?;
        let slot = *self.slot.lock().unwrap_or_else(|p| p.into_inner());
        e.clock_out(on.then_some(slot)).map_err(StageError::play("send_clock"))
    }

    /// `follow_clock(port, latency_ms)`: the session tempo and bar lines follow the MIDI clock
    /// arriving on an input, each pulse taken to have left the leader `latency_ms` before it
    /// arrived. `follow_clock("")` stops following.
    pub fn follow_clock(self: &Arc<Self>, port: &str, latency_ms: f64) -> Result<(), StageError> {
        let mut f = self.follower.lock().unwrap_or_else(|p| p.into_inner());
        *f = None;
        if port.is_empty() {
            return Ok(());
        }
        if self.no_midi {
            return Err(StageError::NoMidi("follow_clock"));
        }
        if !(latency_ms.is_finite() && (0.0..=1000.0).contains(&latency_ms)) {
            return Err(StageError::Latency(latency_ms));
        }
        let e = self.engine()?;
        let latency = (latency_ms * 1e6) as crate::play::Nanos;
        *f = Some(crate::play::clock_sync::follow_clock(e, port, latency).map_err(StageError::play("follow_clock"))?);
        Ok(())
    }

    /// Names of the MIDI input ports.
    pub fn input_ports(&self) -> Result<Vec<String>, StageError> {
        Ok(crate::sink::out::list_input_ports()?)
    }

    /// Stops every loop and every note now.
    pub fn panic(&self) {
        self.loops.forget_all();
        if let Some(e) = self.started() {
            let _ = e.panic();
        }
    }

    /// `stop()`: every loop ends with its current cycle, plays at the next bar.
    pub fn stop_all(&self) {
        self.loops.forget_all();
        if let Some(e) = self.started() {
            let _ = e.stop_all(At::NextCycle);
        }
    }

    /// Waits until what `play` started has sounded (and the loops too with `loops_too`), or
    /// `cancel`. True when everything asked for has sounded.
    pub fn wait_idle(&self, cancel: &AtomicBool, loops_too: bool) -> bool {
        let Some(e) = self.started() else { return true };
        let idle = e.wait_idle(cancel, loops_too);
        self.flush_reports(&e);
        idle
    }

    /// Stops everything, turns every note off and ends the engine's threads.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.loops.forget_all();
        let engine = self.engine.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = engine {
            e.shutdown();
        }
    }
}

/// Prints the engine's reports (loop errors, late cycles, vanished ports, lateness) above the
/// prompt as they come.
fn spawn_reporter(engine: std::sync::Weak<Transport>, output: super::Output, closing: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("cadenza-reports".into()).spawn(move || {
        while !closing.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            let Some(e) = engine.upgrade() else { return };
            for r in e.take_reports() {
                output(&r.to_string());
            }
        }
    });
}
