//! With `--features jack`: cadenza's own JACK MIDI output, which writes each message at the frame its due time falls on.
//!
//! midir's JACK backend writes every message at frame 0 of the period after it was sent
//! (`jack_midi_event_reserve(buf, 0, …)` in its process callback), so a message arrives up to
//! one period late (21 ms at 1,024 frames and 48 kHz) on top of the player thread's own
//! wake-up lateness, and how late depends on where in the period the player woke. Here the
//! player hands each message over [`JackOut::lead`] before it is due, with its due time; the
//! process callback maps due times onto JACK's clock (`jack_get_cycle_times`) and writes each
//! message at its frame. The player's wake-up no longer reaches the output: only a message
//! handed over after its period began is late, and by how much is counted ([`JackStats`]).
//!
//! Messages leave in the order they were handed over (a FIFO ring; frames never go back within
//! a period), so a note-off the player sends at once after a note-on it handed over early
//! still follows it: the ledger's promise (no hanging notes) holds.

use super::out::{MidiOut, OutError};
use crate::time::Nanos;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Messages waiting for their period: 4,096 is 200 ms of a dense 16-voice texture.
pub const QUEUE: usize = 4096;

/// Hand-over margin beyond one period: the player's worst wake-up lateness without real-time
/// scheduling (4.2 ms in the jitter bench) with room to spare.
pub const MARGIN: Nanos = 8_000_000;

/// One message and when it is due, on JACK's clock (µs).
#[derive(Debug, Clone, Copy)]
struct Timed {
    due_us: u64,
    len: u8,
    bytes: [u8; 3],
}

/// What the process callback did, for reports and the jitter bench.
#[derive(Debug, Default)]
pub struct JackStats {
    /// Messages written into a period.
    pub written: AtomicU64,
    /// Messages JACK refused (its port buffer full).
    pub lost: AtomicU64,
    /// Messages written after their due time (handed over too late for their period), and
    /// the worst of them, in µs.
    pub late: AtomicU64,
    pub max_late_us: AtomicU64,
}

/// The frame of a period of `n` frames spanning `[start_us, next_us)` that time `due_us` falls
/// on: 0 for a time before the period (late), `n - 1` at most, never before `not_before`.
pub fn frame_for(due_us: u64, start_us: u64, next_us: u64, n: u32, not_before: u32) -> u32 {
    let span = next_us.saturating_sub(start_us).max(1);
    let f = if due_us <= start_us { 0 } else { ((due_us - start_us) as u128 * n as u128 / span as u128) as u64 };
    (f.min(n.saturating_sub(1) as u64) as u32).max(not_before).min(n.saturating_sub(1))
}

/// This period's start and the next one's on JACK's clock (µs), the next always after the
/// start. Without usable cycle times (a server lacking them, or one that reported the next
/// period's start before this one's, seen on the dummy backend), now and one period later.
pub(crate) fn period_us(client: &jack::Client, ps: &jack::ProcessScope) -> (u64, u64) {
    match ps.cycle_times() {
        Ok(t) if t.next_usecs > t.current_usecs => (t.current_usecs, t.next_usecs),
        _ => {
            let now = client.time();
            let period = ps.n_frames() as u64 * 1_000_000 / client.sample_rate().max(1) as u64;
            (now, now + period.max(1))
        }
    }
}

/// The time of `frame` in a period of `n` frames spanning `[start_us, next_us)`, in µs.
pub(crate) fn frame_us(start_us: u64, next_us: u64, n: u32, frame: u32) -> u64 {
    start_us + next_us.saturating_sub(start_us) * frame as u64 / n.max(1) as u64
}

/// Hands each message that arrived on `port` this period to `f`, dated at its frame on JACK's
/// clock (µs). For process callbacks: no allocation, no lock.
pub(crate) fn read_dated(
    port: &jack::Port<jack::MidiIn>,
    client: &jack::Client,
    ps: &jack::ProcessScope,
    mut f: impl FnMut(u64, &[u8]),
) {
    let (start, next) = period_us(client, ps);
    for m in port.iter(ps) {
        f(frame_us(start, next, ps.n_frames(), m.time), m.bytes);
    }
}

/// The real-time side: runs in JACK's process thread; never allocates or locks.
struct Writer {
    port: jack::Port<jack::MidiOut>,
    rx: rtrb::Consumer<Timed>,
    stats: Arc<JackStats>,
}

impl jack::ProcessHandler for Writer {
    fn process(&mut self, client: &jack::Client, ps: &jack::ProcessScope) -> jack::Control {
        let n = ps.n_frames();
        let mut writer = self.port.writer(ps);
        let (start, next) = period_us(client, ps);
        let mut last = 0;
        while let Ok(m) = self.rx.peek() {
            if m.due_us >= next {
                break;
            }
            let m = *m;
            let frame = frame_for(m.due_us, start, next, n, last);
            last = frame;
            let bytes = &m.bytes[..m.len as usize];
            match writer.write(&jack::RawMidi { time: frame, bytes }) {
                Ok(()) => self.stats.written.fetch_add(1, Ordering::Relaxed),
                Err(_) => self.stats.lost.fetch_add(1, Ordering::Relaxed),
            };
            let placed = frame_us(start, next, n, frame);
            if placed > m.due_us {
                self.stats.late.fetch_add(1, Ordering::Relaxed);
                self.stats.max_late_us.fetch_max(placed - m.due_us, Ordering::Relaxed);
            }
            let _ = self.rx.pop();
        }
        jack::Control::Continue
    }
}

/// A JACK MIDI output port of cadenza's own client, optionally connected to another program's
/// input port.
pub struct JackOut {
    name: String,
    target: Option<String>,
    tx: rtrb::Producer<Timed>,
    lead: Nanos,
    stats: Arc<JackStats>,
    /// Kept alive: dropping it deactivates the client and closes the port (done off the
    /// real-time thread: the player hands outputs back to be dropped elsewhere).
    client: jack::AsyncClient<(), Writer>,
}

fn init_error(e: jack::Error) -> OutError {
    OutError::Init(format!("JACK: {e} (is a JACK server running?)"))
}

impl JackOut {
    /// Opens cadenza's port `port_name` (the client is named `cadenza`, or `cadenza-N` when that
    /// is taken) and connects it to `target`: an index, an exact JACK port name or a unique
    /// substring, among the MIDI input ports; `None` leaves it for others to connect.
    pub fn open(port_name: &str, target: Option<&str>) -> Result<JackOut, OutError> {
        let (client, _) =
            jack::Client::new(super::out::CLIENT_NAME, jack::ClientOptions::NO_START_SERVER).map_err(init_error)?;
        let port = client
            .register_port(port_name, jack::MidiOut::default())
            .map_err(|e| OutError::Virtual { name: port_name.to_string(), reason: e.to_string() })?;
        let own = port.name().map_err(|e| OutError::Virtual { name: port_name.to_string(), reason: e.to_string() })?;
        let target = match target {
            Some(wanted) => {
                let names = client.ports(None, Some("midi"), jack::PortFlags::IS_INPUT);
                Some(names[super::out::pick_port(&names, wanted)?].clone())
            }
            None => None,
        };
        let period_us = 1_000_000 * client.buffer_size() as u64 / client.sample_rate().max(1) as u64;
        let (tx, rx) = rtrb::RingBuffer::new(QUEUE);
        let stats = Arc::new(JackStats::default());
        let writer = Writer { port, rx, stats: stats.clone() };
        let active = client.activate_async((), writer).map_err(init_error)?;
        if let Some(t) = &target {
            active
                .as_client()
                .connect_ports_by_name(&own, t)
                .map_err(|e| OutError::Connect { port: t.clone(), reason: e.to_string() })?;
        }
        Ok(JackOut {
            name: target.clone().unwrap_or(own),
            target,
            tx,
            lead: period_us * 1000 + MARGIN,
            stats,
            client: active,
        })
    }

    /// Connects to the MIDI input port `wanted` (as [`super::out::MidirOut::connect`] does).
    pub fn connect(wanted: &str) -> Result<JackOut, OutError> {
        JackOut::open("cadenza-out", Some(wanted))
    }

    /// What the process callback has done so far.
    pub fn stats(&self) -> Arc<JackStats> {
        self.stats.clone()
    }

    /// JACK's clock now, in µs (what due times are mapped onto).
    pub fn now_us(&self) -> u64 {
        self.client.as_client().time()
    }
}

impl MidiOut for JackOut {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, now: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        self.send_at(now, now, bytes)
    }

    fn send_at(&mut self, now: Nanos, due: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        // The engine clock and JACK's differ by an offset: measure it now, at the hand-over.
        let due_us = self.now_us() + due.saturating_sub(now) / 1000;
        let mut b = [0u8; 3];
        let len = bytes.len().min(3);
        b[..len].copy_from_slice(&bytes[..len]);
        self.tx
            .push(Timed { due_us, len: len as u8, bytes: b })
            .map_err(|_| OutError::Send("the JACK output queue is full"))
    }

    fn lead(&self) -> Nanos {
        self.lead
    }

    fn reconnect_name(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

/// A message a [`JackCapture`] received: when (JACK's clock, µs: its period's start plus its
/// frame) and its bytes (up to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    pub at_us: u64,
    pub len: u8,
    pub bytes: [u8; 3],
}

impl Captured {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

struct Listener {
    port: jack::Port<jack::MidiIn>,
    tx: rtrb::Producer<Captured>,
    dropped: Arc<AtomicU64>,
}

impl jack::ProcessHandler for Listener {
    fn process(&mut self, client: &jack::Client, ps: &jack::ProcessScope) -> jack::Control {
        let (tx, dropped) = (&mut self.tx, &self.dropped);
        read_dated(&self.port, client, ps, |at_us, msg| {
            let mut bytes = [0u8; 3];
            let len = msg.len().min(3);
            bytes[..len].copy_from_slice(&msg[..len]);
            if tx.push(Captured { at_us, len: len as u8, bytes }).is_err() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
        jack::Control::Continue
    }
}

/// A JACK MIDI input that timestamps each message at its frame on JACK's clock: what a synth
/// on the same server hears, and when. For tests and the jitter bench.
pub struct JackCapture {
    name: String,
    rx: rtrb::Consumer<Captured>,
    dropped: Arc<AtomicU64>,
    _client: jack::AsyncClient<(), Listener>,
}

impl JackCapture {
    /// Opens the input port `port_name` on a client of its own, holding up to `capacity`
    /// messages not yet taken.
    pub fn open(port_name: &str, capacity: usize) -> Result<JackCapture, OutError> {
        let (client, _) =
            jack::Client::new("cadenza-capture", jack::ClientOptions::NO_START_SERVER).map_err(init_error)?;
        let port = client
            .register_port(port_name, jack::MidiIn::default())
            .map_err(|e| OutError::Virtual { name: port_name.to_string(), reason: e.to_string() })?;
        let name = port.name().map_err(|e| OutError::Virtual { name: port_name.to_string(), reason: e.to_string() })?;
        let (tx, rx) = rtrb::RingBuffer::new(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let active = client.activate_async((), Listener { port, tx, dropped: dropped.clone() }).map_err(init_error)?;
        Ok(JackCapture { name, rx, dropped, _client: active })
    }

    /// The port's full JACK name (`client:port`), to connect an output to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything received since the last call, in order.
    pub fn take(&mut self) -> Vec<Captured> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.pop() {
            out.push(m);
        }
        out
    }

    /// Messages lost because the capture ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::frame_for;

    #[test]
    fn due_times_map_to_their_frame_in_order() {
        // A 1,024-frame period from 1,000,000 µs to 1,021,333 µs.
        let (s, e) = (1_000_000, 1_021_333);
        assert_eq!(frame_for(s, s, e, 1024, 0), 0);
        assert_eq!(frame_for(s - 5_000, s, e, 1024, 0), 0, "late: at once");
        assert_eq!(frame_for(s + 10_666, s, e, 1024, 0), 511);
        assert_eq!(frame_for(e - 1, s, e, 1024, 0), 1023);
        assert_eq!(frame_for(e + 50, s, e, 1024, 0), 1023, "never past the period");
        assert_eq!(frame_for(s + 100, s, e, 1024, 700), 700, "never before the last message written");
        assert_eq!(frame_for(s, s, s, 0, 0), 0, "an empty period does not divide by zero");
    }
}
