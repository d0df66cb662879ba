//! `cadenza train`: corpus → encoding → ids → a trained model directory with its model card.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::corpus::{Augment, Collection, Filter};
use crate::model::markov::Markov;
use crate::model::train::{self, DataSource, TrainOptions, TrainReport};
use crate::model::{Config, GptConfig, LstmConfig, ModelError};
use crate::score::Score;
use crate::tokens::remi::{Remi, RemiConfig};
use crate::tokens::{CondSpec, Encoding};

/// Arguments of this command.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Corpus directory (the unpacked music21 corpus, see `scripts/`).
    #[arg(long)]
    pub corpus: PathBuf,
    /// Encoding: remi, tune (one melody with bar lines and repeats), notewise or chordwise.
    #[arg(long, default_value = "remi")]
    pub encoding: String,
    /// Architecture: gpt or lstm.
    #[arg(long, default_value = "gpt")]
    pub arch: String,
    /// Output directory, e.g. models/folk (not needed with --evaluate).
    #[arg(long, required_unless_present = "evaluate")]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// GPT only: start from this trained model (its weights and vocabulary) grown to --layers;
    /// the added blocks start as the identity (see `model::train::grow_from`).
    #[arg(long, conflicts_with_all = ["resume", "evaluate"])]
    pub init_from: Option<PathBuf>,
    /// Layers (transformer blocks or LSTM layers).
    #[arg(long, default_value_t = 4)]
    pub layers: usize,
    /// Width: GPT n_embd; LSTM embedding size.
    #[arg(long, default_value_t = 256)]
    pub dim: usize,
    /// Attention heads (GPT).
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// LSTM hidden size (default: 2 × dim).
    #[arg(long)]
    pub hidden: Option<usize>,
    /// Training window in ids (and the GPT's n_positions unless --positions is given).
    #[arg(long, default_value_t = 256)]
    pub context: usize,
    /// GPT positions (longest sequence at generation); at least --context.
    #[arg(long)]
    pub positions: Option<usize>,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 200)]
    pub warmup: usize,
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Clip gradients to this global norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f64,
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Training-time budget in minutes, counted across --resume runs.
    #[arg(long)]
    pub minutes: Option<f64>,
    /// Stop after this many optimizer steps in total.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Validate every N steps as well as after each epoch.
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// Early stopping: validations without improvement before stopping (0: never).
    #[arg(long, default_value_t = 3)]
    pub patience: usize,
    #[arg(long, default_value_t = 5.0)]
    pub checkpoint_minutes: f64,
    /// Collections to read (comma-separated): folk (= essen,oneills,ryans,airds), essen, oneills,
    /// ryans, airds, chorales.
    #[arg(long, value_delimiter = ',', default_value = "folk")]
    pub collections: Vec<String>,
    /// Keep only these styles (comma-separated, e.g. irish,scottish); empty keeps all.
    #[arg(long, value_delimiter = ',')]
    pub style_filter: Vec<String>,
    /// Voices with their own pitch tokens (REMI): 1 for melodies, 4 for SATB chorales.
    #[arg(long, default_value_t = 1)]
    pub voices: u32,
    /// Probability of dropping each training tune's style/composer/instrument label per epoch,
    /// so the model also learns the `<unk>` ("any style") prefix.
    #[arg(long, default_value_t = 0.1)]
    pub cond_dropout: f64,
    /// Style balance of the augmented epochs, 0 to 1: each style's share of an epoch is
    /// proportional to (its tunes)^(1 − B). 0 keeps the corpus as it is, 1 gives every style
    /// the same share, 0.5 shares by the square root (large styles thinned, small ones repeated).
    #[arg(long, default_value_t = 0.0)]
    pub style_balance: f64,
    /// Read at most this many tunes per collection (quick runs).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Share of tunes held out for validation.
    #[arg(long, default_value_t = 0.05)]
    pub valid_fraction: f64,
    /// Transpose each training tune by a random interval in ±N semitones each epoch (0: off).
    #[arg(long, default_value_t = 5)]
    pub transpose: i32,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute threads (sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Another model directory with the same vocabulary, scored on this run's validation split
    /// and compared in the card.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Score these model directories (same encoding and vocabulary) on this command's validation
    /// split, windows of --context ids in batches of --batch, and stop: no training. Compares
    /// models trained on different splits fairly, or f16 weights against the f32 they came from.
    #[arg(long, num_args = 1.., conflicts_with_all = ["resume", "export"])]
    pub evaluate: Vec<PathBuf>,
    /// No progress bar (log lines only).
    #[arg(long)]
    pub quiet: bool,
    /// Write the encoded corpus (ids per epoch, split, vocabulary, config) to this folder for
    /// `scripts/train_hf.py` (PyTorch, many GPUs) instead of training.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Training epochs `--export` writes (00 unaugmented, the rest augmented as training would).
    #[arg(long, default_value_t = 1, requires = "export")]
    pub export_epochs: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !(0.0..=1.0).contains(&args.style_balance) {
        bail!(
            "--style-balance {}: must be between 0 (the corpus as it is) and 1 (every style alike)",
            args.style_balance
        );
    }
    if let Some(n) = args.threads {
        // candle reads this when it sizes its thread pools, before any tensor work.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    // Before any tensor is allocated: a GPT training step is about 1.4x faster when glibc keeps
    // freed memory (see cli::heap).
    super::heap::keep_freed_memory();
    if !args.evaluate.is_empty() {
        for (dir, scored) in evaluate(&args)? {
            println!("{}: {}", dir.display(), scored.describe());
        }
        return Ok(());
    }
    let device = crate::model::device::by_name(&args.device)?;
    let out = args.out.clone().context("--out is required to train")?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    // Allocator settings a user gave (`MALLOC_*`, which override keep_freed_memory's) change
    // speed, so they are part of the exact command.
    let env: Vec<String> =
        std::env::vars().filter(|(k, _)| k.starts_with("MALLOC_")).map(|(k, v)| format!("{k}={v}")).collect();
    // argv[0] is whatever copy of the binary ran; the card names the command users type.
    let argv = std::iter::once("cadenza".to_string()).chain(std::env::args().skip(1));
    let command = env.into_iter().chain(argv).collect::<Vec<_>>().join(" ");
    append_command(&out, &command)?;

    if let Some(dir) = &args.init_from {
        for file in ["model.safetensors", "vocab.json"] {
            if !dir.join(file).is_file() {
                bail!("--init-from {}: no {file} there (a trained model's folder is needed)", dir.display());
            }
        }
    }
    let data = load_data(&args)?;
    let enc = &data.encoding;
    let vocab_size = enc.vocab().len();
    std::fs::write(out.join("vocab.json"), enc.vocab().to_json())
        .with_context(|| format!("writing {}", out.join("vocab.json").display()))?;
    // The keys of the training tunes as written (untransposed), which an open key is drawn
    // from, their lengths and the degrees they end on.
    let prior = crate::gen::HeaderPrior::build(enc.as_ref(), &data.train_scores);
    if !prior.is_empty() {
        let about = format!(
            "training tunes per (style, key, meter), per length and per final, untransposed, counted by: {command}"
        );
        prior.save(enc.as_ref(), &out.join(crate::gen::header_prior::FILE), &about)?;
    }
    let config = model_config(&args, vocab_size)?;
    let opts = TrainOptions {
        batch: args.batch,
        context: args.context,
        lr: args.lr,
        warmup: args.warmup,
        weight_decay: args.weight_decay,
        clip: args.clip,
        epochs: args.epochs,
        minutes: args.minutes,
        seed: args.seed,
        checkpoint_minutes: args.checkpoint_minutes,
        patience: args.patience,
        eval_every: args.eval_every,
        // Every encoded tune already starts with <bos> and ends with <eos>.
        separator: None,
        max_steps: args.max_steps,
        progress: !args.quiet,
        init_from: args.init_from.as_ref().map(|dir| dir.join("model.safetensors")),
        ..TrainOptions::default()
    };
    if args.init_from.is_some() && args.arch != "gpt" {
        bail!("--init-from grows a GPT; --arch {} cannot start from another model", args.arch);
    }

    eprintln!(
        "{}: {} training and {} validation tunes, {} validation ids, {} validation notes; vocabulary {}",
        out.display(),
        data.train_scores.len(),
        data.valid_ids.len(),
        data.valid_tokens(),
        data.valid_notes,
        vocab_size
    );
    // The baseline: a 3rd-order Markov chain on the same split and encoding (unaugmented
    // training tunes; α picked on the validation set, which flatters the baseline).
    let train_stream = train::stream(&data.base_train_ids, None);
    let valid_stream = train::stream(&data.valid_ids, None);
    let (markov, markov_loss) = Markov::fit_tuned(&train_stream, &valid_stream, 3, vocab_size);
    eprintln!("3rd-order Markov baseline: {markov_loss:.4} nats/id (alpha {})", markov.alpha());
    eprintln!("{}: {} parameters", config.arch(), config.param_count());

    let mut source = CorpusData {
        train: &data.train_scores,
        encoding: enc.as_ref(),
        valid: data.valid_ids.clone(),
        augment: data.augment.clone(),
        seed: args.seed,
        weights: crate::corpus::style_balance_weights(
            &data.train_scores.iter().map(|s| s.meta.style.as_deref()).collect::<Vec<_>>(),
            args.style_balance,
        ),
    };
    if let Some(dir) = &args.export {
        let meta = serde_json::json!({
            "encoding": enc.name(),
            "context": args.context,
            "markov_nats_per_id": markov_loss,
            "valid_notes": data.valid_notes,
            "split": { "valid_fraction": args.valid_fraction, "seed": args.seed },
            "command": command,
        });
        super::export::export(dir, &mut source, args.export_epochs, &enc.vocab().to_json(), &config.to_json(), meta)?;
        eprintln!("exported {} epoch(s) of ids to {}", args.export_epochs, dir.display());
        return Ok(());
    }
    let report = train::train(&config, &mut source, &opts, &out, args.resume, &device)?;
    // The model compared in the card, scored on this run's split (its own train.json may hold a
    // loss on another split or context).
    let compared = match &args.compare {
        Some(dir) => match score_model(dir, &data, &args, &device) {
            Ok(scored) => Some((dir.clone(), scored)),
            Err(e) => {
                eprintln!("--compare {}: not scored: {e:#}", dir.display());
                None
            }
        },
        None => None,
    };
    let run = CardRun { out: &out, command: &command, config: &config, opts: &opts, data: &data, report: &report };
    let card = model_card(&args, &run, markov_loss, markov.alpha(), compared.as_ref())?;
    std::fs::write(out.join("README.md"), card)
        .with_context(|| format!("writing {}", out.join("README.md").display()))?;
    eprintln!(
        "done ({}): best validation loss {:.4} nats/id vs Markov {:.4}; wrote {}",
        report.stopped_because,
        report.best_val_loss.unwrap_or(f64::NAN),
        markov_loss,
        out.display()
    );
    Ok(())
}

/// `--evaluate DIR...`: each model scored on the validation split these arguments cut.
pub fn evaluate(args: &Args) -> anyhow::Result<Vec<(PathBuf, Scored)>> {
    let device = crate::model::device::by_name(&args.device)?;
    let data = load_data(args)?;
    args.evaluate.iter().map(|dir| Ok((dir.clone(), score_model(dir, &data, args, &device)?))).collect()
}

/// A model's loss on a validation split.
#[derive(Debug, Clone)]
pub struct Scored {
    pub nats_per_id: f64,
    /// Ids predicted.
    pub ids: usize,
    /// Notes those ids decode to.
    pub notes: usize,
    pub params: usize,
}

impl Scored {
    pub fn bits_per_note(&self) -> f64 {
        bits_per_note(self.nats_per_id, self.ids, self.notes)
    }

    pub fn describe(&self) -> String {
        format!(
            "{:.4} nats/id, {:.3} bits/note over {} validation ids ({} parameters)",
            self.nats_per_id,
            self.bits_per_note(),
            self.ids,
            self.params
        )
    }
}

/// A loss over `ids` predicted ids as bits per note of the `notes` they decode to.
fn bits_per_note(nats_per_id: f64, ids: usize, notes: usize) -> f64 {
    nats_per_id * ids as f64 / std::f64::consts::LN_2 / notes.max(1) as f64
}

/// Scores the model in `dir` on `data`'s validation split, in windows of `--context` ids as
/// training validates. Its vocabulary must be this encoding's, id for id.
fn score_model(dir: &Path, data: &Data, args: &Args, device: &candle_core::Device) -> anyhow::Result<Scored> {
    let vocab_path = dir.join("vocab.json");
    let text = std::fs::read_to_string(&vocab_path).with_context(|| format!("reading {}", vocab_path.display()))?;
    let theirs = crate::tokens::Vocab::from_json(&text).with_context(|| format!("reading {}", vocab_path.display()))?;
    if theirs.to_json() != data.encoding.vocab().to_json() {
        bail!(
            "{}: not this encoding's vocabulary (`--encoding {}` with these options); its ids would mean other things",
            vocab_path.display(),
            args.encoding
        );
    }
    let config = crate::model::load::read_config(dir)?;
    if let Config::Gpt2(c) = &config {
        if c.n_positions < args.context {
            bail!("{}: n_positions {} is less than --context {}", dir.display(), c.n_positions, args.context);
        }
    }
    let vb = crate::model::load::weights_var_builder(dir, &config, device)?;
    let net =
        train::Net::new(&config, vb).with_context(|| format!("{}: weights do not fit config.json", dir.display()))?;
    let opts = TrainOptions { batch: args.batch, context: args.context, separator: None, ..TrainOptions::default() };
    let (nats_per_id, ids) = train::evaluate(&net, &data.valid_ids, &opts, device)?;
    Ok(Scored { nats_per_id, ids, notes: data.valid_notes, params: config.param_count() })
}

fn append_command(out: &Path, command: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let path = out.join("commands.txt");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{command}").with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn model_config(args: &Args, vocab_size: usize) -> anyhow::Result<Config> {
    let config = match args.arch.as_str() {
        "gpt" | "gpt2" => Config::Gpt2(GptConfig {
            vocab_size,
            n_positions: args.positions.unwrap_or(args.context).max(args.context),
            n_embd: args.dim,
            n_layer: args.layers,
            n_head: args.heads,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            embd_pdrop: args.dropout,
            // Attention dropout costs a random draw per score; residual dropout regularises enough.
            attn_pdrop: 0.0,
            resid_pdrop: args.dropout,
        }),
        "lstm" => Config::Lstm(LstmConfig {
            vocab_size,
            n_embd: args.dim,
            hidden_size: args.hidden.unwrap_or(2 * args.dim),
            n_layer: args.layers,
            dropout: args.dropout,
        }),
        other => bail!("unknown --arch `{other}` (expected gpt or lstm)"),
    };
    config.validate().map_err(|e| anyhow::anyhow!("model settings: {e}"))?;
    Ok(config)
}

/// The encoded corpus: training Scores (re-encoded each epoch with augmentation) and fixed
/// validation ids.
struct Data {
    encoding: Box<dyn Encoding>,
    train_scores: Vec<Score>,
    base_train_ids: Vec<Vec<u32>>,
    valid_ids: Vec<Vec<u32>>,
    /// Notes the validation ids decode to (for bits per note).
    valid_notes: usize,
    /// Human-readable description of what was loaded (collections, counts).
    description: String,
    augment: Augment,
}

impl Data {
    fn valid_tokens(&self) -> usize {
        train::stream(&self.valid_ids, None).len().saturating_sub(1)
    }
}

/// Training tunes re-encoded each epoch through a seeded augmentation (epoch 0 unaugmented).
struct CorpusData<'a> {
    train: &'a [Score],
    encoding: &'a dyn Encoding,
    valid: Vec<Vec<u32>>,
    augment: Augment,
    seed: u64,
    /// Expected copies of each training tune in an augmented epoch (`--style-balance`).
    weights: Vec<f64>,
}

impl DataSource for CorpusData<'_> {
    fn train_epoch(&mut self, epoch: usize) -> Result<Vec<Vec<u32>>, ModelError> {
        use rand::SeedableRng;
        if epoch == 0 {
            return Ok(self.train.iter().map(|s| self.encoding.encode(s)).collect());
        }
        // A function of the epoch alone, so a resumed run sees the same tunes.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed.wrapping_add(1_000_003 * epoch as u64));
        if self.weights.iter().all(|&w| w == 1.0) {
            return Ok(self.train.iter().map(|s| self.encoding.encode(&self.augment.apply(s, &mut rng))).collect());
        }
        // Its own generator, so that the copies drawn do not shift the augmentation's draws.
        let mut copies_rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ (0xBA1A_7CE5 + epoch as u64));
        let mut out = Vec::new();
        for (score, &w) in self.train.iter().zip(&self.weights) {
            for _ in 0..crate::corpus::draw_copies(w, &mut copies_rng) {
                out.push(self.encoding.encode(&self.augment.apply(score, &mut rng)));
            }
        }
        Ok(out)
    }

    fn valid(&self) -> &[Vec<u32>] {
        &self.valid
    }
}

fn load_data(args: &Args) -> anyhow::Result<Data> {
    let mut collections = Vec::new();
    for name in &args.collections {
        match name.trim().to_ascii_lowercase().as_str() {
            "folk" => collections.extend(Collection::FOLK),
            other => collections.push(Collection::from_name(other).ok_or_else(|| {
                anyhow::anyhow!("unknown collection `{other}` (folk, essen, oneills, ryans, airds, chorales)")
            })?),
        }
    }
    collections.dedup();
    let filter = Filter {
        collections,
        styles: args.style_filter.iter().map(|s| s.trim().to_lowercase()).collect(),
        valid_fraction: args.valid_fraction,
        seed: args.seed,
        limit: args.limit,
        ..Filter::default()
    };
    let corpus = crate::corpus::load(&args.corpus, &filter)?;
    if corpus.train.is_empty() || corpus.valid.is_empty() {
        bail!("the corpus gave {} training and {} validation tunes; need both", corpus.train.len(), corpus.valid.len());
    }
    // On --resume the saved vocabulary is authoritative: the ids must mean what they meant; so
    // is the first scored model's with --evaluate.
    let saved_vocab = match (&args.out, args.evaluate.first()) {
        (_, Some(dir)) => Some(dir.join("vocab.json")),
        (Some(out), None) if args.resume => Some(out.join("vocab.json")),
        (_, None) if args.init_from.is_some() => args.init_from.as_ref().map(|dir| dir.join("vocab.json")),
        _ => None,
    };
    let encoding: Box<dyn Encoding> = if let Some(vocab_path) = saved_vocab.filter(|p| p.exists()) {
        crate::tokens::load(&vocab_path)?
    } else {
        let mut spec = CondSpec::default();
        for style in corpus.styles() {
            if !spec.styles.contains(&style) {
                spec.styles.push(style);
            }
        }
        match (args.encoding.as_str(), args.voices) {
            ("remi", 4) => Box::new(Remi::new(RemiConfig::chorale(spec))?),
            ("remi", v) => Box::new(Remi::new(RemiConfig { voices: v.max(1), cond: spec, ..RemiConfig::default() })?),
            (name, _) => {
                let scores: Vec<Score> = corpus.train.iter().map(|t| t.score.clone()).collect();
                crate::tokens::build(name, &spec, &scores)?
            }
        }
    };
    let settings = encoding.vocab().settings.clone();
    let pitch_range = match encoding.name() {
        "remi" => serde_json::from_value::<RemiConfig>(settings).map_or((0, 127), |c| (c.pitch_lo, c.pitch_hi)),
        "tune" => serde_json::from_value::<crate::tokens::tune::TuneConfig>(settings)
            .map_or((0, 127), |c| (c.pitch_lo, c.pitch_hi)),
        _ => (0, 127),
    };
    let augment = Augment {
        transpose: (-args.transpose, args.transpose),
        pitch_range,
        cond_dropout: args.cond_dropout,
        ..Augment::default()
    };
    let train_scores: Vec<Score> = corpus.train.iter().map(|t| t.score.clone()).collect();
    let base_train_ids: Vec<Vec<u32>> = train_scores.iter().map(|s| encoding.encode(s)).collect();
    let valid_ids: Vec<Vec<u32>> = corpus.valid.iter().map(|t| encoding.encode(&t.score)).collect();
    let valid_notes = valid_ids.iter().map(|ids| encoding.decode(ids).score.notes.len()).sum();
    let mut styles: Vec<(String, usize)> = Vec::new();
    for t in corpus.train.iter().chain(&corpus.valid) {
        match styles.iter_mut().find(|(s, _)| *s == t.style) {
            Some((_, n)) => *n += 1,
            None => styles.push((t.style.clone(), 1)),
        }
    }
    let description = format!(
        "music21 corpus at `{}`, collections {} (style labels from the collection, see `src/corpus/mod.rs`):\n\n```\n{}```\n\n\
         - styles (tunes): {}\n- training ids (unaugmented): {}",
        args.corpus.display(),
        filter.collections.iter().map(|c| c.short()).collect::<Vec<_>>().join(", "),
        corpus.summary(),
        styles.iter().map(|(s, n)| format!("{s} ({n})")).collect::<Vec<_>>().join(", "),
        train::stream(&base_train_ids, None).len()
    );
    Ok(Data { encoding, train_scores, base_train_ids, valid_ids, valid_notes, description, augment })
}

/// What a finished run hands its model card.
struct CardRun<'a> {
    out: &'a Path,
    command: &'a str,
    config: &'a Config,
    opts: &'a TrainOptions,
    data: &'a Data,
    report: &'a TrainReport,
}

fn model_card(
    args: &Args,
    run: &CardRun<'_>,
    markov_loss: f64,
    markov_alpha: f64,
    compared: Option<&(PathBuf, Scored)>,
) -> anyhow::Result<String> {
    let CardRun { out, command, config, opts, data, report } = *run;
    use std::fmt::Write;
    let ln2 = std::f64::consts::LN_2;
    let name = out.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let val_tokens = data.valid_tokens();
    let per_note = |nats: f64| bits_per_note(nats, val_tokens, data.valid_notes);
    let commands = std::fs::read_to_string(out.join("commands.txt")).unwrap_or_else(|_| command.to_string());
    let mut s = String::new();
    let best = report.best_val_loss.unwrap_or(f64::NAN);
    writeln!(s, "# {name}\n")?;
    writeln!(
        s,
        "A {} over `{}` token ids, trained by `cadenza train` on this machine's CPU.\n",
        match config {
            Config::Gpt2(_) => "GPT-2-style transformer",
            Config::Lstm(_) => "multi-layer LSTM",
        },
        args.encoding
    )?;
    writeln!(s, "## Data\n\n{}\n", data.description)?;
    writeln!(
        s,
        "- split: by tune, {:.0}% held out for validation, seed {} ({} training tunes, {} validation tunes)",
        args.valid_fraction * 100.0,
        args.seed,
        data.train_scores.len(),
        data.valid_ids.len()
    )?;
    writeln!(
        s,
        "- validation: {} ids predicted (every id of the joined validation tunes but the first), {} notes",
        val_tokens, data.valid_notes
    )?;
    writeln!(
        s,
        "- augmentation: each epoch after the first, every training tune transposed by a random interval in \
         ±{} semitones (within the encoding's pitch range), and its style/composer/instrument labels dropped to \
         `<unk>` with probability {}{}\n",
        args.transpose,
        args.cond_dropout,
        if args.style_balance > 0.0 {
            format!(
                "; styles balanced ({}): each style's share of an augmented epoch is proportional to its \
                 tunes to the power {:.2}, the epoch keeping its number of tunes",
                args.style_balance,
                1.0 - args.style_balance.clamp(0.0, 1.0)
            )
        } else {
            String::new()
        }
    )?;
    writeln!(s, "## Command\n\n```sh\n{}```\n", commands)?;
    writeln!(s, "## Model and hyperparameters\n")?;
    writeln!(s, "- parameters: {}", report.params)?;
    writeln!(s, "- config.json:\n\n```json\n{}\n```\n", config.to_json())?;
    writeln!(s, "- training options:\n\n```json\n{}\n```\n", serde_json::to_string_pretty(opts)?)?;
    writeln!(s, "## Training\n")?;
    writeln!(
        s,
        "- {} steps, {} epochs completed, {} training ids seen, {:.1} minutes ({:.0} ids/s including validation)",
        report.steps,
        report.epochs_completed,
        report.tokens_seen,
        report.elapsed_secs / 60.0,
        report.tokens_per_sec
    )?;
    writeln!(
        s,
        "- stopped: {}; the weights are those of step {} (best validation)\n",
        report.stopped_because, report.best_step
    )?;
    writeln!(s, "| step | epoch | minutes | train loss | validation loss |\n| ---: | ---: | ---: | ---: | ---: |")?;
    for h in &report.history {
        writeln!(
            s,
            "| {} | {} | {:.1} | {} | {:.4} |",
            h.step,
            h.epoch,
            h.elapsed_secs / 60.0,
            h.train_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "—".into()),
            h.val_loss
        )?;
    }
    writeln!(s, "\n## Results (validation set)\n")?;
    writeln!(s, "| model | nats per id | bits per id | bits per note |\n| --- | ---: | ---: | ---: |")?;
    writeln!(s, "| this model | {:.4} | {:.4} | {:.3} |", best, best / ln2, per_note(best))?;
    writeln!(
        s,
        "| 3rd-order Markov chain (α = {markov_alpha}) | {:.4} | {:.4} | {:.3} |",
        markov_loss,
        markov_loss / ln2,
        per_note(markov_loss)
    )?;
    if let Some((dir, other)) = compared {
        writeln!(
            s,
            "| `{}` ({} parameters), scored on this split | {:.4} | {:.4} | {:.3} |",
            dir.display(),
            other.params,
            other.nats_per_id,
            other.nats_per_id / ln2,
            other.bits_per_note()
        )?;
    }
    writeln!(
        s,
        "\nThe Markov chain predicts each id from the three before it, with recursive add-α smoothing \
         (`src/model/markov.rs`), fitted on the unaugmented training tunes; α was chosen on the validation \
         set itself, which can only flatter it. Bits per note = total validation bits / notes.\n"
    )?;
    Ok(s)
}
