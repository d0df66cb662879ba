//! `cadenza generate`: continue a prompt with a model and write MIDI or ABC (or a folder of takes).

use crate::gen::{Generator, Length, Overrides, Request, Take};
use crate::score::{GenSettings, Score};
use anyhow::{bail, Context};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundled model name or model folder (default: the prompt's `%%model`, else `folk-lstm`).
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// Prompt file (.abc, .mid).
    #[arg(long, conflicts_with = "abc")]
    pub prompt: Option<PathBuf>,
    /// Prompt as ABC text, e.g. "K:D\nM:6/8\nDFA dfa".
    #[arg(long)]
    pub abc: Option<String>,
    /// Style label to condition on (the model's labels are listed when unknown).
    #[arg(long)]
    pub style: Option<String>,
    /// Key to condition on, as ABC writes it (`D`, `Ador`, `F#m`).
    #[arg(long)]
    pub key: Option<String>,
    /// Meter to condition on (`6/8`, `C`).
    #[arg(long)]
    pub meter: Option<String>,
    /// Instrument label to condition on.
    #[arg(long)]
    pub instrument: Option<String>,
    /// Bars to generate (exactly; default: the prompt's `%%bars`, else a whole tune, ended
    /// where the model ends it).
    #[arg(long, conflicts_with_all = ["notes", "seconds", "tokens", "form"])]
    pub bars: Option<u32>,
    /// Notes to generate instead of bars.
    #[arg(long, conflicts_with_all = ["seconds", "tokens"])]
    pub notes: Option<usize>,
    /// Seconds of music to generate instead of bars.
    #[arg(long, conflicts_with = "tokens")]
    pub seconds: Option<f64>,
    /// Tokens to generate instead of bars.
    #[arg(long)]
    pub tokens: Option<usize>,
    #[arg(long, short = 't')]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    /// CTRL-style repetition penalty (1 = off).
    #[arg(long)]
    pub repetition_penalty: Option<f64>,
    /// Added to the logit of a note on the previous note's pitch, in nats (negative: fewer
    /// repeated pitches; the folk model's default is in its generation_config.json).
    #[arg(long, allow_hyphen_values = true)]
    pub same_pitch_bias: Option<f64>,
    /// Added to the logit of each id that would play an earlier bar of the take again, note
    /// for note, once the bar has opened like it, in nats (0 = off; the folk models' defaults,
    /// per style, are in their generation_config.json).
    #[arg(long, allow_hyphen_values = true)]
    pub recall_bias: Option<f64>,
    /// How much the recall bias varies from take to take, 0 to 1: each take's is drawn from
    /// `recall bias × [1 − spread, 1 + spread]` by its seed (the folk LSTM's Irish and Scottish
    /// default is 1, in its generation_config.json).
    #[arg(long)]
    pub recall_spread: Option<f64>,
    /// Temperature for note lengths alone (default: the model's, else `--temperature`).
    #[arg(long)]
    pub length_temperature: Option<f64>,
    /// Top-p for note lengths alone (default: the model's, else `--top-p`; the chorale model
    /// draws lengths untruncated, 1.0, so its rarer long notes survive).
    #[arg(long)]
    pub length_top_p: Option<f64>,
    /// Classifier-free guidance on the style label: 1 is off, above 1 leans each take further
    /// into its style (each step runs the model twice; default: the model's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Seed (default: the prompt's `%%seed`, else from the clock; always recorded).
    #[arg(long, short = 's')]
    pub seed: Option<u64>,
    /// Keep every note in the key (the `--key` given, else the prompt's).
    #[arg(long)]
    pub in_key: bool,
    /// Allowed pitch classes, comma separated (0 = C .. 11 = B), e.g. `0,2,4,7,9`.
    #[arg(long, value_delimiter = ',')]
    pub pitch_classes: Option<Vec<u8>>,
    /// Keep to a scale: `D dorian`, `A minor pentatonic`, `0 2 4 7 9`, `key` (as `--in-key`),
    /// `key pentatonic` (the pentatonic of the key, given or sampled) or `any` (none, over a
    /// scale a model's `generation_config.json` sets for a style).
    #[arg(long)]
    pub scale: Option<String>,
    /// Allowed pitch range, MIDI numbers or names: `55-84`, `G3..C6`.
    #[arg(long)]
    pub range: Option<String>,
    /// Most notes sounding at once.
    #[arg(long)]
    pub max_polyphony: Option<usize>,
    /// Bars must add up to the meter.
    #[arg(long)]
    pub whole_bars: bool,
    /// One note at a time in each voice (for multi-voice models such as `chorale`).
    #[arg(long)]
    pub mono_voices: bool,
    /// No parallel fifths or octaves between voices moving together (the chorale model's
    /// default).
    #[arg(long)]
    pub no_parallels: bool,
    /// A whole tune ends on the tonic of its key (given, sampled or drawn): its last note, or
    /// for a four-part model a last chord with the tonic in the bass and on top and a
    /// consonant triad between (the chorale model's default).
    #[arg(long)]
    pub end_on_tonic: bool,
    /// A whole tune ends on a degree of its key that its style's tunes end on (one in ten of
    /// them or more, from the model's header_prior.json; the tonic without it): the Chinese
    /// tunes' mode finals, the tonic of Irish ones. The folk models' default.
    #[arg(long)]
    pub end_on_final: bool,
    /// A form, generated section by section: `AABB`, `AABA`, `ABAC`, `QAQA'` (a letter seen
    /// before is that section again; a primed one keeps its first `--keep-bars` bars), `AAB*`
    /// (the last section runs until the model ends the tune). Without one, a model with forms in
    /// its generation_config.json (the chorale model) draws one per take; `none` draws none.
    #[arg(long, conflicts_with_all = ["notes", "seconds", "tokens"])]
    pub form: Option<String>,
    /// Bars of each section of `--form`.
    #[arg(long, default_value_t = 8, requires = "form")]
    pub part_bars: u32,
    /// Bars a primed section (`A'`) keeps of its letter's first section (default: half).
    #[arg(long, requires = "form")]
    pub keep_bars: Option<u32>,
    /// Sections of `--form` need not end on a cadence (by default each ends on a tonic or
    /// dominant chord note, the last on the tonic).
    #[arg(long, requires = "form")]
    pub no_cadence: bool,
    /// Harmonise this melody (.abc, .mid; its top line): it is the soprano note for note and the
    /// model (default `chorale`) samples the other voices, for the melody's bars.
    #[arg(long, conflicts_with_all = ["form", "bars", "notes", "seconds", "tokens", "prompt", "abc"])]
    pub harmonize: Option<PathBuf>,
    /// Number of takes (at most 10,000; in batches of 32, two at a time); OUT is then a folder.
    #[arg(short = 'n', long = "count", default_value_t = 1)]
    pub count: usize,
    /// Output: .mid or .abc file, or with -n > 1 a folder.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

/// Reads a prompt file by extension.
pub fn read_score(path: &Path) -> anyhow::Result<Score> {
    Ok(crate::sink::files::read(path, None)?)
}

/// The prompt the arguments give (`--prompt` file, `--abc` text, or nothing).
pub fn prompt(args: &Args) -> anyhow::Result<Score> {
    Ok(match (&args.prompt, &args.abc) {
        (Some(p), _) => read_score(p)?,
        (None, Some(text)) => {
            // Shells pass `\n` literally; ABC never writes it, so it means a line break here.
            let text = text.replace("\\n", "\n");
            // A bare line of notes is a fine prompt: add the header ABC requires.
            let text = if text.trim_start().starts_with("X:") { text } else { format!("X:1\n{text}\n") };
            crate::dsl::parse(&text).map_err(|e| anyhow::anyhow!("--abc: {e}"))?
        }
        (None, None) => Score::new(),
    })
}

/// Builds the request the arguments describe: flags first, then the prompt's `%%` settings,
/// then the model's defaults.
pub fn request(args: &Args, prompt: Score, model_defaults: &GenSettings) -> anyhow::Result<Request> {
    let mut req = Request::from_prompt(prompt, Length::Tune, model_defaults);
    req.overrides =
        Overrides { style: args.style.clone(), instrument: args.instrument.clone(), ..Overrides::default() };
    if let Some(k) = &args.key {
        req.overrides.key = Some(
            crate::dsl::fields::key_value(k)
                .map_err(|e| anyhow::anyhow!("--key {k}: expected {} at character {}", e.expected, e.at + 1))?,
        );
    }
    if let Some(m) = &args.meter {
        req.overrides.meter = Some(
            crate::dsl::fields::meter_value(m)
                .map_err(|e| anyhow::anyhow!("--meter {m}: expected {} at character {}", e.expected, e.at + 1))?,
        );
    }
    match (args.bars, args.notes, args.seconds, args.tokens) {
        (Some(b), ..) => req.length = Length::Bars(b),
        (_, Some(n), ..) => req.length = Length::Notes(n),
        (_, _, Some(s), _) => req.length = Length::Seconds(s),
        (_, _, _, Some(t)) => req.length = Length::Tokens(t),
        _ => {}
    }
    let s = &mut req.sampling;
    s.temperature = args.temperature.unwrap_or(s.temperature);
    s.top_k = args.top_k.unwrap_or(s.top_k);
    s.top_p = args.top_p.unwrap_or(s.top_p);
    s.repetition_penalty = args.repetition_penalty.unwrap_or(s.repetition_penalty);
    s.same_pitch_bias = args.same_pitch_bias.unwrap_or(s.same_pitch_bias);
    s.recall_bias = args.recall_bias.unwrap_or(s.recall_bias);
    s.recall_spread = args.recall_spread.unwrap_or(s.recall_spread);
    s.length_temperature = args.length_temperature.or(s.length_temperature);
    s.length_top_p = args.length_top_p.or(s.length_top_p);
    s.guidance = args.guidance.unwrap_or(s.guidance);
    let c = &mut req.constraints;
    if let Some(pcs) = &args.pitch_classes {
        c.pitch_classes = Some(pcs.clone());
    }
    if let Some(v) = &args.scale {
        let scale =
            crate::dsl::fields::scale_value(v).map_err(|e| anyhow::anyhow!("--scale {v}: expected {}", e.expected))?;
        scale.apply(&mut c.in_key, &mut c.pentatonic, &mut c.pitch_classes);
    }
    if let Some(r) = &args.range {
        c.range = Some(crate::score::parse_pitch_range(r).map_err(|e| anyhow::anyhow!("--range: {e}"))?);
    }
    c.max_polyphony = args.max_polyphony.or(c.max_polyphony);
    c.whole_bars |= args.whole_bars;
    c.mono_voices |= args.mono_voices;
    c.no_parallels |= args.no_parallels;
    c.end_on_tonic |= args.end_on_tonic;
    c.end_on_final |= args.end_on_final;
    c.in_key |= args.in_key;
    let from_prompt = req.prompt.meta.gen.seed;
    req.seed = args.seed.or(from_prompt).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
    });
    Ok(req)
}

/// The file stem of take `index` (from 0) of `count`: `take-01` ... numbered with as many
/// digits as `count` needs (at least two), so that the files sort in the order they were made
/// (`cadenza eval` reads a folder in name order and numbers its tunes so).
fn take_stem(index: usize, count: usize) -> String {
    let width = count.max(1).to_string().len().max(2);
    format!("take-{:0width$}", index + 1)
}

/// Writes a take (prompt and continuation) with the prompt's pickup as it was written; a take
/// from an empty prompt that opens with a silent lead starts with its pickup instead.
fn write_take(take: &Take, pickup: crate::time::Tick, path: &Path) -> anyhow::Result<()> {
    write_score(&take_score(take, pickup), path)
}

/// A take's score with the prompt's pickup restored (or, from an empty prompt, the pickup its
/// silent lead implies).
fn take_score(take: &Take, pickup: crate::time::Tick) -> Score {
    // Every note generated: the prompt had none.
    let prompt_empty = take.notes.len() == take.score.notes.len();
    let pickup = if pickup == 0 && prompt_empty { take.score.implied_pickup() } else { pickup };
    take.score.restore_pickup(pickup)
}

/// Writes `.mid` or `.abc` by the path's extension.
fn write_score(score: &Score, path: &Path) -> anyhow::Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "mid" | "midi" => crate::sink::midi_file::write(score, path)?,
        "abc" => crate::sink::abc::write(score, path)?,
        _ => bail!("{}: unknown output format `.{ext}` (use .mid or .abc)", path.display()),
    }
    Ok(())
}

/// Most takes one command writes.
pub const MAX_COUNT: usize = 10_000;

/// Refuses an output path that cannot work before any time is spent generating.
fn check_output(args: &Args) -> anyhow::Result<()> {
    if args.count == 0 || args.count > MAX_COUNT {
        bail!("-n must be 1..={MAX_COUNT}, got {}", args.count);
    }
    let ext = args.out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match (args.count, ext.as_deref()) {
        (1, Some("mid" | "midi" | "abc")) => Ok(()),
        (1, Some(other)) => bail!("{}: unknown output format `.{other}` (use .mid or .abc)", args.out.display()),
        (n, Some("mid" | "midi" | "abc")) if n > 1 => {
            bail!("-n {n} writes a folder of takes; {} names a file", args.out.display())
        }
        _ => Ok(()),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args)?;
    let prompt = prompt(&args)?;
    let fallback = if args.harmonize.is_some() { "chorale" } else { crate::model::DEFAULT_MODEL };
    let model = args.model.clone().or(prompt.meta.gen.model.clone()).unwrap_or_else(|| fallback.to_string());
    let gen = Generator::load(&model)?;
    let style = args.style.clone().or_else(|| prompt.meta.style.clone());
    let req = request(&args, prompt, &gen.defaults_for(style.as_deref()))?;
    if let Some(path) = &args.harmonize {
        let melody = read_score(path)?;
        for i in 0..args.count {
            let take = crate::gen::harmonize(
                &gen,
                &melody,
                &Request { seed: req.seed.wrapping_add(i as u64), ..req.clone() },
                &std::sync::atomic::AtomicBool::new(false),
            )?;
            let out = if args.count == 1 {
                args.out.clone()
            } else {
                args.out.join(format!("{}.mid", take_stem(i, args.count)))
            };
            if i == 0 && args.count > 1 {
                std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            }
            write_take(&take, melody.meta.pickup, &out)?;
            eprintln!(
                "{}: {} notes around the melody's {}, seed {}",
                out.display(),
                take.notes.len(),
                path.display(),
                take.record.seed
            );
        }
        return Ok(());
    }
    if let Some(form) = args.form.as_deref().filter(|f| *f != "none") {
        let mut spec = crate::gen::FormSpec::parse(form, args.part_bars)?;
        spec.keep_bars = args.keep_bars.unwrap_or(spec.keep_bars);
        spec.cadence = !args.no_cadence;
        return run_forms(&args, &gen, &req, FormPlan::Every(&spec));
    }
    // Neither a form nor a length asked for: a model with a form prior draws one per take.
    if let Some(prior) = gen.form_prior().filter(|_| args.form.is_none() && matches!(req.length, Length::Tune)) {
        return run_forms(&args, &gen, &req, FormPlan::Drawn(prior));
    }
    let started = std::time::Instant::now();
    if args.count == 1 && args.out.extension().is_some() {
        let takes = gen.generate_batch(&req, 1)?;
        let secs = started.elapsed().as_secs_f64();
        let take = &takes[0];
        write_take(take, req.pickup, &args.out)?;
        eprintln!(
            "{}: {} notes, {} tokens, log-likelihood {:.2}, seed {} ({:.0} tokens/s)",
            args.out.display(),
            take.record.notes,
            take.record.ids.len(),
            take.record.log_likelihood,
            take.record.seed,
            take.record.ids.len() as f64 / secs.max(1e-9)
        );
        return Ok(());
    }
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let jsonl = args.out.join("takes.jsonl");
    let mut log = std::fs::File::create(&jsonl).with_context(|| format!("creating {}", jsonl.display()))?;
    // Batches of BATCH_ROWS takes, each written as soon as its batch is done: a long run shows
    // its progress and, stopped by Ctrl-C, keeps every take finished so far. Take i still gets
    // seed + i, so the takes do not depend on the batching.
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _sigterm = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    let bar = indicatif::ProgressBar::new(args.count as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} takes, {msg} ({elapsed} of ~{duration})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let (mut written, mut tokens) = (0usize, 0usize);
    let batches = args.count.div_ceil(BATCH_ROWS);
    let next_batch = std::sync::atomic::AtomicUsize::new(0);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Result<Vec<Take>, crate::gen::GenError>)>();
    std::thread::scope(|s| -> anyhow::Result<()> {
        for _ in 0..BATCHES_IN_FLIGHT.min(batches) {
            let done_tx = done_tx.clone();
            let (gen, req, cancel, next_batch) = (&gen, &req, &cancel, &next_batch);
            s.spawn(move || loop {
                let k = next_batch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if k >= batches || cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let first = k * BATCH_ROWS;
                let chunk = Request { seed: req.seed.wrapping_add(first as u64), ..req.clone() };
                let rows = BATCH_ROWS.min(args.count - first);
                let takes = gen.batch(&chunk, rows, cancel, &mut |_| {}).map(|b| b.takes());
                if done_tx.send((k, takes)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Batches finish out of order; each is written once those before it are.
        let mut write_in_order = || -> anyhow::Result<()> {
            let mut finished = std::collections::BTreeMap::new();
            for (k, takes) in &done_rx {
                finished.insert(k, takes);
                while let Some(takes) = finished.remove(&(written / BATCH_ROWS)) {
                    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                        return Ok(()); // a batch stopped half way is not kept: its takes are cut short
                    }
                    for take in takes? {
                        let stem = take_stem(written, args.count);
                        for ext in ["mid", "abc"] {
                            write_take(&take, req.pickup, &args.out.join(format!("{stem}.{ext}")))?;
                        }
                        let mut line = serde_json::to_value(&take.record)?;
                        line["file"] = serde_json::Value::String(format!("{stem}.mid"));
                        writeln!(log, "{}", serde_json::to_string(&line)?)
                            .with_context(|| format!("writing {}", jsonl.display()))?;
                        tokens += take.record.ids.len();
                        written += 1;
                    }
                    bar.set_position(written as u64);
                    bar.set_message(format!(
                        "{:.0} tokens/s",
                        tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)
                    ));
                }
            }
            Ok(())
        };
        // On an error the batch still running stops at its next step instead of finishing.
        let result = write_in_order();
        if result.is_err() {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let stopped =
        if written < args.count { format!(" (stopped: {} of {} kept)", written, args.count) } else { String::new() };
    eprintln!(
        "{}: {} takes, {} tokens in {:.2} s ({:.0} tokens/s), seeds {}..={}{stopped}",
        args.out.display(),
        written,
        tokens,
        secs,
        tokens as f64 / secs.max(1e-9),
        req.seed,
        req.seed.wrapping_add(written.max(1) as u64 - 1)
    );
    if written < args.count {
        anyhow::bail!("stopped after {written} of {} takes; those are written", args.count);
    }
    Ok(())
}

/// Takes generated together in one batch by `generate -n`: enough rows to keep the cores busy,
/// few enough that every batch is written within seconds and rows that end early do not wait
/// long for the longest.
const BATCH_ROWS: usize = 32;

/// Batches `generate -n` runs at once. A batch lasts as long as its longest take, and its last
/// few rows run on one core; with a second batch beside it the other core stays busy. 300 folk
/// GPT takes, one batch at a time against two, in pairs of runs on this 2-core machine: 42.4 s
/// against 37.6, 46.2 against 43.0, 48.2 against 46.2 (folk-lstm's 12-15 s moved within the
/// machine's noise). Takes and seeds do not change: batch k always draws seeds + 32k. Memory:
/// two batches' model states at once (the folk GPT's KV cache at its full 1,024 ids is 12 MB a
/// row, 384 MB a batch).
const BATCHES_IN_FLIGHT: usize = 2;

/// Where the forms of [`run_forms`] come from.
enum FormPlan<'a> {
    /// `--form`: this one for every take.
    Every(&'a crate::gen::FormSpec),
    /// The model's form prior: one drawn per take from its seed (perhaps none).
    Drawn(&'a crate::gen::FormPrior),
}

/// Takes made one at a time, each a whole form with its sections generated one after another
/// (or, where the prior draws none, a plain take). Each is written as soon as it is made.
fn run_forms(args: &Args, gen: &Generator, req: &Request, plan: FormPlan<'_>) -> anyhow::Result<()> {
    // Ctrl-C and SIGTERM stop the take being made (its generation checks the flag every token);
    // every take written before stays, as with batches.
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _sigint = signal_hook::flag::register(signal_hook::consts::SIGINT, cancel.clone());
    let _sigterm = signal_hook::flag::register(signal_hook::consts::SIGTERM, cancel.clone());
    let stopped =
        |written: usize| anyhow::anyhow!("stopped after {written} of {} takes; those are written", args.count);
    let single = args.count == 1 && args.out.extension().is_some();
    if !single {
        std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    }
    let mut log = if single {
        None
    } else {
        let jsonl = args.out.join("takes.jsonl");
        Some(std::fs::File::create(&jsonl).with_context(|| format!("creating {}", jsonl.display()))?)
    };
    // A given form spaces the seeds by its sections (section k of take i draws with seed +
    // k); a drawn one keeps seed + i, so `--seed` of a take alone makes it again.
    let plans: Vec<(u64, Option<&crate::gen::FormSpec>)> = (0..args.count)
        .map(|i| match plan {
            FormPlan::Every(spec) => (req.seed.wrapping_add(i as u64 * spec.sections.len() as u64), Some(spec)),
            FormPlan::Drawn(prior) => {
                let seed = req.seed.wrapping_add(i as u64);
                (seed, prior.pick(seed))
            }
        })
        .collect();
    // The takes that draw no form are plain takes: made a batch at a time, BATCH_ROWS takes'
    // worth ahead (the chorale model's prior draws none for 60% of its takes, which one at a
    // time took several times as long).
    let mut plain = std::collections::VecDeque::new();
    for i in 0..args.count {
        let (seed, spec) = plans[i];
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stopped(i));
        }
        if i % BATCH_ROWS == 0 {
            let seeds: Vec<u64> = plans[i..(i + BATCH_ROWS).min(args.count)]
                .iter()
                .filter(|(_, spec)| spec.is_none())
                .map(|p| p.0)
                .collect();
            if !seeds.is_empty() {
                let batch = gen.batch_seeded(req, &seeds, &cancel, &mut |_| {})?;
                if cancel.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(stopped(i)); // a batch stopped half way is not kept
                }
                plain.extend(batch.takes());
            }
        }
        let request = Request { seed, ..req.clone() };
        let (score, sections, records) = match spec {
            Some(spec) => {
                let take = match crate::gen::generate_form(gen, &request, spec, &cancel) {
                    Err(_) if cancel.load(std::sync::atomic::Ordering::Relaxed) => return Err(stopped(i)),
                    take => take?,
                };
                let mut score = take.score.restore_pickup(req.pickup);
                // The take's seed (its sections draw with seed + k), so the file replays it.
                score.meta.gen.seed = Some(seed);
                let bar = score.meter().bar_ticks().max(1);
                let sections: Vec<String> = take
                    .sections
                    .iter()
                    .map(|p| {
                        let (from, to) = ((p.start - take.start) / bar + 1, (p.end - take.start).div_ceil(bar));
                        format!("{}@{from}-{to}", p.section)
                    })
                    .collect();
                (score, sections, take.records)
            }
            None => {
                let take = plain.pop_front().ok_or_else(|| anyhow::anyhow!("take {} was not made", i + 1))?;
                (take_score(&take, req.pickup), Vec::new(), vec![take.record])
            }
        };
        let paths: Vec<std::path::PathBuf> = if single {
            vec![args.out.clone()]
        } else {
            let stem = take_stem(i, args.count);
            vec![args.out.join(format!("{stem}.mid")), args.out.join(format!("{stem}.abc"))]
        };
        for path in &paths {
            write_score(&score, path)?;
        }
        let form = spec.map(|s| s.to_string());
        if let Some(log) = log.as_mut() {
            let line = serde_json::json!({
                "file": paths[0].file_name().and_then(|n| n.to_str()),
                "form": form,
                "seed": seed,
                "sections": sections,
                "generations": records,
            });
            writeln!(log, "{line}")?;
        }
        match form {
            Some(form) => {
                eprintln!("{}: form {form} (sections at bars {}), seed {seed}", paths[0].display(), sections.join(" "))
            }
            None => eprintln!("{}: no form drawn, {} notes, seed {seed}", paths[0].display(), score.notes.len()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::take_stem;

    #[test]
    fn take_names_sort_in_the_order_the_takes_were_made() {
        assert_eq!(take_stem(0, 8), "take-01");
        assert_eq!(take_stem(99, 300), "take-100");
        let mut names: Vec<String> = (0..300).map(|i| take_stem(i, 300)).collect();
        assert_eq!(names[0], "take-001");
        let made = names.clone();
        names.sort();
        assert_eq!(names, made);
    }
}
