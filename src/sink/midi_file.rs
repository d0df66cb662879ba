//! Standard MIDI Files (format 0 and 1) ⇄ `Score`, with midly: exact round trips for our own files.
//!
//! # Reading
//! Events are parsed lazily from the bytes (no copy of the file, no per-event allocation). Ticks
//! are rescaled from the file's division to [`PPQ`] (rounded to the nearest tick; exact when the
//! division divides 480). SMPTE (timecode) files are read as 120 bpm, one second = two quarters.
//! - Voices: format 1 gives one voice per track that holds notes (name = track name, else the
//!   track number); format 0 gives one voice per channel (name = the channel, 1-based). Format 2
//!   (independent songs) is refused with an error.
//! - Note pairing: a note-off (or note-on with velocity 0) ends the *earliest* sounding note of
//!   the same pitch on the same channel in the same track (first in, first out). Overlapping notes
//!   of one pitch therefore keep their order; MIDI cannot tell "A holds while B starts and ends
//!   inside it" from "A ends first", and FIFO reads both as the latter. Notes still sounding when
//!   their track ends are closed at the track's end.
//! - Program: each note takes the last program change on its channel in its own track; a track
//!   that never sets one takes the last one on that channel in any track (MIDI's channel state),
//!   else 0.
//! - Meta: tempo changes → `meta.tempo`, time signatures → `meta.meters`, key signatures →
//!   `meta.keys`, markers → `meta.parts`, the first track's name → `meta.title`; the end-of-track
//!   event sets `length` (so trailing rests survive).
//! - Errors: a file that is not MIDI, whose chunks are cut short, or whose events are malformed
//!   gives a [`MidiError`] naming the file and the reason; nothing panics on any input.
//!
//! # Writing
//! Format 1 at 480 ticks per quarter: track 0 is the conductor (title, tempo, meters, keys, part
//! markers), then one track per voice named after it, with a program change on each channel
//! before its first note (and again when a note's program differs). At one tick, note-offs come
//! before note-ons, and a zero-length note's off follows its own on, so FIFO pairing gives every
//! note back. What MIDI cannot say (ABC meter symbols, modes other than major/minor, explicit key
//! accidentals, conditioning settings, chord symbols, voice list) rides in one sequencer-specific
//! meta event (manufacturer id 0x7D, "for non-commercial use") holding JSON; other programs ignore
//! it. On reading, its richer meters/keys/parts replace the events' only where they agree with the
//! events, so a file edited elsewhere still reads as edited. Together: Score → .mid → Score is
//! exact, except for same-pitch notes nested inside each other on one channel of one voice (see
//! pairing above) and for values MIDI cannot hold, which are clamped (velocity to 1..=127, pitch
//! and program to 0..=127, channel to 0..=15). Format 0 puts everything in one track and keeps
//! channels, not voices.

use crate::score::{Key, Meta, Note, Score, Voice};
use crate::time::{Meter, TempoMap, Tick, PPQ};
use midly::num::{u15, u24, u28, u4, u7};
use midly::{Format, Header, MetaMessage, MidiMessage, Timing, TrackEvent, TrackEventKind};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What can go wrong reading or writing a MIDI file. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MidiError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: Invalid },
}

/// Why a file's bytes are not a MIDI file we can read, or a score cannot become one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("not a Standard MIDI File (it starts with {0:?}, not \"MThd\")")]
    NotMidi(String),
    #[error("truncated: {what} announces {need} bytes, only {have} are left")]
    Truncated { what: String, need: u64, have: u64 },
    #[error("truncated: the header announces {announced} tracks, the file holds {found}")]
    MissingTracks { announced: u16, found: u16 },
    #[error("bad header chunk: {0}")]
    BadHeader(String),
    #[error("track {track}: malformed event at byte {offset} of the track")]
    Malformed { track: usize, offset: usize },
    #[error("format 2 (independent sequences in one file) is not supported")]
    Format2,
    #[error("{0} voices; a score holds at most 256")]
    TooManyVoices(usize),
    #[error("a gap of {0} ticks between events is longer than MIDI can store")]
    GapTooLong(Tick),
    /// Beyond a score's documented bounds ([`crate::score::MAX_TICKS`] and the others, and
    /// MIDI's value ranges): a tiny file can claim days of music in one delta.
    #[error("{0}")]
    Bounds(String),
}

/// Which Standard MIDI File layout to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmfFormat {
    /// One track holding everything (voices merge; channels stay).
    Single,
    /// A conductor track, then one track per voice.
    #[default]
    Parallel,
}

const MEMORY: &str = "<memory>";

/// Reads a MIDI file.
pub fn read(path: impl AsRef<Path>) -> Result<Score, MidiError> {
    let path = path.as_ref();
    let bytes = super::read_bounded(path).map_err(|source| MidiError::Read { path: path.to_path_buf(), source })?;
    parse(&bytes).map_err(|reason| MidiError::Invalid { path: path.to_path_buf(), reason })
}

/// Reads a MIDI file from bytes in memory (errors name the file `<memory>`).
pub fn read_bytes(bytes: &[u8]) -> Result<Score, MidiError> {
    parse(bytes).map_err(|reason| MidiError::Invalid { path: PathBuf::from(MEMORY), reason })
}

/// Writes `score` as a format 1 MIDI file.
pub fn write(score: &Score, path: impl AsRef<Path>) -> Result<(), MidiError> {
    write_format(score, path, SmfFormat::Parallel)
}

/// Writes `score` as a MIDI file in the given format.
pub fn write_format(score: &Score, path: impl AsRef<Path>, format: SmfFormat) -> Result<(), MidiError> {
    let path = path.as_ref();
    let bytes = encode(score, format).map_err(|reason| MidiError::Invalid { path: path.to_path_buf(), reason })?;
    std::fs::write(path, bytes).map_err(|source| MidiError::Write { path: path.to_path_buf(), source })
}

/// The bytes of `score` as a format 1 MIDI file.
pub fn to_bytes(score: &Score) -> Result<Vec<u8>, MidiError> {
    to_bytes_format(score, SmfFormat::Parallel)
}

/// The bytes of `score` as a MIDI file in the given format.
pub fn to_bytes_format(score: &Score, format: SmfFormat) -> Result<Vec<u8>, MidiError> {
    encode(score, format).map_err(|reason| MidiError::Invalid { path: PathBuf::from(MEMORY), reason })
}

// ---------------------------------------------------------------------------------------------
// The sidecar: what MIDI cannot say about a Score.

/// Manufacturer id 0x7D is reserved for non-commercial use; the tag tells our events apart.
const SIDECAR_TAG: &[u8] = b"\x7Dcadenza1";

#[derive(Serialize, Deserialize)]
struct Sidecar {
    voices: Vec<Voice>,
    meta: Meta,
}

impl Sidecar {
    /// Whether the sidecar says only what a score may hold: it comes from a file anyone may have
    /// edited, and a channel of 201 or a meter of 0/0 in it would be written out as given. A
    /// sidecar that is not sound is ignored and the file read from its MIDI events alone.
    fn is_sound(&self) -> bool {
        self.voices.len() <= crate::score::MAX_VOICES
            && self.voices.iter().all(|v| v.channel < 16 && v.program < 128)
            && self.meta.meters.iter().all(|(_, m)| m.is_writable())
            && self.meta.program.is_none_or(|p| p < 128)
    }
}

/// How a meter looks in a MIDI time signature (numerator, power-of-two denominator).
fn meter_midi(m: &Meter) -> (u8, u8) {
    let den = m.den.max(1).next_power_of_two();
    (m.num.clamp(1, 255) as u8, den.trailing_zeros() as u8)
}

/// How a key looks in a MIDI key signature (sharps/flats, minor flag).
fn key_midi(k: &Key) -> (i8, bool) {
    (k.fifths().clamp(-7, 7) as i8, k.mode.is_minor_like())
}

// ---------------------------------------------------------------------------------------------
// Reading.

/// Walks the chunk headers once, so a file cut short is an error (midly, not in strict mode,
/// would quietly read what is there). Returns the SMF bytes (unwrapped from RIFF RMID).
fn check_chunks(raw: &[u8]) -> Result<&[u8], Invalid> {
    let mut raw = raw;
    if raw.starts_with(b"RIFF") {
        // RMID: "RIFF" len "RMID" "data" len <smf>
        if raw.len() < 20 || &raw[8..12] != b"RMID" || &raw[12..16] != b"data" {
            return Err(Invalid::NotMidi(String::from_utf8_lossy(&raw[..raw.len().min(12)]).into_owned()));
        }
        let len = u32::from_be_bytes([raw[16], raw[17], raw[18], raw[19]]) as u64;
        // RIFF sizes are little-endian.
        let len_le = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]) as u64;
        let have = raw.len() as u64 - 20;
        let len = if len_le <= have { len_le } else { len };
        if len > have {
            return Err(Invalid::Truncated { what: "RIFF data chunk".into(), need: len, have });
        }
        raw = &raw[20..20 + len as usize];
    }
    if !raw.starts_with(b"MThd") {
        return Err(Invalid::NotMidi(String::from_utf8_lossy(&raw[..raw.len().min(4)]).into_owned()));
    }
    if raw.len() < 14 {
        return Err(Invalid::Truncated { what: "header chunk".into(), need: 14, have: raw.len() as u64 });
    }
    let header_len = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]) as u64;
    if header_len < 6 {
        return Err(Invalid::BadHeader(format!("length {header_len}, expected 6")));
    }
    let announced = u16::from_be_bytes([raw[10], raw[11]]);
    let mut pos = 8 + header_len;
    let mut found: u16 = 0;
    while found < announced {
        let left = raw.len() as u64 - pos.min(raw.len() as u64);
        if left == 0 {
            return Err(Invalid::MissingTracks { announced, found });
        }
        if left < 8 {
            return Err(Invalid::Truncated {
                what: format!("chunk header of track {}", found + 1),
                need: 8,
                have: left,
            });
        }
        let p = pos as usize;
        let is_track = &raw[p..p + 4] == b"MTrk";
        let len = u32::from_be_bytes([raw[p + 4], raw[p + 5], raw[p + 6], raw[p + 7]]) as u64;
        if len > left - 8 {
            let what = if is_track { format!("track {}", found + 1) } else { "a chunk".to_string() };
            return Err(Invalid::Truncated { what, need: len, have: left - 8 });
        }
        if is_track {
            found += 1;
        }
        pos += 8 + len;
    }
    refuse_frame_rate_128(raw)?;
    Ok(raw)
}

/// A timecode division of -128 frames per second makes midly 0.5 negate i8::MIN (a panic
/// where overflow is checked; found by fuzzing), in the file's header and in any further header
/// chunk midly reads among the tracks (it skips those, but parses them first). No frame rate is
/// -128: refuse it in every header chunk.
fn refuse_frame_rate_128(raw: &[u8]) -> Result<(), Invalid> {
    let mut pos = 0usize;
    while pos + 8 <= raw.len() {
        let len = u32::from_be_bytes([raw[pos + 4], raw[pos + 5], raw[pos + 6], raw[pos + 7]]) as usize;
        if &raw[pos..pos + 4] == b"MThd" && raw.get(pos + 12) == Some(&0x80) {
            return Err(Invalid::BadHeader(format!(
                "invalid SMPTE frame rate -128 in the division of the header chunk at byte {pos}"
            )));
        }
        pos = pos.saturating_add(8).saturating_add(len);
    }
    Ok(())
}

/// Converts file ticks to score ticks.
#[derive(Clone, Copy)]
enum Scale {
    Same,
    Mul(u64),
    Ratio(u64, u64),
}

impl Scale {
    fn new(num: u64, den: u64) -> Scale {
        let den = den.max(1);
        if num == den {
            Scale::Same
        } else if num.is_multiple_of(den) {
            Scale::Mul(num / den)
        } else {
            Scale::Ratio(num, den)
        }
    }

    #[inline(always)]
    fn apply(self, t: u64) -> Tick {
        match self {
            Scale::Same => t,
            Scale::Mul(m) => t * m,
            Scale::Ratio(n, d) => (t * n + d / 2) / d,
        }
    }
}

/// Marks a note whose program is not known until all tracks are read.
const PROGRAM_UNSET: u8 = 0xFF;

/// Per-track facts gathered in the single pass.
struct TrackInfo {
    notes: std::ops::Range<usize>,
    name: Option<String>,
    end: Tick,
    first_channel: Option<u8>,
    first_program: Option<u8>,
}

fn parse(bytes: &[u8]) -> Result<Score, Invalid> {
    let raw = check_chunks(bytes)?;
    let (header, tracks) = midly::parse(raw).map_err(|e| Invalid::BadHeader(e.to_string()))?;
    let (scale, timecode) = match header.timing {
        Timing::Metrical(tpq) => (Scale::new(PPQ as u64, tpq.as_int() as u64), false),
        // Ticks per second → 960 score ticks per second (120 bpm).
        Timing::Timecode(fps, sub) => (Scale::new(2 * PPQ as u64, fps.as_int() as u64 * sub.max(1) as u64), true),
    };
    if header.format == Format::Sequential {
        return Err(Invalid::Format2);
    }

    let mut notes: Vec<Note> = Vec::with_capacity(raw.len() / 6);
    let mut infos: Vec<TrackInfo> = Vec::new();
    let mut tempos: Vec<(Tick, u32)> = Vec::new();
    let mut meters: Vec<(Tick, Meter)> = Vec::new();
    let mut keys: Vec<(Tick, Key)> = Vec::new();
    let mut markers: Vec<(Tick, String)> = Vec::new();
    // Every program change: (tick, channel, program), for tracks that set none themselves.
    let mut programs: Vec<(Tick, u8, u8)> = Vec::new();
    let mut sidecar: Option<Sidecar> = None;
    let mut unset_programs = false;
    // Sounding notes: (channel << 7 | pitch, index into `notes`), oldest first.
    let mut pending: Vec<(u16, u32)> = Vec::with_capacity(32);

    for (track_no, track) in tracks.enumerate() {
        let mut events = track.map_err(|_| Invalid::Malformed { track: track_no + 1, offset: 0 })?;
        let total = events.unread().len();
        let first_note = notes.len();
        let mut abs: u64 = 0;
        let mut now: Tick = 0;
        let mut local_program = [PROGRAM_UNSET; 16];
        let mut info = TrackInfo { notes: 0..0, name: None, end: 0, first_channel: None, first_program: None };
        pending.clear();
        loop {
            let left = events.unread().len();
            let ev = match events.next() {
                Some(Ok(ev)) => ev,
                Some(Err(_)) => return Err(Invalid::Malformed { track: track_no + 1, offset: total - left }),
                None if left != 0 => return Err(Invalid::Malformed { track: track_no + 1, offset: total - left }),
                None => break,
            };
            let delta = ev.delta.as_int() as u64;
            if delta != 0 {
                abs += delta;
                now = scale.apply(abs);
            }
            match ev.kind {
                TrackEventKind::Midi { channel, message } => {
                    let ch = channel.as_int();
                    match message {
                        MidiMessage::NoteOn { key, vel } if vel.as_int() > 0 => {
                            let pitch = key.as_int();
                            let program = local_program[ch as usize];
                            unset_programs |= program == PROGRAM_UNSET;
                            pending.push(((ch as u16) << 7 | pitch as u16, notes.len() as u32));
                            notes.push(Note {
                                start: now,
                                dur: 0,
                                pitch,
                                velocity: vel.as_int(),
                                channel: ch,
                                voice: 0,
                                program,
                            });
                            info.first_channel.get_or_insert(ch);
                        }
                        MidiMessage::NoteOn { key, .. } | MidiMessage::NoteOff { key, .. } => {
                            let k = (ch as u16) << 7 | key.as_int() as u16;
                            if let Some(i) = pending.iter().position(|p| p.0 == k) {
                                let (_, idx) = pending.remove(i);
                                let n = &mut notes[idx as usize];
                                n.dur = now - n.start;
                            }
                        }
                        MidiMessage::ProgramChange { program } => {
                            let p = program.as_int();
                            local_program[ch as usize] = p;
                            programs.push((now, ch, p));
                            if info.first_program.is_none() {
                                info.first_program = Some(p);
                                info.first_channel.get_or_insert(ch);
                            }
                        }
                        _ => {}
                    }
                }
                TrackEventKind::Meta(meta) => match meta {
                    MetaMessage::EndOfTrack => break,
                    MetaMessage::Tempo(us) if !timecode && us.as_int() > 0 => tempos.push((now, us.as_int())),
                    // A time signature no score format can write (`1/32768`) is left out.
                    MetaMessage::TimeSignature(num, den_pow, _, _)
                        if den_pow < 16 && Meter::new(num as u32, 1 << den_pow).is_writable() =>
                    {
                        meters.push((now, Meter::new(num as u32, 1 << den_pow)))
                    }
                    MetaMessage::KeySignature(sf, minor) if (-7..=7).contains(&sf) => {
                        keys.push((now, Key::from_fifths(sf as i32, minor)))
                    }
                    MetaMessage::TrackName(name) if info.name.is_none() => {
                        info.name = Some(String::from_utf8_lossy(name).trim().to_string())
                    }
                    MetaMessage::Marker(text) => markers.push((now, String::from_utf8_lossy(text).trim().to_string())),
                    MetaMessage::SequencerSpecific(data) if data.starts_with(SIDECAR_TAG) => {
                        sidecar = serde_json::from_slice(&data[SIDECAR_TAG.len()..]).ok().filter(Sidecar::is_sound);
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        // Notes still sounding when the track ends last until its end.
        for &(_, idx) in &pending {
            let n = &mut notes[idx as usize];
            n.dur = now - n.start;
        }
        info.end = now;
        info.notes = first_note..notes.len();
        infos.push(info);
    }

    if unset_programs {
        resolve_programs(&mut notes, &mut programs);
    }

    let mut score = Score::new();
    let length = infos.iter().map(|t| t.end).max().unwrap_or(0);
    assign_voices(&mut score, &mut notes, &infos, header.format, sidecar.as_ref())?;
    score.notes = notes;
    build_meta(&mut score.meta, &infos, tempos, meters, keys, markers, sidecar);
    score.length = length;
    score.normalize();
    score.check_bounds().map_err(|e| Invalid::Bounds(e.to_string()))?;
    Ok(score)
}

/// Gives notes whose track never set their channel's program the channel's program from any
/// track at that time (MIDI's channel state), else 0.
fn resolve_programs(notes: &mut [Note], programs: &mut [(Tick, u8, u8)]) {
    programs.sort_by_key(|p| p.0);
    for n in notes.iter_mut().filter(|n| n.program == PROGRAM_UNSET) {
        n.program =
            programs.iter().take_while(|p| p.0 <= n.start).filter(|p| p.1 == n.channel).last().map_or(0, |p| p.2);
    }
}

fn assign_voices(
    score: &mut Score,
    notes: &mut [Note],
    infos: &[TrackInfo],
    format: Format,
    sidecar: Option<&Sidecar>,
) -> Result<(), Invalid> {
    if let Some(side) = sidecar.filter(|s| format == Format::Parallel && infos.len() > s.voices.len()) {
        // Our own file: track i + 1 holds voice i, including voices without notes.
        let extra = infos.len() - 1;
        if extra > 256 {
            return Err(Invalid::TooManyVoices(extra));
        }
        for (t, info) in infos.iter().enumerate().skip(1) {
            for n in &mut notes[info.notes.clone()] {
                n.voice = (t - 1) as u8;
            }
        }
        score.voices = side.voices.clone();
        return Ok(());
    }
    if format == Format::SingleTrack || infos.len() == 1 {
        // One voice per channel, in channel order.
        let mut used = [false; 16];
        for n in notes.iter() {
            used[n.channel as usize] = true;
        }
        let channels: Vec<u8> = (0..16u8).filter(|&c| used[c as usize]).collect();
        let single_name = infos.first().and_then(|t| t.name.clone()).filter(|n| !n.is_empty());
        let mut voice_of = [0u8; 16];
        for (v, &c) in channels.iter().enumerate() {
            voice_of[c as usize] = v as u8;
            let program = notes.iter().find(|n| n.channel == c).map_or(0, |n| n.program);
            let name = match (&single_name, channels.len()) {
                (Some(name), 1) => name.clone(),
                _ => (c + 1).to_string(),
            };
            score.voices.push(Voice { name, channel: c, program });
        }
        for n in notes.iter_mut() {
            n.voice = voice_of[n.channel as usize];
        }
        return Ok(());
    }
    let with_notes = infos.iter().filter(|t| !t.notes.is_empty()).count();
    if with_notes > 256 {
        return Err(Invalid::TooManyVoices(with_notes));
    }
    for (t, info) in infos.iter().enumerate().filter(|(_, t)| !t.notes.is_empty()) {
        let v = score.voices.len() as u8;
        let first = &notes[info.notes.start];
        let channel = info.first_channel.unwrap_or(first.channel);
        let program = info.first_program.unwrap_or(first.program);
        let name = info.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| (t + 1).to_string());
        score.voices.push(Voice { name, channel, program });
        for n in &mut notes[info.notes.clone()] {
            n.voice = v;
        }
    }
    Ok(())
}

fn build_meta(
    meta: &mut Meta,
    infos: &[TrackInfo],
    mut tempos: Vec<(Tick, u32)>,
    mut meters: Vec<(Tick, Meter)>,
    mut keys: Vec<(Tick, Key)>,
    mut markers: Vec<(Tick, String)>,
    sidecar: Option<Sidecar>,
) {
    // Several tracks may each carry meta events; stable sorts keep file order at one tick, and
    // the last event at a tick wins.
    tempos.sort_by_key(|t| t.0);
    meters.sort_by_key(|t| t.0);
    keys.sort_by_key(|t| t.0);
    markers.sort_by_key(|t| t.0);
    let mut tempo = TempoMap::default();
    for (tick, us) in tempos {
        tempo.set(tick, us);
    }
    dedup_changes(&mut meters);
    dedup_changes(&mut keys);
    let title = infos.first().and_then(|t| t.name.clone()).filter(|n| !n.is_empty());
    match sidecar {
        Some(side) => {
            *meta = side.meta;
            meta.tempo = tempo;
            let same_meters = side_agrees(&meta.meters, &meters, meter_midi);
            if !same_meters {
                meta.meters = meters;
            }
            if !side_agrees(&meta.keys, &keys, key_midi) {
                meta.keys = keys;
            }
            if meta.parts != markers {
                meta.parts = markers;
            }
            if meta.title != title {
                meta.title = title;
            }
        }
        None => {
            meta.tempo = tempo;
            meta.meters = meters;
            meta.keys = keys;
            meta.parts = markers;
            meta.title = title;
        }
    }
}

/// Keeps the last of several changes at one tick, and drops changes that repeat the previous.
fn dedup_changes<T: PartialEq>(v: &mut Vec<(Tick, T)>) {
    let mut out: Vec<(Tick, T)> = Vec::with_capacity(v.len());
    for (t, x) in v.drain(..) {
        match out.last_mut() {
            Some(last) if last.0 == t => last.1 = x,
            _ => out.push((t, x)),
        }
    }
    out.dedup_by(|b, a| a.1 == b.1);
    *v = out;
}

/// Does the sidecar's list say the same as the file's events, as far as MIDI can say it?
fn side_agrees<T, M: PartialEq>(side: &[(Tick, T)], events: &[(Tick, T)], midi: impl Fn(&T) -> M) -> bool {
    side.len() == events.len() && side.iter().zip(events).all(|(a, b)| a.0 == b.0 && midi(&a.1) == midi(&b.1))
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// One event before delta encoding: sorted by (tick, class, seq).
struct Pending<'a> {
    tick: Tick,
    class: u8,
    seq: u32,
    kind: TrackEventKind<'a>,
}

/// Event classes at one tick: meta first, then note-offs, then note-ons (in note order, a
/// program change and a zero-length note's off travelling with their note-on).
const CLASS_META: u8 = 0;
const CLASS_OFF: u8 = 1;
const CLASS_ON: u8 = 2;

fn midi(channel: u8, message: MidiMessage) -> TrackEventKind<'static> {
    TrackEventKind::Midi { channel: u4::new(channel.min(15)), message }
}

fn encode(score: &Score, format: SmfFormat) -> Result<Vec<u8>, Invalid> {
    // What is written must read back: the same bounds and ranges the reader holds files to.
    score.check_bounds().map_err(|e| Invalid::Bounds(e.to_string()))?;
    let mut notes: Vec<Note> = score.notes.clone();
    notes.sort_unstable();
    let length = score.length.max(notes.iter().map(Note::end).max().unwrap_or(0));

    let sidecar = Sidecar { voices: score.voices.clone(), meta: score.meta.clone() };
    let mut side_bytes = SIDECAR_TAG.to_vec();
    // Serializing plain data to a Vec cannot fail; an empty payload would just be ignored.
    side_bytes.extend(serde_json::to_vec(&sidecar).unwrap_or_default());
    let title = score.meta.title.as_deref().map(str::as_bytes);

    let mut conductor_events: Vec<Pending> = Vec::new();
    let mut seq = 0u32;
    macro_rules! push_meta {
        ($list:expr, $tick:expr, $kind:expr) => {{
            seq += 1;
            $list.push(Pending { tick: $tick, class: CLASS_META, seq, kind: $kind });
        }};
    }
    let mut track_events: Vec<Vec<Pending>> = Vec::new();
    if let Some(t) = title {
        push_meta!(conductor_events, 0, TrackEventKind::Meta(MetaMessage::TrackName(t)));
    }
    push_meta!(conductor_events, 0, TrackEventKind::Meta(MetaMessage::SequencerSpecific(&side_bytes)));
    for c in score.meta.tempo.changes() {
        let us = u24::new(c.micros_per_quarter.clamp(1, 0xFF_FFFF));
        push_meta!(conductor_events, c.tick, TrackEventKind::Meta(MetaMessage::Tempo(us)));
    }
    for (t, m) in &score.meta.meters {
        let (num, den) = meter_midi(m);
        push_meta!(conductor_events, *t, TrackEventKind::Meta(MetaMessage::TimeSignature(num, den, 24, 8)));
    }
    for (t, k) in &score.meta.keys {
        let (sf, minor) = key_midi(k);
        push_meta!(conductor_events, *t, TrackEventKind::Meta(MetaMessage::KeySignature(sf, minor)));
    }
    for (t, p) in &score.meta.parts {
        push_meta!(conductor_events, *t, TrackEventKind::Meta(MetaMessage::Marker(p.as_bytes())));
    }
    let conductor = conductor_events;

    let voice_count = score.voices.len().max(notes.iter().map(|n| n.voice as usize + 1).max().unwrap_or(0));
    let tracks_wanted = match format {
        SmfFormat::Parallel => voice_count,
        SmfFormat::Single => 1,
    };
    for v in 0..tracks_wanted {
        let mut events = Vec::new();
        if format == SmfFormat::Parallel {
            if let Some(voice) = score.voices.get(v) {
                events.push(Pending {
                    tick: 0,
                    class: CLASS_META,
                    seq: 0,
                    kind: TrackEventKind::Meta(MetaMessage::TrackName(voice.name.as_bytes())),
                });
            }
        }
        track_events.push(events);
    }
    // Program state per (track, channel); 0xFF = not set yet in this track.
    let mut state = vec![[PROGRAM_UNSET; 16]; tracks_wanted.max(1)];
    if format == SmfFormat::Parallel {
        for (v, voice) in score.voices.iter().enumerate() {
            let ch = voice.channel.min(15);
            track_events[v].push(Pending {
                tick: 0,
                class: CLASS_META,
                seq: 1,
                kind: midi(ch, MidiMessage::ProgramChange { program: u7::new(voice.program.min(127)) }),
            });
            state[v][ch as usize] = voice.program.min(127);
        }
    }
    let mut seq = 2u32;
    for n in &notes {
        let t = match format {
            SmfFormat::Parallel => n.voice as usize,
            SmfFormat::Single => 0,
        };
        if track_events.is_empty() {
            track_events.push(Vec::new());
        }
        let ch = n.channel.min(15);
        let program = n.program.min(127);
        let key = u7::new(n.pitch.min(127));
        let events = &mut track_events[t];
        if state[t][ch as usize] != program {
            state[t][ch as usize] = program;
            seq += 1;
            events.push(Pending {
                tick: n.start,
                class: CLASS_ON,
                seq,
                kind: midi(ch, MidiMessage::ProgramChange { program: u7::new(program) }),
            });
        }
        seq += 1;
        let vel = u7::new(n.velocity.clamp(1, 127));
        events.push(Pending { tick: n.start, class: CLASS_ON, seq, kind: midi(ch, MidiMessage::NoteOn { key, vel }) });
        seq += 1;
        let off = midi(ch, MidiMessage::NoteOff { key, vel: u7::new(0) });
        let class = if n.dur == 0 { CLASS_ON } else { CLASS_OFF };
        events.push(Pending { tick: n.end(), class, seq, kind: off });
    }

    let mut tracks: Vec<Vec<TrackEvent>> = Vec::new();
    match format {
        SmfFormat::Parallel => {
            tracks.push(finish(conductor, length)?);
            for events in track_events {
                tracks.push(finish(events, length)?);
            }
        }
        SmfFormat::Single => {
            let mut all = conductor;
            for events in track_events {
                all.extend(events);
            }
            tracks.push(finish(all, length)?);
        }
    }
    let format = if tracks.len() == 1 { Format::SingleTrack } else { Format::Parallel };
    let header = Header::new(format, Timing::Metrical(u15::new(PPQ as u16)));
    let mut out = Vec::with_capacity(64 + notes.len() * 8);
    midly::write_std(&header, tracks.iter(), &mut out)
        .map_err(|e| Invalid::BadHeader(format!("midly refused to write: {e}")))?;
    Ok(out)
}

/// Sorts a track's events, turns ticks into deltas and closes it with end-of-track at `length`.
fn finish(mut events: Vec<Pending<'_>>, length: Tick) -> Result<Vec<TrackEvent<'_>>, Invalid> {
    events.sort_by_key(|e| (e.tick, e.class, e.seq));
    let mut out = Vec::with_capacity(events.len() + 1);
    let mut last = 0;
    for e in events.into_iter().chain(std::iter::once(Pending {
        tick: length,
        class: u8::MAX,
        seq: u32::MAX,
        kind: TrackEventKind::Meta(MetaMessage::EndOfTrack),
    })) {
        let tick = e.tick.max(last);
        let delta = tick - last;
        if delta > u28::max_value().as_int() as u64 {
            return Err(Invalid::GapTooLong(delta));
        }
        out.push(TrackEvent { delta: u28::new(delta as u32), kind: e.kind });
        last = tick;
    }
    Ok(out)
}
