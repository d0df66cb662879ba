//! Live MIDI outputs: the `MidiOut` trait the real-time player sends through, a midir port, and a recorder for tests.

use std::fmt;

pub use crate::time::Nanos;

/// What can go wrong opening or writing a MIDI output.
#[derive(Debug, thiserror::Error)]
pub enum OutError {
    #[error("cannot start the MIDI system: {0}")]
    Init(String),
    #[error("no MIDI output matches `{wanted}`; available: {}", list_or_none(.available))]
    NoSuchPort { wanted: String, available: Vec<String> },
    #[error("`{wanted}` matches several MIDI outputs ({}); be more specific", .matches.join(", "))]
    Ambiguous { wanted: String, matches: Vec<String> },
    #[error("cannot connect to MIDI output `{port}`: {reason}")]
    Connect { port: String, reason: String },
    #[error("cannot open the virtual MIDI output `{name}`: {reason}")]
    Virtual { name: String, reason: String },
    /// Carries only static text: it is built on the real-time thread, which must not allocate.
    #[error("sending to a MIDI output failed: {0}")]
    Send(&'static str),
    #[error("the recorder is full ({capacity} messages); raise its capacity")]
    RecorderFull { capacity: usize },
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// A destination for MIDI bytes. The real-time player owns its outputs and calls `send` from its
/// thread, so implementations must not block for long, allocate or lock in `send`.
pub trait MidiOut: Send {
    /// A name for messages (the port name, or `recorder`).
    fn name(&self) -> &str;
    /// Sends one complete MIDI message. `now` is the engine clock when it is sent.
    fn send(&mut self, now: Nanos, bytes: &[u8]) -> Result<(), OutError>;
    /// Sends a message due at `due` (engine clock), handed over at `now`, at most
    /// [`MidiOut::lead`] early. An output that timestamps (JACK frames) plays it at `due`;
    /// the others play it now. Messages go out in the order they are handed over, whatever
    /// their due times, so a note-off sent after a note-on never overtakes it.
    fn send_at(&mut self, now: Nanos, due: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        let _ = due;
        self.send(now, bytes)
    }
    /// How long before its due time this output wants a message (0: at its due time). The
    /// player hands events over in time order across all its outputs, so in an engine whose
    /// outputs have different leads, an event for a leading output waits behind a pending one
    /// due earlier on another output: give every output of one engine the same lead.
    fn lead(&self) -> Nanos {
        0
    }
    /// For a connection to another program's port: the exact name to look for when it vanishes
    /// and to reconnect to when it returns. Virtual ports and recorders return `None`.
    fn reconnect_name(&self) -> Option<&str> {
        None
    }
}

/// One recorded message: when it was sent and its bytes (at most 3; longer messages are cut).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    pub at: Nanos,
    pub len: u8,
    pub bytes: [u8; 3],
}

impl Recorded {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl fmt::Display for Recorded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:>12} ", self.at)?;
        for b in self.bytes() {
            write!(f, " {b:02X}")?;
        }
        Ok(())
    }
}

/// An output that records what it is sent, with timestamps, for tests and benchmarks.
///
/// The recorder side writes into a lock-free ring (no allocation, no lock, safe on the real-time
/// thread); [`RecorderHandle`] reads it from any other thread.
pub struct Recorder {
    name: String,
    tx: rtrb::Producer<Recorded>,
    capacity: usize,
    /// Errors to inject: the next `fail_next` sends fail (tests of error paths).
    fail: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// The reading side of a [`Recorder`].
#[derive(Clone)]
pub struct RecorderHandle {
    rx: std::sync::Arc<std::sync::Mutex<(rtrb::Consumer<Recorded>, Vec<Recorded>)>>,
    fail: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Recorder {
    /// A recorder holding up to `capacity` messages not yet read by its handle.
    pub fn new(name: &str, capacity: usize) -> (Recorder, RecorderHandle) {
        let (tx, rx) = rtrb::RingBuffer::new(capacity.max(1));
        let fail = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rec = Recorder { name: name.to_string(), tx, capacity: capacity.max(1), fail: fail.clone() };
        (rec, RecorderHandle { rx: std::sync::Arc::new(std::sync::Mutex::new((rx, Vec::new()))), fail })
    }
}

impl MidiOut for Recorder {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, now: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        use std::sync::atomic::Ordering;
        if self.fail.load(Ordering::Relaxed) > 0 {
            self.fail.fetch_sub(1, Ordering::Relaxed);
            return Err(OutError::Send("injected failure"));
        }
        let mut b = [0u8; 3];
        let len = bytes.len().min(3);
        b[..len].copy_from_slice(&bytes[..len]);
        self.tx
            .push(Recorded { at: now, len: len as u8, bytes: b })
            .map_err(|_| OutError::RecorderFull { capacity: self.capacity })
    }
}

impl RecorderHandle {
    /// Everything recorded so far (reading moves it out of the ring into the handle).
    pub fn messages(&self) -> Vec<Recorded> {
        let mut g = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let (rx, seen) = &mut *g;
        while let Ok(m) = rx.pop() {
            seen.push(m);
        }
        seen.clone()
    }

    /// Just the bytes, in order.
    pub fn bytes(&self) -> Vec<Vec<u8>> {
        self.messages().iter().map(|m| m.bytes().to_vec()).collect()
    }

    /// Forgets what was read so far.
    pub fn clear(&self) {
        let mut g = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let (rx, seen) = &mut *g;
        while rx.pop().is_ok() {}
        seen.clear();
    }

    /// Makes the next `n` sends fail.
    pub fn fail_next(&self, n: usize) {
        self.fail.store(n, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Stops the ALSA library printing its own diagnostics to stderr (`ALSA lib seq_hw.c:466:
/// (snd_seq_hw_open) open /dev/snd/seq failed`), which would land in the middle of the REPL's
/// line; cadenza reports the failure itself, with the port and what to do. Call once at start.
pub fn silence_alsa_diagnostics() {
    #[cfg(all(target_os = "linux", not(feature = "jack")))]
    {
        use std::os::raw::{c_char, c_int};
        /// ALSA's handler is variadic; one that reads only the fixed arguments is safe to call
        /// variadically on the Linux ABIs (the extra arguments are simply not read).
        unsafe extern "C" fn ignore(
            _file: *const c_char,
            _line: c_int,
            _func: *const c_char,
            _err: c_int,
            _fmt: *const c_char,
        ) {
        }
        unsafe extern "C" {
            fn snd_lib_error_set_handler(
                handler: Option<unsafe extern "C" fn(*const c_char, c_int, *const c_char, c_int, *const c_char)>,
            ) -> c_int;
        }
        // SAFETY: sets a process-wide function pointer inside libasound (linked through midir);
        // `ignore` touches nothing.
        unsafe {
            snd_lib_error_set_handler(Some(ignore));
        }
    }
}

/// Names of the MIDI output ports the system offers now, in midir's order (index = position).
pub fn list_ports() -> Result<Vec<String>, OutError> {
    let out = midir::MidiOutput::new("cadenza-list").map_err(|e| OutError::Init(e.to_string()))?;
    Ok(out.ports().iter().filter_map(|p| out.port_name(p).ok()).collect())
}

/// Names of the MIDI input ports.
pub fn list_input_ports() -> Result<Vec<String>, OutError> {
    let inp = midir::MidiInput::new("cadenza-list").map_err(|e| OutError::Init(e.to_string()))?;
    Ok(inp.ports().iter().filter_map(|p| inp.port_name(p).ok()).collect())
}

/// Picks a port from `names` by `wanted`: an index (`"0"`), an exact name, or a case-insensitive
/// substring that matches exactly one name.
pub fn pick_port(names: &[String], wanted: &str) -> Result<usize, OutError> {
    let w = wanted.trim();
    if let Ok(i) = w.parse::<usize>() {
        if i < names.len() {
            return Ok(i);
        }
    }
    if let Some(i) = names.iter().position(|n| n == w) {
        return Ok(i);
    }
    let lw = w.to_lowercase();
    let hits: Vec<usize> = (0..names.len()).filter(|&i| names[i].to_lowercase().contains(&lw)).collect();
    match hits.len() {
        1 => Ok(hits[0]),
        0 => Err(OutError::NoSuchPort { wanted: w.to_string(), available: names.to_vec() }),
        _ => Err(OutError::Ambiguous {
            wanted: w.to_string(),
            matches: hits.iter().map(|&i| names[i].clone()).collect(),
        }),
    }
}

/// A midir output: a connection to another program's port, or our own virtual port.
pub struct MidirOut {
    name: String,
    /// Set for connections, so a vanished port can be found again by exact name.
    target: Option<String>,
    conn: midir::MidiOutputConnection,
}

/// Client name cadenza shows to the MIDI system.
pub const CLIENT_NAME: &str = "cadenza";

impl MidirOut {
    /// Connects to the port `wanted` (index, exact name or unique substring).
    pub fn connect(wanted: &str) -> Result<MidirOut, OutError> {
        let out = midir::MidiOutput::new(CLIENT_NAME).map_err(|e| OutError::Init(e.to_string()))?;
        let ports = out.ports();
        let names: Vec<String> = ports.iter().map(|p| out.port_name(p).unwrap_or_default()).collect();
        let i = pick_port(&names, wanted)?;
        let name = names[i].clone();
        let conn = out
            .connect(&ports[i], "cadenza-out")
            .map_err(|e| OutError::Connect { port: name.clone(), reason: e.to_string() })?;
        Ok(MidirOut { name: name.clone(), target: Some(name), conn })
    }

    /// Opens a virtual output port that synths and DAWs can connect to (ALSA and JACK only).
    #[cfg(unix)]
    pub fn virtual_port(name: &str) -> Result<MidirOut, OutError> {
        use midir::os::unix::VirtualOutput;
        let out = midir::MidiOutput::new(CLIENT_NAME).map_err(|e| OutError::Init(e.to_string()))?;
        let conn = out
            .create_virtual(name)
            .map_err(|e| OutError::Virtual { name: name.to_string(), reason: e.to_string() })?;
        Ok(MidirOut { name: name.to_string(), target: None, conn })
    }

    #[cfg(not(unix))]
    pub fn virtual_port(name: &str) -> Result<MidirOut, OutError> {
        Err(OutError::Virtual { name: name.to_string(), reason: "virtual ports need ALSA or JACK".into() })
    }
}

impl MidiOut for MidirOut {
    fn name(&self) -> &str {
        &self.name
    }

    fn send(&mut self, _now: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        // midir's errors hold static text; keep it so a failing send does not allocate either.
        self.conn.send(bytes).map_err(|e| match e {
            midir::SendError::InvalidData(m) | midir::SendError::Other(m) => OutError::Send(m),
        })
    }

    fn reconnect_name(&self) -> Option<&str> {
        self.target.as_deref()
    }
}

/// Connects to another program's MIDI input `wanted` (index, exact name or unique substring)
/// through the MIDI system this build plays on: with `--features jack`, cadenza's own JACK port,
/// which places every message at its frame ([`super::jack_out`]); else midir's.
pub fn connect_output(wanted: &str) -> Result<Box<dyn MidiOut>, OutError> {
    #[cfg(feature = "jack")]
    return Ok(Box::new(super::jack_out::JackOut::connect(wanted)?));
    #[cfg(not(feature = "jack"))]
    Ok(Box::new(MidirOut::connect(wanted)?))
}

/// Opens cadenza's own output port `name` for others to connect to (as [`connect_output`]).
pub fn virtual_output(name: &str) -> Result<Box<dyn MidiOut>, OutError> {
    #[cfg(feature = "jack")]
    return Ok(Box::new(super::jack_out::JackOut::open(name, None)?));
    #[cfg(not(feature = "jack"))]
    Ok(Box::new(MidirOut::virtual_port(name)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["Midi Through:Midi Through Port-0 14:0", "FLUID Synth (1234):Synth input port (1234:0) 128:0", "fluid other"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn picks_by_index_name_and_unique_substring() {
        let n = names();
        assert_eq!(pick_port(&n, "1").unwrap(), 1);
        assert_eq!(pick_port(&n, "through").unwrap(), 0);
        assert_eq!(pick_port(&n, "fluid other").unwrap(), 2);
        assert!(matches!(pick_port(&n, "fluid"), Err(OutError::Ambiguous { .. })));
        let e = pick_port(&n, "nope").unwrap_err();
        assert!(e.to_string().contains("Midi Through"), "{e}");
        assert!(matches!(pick_port(&[], "7"), Err(OutError::NoSuchPort { .. })));
    }

    #[test]
    fn recorder_keeps_order_and_times() {
        let (mut r, h) = Recorder::new("rec", 4);
        r.send(5, &[0x90, 60, 100]).unwrap();
        r.send(9, &[0xF8]).unwrap();
        let m = h.messages();
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].at, m[0].bytes()), (5, &[0x90u8, 60, 100][..]));
        assert_eq!((m[1].at, m[1].bytes()), (9, &[0xF8u8][..]));
        h.fail_next(1);
        assert!(r.send(10, &[0x80, 60, 0]).is_err());
        assert!(r.send(11, &[0x80, 60, 0]).is_ok());
        assert_eq!(h.bytes().len(), 3);
    }
}
