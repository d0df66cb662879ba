//! Training corpora: fetches nothing, reads the unpacked music21 corpus into labelled Scores and splits it.
//!
//! `scripts/fetch-corpus.sh` unpacks music21's corpus into `corpus/music21/corpus/`. [`load`]
//! reads the collections a [`Filter`] names: ABC files through [`crate::dsl::parse_file_lenient`]
//! (damage inside a music line is skipped, as abc2midi does; a tune that still fails is counted
//! and left out) and the Bach chorales (MusicXML, `.mxl`)
//! through [`crate::sink::musicxml::read`]. Each [`Tune`] gets a style label from its collection:
//!
//! | collection (music21 folder) | files | style | composer |
//! | --- | --- | --- | --- |
//! | `essenFolksong` | `han1`, `han2` (China) | `chinese` | — |
//! | `essenFolksong` | `irl` (Ireland) | `irish` | — |
//! | `essenFolksong` | `lot` (Lorraine), `lux` (Luxembourg) | `european` | — |
//! | `essenFolksong` | `test0`, `test1`, `testd`, `teste` | skipped (music21's test copies) | — |
//! | `essenFolksong` | every other file: `altdeu*`, `ballad*`, `boehme*`, `dva0`, `erk*`, `fink0`, `folkHaydn`, `kinder0`, `variant0`, `zuccal0` | `german` | — |
//! | `oneills1850` | all | `irish` | — |
//! | `ryansMammoth` | all | `irish` | — |
//! | `airdsAirs` | all | `scottish` | — |
//! | `bach` | `bwv*.mxl` / `.xml` except `bwv846` (a keyboard prelude) | `chorale` | `bach` |
//!
//! "german" means the German-language collections of the Essen folksong database: their `O:`
//! fields are overwhelmingly German regions, with a minority from German-speaking areas abroad
//! (Austria, Switzerland, Gottschee, Silesia); `lot` and `lux` are whole collections from
//! Lorraine and Luxembourg, so they get their own label.
//!
//! The train/validation split is by tune *title* (so the same tune transcribed twice, as
//! O'Neill's `_mh`/`_ml` files do, never sits on both sides): a tune is in validation when a
//! seeded FNV-1a hash of its collection's style and normalized title falls below the validation
//! fraction. The split does not depend on which other collections are loaded or on file order.

use crate::score::Score;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What can go wrong reading a corpus.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("no music21 corpus under {0} (run scripts/fetch-corpus.sh; looked for essenFolksong/ and bach/)")]
    NotFound(String),
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("cache {path}: {reason}")]
    Cache { path: String, reason: String },
}

/// The collections of the music21 corpus we train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Collection {
    Essen,
    ONeills,
    Ryans,
    Airds,
    Chorales,
}

impl Collection {
    pub const ALL: [Collection; 5] =
        [Collection::Essen, Collection::ONeills, Collection::Ryans, Collection::Airds, Collection::Chorales];
    pub const FOLK: [Collection; 4] = [Collection::Essen, Collection::ONeills, Collection::Ryans, Collection::Airds];

    /// The folder inside music21's `corpus/`.
    pub fn folder(self) -> &'static str {
        match self {
            Collection::Essen => "essenFolksong",
            Collection::ONeills => "oneills1850",
            Collection::Ryans => "ryansMammoth",
            Collection::Airds => "airdsAirs",
            Collection::Chorales => "bach",
        }
    }

    pub fn from_name(name: &str) -> Option<Collection> {
        Collection::ALL
            .into_iter()
            .find(|c| c.folder().eq_ignore_ascii_case(name) || c.short().eq_ignore_ascii_case(name))
    }

    /// Short name for command lines: `essen`, `oneills`, `ryans`, `airds`, `chorales`.
    pub fn short(self) -> &'static str {
        match self {
            Collection::Essen => "essen",
            Collection::ONeills => "oneills",
            Collection::Ryans => "ryans",
            Collection::Airds => "airds",
            Collection::Chorales => "chorales",
        }
    }
}

/// The style (and composer) a file of a collection is labelled with; `None` skips the file.
/// This is the table in the module docs.
pub fn label(collection: Collection, file_stem: &str) -> Option<(&'static str, Option<&'static str>)> {
    match collection {
        Collection::Essen => match file_stem {
            "han1" | "han2" => Some(("chinese", None)),
            "irl" => Some(("irish", None)),
            "lot" | "lux" => Some(("european", None)),
            s if s.starts_with("test") => None,
            _ => Some(("german", None)),
        },
        Collection::ONeills | Collection::Ryans => Some(("irish", None)),
        Collection::Airds => Some(("scottish", None)),
        Collection::Chorales => {
            if file_stem.starts_with("bwv846") {
                None
            } else {
                Some(("chorale", Some("bach")))
            }
        }
    }
}

/// One labelled piece.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tune {
    /// `folder/file#X` (or `folder/file` for one-piece files): unique and stable.
    pub id: String,
    pub collection: Collection,
    pub title: Option<String>,
    /// The style label (also in `score.meta.style`).
    pub style: String,
    /// Length of the anacrusis (pickup) the tune starts with, in ticks; 0 when it starts on a
    /// bar line. The score was shifted so its bar lines fall where the ABC's do ([`Score::align_pickup`]).
    #[serde(default)]
    pub pickup: crate::time::Tick,
    pub score: Score,
}

/// Which tunes to load and how to split them.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub collections: Vec<Collection>,
    /// Keep only these styles (after labelling); empty keeps all.
    pub styles: Vec<String>,
    /// Fraction of tune titles held out for validation.
    pub valid_fraction: f64,
    pub seed: u64,
    /// Read at most this many tunes per collection (quick experiments and tests).
    pub limit: Option<usize>,
    /// Drop tunes with fewer notes than this (fragments, parse leftovers).
    pub min_notes: usize,
}

impl Default for Filter {
    fn default() -> Self {
        Filter {
            collections: Collection::FOLK.to_vec(),
            styles: Vec::new(),
            valid_fraction: 0.05,
            seed: 1,
            limit: None,
            min_notes: 8,
        }
    }
}

impl Filter {
    /// The folk collections (Essen, O'Neill's, Ryan's, Aird's).
    pub fn folk() -> Self {
        Filter::default()
    }

    /// The Bach chorales.
    pub fn chorales() -> Self {
        Filter { collections: vec![Collection::Chorales], ..Filter::default() }
    }
}

/// Counts of what loading did, per collection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub files: usize,
    pub tunes: usize,
    /// Tunes that failed to parse (first few errors in `errors`).
    pub failed: usize,
    /// Tunes read with something skipped (`dsl::parse_file_lenient`: damaged text such as
    /// quoted-printable `=20` line ends, as abc2midi reads past it).
    #[serde(default)]
    pub repaired: usize,
    /// Tunes dropped as too short or filtered by style.
    pub dropped: usize,
    pub errors: Vec<String>,
}

/// A loaded corpus, split.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub train: Vec<Tune>,
    pub valid: Vec<Tune>,
    pub stats: Vec<(Collection, Stats)>,
}

impl Corpus {
    /// Every style label present, sorted (for building a vocabulary's `CondSpec`).
    pub fn styles(&self) -> Vec<String> {
        let mut s: Vec<String> = self.train.iter().chain(&self.valid).map(|t| t.style.clone()).collect();
        s.sort();
        s.dedup();
        s
    }

    /// A one-line-per-collection summary for logs and model cards.
    pub fn summary(&self) -> String {
        let mut out = format!("{} train + {} validation tunes\n", self.train.len(), self.valid.len());
        for (c, s) in &self.stats {
            out += &format!(
                "  {:<14} {:>5} files {:>6} tunes {:>5} failed to parse {:>5} read with skips {:>5} dropped\n",
                c.folder(),
                s.files,
                s.tunes,
                s.failed,
                s.repaired,
                s.dropped
            );
        }
        out
    }
}

/// Finds music21's `corpus/` folder from `dir`: the repo root, `corpus/`, `corpus/music21/`, or
/// the folder itself.
pub fn find_root(dir: &Path) -> Result<PathBuf, CorpusError> {
    let candidates = [
        dir.to_path_buf(),
        dir.join("corpus"),
        dir.join("music21").join("corpus"),
        dir.join("corpus").join("music21").join("corpus"),
    ];
    candidates
        .into_iter()
        .find(|c| c.join("essenFolksong").is_dir() || c.join("bach").is_dir())
        .ok_or_else(|| CorpusError::NotFound(dir.display().to_string()))
}

/// Stable 64-bit FNV-1a, so the split is the same on every machine and Rust version.
fn fnv1a(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(text.as_bytes()) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// True when a tune belongs to the validation side.
pub fn is_valid(tune: &Tune, fraction: f64, seed: u64) -> bool {
    let title: String =
        tune.title.as_deref().unwrap_or(&tune.id).to_lowercase().chars().filter(|c| c.is_alphanumeric()).collect();
    let key = format!("{}|{}", tune.style, title);
    (fnv1a(seed, &key) as f64 / u64::MAX as f64) < fraction
}

/// Reads, labels and splits the collections `filter` names from music21's corpus under `dir`.
pub fn load(dir: &Path, filter: &Filter) -> Result<Corpus, CorpusError> {
    let root = find_root(dir)?;
    let mut corpus = Corpus::default();
    for &c in &filter.collections {
        let (tunes, mut stats) = read_collection(&root, c, filter.limit)?;
        for t in tunes {
            if t.score.notes.len() < filter.min_notes
                || (!filter.styles.is_empty() && !filter.styles.contains(&t.style))
            {
                stats.dropped += 1;
                continue;
            }
            if is_valid(&t, filter.valid_fraction, filter.seed) {
                corpus.valid.push(t);
            } else {
                corpus.train.push(t);
            }
        }
        corpus.stats.push((c, stats));
    }
    Ok(corpus)
}

/// Every tune of one collection, labelled, in file order.
pub fn read_collection(root: &Path, c: Collection, limit: Option<usize>) -> Result<(Vec<Tune>, Stats), CorpusError> {
    let dir = root.join(c.folder());
    let io = |p: &Path, e: std::io::Error| CorpusError::Io { path: p.display().to_string(), reason: e.to_string() };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| io(&dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            match c {
                Collection::Chorales => ext == "mxl" || ext == "xml",
                _ => ext == "abc",
            }
        })
        .collect();
    files.sort();
    let mut stats = Stats::default();
    let mut tunes = Vec::new();
    for path in files {
        if limit.is_some_and(|l| tunes.len() >= l) {
            break;
        }
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        let Some((style, composer)) = label(c, &stem) else { continue };
        let file_name = path.file_name().and_then(|s| s.to_str()).unwrap_or("").to_string();
        stats.files += 1;
        let err = |stats: &mut Stats, msg: String| {
            stats.failed += 1;
            if stats.errors.len() < 20 {
                stats.errors.push(msg);
            }
        };
        let mut add = |mut score: Score, id: String, title: Option<String>, pickup: crate::time::Tick| {
            score.meta.style = Some(style.to_string());
            score.meta.composer = composer.map(String::from);
            tunes.push(Tune { id, collection: c, title, style: style.to_string(), pickup, score });
        };
        if c == Collection::Chorales {
            stats.tunes += 1;
            match read_chorale(&path) {
                Ok(score) => {
                    let title = score.meta.title.clone().or_else(|| Some(stem.clone()));
                    add(score, format!("{}/{}", c.folder(), file_name), title, 0)
                }
                Err(e) => err(&mut stats, format!("{file_name}: {e}")),
            }
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        // Some Essen files are Latin-1; the music is ASCII, so a lossy read loses only accents.
        let text = String::from_utf8_lossy(&bytes);
        let results = crate::dsl::parse_file_lenient(&text);
        for (i, r) in results.into_iter().enumerate() {
            stats.tunes += 1;
            stats.repaired += (!r.skipped.is_empty() && r.result.is_ok()) as usize;
            let id = match r.x {
                Some(x) => format!("{}/{}#{}", c.folder(), file_name, x),
                None => format!("{}/{}#{}", c.folder(), file_name, i + 1),
            };
            match r.result {
                Ok(score) => {
                    let p = score.meta.pickup;
                    add(score.align_pickup(), id, r.title.clone(), p)
                }
                Err(e) => {
                    err(&mut stats, format!("{id} (line {}): {}", r.line, e.to_string().lines().next().unwrap_or("")))
                }
            }
        }
    }
    Ok((tunes, stats))
}

/// One chorale through the MusicXML reader, keeping the four sung parts as voices 0..=3
/// (soprano, alto, tenor, bass). Parts are recognised by name (`Soprano`, `S.`, `Alto` ...);
/// a file without names but with exactly four parts keeps them in score order. Instrumental
/// doublings and extra parts are dropped; anything else is an error (the chorale is skipped).
pub fn read_chorale(path: &Path) -> Result<Score, String> {
    let score = crate::sink::musicxml::read(path).map_err(|e| e.to_string())?;
    let sung: Vec<usize> =
        (0..score.voices.len()).filter(|&v| score.notes.iter().any(|n| n.voice as usize == v)).collect();
    let role = |name: &str| -> Option<usize> {
        let n = name.trim().to_lowercase();
        let n = n.trim_end_matches('.');
        [["soprano", "s", "sopran"], ["alto", "a", "alt"], ["tenor", "t", "tenore"], ["bass", "b", "basso"]]
            .iter()
            .position(|names| names.iter().any(|x| n == *x || (x.len() > 1 && n.starts_with(x))))
    };
    let mut map: Vec<Option<u8>> = vec![None; score.voices.len()];
    let mut found = [false; 4];
    for &v in &sung {
        if let Some(r) = role(&score.voices[v].name) {
            if !found[r] {
                found[r] = true;
                map[v] = Some(r as u8);
            }
        }
    }
    if !found.iter().all(|&f| f) {
        if sung.len() != 4 {
            let names: Vec<&str> = sung.iter().map(|&v| score.voices[v].name.as_str()).collect();
            return Err(format!("not four sung parts (parts with notes: {names:?})"));
        }
        map = vec![None; score.voices.len()];
        for (i, &v) in sung.iter().enumerate() {
            map[v] = Some(i as u8);
        }
    }
    let mut out = score.clone();
    out.notes = score
        .notes
        .iter()
        .filter_map(|n| {
            map.get(n.voice as usize).copied().flatten().map(|v| crate::score::Note { voice: v, channel: v, ..*n })
        })
        .collect();
    out.voices = ["S", "A", "T", "B"]
        .iter()
        .enumerate()
        .map(|(i, name)| crate::score::Voice { name: name.to_string(), channel: i as u8, program: 52 })
        .collect();
    out.normalize();
    Ok(out)
}

/// Seeded augmentation of training Scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Augment {
    /// Transpose by a uniformly drawn number of semitones in this range (inclusive), among the
    /// shifts that keep every pitch inside `pitch_range`.
    pub transpose: (i32, i32),
    /// Range every note must stay in (the instrument's, or the encoding's pitch tokens).
    pub pitch_range: (u8, u8),
    /// Time-stretch ratios (num, den) to draw from, for time-based encodings (notewise,
    /// chordwise); the tempo is scaled with it so the music sounds the same in seconds. Ratios
    /// are kept only when every note stays on a grid of `stretch_grid` ticks.
    pub stretch: Vec<(u64, u64)>,
    pub stretch_grid: crate::time::Tick,
    /// Add a uniform offset in `-j..=j` to each velocity (kept in 1..=127).
    pub velocity_jitter: u8,
    /// Probability that each label (style, composer, instrument) is removed, so the model also
    /// learns the `<unk>` prefix ("any style"). Key and meter are kept: they shape the bars.
    pub cond_dropout: f64,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            transpose: (0, 0),
            pitch_range: (0, 127),
            stretch: Vec::new(),
            stretch_grid: 40,
            velocity_jitter: 0,
            cond_dropout: 0.0,
        }
    }
}

impl Augment {
    /// A new randomly varied copy of `score`, drawn from `rng` (seed it for reproducible runs).
    pub fn apply<R: Rng>(&self, score: &Score, rng: &mut R) -> Score {
        let mut out = score.clone();
        let (lo, hi) = (self.transpose.0.min(self.transpose.1), self.transpose.0.max(self.transpose.1));
        if lo != 0 || hi != 0 {
            let pitched = out.notes.iter().filter(|n| n.channel != 9);
            let min = pitched.clone().map(|n| n.pitch as i32).min();
            let max = pitched.map(|n| n.pitch as i32).max();
            if let (Some(min), Some(max)) = (min, max) {
                let (rlo, rhi) = (self.pitch_range.0 as i32, self.pitch_range.1.min(127) as i32);
                let shifts: Vec<i32> = (lo..=hi).filter(|s| min + s >= rlo && max + s <= rhi).collect();
                if !shifts.is_empty() {
                    let s = shifts[rng.gen_range(0..shifts.len())];
                    if let Ok(t) = out.transpose(s) {
                        out = t;
                    }
                }
            }
        }
        if !self.stretch.is_empty() {
            let (num, den) = self.stretch[rng.gen_range(0..self.stretch.len())];
            let grid = self.stretch_grid.max(1);
            let on_grid =
                |t: crate::time::Tick| (t * num).is_multiple_of(den) && (t * num / den.max(1)).is_multiple_of(grid);
            if num > 0 && den > 0 && out.notes.iter().all(|n| on_grid(n.start) && on_grid(n.dur)) {
                if let Ok(mut s) = out.stretch(num, den) {
                    let bpm = s.meta.tempo.bpm_at(0) * num as f64 / den as f64;
                    s.meta.tempo = crate::time::TempoMap::constant(bpm);
                    out = s;
                }
            }
        }
        if self.velocity_jitter > 0 {
            let j = self.velocity_jitter as i32;
            for n in &mut out.notes {
                n.velocity = (n.velocity as i32 + rng.gen_range(-j..=j)).clamp(1, 127) as u8;
            }
        }
        if self.cond_dropout > 0.0 {
            for label in [&mut out.meta.style, &mut out.meta.composer, &mut out.meta.instrument] {
                if rng.gen_bool(self.cond_dropout.clamp(0.0, 1.0)) {
                    *label = None;
                }
            }
        }
        out
    }
}

/// Expected copies of each training tune per epoch so that a style with `n` tunes gets a share
/// of the epoch proportional to `n^(1 − balance)`, the epoch keeping its number of tunes.
///
/// `balance` 0 is the corpus as it is (every weight 1), 1 gives every style the same share; in
/// between (0.5: shares ∝ √n, as multilingual language models sample languages) the large
/// styles are thinned and the small ones repeated. Why: half the folk corpus is German, and a
/// model trained on it as it is writes Irish tunes with German habits (repeated pitches). Tunes
/// with no style label count as one style of their own.
pub fn style_balance_weights(styles: &[Option<&str>], balance: f64) -> Vec<f64> {
    let balance = if balance.is_finite() { balance.clamp(0.0, 1.0) } else { 0.0 };
    let mut counts: Vec<(Option<&str>, usize)> = Vec::new();
    for &s in styles {
        match counts.iter_mut().find(|(c, _)| *c == s) {
            Some((_, n)) => *n += 1,
            None => counts.push((s, 1)),
        }
    }
    let mass: f64 = counts.iter().map(|&(_, n)| (n as f64).powf(1.0 - balance)).sum();
    let total = styles.len() as f64;
    styles
        .iter()
        .map(|s| {
            let n = counts.iter().find(|(c, _)| c == s).map_or(1, |&(_, n)| n) as f64;
            total * n.powf(1.0 - balance) / mass / n
        })
        .collect()
}

/// How many copies of a tune of expected weight `w` this epoch: ⌊w⌋, plus one with
/// probability `w − ⌊w⌋`.
pub fn draw_copies<R: Rng>(w: f64, rng: &mut R) -> usize {
    let whole = w.floor();
    whole as usize + usize::from(rng.gen_bool((w - whole).clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Note;
    use rand::SeedableRng;

    fn tune(title: &str, style: &str) -> Tune {
        Tune {
            id: format!("x/{title}"),
            collection: Collection::Essen,
            title: Some(title.into()),
            style: style.into(),
            pickup: 0,
            score: Score::new(),
        }
    }

    #[test]
    fn style_balance_gives_shares_by_a_power_of_the_counts() {
        let styles: Vec<Option<&str>> = [vec![Some("german"); 400], vec![Some("irish"); 100], vec![None; 25]].concat();
        let w = style_balance_weights(&styles, 0.0);
        assert!(w.iter().all(|&w| (w - 1.0).abs() < 1e-12), "balance 0 keeps the corpus as it is");
        // Balance 1: three styles, a third of the 525 tunes each.
        let w = style_balance_weights(&styles, 1.0);
        assert!((w[0] * 400.0 - 175.0).abs() < 1e-9 && (w[400] * 100.0 - 175.0).abs() < 1e-9);
        assert!((w[500] * 25.0 - 175.0).abs() < 1e-9);
        // Balance 0.5: shares 20 : 10 : 5 of 525 tunes.
        let w = style_balance_weights(&styles, 0.5);
        assert!((w[0] * 400.0 - 300.0).abs() < 1e-9 && (w[400] * 100.0 - 150.0).abs() < 1e-9);
        assert!((w[500] * 25.0 - 75.0).abs() < 1e-9);
        assert!(style_balance_weights(&styles, f64::NAN).iter().all(|&w| (w - 1.0).abs() < 1e-12));
        // Drawn copies average the weight.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let copies: usize = (0..10_000).map(|_| draw_copies(2.3, &mut rng)).sum();
        assert!((22_700..23_300).contains(&copies), "{copies}");
    }

    #[test]
    fn pickups_are_found_and_aligned() {
        // Our Boys reel (Ryan's Mammoth): a 16th-note triplet pickup = an eighth (240 ticks) in 2/4.
        let text = "X: 1\nT: OUR BOYS -- REEL\nM: 2/4\nL: 1/16\nK: A\n(3(uefg) |\\\na2ed cAdB | cAdc B2(3(efg) |\n";
        let score = crate::dsl::parse(text).expect("parses");
        assert_eq!(score.meta.pickup, 240);
        let aligned = score.align_pickup();
        assert_eq!(aligned.notes[0].start, 720);
        // The first note after the bar line now starts bar 2 (tick 960).
        assert_eq!(aligned.notes[3].start, 960);
        assert_eq!(aligned.meta.pickup, 0);
        // Essen: `"chord" A | ...` with a decoration and a chord symbol before the pickup.
        let essen = "X:4\nM:4/4\nL:1/4\nK:E\n\"Am\"!p!A | AEAA | AB=cc |\n";
        assert_eq!(crate::dsl::parse(essen).expect("parses").meta.pickup, 480);
        // Ryan's `d "Segno"[|]`: an invisible bar line after the pickup.
        let segno = "X:1\nM:9/8\nL:1/8\nK:G\nd \"Segno\"[|]|: (g2.g) gfg efg | (a2.a) abg fed :|\n";
        assert_eq!(crate::dsl::parse(segno).expect("parses").meta.pickup, 240);
        // No pickup: the first bar is whole.
        let whole = "X:1\nM:3/4\nL:1/4\nK:C\nCDE | FGA |\n";
        assert_eq!(crate::dsl::parse(whole).expect("parses").meta.pickup, 0);
    }

    #[test]
    fn labels_follow_the_table() {
        assert_eq!(label(Collection::Essen, "han2"), Some(("chinese", None)));
        assert_eq!(label(Collection::Essen, "erk10"), Some(("german", None)));
        assert_eq!(label(Collection::Essen, "lux"), Some(("european", None)));
        assert_eq!(label(Collection::Essen, "test0"), None);
        assert_eq!(label(Collection::Airds, "book1"), Some(("scottish", None)));
        assert_eq!(label(Collection::Chorales, "bwv846"), None);
        assert_eq!(label(Collection::Chorales, "bwv269"), Some(("chorale", Some("bach"))));
    }

    #[test]
    fn split_is_by_title_and_stable() {
        // The same title lands on the same side whatever its id; about 5% go to validation.
        let a = tune("The Kesh Jig", "irish");
        let mut b = tune("the kesh  jig!", "irish");
        b.id = "other/file#3".into();
        assert_eq!(is_valid(&a, 0.05, 7), is_valid(&b, 0.05, 7));
        let n = (0..4000).filter(|i| is_valid(&tune(&format!("tune {i}"), "german"), 0.05, 1)).count();
        // FNV mixes near-identical short keys unevenly (300 here, not 200); on the real folk
        // titles the 5% split gives 668 of 12,674 tunes (5.3%). Kept as is: changing the hash
        // would reshuffle the split of models already trained.
        assert!((120..=360).contains(&n), "{n} of 4000 in validation");
        // Pinned: a change to the hash or key would silently reshuffle every trained model's split.
        assert_eq!(fnv1a(0, ""), 0xa8c7_f832_281a_39c5); // FNV-1a of eight zero bytes (Python: see report)
    }

    #[test]
    fn augmentation_stays_in_range_and_is_seeded() {
        let mut s = Score::new();
        for (i, p) in [60u8, 72, 84].iter().enumerate() {
            s.notes.push(Note::new(i as u64 * 480, 480, *p));
        }
        s.normalize();
        let aug = Augment { transpose: (-12, 12), pitch_range: (55, 90), velocity_jitter: 10, ..Default::default() };
        for seed in 0..50 {
            let mut r1 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut r2 = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let a = aug.apply(&s, &mut r1);
            assert_eq!(a, aug.apply(&s, &mut r2));
            let shift = a.notes[0].pitch as i32 - 60;
            assert!((-5..=6).contains(&shift), "shift {shift} leaves 55..=90");
            assert!(a.notes.iter().all(|n| (70..=90).contains(&n.velocity)));
        }
        let stretch = Augment { stretch: vec![(2, 1)], ..Default::default() };
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let st = stretch.apply(&s, &mut r);
        assert_eq!(st.notes[1].start, 960);
        assert!((st.meta.tempo.bpm_at(0) - 240.0).abs() < 1e-6);
    }
}
