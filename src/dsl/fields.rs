//! Values of the information fields: `K:` keys, `M:` meters, `L:` unit lengths, `Q:` tempos.
//! Each function is the grammar rule of that field's value (`key_value`, `meter_value`, ...).
//!
//! Real collections write these loosely (`K:E Minor`, `K:Dmix=c`, `M: FREI4/4`, `Q:1/4=80
//! "Slow"`), so the rules accept what abc2midi accepts and ignore what carries no pitch or time
//! (clefs, `-8va`, text). An error names what was expected; the caller adds line and column.

use crate::score::{Key, Mode};
use crate::time::{Meter, MeterSymbol};

/// Fastest `Q:` tempo read, in beats a minute: a beat a microsecond.
pub const MAX_BPM: f64 = 60_000_000.0;

/// An error in a field value: byte offset into the value and what was expected there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldError {
    pub at: usize,
    pub expected: &'static str,
}

fn err<T>(at: usize, expected: &'static str) -> Result<T, FieldError> {
    Err(FieldError { at, expected })
}

/// Splits `s` into whitespace-separated words with their byte offsets.
fn words(s: &str) -> impl Iterator<Item = (usize, &str)> {
    s.split_ascii_whitespace().map(move |w| (w.as_ptr() as usize - s.as_ptr() as usize, w))
}

/// mode = "m" | "maj" | "min" | "ion" | "dor" | "phr" | "lyd" | "mix" | "aeo" | "loc" | "exp"
/// (case-insensitive, only the first three letters count: `Mixolydian` = `mix`).
/// Returns `Some(None)` for `exp` (explicit: no signature, only the listed accidentals) and
/// `None` for an unknown mode.
pub fn mode_value(s: &str) -> Option<Option<Mode>> {
    let lower = |i: usize| s.as_bytes().get(i).map(u8::to_ascii_lowercase);
    let three = [lower(0), lower(1), lower(2)];
    let m = match three {
        [None, ..] => Mode::Major,
        [Some(b'm'), None, _] => Mode::Minor,
        [Some(b'm'), Some(b'a'), Some(b'j')] => Mode::Major,
        [Some(b'm'), Some(b'i'), Some(b'n')] => Mode::Minor,
        [Some(b'm'), Some(b'i'), Some(b'x')] => Mode::Mixolydian,
        [Some(b'i'), Some(b'o'), Some(b'n')] => Mode::Ionian,
        [Some(b'd'), Some(b'o'), Some(b'r')] => Mode::Dorian,
        [Some(b'p'), Some(b'h'), Some(b'r')] => Mode::Phrygian,
        [Some(b'l'), Some(b'y'), Some(b'd')] => Mode::Lydian,
        [Some(b'a'), Some(b'e'), Some(b'o')] => Mode::Aeolian,
        [Some(b'l'), Some(b'o'), Some(b'c')] => Mode::Locrian,
        [Some(b'e'), Some(b'x'), Some(b'p')] => return Some(None),
        // `Dmixm` and other stray letters after a known mode are tolerated by abc2midi too.
        [Some(b'm'), Some(c), _] if !c.is_ascii_alphabetic() => Mode::Minor,
        _ => return None,
    };
    Some(Some(m))
}

/// key_value = ("none" | "HP" | "Hp" | tonic mode?) (accidental letter | clef-words)*
pub fn key_value(v: &str) -> Result<Key, FieldError> {
    let mut ws = words(v).peekable();
    let Some((at, first)) = ws.next() else { return Ok(Key::default()) };
    let mut key = match first {
        "none" | "None" | "NONE" => Key { none: true, ..Key::default() },
        "HP" => Key { none: true, ..Key::default() },
        // Highland pipes with the written signature: F# and C#, G natural (A mixolydian).
        "Hp" => Key::new(5, 0, Mode::Mixolydian),
        _ => {
            let b = first.as_bytes();
            let letter = match b[0] {
                b'C'..=b'G' => b[0] - b'C',
                b'A' | b'B' => b[0] - b'A' + 5,
                // A key that starts with a clef or an accidental list has tonic C.
                _ if first.contains('=') || b[0] == b'^' || b[0] == b'_' => {
                    return extras(Key::default(), std::iter::once((at, first)).chain(ws));
                }
                _ => return err(at, "a key like `D`, `Ador`, `F#m`, `Bb` or `none`"),
            };
            let mut rest = &first[1..];
            let alter = match rest.as_bytes().first() {
                Some(b'#') => 1,
                Some(b'b') => -1,
                _ => 0,
            };
            if alter != 0 {
                rest = &rest[1..];
            }
            // `Dmix=c`: a mode glued to an accidental; split at the first accidental sign.
            let split = rest.find(['=', '^', '_']).unwrap_or(rest.len());
            let (mode_text, glued) = rest.split_at(split);
            let mut mode_text = mode_text;
            // `K:A Minor`: the mode may be the next word.
            if mode_text.is_empty() && glued.is_empty() {
                if let Some(&(_, w)) = ws.peek() {
                    if mode_value(w).is_some() && w.as_bytes()[0].is_ascii_alphabetic() && !w.contains('=') {
                        mode_text = w;
                        ws.next();
                    }
                }
            }
            // abc2midi warns and reads an unknown mode as major; real files have `Bn`.
            let mode = mode_value(mode_text).unwrap_or(Some(Mode::Major));
            let mut key = Key::new(letter, alter, mode.unwrap_or(Mode::Major));
            if mode.is_none() {
                key.none = true;
            }
            if !glued.is_empty() {
                key = extras(key, std::iter::once((at + first.len() - glued.len(), glued)))?;
            }
            key
        }
    };
    key = extras(key, ws)?;
    Ok(key)
}

/// What a `%%scale` directive (or `gen`'s `scale` option) asks generation to keep to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaleValue {
    /// `key`: the key the prompt is in where generation starts.
    Key,
    /// `key pentatonic`: that key's pentatonic scale (see `Key::pentatonic`).
    KeyPentatonic,
    /// `any` / `chromatic`: no scale (undoes a model's default one).
    Any,
    /// A set of pitch classes (0 = C .. 11 = B), sorted, without repeats.
    PitchClasses(Vec<u8>),
}

/// The constraint fields a scale sets; `None` leaves a field as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleFields {
    pub in_key: Option<bool>,
    pub pentatonic: Option<bool>,
    /// `Some(None)`: no pitch-class limit.
    pub pitch_classes: Option<Option<Vec<u8>>>,
}

impl ScaleValue {
    /// The one meaning of a scale for `%%scale`, `--scale` and `gen`'s `scale`. `key` and `key
    /// pentatonic` decide whether to keep to the key and to its pentatonic (so `key` over a
    /// model's `key pentatonic` is diatonic); a set of pitch classes is kept beside the key, and
    /// both hold (a header may carry both, and reads back the same in either order); `any`
    /// clears all three.
    pub fn fields(self) -> ScaleFields {
        let (in_key, pentatonic, pitch_classes) = match self {
            ScaleValue::Key => (Some(true), Some(false), None),
            ScaleValue::KeyPentatonic => (Some(true), Some(true), None),
            ScaleValue::PitchClasses(pcs) => (None, None, Some(Some(pcs))),
            ScaleValue::Any => (Some(false), Some(false), Some(None)),
        };
        ScaleFields { in_key, pentatonic, pitch_classes }
    }

    /// Sets the fields [`ScaleValue::fields`] names.
    pub fn apply(self, in_key: &mut bool, pentatonic: &mut bool, pitch_classes: &mut Option<Vec<u8>>) {
        let f = self.fields();
        *in_key = f.in_key.unwrap_or(*in_key);
        *pentatonic = f.pentatonic.unwrap_or(*pentatonic);
        if let Some(pcs) = f.pitch_classes {
            *pitch_classes = pcs;
        }
    }
}

/// scale_value = "key" | "key pentatonic" | "any" | "chromatic" | pitch_class , { [","] , pitch_class } | key_value , ["pentatonic"] :
/// `key`, `key pentatonic`, `0 2 4 7 9`, `0,2,4,7,9`, `D dorian`, `Ador`, `F#m`, `A minor pentatonic`,
/// `G pentatonic`. A pentatonic scale is the minor one (1 b3 4 5 b7) on a minor-like mode, else
/// the major one (1 2 3 5 6).
pub fn scale_value(v: &str) -> Result<ScaleValue, FieldError> {
    let v = v.trim();
    const EXPECTED: &str = "a scale like `key`, `key pentatonic`, `D dorian`, `A minor pentatonic` or `0 2 4 7 9`";
    if v.is_empty() {
        return err(0, EXPECTED);
    }
    if v == "key" {
        return Ok(ScaleValue::Key);
    }
    if v.split_whitespace().eq(["key", "pentatonic"]) {
        return Ok(ScaleValue::KeyPentatonic);
    }
    if v == "any" || v == "chromatic" {
        return Ok(ScaleValue::Any);
    }
    if v.as_bytes()[0].is_ascii_digit() {
        let mut pcs = Vec::new();
        for (at, w) in words(&v.replace(',', " ")) {
            match w.parse::<u8>() {
                Ok(pc) if pc < 12 => pcs.push(pc),
                _ => return err(at, "a pitch class from 0 (C) to 11 (B)"),
            }
        }
        pcs.sort_unstable();
        pcs.dedup();
        return Ok(ScaleValue::PitchClasses(pcs));
    }
    let (key_text, pentatonic) = match v.strip_suffix("pentatonic") {
        Some(k) => (k.trim_end(), true),
        None => (v, false),
    };
    if key_text.is_empty() {
        return err(0, EXPECTED);
    }
    let key = key_value(key_text).map_err(|_| FieldError { at: 0, expected: EXPECTED })?;
    if key.none {
        return err(0, EXPECTED);
    }
    if !pentatonic {
        return Ok(ScaleValue::PitchClasses(key.pitch_classes()));
    }
    Ok(ScaleValue::PitchClasses(key.pentatonic()))
}

/// Explicit accidentals after the key (`^f _b =c`); clef and transposition words are skipped.
fn extras<'a>(mut key: Key, ws: impl Iterator<Item = (usize, &'a str)>) -> Result<Key, FieldError> {
    for (_, w) in ws {
        let b = w.as_bytes();
        let (alter, rest) = match b {
            [b'^', b'^', ..] => (2, &w[2..]),
            [b'_', b'_', ..] => (-2, &w[2..]),
            [b'^', ..] => (1, &w[1..]),
            [b'_', ..] => (-1, &w[1..]),
            [b'=', ..] => (0, &w[1..]),
            // clef=, octave=, bass, treble8, -8va, middle=... carry no pitch for playback.
            _ => continue,
        };
        let letter = match rest.as_bytes().first().map(u8::to_ascii_lowercase) {
            Some(c @ b'c'..=b'g') => c - b'c',
            Some(c @ (b'a' | b'b')) => c - b'a' + 5,
            _ => continue,
        };
        key.extra.retain(|&(l, _)| l != letter);
        key.extra.push((letter, alter));
    }
    Ok(key)
}

/// meter_value = "C" | "C|" | "none" | sum "/" number : `6/8`, `2+3+2/8`, `(2+3)/8`.
/// German collections write `FREI4/4` (free, barred as 4/4): read as 4/4.
pub fn meter_value(v: &str) -> Result<Meter, FieldError> {
    let v = v.trim();
    match v {
        "" | "none" | "None" | "NONE" => return Ok(Meter::free()),
        "C" => return Ok(Meter { num: 4, den: 4, symbol: MeterSymbol::Common }),
        "C|" => return Ok(Meter { num: 2, den: 2, symbol: MeterSymbol::Cut }),
        _ => {}
    }
    let body_at = v.find(|c: char| c.is_ascii_digit() || c == '(').unwrap_or(0);
    let first = v[body_at..].split_ascii_whitespace().next().unwrap_or("");
    let Some(slash) = first.find('/') else { return err(body_at, "a meter like `6/8`, `C`, `C|` or `none`") };
    let mut num = 0u32;
    for part in first[..slash].trim_matches(|c| c == '(' || c == ')').split(['+', '.']) {
        match part.parse::<u32>() {
            Ok(n) => num = num.saturating_add(n),
            Err(_) => return err(body_at, "a meter like `6/8`, `C`, `C|` or `none`"),
        }
    }
    let den = first[slash + 1..].parse::<u32>();
    match den {
        Ok(den) if Meter::new(num, den).is_writable() => Ok(Meter::new(num, den)),
        _ => err(body_at, "a meter like `6/8` with numbers from 1 to 64"),
    }
}

/// unit_value = number "/" number : the unit note length, `1/8`.
pub fn unit_value(v: &str) -> Result<(u32, u32), FieldError> {
    let v = v.trim();
    let expected = "a unit length like `1/8`";
    let (n, d) = match v.split_once('/') {
        Some((n, d)) => (n.trim().parse::<u32>(), d.trim().parse::<u32>()),
        // `L:1` means a whole note.
        None => (v.parse::<u32>(), Ok(1)),
    };
    match (n, d) {
        (Ok(n), Ok(d)) if n > 0 && d > 0 && n <= 64 && d <= 512 => Ok((n, d)),
        _ => err(0, expected),
    }
}

/// tempo_value = text? (fraction+ "=")? number text? : `1/4=120`, `3/8=60 "Slow"`, `120`,
/// `"Allegro"`. Returns beats per minute and the beat as a fraction of a whole note; `None`
/// when only text was given. A bare number counts in unit lengths (`unit`), as ABC 1.6 did.
pub fn tempo_value(v: &str, unit: (u32, u32)) -> Result<Option<(f64, u32, u32)>, FieldError> {
    // Drop quoted text anywhere.
    let mut plain = String::new();
    let mut quoted = false;
    for c in v.chars() {
        if c == '"' {
            quoted = !quoted;
            plain.push(' ');
        } else if !quoted {
            plain.push(c);
        }
    }
    let plain = plain.trim();
    if plain.is_empty() {
        return Ok(None);
    }
    let expected = "a tempo like `1/4=120`";
    let (beats, bpm) = match plain.split_once('=') {
        Some((b, n)) => (Some(b.trim()), n.trim()),
        None => (None, plain),
    };
    let bpm_word = bpm.split_ascii_whitespace().next().unwrap_or("");
    let Ok(bpm) = bpm_word.parse::<f64>() else { return err(0, expected) };
    // Up to one beat a microsecond, the fastest tempo a MIDI file can hold: whatever tempo
    // cadenza reads from MIDI, it writes as `Q:` and must read back (60,000,000 for a MIDI
    // tempo of 1 µs a quarter; the limit was 10,000 and such a file did not read back).
    if !(bpm > 0.0 && bpm <= MAX_BPM) {
        return err(0, expected);
    }
    let (mut num, mut den) = (0u32, 1u32);
    match beats {
        None => (num, den) = unit,
        Some(b) => {
            // `C=120` (old ABC: a crotchet) and sums like `1/4 1/8=...`.
            for f in b.split_ascii_whitespace() {
                let (n, d) = match f {
                    "C" | "c" => (1, 4),
                    _ => match f.split_once('/') {
                        Some((n, d)) => match (n.parse::<u32>(), d.parse::<u32>()) {
                            (Ok(n), Ok(d)) if n > 0 && d > 0 && d <= 512 => (n, d),
                            _ => return err(0, expected),
                        },
                        None => return err(0, expected),
                    },
                };
                // num/den + n/d
                num = num * d + n * den;
                den *= d;
            }
            if num == 0 {
                return err(0, expected);
            }
        }
    }
    Ok(Some((bpm, num, den)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_as_collections_write_them() {
        let k = |s: &str| key_value(s).unwrap().to_string();
        assert_eq!(k("G"), "G");
        assert_eq!(k("Ador"), "Ador");
        assert_eq!(k("A Dorian"), "Ador");
        assert_eq!(k("E Minor"), "Em");
        assert_eq!(k("F#m"), "F#m");
        assert_eq!(k("Bb"), "Bb");
        assert_eq!(k("AMix"), "Amix");
        assert_eq!(k("E phr bass"), "Ephr");
        assert_eq!(k("G mix treble8"), "Gmix");
        assert_eq!(k("Dmix=c"), "Dmix =c");
        assert_eq!(key_value("D exp ^f ^c").unwrap().accidentals(), [1, 0, 0, 1, 0, 0, 0]);
        assert_eq!(k("none"), "none");
        assert_eq!(k(""), "C");
        assert!(key_value("Q").is_err());
        assert_eq!(key_value("D ^g").unwrap().accidentals(), [1, 0, 0, 1, 1, 0, 0]);
    }

    #[test]
    fn meters_units_tempos() {
        assert_eq!(meter_value("6/8").unwrap(), Meter::new(6, 8));
        assert_eq!(meter_value("C").unwrap().bar_ticks(), 1920);
        assert_eq!(meter_value("C|").unwrap().to_string(), "C|");
        assert_eq!(meter_value("none").unwrap().symbol, MeterSymbol::Free);
        assert_eq!(meter_value("2+3+2/8").unwrap(), Meter::new(7, 8));
        assert_eq!(meter_value("FREI4/4").unwrap(), Meter::new(4, 4));
        assert!(meter_value("six eight").is_err());
        assert_eq!(unit_value("1/16").unwrap(), (1, 16));
        assert!(unit_value("1/0").is_err());
        assert_eq!(tempo_value("1/4=120", (1, 8)).unwrap(), Some((120.0, 1, 4)));
        assert_eq!(tempo_value("3/8=60 \"Slow\"", (1, 8)).unwrap(), Some((60.0, 3, 8)));
        assert_eq!(tempo_value("\"Allegro\"", (1, 8)).unwrap(), None);
        assert_eq!(tempo_value("100", (1, 8)).unwrap(), Some((100.0, 1, 8)));
        // The fastest tempo a MIDI file holds (1 µs a quarter) reads; faster does not.
        assert_eq!(tempo_value("1/4=60000000", (1, 8)).unwrap(), Some((MAX_BPM, 1, 4)));
        assert!(tempo_value("1/4=60000001", (1, 8)).is_err());
        assert!(tempo_value("fast=", (1, 8)).is_err());
    }
}
