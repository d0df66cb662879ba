//! MIDI input: records what a musician plays into a Score (the prompt of call-and-response).

use crate::play::clock::Nanos;
use crate::play::event::msg;
use crate::play::ports::midi_in::{connect_input, virtual_input, InputConnection};
use crate::play::transport::PlayError;
use crate::score::{Note, Score};
use crate::time::{TempoMap, Tick, PPQ};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One received message: arrival time (nanoseconds, any origin) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub at: Nanos,
    pub bytes: Vec<u8>,
}

/// Turns received messages into a Score at `bpm`: note-ons paired with their note-offs per
/// channel and pitch, times measured from `origin` (or the first note-on), optionally snapped to
/// `grid` ticks. Notes still held at the end close at the last message.
pub fn to_score(events: &[Received], bpm: f64, origin: Option<Nanos>, grid: Option<Tick>) -> Score {
    let nanos_per_tick = 60e9 / bpm.max(1.0) / PPQ as f64;
    let first_on = events.iter().find(|e| msg::as_note_on(&e.bytes).is_some()).map(|e| e.at);
    let origin = origin.or(first_on).unwrap_or(0);
    let tick = |at: Nanos| -> Tick {
        let t = (at.saturating_sub(origin) as f64 / nanos_per_tick).round() as Tick;
        match grid {
            Some(g) if g > 0 => (t + g / 2) / g * g,
            _ => t,
        }
    };
    let mut open: HashMap<(u8, u8), (Tick, u8, u8)> = HashMap::new();
    let mut programs = [0u8; 16];
    let mut notes = Vec::new();
    let close = |notes: &mut Vec<Note>, (start, vel, program): (Tick, u8, u8), end: Tick, ch: u8, pitch: u8| {
        let dur = end.saturating_sub(start).max(grid.unwrap_or(1).max(1));
        notes.push(Note { start, dur, pitch, velocity: vel, channel: ch, voice: 0, program });
    };
    for e in events {
        let b = &e.bytes;
        if b.len() == 2 && b[0] & 0xF0 == 0xC0 {
            programs[(b[0] & 0x0F) as usize] = b[1] & 0x7F;
        } else if let Some((ch, pitch)) = msg::as_note_on(b) {
            let t = tick(e.at);
            // A re-struck pitch without a note-off ends the previous one.
            if let Some(o) = open.remove(&(ch, pitch)) {
                close(&mut notes, o, t, ch, pitch);
            }
            open.insert((ch, pitch), (t, b[2], programs[ch as usize]));
        } else if let Some((ch, pitch)) = msg::as_note_off(b) {
            if let Some(o) = open.remove(&(ch, pitch)) {
                close(&mut notes, o, tick(e.at), ch, pitch);
            }
        }
    }
    let end = events.last().map_or(0, |e| tick(e.at));
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(k, v)| (v.0, *k));
    for ((ch, pitch), o) in rest {
        close(&mut notes, o, end, ch, pitch);
    }
    let mut s = Score::new();
    s.notes = notes;
    s.meta.tempo = TempoMap::constant(bpm);
    s.normalize();
    s
}

/// Records a MIDI input port while open.
pub struct InputRecorder {
    /// None for a recorder fed by hand ([`InputRecorder::detached`]).
    _conn: Option<InputConnection>,
    name: String,
    buf: Arc<Mutex<Vec<Received>>>,
    /// Messages received since the recorder opened (a player's activity, for call and response).
    count: Arc<std::sync::atomic::AtomicU64>,
}

/// The feeding end of a detached recorder: what a test, a recorded stream or another program
/// plays into it.
#[derive(Clone)]
pub struct InputFeed {
    buf: Arc<Mutex<Vec<Received>>>,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl InputFeed {
    /// One message arriving at `at` nanoseconds.
    pub fn send(&self, at: Nanos, bytes: &[u8]) {
        push(&self.buf, &self.count, at / 1000, bytes);
    }
}

impl InputRecorder {
    /// Connects to input `port` (index, exact name or unique substring).
    pub fn open(port: &str) -> Result<InputRecorder, PlayError> {
        let (buf, count) = (Arc::new(Mutex::new(Vec::new())), Arc::default());
        let (b, c) = (buf.clone(), Arc::clone(&count));
        let (conn, name) = connect_input(port, "cadenza-in", Box::new(move |us, bytes| push(&b, &c, us, bytes)))?;
        Ok(InputRecorder { _conn: Some(conn), name, buf, count })
    }

    /// Opens a virtual input port other programs (a keyboard's driver, a DAW) can play into.
    pub fn virtual_port(name: &str) -> Result<InputRecorder, PlayError> {
        let (buf, count) = (Arc::new(Mutex::new(Vec::new())), Arc::default());
        let (b, c) = (buf.clone(), Arc::clone(&count));
        let conn = virtual_input(name, Box::new(move |us, bytes| push(&b, &c, us, bytes)))?;
        Ok(InputRecorder { _conn: Some(conn), name: name.to_string(), buf, count })
    }

    /// A recorder on no port, fed through the returned [`InputFeed`] (tests, recorded input).
    pub fn detached(name: &str) -> (InputRecorder, InputFeed) {
        let (buf, count) = (Arc::new(Mutex::new(Vec::new())), Arc::<std::sync::atomic::AtomicU64>::default());
        let feed = InputFeed { buf: buf.clone(), count: count.clone() };
        (InputRecorder { _conn: None, name: name.to_string(), buf, count }, feed)
    }

    /// Messages received since the recorder opened: when it stops changing, the player paused.
    pub fn activity(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether a note was played since the last [`InputRecorder::take`].
    pub fn has_notes(&self) -> bool {
        self.buf.lock().is_ok_and(|b| b.iter().any(|e| msg::as_note_on(&e.bytes).is_some()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.buf.lock().map(|b| b.clone()).unwrap_or_default()
    }

    /// What was played so far as a Score at `bpm` (snapped to `grid` ticks if given), and
    /// starts a new take.
    pub fn take(&self, bpm: f64, grid: Option<Tick>) -> Score {
        let events = match self.buf.lock() {
            Ok(mut b) => std::mem::take(&mut *b),
            Err(_) => Vec::new(),
        };
        to_score(&events, bpm, None, grid)
    }
}

fn push(buf: &Mutex<Vec<Received>>, count: &std::sync::atomic::AtomicU64, us: u64, bytes: &[u8]) {
    // Clock pulses and active sensing would swamp a take.
    if bytes.first().is_some_and(|b| *b >= 0xF8) {
        return;
    }
    if let Ok(mut b) = buf.lock() {
        // A player who never pauses must not fill memory: past the bound the older half goes
        // (at once, so keeping the bound costs nothing per message).
        if b.len() >= MAX_RECEIVED {
            b.drain(..MAX_RECEIVED / 2);
        }
        b.push(Received { at: us * 1000, bytes: bytes.to_vec() });
    }
    count.fetch_add(1, std::sync::atomic::Ordering::Release);
}

/// Most messages a recorder keeps between takes.
pub const MAX_RECEIVED: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::play::clock::MILLI;

    fn r(at_ms: u64, bytes: &[u8]) -> Received {
        Received { at: at_ms * MILLI, bytes: bytes.to_vec() }
    }

    #[test]
    fn pairs_notes_and_measures_from_the_first_note() {
        // At 120 bpm a quarter is 500 ms = 480 ticks.
        let ev = vec![
            r(1000, &[0xC0, 24]),
            r(1000, &[0x90, 60, 100]),
            r(1250, &[0x90, 64, 90]),
            r(1500, &[0x80, 60, 0]),
            r(1740, &[0x90, 64, 0]),
            r(1760, &[0x90, 67, 70]),
            r(2000, &[0xF8]),
        ];
        let s = to_score(&ev, 120.0, None, None);
        let got: Vec<(Tick, Tick, u8, u8, u8)> =
            s.notes.iter().map(|n| (n.start, n.dur, n.pitch, n.velocity, n.program)).collect();
        assert_eq!(got, vec![(0, 480, 60, 100, 24), (240, 470, 64, 90, 24), (730, 230, 67, 70, 24)]);
        let q = to_score(&ev, 120.0, None, Some(120));
        let got: Vec<(Tick, Tick)> = q.notes.iter().map(|n| (n.start, n.dur)).collect();
        assert_eq!(got, vec![(0, 480), (240, 480), (720, 240)]);
        assert_eq!(q.meta.tempo.bpm_at(0), 120.0);
    }

    #[test]
    fn nothing_played_is_an_empty_score() {
        assert!(to_score(&[], 100.0, None, None).notes.is_empty());
    }
}
