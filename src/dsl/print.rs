//! Printing: a `Score` written back as clean ABC 2.1 that `parse` reads to the same score.
//!
//! Layout: header (`X T C`, cadenza `%%` directives, `M L Q K`), then each voice in turn (`V:`
//! lines only when there is more than one voice or a voice needs its own settings), four bars
//! to a line. `L:` is always 1/8, so any tick length prints exactly as a fraction of it.
//!
//! Each voice is cut at every time where something starts or ends (and at bar lines): between
//! two cuts the voice sounds a fixed set of pitches, printed as a note, a chord or a rest;
//! a pitch that sounds on past a cut is tied (`-`). Monophonic music therefore prints plainly
//! and only notes crossing a bar line get ties. Three equal lengths of 2/3 of a plain length
//! print as a triplet `(3`. Bars that repeat the bars just before them print once between
//! `|:` and `:|`.
//!
//! What a printed score keeps exactly (`parse(print(s)) == s`, the "on the grid" contract in
//! `tests/it/dsl.rs`): every note's start, length and pitch, its voice, the voice's name,
//! channel and program, the length of the score, title, `X:` number, `C:` field, meters, keys,
//! tempo, chord symbols, part labels and the cadenza directives; velocities print as `!p!`..
//! `!fff!` marks when they are one of those levels. What it does not keep: a note's own
//! channel or program when they differ from its voice's, other velocities (and a return to the
//! default 80 after a mark), chords whose notes start together with different velocities,
//! zero-length notes, two overlapping notes of the same pitch in one voice, and a
//! `%%instrument` name whose General MIDI program differs from `meta.program`.

use super::instruments;
use crate::score::{Key, Note, Score, LETTER_SEMITONES};
use crate::strains::Segment;
use crate::time::{TempoMap, Tick, WHOLE};
use std::fmt::Write;

/// An eighth note: the beaming unit of folk notation, whatever `L:` is printed.
const EIGHTH: Tick = WHOLE / 8;

fn gcd(a: Tick, b: Tick) -> Tick {
    if b == 0 {
        a.max(1)
    } else {
        gcd(b, a % b)
    }
}

/// A length in ticks as ABC writes it after an `L:` of `unit` ticks (here for `L:1/8`: ``,
/// `2`, `/`, `/4`, `3/2`).
fn write_len(out: &mut String, ticks: Tick, unit: Tick) {
    let g = gcd(ticks, unit);
    let (p, q) = (ticks / g, unit / g);
    match (p, q) {
        (1, 1) => {}
        (p, 1) => {
            let _ = write!(out, "{p}");
        }
        (1, 2) => out.push('/'),
        (1, q) => {
            let _ = write!(out, "/{q}");
        }
        (p, q) => {
            let _ = write!(out, "{p}/{q}");
        }
    }
}

/// Whether a length is a plain ABC length (its fraction of the unit has a power-of-two
/// denominator), i.e. needs no tuplet.
fn is_plain(ticks: Tick) -> bool {
    (EIGHTH / gcd(ticks, EIGHTH)).is_power_of_two()
}

/// The unit length `L:` to print: of a quarter, an eighth and a sixteenth, the one that writes
/// the notes' lengths in the fewest characters (an eighth on a tie, as most tunes are written).
fn unit_length(score: &Score) -> Tick {
    let mut counts: std::collections::HashMap<Tick, usize> = std::collections::HashMap::new();
    for n in score.notes.iter().filter(|n| n.dur > 0) {
        *counts.entry(n.dur).or_default() += 1;
    }
    let mut text = String::new();
    let cost = |unit: Tick, text: &mut String| -> usize {
        counts
            .iter()
            .map(|(&d, &c)| {
                text.clear();
                write_len(text, d, unit);
                text.len() * c
            })
            .sum()
    };
    let eighth = cost(EIGHTH, &mut text);
    [WHOLE / 4, WHOLE / 16]
        .into_iter()
        .map(|u| (cost(u, &mut text), u))
        .filter(|&(c, _)| c < eighth)
        .min()
        .map_or(EIGHTH, |(_, u)| u)
}

/// A pitch spelled in a key: letter (0 = C), alteration, octave (0 = middle C's octave).
fn spell(pitch: u8, acc: &[i8; 7], sharps: bool) -> (u8, i8, i32) {
    let pc = pitch as i32 % 12;
    let fits = |l: usize, alter: i32| (LETTER_SEMITONES[l] as i32 + alter).rem_euclid(12) == pc;
    let choice = (0..7)
        .find(|&l| fits(l, acc[l] as i32))
        .map(|l| (l, acc[l] as i32))
        .or_else(|| (0..7).find(|&l| fits(l, 0)).map(|l| (l, 0)))
        .or_else(|| {
            let alter = if sharps { 1 } else { -1 };
            (0..7).find(|&l| fits(l, alter)).map(|l| (l, alter))
        })
        .unwrap_or((0, 0));
    let (l, alter) = choice;
    let octave = (pitch as i32 - 60 - LETTER_SEMITONES[l] as i32 - alter).div_euclid(12);
    (l as u8, alter as i8, octave)
}

/// Writes one pitch with the accidental the bar needs, updating the bar's accidentals exactly
/// as `lower` reads them (per letter, every octave).
fn write_pitch(out: &mut String, pitch: u8, key_acc: &[i8; 7], bar_acc: &mut [Option<i8>; 7], sharps: bool) {
    let (l, alter, octave) = spell(pitch, key_acc, sharps);
    let li = l as usize;
    if bar_acc[li].unwrap_or(key_acc[li]) != alter {
        out.push_str(match alter {
            2 => "^^",
            1 => "^",
            0 => "=",
            -1 => "_",
            _ => "__",
        });
        bar_acc[li] = Some(alter);
    }
    if octave >= 1 {
        out.push(b"cdefgab"[li] as char);
        for _ in 1..octave {
            out.push('\'');
        }
    } else {
        out.push(b"CDEFGAB"[li] as char);
        for _ in octave..0 {
            out.push(',');
        }
    }
}

/// What sounds between two cuts of a voice.
struct Elem {
    dur: Tick,
    /// (pitch, tied on) in ascending pitch; empty for a rest.
    pitches: Vec<(u8, bool)>,
    /// Inline fields and chord symbols written before it.
    prefix: String,
    /// A key change here (bar accidentals reset, new signature).
    key: Option<Key>,
}

/// The dynamics marks `lower` reads, softest first.
const DYNAMICS: [&str; 10] = ["pppp", "ppp", "pp", "p", "mp", "mf", "f", "ff", "fff", "ffff"];

/// The channel `lower` gives voice `i` when no `%%MIDI channel` says otherwise.
fn default_channel(i: usize) -> u8 {
    (if i < 9 { i } else { (i + 1).min(15) }) as u8
}

/// A tempo in quarter notes per minute, in the fewest decimals that read back to the same
/// microseconds per quarter (`Q:3/8=110` is 165 quarters a minute, printed `165`, not
/// `165.000165000165`).
fn bpm_text(micros: u32) -> String {
    let bpm = 60_000_000.0 / micros.max(1) as f64;
    (0..=6)
        .map(|decimals| format!("{bpm:.decimals$}"))
        .find(|text| text.parse::<f64>().is_ok_and(|b| crate::time::bpm_to_micros(b) == micros))
        .unwrap_or_else(|| format!("{bpm}"))
}

/// Each voice's `V:` id: a voice's name when it is one ABC word no other voice has, else the
/// name made into one (spaces and marks become `_`) and made unique with `_2`, `_3` ... The
/// reader knows a voice by its id alone, so two tracks named "Solo Violin" must not print as
/// one `V:Solo` voice, and a name with a line break must not start a header line.
fn voice_ids(names: &[String]) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let word: String = name
                .chars()
                .map(|c| if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' })
                .collect();
            let word = if word.trim_matches('_').is_empty() { (i + 1).to_string() } else { word };
            let mut id = word.clone();
            let mut n = 2;
            while !taken.insert(id.clone()) {
                id = format!("{word}_{n}");
                n += 1;
            }
            id
        })
        .collect()
}

/// Prints `score` as ABC text.
pub fn print(score: &Score) -> String {
    let mut out = String::with_capacity(64 + score.notes.len() * 6);
    let m = &score.meta;
    let _ = writeln!(out, "X:{}", m.reference.unwrap_or(1));
    if let Some(t) = &m.title {
        let _ = writeln!(out, "T:{}", one_line(t));
    }
    if let Some(c) = &m.composer_field {
        let _ = writeln!(out, "C:{}", one_line(c));
    }
    for (name, v) in [("style", &m.style), ("composer", &m.composer), ("instrument", &m.instrument)] {
        if let Some(v) = v {
            let _ = writeln!(out, "%%{name} {}", one_line(v));
        }
    }
    if let Some(p) = m.program {
        if m.instrument.as_deref().and_then(instruments::program) != Some(p) {
            let _ = writeln!(out, "%%program {p}");
        }
    }
    let g = &m.gen;
    if let Some(v) = &g.model {
        let _ = writeln!(out, "%%model {}", one_line(v));
    }
    if let Some(v) = g.temperature {
        let _ = writeln!(out, "%%temperature {v}");
    }
    if let Some(v) = g.top_k {
        let _ = writeln!(out, "%%top_k {v}");
    }
    let numbers = [
        ("top_p", g.top_p),
        ("length_temperature", g.length_temperature),
        ("length_top_p", g.length_top_p),
        ("same_pitch_bias", g.same_pitch_bias),
        ("recall_bias", g.recall_bias),
        ("recall_spread", g.recall_spread),
        ("guidance", g.guidance),
    ];
    for (name, v) in numbers {
        if let Some(v) = v {
            let _ = writeln!(out, "%%{name} {v}");
        }
    }
    if let Some(v) = g.seed {
        let _ = writeln!(out, "%%seed {v}");
    }
    if let Some(v) = g.bars {
        let _ = writeln!(out, "%%bars {v}");
    }
    if let Some(v) = g.repetition_penalty {
        let _ = writeln!(out, "%%repetition_penalty {v}");
    }
    if let Some((lo, hi)) = g.range {
        let _ = writeln!(out, "%%range {} {}", crate::score::pitch_name(lo), crate::score::pitch_name(hi));
    }
    if g.no_scale && !g.in_key && g.pitch_classes.is_none() {
        out.push_str("%%scale any\n");
    }
    if g.in_key {
        out.push_str(if g.pentatonic { "%%scale key pentatonic\n" } else { "%%scale key\n" });
    }
    if let Some(pcs) = &g.pitch_classes {
        let list: Vec<String> = pcs.iter().map(u8::to_string).collect();
        let _ = writeln!(out, "%%scale {}", list.join(" "));
    }
    if let Some(v) = g.max_polyphony {
        let _ = writeln!(out, "%%polyphony {v}");
    }
    if g.whole_bars {
        out.push_str("%%whole_bars\n");
    }
    if g.mono_voices {
        out.push_str("%%mono_voices\n");
    }
    if g.no_parallels {
        out.push_str("%%no_parallels\n");
    }
    if g.end_on_tonic {
        out.push_str("%%end_on_tonic\n");
    }
    if g.end_on_final {
        out.push_str("%%end_on_final\n");
    }
    let _ = writeln!(out, "M:{}", score.meter());
    let unit = unit_length(score);
    let _ = writeln!(out, "L:1/{}", WHOLE / unit);
    if m.tempo != TempoMap::default() {
        let _ = writeln!(out, "Q:1/4={}", bpm_text(m.tempo.changes()[0].micros_per_quarter));
    }
    let _ = writeln!(out, "K:{}", score.key());

    let voice_count =
        score.voices.len().max(score.notes.iter().map(|n| n.voice as usize + 1).max().unwrap_or(0)).max(1);
    let default_program = m.program.unwrap_or(0);
    let voice_info = |i: usize| -> (String, u8, u8) {
        match score.voices.get(i) {
            Some(v) => (v.name.clone(), v.channel, v.program),
            None => ((i + 1).to_string(), default_channel(i), default_program),
        }
    };
    let plain = voice_count == 1 && {
        let (name, ch, prog) = voice_info(0);
        name == "1" && ch == 0 && prog == default_program
    };
    let bars = score.bar_starts();
    let repeats = Repeats::new(find_repeats(score, &bars, voice_count), bars.len());
    let marks = Marks::new(score);
    // Each voice's notes, in start order, found in one pass rather than one pass per voice.
    let mut by_voice: Vec<Vec<&Note>> = vec![Vec::new(); voice_count];
    for n in &score.notes {
        if let Some(v) = by_voice.get_mut(n.voice as usize) {
            v.push(n);
        }
    }
    let ids = voice_ids(&(0..voice_count).map(|vi| voice_info(vi).0).collect::<Vec<_>>());
    for (vi, notes) in by_voice.iter().enumerate() {
        let (name, channel, program) = voice_info(vi);
        if !plain {
            let id = &ids[vi];
            if *id == name {
                let _ = writeln!(out, "V:{id}");
            } else {
                // Other ABC programs show the name; cadenza reads the id.
                let _ = writeln!(out, "V:{id} name=\"{}\"", one_line(&name).replace('"', "'"));
            }
            if program != default_program {
                let _ = writeln!(out, "%%MIDI program {program}");
            }
            if channel != default_channel(vi) {
                let _ = writeln!(out, "%%MIDI channel {}", channel as u32 + 1);
            }
        }
        print_voice(&mut out, score, vi, notes, &bars, &repeats, &marks, unit);
    }
    out
}

/// Which bars `find_repeats` folded, indexed by bar so printing each bar asks in O(1).
struct Repeats {
    /// The section starting at this bar is printed between `|:` and `:|`.
    starts: Vec<bool>,
    /// This bar is the second copy of a repeated section: not printed.
    skipped: Vec<bool>,
    /// The bar printed after this one (after a `:|`, the copy is skipped).
    next_printed: Vec<usize>,
    /// A first (`[1`) or second (`[2`) ending begins at this bar.
    ending1: Vec<bool>,
    ending2: Vec<bool>,
}

impl Repeats {
    fn new(strains: Vec<Segment>, nbars: usize) -> Self {
        let mut r = Repeats {
            starts: vec![false; nbars + 1],
            skipped: vec![false; nbars],
            next_printed: (1..=nbars).collect(),
            ending1: vec![false; nbars],
            ending2: vec![false; nbars],
        };
        for strain in strains {
            let Segment::Repeat { first, len, ending } = strain else { continue };
            let common = len - ending;
            r.starts[first] = true;
            // The second time through, the common bars are the `|:` ... bars again: skipped; a
            // second ending is printed after the `:|`.
            r.skipped[first + len..first + len + common].iter_mut().for_each(|s| *s = true);
            r.next_printed[first + len - 1] = first + len + common;
            if ending > 0 {
                r.ending1[first + common] = true;
                r.ending2[first + len + common] = true;
            }
        }
        r
    }
}

/// Everything printed at a tick besides notes (keys, meters, parts, tempo changes, chord
/// symbols), each sorted by tick once, so printing walks them with cursors in one pass.
struct Marks<'s> {
    keys: Vec<(Tick, &'s Key)>,
    meters: Vec<(Tick, crate::time::Meter)>,
    parts: Vec<(Tick, &'s str)>,
    tempos: Vec<(Tick, u32)>,
    chords: Vec<(Tick, &'s str)>,
}

impl<'s> Marks<'s> {
    fn new(score: &'s Score) -> Self {
        let m = &score.meta;
        let mut marks = Marks {
            keys: m.keys.iter().map(|(t, k)| (*t, k)).collect(),
            meters: m.meters.clone(),
            parts: m.parts.iter().map(|(t, p)| (*t, p.as_str())).collect(),
            tempos: m.tempo.changes().iter().map(|c| (c.tick, c.micros_per_quarter)).collect(),
            chords: m.chord_symbols.iter().map(|(t, c)| (*t, c.as_str())).collect(),
        };
        // Stable sorts: marks at one tick keep the order they were written in.
        marks.keys.sort_by_key(|x| x.0);
        marks.meters.sort_by_key(|x| x.0);
        marks.parts.sort_by_key(|x| x.0);
        marks.tempos.sort_by_key(|x| x.0);
        marks.chords.sort_by_key(|x| x.0);
        marks
    }
}

/// The entries of a tick-sorted list at tick `t`, advancing `cursor` past earlier ones (the
/// ticks asked for only grow).
fn at_tick<'a, T>(list: &'a [(Tick, T)], cursor: &mut usize, t: Tick) -> &'a [(Tick, T)] {
    while *cursor < list.len() && list[*cursor].0 < t {
        *cursor += 1;
    }
    let from = *cursor;
    while *cursor < list.len() && list[*cursor].0 == t {
        *cursor += 1;
    }
    &list[from..*cursor]
}

/// Field values must stay on their line.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// The strains to print once, as `Segment::Repeat`s (see [`crate::strains::fold`]: the `tune`
/// encoding folds the same): bars `[first, first + len)` printed between `|:` and `:|` because
/// the next `len` bars repeat them (in every voice, chord symbols included), but for the last
/// `ending` bars, printed as a first ending and, after the `:|`, a second one.
fn find_repeats(score: &Score, bars: &[Tick], voices: usize) -> Vec<Segment> {
    let m = &score.meta;
    if bars.len() < 2 || m.meters.len() > 1 || m.keys.len() > 1 || m.tempo.changes().len() > 1 || !m.parts.is_empty() {
        return Vec::new();
    }
    let ends: Vec<Tick> = bars.iter().skip(1).copied().chain(std::iter::once(score.length)).collect();
    // Which bar starts a note sounds across (start < edge < end): a difference array over bar
    // indices, so a long note costs two binary searches, not one step per bar it spans.
    let mut crossed = vec![0i64; bars.len() + 1];
    for n in &score.notes {
        let first = bars.partition_point(|&b| b <= n.start);
        let last = bars.partition_point(|&b| b < n.end());
        if first < last {
            crossed[first] += 1;
            crossed[last] -= 1;
        }
    }
    let mut running = 0;
    let edge_crossed: Vec<bool> = crossed
        .iter()
        .map(|d| {
            running += d;
            running > 0
        })
        .collect();
    let mut chords: Vec<(Tick, &str)> = m.chord_symbols.iter().map(|(t, c)| (*t, c.as_str())).collect();
    chords.sort_by_key(|c| c.0);
    // Each bar's content relative to its start, or None if a note crosses its edges. Notes are
    // sorted by start, so each bar's notes are the next run of them.
    type BarNotes = Vec<(u8, Tick, Tick, u8, u8)>;
    type BarContent<'s> = Option<(BarNotes, Vec<(Tick, &'s str)>)>;
    let (mut next_note, mut next_chord) = (0, 0);
    let content: Vec<BarContent> = bars
        .iter()
        .zip(&ends)
        .enumerate()
        .map(|(i, (&a, &b))| {
            let from = next_note;
            while next_note < score.notes.len() && score.notes[next_note].start < b {
                next_note += 1;
            }
            let chord_from = next_chord;
            while next_chord < chords.len() && chords[next_chord].0 < b {
                next_chord += 1;
            }
            if edge_crossed[i] || edge_crossed.get(i + 1).copied().unwrap_or(false) {
                return None;
            }
            let notes = score.notes[from..next_note]
                .iter()
                .filter(|n| n.start >= a)
                .map(|n| (n.voice.min(voices as u8), n.start - a, n.dur, n.pitch, n.velocity))
                .collect();
            let chords = chords[chord_from..next_chord].iter().filter(|c| c.0 >= a).map(|&(t, s)| (t - a, s)).collect();
            Some((notes, chords))
        })
        .collect();
    // A bar a note crosses into or out of is never the same as another (its key is its own
    // index), and strain edges must be clean lines, so no repeat cuts a note.
    let keyed: Vec<(Tick, Result<_, usize>)> =
        content.iter().enumerate().map(|(i, c)| (ends[i] - bars[i], c.as_ref().ok_or(i))).collect();
    let clean: Vec<bool> = edge_crossed.iter().map(|c| !c).collect();
    crate::strains::fold(&keyed, &clean, 1)
        .into_iter()
        .filter(|seg| match *seg {
            Segment::Repeat { first, len, .. } => {
                (first..first + len).any(|b| content[b].as_ref().is_some_and(|c| !c.0.is_empty()))
            }
            Segment::Bar(_) => false,
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn print_voice(
    out: &mut String,
    score: &Score,
    vi: usize,
    notes: &[&Note],
    bars: &[Tick],
    repeats: &Repeats,
    marks: &Marks,
    unit: Tick,
) {
    let end = score.length;
    if end == 0 {
        return;
    }
    let m = &score.meta;
    // Where this voice must be cut: bar lines, note edges, and every tick something is written.
    let mut cuts: Vec<Tick> = Vec::with_capacity(notes.len() * 2 + bars.len() + 2);
    cuts.extend_from_slice(bars);
    for n in notes {
        cuts.push(n.start);
        cuts.push(n.end());
    }
    cuts.extend(m.keys.iter().map(|(t, _)| *t));
    cuts.extend(m.meters.iter().map(|(t, _)| *t));
    if vi == 0 {
        cuts.extend(m.chord_symbols.iter().map(|(t, _)| *t));
        cuts.extend(m.parts.iter().map(|(t, _)| *t));
        cuts.extend(m.tempo.changes().iter().map(|c| c.tick));
    }
    cuts.push(0);
    cuts.push(end);
    cuts.retain(|&t| t <= end);
    cuts.sort_unstable();
    cuts.dedup();

    let skip = |b: usize| repeats.skipped[b];
    let starts_rep = |b: usize| repeats.starts[b];

    let mut active: Vec<&Note> = Vec::new();
    // Where each list of `marks` has been read up to: keys, meters, parts, tempos, chords.
    let mut cursors = [0usize; 5];
    let mut velocity = 80u8;
    let mut next = 0;
    let mut bar_index = 0;
    let mut elems: Vec<Elem> = Vec::new();
    let mut key = score.key();
    let mut printed_bars = 0;
    let nbars = bars.len();
    let mut flush = |out: &mut String, elems: &mut Vec<Elem>, key: &mut Key, bar: usize| {
        // The second copy of a repeated section is not printed.
        if !skip(bar) {
            if bar == 0 && starts_rep(0) {
                out.push_str("|:");
            }
            if repeats.ending1[bar] {
                out.push_str("[1 ");
            } else if repeats.ending2[bar] {
                out.push_str("[2 ");
            }
            // Beams break on the beat; a short first bar (a pickup) counts back from its end.
            let (start, stop) = (bars[bar], bars.get(bar + 1).copied().unwrap_or(end));
            let meter = score.meter_at(start);
            let lead = if bar == 0 { meter.bar_ticks().saturating_sub(stop - start) } else { 0 };
            render_bar(out, elems, key, beam_beat(meter, unit), lead, unit);
            // The bar printed next: after a `:|` the copy is skipped.
            let next_printed = repeats.next_printed[bar];
            let last = next_printed >= nbars;
            let bl = match (next_printed != bar + 1, starts_rep(next_printed) && !last) {
                (true, true) => ":|:",
                (true, false) => ":|",
                (false, true) => "|:",
                (false, false) if last => "|]",
                _ => "|",
            };
            out.push_str(bl);
            printed_bars += 1;
            out.push(if printed_bars % 4 == 0 || last { '\n' } else { ' ' });
        }
        elems.clear();
    };
    for w in cuts.windows(2) {
        let (t, t2) = (w[0], w[1]);
        // A bar line falls here: finish the bar before.
        if bar_index + 1 < bars.len() && bars[bar_index + 1] == t {
            flush(out, &mut elems, &mut key, bar_index);
            bar_index += 1;
        }
        active.retain(|n| n.end() > t);
        while next < notes.len() && notes[next].start <= t {
            // Zero-length notes have no ABC spelling and are left out.
            if notes[next].end() > t {
                active.push(notes[next]);
            }
            next += 1;
        }
        let mut prefix = String::new();
        let mut key_here = None;
        let keys_here = at_tick(&marks.keys, &mut cursors[0], t);
        let meters_here = at_tick(&marks.meters, &mut cursors[1], t);
        if t > 0 {
            if let Some((_, k)) = keys_here.first() {
                let _ = write!(prefix, "[K:{k}]");
                key_here = Some((*k).clone());
            }
            if let Some((_, me)) = meters_here.first() {
                let _ = write!(prefix, "[M:{me}]");
            }
        }
        if vi == 0 {
            for (_, p) in at_tick(&marks.parts, &mut cursors[2], t) {
                let _ = write!(prefix, "[P:{}]", p.replace(']', ""));
            }
            let tempos_here = at_tick(&marks.tempos, &mut cursors[3], t);
            if t > 0 {
                if let Some((_, micros)) = tempos_here.first() {
                    let _ = write!(prefix, "[Q:1/4={}]", bpm_text(*micros));
                }
            }
            for (_, c) in at_tick(&marks.chords, &mut cursors[4], t) {
                let _ = write!(prefix, "\"{}\"", c.replace('"', "'"));
            }
        }
        // A dynamics mark when the notes starting here change the velocity to one that
        // `!p!`..`!fff!` can say.
        if let Some(n) = active.iter().find(|n| n.start == t) {
            if n.velocity != velocity {
                if let Some(name) = DYNAMICS.iter().find(|d| super::lower::dynamic(d) == Some(n.velocity)) {
                    let _ = write!(prefix, "!{name}!");
                    velocity = n.velocity;
                }
            }
        }
        let mut pitches: Vec<(u8, bool)> = active.iter().map(|n| (n.pitch, n.end() > t2)).collect();
        pitches.sort_unstable();
        pitches.dedup_by_key(|p| p.0);
        elems.push(Elem { dur: t2 - t, pitches, prefix, key: key_here });
    }
    flush(out, &mut elems, &mut key, bar_index);
}

/// The span one beam covers, as folk collections beam eighths: a dotted quarter in compound
/// meters (`GAG GAB` in 6/8), half a bar in 4/4 and 2/2 (`ABcd efge`), else a quarter; music
/// in sixteenths (`unit`) beams by the quarter (`DEFG ABcd`).
fn beam_beat(meter: crate::time::Meter, unit: Tick) -> Tick {
    if meter.den == 8 && meter.num.is_multiple_of(3) && meter.num > 3 {
        3 * EIGHTH
    } else if meter.bar_ticks() == WHOLE && unit >= EIGHTH {
        4 * EIGHTH
    } else {
        2 * EIGHTH
    }
}

/// Writes one bar's elements, grouping triplets and beaming by `beat` (`lead`: ticks of the
/// bar before its first element, for a pickup), and keeps the accidentals of the bar.
fn render_bar(out: &mut String, elems: &[Elem], key: &mut Key, beat: Tick, lead: Tick, unit: Tick) {
    let mut key_acc = key.accidentals();
    let mut sharps = key.fifths() >= 0;
    let mut bar_acc: [Option<i8>; 7] = [None; 7];
    let triplet = |d: Tick| (d * 3).is_multiple_of(2) && !is_plain(d) && is_plain(d * 3 / 2);
    let mut i = 0;
    let mut in_tuplet = 0;
    let mut pos = lead;
    while i < elems.len() {
        let e = &elems[i];
        if in_tuplet == 0
            && i + 2 < elems.len()
            && (0..3).all(|j| triplet(elems[i + j].dur) && elems[i + j].key.is_none())
        {
            out.push_str("(3");
            in_tuplet = 3;
        }
        if let Some(k) = &e.key {
            *key = k.clone();
            key_acc = key.accidentals();
            sharps = key.fifths() >= 0;
            bar_acc = [None; 7];
        }
        out.push_str(&e.prefix);
        let dur = if in_tuplet > 0 { e.dur * 3 / 2 } else { e.dur };
        match e.pitches.as_slice() {
            [] => {
                out.push('z');
                write_len(out, dur, unit);
            }
            [(p, tie)] => {
                write_pitch(out, *p, &key_acc, &mut bar_acc, sharps);
                write_len(out, dur, unit);
                if *tie {
                    out.push('-');
                }
            }
            many => {
                out.push('[');
                for (p, tie) in many {
                    write_pitch(out, *p, &key_acc, &mut bar_acc, sharps);
                    if *tie {
                        out.push('-');
                    }
                }
                out.push(']');
                write_len(out, dur, unit);
            }
        }
        if in_tuplet > 0 {
            in_tuplet -= 1;
        }
        pos += e.dur;
        i += 1;
        if in_tuplet == 0 && i < elems.len() && elems[i].pitches.len() <= 1 && e.pitches.len() <= 1 {
            // Beam short notes together within a beat, separate longer ones: purely cosmetic.
            if e.dur >= EIGHTH * 2 || elems[i].dur >= EIGHTH * 2 || pos.is_multiple_of(beat) {
                out.push(' ');
            }
        } else if in_tuplet == 0 && i < elems.len() {
            out.push(' ');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_print_as_fractions_of_an_eighth() {
        let cases = [(240, ""), (480, "2"), (120, "/"), (60, "/4"), (360, "3/2"), (720, "3"), (160, "2/3")];
        for (t, want) in cases {
            let mut s = String::new();
            write_len(&mut s, t, EIGHTH);
            assert_eq!(s, want, "{t}");
        }
        assert!(is_plain(120) && is_plain(360) && !is_plain(160));
    }

    #[test]
    fn the_unit_length_is_the_one_that_writes_least() {
        let printed = |body: &str| {
            let s = crate::dsl::parse(&format!("X:1\nM:4/4\nL:1/8\nK:C\n{body}\n")).unwrap();
            let text = print(&s);
            assert_eq!(crate::dsl::parse(&text).unwrap().notes, s.notes, "{text}");
            text
        };
        // A chorale line in quarters with a passing eighth pair.
        let t = printed("C2 E2 G2 c2|B2 AG A4|");
        assert!(t.contains("L:1/4\n") && t.contains("C E G c| B A/G/ A2|]"), "{t}");
        // A reel in eighths.
        let t = printed("DEFG ABcd|edcB A4|");
        assert!(t.contains("L:1/8\n") && t.contains("DEFG ABcd| edcB A4|]"), "{t}");
        // A hornpipe-like run of sixteenths.
        let t = printed("D/E/F/G/ A/B/c/d/ e/f/g/a/ b/a/g/f/|e/d/c/B/ A/G/F/E/ D4|");
        assert!(t.contains("L:1/16\n") && t.contains("DEFG ABcd efga bagf|"), "{t}");
    }

    #[test]
    fn spelling_follows_the_key() {
        let d_major = Key::new(1, 0, crate::score::Mode::Major).accidentals();
        assert_eq!(spell(66, &d_major, true), (3, 1, 0)); // F# in D
        assert_eq!(spell(65, &d_major, true), (3, 0, 0)); // F natural
        assert_eq!(spell(70, &[0; 7], false), (6, -1, 0)); // Bb in a flat key
        assert_eq!(spell(70, &[0; 7], true), (5, 1, 0)); // A# in a sharp key
        assert_eq!(spell(48, &[0; 7], true), (0, 0, -1)); // C,
        let mut s = String::new();
        let mut bar = [None; 7];
        write_pitch(&mut s, 66, &d_major, &mut bar, true);
        write_pitch(&mut s, 65, &d_major, &mut bar, true);
        write_pitch(&mut s, 77, &d_major, &mut bar, true);
        write_pitch(&mut s, 78, &d_major, &mut bar, true);
        assert_eq!(s, "F=Ff^f");
    }
}
