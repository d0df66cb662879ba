//! Lowering: gives an ABC syntax tree its musical meaning and builds a `Score` in playing order.
//!
//! abc2midi (Debian `abcmidi` 4.84) is the reference for every choice ABC 2.1 leaves open; each
//! was checked by rendering a small tune with it:
//! - an explicit accidental carries to the end of the bar for that *letter in every octave*
//!   (`^c c'` plays C#6); `%%MIDI nobarlines` turns carrying off;
//! - grace notes sound: each lasts a quarter of the unit length (abc2midi's `gracedivider` 4),
//!   taken from the next note, which starts after them, but together never more than half of
//!   it (`{ga}A2` with L:1/8 = g 60, a 60, A 360 ticks; `{A}G2` = A 60, G 420);
//! - `:|` with no `|:` repeats from the start of the tune or from the last `:|`, or from a
//!   double bar after that `:|` (see `order::play_order` for the one case kept apart);
//! - a chord lasts as long as its first note;
//! - `%%MIDI transpose n` shifts what sounds, not what is written;
//! - staccato `.` sounds half the note's length; a fermata `H` doubles the note (and the time);
//! - a trill `T` / `!trill!` is the written note unless [`LowerOptions::ornaments`] asks for
//!   it played as abc2midi plays it: the upper neighbour (next letter up, in the key) and the
//!   note alternating, upper first, in notes of a quarter halved until one lasts at most
//!   100 ms at the tempo (a 32nd at 120 bpm), and a roll `~` as abc2midi's "ornament" (see
//!   `roll_notes`); written notes are the default (the corpus and the models learn them).
//!
//! Time inside a voice is kept as an exact rational number of ticks, so tuplets never drift;
//! each note's start and end are rounded to whole ticks independently.

use super::ast::{self, BarKind, Item, RestKind, Tune};
use super::diagnostics::DslError;
use super::fields::{self, key_value, meter_value, tempo_value, unit_value, FieldError};
use super::instruments;
use super::order::{apply_parts, map_changes, part_order, play_order, Marker};
use super::rational::Rat;
use crate::score::{Key, Meta, Note, Score, ScoreError, Voice, LETTER_SEMITONES};
use crate::time::{bpm_to_micros, Meter, MeterSymbol, TempoMap, Tick, WHOLE};

/// What lowering keeps for one ABC voice while it walks the body.
struct VoiceState {
    name: String,
    /// Notation time: where the next note starts before repeats are expanded.
    time: Rat,
    /// Ticks per unit length `L:`.
    unit: Rat,
    meter: Meter,
    key_acc: [i8; 7],
    /// Accidentals written earlier in this bar, per letter (`None`: use the key).
    bar_acc: [Option<i8>; 7],
    notes: Vec<Note>,
    /// Notes whose tie `-` waits for a note of the same pitch: (letter, octave, pitch, index).
    ties: Vec<(u8, i8, u8, usize)>,
    /// The previous note's ties while the current one is sounded (kept to reuse its buffer).
    old_ties: Vec<(u8, i8, u8, usize)>,
    markers: Vec<(Tick, Marker)>,
    /// Active tuplet: time factor and how many notes it still covers.
    tuplet: Option<(Rat, u32)>,
    /// Length factor the last broken rhythm `>`/`<` left for the next note.
    next_factor: Option<Rat>,
    graces: Vec<u8>,
    velocity: u8,
    /// `.` before the next note: it sounds half its length (abc2midi's rendering).
    staccato: bool,
    /// `H` / `!fermata!` before the next note or rest: it lasts twice as long (abc2midi's).
    fermata: bool,
    /// `T` / `!trill!` before the next note.
    trill: bool,
    /// `~` before the next note: `Some(true)` when the note is written three units long
    /// (abc2midi plays those as three beats, the last two cut).
    roll: Option<bool>,
    channel: u8,
    program: Option<u8>,
    transpose: i32,
    chord_symbols: Vec<(Tick, String)>,
    /// Notation time of the first bar line with music before it: a pickup when under a bar.
    first_bar: Option<Tick>,
}

/// Most notes one trill plays: past it (a very long note, or a tempo so slow the step falls to a
/// tick, as fuzzed input had) the alternations get longer instead of more numerous, so a few
/// bytes of ABC cannot expand into millions of notes.
pub const MAX_TRILL_NOTES: Tick = 512;

/// A trill on `n` as abc2midi plays it: `upper` and the note alternating, upper first, each a
/// quarter note halved until it lasts at most 100 ms at `micros` per quarter; their count is
/// the note's length over that (at least one, at most [`MAX_TRILL_NOTES`]), so together they
/// fill the note exactly.
fn trill_notes(n: Note, upper: u8, micros: u32) -> impl Iterator<Item = Note> {
    let mut step: Tick = crate::time::PPQ as Tick;
    while step > 1 && step * micros as Tick > 100_000 * crate::time::PPQ as Tick {
        step /= 2;
    }
    let count = (n.dur / step).clamp(1, MAX_TRILL_NOTES);
    (0..count).map(move |i| {
        let (a, b) = (n.dur * i / count, n.dur * (i + 1) / count);
        Note { start: n.start + a, dur: b - a, pitch: if i % 2 == 0 { upper } else { n.pitch }, ..n }
    })
}

/// An Irish roll `~` on `n` as abc2midi plays it (its "ornament"): a note written three units
/// long is three equal beats, the second and third each cut by a grace of `grace` ticks from
/// the note above and the note below (`~c3` with L:1/8 = c 240, d 60, c 180, B 60, c 180);
/// any other note is one cut from above (`~c2` = d 60, c 420). A grace never takes more than
/// half of its beat.
fn roll_notes(n: Note, upper: u8, lower: u8, grace: Tick, three: bool) -> Vec<Note> {
    let note = |start: Tick, dur: Tick, pitch: u8| Note { start, dur, pitch, ..n };
    let cut = |start: Tick, dur: Tick, from: u8| {
        let g = grace.min(dur / 2);
        [note(start, g, from), note(start + g, dur - g, n.pitch)]
    };
    if !three {
        return cut(n.start, n.dur, upper).into_iter().filter(|x| x.dur > 0).collect();
    }
    let beat = n.dur / 3;
    let mut out = vec![note(n.start, beat, n.pitch)];
    out.extend(cut(n.start + beat, beat, upper));
    out.extend(cut(n.start + 2 * beat, n.dur - 2 * beat, lower));
    out.retain(|x| x.dur > 0);
    out
}

impl VoiceState {
    /// The note a step above (or below) a written one in the key: the next letter, with the
    /// key's accidental, not the bar's, as abc2midi takes an ornament's neighbours; shifted by
    /// the tune's and the voice's transposition `shift` as the written note was.
    fn neighbour(&self, letter: u8, octave: i8, shift: i32, up: bool) -> u8 {
        let letter = letter as usize % 7;
        let (next, octave_change) = match up {
            true => ((letter + 1) % 7, if letter == 6 { 12 } else { 0 }),
            false => ((letter + 6) % 7, if letter == 0 { -12 } else { 0 }),
        };
        let pitch = 60 + 12 * octave as i32 + octave_change + LETTER_SEMITONES[next] as i32 + self.key_acc[next] as i32;
        (pitch + shift).clamp(0, 127) as u8
    }

    /// Sounds the pending grace notes before a note of length `advance`: each lasts a quarter
    /// of the unit length, as abc2midi plays them (`gracedivider` 4), taken from the note's
    /// time, but together never more than half of it. Returns where the main note starts.
    #[cold]
    fn sound_graces(&mut self, advance: Rat) -> Rat {
        let start = self.time;
        let n = self.graces.len() as i64;
        let total = self.unit.mul(Rat::new(n, 4)).min(advance.mul(Rat::HALF));
        let each = total.mul(Rat::new(1, self.graces.len() as i64));
        let mut t = start;
        for &g in &self.graces {
            let (s, e) = (t.round(), t.add(each).round());
            self.notes.push(Note { start: s, dur: e - s, pitch: g, velocity: self.velocity, ..Note::new(0, 0, 0) });
            t = t.add(each);
        }
        self.graces.clear();
        start.add(total)
    }
}

/// Bar length used for `Z`/`X` multi-bar rests.
fn bar_ticks(m: &Meter) -> Rat {
    Rat::new(m.bar_ticks() as i64, 1)
}

fn unit_ticks((n, d): (u32, u32)) -> Rat {
    Rat::new(WHOLE as i64 * n as i64, d as i64)
}

/// ABC's default unit length: 1/16 for meters under 3/4, else 1/8.
fn default_unit(m: Option<&Meter>) -> (u32, u32) {
    match m {
        Some(m) if m.symbol != MeterSymbol::Free && (m.num as f64 / m.den as f64) < 0.75 => (1, 16),
        _ => (1, 8),
    }
}

/// Walks one tune and builds its score.
struct Lowerer<'s> {
    options: LowerOptions,
    src: &'s str,
    voices: Vec<VoiceState>,
    cur: Option<usize>,
    meta: Meta,
    unit: (u32, u32),
    meter: Option<Meter>,
    key: Option<Key>,
    /// Names of header `V:` declarations, in order; the first names the default voice.
    declared: Vec<String>,
    transpose: i32,
    propagate: bool,
    meters: Vec<(Tick, Meter)>,
    keys: Vec<(Tick, Key)>,
    tempos: Vec<(Tick, u32)>,
    part_order: Option<Vec<char>>,
    part_labels: Vec<(Tick, String)>,
    /// Items in the body: at most this many notes for the first voice (bar a few graces).
    note_hint: usize,
}

/// How to lower what ABC leaves to the player.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LowerOptions {
    /// Play trills and rolls as abc2midi does instead of keeping the written note.
    pub ornaments: bool,
}

/// Lowers a parsed tune to a [`Score`]. `src` is the text the spans point into.
pub fn lower(tune: &Tune<'_>, src: &str) -> Result<Score, DslError> {
    lower_with(tune, src, LowerOptions::default())
}

/// [`lower`] with options.
pub fn lower_with(tune: &Tune<'_>, src: &str, options: LowerOptions) -> Result<Score, DslError> {
    let mut l = Lowerer {
        options,
        src,
        voices: Vec::new(),
        cur: None,
        meta: Meta::default(),
        unit: (1, 8),
        meter: None,
        key: None,
        declared: Vec::new(),
        transpose: 0,
        propagate: true,
        meters: Vec::new(),
        keys: Vec::new(),
        tempos: Vec::new(),
        part_order: None,
        part_labels: Vec::new(),
        note_hint: tune.body.len(),
    };
    l.header(tune).map_err(|e| e.in_tune(tune.x))?;
    l.body(tune).map_err(|e| e.in_tune(tune.x))?;
    // Voices are numbered in a byte; beyond that they would wrap onto the first ones.
    if l.voices.len() > MAX_VOICES {
        let found = format!("at most {MAX_VOICES} voices (this tune has {})", l.voices.len());
        return Err(DslError::at(src, tune.span.start, found).in_tune(tune.x));
    }
    let score = l.finish();
    match score.check_bounds() {
        Err(ScoreError::TooLarge { what, limit }) => {
            let expected = format!("a tune of at most {limit} (this one makes {what})");
            return Err(DslError::at(src, tune.span.start, expected).in_tune(tune.x));
        }
        Err(e) => return Err(DslError::at(src, tune.span.start, format!("values MIDI can play ({e})")).in_tune(tune.x)),
        Ok(()) => {}
    }
    Ok(score)
}

/// Most voices a tune may have: as many as a `Score` holds.
pub use crate::score::MAX_VOICES;

impl<'s> Lowerer<'s> {
    fn field_err(&self, f: &ast::Field<'_>, e: FieldError) -> DslError {
        DslError::at(self.src, f.value_start + e.at, e.expected)
    }

    fn header(&mut self, tune: &Tune<'_>) -> Result<(), DslError> {
        for &(d, span) in &tune.directives {
            self.directive(d, span)?;
        }
        let mut unit = None;
        let mut tempo = None;
        for f in &tune.header {
            match f.name {
                b'X' => self.meta.reference = Some(tune.x),
                b'T' if self.meta.title.is_none() => self.meta.title = Some(f.value.to_string()),
                b'C' if self.meta.composer_field.is_none() => self.meta.composer_field = Some(f.value.to_string()),
                b'M' => self.meter = Some(meter_value(f.value).map_err(|e| self.field_err(f, e))?),
                b'L' => unit = Some(unit_value(f.value).map_err(|e| self.field_err(f, e))?),
                b'Q' => tempo = Some(*f),
                b'K' => self.key = Some(key_value(f.value).map_err(|e| self.field_err(f, e))?),
                b'P' => self.part_order = part_order(f.value),
                b'V' => {
                    let id = f.value.split_ascii_whitespace().next().unwrap_or("1").to_string();
                    if !self.declared.contains(&id) {
                        self.declared.push(id);
                    }
                }
                _ => {}
            }
        }
        self.unit = unit.unwrap_or_else(|| default_unit(self.meter.as_ref()));
        if let Some(m) = self.meter {
            self.meters.push((0, m));
        }
        if let Some(k) = &self.key {
            self.keys.push((0, k.clone()));
        }
        if let Some(f) = tempo {
            if let Some((bpm, n, d)) = tempo_value(f.value, self.unit).map_err(|e| self.field_err(&f, e))? {
                self.tempos.push((0, micros(bpm, n, d)));
            }
        }
        Ok(())
    }

    fn new_voice(&self, name: String) -> VoiceState {
        let index = self.voices.len();
        // Channel 10 (index 9) is General MIDI drums: voices skip it.
        let channel = if index < 9 { index } else { (index + 1).min(15) } as u8;
        VoiceState {
            name,
            time: Rat::ZERO,
            first_bar: None,
            unit: unit_ticks(self.unit),
            meter: self.meter.unwrap_or_default(),
            key_acc: self.key.as_ref().map(Key::accidentals).unwrap_or([0; 7]),
            bar_acc: [None; 7],
            // Sized from the body so the note vector does not grow (and copy) as it fills.
            notes: Vec::with_capacity(if index == 0 { self.note_hint.max(16) } else { 256 }),
            ties: Vec::new(),
            old_ties: Vec::new(),
            markers: Vec::new(),
            tuplet: None,
            next_factor: None,
            graces: Vec::new(),
            velocity: 80,
            staccato: false,
            fermata: false,
            trill: false,
            roll: None,
            channel,
            program: None,
            transpose: 0,
            chord_symbols: Vec::new(),
        }
    }

    /// The current voice, created on first use (music before any `V:` is the first voice).
    #[inline]
    fn voice(&mut self) -> usize {
        match self.cur {
            Some(c) => c,
            None => self.first_voice(),
        }
    }

    /// Creates the voice that music before any `V:` belongs to (once per tune: kept out of
    /// line so `voice` inlines into every item).
    #[cold]
    #[inline(never)]
    fn first_voice(&mut self) -> usize {
        let name = self.declared.first().cloned().unwrap_or_else(|| "1".to_string());
        self.switch_voice(&name)
    }

    fn switch_voice(&mut self, name: &str) -> usize {
        let i = match self.voices.iter().position(|v| v.name == name) {
            Some(i) => i,
            None => {
                let v = self.new_voice(name.to_string());
                self.voices.push(v);
                self.voices.len() - 1
            }
        };
        self.cur = Some(i);
        i
    }

    fn body(&mut self, tune: &Tune<'_>) -> Result<(), DslError> {
        let items = &tune.body;
        for (k, item) in items.iter().enumerate() {
            match item {
                Item::Note(n) => {
                    let vi = self.voice();
                    let factor = self.factor(vi, items, k);
                    let dur = self.voices[vi].unit.mul(Rat::length(n.length)).mul(factor);
                    if let Some(three) = self.voices[vi].roll.as_mut() {
                        *three = Rat::length(n.length) == Rat::new(3, 1);
                    }
                    let pitch = self.pitch(vi, &n.pitch, n.span)?;
                    self.sound(vi, &[(pitch, n.pitch.letter, n.pitch.octave, n.tie, dur)], dur);
                }
                Item::Chord(c) => {
                    let vi = self.voice();
                    let factor = self.factor(vi, items, k);
                    let scale = self.voices[vi].unit.mul(Rat::length(c.length)).mul(factor);
                    let mut sounding = Vec::with_capacity(c.notes.len());
                    for n in &c.notes {
                        let pitch = self.pitch(vi, &n.pitch, n.span)?;
                        let dur = scale.mul(Rat::length(n.length));
                        sounding.push((pitch, n.pitch.letter, n.pitch.octave, n.tie || c.tie, dur));
                    }
                    let advance = sounding[0].4;
                    self.sound(vi, &sounding, advance);
                }
                Item::Rest(r) => {
                    let vi = self.voice();
                    let factor = self.factor(vi, items, k);
                    let v = &mut self.voices[vi];
                    let len = Rat::length(r.length);
                    let mut dur = match r.kind {
                        RestKind::Bars => bar_ticks(&v.meter).mul(len),
                        RestKind::Rest | RestKind::Invisible => v.unit.mul(len).mul(factor),
                    };
                    if std::mem::take(&mut v.fermata) {
                        dur = dur.mul(Rat::TWO);
                    }
                    v.staccato = false;
                    v.ties.clear();
                    v.graces.clear();
                    v.time = v.time.add(dur);
                }
                Item::Grace(notes, _) => {
                    let vi = self.voice();
                    self.voices[vi].graces.clear();
                    for n in notes {
                        let p = self.pitch(vi, &n.pitch, n.span)?;
                        self.voices[vi].graces.push(p);
                    }
                }
                Item::Tuplet(t) => {
                    let vi = self.voice();
                    let v = &mut self.voices[vi];
                    let compound = v.meter.symbol != MeterSymbol::Free && v.meter.is_compound();
                    let q = t.q.unwrap_or(match t.p {
                        2 | 4 | 8 => 3,
                        3 | 6 => 2,
                        _ if compound => 3,
                        _ => 2,
                    });
                    let r = t.r.unwrap_or(t.p);
                    v.tuplet = Some((Rat::new(q as i64, t.p as i64), r));
                }
                Item::Broken(_) => {} // applied by `factor` when the note before it is read
                Item::Bar(b) => {
                    let vi = self.voice();
                    self.bar(vi, b.kind);
                    if let Some(e) = &b.ending {
                        let v = &mut self.voices[vi];
                        v.markers.push((v.time.round(), Marker::Ending(e.passes.len() as u32)));
                    }
                }
                Item::Ending(e) => {
                    let vi = self.voice();
                    let v = &mut self.voices[vi];
                    v.markers.push((v.time.round(), Marker::Ending(e.passes.len() as u32)));
                }
                Item::Decoration(d, _) => {
                    let vi = self.voice();
                    let v = &mut self.voices[vi];
                    match *d {
                        "." | "staccato" => v.staccato = true,
                        "H" | "fermata" => v.fermata = true,
                        "T" | "trill" => v.trill = true,
                        "~" => v.roll = Some(false),
                        _ => {
                            if let Some(vel) = dynamic(d) {
                                v.velocity = vel;
                            }
                        }
                    }
                }
                Item::Annotation(a, _) => {
                    // `"^text"` and friends are placed text, not harmony.
                    if !a.is_empty() && !matches!(a.as_bytes()[0], b'^' | b'_' | b'<' | b'>' | b'@') {
                        let vi = self.voice();
                        let v = &mut self.voices[vi];
                        v.chord_symbols.push((v.time.round(), a.to_string()));
                    }
                }
                Item::Field(f) => self.field(f)?,
                Item::Directive(d, span) => self.directive(d, *span)?,
                Item::SlurStart(_) | Item::SlurEnd(_) => {}
            }
        }
        Ok(())
    }

    /// The length factor of the note-like item at `k`: a pending broken rhythm from before it,
    /// one that follows it, and the active tuplet.
    #[inline]
    fn factor(&mut self, vi: usize, items: &[Item<'_>], k: usize) -> Rat {
        let v = &mut self.voices[vi];
        let mut f = v.next_factor.take().unwrap_or(Rat::ONE);
        for item in &items[k + 1..] {
            match item {
                Item::Decoration(..) | Item::Annotation(..) | Item::SlurEnd(_) | Item::SlurStart(_) => continue,
                Item::Broken(b) => {
                    // `>` gives 3/2 and 1/2, `>>` 7/4 and 1/4, `>>>` 15/8 and 1/8.
                    let p = 1i64 << b.count;
                    let (long, short) = (Rat::new(2 * p - 1, p), Rat::new(1, p));
                    let (mine, next) = if b.first_long { (long, short) } else { (short, long) };
                    f = f.mul(mine);
                    v.next_factor = Some(next);
                    break;
                }
                _ => break,
            }
        }
        if let Some((tf, left)) = v.tuplet {
            f = f.mul(tf);
            v.tuplet = if left > 1 { Some((tf, left - 1)) } else { None };
        }
        f
    }

    /// MIDI pitch of a written note, applying and recording bar accidentals.
    fn pitch(&mut self, vi: usize, p: &ast::Pitch, span: ast::Span) -> Result<u8, DslError> {
        let propagate = self.propagate;
        let v = &mut self.voices[vi];
        let l = p.letter as usize;
        let acc = match p.accidental {
            Some(a) => {
                let s = a.semitones();
                if propagate {
                    v.bar_acc[l] = Some(s);
                }
                s
            }
            None => {
                // A tie carries its note's accidental over the bar line.
                if let Some(&(_, _, pitch, _)) = v.ties.iter().find(|t| t.0 == p.letter && t.1 == p.octave) {
                    return Ok(pitch);
                }
                v.bar_acc[l].unwrap_or(v.key_acc[l])
            }
        };
        let midi = 60 + 12 * p.octave as i32 + LETTER_SEMITONES[l] as i32 + acc as i32 + self.transpose + v.transpose;
        if !(0..=127).contains(&midi) {
            return Err(DslError::at(self.src, span.start, "a note within MIDI's pitch range (C,,,,, to g''''')"));
        }
        Ok(midi as u8)
    }

    /// Sounds notes (one, or a chord) at the voice's time and moves time on by `advance`.
    /// Each entry: (pitch, letter, octave, tied, duration).
    #[inline]
    fn sound(&mut self, vi: usize, notes: &[(u8, u8, i8, bool, Rat)], advance: Rat) {
        let trill = std::mem::take(&mut self.voices[vi].trill) && self.options.ornaments;
        let roll = std::mem::take(&mut self.voices[vi].roll).filter(|_| self.options.ornaments);
        let micros = self.tempo_at(self.voices[vi].time.round());
        let shift = self.transpose + self.voices[vi].transpose;
        let v = &mut self.voices[vi];
        let fermata = std::mem::take(&mut v.fermata);
        let staccato = std::mem::take(&mut v.staccato);
        let advance = if fermata { advance.mul(Rat::TWO) } else { advance };
        let start = if v.graces.is_empty() { v.time } else { v.sound_graces(advance) };
        let s = start.round();
        let now = v.time.round();
        // Swap the tie buffers instead of reallocating one per tied note (most notes have no
        // tie waiting: then there is nothing to swap).
        let tied_before = !v.ties.is_empty();
        if tied_before {
            std::mem::swap(&mut v.ties, &mut v.old_ties);
            v.ties.clear();
        }
        for &(pitch, letter, octave, tie, dur) in notes {
            let mut sounding = dur;
            if fermata {
                sounding = sounding.mul(Rat::TWO);
            }
            if staccato {
                sounding = sounding.mul(Rat::HALF);
            }
            let e = v.time.add(sounding).round().max(s);
            let continued = match tied_before {
                false => None,
                true => v.old_ties.iter().find(|t| t.2 == pitch).map(|t| t.3).filter(|&idx| v.notes[idx].end() == now),
            };
            let idx = match continued {
                Some(idx) => {
                    let n = &mut v.notes[idx];
                    n.dur = e.max(n.start) - n.start;
                    idx
                }
                None => {
                    v.notes.push(Note { start: s, dur: e - s, pitch, velocity: v.velocity, ..Note::new(0, 0, 0) });
                    v.notes.len() - 1
                }
            };
            if tie {
                v.ties.push((letter, octave, pitch, idx));
            } else if trill && notes.len() == 1 && continued.is_none() {
                let upper = v.neighbour(letter, octave, shift, true);
                let n = v.notes.pop().expect("the note just pushed");
                v.notes.extend(trill_notes(n, upper, micros));
            } else if let Some(three) = roll.filter(|_| notes.len() == 1 && continued.is_none()) {
                let (upper, lower) =
                    (v.neighbour(letter, octave, shift, true), v.neighbour(letter, octave, shift, false));
                let n = v.notes.pop().expect("the note just pushed");
                let grace = v.unit.mul(Rat::new(1, 4)).round();
                v.notes.extend(roll_notes(n, upper, lower, grace, three));
            }
        }
        v.time = v.time.add(advance);
    }

    /// Microseconds per quarter at notation tick `t` (the last `Q:` at or before it, else
    /// 120 bpm), for ornaments whose notes depend on the tempo.
    fn tempo_at(&self, t: Tick) -> u32 {
        self.tempos.iter().rev().find(|(at, _)| *at <= t).map_or(500_000, |&(_, m)| m)
    }

    fn bar(&mut self, vi: usize, kind: BarKind) {
        let v = &mut self.voices[vi];
        v.bar_acc = [None; 7];
        // A decoration left before a bar line (`G2 H:|`) decorates nothing.
        v.staccato = false;
        v.fermata = false;
        v.trill = false;
        v.roll = None;
        let t = v.time.round();
        if v.first_bar.is_none() && t > 0 {
            v.first_bar = Some(t);
        }
        match kind {
            BarKind::Single => {}
            BarKind::Double | BarKind::Final | BarKind::Thick => v.markers.push((t, Marker::Close)),
            BarKind::RepeatStart => v.markers.push((t, Marker::RepeatStart)),
            BarKind::RepeatEnd => v.markers.push((t, Marker::RepeatEnd)),
            BarKind::RepeatBoth => {
                v.markers.push((t, Marker::RepeatEnd));
                v.markers.push((t, Marker::RepeatStart));
            }
        }
    }

    /// A field in the body (own line or inline `[K:D]`).
    fn field(&mut self, f: &ast::Field<'_>) -> Result<(), DslError> {
        match f.name {
            b'K' => {
                let key = key_value(f.value).map_err(|e| self.field_err(f, e))?;
                let vi = self.voice();
                let v = &mut self.voices[vi];
                v.key_acc = key.accidentals();
                v.bar_acc = [None; 7];
                if vi == 0 {
                    let t = v.time.round();
                    self.keys.push((t, key));
                }
            }
            b'M' => {
                let m = meter_value(f.value).map_err(|e| self.field_err(f, e))?;
                let vi = self.voice();
                let v = &mut self.voices[vi];
                v.meter = m;
                if vi == 0 {
                    let t = v.time.round();
                    self.meters.push((t, m));
                }
            }
            b'L' => {
                let u = unit_value(f.value).map_err(|e| self.field_err(f, e))?;
                let vi = self.voice();
                self.voices[vi].unit = unit_ticks(u);
            }
            b'Q' => {
                let vi = self.voice();
                let unit = self.unit;
                if let Some((bpm, n, d)) = tempo_value(f.value, unit).map_err(|e| self.field_err(f, e))? {
                    let t = self.voices[vi].time.round();
                    self.tempos.push((t, micros(bpm, n, d)));
                }
            }
            b'V' => {
                let id = f.value.split_ascii_whitespace().next().unwrap_or("1");
                self.switch_voice(id);
            }
            b'P' => {
                let vi = self.voice();
                let t = self.voices[vi].time.round();
                self.part_labels.push((t, f.value.to_string()));
                // Played in a header part order, each part repeats on its own: a `:|` in part
                // B goes back to B's start, not into A (abc2midi plays `P:ABA` so).
                if self.part_order.is_some() {
                    self.voices[vi].markers.push((t, Marker::RepeatStart));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `%%` directives: cadenza's own settings and the `%%MIDI` ones that change what sounds.
    fn directive(&mut self, d: &str, span: ast::Span) -> Result<(), DslError> {
        let (name, value) = d.split_once(char::is_whitespace).unwrap_or((d, ""));
        let value = value.split('%').next().unwrap_or("").trim();
        // `value` is a slice of the source, so its address gives the column of the error.
        let value_at = (value.as_ptr() as usize).checked_sub(self.src.as_ptr() as usize).unwrap_or(span.start);
        let at = |what: &'static str| DslError::at(self.src, value_at.min(self.src.len()), what);
        let text = || (!value.is_empty()).then(|| value.to_string());
        // A number the directive accepts, or an error at the value saying what it takes.
        let number = |ok: fn(f64) -> bool, what: &'static str| {
            value.parse::<f64>().ok().filter(|&v| ok(v)).ok_or_else(|| at(what))
        };
        use crate::gen::sampling::{MAX_GUIDANCE, MAX_RECALL_BIAS, MAX_SAME_PITCH_BIAS};
        match name {
            "style" => self.meta.style = text(),
            "composer" => self.meta.composer = text(),
            "instrument" => {
                self.meta.instrument = text();
                if let Some(p) = instruments::program(value) {
                    self.meta.program = Some(p);
                }
            }
            "program" => {
                self.meta.program = Some(
                    value
                        .parse::<u8>()
                        .ok()
                        .filter(|&p| p < 128)
                        .ok_or_else(|| at("a General MIDI program from 0 to 127"))?,
                )
            }
            "temperature" => {
                self.meta.gen.temperature =
                    Some(value.parse::<f64>().ok().filter(|t| *t >= 0.0).ok_or_else(|| at("a temperature like 0.9"))?)
            }
            "top_k" => self.meta.gen.top_k = Some(value.parse().map_err(|_| at("a whole number for top_k"))?),
            "top_p" => self.meta.gen.top_p = Some(number(|p| p > 0.0 && p <= 1.0, "a top_p above 0, at most 1")?),
            "length_temperature" => {
                self.meta.gen.length_temperature =
                    Some(number(|t| t.is_finite() && t >= 0.0, "a temperature for note lengths like 1.0")?)
            }
            "same_pitch_bias" => {
                self.meta.gen.same_pitch_bias =
                    Some(number(|b| b.abs() <= MAX_SAME_PITCH_BIAS, "a bias in nats within ±20, like -0.7")?)
            }
            "recall_bias" => {
                self.meta.gen.recall_bias =
                    Some(number(|b| b.abs() <= MAX_RECALL_BIAS, "a bias in nats within ±20, like 2")?)
            }
            "recall_spread" => {
                self.meta.gen.recall_spread =
                    Some(number(|s| (0.0..=1.0).contains(&s), "a spread from 0 to 1, like 1")?)
            }
            "guidance" => {
                self.meta.gen.guidance =
                    Some(number(|g| (0.0..=MAX_GUIDANCE).contains(&g), "a guidance from 0 to 10 (1 is off)")?)
            }
            "length_top_p" => {
                self.meta.gen.length_top_p =
                    Some(number(|p| p > 0.0 && p <= 1.0, "a top_p for note lengths above 0, at most 1")?)
            }
            "seed" => self.meta.gen.seed = Some(value.parse().map_err(|_| at("a whole number for the seed"))?),
            "bars" => self.meta.gen.bars = Some(value.parse().map_err(|_| at("a whole number of bars"))?),
            "model" => self.meta.gen.model = text(),
            "repetition_penalty" => {
                self.meta.gen.repetition_penalty = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|p| *p > 0.0)
                        .ok_or_else(|| at("a repetition penalty like 1.2 (1 = off)"))?,
                )
            }
            "range" => {
                self.meta.gen.range = Some(
                    crate::score::parse_pitch_range(value)
                        .map_err(|_| at("a pitch range like `C4 C6`, `D4..B5` or `55 84`, low first"))?,
                )
            }
            // abcm2ps's `%%scale 0.65` (page scale, in real collections) is layout, not a scale.
            "scale" if value.contains('.') && value.parse::<f64>().is_ok() => {}
            "scale" => self.meta.gen.set_scale(fields::scale_value(value).map_err(|e| at(e.expected))?),
            "polyphony" => {
                self.meta.gen.max_polyphony = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| at("the most notes sounding at once, 1 or more"))?,
                )
            }
            "whole_bars" => self.meta.gen.whole_bars = true,
            "mono_voices" => self.meta.gen.mono_voices = true,
            "no_parallels" => self.meta.gen.no_parallels = true,
            "end_on_tonic" => self.meta.gen.end_on_tonic = true,
            "end_on_final" => self.meta.gen.end_on_final = true,
            "MIDI" => self.midi_directive(value),
            _ => {}
        }
        Ok(())
    }

    /// `%%MIDI program [channel] n`, `%%MIDI channel n`, `%%MIDI transpose n`,
    /// `%%MIDI nobarlines`; abc2midi's other settings change nothing we model.
    fn midi_directive(&mut self, value: &str) {
        let mut w = value.split_ascii_whitespace();
        let cmd = w.next().unwrap_or("");
        let nums: Vec<i32> = w.filter_map(|x| x.parse().ok()).collect();
        match (cmd, nums.as_slice()) {
            ("program", [.., p]) if (0..128).contains(p) => match self.cur {
                Some(vi) => self.voices[vi].program = Some(*p as u8),
                None => self.meta.program = Some(*p as u8),
            },
            ("channel", [c]) if (1..=16).contains(c) => {
                let vi = self.voice();
                self.voices[vi].channel = (*c - 1) as u8;
            }
            ("transpose", [t]) if t.abs() <= 48 => match self.cur {
                Some(vi) => self.voices[vi].transpose = *t,
                None => self.transpose = *t,
            },
            ("nobarlines", _) => self.propagate = false,
            ("barlines", _) => self.propagate = true,
            _ => {}
        }
    }

    fn finish(mut self) -> Score {
        let mut score = Score { meta: std::mem::take(&mut self.meta), ..Score::default() };
        if self.voices.is_empty() {
            // A tune with no music still has its first voice (and its meta).
            self.voice();
        }
        let default_program = score.meta.program.unwrap_or(0);
        // The first voice's music before its first bar line, when shorter than a bar, is a
        // pickup.
        if let Some(p) = self.voices[0].first_bar {
            let bar = self.voices[0].meter.bar_ticks();
            // A tune shorter than a bar is one short bar, not a pickup.
            if p < bar && p < self.voices[0].time.round() {
                score.meta.pickup = p;
            }
        }
        let labels = std::mem::take(&mut self.part_labels);
        let mut first_segs = Vec::new();
        score.notes.reserve(self.voices.iter().map(|v| v.notes.len() * 2).sum());
        for (vi, v) in self.voices.iter().enumerate() {
            let end = v.time.round();
            let mut segs = play_order(&v.markers, end);
            if let Some(order) = &self.part_order {
                if let Some(s) = apply_parts(&segs, order, &labels, end) {
                    segs = s;
                }
            }
            let program = v.program.unwrap_or(default_program);
            score.voices.push(Voice { name: v.name.clone(), channel: v.channel, program });
            let mut out = 0;
            for &(a, b) in &segs {
                let from = v.notes.partition_point(|n| n.start < a);
                for n in v.notes[from..].iter().take_while(|n| n.start < b) {
                    score.notes.push(Note {
                        start: n.start - a + out,
                        voice: vi as u8,
                        channel: v.channel,
                        program,
                        ..*n
                    });
                }
                for (t, c) in v.chord_symbols.iter().filter(|(t, _)| *t >= a && *t < b) {
                    score.meta.chord_symbols.push((t - a + out, c.clone()));
                }
                out += b - a;
            }
            score.length = score.length.max(out);
            if vi == 0 {
                first_segs = segs;
            }
        }
        score.meta.meters = map_changes(&self.meters, &first_segs);
        score.meta.keys = map_changes(&self.keys, &first_segs);
        if !self.tempos.is_empty() {
            let mut map = TempoMap::default();
            for (t, m) in map_changes(&self.tempos, &first_segs) {
                map.set(t, m);
            }
            score.meta.tempo = map;
        }
        if !labels.is_empty() {
            let mut out = 0;
            for &(a, b) in &first_segs {
                for (t, l) in labels.iter().filter(|(t, _)| *t >= a && *t < b) {
                    if score.meta.parts.last().is_none_or(|(_, last)| last != l) || *t != a {
                        score.meta.parts.push((t - a + out, l.clone()));
                    }
                }
                out += b - a;
            }
        }
        score.meta.chord_symbols.sort();
        score.normalize();
        score
    }
}

/// Microseconds per quarter note for `bpm` beats of `n/d` whole notes.
fn micros(bpm: f64, n: u32, d: u32) -> u32 {
    let quarters_per_beat = 4.0 * n as f64 / d as f64;
    bpm_to_micros(bpm * quarters_per_beat)
}

/// Velocity of a dynamics decoration (`!p!` ... `!fff!`).
pub(crate) fn dynamic(d: &str) -> Option<u8> {
    Some(match d {
        "pppp" => 20,
        "ppp" => 30,
        "pp" => 45,
        "p" => 60,
        "mp" => 72,
        "mf" => 88,
        "f" => 100,
        "ff" => 112,
        "fff" => 124,
        "ffff" => 127,
        _ => return None,
    })
}
