//! The keys a model's training tunes really use, per style and meter (`header_prior.json`),
//! drawn from when a take's key or meter is left open.
//!
//! Why not let the model draw the key: it was trained on tunes transposed by up to ±5
//! semitones (augmentation), so its key token learnt a blur of every transposition: unprompted
//! Irish takes came in Db and B. The corpus, untransposed, says Irish tunes are in D, G, A
//! minor... This table holds, for every (style, key, meter) token triple, how many training
//! tunes have it; the key is drawn from those counts (given the meter when the caller fixed
//! it), then an open meter given the style and key, and the model plays the tune in them. A
//! model without the file draws its keys and meters itself.
//!
//! The file also holds each style's tune lengths in bars, which a whole take is pushed to end
//! near (`Sampling::length_prior`): left alone, the folk GPT's German takes ran to 43 bars
//! where German tunes have 15.
//!
//! And each style's finals: the degree of the key (semitones above its tonic) each tune's
//! last note is on, which `end_on_final` ends a take on. Irish and Scottish tunes end on the
//! tonic of their `K:` line (about 80%); the Chinese tunes of the Essen collection, whose `K:`
//! is the major key of the signature, end on its fifth (46%), sixth (18%), tonic (14%) and
//! second (11%), the finals of the zhi, yu, gong and shang modes. Forcing the tonic there
//! made the Chinese takes less like the tunes, not more.

use super::GenError;
use crate::score::Score;
use crate::tokens::{Category, Encoding, TokenKind};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name beside a model's weights.
pub const FILE: &str = "header_prior.json";

/// Largest `header_prior.json` read (the table has at most styles × 84 keys × meters rows).
const MAX_BYTES: u64 = 4 << 20;

/// Longest tune the length table counts, in bars: a longer one counts as this long.
const MAX_TABLE_BARS: u32 = 1024;

/// A degree is one of a style's finals when at least this share of its tunes end on it: one
/// tune in ten (the Chinese tunes' four mode finals pass, the Irish tunes' rarer endings on
/// the second or fifth do not).
pub const FINAL_SHARE: f64 = 0.1;

/// The file as stored: token strings, so it survives vocabulary order and is readable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Stored {
    about: String,
    /// `[style token, key token, meter token, tunes]`.
    counts: Vec<(String, String, String, u64)>,
    /// `[style token, bars, tunes]`: how many tunes of each style play that many bars (repeats
    /// played). Files from before it lack it.
    #[serde(default)]
    bars: Vec<(String, u32, u64)>,
    /// `[style token, semitones above the tonic, tunes]`: how many tunes of each style end on
    /// that degree of their first key. Files from before it lack it.
    #[serde(default)]
    finals: Vec<(String, u8, u64)>,
}

/// One row of the table in ids.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Row {
    style: u32,
    key: u32,
    meter: u32,
    tunes: f64,
}

/// One row of the length table in ids.
#[derive(Debug, Clone, Copy, PartialEq)]
struct BarsRow {
    style: u32,
    bars: u32,
    tunes: f64,
}

/// One row of the finals table in ids.
#[derive(Debug, Clone, Copy, PartialEq)]
struct FinalsRow {
    style: u32,
    /// Semitones above the tonic, 0..12.
    degree: u8,
    tunes: f64,
}

/// The degrees a style's tunes end on (semitones above the tonic), each with its share of the
/// style's tunes, most common first.
#[derive(Debug, Clone, PartialEq)]
pub struct Finals(Vec<(u8, f64)>);

impl Finals {
    pub fn degrees(&self) -> Vec<u8> {
        self.0.iter().map(|&(d, _)| d).collect()
    }

    /// Nats added to the end id after a last note of each pitch class, in a key whose tonic is
    /// `tonic`: the log of the final's share over the commonest one's (0 after the commonest
    /// final, -1.9 after the German tunes' third, 12% against the tonic's 84%). The model left
    /// to choose among the finals ended German takes on the third 37% of the time and Chinese
    /// ones on the second 23% (the tunes 12% and 11%): its end id comes as readily after any
    /// final. Pitch classes that are no final get 0 (the cadence keeps the end from them).
    pub fn end_bias(&self, tonic: u8) -> [f32; 12] {
        let mut bias = [0.0f32; 12];
        let Some(&(_, top)) = self.0.first() else { return bias };
        for &(degree, share) in &self.0 {
            bias[((tonic + degree) % 12) as usize] = (share / top).ln() as f32;
        }
        bias
    }
}

/// How many training tunes have each (style, key, meter), each style's lengths in bars and
/// the degrees its tunes end on, in the model's token ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeaderPrior {
    rows: Vec<Row>,
    bars: Vec<BarsRow>,
    finals: Vec<FinalsRow>,
}

/// The degree (semitones above the tonic of its first key) of a tune's last note: the highest
/// of the notes that start last (the melody's, in a piece in parts). `None` for a tune with
/// no notes or no key (`K:none` included).
pub fn final_degree(tune: &Score) -> Option<u8> {
    if tune.meta.keys.is_empty() {
        return None;
    }
    let key = tune.key();
    if key.none {
        return None;
    }
    let last = tune.notes.iter().map(|n| n.start).max()?;
    let top = tune.notes.iter().filter(|n| n.start == last).map(|n| n.pitch).max()?;
    Some(((top as i32 - key.tonic_pc() as i32).rem_euclid(12)) as u8)
}

/// The rows of `style` (`style_of` reads a row's), else every row: an unknown style, or one
/// the corpus lacks, draws from every style's tunes.
fn of_style_or_all<R>(rows: &[R], style: u32, style_of: impl Fn(&R) -> u32) -> Vec<&R> {
    let of_style: Vec<&R> = rows.iter().filter(|r| style_of(r) == style).collect();
    if of_style.is_empty() {
        rows.iter().collect()
    } else {
        of_style
    }
}

/// The style, key and meter token ids of a conditioning prefix (`<bos>` then one id per
/// category), when the prefix has them.
fn header_ids(prefix: &[u32]) -> Option<(u32, u32, u32)> {
    let at = |c: Category| prefix.get(1 + c.index()).copied();
    Some((at(Category::Style)?, at(Category::Key)?, at(Category::Meter)?))
}

/// Is `id` a conditioning token of `category` with a value (not its `<unk>`)?
fn is_known(encoding: &dyn Encoding, id: u32, category: Category) -> bool {
    matches!(encoding.kind(id), Some(TokenKind::Cond(c)) if c.category == category && c.value.is_some())
}

impl HeaderPrior {
    /// Counts the (style, key, meter) header of each tune as `encoding` writes it, and the
    /// number of bars each style's tunes play (repeats played, as generation counts a take's
    /// bars). Tunes with an unknown key are left out of the key counts (they say nothing about
    /// which key to draw).
    pub fn build(encoding: &dyn Encoding, tunes: &[Score]) -> HeaderPrior {
        let mut counts: std::collections::BTreeMap<(u32, u32, u32), f64> = Default::default();
        let mut lengths: std::collections::BTreeMap<(u32, u32), f64> = Default::default();
        let mut finals: std::collections::BTreeMap<(u32, u8), f64> = Default::default();
        for tune in tunes {
            // The header alone: encoding the notes too would cost a whole pass over the corpus.
            let head = Score { meta: tune.meta.clone(), ..Score::default() };
            let ids = encoding.encode(&head);
            let Some((style, key, meter)) = header_ids(&ids) else { continue };
            if is_known(encoding, key, Category::Key) {
                *counts.entry((style, key, meter)).or_default() += 1.0;
            }
            let bars = (tune.bar_starts().len() as u32).clamp(1, MAX_TABLE_BARS);
            *lengths.entry((style, bars)).or_default() += 1.0;
            if let Some(degree) = final_degree(tune) {
                *finals.entry((style, degree)).or_default() += 1.0;
            }
        }
        HeaderPrior {
            rows: counts.into_iter().map(|((style, key, meter), tunes)| Row { style, key, meter, tunes }).collect(),
            bars: lengths.into_iter().map(|((style, bars), tunes)| BarsRow { style, bars, tunes }).collect(),
            finals: finals.into_iter().map(|((style, degree), tunes)| FinalsRow { style, degree, tunes }).collect(),
        }
    }

    /// The degrees (semitones above the tonic) a take of `style` may end on: those at least
    /// [`FINAL_SHARE`] of the style's training tunes end on (every style's when the style is
    /// unknown or has none), most common first, with their shares; `None` when the table has
    /// no finals.
    pub fn finals(&self, style: u32) -> Option<Finals> {
        let rows = of_style_or_all(&self.finals, style, |r| r.style);
        let mut per_degree = [0.0f64; 12];
        for r in rows {
            per_degree[r.degree as usize % 12] += r.tunes;
        }
        let total: f64 = per_degree.iter().sum();
        if total <= 0.0 {
            return None;
        }
        let mut finals: Vec<(u8, f64)> =
            (0..12u8).map(|d| (d, per_degree[d as usize] / total)).filter(|&(_, share)| share >= FINAL_SHARE).collect();
        finals.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Some(Finals(finals))
    }

    /// A length in bars for a whole take of `style`, drawn from the lengths of that style's
    /// training tunes (every style's when the style is unknown or has none); `None` when the
    /// table has no lengths.
    pub fn draw_bars(&self, style: u32, rng: &mut super::sampling::Rng) -> Option<u32> {
        let rows = of_style_or_all(&self.bars, style, |r| r.style);
        let weights: Vec<f64> = rows.iter().map(|r| r.tunes).collect();
        rng.categorical(&weights).map(|i| rows[i as usize].bars)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Tunes counted in all.
    pub fn tunes(&self) -> f64 {
        self.rows.iter().map(|r| r.tunes).sum()
    }

    /// Writes the table with token strings.
    pub fn save(&self, encoding: &dyn Encoding, path: &Path, about: &str) -> Result<(), GenError> {
        let name = |id: u32| encoding.vocab().token(id).unwrap_or("<?>").to_string();
        let stored = Stored {
            about: about.to_string(),
            counts: self.rows.iter().map(|r| (name(r.style), name(r.key), name(r.meter), r.tunes as u64)).collect(),
            bars: self.bars.iter().map(|r| (name(r.style), r.bars, r.tunes as u64)).collect(),
            finals: self.finals.iter().map(|r| (name(r.style), r.degree, r.tunes as u64)).collect(),
        };
        // One row a line: readable, and a diff shows which counts changed.
        fn table<T: Serialize>(rows: &[T]) -> String {
            let lines: Vec<String> =
                rows.iter().map(|r| serde_json::to_string(r).expect("strings and numbers serialise")).collect();
            lines.join(",\n    ")
        }
        let about = serde_json::to_string(&stored.about).expect("a string serialises");
        let text = format!(
            "{{\n  \"about\": {about},\n  \"counts\": [\n    {}\n  ],\n  \"bars\": [\n    {}\n  ],\n  \
             \"finals\": [\n    {}\n  ]\n}}\n",
            table(&stored.counts),
            table(&stored.bars),
            table(&stored.finals)
        );
        std::fs::write(path, text)
            .map_err(|e| GenError::ModelFiles { path: path.display().to_string(), reason: e.to_string() })
    }

    /// Reads `header_prior.json` from a model folder: `None` when there is none; an error that
    /// names the file when it is unreadable or names tokens the vocabulary lacks.
    pub fn load(dir: &Path, encoding: &dyn Encoding) -> Result<Option<HeaderPrior>, GenError> {
        let path = dir.join(FILE);
        if !path.exists() {
            return Ok(None);
        }
        let bad = |reason: String| GenError::ModelFiles { path: path.display().to_string(), reason };
        let bytes = crate::sink::read_at_most(&path, MAX_BYTES, "the largest header prior cadenza reads")
            .map_err(|e| bad(e.to_string()))?;
        let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let id = |token: &str, category: Category| -> Result<u32, GenError> {
            encoding
                .vocab()
                .id(token)
                .filter(|&id| matches!(encoding.kind(id), Some(TokenKind::Cond(c)) if c.category == category))
                .ok_or_else(|| bad(format!("`{token}` is not a {} token of this model's vocabulary", category.name())))
        };
        let mut rows = Vec::with_capacity(stored.counts.len());
        for (style, key, meter, tunes) in &stored.counts {
            let key_id = id(key, Category::Key)?;
            if !is_known(encoding, key_id, Category::Key) {
                return Err(bad(format!("`{key}`: the table counts known keys only")));
            }
            rows.push(Row {
                style: id(style, Category::Style)?,
                key: key_id,
                meter: id(meter, Category::Meter)?,
                tunes: *tunes as f64,
            });
        }
        let mut bars = Vec::with_capacity(stored.bars.len());
        for (style, n, tunes) in &stored.bars {
            if !(1..=MAX_TABLE_BARS).contains(n) {
                return Err(bad(format!("a length of {n} bars: the table holds 1 to {MAX_TABLE_BARS}")));
            }
            bars.push(BarsRow { style: id(style, Category::Style)?, bars: *n, tunes: *tunes as f64 });
        }
        let mut finals = Vec::with_capacity(stored.finals.len());
        for (style, degree, tunes) in &stored.finals {
            if *degree > 11 {
                return Err(bad(format!("a final {degree} semitones above the tonic: the table holds 0 to 11")));
            }
            finals.push(FinalsRow { style: id(style, Category::Style)?, degree: *degree, tunes: *tunes as f64 });
        }
        Ok(Some(HeaderPrior { rows, bars, finals }))
    }

    /// Weights (one per vocabulary id, zero but for key ids) for the key of a take whose prefix
    /// so far is `prefix` (style set or `<unk>`) and whose meter id, when the caller fixed it,
    /// is `meter`. The most specific match that has tunes wins: this style and meter, this
    /// style, then every style (an unknown style, or one the corpus lacks). `None` when the
    /// table has nothing to say (the model draws the key itself).
    pub fn key_weights(
        &self,
        encoding: &dyn Encoding,
        style: u32,
        meter: Option<u32>,
        vocab: usize,
    ) -> Option<Vec<f64>> {
        let meter = meter.filter(|&m| is_known(encoding, m, Category::Meter));
        self.weights(encoding, style, meter, vocab, |r| Some((r.key, r.meter)))
    }

    /// Weights (zero but for known meter ids) for the meter of a take of `style` whose key id
    /// (set by the caller or drawn from [`HeaderPrior::key_weights`]) is `key`: the meters
    /// the training tunes of that style and key use, else that style's, else every style's.
    ///
    /// Why not let the model draw it: trained on every style at once, its meter token leans
    /// to the meters of the largest style. Unprompted Irish takes of the folk GPT came 27% in
    /// 4/4 and 8% in 2/2 where the Irish tunes are 10% and 28%, German ones' share.
    pub fn meter_weights(
        &self,
        encoding: &dyn Encoding,
        style: u32,
        key: Option<u32>,
        vocab: usize,
    ) -> Option<Vec<f64>> {
        let key = key.filter(|&k| is_known(encoding, k, Category::Key));
        self.weights(encoding, style, key, vocab, |r| {
            is_known(encoding, r.meter, Category::Meter).then_some((r.meter, r.key))
        })
    }

    /// Counts of the ids `pick` draws from each row (the first of its pair), over the rows of
    /// `style` whose other header id (the second) is `given`; failing that, of the style; then
    /// of every style with `given`, then of every row.
    fn weights(
        &self,
        encoding: &dyn Encoding,
        style: u32,
        given: Option<u32>,
        vocab: usize,
        pick: impl Fn(&Row) -> Option<(u32, u32)>,
    ) -> Option<Vec<f64>> {
        let known_style = is_known(encoding, style, Category::Style);
        let tries: [(bool, bool); 4] = [(true, true), (true, false), (false, true), (false, false)];
        for (by_style, by_given) in tries {
            if (by_style && !known_style) || (by_given && given.is_none()) {
                continue;
            }
            let mut w = vec![0.0; vocab];
            let mut total = 0.0;
            for r in &self.rows {
                let Some((drawn, other)) = pick(r) else { continue };
                if (by_style && r.style != style) || (by_given && Some(other) != given) {
                    continue;
                }
                if let Some(slot) = w.get_mut(drawn as usize) {
                    *slot += r.tunes;
                    total += r.tunes;
                }
            }
            if total > 0.0 {
                return Some(w);
            }
        }
        None
    }
}

/// The meter id a prefix fixes (the caller's), if any: the id at the meter's place.
pub(crate) fn fixed_meter(prefix: &[u32]) -> Option<u32> {
    header_ids(prefix).map(|(_, _, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::{Key, Mode};
    use crate::time::Meter;
    use crate::tokens::tune::{Tune, TuneConfig};

    fn tune(style: &str, key: Key, meter: Meter) -> Score {
        let mut s = Score::default();
        s.meta.style = Some(style.into());
        s.meta.keys = vec![(0, key)];
        s.meta.meters = vec![(0, meter)];
        s
    }

    fn id(enc: &Tune, t: &str) -> u32 {
        enc.vocab().id(t).unwrap()
    }

    /// The error reading `json` as a model's `header_prior.json` gives; it names the file.
    fn load_error(enc: &Tune, json: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), json).unwrap();
        let e = HeaderPrior::load(dir.path(), enc).unwrap_err().to_string();
        assert!(e.contains(FILE), "{e}");
        e
    }

    #[test]
    fn counts_draw_from_the_most_specific_match() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let d = Key::new(1, 0, Mode::Major);
        let am = Key::new(5, 0, Mode::Minor);
        let jig = Meter::new(6, 8);
        let reel = Meter::new(4, 4);
        let tunes = vec![
            tune("irish", d.clone(), jig),
            tune("irish", d.clone(), jig),
            tune("irish", am.clone(), reel),
            tune("german", Key::new(0, 0, Mode::Major), reel),
        ];
        let p = HeaderPrior::build(&enc, &tunes);
        assert_eq!(p.tunes(), 4.0);
        let v = enc.vocab().len();
        let irish = id(&enc, "style:irish");
        let w = p.key_weights(&enc, irish, Some(id(&enc, "meter:6/8")), v).unwrap();
        assert_eq!(w[id(&enc, "key:D") as usize], 2.0);
        assert_eq!(w.iter().sum::<f64>(), 2.0, "only the jigs");
        let w = p.key_weights(&enc, irish, None, v).unwrap();
        assert_eq!((w[id(&enc, "key:D") as usize], w[id(&enc, "key:Am") as usize]), (2.0, 1.0));
        // A meter no Irish tune has: the style's keys; an unknown style: every style's.
        let w = p.key_weights(&enc, irish, Some(id(&enc, "meter:3/4")), v).unwrap();
        assert_eq!(w.iter().sum::<f64>(), 3.0);
        let w = p.key_weights(&enc, id(&enc, "style:<unk>"), None, v).unwrap();
        assert_eq!(w[id(&enc, "key:C") as usize], 1.0);
        assert_eq!(w.iter().sum::<f64>(), 4.0);
    }

    #[test]
    fn meters_are_drawn_given_the_style_and_key() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let d = Key::new(1, 0, Mode::Major);
        let g = Key::new(4, 0, Mode::Major);
        let (jig, reel, polka) = (Meter::new(6, 8), Meter::new(2, 2), Meter::new(2, 4));
        let tunes = vec![
            tune("irish", d.clone(), jig),
            tune("irish", d.clone(), reel),
            tune("irish", d.clone(), reel),
            tune("irish", g.clone(), polka),
            tune("german", d.clone(), polka),
        ];
        let p = HeaderPrior::build(&enc, &tunes);
        let v = enc.vocab().len();
        let (irish, german) = (id(&enc, "style:irish"), id(&enc, "style:german"));
        let m = |t: &str| id(&enc, t) as usize;
        let w = p.meter_weights(&enc, irish, Some(id(&enc, "key:D")), v).unwrap();
        assert_eq!((w[m("meter:6/8")], w[m("meter:2/2")], w[m("meter:2/4")]), (1.0, 2.0, 0.0));
        // No key known, or one the style's tunes lack: the style's meters.
        for key in [None, Some(id(&enc, "key:<unk>")), Some(id(&enc, "key:Bb"))] {
            let w = p.meter_weights(&enc, irish, key, v).unwrap();
            assert_eq!((w[m("meter:2/4")], w.iter().sum::<f64>()), (1.0, 4.0), "{key:?}");
        }
        let w = p.meter_weights(&enc, german, Some(id(&enc, "key:G")), v).unwrap();
        assert_eq!(w.iter().sum::<f64>(), 1.0, "the German tunes' meter");
        // An unknown style, in D: every style's tunes in D.
        let w = p.meter_weights(&enc, id(&enc, "style:<unk>"), Some(id(&enc, "key:D")), v).unwrap();
        assert_eq!((w[m("meter:2/4")], w.iter().sum::<f64>()), (1.0, 4.0));
    }

    #[test]
    fn saves_and_loads_by_token_names() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let tunes = vec![tune("scottish", Key::new(1, 0, Mode::Mixolydian), Meter::new(2, 4))];
        let p = HeaderPrior::build(&enc, &tunes);
        let dir = tempfile::tempdir().unwrap();
        p.save(&enc, &dir.path().join(FILE), "test").unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains("\"style:scottish\"") && text.contains("\"meter:2/4\""), "{text}");
        assert_eq!(HeaderPrior::load(dir.path(), &enc).unwrap(), Some(p));
        assert_eq!(HeaderPrior::load(&dir.path().join("none"), &enc).unwrap(), None);
    }

    #[test]
    fn lengths_are_drawn_from_the_styles_tunes_else_from_every_style() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let long = |style: &str, bars: usize| {
            let mut s = crate::dsl::parse(&format!("X:1\nM:2/4\nL:1/8\nK:G\n{}|]\n", "GABc|".repeat(bars))).unwrap();
            s.meta.style = Some(style.into());
            s
        };
        let p = HeaderPrior::build(&enc, &[long("irish", 16), long("irish", 16), long("german", 9)]);
        let mut rng = crate::gen::sampling::Rng::new(1);
        for _ in 0..20 {
            assert_eq!(p.draw_bars(id(&enc, "style:irish"), &mut rng), Some(16));
            assert_eq!(p.draw_bars(id(&enc, "style:german"), &mut rng), Some(9));
            let any = p.draw_bars(id(&enc, "style:<unk>"), &mut rng);
            assert!(any == Some(16) || any == Some(9), "{any:?}");
        }
        // Saved and read back with the key counts; a length out of bounds names the file.
        let dir = tempfile::tempdir().unwrap();
        p.save(&enc, &dir.path().join(FILE), "test").unwrap();
        assert_eq!(HeaderPrior::load(dir.path(), &enc).unwrap(), Some(p));
        let e = load_error(&enc, r#"{"about":"","counts":[],"bars":[["style:irish",0,3]]}"#);
        assert!(e.contains("0 bars"), "{e}");
        assert_eq!(HeaderPrior::default().draw_bars(id(&enc, "style:irish"), &mut rng), None);
    }

    #[test]
    fn finals_are_the_degrees_one_tune_in_ten_ends_on() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let ending = |style: &str, key: &str, last: &str| {
            let mut s = crate::dsl::parse(&format!("X:1\nM:2/4\nL:1/8\nK:{key}\nGABc|{last}4|]\n")).unwrap();
            s.meta.style = Some(style.into());
            s
        };
        // Eleven Chinese tunes in G: six end on D (the fifth), four on E (the sixth), one on
        // G (1 in 11, under the share); Scottish ones in A minor on A; the last note of a
        // chord is its highest.
        let mut tunes: Vec<Score> = (0..6).map(|_| ending("chinese", "G", "d")).collect();
        tunes.extend((0..4).map(|_| ending("chinese", "G", "e")));
        tunes.push(ending("chinese", "G", "g"));
        tunes.push(ending("scottish", "Am", "A"));
        tunes.push(ending("scottish", "Am", "[EA]"));
        assert_eq!(final_degree(&tunes[12]), Some(0));
        let p = HeaderPrior::build(&enc, &tunes);
        let degrees = |style: &str| p.finals(id(&enc, style)).map(|f| f.degrees());
        assert_eq!(degrees("style:chinese"), Some(vec![7, 9]));
        assert_eq!(degrees("style:scottish"), Some(vec![0]));
        // An unknown style: every style's (13 tunes: D 6, E 4, the tonics 3).
        assert_eq!(degrees("style:<unk>"), Some(vec![7, 9, 0]));
        // The end id after the sixth (4 of 11 tunes) gets ln(4/6) against the fifth (6 of 11).
        let bias = p.finals(id(&enc, "style:chinese")).unwrap().end_bias(7);
        assert_eq!((bias[2], bias[7]), (0.0, 0.0), "after D, the commonest final; after G, no final");
        assert!((bias[4] - (4.0f32 / 6.0).ln()).abs() < 1e-6, "{bias:?}");
        assert_eq!(HeaderPrior::default().finals(id(&enc, "style:irish")), None);
        // No key, or `K:none`: no final.
        let mut keyless = ending("irish", "G", "d");
        keyless.meta.keys.clear();
        assert_eq!(final_degree(&keyless), None);
        assert_eq!(final_degree(&ending("irish", "none", "d")), None);
        // Saved and read back; a degree out of 0..=11 is an error naming the file.
        let dir = tempfile::tempdir().unwrap();
        p.save(&enc, &dir.path().join(FILE), "test").unwrap();
        assert_eq!(HeaderPrior::load(dir.path(), &enc).unwrap(), Some(p));
        let e = load_error(&enc, r#"{"about":"","counts":[],"finals":[["style:irish",12,3]]}"#);
        assert!(e.contains("12 semitones"), "{e}");
    }

    #[test]
    fn a_token_the_vocabulary_lacks_is_an_error_naming_the_file() {
        let enc = Tune::new(TuneConfig::default()).unwrap();
        let e = load_error(&enc, r#"{"about":"","counts":[["style:klezmer","key:D","meter:6/8",3]]}"#);
        assert!(e.contains("style:klezmer"), "{e}");
    }
}
