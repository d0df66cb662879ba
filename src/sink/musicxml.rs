//! MusicXML import (`.xml`, `.musicxml`, compressed `.mxl`) into a `Score`, with roxmltree + zip.
//!
//! What is read (`score-partwise`, the layout every notation program exports):
//! - parts → voices: one voice per (part, `<voice>` number), named after the part (plus the
//!   voice number when a part has several); program and channel from `<midi-instrument>`
//!   (MusicXML counts both from 1), else program 0 and the part's position as channel (skipping
//!   channel 10, the drum channel);
//! - time: `<divisions>` per quarter → ticks at 480 per quarter (rounded), `<backup>`,
//!   `<forward>`, `<chord/>` (same onset as the previous note), rests, measures whose content is
//!   shorter than the meter (pickups) last as long as their content;
//! - ties (`<tie type="start|stop">`) join notes of one pitch in one voice that touch in playing
//!   order; grace and cue notes are skipped (they take no notated time);
//! - `<transpose>` gives sounding pitch; `<unpitched>` notes sound their display pitch;
//! - key (`<fifths>` + `<mode>`, all church modes), time (`symbol="common|cut"`, `3+2` beats),
//!   tempo (`<sound tempo>`, else `<metronome>`) from the first part, title and composer;
//! - repeats are **expanded** into playing order: `|: :|` (with `times`), first/second endings
//!   (`<ending number="1, 2">`), taken from the first part and applied to all parts. D.C./D.S.
//!   jumps (`<sound dacapo>`, segno, coda) are not followed.
//!
//! `score-timewise` is refused with an error; malformed XML or zip gives an error with the file
//! and reason (roxmltree's includes line and column).

use crate::score::{Key, Mode, Note, Score, Voice};
use crate::time::{Meter, MeterSymbol, Tick, PPQ};
use roxmltree::{Document, Node, ParsingOptions};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What can go wrong importing MusicXML. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MusicXmlError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a readable .mxl archive: {reason}")]
    Archive { path: PathBuf, reason: String },
    #[error("{path}: malformed XML: {reason}")]
    Xml { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
}

/// Reads a MusicXML file (`.mxl` archives by their zip signature, whatever the extension).
pub fn read(path: impl AsRef<Path>) -> Result<Score, MusicXmlError> {
    let path = path.as_ref();
    let bytes = super::read_bounded(path).map_err(|source| MusicXmlError::Read { path: path.to_path_buf(), source })?;
    read_bytes(&bytes, path)
}

/// Reads MusicXML from bytes; `path` only names the source in errors.
pub fn read_bytes(bytes: &[u8], path: &Path) -> Result<Score, MusicXmlError> {
    let xml_bytes = if bytes.starts_with(b"PK\x03\x04") {
        unzip_root(bytes).map_err(|reason| MusicXmlError::Archive { path: path.to_path_buf(), reason })?
    } else {
        bytes.to_vec()
    };
    let text = decode_text(&xml_bytes);
    parse_str(&text).map_err(|e| match e {
        Failure::Xml(reason) => MusicXmlError::Xml { path: path.to_path_buf(), reason },
        Failure::Unsupported(reason) => MusicXmlError::Unsupported { path: path.to_path_buf(), reason },
    })
}

/// Reads MusicXML text (an in-memory `.xml`/`.musicxml`).
pub fn read_str(text: &str) -> Result<Score, MusicXmlError> {
    read_bytes(text.as_bytes(), Path::new("<memory>"))
}

enum Failure {
    Xml(String),
    Unsupported(String),
}

/// The score file inside an `.mxl`: the first `rootfile` of `META-INF/container.xml`, else the
/// first `.xml`/`.musicxml` entry outside `META-INF`.
fn unzip_root(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let read_entry = |zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str| -> Result<Vec<u8>, String> {
        let f = zip.by_name(name).map_err(|e| format!("{name}: {e}"))?;
        let too_big = |size: u64| format!("{name} unpacks to {size} bytes; at most {MAX_XML_BYTES} are read");
        if f.size() > MAX_XML_BYTES {
            return Err(too_big(f.size()));
        }
        // The declared size is the archive's word; the bytes read are held to the bound too.
        let mut out = Vec::new();
        f.take(MAX_XML_BYTES + 1).read_to_end(&mut out).map_err(|e| format!("{name}: {e}"))?;
        if out.len() as u64 > MAX_XML_BYTES {
            return Err(too_big(out.len() as u64));
        }
        Ok(out)
    };
    let root = match read_entry(&mut zip, "META-INF/container.xml") {
        Ok(container) => {
            let text = decode_text(&container);
            check_depth(&text).map_err(|e| format!("META-INF/container.xml: {e}"))?;
            let doc = Document::parse(&text).map_err(|e| format!("META-INF/container.xml: {e}"))?;
            doc.descendants()
                .find(|n| n.has_tag_name("rootfile"))
                .and_then(|n| n.attribute("full-path"))
                .map(String::from)
        }
        Err(_) => None,
    };
    let root = match root {
        Some(r) => r,
        None => zip
            .file_names()
            .filter(|n| !n.starts_with("META-INF") && (n.ends_with(".xml") || n.ends_with(".musicxml")))
            .min()
            .map(String::from)
            .ok_or("no score file in the archive (no container.xml rootfile, no .xml entry)")?,
    };
    read_entry(&mut zip, &root)
}

/// MusicXML is UTF-8 or (from some programs) UTF-16 with a byte-order mark.
fn decode_text(bytes: &[u8]) -> String {
    let utf16 = |be: bool| {
        let units: Vec<u16> = bytes[2..]
            .chunks_exact(2)
            .map(|c| if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) })
            .collect();
        String::from_utf16_lossy(&units)
    };
    match bytes {
        [0xFF, 0xFE, ..] => utf16(false),
        [0xFE, 0xFF, ..] => utf16(true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8_lossy(rest).into_owned(),
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// One note as written in a measure, before repeats are laid out.
#[derive(Debug, Clone)]
struct RawNote {
    /// Quarter notes from the start of the measure (exact enough for any tuplet; ticks are
    /// rounded only once, when the note is placed, so tuplets never drift).
    start: f64,
    dur: f64,
    pitch: u8,
    velocity: u8,
    voice: u8,
    tie_start: bool,
    tie_stop: bool,
}

/// How a measure takes part in repeats.
#[derive(Debug, Clone, Default)]
struct Barlines {
    forward: bool,
    backward: Option<u32>,
    /// Ending numbers this measure belongs to (empty outside endings).
    ending: Vec<u32>,
}

#[derive(Debug, Default)]
struct Measure {
    notes: Vec<RawNote>,
    /// Length in quarter notes: as far as any note, rest or forward reached.
    extent: f64,
    bars: Barlines,
    meters: Vec<(f64, Meter)>,
    keys: Vec<(f64, Key)>,
    tempos: Vec<(f64, f64)>,
}

fn child<'a, 'i>(n: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    n.children().find(|c| c.has_tag_name(name))
}

fn child_text<'a>(n: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(n, name).and_then(|c| c.text()).map(str::trim)
}

fn child_num<T: std::str::FromStr>(n: Node, name: &str) -> Option<T> {
    child_text(n, name).and_then(|t| t.parse().ok())
}

fn child_f64(n: Node, name: &str) -> Option<f64> {
    child_num::<f64>(n, name).filter(|x| x.is_finite())
}

/// Divisions to quarter notes; negative or absurd values count as zero.
fn quarters(amount: f64, divisions: f64) -> f64 {
    let q = amount / divisions;
    if q.is_finite() && q > 0.0 {
        q.min(1e9)
    } else {
        0.0
    }
}

/// Quarter notes to ticks, rounded to the nearest tick.
fn ticks(q: f64) -> Tick {
    (q * PPQ as f64).round().max(0.0) as Tick
}

const STEPS: [(&str, i32); 7] = [("C", 0), ("D", 2), ("E", 4), ("F", 5), ("G", 7), ("A", 9), ("B", 11)];

fn step_pitch(step: &str, octave: i32, alter: f64) -> Option<i32> {
    let s = STEPS.iter().find(|(n, _)| n.eq_ignore_ascii_case(step))?.1;
    Some((octave + 1) * 12 + s + alter.round() as i32)
}

fn mode_of(text: &str) -> Mode {
    match text.trim().to_ascii_lowercase().as_str() {
        "minor" => Mode::Minor,
        "dorian" => Mode::Dorian,
        "phrygian" => Mode::Phrygian,
        "lydian" => Mode::Lydian,
        "mixolydian" => Mode::Mixolydian,
        "aeolian" => Mode::Aeolian,
        "ionian" => Mode::Ionian,
        "locrian" => Mode::Locrian,
        _ => Mode::Major,
    }
}

/// The key with `fifths` sharps (flats if negative) in `mode`.
fn key_of(fifths: i32, mode: Mode) -> Key {
    let tonic = Key::from_fifths(fifths - mode.fifths_offset(), false);
    Key { mode, ..tonic }
}

/// Quarter notes in a `<beat-unit>` (with `dots` dots).
fn beat_unit_quarters(unit: &str, dots: usize) -> Option<f64> {
    let base = match unit {
        "whole" => 4.0,
        "half" => 2.0,
        "quarter" => 1.0,
        "eighth" => 0.5,
        "16th" => 0.25,
        "32nd" => 0.125,
        _ => return None,
    };
    Some(base * (2.0 - 0.5f64.powi(dots as i32)))
}

/// Deepest element nesting read: real MusicXML nests about ten deep. roxmltree recurses once
/// per level, so a document 20,000 levels deep would overflow the stack and abort.
pub const MAX_XML_DEPTH: usize = 256;
/// Largest MusicXML text unpacked from an `.mxl` (the same bound as any score file): a large
/// orchestral score is tens of megabytes; an entry claiming gigabytes is refused unread.
pub const MAX_XML_BYTES: u64 = super::MAX_FILE_BYTES;

/// Refuses XML nested deeper than [`MAX_XML_DEPTH`] before a tree is built, naming the line
/// where the limit is passed. A linear scan that knows comments, CDATA, processing
/// instructions, declarations and quoted attribute values; anything else malformed is left to
/// the parser to report.
fn check_depth(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    let skip_past = |from: usize, end: &[u8]| -> usize {
        b[from..].windows(end.len()).position(|w| w == end).map_or(b.len(), |p| from + p + end.len())
    };
    // The index just past the `>` closing a tag or declaration that starts at `from`, skipping
    // quoted values and, in a DOCTYPE, the bracketed internal subset.
    let tag_end = |from: usize| -> usize {
        let (mut i, mut quote, mut brackets) = (from, 0u8, 0usize);
        while i < b.len() {
            match b[i] {
                q if quote == q => quote = 0,
                _ if quote != 0 => {}
                q @ (b'"' | b'\'') => quote = q,
                b'[' => brackets += 1,
                b']' => brackets = brackets.saturating_sub(1),
                b'>' if brackets == 0 => return i + 1,
                _ => {}
            }
            i += 1;
        }
        b.len()
    };
    let (mut i, mut depth) = (0, 0usize);
    while let Some(p) = b[i..].iter().position(|&c| c == b'<') {
        let at = i + p;
        let rest = &b[at..];
        i = if rest.starts_with(b"<!--") {
            skip_past(at + 4, b"-->")
        } else if rest.starts_with(b"<![CDATA[") {
            skip_past(at + 9, b"]]>")
        } else if rest.starts_with(b"<?") {
            skip_past(at + 2, b"?>")
        } else if rest.starts_with(b"<!") {
            tag_end(at + 2)
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            tag_end(at + 2)
        } else {
            let end = tag_end(at + 1);
            if end >= 2 && b[end - 2] != b'/' {
                depth += 1;
                if depth > MAX_XML_DEPTH {
                    let line = b[..at].iter().filter(|&&c| c == b'\n').count() + 1;
                    return Err(format!(
                        "elements nested more than {MAX_XML_DEPTH} deep (line {line}); real MusicXML nests about ten"
                    ));
                }
            }
            end
        };
    }
    Ok(())
}

fn parse_str(text: &str) -> Result<Score, Failure> {
    check_depth(text).map_err(Failure::Xml)?;
    let opts = ParsingOptions { allow_dtd: true, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(text, opts).map_err(|e| Failure::Xml(e.to_string()))?;
    let root = doc.root_element();
    match root.tag_name().name() {
        "score-partwise" => {}
        "score-timewise" => return Err(Failure::Unsupported("score-timewise MusicXML is not supported".into())),
        other => return Err(Failure::Unsupported(format!("root element <{other}> is not <score-partwise>"))),
    }

    let mut score = Score::new();
    score.meta.title = child(root, "work")
        .and_then(|w| child_text(w, "work-title"))
        .or_else(|| child_text(root, "movement-title"))
        .filter(|t| !t.is_empty())
        .map(String::from);
    score.meta.composer_field = child(root, "identification")
        .and_then(|i| i.children().find(|c| c.has_tag_name("creator") && c.attribute("type") == Some("composer")))
        .and_then(|c| c.text())
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());

    // Part list: id → (name, program, channel).
    let mut part_info: HashMap<&str, (String, Option<u8>, Option<u8>)> = HashMap::new();
    if let Some(list) = child(root, "part-list") {
        for sp in list.children().filter(|c| c.has_tag_name("score-part")) {
            let Some(id) = sp.attribute("id") else { continue };
            let name = child_text(sp, "part-name").unwrap_or("").to_string();
            let mi = child(sp, "midi-instrument");
            let program = mi.and_then(|m| child_num::<u32>(m, "midi-program")).filter(|p| (1..=128).contains(p));
            let channel = mi.and_then(|m| child_num::<u32>(m, "midi-channel")).filter(|c| (1..=16).contains(c));
            part_info.insert(id, (name, program.map(|p| (p - 1) as u8), channel.map(|c| (c - 1) as u8)));
        }
    }

    let parts: Vec<Node> = root.children().filter(|c| c.has_tag_name("part")).collect();
    if parts.is_empty() {
        return Err(Failure::Unsupported("the score has no <part>".into()));
    }
    // Voices: (part index, voice label) in order of appearance.
    let mut voice_keys: Vec<(usize, String)> = Vec::new();
    let mut part_measures: Vec<Vec<Measure>> = Vec::new();
    for (pi, part) in parts.iter().enumerate() {
        part_measures.push(read_part(*part, pi, &mut voice_keys)?);
    }

    // Voices named after their parts.
    let mut next_channel = 0u8;
    let mut part_channels: Vec<u8> = Vec::new();
    for (pi, part) in parts.iter().enumerate() {
        let info = part.attribute("id").and_then(|id| part_info.get(id));
        let ch = match info.and_then(|i| i.2) {
            Some(c) => c,
            None => {
                if next_channel == 9 {
                    next_channel += 1;
                }
                let c = next_channel.min(15);
                next_channel += 1;
                c
            }
        };
        part_channels.push(ch);
        let _ = pi;
    }
    if voice_keys.len() > 256 {
        return Err(Failure::Unsupported(format!("{} voices; a score holds at most 256", voice_keys.len())));
    }
    for (pi, label) in &voice_keys {
        let id = parts[*pi].attribute("id").unwrap_or("");
        let (name, program, _) = part_info.get(id).cloned().unwrap_or_default();
        let name = if name.is_empty() { id.to_string() } else { name };
        let several = voice_keys.iter().filter(|(p, _)| p == pi).count() > 1;
        let name = if several { format!("{name} {label}") } else { name };
        score.voices.push(Voice { name, channel: part_channels[*pi], program: program.unwrap_or(0) });
    }

    // Playing order from the first part's barlines; measure lengths are the longest part's.
    let count = part_measures.iter().map(Vec::len).max().unwrap_or(0);
    let bars: Vec<Barlines> =
        (0..count).map(|i| part_measures[0].get(i).map(|m| m.bars.clone()).unwrap_or_default()).collect();
    let order = playing_order(&bars);
    let extents: Vec<f64> = (0..count)
        .map(|i| part_measures.iter().filter_map(|p| p.get(i)).map(|m| m.extent).fold(0.0, f64::max))
        .collect();

    let mut t = 0.0f64;
    // Open ties: (voice, pitch) → note index.
    let mut open: HashMap<(u8, u8), usize> = HashMap::new();
    let mut meters: Vec<(Tick, Meter)> = Vec::new();
    let mut keys: Vec<(Tick, Key)> = Vec::new();
    for &mi in &order {
        for (pi, measures) in part_measures.iter().enumerate() {
            let Some(m) = measures.get(mi) else { continue };
            if pi == 0 {
                meters.extend(m.meters.iter().map(|(r, x)| (ticks(t + r), *x)));
                keys.extend(m.keys.iter().map(|(r, x)| (ticks(t + r), x.clone())));
                for (r, bpm) in &m.tempos {
                    score.meta.tempo.set_bpm(ticks(t + r), *bpm);
                }
            }
            let channel = part_channels[pi];
            for n in &m.notes {
                let start = ticks(t + n.start);
                let dur = ticks(n.dur);
                let k = (n.voice, n.pitch);
                if n.tie_stop {
                    if let Some(&i) = open.get(&k) {
                        let prev: &mut Note = &mut score.notes[i];
                        // Touching in playing order (one tick of rounding allowed).
                        if prev.end().abs_diff(start) <= 1 {
                            prev.dur = start + dur - prev.start;
                            if !n.tie_start {
                                open.remove(&k);
                            }
                            continue;
                        }
                    }
                }
                let voice = &score.voices[n.voice as usize];
                score.notes.push(Note {
                    start,
                    dur,
                    pitch: n.pitch,
                    velocity: n.velocity,
                    channel,
                    voice: n.voice,
                    program: voice.program,
                });
                if n.tie_start {
                    open.insert(k, score.notes.len() - 1);
                } else {
                    open.remove(&k);
                }
            }
        }
        t += extents[mi];
    }
    score.meta.meters = dedup(meters);
    score.meta.keys = dedup(keys);
    score.length = ticks(t);
    score.normalize();
    score.check_bounds().map_err(|e| Failure::Unsupported(e.to_string()))?;
    Ok(score)
}

/// Keeps the last change at a tick and drops changes that repeat the one before.
fn dedup<T: PartialEq>(v: Vec<(Tick, T)>) -> Vec<(Tick, T)> {
    let mut out: Vec<(Tick, T)> = Vec::new();
    for (t, x) in v {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = x,
            _ => out.push((t, x)),
        }
    }
    out.dedup_by(|b, a| a.1 == b.1);
    out
}

/// Measures of one part, with notes relative to each measure's start.
fn read_part(part: Node, pi: usize, voice_keys: &mut Vec<(usize, String)>) -> Result<Vec<Measure>, Failure> {
    let mut divisions = 1.0f64;
    let mut transpose = 0i32;
    let mut velocity = 80u8;
    let mut measures = Vec::new();
    let mut in_ending: Vec<u32> = Vec::new();
    for measure in part.children().filter(|c| c.has_tag_name("measure")) {
        let mut m = Measure::default();
        let mut cursor = 0.0f64;
        let mut last_start = 0.0f64;
        m.bars.ending = in_ending.clone();
        for el in measure.children().filter(Node::is_element) {
            match el.tag_name().name() {
                "attributes" => {
                    if let Some(d) = child_f64(el, "divisions").filter(|d| *d > 0.0) {
                        divisions = d;
                    }
                    if let Some(k) = child(el, "key") {
                        if let Some(f) = child_num::<i32>(k, "fifths") {
                            let mode = child_text(k, "mode").map_or(Mode::Major, mode_of);
                            m.keys.push((cursor, key_of(f.clamp(-7, 7), mode)));
                        }
                    }
                    if let Some(tm) = child(el, "time") {
                        if let Some(meter) = read_time(tm) {
                            m.meters.push((cursor, meter));
                        }
                    }
                    if let Some(tr) = child(el, "transpose") {
                        transpose = child_num::<i32>(tr, "chromatic").unwrap_or(0)
                            + 12 * child_num::<i32>(tr, "octave-change").unwrap_or(0);
                    }
                }
                "backup" => {
                    let d = quarters(child_f64(el, "duration").unwrap_or(0.0), divisions);
                    cursor = (cursor - d).max(0.0);
                }
                "forward" => {
                    cursor += quarters(child_f64(el, "duration").unwrap_or(0.0), divisions);
                    m.extent = m.extent.max(cursor);
                }
                "direction" | "sound" => {
                    let sound = if el.has_tag_name("sound") { Some(el) } else { child(el, "sound") };
                    let offset = child_f64(el, "offset").map_or(0.0, |o| quarters(o, divisions));
                    let mut tempo = sound.and_then(|s| s.attribute("tempo")).and_then(|t| t.parse::<f64>().ok());
                    if let Some(d) = sound.and_then(|s| s.attribute("dynamics")).and_then(|t| t.parse::<f64>().ok()) {
                        // `dynamics` is a percentage of forte (90).
                        velocity = (d * 0.9).round().clamp(1.0, 127.0) as u8;
                    }
                    if tempo.is_none() {
                        tempo = el.descendants().find(|c| c.has_tag_name("metronome")).and_then(|mt| {
                            let unit = child_text(mt, "beat-unit")?;
                            let dots = mt.children().filter(|c| c.has_tag_name("beat-unit-dot")).count();
                            let per_minute: f64 = child_text(mt, "per-minute")?.parse().ok()?;
                            Some(per_minute * beat_unit_quarters(unit, dots)?)
                        });
                    }
                    if let Some(bpm) = tempo.filter(|b| b.is_finite() && *b >= 1.0 && *b <= 1000.0) {
                        m.tempos.push((cursor + offset, bpm));
                    }
                }
                "barline" => {
                    if let Some(r) = child(el, "repeat") {
                        match r.attribute("direction") {
                            Some("forward") => m.bars.forward = true,
                            Some("backward") => {
                                let times = r.attribute("times").and_then(|t| t.parse().ok()).unwrap_or(2u32);
                                m.bars.backward = Some(times.clamp(1, 16));
                            }
                            _ => {}
                        }
                    }
                    if let Some(e) = child(el, "ending") {
                        let numbers: Vec<u32> = e
                            .attribute("number")
                            .unwrap_or("")
                            .split([',', ' '])
                            .filter_map(|s| s.trim().parse().ok())
                            .collect();
                        match e.attribute("type") {
                            Some("start") => {
                                in_ending = numbers.clone();
                                m.bars.ending = numbers;
                            }
                            Some("stop") | Some("discontinue") => in_ending.clear(),
                            _ => {}
                        }
                    }
                }
                "note" => {
                    let is_chord = child(el, "chord").is_some();
                    let dur = quarters(child_f64(el, "duration").unwrap_or(0.0), divisions);
                    if child(el, "grace").is_some() || child(el, "cue").is_some() {
                        continue;
                    }
                    let start = if is_chord { last_start } else { cursor };
                    if !is_chord {
                        last_start = cursor;
                        cursor += dur;
                        m.extent = m.extent.max(cursor);
                    }
                    if child(el, "rest").is_some() {
                        continue;
                    }
                    let pitch = if let Some(p) = child(el, "pitch") {
                        let step = child_text(p, "step").unwrap_or("");
                        let octave = child_num::<i32>(p, "octave").unwrap_or(4);
                        step_pitch(step, octave, child_f64(p, "alter").unwrap_or(0.0)).map(|x| x + transpose)
                    } else if let Some(u) = child(el, "unpitched") {
                        let step = child_text(u, "display-step").unwrap_or("");
                        step_pitch(step, child_num::<i32>(u, "display-octave").unwrap_or(4), 0.0)
                    } else {
                        None
                    };
                    let Some(pitch) = pitch.filter(|p| (0..=127).contains(p)) else { continue };
                    let label = child_text(el, "voice").unwrap_or("1").to_string();
                    let voice = match voice_keys.iter().position(|(p, l)| *p == pi && *l == label) {
                        Some(v) => v,
                        None => {
                            voice_keys.push((pi, label));
                            voice_keys.len() - 1
                        }
                    };
                    let ties = el.children().filter(|c| c.has_tag_name("tie"));
                    let (mut tie_start, mut tie_stop) = (false, false);
                    for t in ties {
                        match t.attribute("type") {
                            Some("start") => tie_start = true,
                            Some("stop") => tie_stop = true,
                            _ => {}
                        }
                    }
                    let velocity = el
                        .attribute("dynamics")
                        .and_then(|d| d.parse::<f64>().ok())
                        .map_or(velocity, |d| (d * 0.9).round().clamp(1.0, 127.0) as u8);
                    m.notes.push(RawNote {
                        start,
                        dur,
                        pitch: pitch as u8,
                        velocity,
                        voice: voice.min(255) as u8,
                        tie_start,
                        tie_stop,
                    });
                }
                _ => {}
            }
        }
        measures.push(m);
    }
    Ok(measures)
}

fn read_time(tm: Node) -> Option<Meter> {
    if child(tm, "senza-misura").is_some() {
        return Some(Meter::free());
    }
    let beats: u32 = child_text(tm, "beats")?.split('+').map(|b| b.trim().parse::<u32>().ok()).sum::<Option<u32>>()?;
    let den: u32 = child_text(tm, "beat-type")?.parse().ok()?;
    if !Meter::new(beats, den).is_writable() {
        return None;
    }
    let symbol = match tm.attribute("symbol") {
        Some("common") if (beats, den) == (4, 4) => MeterSymbol::Common,
        Some("cut") if (beats, den) == (2, 2) => MeterSymbol::Cut,
        _ => MeterSymbol::Numeric,
    };
    Some(Meter { num: beats, den, symbol })
}

/// Measure indices in playing order: `|: ... :|` played `times` times, endings taken on the
/// passes their numbers name. Bounded, so broken repeat marks cannot loop forever.
fn playing_order(bars: &[Barlines]) -> Vec<usize> {
    let mut order = Vec::new();
    let (mut i, mut start, mut pass, mut done) = (0usize, 0usize, 1u32, 0u32);
    let limit = bars.len() * 8 + 8;
    let mut jumped = false;
    while i < bars.len() && order.len() < limit {
        let b = &bars[i];
        if b.forward && !jumped {
            start = i;
            pass = 1;
            done = 0;
        }
        jumped = false;
        if !b.ending.is_empty() && !b.ending.contains(&pass) {
            i += 1;
            continue;
        }
        order.push(i);
        match b.backward {
            Some(times) if done + 1 < times => {
                done += 1;
                pass += 1;
                i = start;
                jumped = true;
            }
            Some(_) => {
                // The repeat is finished; what follows starts a new section.
                done = 0;
                pass = 1;
                start = i + 1;
                i += 1;
            }
            None => {
                // Leaving the last ending of a group closes the repeated section.
                if !b.ending.is_empty() && bars.get(i + 1).is_none_or(|n| n.ending.is_empty()) {
                    done = 0;
                    pass = 1;
                    start = i + 1;
                }
                i += 1;
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Regression: 20,000 nested elements overflowed roxmltree's recursion and aborted.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = |n: usize| format!("<score-partwise>{}{}</score-partwise>", "<a>".repeat(n), "</a>".repeat(n));
        let e = read_str(&deep(20_000)).unwrap_err().to_string();
        assert!(e.contains("nested more than 256 deep"), "{e}");
        // At the limit it goes on to the parser (which finds no parts, not a nesting error).
        let e = read_str(&deep(MAX_XML_DEPTH - 1)).unwrap_err().to_string();
        assert!(!e.contains("nested"), "{e}");
        // Comments, CDATA, quoted `>` and `/>`, self-closing tags and a DOCTYPE subset count
        // nothing.
        let tricky = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e \"<b>\">]><score-partwise a=\"/>\" b='>'>{}{}{}</score-partwise>",
            "<!-- <c> --><![CDATA[<d>]]><e/><f x=\"<g>\"></f>".repeat(1000),
            "<h>".repeat(10),
            "</h>".repeat(10)
        );
        assert_eq!(check_depth(&tricky), Ok(()));
    }

    /// An `.mxl` entry that claims to unpack to gigabytes is refused before it is unpacked.
    #[test]
    fn an_archive_entry_claiming_gigabytes_is_refused() {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("score.xml", stored).unwrap();
        zip.write_all(b"<score-partwise/>").unwrap();
        let mut bytes = zip.finish().unwrap().into_inner();
        // As written, the archive unpacks (the score inside is read, empty as it is).
        assert!(!matches!(read_bytes(&bytes, Path::new("ok.mxl")), Err(MusicXmlError::Archive { .. })));
        // The central directory's uncompressed size (offset 24 of its header) says 3 GB.
        let cd = bytes.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        bytes[cd + 24..cd + 28].copy_from_slice(&3_000_000_000u32.to_le_bytes());
        let e = read_bytes(&bytes, Path::new("bomb.mxl")).unwrap_err().to_string();
        assert!(e.contains("unpacks to 3000000000 bytes"), "{e}");
    }

    #[test]
    fn repeats_and_endings_expand() {
        let bar =
            |forward, backward: Option<u32>, ending: &[u32]| Barlines { forward, backward, ending: ending.to_vec() };
        // A |: B | C [1 D :| [2 E | F
        let bars = vec![
            bar(false, None, &[]),
            bar(true, None, &[]),
            bar(false, None, &[]),
            bar(false, Some(2), &[1]),
            bar(false, None, &[2]),
            bar(false, None, &[]),
        ];
        assert_eq!(playing_order(&bars), vec![0, 1, 2, 3, 1, 2, 4, 5]);
        // Backward repeat with no forward one goes back to the start; times="3".
        let bars = vec![bar(false, None, &[]), bar(false, Some(3), &[])];
        assert_eq!(playing_order(&bars), vec![0, 1, 0, 1, 0, 1]);
    }

    #[test]
    fn keys_in_all_modes() {
        assert_eq!(key_of(1, Mode::Major).to_string(), "G");
        assert_eq!(key_of(1, Mode::Minor).to_string(), "Em");
        assert_eq!(key_of(0, Mode::Dorian).to_string(), "Ddor");
        assert_eq!(key_of(2, Mode::Mixolydian).to_string(), "Amix");
        assert_eq!(step_pitch("C", 4, 0.0), Some(60));
        assert_eq!(step_pitch("B", 3, 1.0), Some(60));
    }
}
