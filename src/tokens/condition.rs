//! Conditioning tokens: style, composer, instrument, key, meter and tempo band, each with an UNK.
//!
//! Every encoding starts a sequence with `<bos>` and exactly one token per [`Category`], in the
//! order of [`Category::ALL`]. A missing or unknown label becomes that category's `<unk>` token,
//! so the prefix always has the same length and a model trained with some labels dropped to
//! `<unk>` (see `corpus::Augment::cond_dropout`) can be asked for "any style".
//!
//! Token spellings (stable; they are what `vocab.json` stores):
//!
//! | category | tokens | value |
//! | --- | --- | --- |
//! | style | `style:<name>` from [`CondSpec::styles`], `style:<unk>` | lower-case label |
//! | composer | `composer:<name>`, `composer:<unk>` | lower-case label |
//! | instrument | `instrument:<name>`, `instrument:<unk>` | lower-case label |
//! | key | `key:<tonic><mode>` for 12 tonics × 7 modes, `key:<unk>` | tonic pitch class and mode |
//! | meter | `meter:<n>/<d>` from [`CondSpec::meters`], `meter:<unk>` | numerator/denominator |
//! | tempo | `tempo:<lo>-<hi>` for the bands of [`TEMPO_BANDS`], `tempo:<unk>` | quarter-note bpm |
//!
//! Keys are reduced to a tonic pitch class and one of seven modes (ionian = major, aeolian =
//! minor); spelling and explicit accidentals are not kept. Tonics are written C C# D Eb E F F# G
//! Ab A Bb B. Meter tokens also appear inside the music (right after a `Bar`) to change meter.

use crate::score::{Key, Mode};
use crate::time::Meter;
use serde::{Deserialize, Serialize};

/// The conditioning categories, in prefix order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    Style,
    Composer,
    Instrument,
    Key,
    Meter,
    Tempo,
}

impl Category {
    pub const ALL: [Category; 6] =
        [Category::Style, Category::Composer, Category::Instrument, Category::Key, Category::Meter, Category::Tempo];

    pub fn name(self) -> &'static str {
        match self {
            Category::Style => "style",
            Category::Composer => "composer",
            Category::Instrument => "instrument",
            Category::Key => "key",
            Category::Meter => "meter",
            Category::Tempo => "tempo",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Tempo bands in quarter notes per minute: `[lo, hi)`; the last is open above.
pub const TEMPO_BANDS: [(u32, u32); 9] =
    [(0, 60), (60, 76), (76, 92), (92, 108), (108, 126), (126, 144), (144, 168), (168, 200), (200, 1000)];

/// Pitch-class names used in key tokens.
pub const TONICS: [&str; 12] = ["C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"];

/// The seven modes key tokens distinguish, with their suffix.
pub const KEY_MODES: [(Mode, &str); 7] = [
    (Mode::Major, ""),
    (Mode::Minor, "m"),
    (Mode::Dorian, "dor"),
    (Mode::Phrygian, "phr"),
    (Mode::Lydian, "lyd"),
    (Mode::Mixolydian, "mix"),
    (Mode::Locrian, "loc"),
];

/// Meters every encoding knows by default (the folk and chorale corpora use all but a few).
pub const DEFAULT_METERS: [(u32, u32); 16] = [
    (2, 4),
    (3, 4),
    (4, 4),
    (5, 4),
    (6, 4),
    (2, 2),
    (3, 2),
    (4, 2),
    (3, 8),
    (5, 8),
    (6, 8),
    (7, 8),
    (9, 8),
    (12, 8),
    (2, 8),
    (7, 4),
];

/// The labels an encoding's vocabulary has tokens for. Stored in `vocab.json` settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CondSpec {
    pub styles: Vec<String>,
    pub composers: Vec<String>,
    pub instruments: Vec<String>,
    /// Meters as (numerator, denominator).
    pub meters: Vec<(u32, u32)>,
}

impl Default for CondSpec {
    fn default() -> Self {
        CondSpec {
            styles: ["chinese", "german", "european", "irish", "scottish", "chorale"].map(String::from).to_vec(),
            composers: vec!["bach".to_string()],
            instruments: ["piano", "violin", "flute", "voice", "choir", "organ", "guitar", "fiddle"]
                .map(String::from)
                .to_vec(),
            meters: DEFAULT_METERS.to_vec(),
        }
    }
}

/// Lower-cases and trims a label so `Irish ` and `irish` are one style.
pub fn normalize_label(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The key token's value: (tonic pitch class, index into [`KEY_MODES`]).
pub fn key_value(key: &Key) -> Option<(u8, usize)> {
    if key.none {
        return None;
    }
    let mode = match key.mode {
        Mode::Ionian => Mode::Major,
        Mode::Aeolian => Mode::Minor,
        m => m,
    };
    let m = KEY_MODES.iter().position(|(km, _)| *km == mode)?;
    Some((key.tonic_pc(), m))
}

/// A key for a token value, spelled with the fewest accidentals.
pub fn key_from_value(pc: u8, mode_index: usize) -> Key {
    let mode = KEY_MODES.get(mode_index).map_or(Mode::Major, |(m, _)| *m);
    Key::new(0, 0, mode).transposed(pc as i32 % 12)
}

/// The band index for a tempo.
pub fn tempo_band(bpm: f64) -> usize {
    let b = bpm.max(0.0);
    TEMPO_BANDS.iter().position(|&(lo, hi)| b >= lo as f64 && b < hi as f64).unwrap_or(TEMPO_BANDS.len() - 1)
}

/// A representative tempo for a band (its middle; 50 and 220 for the open ends).
pub fn band_bpm(band: usize) -> f64 {
    match TEMPO_BANDS.get(band) {
        Some(&(0, hi)) => hi as f64 - 10.0,
        Some(&(lo, 1000)) => lo as f64 + 20.0,
        Some(&(lo, hi)) => (lo + hi) as f64 / 2.0,
        None => crate::time::DEFAULT_BPM,
    }
}

/// One conditioning token's meaning: its category and the index of its value (None = UNK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CondToken {
    pub category: Category,
    pub value: Option<u16>,
}

/// The conditioning part of a vocabulary: token strings and lookups both ways.
#[derive(Debug, Clone, PartialEq)]
pub struct CondTable {
    pub spec: CondSpec,
    /// Token strings in order; the first is `<bos>`'s successor, i.e. these follow the specials.
    pub tokens: Vec<String>,
    pub meanings: Vec<CondToken>,
}

impl CondTable {
    pub fn new(spec: &CondSpec) -> Self {
        let mut spec = spec.clone();
        for list in [&mut spec.styles, &mut spec.composers, &mut spec.instruments] {
            let mut seen = std::collections::HashSet::new();
            *list =
                list.iter().map(|s| normalize_label(s)).filter(|s| !s.is_empty() && seen.insert(s.clone())).collect();
        }
        spec.meters.dedup();
        let mut tokens = Vec::new();
        let mut meanings = Vec::new();
        let mut push = |cat: Category, value: Option<u16>, text: String| {
            tokens.push(format!("{}:{}", cat.name(), text));
            meanings.push(CondToken { category: cat, value });
        };
        for cat in Category::ALL {
            push(cat, None, "<unk>".into());
            match cat {
                Category::Style => {
                    spec.styles.iter().enumerate().for_each(|(i, s)| push(cat, Some(i as u16), s.clone()))
                }
                Category::Composer => {
                    spec.composers.iter().enumerate().for_each(|(i, s)| push(cat, Some(i as u16), s.clone()))
                }
                Category::Instrument => {
                    spec.instruments.iter().enumerate().for_each(|(i, s)| push(cat, Some(i as u16), s.clone()))
                }
                Category::Key => {
                    for (m, (_, suffix)) in KEY_MODES.iter().enumerate() {
                        for (pc, t) in TONICS.iter().enumerate() {
                            push(cat, Some((m * 12 + pc) as u16), format!("{t}{suffix}"));
                        }
                    }
                }
                Category::Meter => {
                    spec.meters.iter().enumerate().for_each(|(i, (n, d))| push(cat, Some(i as u16), format!("{n}/{d}")))
                }
                Category::Tempo => TEMPO_BANDS
                    .iter()
                    .enumerate()
                    .for_each(|(i, (lo, hi))| push(cat, Some(i as u16), format!("{lo}-{hi}"))),
            }
        }
        CondTable { spec, tokens, meanings }
    }

    /// Offset of `cat`'s `<unk>` within [`Self::tokens`].
    fn offset(&self, cat: Category) -> usize {
        self.meanings.iter().position(|m| m.category == cat).unwrap_or(0)
    }

    /// Index within [`Self::tokens`] of the token for `cat` and `value` (None = UNK).
    pub fn index(&self, cat: Category, value: Option<u16>) -> usize {
        let base = self.offset(cat);
        match value {
            None => base,
            Some(v) => {
                let i = base + 1 + v as usize;
                if self.meanings.get(i).is_some_and(|m| m.category == cat) {
                    i
                } else {
                    base
                }
            }
        }
    }

    fn label_value(list: &[String], label: &Option<String>) -> Option<u16> {
        let l = normalize_label(label.as_deref()?);
        list.iter().position(|s| *s == l).map(|i| i as u16)
    }

    /// The value index of a meter, when the vocabulary has it.
    pub fn meter_value(&self, m: Meter) -> Option<u16> {
        self.spec.meters.iter().position(|&(n, d)| n == m.num && d == m.den).map(|i| i as u16)
    }

    pub fn meter(&self, value: u16) -> Option<Meter> {
        self.spec.meters.get(value as usize).map(|&(n, d)| Meter::new(n, d))
    }

    /// The meter a decoder uses for the conditioning meter `m`: `m` when the vocabulary has a
    /// token for it, else 4/4 (what `<unk>` decodes as).
    pub fn effective_meter(&self, m: Option<Meter>) -> Meter {
        m.and_then(|m| self.meter_value(m)).and_then(|v| self.meter(v)).unwrap_or_default()
    }

    /// The id of the meter token that changes `current` to `m` inside the music (written right
    /// after a bar line), and the meter it sets; `None` when `m` is no change or has no token.
    pub fn meter_change(&self, m: Meter, current: Meter) -> Option<(u32, Meter)> {
        let v = self.meter_value(m)?;
        (self.meter(v) != Some(current))
            .then(|| ((super::SPECIALS.len() + self.index(Category::Meter, Some(v))) as u32, Meter::new(m.num, m.den)))
    }

    /// The six prefix indices (into [`Self::tokens`]) for a conditioning.
    pub fn prefix(&self, c: &super::Conditioning) -> [usize; 6] {
        let key = c.key.as_ref().and_then(key_value).map(|(pc, m)| (m * 12 + pc as usize) as u16);
        [
            self.index(Category::Style, Self::label_value(&self.spec.styles, &c.style)),
            self.index(Category::Composer, Self::label_value(&self.spec.composers, &c.composer)),
            self.index(Category::Instrument, Self::label_value(&self.spec.instruments, &c.instrument)),
            self.index(Category::Key, key),
            self.index(Category::Meter, c.meter.and_then(|m| self.meter_value(m))),
            self.index(Category::Tempo, c.bpm.map(|b| tempo_band(b) as u16)),
        ]
    }

    /// Writes what a conditioning token says into `cond`.
    pub fn apply(&self, t: CondToken, cond: &mut super::Conditioning) {
        let Some(v) = t.value else { return };
        let v = v as usize;
        match t.category {
            Category::Style => cond.style = self.spec.styles.get(v).cloned(),
            Category::Composer => cond.composer = self.spec.composers.get(v).cloned(),
            Category::Instrument => cond.instrument = self.spec.instruments.get(v).cloned(),
            Category::Key => cond.key = Some(key_from_value((v % 12) as u8, v / 12)),
            Category::Meter => cond.meter = self.meter(v as u16),
            Category::Tempo => cond.bpm = Some(band_bpm(v)),
        }
    }

    /// The known labels of a category (styles, composers, instruments; key/meter/tempo spelled
    /// as in their tokens), for listing to users.
    pub fn labels(&self, cat: Category) -> Vec<String> {
        let prefix = format!("{}:", cat.name());
        self.tokens
            .iter()
            .zip(&self.meanings)
            .filter(|(_, m)| m.category == cat && m.value.is_some())
            .filter_map(|(t, _)| t.strip_prefix(&prefix).map(String::from))
            .collect()
    }
}

/// Reads the `<bos>` + conditioning prefix for a decoder: which prefix tokens may come next and
/// what they said. Categories must come in [`Category::ALL`] order; any may be left out.
#[derive(Debug, Clone, Default)]
pub(crate) struct Header {
    /// Any token was accepted (so `<bos>` is no longer valid).
    pub started: bool,
    /// The next category index a conditioning token may have (6 = none left).
    pub next: usize,
    /// A music token was accepted: the prefix is over.
    pub done: bool,
    pub cond: super::Conditioning,
}

impl Header {
    /// May this kind come next as part of the prefix?
    pub fn accepts(&self, kind: &super::TokenKind) -> bool {
        match kind {
            super::TokenKind::Bos => !self.started,
            super::TokenKind::Cond(c) => !self.done && c.category.index() >= self.next,
            _ => false,
        }
    }

    /// Takes a prefix token the caller checked with [`Self::accepts`].
    pub fn push(&mut self, kind: &super::TokenKind, table: &CondTable) {
        self.started = true;
        if let super::TokenKind::Cond(c) = kind {
            self.next = c.category.index() + 1;
            table.apply(*c, &mut self.cond);
        }
    }

    /// A music token was accepted.
    pub fn end(&mut self) {
        self.started = true;
        self.done = true;
    }
}

impl super::Conditioning {
    /// The conditioning a score's meta carries: its labels, key, meter and tempo at tick 0.
    pub fn from_score(score: &crate::score::Score) -> Self {
        super::Conditioning {
            style: score.meta.style.clone(),
            composer: score.meta.composer.clone(),
            instrument: score.meta.instrument.clone(),
            key: score.meta.keys.first().map(|(_, k)| k.clone()),
            meter: score.meta.meters.first().map(|(_, m)| *m),
            bpm: Some(score.meta.tempo.bpm_at(0)),
        }
    }

    /// Writes the conditioning into a score's meta (the inverse of [`Self::from_score`]).
    pub fn apply_to(&self, meta: &mut crate::score::Meta) {
        meta.style = self.style.clone();
        meta.composer = self.composer.clone();
        meta.instrument = self.instrument.clone();
        if let Some(k) = &self.key {
            meta.keys = vec![(0, k.clone())];
        }
        if let Some(m) = self.meter {
            if meta.meters.first().is_none_or(|(t, _)| *t != 0) {
                meta.meters.insert(0, (0, m));
            } else {
                meta.meters[0] = (0, m);
            }
        }
        if let Some(b) = self.bpm {
            meta.tempo = crate::time::TempoMap::constant(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Conditioning;

    #[test]
    fn keys_reduce_to_tonic_and_mode() {
        // A dorian: tonic A (9), mode dorian (index 2).
        assert_eq!(key_value(&Key::new(5, 0, Mode::Dorian)), Some((9, 2)));
        assert_eq!(key_value(&Key::new(3, 1, Mode::Aeolian)), Some((6, 1)));
        let k = key_from_value(10, 0);
        assert_eq!(k.to_string(), "Bb");
        assert_eq!(key_from_value(6, 1).to_string(), "F#m");
    }

    #[test]
    fn prefix_round_trips_and_unknowns_map_to_unk() {
        let t = CondTable::new(&CondSpec::default());
        let c = Conditioning {
            style: Some("Irish".into()),
            composer: None,
            instrument: Some("theremin".into()),
            key: Some(Key::new(1, 0, Mode::Mixolydian)),
            meter: Some(Meter::new(6, 8)),
            bpm: Some(118.0),
        };
        let p = t.prefix(&c);
        let names: Vec<&str> = p.iter().map(|&i| t.tokens[i].as_str()).collect();
        assert_eq!(
            names,
            ["style:irish", "composer:<unk>", "instrument:<unk>", "key:Dmix", "meter:6/8", "tempo:108-126"]
        );
        let mut back = Conditioning::default();
        for &i in &p {
            t.apply(t.meanings[i], &mut back);
        }
        assert_eq!(back.style.as_deref(), Some("irish"));
        assert_eq!(back.instrument, None);
        assert_eq!(back.key.map(|k| k.to_string()), Some("Dmix".to_string()));
        assert_eq!(back.meter, Some(Meter::new(6, 8)));
        assert_eq!(tempo_band(back.bpm.unwrap_or(0.0)), tempo_band(118.0));
    }

    #[test]
    fn every_band_midpoint_is_in_its_band() {
        for b in 0..TEMPO_BANDS.len() {
            assert_eq!(tempo_band(band_bpm(b)), b);
        }
    }
}
