//! With `--features jack`: when MIDI reaches another JACK client against when it was due, for
//! midir's JACK output (every message at frame 0 of the next period) and cadenza's own
//! ([`cadenza::sink::jack_out::JackOut`]: each message at its frame, handed over early).
//!
//! Run: `cargo bench --features jack --bench jack_jitter` (starts `jackd -d dummy -r 48000 -p
//! 1024` when no server answers; `CADENZA_JITTER_EVENTS`, default 12000, events per run). Four
//! loops of 16th-note chords at 180 bpm on one port, with the load of `play_jitter` (candle
//! matrix products and a busy thread) on the same cores; each output with the player in
//! real-time scheduling (when granted) and without. Lateness = the time the receiving client
//! sees the message (its period's start plus its frame, on JACK's clock) minus its due time
//! (mapped onto JACK's clock when the player hands it over). Goal from the issue: p99 < 1 ms,
//! max < 3 ms without privileges.

#[path = "common/load.rs"]
mod load;

use cadenza::play::clock::Nanos;
use cadenza::play::{At, LoopSource, PlayOpts, Transport, TransportConfig};
use cadenza::sink::jack_out::{Captured, JackCapture, JackOut};
use cadenza::sink::out::{MidiOut, MidirOut, OutError};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records each message's due time on JACK's clock and its bytes, then passes it on.
struct DueTap {
    inner: Box<dyn MidiOut>,
    tx: rtrb::Producer<(i64, [u8; 3])>,
}

impl MidiOut for DueTap {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn send(&mut self, now: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        self.send_at(now, now, bytes)
    }
    fn send_at(&mut self, now: Nanos, due: Nanos, bytes: &[u8]) -> Result<(), OutError> {
        // Deprecated only for needing a client in the process; the capture's is there.
        #[allow(deprecated)]
        let due_us = jack::get_time() as i64 + (due as i64 - now as i64) / 1000;
        let mut b = [0u8; 3];
        b[..bytes.len().min(3)].copy_from_slice(&bytes[..bytes.len().min(3)]);
        let _ = self.tx.push((due_us, b));
        self.inner.send_at(now, due, bytes)
    }
    fn lead(&self) -> Nanos {
        self.inner.lead()
    }
}

// The server outlives this bench on purpose (other runs reuse it); it is never waited on.
#[allow(clippy::zombie_processes)]
fn ensure_jackd() {
    let up =
        || Command::new("jack_lsp").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if up() {
        return;
    }
    Command::new("jackd")
        .args(["-d", "dummy", "-r", "48000", "-p", "1024"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("jackd is installed (apt-get install jackd2)");
    let t = Instant::now();
    while !up() {
        assert!(t.elapsed() < Duration::from_secs(20), "jackd did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[i64], q: f64) -> i64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn run(own: bool, realtime: bool, events: usize) {
    let mut capture = JackCapture::open(&format!("jitter-in-{own}-{realtime}"), 1 << 18).expect("capture port");
    let target = capture.name().to_string();
    let inner: Box<dyn MidiOut> = if own {
        Box::new(JackOut::connect(&target).expect("cadenza's JACK output"))
    } else {
        Box::new(MidirOut::connect(&target).expect("midir's JACK output"))
    };
    let (tx, mut dues) = rtrb::RingBuffer::new(1 << 18);
    let tap = DueTap { inner, tx };
    let e = Transport::start(vec![Box::new(tap)], TransportConfig { realtime, ..TransportConfig::default() })
        .expect("engine");
    e.set_tempo(180.0, At::Now).expect("tempo");
    for i in 0..4u8 {
        let groove = load::groove(i, 40 + 8 * i);
        e.set_loop(&format!("l{i}"), LoopSource::Fixed(groove), PlayOpts { port: 0, at: At::NextBar }).expect("loop");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load::load(stop.clone());
    let (mut sent, mut got): (Vec<(i64, [u8; 3])>, Vec<Captured>) = (Vec::new(), Vec::new());
    let t = Instant::now();
    while got.len() < events + 2000 && t.elapsed() < Duration::from_secs(600) {
        std::thread::sleep(Duration::from_millis(200));
        got.extend(capture.take());
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    e.shutdown();
    std::thread::sleep(Duration::from_millis(300));
    got.extend(capture.take());
    while let Ok(d) = dues.pop() {
        sent.push(d);
    }
    // Messages arrive in the order they were handed over; skip the first 2,000 (settling).
    let n = sent.len().min(got.len());
    let mismatched = (0..n).filter(|&i| got[i].bytes() != &sent[i].1[..got[i].len as usize]).count();
    let mut late: Vec<i64> = (2000.min(n)..n).map(|i| got[i].at_us as i64 - sent[i].0).collect();
    late.sort_unstable();
    if late.is_empty() {
        println!("jack_jitter own={own} realtime={realtime}: nothing arrived");
        return;
    }
    let over_1ms = late.iter().filter(|&&l| l > 1000).count();
    let (p50, p99, max, min) = (percentile(&late, 0.5), percentile(&late, 0.99), late[late.len() - 1], late[0]);
    println!(
        "jack_jitter output={} realtime={realtime}: {} events compared ({} out of order or lost), \
         late median {p50} µs, p99 {p99} µs, max {max} µs, earliest {min} µs; >1 ms: {over_1ms} \
         [goal p99 < 1000 µs, max < 3000 µs: {}]",
        if own { "cadenza-jack" } else { "midir-jack" },
        late.len(),
        mismatched + capture.dropped() as usize,
        if p99 < 1000 && max < 3000 { "met" } else { "missed" }
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let events = std::env::var("CADENZA_JITTER_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(12_000);
    ensure_jackd();
    for realtime in [true, false] {
        run(false, realtime, events);
        run(true, realtime, events);
    }
}
