//! `cadenza eval TAKES --against STYLE|DIR`: measures generated takes against held-out real
//! tunes (feature overlap, a classifier's AUC, novelty against the training tunes, BLEU), with
//! "real vs real" and optionally a Markov baseline as rows to read the numbers by.

use crate::corpus::{Collection, Filter};
use crate::eval::{self, Options, Sets};
use crate::score::Score;
use crate::sink::files::Kind;
use crate::sink::{midi_file, musicxml};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};

/// The styles `--against` knows (the corpus's labels, see `corpus::label`).
pub const STYLES: [&str; 6] = ["irish", "scottish", "german", "chinese", "european", "chorale"];

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The takes: a folder of .mid/.abc (and MusicXML) files, or one .abc file of many tunes.
    pub takes: PathBuf,
    /// A style (irish, scottish, german, chinese, european, chorale): compare with the corpus's
    /// held-out (validation) tunes of that style. Or a folder (or .abc file) of real tunes.
    #[arg(long)]
    pub against: String,
    /// The music21 corpus (see scripts/fetch-corpus.sh): held-out tunes for a style, and the
    /// training tunes novelty and --markov use.
    #[arg(long, default_value = "corpus/music21")]
    pub corpus: PathBuf,
    /// Share of tunes held out, as given to `cadenza train` (the split must be the model's).
    #[arg(long, default_value_t = 0.05)]
    pub valid_fraction: f64,
    /// The split seed given to `cadenza train` (its --seed).
    #[arg(long, default_value_t = 1)]
    pub split_seed: u64,
    /// Measure novelty against every training tune of the corpus, not only the style's.
    #[arg(long)]
    pub novelty_all: bool,
    /// Notes a shared run must have to count as copied.
    #[arg(long, default_value_t = 16)]
    pub ngram: usize,
    /// Add a row for takes sampled from a 3rd-order Markov chain fitted on the training tunes.
    #[arg(long)]
    pub markov: bool,
    /// Count the length features (bars, notes, duration) in the mean overlap and classifier.
    #[arg(long)]
    pub with_length: bool,
    /// BLEU weights for n = 1, 2, ... (comma-separated).
    #[arg(long, default_value = "0.25,0.25,0.25,0.25")]
    pub bleu_weights: String,
    /// Cross-validation folds of the classifier.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Runs of the cross-validation, each on fresh subsamples and folds, averaged (the AUC of a
    /// single run varies widely when the real side has few tunes).
    #[arg(long, default_value_t = crate::eval::classify::DEFAULT_REPEATS)]
    pub repeats: usize,
    /// Write the whole report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write every number as CSV (set,measure,value).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write every tune's features as CSV (set,tune,<feature>...), one line per tune.
    #[arg(long)]
    pub tunes_csv: Option<PathBuf>,
    /// Write one PNG per feature with the sets' distributions into this folder.
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Seed of the halves, the classifier's folds and the Markov takes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Read at most this many tunes per corpus collection (quick runs; changes the numbers).
    #[arg(long)]
    pub limit: Option<usize>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let bleu_weights = eval::bleu::parse_weights(&args.bleu_weights)?;
    if args.folds < 2 {
        bail!("--folds must be at least 2");
    }
    if args.ngram == 0 {
        bail!("--ngram must be at least 1");
    }
    let takes = read_tunes(&args.takes, "takes")?;
    let against_path = Path::new(&args.against);
    let style = args.against.trim().to_lowercase();
    let (held_out, training, reference) = if against_path.exists() {
        let held = read_tunes(against_path, "--against")?;
        let chorales = held.iter().chain(&takes).any(|s| voices(s) >= 3);
        let training = if args.corpus.exists() {
            let mut collections = Collection::FOLK.to_vec();
            if chorales {
                collections.push(Collection::Chorales);
            }
            load_training(&args, collections)?
        } else {
            eprintln!("note: no corpus at {}: novelty and --markov are left out", args.corpus.display());
            Vec::new()
        };
        (held, training, against_path.display().to_string())
    } else if STYLES.contains(&style.as_str()) {
        let (held, training) = load_style(&args, &style)?;
        (held, training, format!("held-out {style} tunes of {}", args.corpus.display()))
    } else {
        bail!("--against `{}` is neither a folder or file nor a style ({})", args.against, STYLES.join(", "));
    };
    eprintln!(
        "{}: {} takes; {reference}: {} tunes; {} training tunes for novelty",
        args.takes.display(),
        takes.len(),
        held_out.len(),
        training.len()
    );
    let opts = Options {
        seed: args.seed,
        with_length: args.with_length,
        bleu_weights,
        folds: args.folds,
        repeats: args.repeats,
        ngram: args.ngram,
        markov: args.markov,
    };
    let evaluation = eval::evaluate(Sets { takes: &takes, held_out: &held_out, training: &training }, &opts)?;
    let report = &evaluation.report;
    print!("{}", eval::report::table(report));
    if let Some(path) = &args.json {
        eval::report::write(path, &eval::report::json(report))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.csv {
        eval::report::write(path, &eval::report::csv(report))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &args.tunes_csv {
        eval::report::write(path, &eval::report::tunes_csv(&evaluation))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(dir) = &args.plots {
        let written = eval::plot::write_plots(dir, &evaluation)?;
        eprintln!("wrote {} plots to {}", written.len(), dir.display());
    }
    Ok(())
}

/// Voices with pitched notes.
fn voices(s: &Score) -> usize {
    let mut v: Vec<u8> = s.notes.iter().filter(|n| n.channel != 9).map(|n| n.voice).collect();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// The collections a style's tunes come from (see `corpus::label`).
fn collections_of(style: &str) -> Vec<Collection> {
    match style {
        "irish" => vec![Collection::Essen, Collection::ONeills, Collection::Ryans],
        "scottish" => vec![Collection::Airds],
        "chorale" => vec![Collection::Chorales],
        _ => vec![Collection::Essen],
    }
}

/// The validation tunes of `style` (held out) and the training tunes novelty is measured
/// against: the style's, or with `--novelty-all` every training tune of the corpus's folk
/// collections (chorales for `chorale`).
fn load_style(args: &Args, style: &str) -> anyhow::Result<(Vec<Score>, Vec<Score>)> {
    let all = args.novelty_all;
    let collections = match (style, all) {
        ("chorale", _) => vec![Collection::Chorales],
        (_, true) => Collection::FOLK.to_vec(),
        _ => collections_of(style),
    };
    let filter = Filter {
        collections,
        styles: if all { Vec::new() } else { vec![style.to_string()] },
        valid_fraction: args.valid_fraction,
        seed: args.split_seed,
        limit: args.limit,
        ..Filter::default()
    };
    let corpus = crate::corpus::load(&args.corpus, &filter)
        .with_context(|| format!("reading the corpus at {} (see scripts/fetch-corpus.sh)", args.corpus.display()))?;
    // The validation side of the training command's split: tunes no model trained on.
    let held: Vec<Score> = corpus.valid.into_iter().filter(|t| t.style == style).map(|t| t.score).collect();
    let training: Vec<Score> = corpus.train.into_iter().map(|t| t.score).collect();
    if held.is_empty() {
        bail!("the corpus has no held-out {style} tunes (valid fraction {})", args.valid_fraction);
    }
    Ok((held, training))
}

/// Training tunes (never validation ones) of `collections`, for novelty when comparing with a
/// folder.
fn load_training(args: &Args, collections: Vec<Collection>) -> anyhow::Result<Vec<Score>> {
    let filter = Filter {
        collections,
        valid_fraction: args.valid_fraction,
        seed: args.split_seed,
        limit: args.limit,
        ..Filter::default()
    };
    let corpus = crate::corpus::load(&args.corpus, &filter)
        .with_context(|| format!("reading the corpus at {}", args.corpus.display()))?;
    Ok(corpus.train.into_iter().map(|t| t.score).collect())
}

/// Every tune in `path`: a folder's .abc (every tune of each), .mid/.midi and MusicXML files in
/// name order, or one file. MusicXML with four sung parts keeps only those (as the corpus does). Files that fail to read are reported and skipped; tunes without
/// notes are dropped.
pub fn read_tunes(path: &Path, what: &str) -> anyhow::Result<Vec<Score>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && kind(p).is_some())
            .collect();
        f.sort();
        // `cadenza generate -o DIR` writes each take as take-01.abc and take-01.mid: count it once,
        // from the ABC (it keeps the meter, key and pickup the notation had).
        let before = f.len();
        let abc_stems: std::collections::HashSet<PathBuf> =
            f.iter().filter(|p| kind(p) == Some(Kind::Abc)).map(|p| p.with_extension("")).collect();
        f.retain(|p| kind(p) != Some(Kind::Midi) || !abc_stems.contains(&p.with_extension("")));
        if f.len() < before {
            eprintln!("{what}: {} MIDI files with an .abc of the same name read once, from the .abc", before - f.len());
        }
        f
    } else if kind(path).is_some() {
        vec![path.to_path_buf()]
    } else {
        bail!("{what} {}: not a folder or a .abc/.mid/.midi/.xml/.musicxml/.mxl file", path.display());
    };
    let mut tunes = Vec::new();
    let mut failed = Vec::new();
    for file in &files {
        if tunes.len() > eval::MAX_TUNES {
            bail!("{what} {}: more than {} tunes; evaluate a sample", path.display(), eval::MAX_TUNES);
        }
        match kind(file) {
            Some(Kind::Abc) => {
                let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
                for r in crate::dsl::parse_file(&String::from_utf8_lossy(&bytes)) {
                    match r.result {
                        Ok(s) => tunes.push(s),
                        Err(e) => failed.push(format!(
                            "{} (line {}): {}",
                            file.display(),
                            r.line,
                            e.to_string().lines().next().unwrap_or("")
                        )),
                    }
                }
            }
            Some(Kind::Midi) => match midi_file::read(file) {
                Ok(s) => tunes.push(s),
                Err(e) => failed.push(format!("{}: {e}", file.display())),
            },
            // A chorale is read as the corpus reads its chorales (the four sung parts, without
            // instrumental doublings that would count as parallel octaves); other MusicXML as is.
            Some(Kind::MusicXml) => match crate::corpus::read_chorale(file).or_else(|_| musicxml::read(file)) {
                Ok(s) => tunes.push(s),
                Err(e) => failed.push(format!("{}: {e}", file.display())),
            },
            None => {}
        }
    }
    if !failed.is_empty() {
        eprintln!("{what}: {} tunes could not be read and are left out, e.g.:", failed.len());
        for f in failed.iter().take(5) {
            eprintln!("  {f}");
        }
    }
    let before = tunes.len();
    tunes.retain(|s| s.notes.iter().any(|n| n.channel != 9));
    if tunes.len() < before {
        eprintln!("{what}: {} tunes without notes left out", before - tunes.len());
    }
    if tunes.is_empty() {
        bail!("{what} {}: no tune with notes", path.display());
    }
    Ok(tunes)
}

/// The file kinds `convert` knows, by extension (one table for both commands).
fn kind(path: &Path) -> Option<Kind> {
    Kind::of(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_folder_of_abc_and_midi() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.abc"),
            "X:1\nM:6/8\nL:1/8\nK:G\nGAG GAB|ABA ABd|\n\nX:2\nM:4/4\nL:1/8\nK:D\nDFAd fdAF|\n",
        )
        .unwrap();
        let s = crate::dsl::parse("X:1\nL:1/8\nK:C\nCDEF GABc|\n").unwrap();
        midi_file::write(&s, dir.path().join("b.mid")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not music").unwrap();
        // The same take as .abc and .mid (as `generate -o DIR` writes it) counts once.
        std::fs::write(dir.path().join("c.abc"), "X:1\nL:1/8\nK:C\nCDEF GABc|\n").unwrap();
        midi_file::write(&s, dir.path().join("c.mid")).unwrap();
        let tunes = read_tunes(dir.path(), "takes").unwrap();
        assert_eq!(tunes.len(), 4);
        assert_eq!(tunes[2].notes.len(), 8);
        assert!(read_tunes(&dir.path().join("notes.txt"), "takes").is_err());
    }

    #[test]
    fn runs_against_a_folder_and_writes_every_output() {
        let dir = tempfile::tempdir().unwrap();
        let tunes = |n: usize, step: &str| -> String {
            (1..=n)
                .map(|x| {
                    format!(
                        "X:{x}\nM:4/4\nL:1/8\nK:G\nG{step}B{step}d2 cBAG|{}|A4 G4|\n",
                        ["DEFG ABcd", "dcBA GFED"][x % 2]
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(dir.path().join("takes.abc"), tunes(12, "")).unwrap();
        std::fs::write(dir.path().join("real.abc"), tunes(12, "2")).unwrap();
        let out = dir.path().join("out");
        let args = Args {
            takes: dir.path().join("takes.abc"),
            against: dir.path().join("real.abc").display().to_string(),
            corpus: dir.path().join("no-corpus"),
            valid_fraction: 0.05,
            split_seed: 1,
            novelty_all: false,
            ngram: 16,
            markov: false,
            with_length: false,
            bleu_weights: "0.5,0.5".into(),
            folds: 3,
            repeats: 2,
            json: Some(dir.path().join("r.json")),
            csv: Some(dir.path().join("r.csv")),
            tunes_csv: Some(dir.path().join("tunes.csv")),
            plots: Some(out.clone()),
            seed: 1,
            limit: None,
        };
        run(args).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
        assert_eq!(json["rows"][0]["n"], 12);
        assert_eq!(json["options"]["bleu_weights"].as_array().unwrap().len(), 2);
        assert!(std::fs::read_to_string(dir.path().join("r.csv"))
            .unwrap()
            .starts_with("set,measure,value\ntakes,n,12\n"));
        assert!(out.join("interval_mean.png").exists());
        // One line per tune of each set (12 held-out, then 12 takes), every feature a column.
        let tunes = std::fs::read_to_string(dir.path().join("tunes.csv")).unwrap();
        let lines: Vec<&str> = tunes.lines().collect();
        assert_eq!(lines.len(), 1 + 12 + 12);
        assert!(lines[0].starts_with("set,tune,pch_0,"));
        assert!(lines[1].starts_with("held-out,1,"));
        assert!(lines[13].starts_with("takes,1,"));
        let columns = crate::eval::features::FEATURES.len() + 2;
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
    }
}
