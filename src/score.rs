//! The `Score`: notes in integer ticks plus musical meta, and the operations users script on it.

use crate::time::{Meter, TempoMap, Tick, PPQ};
use serde::{Deserialize, Serialize};

/// One sounding note. Times are integer ticks at [`PPQ`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Note {
    pub start: Tick,
    pub dur: Tick,
    /// MIDI pitch, 0..=127 (60 = middle C).
    pub pitch: u8,
    /// MIDI velocity, 1..=127.
    pub velocity: u8,
    /// MIDI channel, 0..=15 (9 is General MIDI drums).
    pub channel: u8,
    /// Index into [`Score::voices`].
    pub voice: u8,
    /// General MIDI program, 0..=127.
    pub program: u8,
}

impl Note {
    pub fn new(start: Tick, dur: Tick, pitch: u8) -> Self {
        Note { start, dur, pitch, velocity: 80, channel: 0, voice: 0, program: 0 }
    }

    pub fn end(&self) -> Tick {
        self.start + self.dur
    }
}

/// Church modes plus major/minor, as ABC's `K:` field names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Mode {
    #[default]
    Major,
    Minor,
    Ionian,
    Dorian,
    Phrygian,
    Lydian,
    Mixolydian,
    Aeolian,
    Locrian,
}

impl Mode {
    /// Fifths to add to the mode's tonic to find the signature of its relative major:
    /// D dorian has the signature of C major (D is two fifths above C, dorian is -2).
    pub fn fifths_offset(self) -> i32 {
        match self {
            Mode::Major | Mode::Ionian => 0,
            Mode::Lydian => 1,
            Mode::Mixolydian => -1,
            Mode::Dorian => -2,
            Mode::Minor | Mode::Aeolian => -3,
            Mode::Phrygian => -4,
            Mode::Locrian => -5,
        }
    }

    /// Semitones above the tonic of each scale degree.
    pub fn scale(self) -> [u8; 7] {
        let major = [0u8, 2, 4, 5, 7, 9, 11];
        let rotate = match self {
            Mode::Major | Mode::Ionian => 0,
            Mode::Dorian => 1,
            Mode::Phrygian => 2,
            Mode::Lydian => 3,
            Mode::Mixolydian => 4,
            Mode::Minor | Mode::Aeolian => 5,
            Mode::Locrian => 6,
        };
        let mut out = [0u8; 7];
        for (i, o) in out.iter_mut().enumerate() {
            let p = major[(i + rotate) % 7] as i32 - major[rotate] as i32;
            *o = p.rem_euclid(12) as u8;
        }
        out
    }

    /// The suffix ABC writes after the tonic (`""` for major, `"m"` for minor, `"dor"` ...).
    pub fn abc_suffix(self) -> &'static str {
        match self {
            Mode::Major => "",
            Mode::Minor => "m",
            Mode::Ionian => "ion",
            Mode::Dorian => "dor",
            Mode::Phrygian => "phr",
            Mode::Lydian => "lyd",
            Mode::Mixolydian => "mix",
            Mode::Aeolian => "aeo",
            Mode::Locrian => "loc",
        }
    }

    pub fn is_minor_like(self) -> bool {
        matches!(self, Mode::Minor | Mode::Aeolian | Mode::Dorian | Mode::Phrygian | Mode::Locrian)
    }

    pub const ALL: [Mode; 9] = [
        Mode::Major,
        Mode::Minor,
        Mode::Ionian,
        Mode::Dorian,
        Mode::Phrygian,
        Mode::Lydian,
        Mode::Mixolydian,
        Mode::Aeolian,
        Mode::Locrian,
    ];
}

/// A key: tonic, mode, and any explicit accidentals ABC added (`K:D exp ^c`, `K:Dmix ^f`).
///
/// The tonic is stored as a letter (0 = C .. 6 = B) plus an alteration in semitones, because
/// spelling matters when printing ABC: F# minor and Gb minor are different keys on paper.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Key {
    /// 0 = C, 1 = D, ... 6 = B.
    pub letter: u8,
    /// -1 flat, +1 sharp.
    pub alter: i8,
    pub mode: Mode,
    /// Accidentals written after the key, per letter (0 = C), in semitones; they override the
    /// signature's accidental for that letter.
    pub extra: Vec<(u8, i8)>,
    /// `K:none` / `K:HP`: no signature at all.
    pub none: bool,
}

impl Default for Key {
    fn default() -> Self {
        Key { letter: 0, alter: 0, mode: Mode::Major, extra: Vec::new(), none: false }
    }
}

/// Semitone of each natural letter C D E F G A B.
pub const LETTER_SEMITONES: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
/// Fifths position of each natural letter relative to C (F = -1, G = 1, ...).
const LETTER_FIFTHS: [i32; 7] = [0, 2, 4, -1, 1, 3, 5];
/// Order in which sharps enter a signature: F C G D A E B (as letter indices).
const SHARP_ORDER: [u8; 7] = [3, 0, 4, 1, 5, 2, 6];

impl Key {
    pub fn new(letter: u8, alter: i8, mode: Mode) -> Self {
        Key { letter, alter, mode, extra: Vec::new(), none: false }
    }

    /// Pitch class of the tonic.
    pub fn tonic_pc(&self) -> u8 {
        (LETTER_SEMITONES[self.letter as usize % 7] as i32 + self.alter as i32).rem_euclid(12) as u8
    }

    /// Sharps (positive) or flats (negative) in the signature, as MIDI's key signature stores it.
    pub fn fifths(&self) -> i32 {
        if self.none {
            return 0;
        }
        LETTER_FIFTHS[self.letter as usize % 7] + 7 * self.alter as i32 + self.mode.fifths_offset()
    }

    /// The accidental (semitones) the signature gives each letter C..B, extras included.
    pub fn accidentals(&self) -> [i8; 7] {
        let mut acc = [0i8; 7];
        if !self.none {
            let fifths = self.fifths();
            for i in 0..fifths.unsigned_abs().min(14) as usize {
                let letter = if fifths > 0 { SHARP_ORDER[i % 7] } else { SHARP_ORDER[6 - i % 7] };
                acc[letter as usize] += if fifths > 0 { 1 } else { -1 };
            }
        }
        for &(letter, alter) in &self.extra {
            acc[letter as usize % 7] = alter;
        }
        acc
    }

    /// Pitch classes of the key's scale (the signature applied to the seven letters).
    pub fn pitch_classes(&self) -> Vec<u8> {
        let acc = self.accidentals();
        let mut pcs: Vec<u8> =
            (0..7).map(|l| (LETTER_SEMITONES[l] as i32 + acc[l] as i32).rem_euclid(12) as u8).collect();
        pcs.sort_unstable();
        pcs.dedup();
        pcs
    }

    /// The key's pentatonic scale: 1 2 3 5 6 of a major-like key, 1 ♭3 4 5 ♭7 of a minor-like
    /// one (the same five pitch classes as the relative major's), sorted.
    pub fn pentatonic(&self) -> Vec<u8> {
        let steps: [u8; 5] = if self.mode.is_minor_like() { [0, 3, 5, 7, 10] } else { [0, 2, 4, 7, 9] };
        let mut pcs: Vec<u8> = steps.iter().map(|s| (self.tonic_pc() + s) % 12).collect();
        pcs.sort_unstable();
        pcs
    }

    /// Builds the key for a MIDI key signature (sharps/flats and major/minor).
    pub fn from_fifths(fifths: i32, minor: bool) -> Self {
        let mode = if minor { Mode::Minor } else { Mode::Major };
        let tonic_fifths = fifths - mode.fifths_offset();
        // Letter whose natural fifths position is tonic_fifths mod 7, then the alteration.
        let letter = (0..7).find(|&l| (LETTER_FIFTHS[l] - tonic_fifths).rem_euclid(7) == 0).unwrap_or(0);
        let alter = (tonic_fifths - LETTER_FIFTHS[letter]).div_euclid(7);
        Key::new(letter as u8, alter as i8, mode)
    }

    /// Transposes the key by `semitones`, choosing the spelling with the fewest accidentals.
    pub fn transposed(&self, semitones: i32) -> Key {
        if self.none || semitones.rem_euclid(12) == 0 {
            return self.clone();
        }
        let pc = (self.tonic_pc() as i32 + semitones).rem_euclid(12);
        let mut best: Option<Key> = None;
        for letter in 0..7u8 {
            for alter in -1i8..=1 {
                if (LETTER_SEMITONES[letter as usize] as i32 + alter as i32).rem_euclid(12) != pc {
                    continue;
                }
                let k = Key::new(letter, alter, self.mode);
                if best.as_ref().is_none_or(|b| k.fifths().abs() < b.fifths().abs()) {
                    best = Some(k);
                }
            }
        }
        best.unwrap_or_else(|| self.clone())
    }

    /// The tonic spelled as ABC writes it in `K:` (`F#`, `Bb`, `C`).
    pub fn tonic_name(&self) -> String {
        let mut s = String::new();
        s.push(b"CDEFGAB"[self.letter as usize % 7] as char);
        match self.alter {
            a if a > 0 => s.push_str(&"#".repeat(a as usize)),
            a if a < 0 => s.push_str(&"b".repeat((-a) as usize)),
            _ => {}
        }
        s
    }
}

impl std::fmt::Display for Key {
    /// Prints the key as ABC's `K:` value: `Ador`, `F#m`, `Bb`, `D ^g`, `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.none {
            return write!(f, "none");
        }
        write!(f, "{}{}", self.tonic_name(), self.mode.abc_suffix())?;
        for &(letter, alter) in &self.extra {
            let sign = match alter {
                2 => "^^",
                1 => "^",
                0 => "=",
                -1 => "_",
                _ => "__",
            };
            write!(f, " {}{}", sign, (b"cdefgab"[letter as usize % 7]) as char)?;
        }
        Ok(())
    }
}

/// A named part (ABC `V:` voice or a MIDI track) with its instrument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Voice {
    /// The voice id as written (`V:1`, `V:Tenor`) or a track name.
    pub name: String,
    pub channel: u8,
    pub program: u8,
}

/// Generation settings a prompt can carry in `%%` directives. Later layers read them; the score
/// only keeps them so they travel with the music (and print back).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct GenSettings {
    pub model: Option<String>,
    pub temperature: Option<f64>,
    pub top_k: Option<u32>,
    pub top_p: Option<f64>,
    pub seed: Option<u64>,
    pub bars: Option<u32>,
    /// `%%repetition_penalty 1.2` (1 = off).
    pub repetition_penalty: Option<f64>,
    /// Hard constraint `%%range C4 C6`: lowest and highest MIDI pitch, inclusive.
    pub range: Option<(u8, u8)>,
    /// Hard constraint `%%scale D dorian` or `%%scale 0 2 4 7 9`: allowed pitch classes
    /// (0 = C .. 11 = B), sorted and without repeats.
    pub pitch_classes: Option<Vec<u8>>,
    /// Hard constraint `%%scale key`: keep to the key the prompt is in where generation starts.
    pub in_key: bool,
    /// With `in_key` (`%%scale key pentatonic`): only the key's pentatonic scale.
    #[serde(default)]
    pub pentatonic: bool,
    /// `%%scale any`: no scale at all, whatever the model's defaults say.
    #[serde(default)]
    pub no_scale: bool,
    /// Hard constraint `%%polyphony N`: at most N notes sounding at once.
    pub max_polyphony: Option<u32>,
    /// Hard constraint `%%whole_bars`: bars add up to the meter.
    pub whole_bars: bool,
    /// Hard constraint `%%mono_voices`: one note at a time in each voice.
    #[serde(default)]
    pub mono_voices: bool,
    /// Hard constraint `%%no_parallels`: no parallel fifths or octaves between voices.
    #[serde(default)]
    pub no_parallels: bool,
    /// Hard constraint `%%end_on_tonic`: a whole tune ends on its key's tonic (see
    /// `gen::Constraints::end_on_tonic`).
    #[serde(default)]
    pub end_on_tonic: bool,
    /// Hard constraint `%%end_on_final`: a whole tune ends on a degree its style's tunes end
    /// on (see `gen::Constraints::end_on_final`).
    #[serde(default)]
    pub end_on_final: bool,
    /// A model's default (`generation_config.json`), not written in ABC: a repeated strain is
    /// at least this many bars (see `gen::Constraints::min_strain_bars`).
    #[serde(default)]
    pub min_strain_bars: Option<u32>,
    /// A model's default, not written in ABC: at most this many notes of one pitch in a row.
    #[serde(default)]
    pub max_repeats: Option<u32>,
    /// `%%same_pitch_bias -0.7`: added to the logit of a note on the previous note's pitch
    /// (see `gen::Sampling::same_pitch_bias`).
    #[serde(default)]
    pub same_pitch_bias: Option<f64>,
    /// `%%recall_bias 2`: added to each id that would play an earlier bar again once the bar
    /// has opened like it (see `gen::Sampling::recall_bias`).
    #[serde(default)]
    pub recall_bias: Option<f64>,
    /// `%%recall_spread 1`: each take's recall bias drawn from `recall_bias × [1 − s, 1 + s]`
    /// (see `gen::Sampling::recall_spread`).
    #[serde(default)]
    pub recall_spread: Option<f64>,
    /// A model's default, not written in ABC: a whole tune past this many bars is pushed to
    /// end (see `gen::Sampling::end_after_bars`).
    #[serde(default)]
    pub end_after_bars: Option<u32>,
    /// A model's default: nats added to the end-of-tune id per bar past `end_after_bars`.
    #[serde(default)]
    pub end_bias_per_bar: Option<f64>,
    /// A model's default, not written in ABC: each whole take draws its `end_after_bars` from
    /// its style's tune lengths (see `gen::Sampling::length_prior`).
    #[serde(default)]
    pub length_prior: bool,
    /// `%%length_temperature 1.0`, `%%length_top_p 1.0`: how note lengths are drawn (see
    /// `gen::Sampling::length_temperature`).
    #[serde(default)]
    pub length_temperature: Option<f64>,
    #[serde(default)]
    pub length_top_p: Option<f64>,
    /// `%%guidance 2.5`: classifier-free guidance on the labels (see `gen::Sampling::guidance`).
    #[serde(default)]
    pub guidance: Option<f64>,
}

impl GenSettings {
    /// Applies a `%%scale` / `--scale` / `scale:` value: a named scale replaces the pitch
    /// classes, `key` and `key pentatonic` keep to the key, `any` clears all three.
    pub fn set_scale(&mut self, scale: crate::dsl::fields::ScaleValue) {
        self.no_scale |= scale == crate::dsl::fields::ScaleValue::Any;
        scale.apply(&mut self.in_key, &mut self.pentatonic, &mut self.pitch_classes);
    }

    /// These settings, with what they leave unset taken from `fallback`.
    pub fn or(&self, fallback: &GenSettings) -> GenSettings {
        // A scale named here decides what `ScaleValue::apply` says it decides, over the
        // fallback's: `%%scale key` over a model's `key pentatonic` is diatonic, pitch classes
        // stay beside the model's key, and `%%scale any` keeps all of the fallback's scale out.
        let key_from = if self.no_scale || self.in_key { self } else { fallback };
        let pcs_from = if self.no_scale || self.pitch_classes.is_some() { self } else { fallback };
        GenSettings {
            model: self.model.clone().or_else(|| fallback.model.clone()),
            temperature: self.temperature.or(fallback.temperature),
            top_k: self.top_k.or(fallback.top_k),
            top_p: self.top_p.or(fallback.top_p),
            seed: self.seed.or(fallback.seed),
            bars: self.bars.or(fallback.bars),
            repetition_penalty: self.repetition_penalty.or(fallback.repetition_penalty),
            range: self.range.or(fallback.range),
            pitch_classes: pcs_from.pitch_classes.clone(),
            in_key: key_from.in_key,
            pentatonic: key_from.pentatonic,
            no_scale: self.no_scale || fallback.no_scale,
            max_polyphony: self.max_polyphony.or(fallback.max_polyphony),
            whole_bars: self.whole_bars || fallback.whole_bars,
            min_strain_bars: self.min_strain_bars.or(fallback.min_strain_bars),
            max_repeats: self.max_repeats.or(fallback.max_repeats),
            same_pitch_bias: self.same_pitch_bias.or(fallback.same_pitch_bias),
            recall_bias: self.recall_bias.or(fallback.recall_bias),
            recall_spread: self.recall_spread.or(fallback.recall_spread),
            end_after_bars: self.end_after_bars.or(fallback.end_after_bars),
            end_bias_per_bar: self.end_bias_per_bar.or(fallback.end_bias_per_bar),
            length_prior: self.length_prior || fallback.length_prior,
            length_temperature: self.length_temperature.or(fallback.length_temperature),
            length_top_p: self.length_top_p.or(fallback.length_top_p),
            guidance: self.guidance.or(fallback.guidance),
            mono_voices: self.mono_voices || fallback.mono_voices,
            no_parallels: self.no_parallels || fallback.no_parallels,
            end_on_tonic: self.end_on_tonic || fallback.end_on_tonic,
            end_on_final: self.end_on_final || fallback.end_on_final,
        }
    }
}

/// Whether every pitch of a chord is a unison or octave, a third (minor or major) or a fifth
/// above `bass`: a consonant triad, as a piece in parts closes on one. The one definition that
/// the generator's ending rule (`gen::Tracker`, `end_on_tonic`) and `cadenza eval`'s
/// `final_chord` share, so that what is asked for is what is measured.
pub fn triad_above(bass: u8, pitches: impl IntoIterator<Item = u8>) -> bool {
    pitches.into_iter().all(|p| p >= bass && matches!((p - bass) % 12, 0 | 3 | 4 | 7))
}

/// Scientific pitch name (`C4` = 60, sharps).
pub fn pitch_name(p: u8) -> String {
    const NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
    format!("{}{}", NAMES[p as usize % 12], p as i32 / 12 - 1)
}

/// Parses `C4`, `f#3`, `Bb5` or a MIDI number written as text.
pub fn parse_pitch(s: &str) -> Option<u8> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return u8::try_from(n).ok().filter(|p| *p <= 127);
    }
    let mut chars = s.chars();
    let letter = chars.next()?.to_ascii_uppercase();
    let base: i32 = match letter {
        'C' => 0,
        'D' => 2,
        'E' => 4,
        'F' => 5,
        'G' => 7,
        'A' => 9,
        'B' => 11,
        _ => return None,
    };
    let rest: String = chars.collect();
    let (alter, octave) = if let Some(r) = rest.strip_prefix('#') {
        (1, r)
    } else if let Some(r) = rest.strip_prefix('b') {
        (-1, r)
    } else {
        (0, rest.as_str())
    };
    let octave: i32 = octave.parse().ok()?;
    let p = (octave + 1) * 12 + base + alter;
    u8::try_from(p).ok().filter(|p| *p <= 127)
}

/// Parses a pitch range written `C4..C6`, `C4-C6`, `C4 C6` or `55..84` (inclusive, low first).
pub fn parse_pitch_range(s: &str) -> Result<(u8, u8), String> {
    let s = s.trim();
    let parts: Vec<&str> = if let Some((a, b)) = s.split_once("..") {
        vec![a, b]
    } else if s.contains(char::is_whitespace) {
        s.split_whitespace().collect()
    } else {
        s.splitn(2, '-').collect()
    };
    let [lo, hi] = parts.as_slice() else {
        return Err(format!("range `{s}` must be two pitches, like `C4..C6` or `55..84`"));
    };
    let pitch = |p: &str| {
        parse_pitch(p).ok_or_else(|| format!("range `{s}`: `{}` is not a pitch (write C4, F#3, 60)", p.trim()))
    };
    let (lo, hi) = (pitch(lo)?, pitch(hi)?);
    if lo > hi {
        return Err(format!("range `{s}` is reversed: {} is above {}", pitch_name(lo), pitch_name(hi)));
    }
    Ok((lo, hi))
}

/// Everything about a score that is not a note.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Meta {
    pub title: Option<String>,
    /// ABC `X:` reference number.
    pub reference: Option<u32>,
    /// The `C:` field (who wrote the tune), as text.
    pub composer_field: Option<String>,
    /// Meters in tick order; the first is at tick 0 (absent means 4/4).
    pub meters: Vec<(Tick, Meter)>,
    /// Keys in tick order; the first is at tick 0 (absent means C major).
    pub keys: Vec<(Tick, Key)>,
    pub tempo: TempoMap,
    /// Conditioning: style (`irish`, `german`, `chorale` ...).
    pub style: Option<String>,
    /// Conditioning: composer (`bach`).
    pub composer: Option<String>,
    /// Conditioning: instrument name (`violin`); `program` is its GM number.
    pub instrument: Option<String>,
    pub program: Option<u8>,
    pub gen: GenSettings,
    /// Chord symbols (`"Am"`), kept as text at their tick; not played.
    pub chord_symbols: Vec<(Tick, String)>,
    /// ABC `P:` part labels at their tick.
    pub parts: Vec<(Tick, String)>,
    /// Length of the anacrusis (pickup) before the first bar line, in ticks; 0 when the music
    /// starts on a bar line. Bar lines fall at `pickup`, `pickup + bar`, ...
    #[serde(default)]
    pub pickup: Tick,
}

/// A piece of music: notes sorted by start, voices, and meta. `length` includes trailing rests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Score {
    pub notes: Vec<Note>,
    pub voices: Vec<Voice>,
    pub meta: Meta,
    /// Length in ticks; at least the end of the last note.
    pub length: Tick,
}

/// The largest score cadenza reads, makes or writes. Every reader (ABC, MIDI, MusicXML, token
/// decoders) and every script operation that grows a score refuses beyond these with
/// [`ScoreError::TooLarge`] (see [`Score::check_size`]), so that a tiny file claiming a huge
/// length cannot make a per-bar pass allocate gigabytes or run for hours.
///
/// Most notes in one score: about 200 MB of notes.
pub const MAX_NOTES: usize = 10_000_000;
/// Longest score in ticks: 2^27 ticks is 279,620 quarter notes, 38.8 hours at 120 bpm.
pub const MAX_TICKS: Tick = 1 << 27;
/// Most bars (a bar list is 8 bytes a bar): 2^20 bars, 8 MB.
pub const MAX_BARS: usize = 1 << 20;
/// Longest playing time in seconds: 48 hours, whatever the tempo.
pub const MAX_SECONDS: f64 = 48.0 * 3600.0;
/// Most voices: voice numbers are a byte (MIDI files and ABC tunes are held to the same).
pub const MAX_VOICES: usize = 256;
/// Most notes `score * n` / `repeat` may make in a script: the same bound as any score.
pub const MAX_REPEAT_NOTES: usize = MAX_NOTES;

/// What can go wrong in score operations (all from user arguments).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScoreError {
    #[error("transposing by {semitones} semitones moves pitch {pitch} out of MIDI's 0..=127")]
    PitchOutOfRange { pitch: u8, semitones: i32 },
    #[error("bar range {from}..{to} is empty or reversed")]
    BadBarRange { from: u32, to: u32 },
    #[error("stretch factor {num}/{den} must be positive")]
    BadStretch { num: u64, den: u64 },
    #[error("quantize grid must be at least one tick")]
    BadGrid,
    #[error("the score is too large: {what} (a score holds at most {limit})")]
    TooLarge { what: String, limit: String },
    #[error("{what} {value} is out of MIDI's range 0..={max} ({place})")]
    OutOfRange { what: &'static str, value: u8, max: u8, place: String },
}

impl Score {
    pub fn new() -> Self {
        Score::default()
    }

    /// Puts notes in canonical order (start, then pitch, voice...) and fixes `length`.
    pub fn normalize(&mut self) {
        self.notes.sort_unstable();
        let end = self.notes.iter().map(Note::end).max().unwrap_or(0);
        self.length = self.length.max(end);
    }

    /// One line for the REPL and logs: `Score(4 bars, 24 notes, K:G M:6/8, "Kesh", G4..G5)`.
    pub fn summary(&self) -> String {
        let mut out = format!("Score({} bars, {} notes", self.bar_count(), self.notes.len());
        out.push_str(&format!(", K:{} M:{}", self.key(), self.meter()));
        if let Some(t) = &self.meta.title {
            out.push_str(&format!(", \"{t}\""));
        }
        if let Some(st) = &self.meta.style {
            out.push_str(&format!(", style {st}"));
        }
        if !self.notes.is_empty() {
            let lo = self.notes.iter().map(|n| n.pitch).min().unwrap_or(0);
            let hi = self.notes.iter().map(|n| n.pitch).max().unwrap_or(0);
            out.push_str(&format!(", {}..{}", pitch_name(lo), pitch_name(hi)));
        }
        out.push(')');
        out
    }

    /// The meter at tick 0 (4/4 when none was given).
    pub fn meter(&self) -> Meter {
        self.meter_at(0)
    }

    pub fn meter_at(&self, tick: Tick) -> Meter {
        self.meta.meters.iter().take_while(|(t, _)| *t <= tick).last().map(|(_, m)| *m).unwrap_or_default()
    }

    /// The key at tick 0 (C major when none was given).
    pub fn key(&self) -> Key {
        self.key_at(0)
    }

    pub fn key_at(&self, tick: Tick) -> Key {
        self.meta.keys.iter().take_while(|(t, _)| *t <= tick).last().map(|(_, k)| k.clone()).unwrap_or_default()
    }

    /// Tick where each bar starts, following meter changes, up to (not including) `length`.
    /// A score of length 0 has no bars. Linear in bars plus meter changes; at most
    /// [`MAX_BARS`] bars are listed (a score that passed [`Score::check_size`] has no more).
    pub fn bar_starts(&self) -> Vec<Tick> {
        let mut starts = Vec::new();
        self.walk_bars(|t| {
            starts.push(t);
            starts.len() < MAX_BARS
        });
        starts
    }

    /// The first bar line at or after `t`, before the score's end (`None` when there is none).
    pub fn bar_line_at_or_after(&self, t: Tick) -> Option<Tick> {
        let mut found = None;
        self.walk_bars(|b| {
            if b >= t {
                found = Some(b);
            }
            found.is_none()
        });
        found
    }

    /// Calls `visit` with each bar's start tick in order while it returns true.
    fn walk_bars(&self, mut visit: impl FnMut(Tick) -> bool) {
        let meters = &self.meta.meters;
        let mut t = 0;
        // A pickup is a short first bar.
        if self.meta.pickup > 0 && self.meta.pickup < self.meter().bar_ticks() && self.meta.pickup < self.length {
            if !visit(0) {
                return;
            }
            t = self.meta.pickup;
        }
        // `m` indexes the first meter change after `t`: meters are in tick order, so one pass.
        let mut m = 0;
        let mut meter = Meter::default();
        while t < self.length {
            while m < meters.len() && meters[m].0 <= t {
                meter = meters[m].1;
                m += 1;
            }
            if !visit(t) {
                return;
            }
            let bar = meter.bar_ticks().max(1);
            // A meter change inside a bar starts a new bar at the change.
            t = match meters.get(m) {
                Some(&(mt, _)) if mt < t + bar => mt,
                _ => t + bar,
            };
        }
    }

    pub fn bar_count(&self) -> usize {
        let mut n = 0;
        self.walk_bars(|_| {
            n += 1;
            n < MAX_BARS
        });
        n
    }

    /// What every reader, decoder, script operation and writer checks at its boundary: the
    /// size bounds ([`Score::check_size`]) and MIDI's value ranges, which `Note`'s plain bytes
    /// do not enforce themselves (pitch, velocity and program 0..=127, channel 0..=15, for
    /// notes and voices alike), as midly's `u7`/`u4` do for files.
    pub fn check_bounds(&self) -> Result<(), ScoreError> {
        self.check_size()?;
        let range = |what: &'static str, value: u8, max: u8, place: &dyn Fn() -> String| {
            if value > max {
                Err(ScoreError::OutOfRange { what, value, max, place: place() })
            } else {
                Ok(())
            }
        };
        for (i, n) in self.notes.iter().enumerate() {
            let at = || format!("note {} at tick {}", i + 1, n.start);
            range("pitch", n.pitch, 127, &at)?;
            range("velocity", n.velocity, 127, &at)?;
            range("channel", n.channel, 15, &at)?;
            range("program", n.program, 127, &at)?;
        }
        for (i, v) in self.voices.iter().enumerate() {
            let at = || format!("voice {} `{}`", i + 1, v.name);
            range("channel", v.channel, 15, &at)?;
            range("program", v.program, 127, &at)?;
        }
        Ok(())
    }

    /// Refuses a score beyond [`MAX_NOTES`], [`MAX_TICKS`], [`MAX_BARS`] or [`MAX_SECONDS`],
    /// saying which bound it passes. Linear in the notes' count (the bars are counted, not
    /// listed, and counting stops at the bound).
    pub fn check_size(&self) -> Result<(), ScoreError> {
        let too_large = |what: String, limit: String| Err(ScoreError::TooLarge { what, limit });
        if self.voices.len() > MAX_VOICES {
            return too_large(format!("{} voices", self.voices.len()), format!("{MAX_VOICES} voices"));
        }
        if self.notes.len() > MAX_NOTES {
            return too_large(format!("{} notes", self.notes.len()), format!("{MAX_NOTES} notes"));
        }
        let end = self.notes.iter().map(Note::end).max().unwrap_or(0).max(self.length);
        if end > MAX_TICKS {
            let quarters = end / PPQ as Tick;
            return too_large(
                format!("{end} ticks ({quarters} quarter notes)"),
                format!("{MAX_TICKS} ticks, {} quarter notes", MAX_TICKS / PPQ as Tick),
            );
        }
        let mut bars = 0usize;
        self.walk_bars(|_| {
            bars += 1;
            bars <= MAX_BARS
        });
        if bars > MAX_BARS {
            return too_large(format!("more than {MAX_BARS} bars"), format!("{MAX_BARS} bars"));
        }
        let seconds = self.meta.tempo.seconds_at(end);
        if seconds > MAX_SECONDS {
            return too_large(
                format!("{:.1} hours of music", seconds / 3600.0),
                format!("{} hours", MAX_SECONDS / 3600.0),
            );
        }
        Ok(())
    }

    /// Moves every pitch by `semitones`, and the keys with them.
    pub fn transpose(&self, semitones: i32) -> Result<Score, ScoreError> {
        let mut out = self.clone();
        for n in &mut out.notes {
            // Drums (channel 10) are not pitched; transposing them would change instruments.
            if n.channel == 9 {
                continue;
            }
            let p = n.pitch as i32 + semitones;
            if !(0..=127).contains(&p) {
                return Err(ScoreError::PitchOutOfRange { pitch: n.pitch, semitones });
            }
            n.pitch = p as u8;
        }
        for (_, k) in &mut out.meta.keys {
            *k = k.transposed(semitones);
        }
        out.notes.sort_unstable();
        Ok(out)
    }

    /// Bars `from..to` (0-based, end exclusive), re-based to tick 0. Notes that cross the cut are
    /// clipped to it, so the slice sounds exactly like that stretch of the original.
    pub fn slice_bars(&self, from: u32, to: u32) -> Result<Score, ScoreError> {
        if to <= from {
            return Err(ScoreError::BadBarRange { from, to });
        }
        let starts = self.bar_starts();
        let tick_of = |bar: u32| -> Tick {
            match starts.get(bar as usize) {
                Some(t) => *t,
                None => {
                    // Past the end: extend with the last meter so slicing beyond is well defined.
                    let last = starts.last().copied().unwrap_or(0);
                    let extra = bar as u64 - starts.len().saturating_sub(1) as u64;
                    last + extra * self.meter_at(last).bar_ticks()
                }
            }
        };
        Ok(self.slice_ticks(tick_of(from), tick_of(to)))
    }

    /// The music between ticks `[from, to)`, re-based to 0.
    pub fn slice_ticks(&self, from: Tick, to: Tick) -> Score {
        let mut out = Score {
            notes: Vec::new(),
            voices: self.voices.clone(),
            meta: self.meta.clone(),
            length: to.saturating_sub(from),
        };
        for n in &self.notes {
            let (s, e) = (n.start.max(from), n.end().min(to));
            if n.start >= from && n.start < to && e >= s {
                out.notes.push(Note { start: s - from, dur: e - s, ..*n });
            }
        }
        let rebase = |v: &Vec<(Tick, String)>| -> Vec<(Tick, String)> {
            v.iter().filter(|(t, _)| *t >= from && *t < to).map(|(t, s)| (t - from, s.clone())).collect()
        };
        out.meta.chord_symbols = rebase(&self.meta.chord_symbols);
        out.meta.parts = rebase(&self.meta.parts);
        out.meta.meters = rebase_changes(&self.meta.meters, from, to, self.meter_at(from));
        out.meta.keys = rebase_changes(&self.meta.keys, from, to, self.key_at(from));
        out.meta.tempo = self.meta.tempo.slice(from, to);
        // The pickup stays only with the start of the music.
        out.meta.pickup = if from == 0 && self.meta.pickup < to { self.meta.pickup } else { 0 };
        out
    }

    /// The same music moved later by a bar minus its pickup, so that the first full bar starts
    /// on a bar line counted from 0 and the pickup becomes the end of a silent first bar. Bar-
    /// based encodings see the bars the notation has this way; models are trained on it.
    pub fn align_pickup(&self) -> Score {
        let bar = self.meter().bar_ticks();
        let pickup = self.meta.pickup;
        if pickup == 0 || pickup >= bar {
            let mut out = self.clone();
            out.meta.pickup = 0;
            return out;
        }
        let shift = bar - pickup;
        let mut out = self.clone();
        out.meta.pickup = 0;
        for n in &mut out.notes {
            n.start += shift;
        }
        for (t, _) in out.meta.chord_symbols.iter_mut().chain(out.meta.parts.iter_mut()) {
            *t += shift;
        }
        for (t, _) in out.meta.meters.iter_mut().skip(1) {
            *t += shift;
        }
        for (t, _) in out.meta.keys.iter_mut().skip(1) {
            *t += shift;
        }
        let mut tempo = TempoMap::constant(self.meta.tempo.bpm_at(0));
        for c in self.meta.tempo.changes().iter().skip(1) {
            tempo.set(c.tick + shift, c.micros_per_quarter);
        }
        tempo.set(0, self.meta.tempo.at(0).micros_per_quarter);
        out.meta.tempo = tempo;
        out.length += shift;
        out.normalize();
        out
    }

    /// Undoes [`Score::align_pickup`]: drops the silent lead of a bar minus `pickup` and marks
    /// the pickup again. Music that starts inside the lead is kept (the lead is then shorter).
    pub fn restore_pickup(&self, pickup: Tick) -> Score {
        let bar = self.meter().bar_ticks();
        if pickup == 0 || pickup >= bar {
            return self.clone();
        }
        let first = self.notes.iter().map(|n| n.start).min().unwrap_or(self.length);
        let shift = (bar - pickup).min(first).min(self.length);
        let mut out = self.slice_ticks(shift, self.length);
        out.meta.pickup = if shift == bar - pickup { pickup } else { 0 };
        out
    }

    /// The pickup a score written as the models learnt it implies: music that starts after a
    /// silent lead shorter than a bar (an aligned pickup, see [`Score::align_pickup`]) has a
    /// pickup of the rest of that bar; otherwise 0. A take from an empty prompt is printed with
    /// `restore_pickup(implied_pickup())` so it starts with its pickup, not with a rest.
    pub fn implied_pickup(&self) -> Tick {
        let bar = self.meter().bar_ticks();
        let first = self.notes.iter().map(|n| n.start).min().unwrap_or(0);
        if first > 0 && first < bar {
            bar - first
        } else {
            0
        }
    }

    /// This score followed by `other`, which starts at this score's `length`.
    pub fn concat(&self, other: &Score) -> Score {
        let mut out = self.clone();
        out.append_unsorted(other);
        out.normalize();
        out
    }

    /// The scores one after another, as `concat` would join them pairwise, in time linear in
    /// the result (pairwise joining would copy the growing result once per score).
    pub fn concat_all<'a>(scores: impl IntoIterator<Item = &'a Score>) -> Score {
        let mut scores = scores.into_iter();
        let Some(first) = scores.next() else { return Score::default() };
        let mut out = first.clone();
        for s in scores {
            out.append_unsorted(s);
        }
        out.normalize();
        out
    }

    /// Appends `other` at this score's `length`, leaving the notes to be put in order.
    fn append_unsorted(&mut self, other: &Score) {
        let offset = self.length;
        let out = self;
        let voice_map = out.merge_voices(&other.voices);
        for n in &other.notes {
            out.notes.push(Note { start: n.start + offset, voice: voice_map[n.voice as usize], ..*n });
        }
        let shift = |v: &Vec<(Tick, String)>| v.iter().map(|(t, s)| (t + offset, s.clone())).collect::<Vec<_>>();
        out.meta.chord_symbols.extend(shift(&other.meta.chord_symbols));
        out.meta.parts.extend(shift(&other.meta.parts));
        if other.meter() != out.meter_at(offset) || !other.meta.meters.is_empty() {
            for (t, m) in &other.meta.meters {
                push_change(&mut out.meta.meters, t + offset, *m);
            }
        }
        if other.key() != out.key_at(offset) {
            for (t, k) in &other.meta.keys {
                push_change(&mut out.meta.keys, t + offset, k.clone());
            }
        }
        for c in other.meta.tempo.shifted(offset) {
            if c.micros_per_quarter != out.meta.tempo.at(c.tick).micros_per_quarter {
                out.meta.tempo.set(c.tick, c.micros_per_quarter);
            }
        }
        out.length = offset + other.length;
    }

    /// The score played `times` times in a row (0 gives an empty score with the same meta), as
    /// `concat` would join the copies, in time linear in the result (each copy is written once,
    /// not the whole result again per copy). Callers bound `times` (see `MAX_REPEAT_NOTES`).
    pub fn repeat(&self, times: u32) -> Score {
        if times == 0 {
            let mut out = Score { notes: Vec::new(), voices: self.voices.clone(), meta: self.meta.clone(), length: 0 };
            out.meta.chord_symbols.clear();
            out.meta.parts.clear();
            return out;
        }
        let len = self.length;
        let mut out = self.clone();
        out.notes.reserve(self.notes.len().saturating_mul(times as usize - 1));
        for i in 1..times as u64 {
            let offset = len.saturating_mul(i);
            out.notes.extend(self.notes.iter().map(|n| Note { start: n.start + offset, ..*n }));
            let shift = |v: &Vec<(Tick, String)>| v.iter().map(|(t, s)| (t + offset, s.clone())).collect::<Vec<_>>();
            out.meta.chord_symbols.extend(shift(&self.meta.chord_symbols));
            out.meta.parts.extend(shift(&self.meta.parts));
            // Meter, key and tempo changes inside the score come back in every copy.
            if self.meta.meters.len() > 1 {
                for (t, m) in &self.meta.meters {
                    push_change(&mut out.meta.meters, t + offset, *m);
                }
            }
            if self.meta.keys.len() > 1 {
                for (t, k) in &self.meta.keys {
                    push_change(&mut out.meta.keys, t + offset, k.clone());
                }
            }
            if self.meta.tempo.changes().len() > 1 {
                for c in self.meta.tempo.shifted(offset) {
                    out.meta.tempo.push(c.tick, c.micros_per_quarter);
                }
            }
        }
        out.length = len.saturating_mul(times as u64);
        out.normalize();
        out
    }

    /// Plays `other` at the same time as this score, keeping its voices apart.
    pub fn merge(&self, other: &Score) -> Score {
        let mut out = self.clone();
        out.list_voices();
        out.merge_unsorted(other);
        out.normalize();
        out
    }

    /// The scores played together, as `merge` would stack them pairwise, in time linear in the
    /// result.
    pub fn merge_all<'a>(scores: impl IntoIterator<Item = &'a Score>) -> Score {
        let mut scores = scores.into_iter();
        let Some(first) = scores.next() else { return Score::default() };
        let mut out = first.clone();
        out.list_voices();
        for s in scores {
            out.merge_unsorted(s);
        }
        out.meta.chord_symbols.sort();
        out.normalize();
        out
    }

    /// Lists every voice the notes name (a bare score names voices it does not list), set up
    /// from each one's first note, so voices stacked on it do not take their numbers.
    fn list_voices(&mut self) {
        let named = self.notes.iter().map(|n| n.voice as usize + 1).max().unwrap_or(0);
        for v in self.voices.len()..named {
            let first = self.notes.iter().find(|n| n.voice as usize == v);
            let (channel, program) = first.map_or((0, 0), |n| (n.channel, n.program));
            self.voices.push(Voice { name: (v + 1).to_string(), channel, program });
        }
    }

    /// Adds `other`'s notes and voices, leaving notes and chord symbols to be put in order.
    /// Voice numbers saturate at the last a byte can name; [`Score::check_size`] refuses a
    /// score with more than [`MAX_VOICES`] voices.
    fn merge_unsorted(&mut self, other: &Score) {
        let out = self;
        let new_voice = |out: &mut Score, v: Voice| {
            out.voices.push(v);
            (out.voices.len() - 1).min(u8::MAX as usize) as u8
        };
        // `other`'s voice number → ours; a note of a voice `other` does not list gets one new
        // voice per number, named and set up from its first note.
        let mut voice_map: Vec<Option<u8>> = vec![None; 256];
        for (i, v) in other.voices.iter().enumerate().take(256) {
            voice_map[i] = Some(new_voice(out, v.clone()));
        }
        for n in &other.notes {
            let voice = match voice_map[n.voice as usize] {
                Some(v) => v,
                None => {
                    let name = format!("{}", out.voices.len() + 1);
                    let v = new_voice(out, Voice { name, channel: n.channel, program: n.program });
                    voice_map[n.voice as usize] = Some(v);
                    v
                }
            };
            out.notes.push(Note { voice, ..*n });
        }
        out.meta.chord_symbols.extend(other.meta.chord_symbols.iter().cloned());
        out.length = out.length.max(other.length);
    }

    /// Snaps starts and ends to a grid of `grid` ticks; a note never shrinks to nothing (it keeps
    /// at least one grid step), so quantizing never drops notes.
    pub fn quantize(&self, grid: Tick) -> Result<Score, ScoreError> {
        if grid == 0 {
            return Err(ScoreError::BadGrid);
        }
        let snap = |t: Tick| (t + grid / 2) / grid * grid;
        let mut out = self.clone();
        for n in &mut out.notes {
            let start = snap(n.start);
            let end = snap(n.end()).max(start + grid);
            n.start = start;
            n.dur = end - start;
        }
        out.length = snap(out.length);
        out.normalize();
        Ok(out)
    }

    /// Scales time by `num/den` (2/1 plays at half speed in notation).
    pub fn stretch(&self, num: u64, den: u64) -> Result<Score, ScoreError> {
        if num == 0 || den == 0 {
            return Err(ScoreError::BadStretch { num, den });
        }
        let s = |t: Tick| t * num / den;
        let mut out = self.clone();
        for n in &mut out.notes {
            let start = s(n.start);
            n.dur = s(n.end()) - start;
            n.start = start;
        }
        for (t, _) in out.meta.chord_symbols.iter_mut().chain(out.meta.parts.iter_mut()) {
            *t = s(*t);
        }
        for (t, _) in &mut out.meta.meters {
            *t = s(*t);
        }
        for (t, _) in &mut out.meta.keys {
            *t = s(*t);
        }
        out.meta.tempo = out.meta.tempo.scaled(num, den);
        out.length = s(out.length);
        out.normalize();
        Ok(out)
    }

    /// Adds voices, reusing ones with the same name; returns the new index of each.
    fn merge_voices(&mut self, voices: &[Voice]) -> Vec<u8> {
        let mut map: Vec<u8> = voices
            .iter()
            .map(|v| match self.voices.iter().position(|w| w.name == v.name) {
                Some(i) => i as u8,
                None => {
                    self.voices.push(v.clone());
                    (self.voices.len() - 1).min(u8::MAX as usize) as u8
                }
            })
            .collect();
        // Notes may name voices the list lacks (a bare score); map them to themselves.
        map.extend((map.len()..256).map(|i| i as u8));
        map
    }

    /// Length in quarter notes, for display.
    pub fn beats(&self) -> f64 {
        self.length as f64 / PPQ as f64
    }
}

/// Changes (meters, keys) inside `[from, to)` re-based to 0, with the value at `from` first.
fn rebase_changes<T: Clone + PartialEq>(changes: &[(Tick, T)], from: Tick, to: Tick, at_from: T) -> Vec<(Tick, T)> {
    if changes.is_empty() {
        return Vec::new();
    }
    let mut out = vec![(0, at_from)];
    for (t, v) in changes {
        if *t > from && *t < to {
            push_change(&mut out, t - from, v.clone());
        }
    }
    out
}

/// Appends a change unless it repeats the one in effect (a later value at the same tick wins).
pub(crate) fn push_change<T: Clone + PartialEq>(changes: &mut Vec<(Tick, T)>, tick: Tick, value: T) {
    if let Some((t, v)) = changes.last_mut() {
        if *v == value {
            return;
        }
        if *t == tick {
            *v = value;
            return;
        }
    }
    changes.push((tick, value));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::WHOLE;

    fn bars_walked_one_change_at_a_time(s: &Score) -> Vec<Tick> {
        // The definition, quadratic but plain: each bar asks for the meter at its start.
        let mut starts = Vec::new();
        let mut t = 0;
        if s.meta.pickup > 0 && s.meta.pickup < s.meter().bar_ticks() && s.meta.pickup < s.length {
            starts.push(0);
            t = s.meta.pickup;
        }
        while t < s.length {
            starts.push(t);
            let bar = s.meter_at(t).bar_ticks().max(1);
            t = s.meta.meters.iter().map(|(mt, _)| *mt).find(|&mt| mt > t && mt < t + bar).unwrap_or(t + bar);
        }
        starts
    }

    #[test]
    fn bar_starts_equal_the_definition_with_pickups_and_changes_inside_bars() {
        let mut s = Score::new();
        s.length = 40 * WHOLE;
        s.meta.pickup = 480;
        s.meta.meters = vec![(0, Meter::new(3, 4)), (1440 * 3 + 480, Meter::new(6, 8)), (5000, Meter::new(5, 8))];
        assert_eq!(s.bar_starts(), bars_walked_one_change_at_a_time(&s));
        assert_eq!(s.bar_count(), s.bar_starts().len());
        s.meta.pickup = 0;
        s.meta.meters.push((20 * WHOLE, Meter::new(1, 64)));
        assert_eq!(s.bar_starts(), bars_walked_one_change_at_a_time(&s));
    }

    #[test]
    fn the_bar_line_at_or_after_a_tick_follows_pickups_and_meter_changes() {
        let mut s = Score::new();
        s.length = 10 * WHOLE;
        s.meta.pickup = 480;
        s.meta.meters = vec![(0, Meter::new(3, 4)), (480 + 2 * 1440, Meter::new(2, 4))];
        assert_eq!(s.bar_line_at_or_after(0), Some(0));
        assert_eq!(s.bar_line_at_or_after(1), Some(480));
        assert_eq!(s.bar_line_at_or_after(480), Some(480));
        assert_eq!(s.bar_line_at_or_after(481), Some(480 + 1440));
        // Past the change bars are 2/4 (960 ticks).
        assert_eq!(s.bar_line_at_or_after(480 + 2 * 1440 + 1), Some(480 + 2 * 1440 + 960));
        assert_eq!(s.bar_line_at_or_after(s.length), None, "none at or past the end");
    }

    #[test]
    fn check_size_names_the_bound_a_score_passes() {
        let mut s = Score::new();
        s.length = MAX_TICKS;
        assert_eq!(s.check_size(), Ok(()));
        s.length = MAX_TICKS + 1;
        assert!(s.check_size().unwrap_err().to_string().contains("134217729 ticks"));
        // Bars of 1/64 (30 ticks) pass the bar bound long before the tick bound.
        s.length = 31_500_000;
        s.meta.meters = vec![(0, Meter::new(1, 64))];
        assert!(s.check_size().unwrap_err().to_string().contains("at most 1048576 bars"));
        // The slowest tempo MIDI stores (16.7 s a quarter) passes 48 hours.
        s.meta.meters.clear();
        s.length = MAX_TICKS / 2;
        s.meta.tempo = TempoMap::default();
        s.meta.tempo.set(0, 0xFF_FFFF);
        assert!(s.check_size().unwrap_err().to_string().contains("hours of music"));
        s.meta.tempo = TempoMap::default();
        assert_eq!(s.check_size(), Ok(()));
        s.voices = vec![Voice { name: "v".into(), channel: 0, program: 0 }; MAX_VOICES + 1];
        assert!(s.check_size().unwrap_err().to_string().contains("257 voices"));
        // Values MIDI cannot carry are refused at every boundary, naming the note or voice.
        s.voices = vec![Voice { name: "lead".into(), channel: 16, program: 0 }];
        assert_eq!(
            s.check_bounds().unwrap_err().to_string(),
            "channel 16 is out of MIDI's range 0..=15 (voice 1 `lead`)"
        );
        s.voices.clear();
        s.notes = vec![Note::new(0, 480, 60), Note { velocity: 128, ..Note::new(480, 480, 62) }];
        assert_eq!(
            s.check_bounds().unwrap_err().to_string(),
            "velocity 128 is out of MIDI's range 0..=127 (note 2 at tick 480)"
        );
        s.notes[1].velocity = 127;
        assert_eq!(s.check_bounds(), Ok(()));
    }

    /// A score whose notes name voices it does not list gets one new voice per voice number
    /// when stacked, not one per note.
    #[test]
    fn stacking_a_bare_score_adds_one_voice_per_voice_number() {
        let a = Score { notes: vec![Note::new(0, 480, 60)], voices: vec![], length: 480, ..Score::default() };
        let mut b = a.clone();
        b.notes = vec![Note::new(0, 480, 64), Note::new(480, 480, 65), Note { voice: 1, ..Note::new(0, 960, 48) }];
        b.length = 960;
        let m = a.merge(&b);
        assert_eq!(m.voices.len(), 3, "{:?}", m.voices);
        assert_eq!(m.notes.iter().filter(|n| n.voice == 0).count(), 1, "a keeps its voice to itself");
        assert_eq!(Score::merge_all([&a, &b, &b]), a.merge(&b).merge(&b));
        assert_eq!(Score::concat_all([&a, &b, &a]), a.concat(&b).concat(&a));
        assert_eq!(Score::concat_all([]), Score::default());
    }

    /// Regression: `abc(...) * 30000` took over a minute (each copy re-copied the whole result).
    /// `repeat` must equal the copies joined by `concat`, meter, key and tempo changes included.
    #[test]
    fn a_silent_lead_shorter_than_a_bar_is_a_pickup() {
        let mut s = Score::new();
        s.meta.meters.push((0, Meter::new(3, 4)));
        s.notes = vec![Note::new(960, 480, 67), Note::new(1440, 480, 72)];
        s.length = 2880;
        assert_eq!(s.implied_pickup(), 480);
        let back = s.restore_pickup(s.implied_pickup());
        assert_eq!(back.meta.pickup, 480);
        assert_eq!(back.notes[0].start, 0);
        assert_eq!(back.align_pickup().notes, s.notes, "align_pickup undoes it");
        s.notes[0].start = 0;
        assert_eq!(s.implied_pickup(), 0);
    }

    #[test]
    fn repeat_equals_concatenated_copies_and_stays_linear() {
        let mut s = scale_score();
        s.meta.meters = vec![(0, Meter::new(4, 4)), (1920, Meter::new(3, 4))];
        s.meta.keys = vec![(0, Key::default()), (1920, Key::new(1, 0, Mode::Major))];
        s.meta.tempo.set(960, 400_000);
        s.meta.parts.push((0, "A".into()));
        let mut by_concat = s.clone();
        for _ in 1..4 {
            by_concat = by_concat.concat(&s);
        }
        assert_eq!(s.repeat(4), by_concat);
        assert_eq!(s.repeat(1), s);
        assert!(s.repeat(0).notes.is_empty());
        let big = s.repeat(50_000);
        assert_eq!(big.notes.len(), 400_000);
        assert_eq!(big.length, 50_000 * s.length);
    }

    fn scale_score() -> Score {
        let mut s = Score::new();
        for (i, p) in [60u8, 62, 64, 65, 67, 69, 71, 72].iter().enumerate() {
            s.notes.push(Note::new(i as Tick * 480, 480, *p));
        }
        s.meta.meters.push((0, Meter::new(4, 4)));
        s.meta.keys.push((0, Key::new(0, 0, Mode::Major)));
        s.normalize();
        s
    }

    #[test]
    fn key_signatures_match_music_theory() {
        // (letter, alter, mode) -> fifths
        let cases = [
            (1, 0, Mode::Major, 2),      // D
            (5, 0, Mode::Dorian, 1),     // A dorian = G major
            (3, 1, Mode::Minor, 3),      // F# minor
            (6, -1, Mode::Major, -2),    // Bb
            (1, 0, Mode::Mixolydian, 1), // D mixolydian = G major
            (4, 0, Mode::Dorian, -1),    // G dorian = F major
            (2, 0, Mode::Phrygian, 0),   // E phrygian = C
            (3, 0, Mode::Lydian, 0),     // F lydian = C
            (6, 0, Mode::Locrian, 0),    // B locrian = C
        ];
        for (letter, alter, mode, want) in cases {
            let k = Key::new(letter, alter, mode);
            assert_eq!(k.fifths(), want, "{k}");
        }
        assert_eq!(Key::new(1, 0, Mode::Major).accidentals(), [1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(Key::new(6, -1, Mode::Major).accidentals(), [0, 0, -1, 0, 0, 0, -1]);
        assert_eq!(Key::from_fifths(3, true).to_string(), "F#m");
        assert_eq!(Key::from_fifths(-2, false).to_string(), "Bb");
        assert_eq!(Key::from_fifths(0, false).to_string(), "C");
        assert_eq!(Key::from_fifths(-6, false).to_string(), "Gb");
    }

    #[test]
    fn mode_scales() {
        assert_eq!(Mode::Dorian.scale(), [0, 2, 3, 5, 7, 9, 10]);
        assert_eq!(Mode::Minor.scale(), [0, 2, 3, 5, 7, 8, 10]);
        assert_eq!(Key::new(1, 0, Mode::Major).pitch_classes(), vec![1, 2, 4, 6, 7, 9, 11]);
    }

    #[test]
    fn transpose_moves_notes_and_key() {
        let s = scale_score().transpose(2).unwrap();
        assert_eq!(s.notes[0].pitch, 62);
        assert_eq!(s.key().to_string(), "D");
        assert!(scale_score().transpose(100).is_err());
        assert_eq!(scale_score().transpose(-1).unwrap().key().to_string(), "B");
    }

    #[test]
    fn slice_concat_repeat() {
        let s = scale_score();
        assert_eq!(s.bar_count(), 2);
        let second = s.slice_bars(1, 2).unwrap();
        assert_eq!(second.notes.len(), 4);
        assert_eq!(second.notes[0], Note::new(0, 480, 67));
        assert_eq!(second.length, 1920);
        let first = s.slice_bars(0, 1).unwrap();
        assert_eq!(first.concat(&second), s);
        let r = s.repeat(3);
        assert_eq!(r.notes.len(), 24);
        assert_eq!(r.length, 3 * 3840);
        assert_eq!(r.slice_bars(4, 6).unwrap().notes, s.notes);
    }

    #[test]
    fn merge_quantize_stretch() {
        let s = scale_score();
        let m = s.merge(&s.transpose(4).unwrap());
        assert_eq!(m.notes.len(), 16);
        assert_eq!(m.length, s.length);
        let mut rough = s.clone();
        rough.notes[1].start += 17;
        rough.notes[1].dur -= 30;
        assert_eq!(rough.quantize(120).unwrap().notes, s.notes);
        let slow = s.stretch(2, 1).unwrap();
        assert_eq!(slow.notes[1], Note::new(960, 960, 62));
        assert_eq!(slow.stretch(1, 2).unwrap(), s);
    }
}
