//! Integration tests: play. The threaded engine on the real clock with a recorder (order and
//! content, never wall-clock time), and with `--features jack` the real MIDI system: JACK's dummy
//! backend, a score played into a JACK input port, a stop, and SIGTERM to a playing process.

use cadenza::play::event::msg;
use cadenza::play::{At, LoopSource, PlayOpts, Transport, TransportConfig};
use cadenza::score::{Note, Score};
use cadenza::sink::out::{Recorded, Recorder};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

fn tune() -> Score {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/play/speed_the_plough.abc");
    let text = std::fs::read_to_string(&p).expect("test tune");
    cadenza::dsl::parse(&text).expect("the test tune parses")
}

/// The note messages a score must produce, in order: at each tick, note-offs before note-ons.
fn expected_notes(s: &Score) -> Vec<Vec<u8>> {
    let mut ev: Vec<(u64, u8, u8, u8)> = Vec::new();
    for n in &s.notes {
        ev.push((n.start, 1, n.pitch, n.velocity));
        ev.push((n.end(), 0, n.pitch, 0));
    }
    ev.sort_by_key(|e| (e.0, e.1));
    ev.into_iter()
        .map(|(_, on, p, v)| if on == 1 { msg::note_on(0, p, v).to_vec() } else { msg::note_off(0, p).to_vec() })
        .collect()
}

fn notes_only(b: &[Vec<u8>]) -> Vec<Vec<u8>> {
    b.iter().filter(|b| msg::as_note_on(b).is_some() || msg::as_note_off(b).is_some()).cloned().collect()
}

/// Every note-on has a later note-off (or a CC 123 on its channel) and nothing sounds at the end.
fn assert_balanced(b: &[Vec<u8>]) {
    let mut sounding: HashMap<(u8, u8), usize> = HashMap::new();
    for m in b {
        if let Some(k) = msg::as_note_on(m) {
            *sounding.entry(k).or_default() += 1;
        } else if let Some(k) = msg::as_note_off(m) {
            sounding.remove(&k);
        } else if m.len() == 3 && m[0] & 0xF0 == 0xB0 && m[1] == 123 {
            sounding.retain(|(ch, _), _| *ch != m[0] & 0x0F);
        }
    }
    assert!(sounding.is_empty(), "left sounding: {sounding:?}");
}

fn fast() -> TransportConfig {
    TransportConfig { program_changes: false, lookahead: 20_000_000, ..TransportConfig::default() }
}

#[test]
fn a_tune_plays_in_order_on_the_real_clock() {
    let (rec, h) = Recorder::new("rec", 1 << 14);
    let e = Transport::start(vec![Box::new(rec)], fast()).unwrap();
    e.set_tempo(1000.0, At::Now).unwrap();
    let s = tune();
    e.play_with(&s, PlayOpts { port: 0, at: At::Now }).unwrap();
    assert!(e.wait_idle(&AtomicBool::new(false), false));
    e.shutdown();
    let m: Vec<Recorded> = h.messages();
    assert!(m.windows(2).all(|w| w[0].at <= w[1].at), "sent in time order");
    let b: Vec<Vec<u8>> = m.iter().map(|r| r.bytes().to_vec()).collect();
    assert_eq!(notes_only(&b), expected_notes(&s));
    assert_eq!(b.last(), Some(&msg::control(0, 123, 0).to_vec()), "shutdown ends with CC 123 on the used channel");
    assert_eq!(e.jitter().count, (s.notes.len() * 2) as u64);
}

/// Regression: `cadenza -e 'loop(...)' --for 3` exited at once because the engine looked idle
/// while the loop command was still in the sequencer's channel.
#[test]
fn a_command_in_flight_is_not_silence() {
    for _ in 0..50 {
        let (rec, _h) = Recorder::new("rec", 1 << 10);
        let e = Transport::start(vec![Box::new(rec)], fast()).unwrap();
        let mut s = Score::new();
        s.notes = vec![Note::new(0, 240, 60)];
        s.length = 480;
        e.set_loop("a", LoopSource::Fixed(s.clone()), PlayOpts { port: 0, at: At::NextBar }).unwrap();
        assert!(!e.is_idle(true), "a loop just set counts as playing");
        e.play_with(&s, PlayOpts { port: 0, at: At::NextBar }).unwrap();
        assert!(!e.is_idle(false), "a score just played counts as playing");
        e.shutdown();
    }
}

#[test]
fn loops_stop_cleanly_on_the_real_clock() {
    let (rec, h) = Recorder::new("rec", 1 << 14);
    let e = Transport::start(vec![Box::new(rec)], fast()).unwrap();
    e.set_tempo(1000.0, At::Now).unwrap();
    let mut s = Score::new();
    s.notes = vec![Note::new(0, 700, 48), Note::new(240, 240, 60), Note::new(480, 480, 64)];
    s.length = 960;
    e.set_loop("a", LoopSource::Fixed(s.clone()), PlayOpts { port: 0, at: At::Now }).unwrap();
    let mut drums = s;
    for n in &mut drums.notes {
        n.channel = 9;
    }
    e.set_loop("b", LoopSource::Fixed(drums), PlayOpts { port: 0, at: At::Now }).unwrap();
    // Let both loop a few times (each cycle is 120 ms at 1000 bpm), then stop one at its bar and
    // wait for the other to be stopped at once.
    while h.bytes().iter().filter(|b| msg::as_note_on(b).is_some()).count() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    e.stop_loop("a", At::NextBar).unwrap();
    e.stop_loop("b", At::Now).unwrap();
    assert!(e.wait_idle(&AtomicBool::new(false), true));
    assert!(e.loops().is_empty());
    let b = h.bytes();
    assert_balanced(&b);
    e.shutdown();
}

#[test]
fn a_silencer_turns_everything_off_from_another_thread() {
    let (rec, h) = Recorder::new("rec", 1 << 14);
    let e = Transport::start(vec![Box::new(rec)], fast()).unwrap();
    let mut s = Score::new();
    s.notes = vec![Note::new(0, 100_000, 50), Note::new(0, 100_000, 57)];
    s.length = 100_000;
    e.play_with(&s, PlayOpts { port: 0, at: At::Now }).unwrap();
    while notes_only(&h.bytes()).len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let sil = e.silencer();
    assert!(std::thread::spawn(move || sil.silence(std::time::Duration::from_secs(5))).join().unwrap());
    let b = h.bytes();
    assert_balanced(&b);
    assert!(b.contains(&msg::control(0, 123, 0).to_vec()));
    assert!(e.wait_idle(&AtomicBool::new(false), true), "the silencer also stops what was scheduled");
}

/// The child of `a_panic_anywhere_turns_every_note_off`: installs the panic hook, holds notes,
/// panics on another thread, then prints what its recorder got, one message per line in hex.
#[test]
#[ignore]
fn panic_hook_child() {
    if std::env::var("CADENZA_PANIC_CHILD").is_err() {
        return;
    }
    let (rec, h) = Recorder::new("rec", 1 << 14);
    let e = Transport::start(vec![Box::new(rec)], fast()).unwrap();
    e.install_panic_hook();
    let mut s = Score::new();
    s.notes = vec![Note::new(0, 100_000, 50), Note { channel: 4, ..Note::new(0, 100_000, 62) }];
    s.length = 100_000;
    e.set_loop("held", LoopSource::Fixed(s), PlayOpts { port: 0, at: At::Now }).unwrap();
    while notes_only(&h.bytes()).len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = std::thread::spawn(|| panic!("a loop body went wrong")).join();
    for b in h.bytes() {
        println!("MSG {}", b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" "));
    }
}

#[test]
fn a_panic_anywhere_turns_every_note_off() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["play::panic_hook_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CADENZA_PANIC_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let b: Vec<Vec<u8>> = text
        .lines()
        // The test harness prints its own text before the first line; find the marker anywhere.
        .filter_map(|l| l.find("MSG ").map(|i| &l[i + 4..]))
        .map(|l| l.split(' ').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect())
        .collect();
    assert_eq!(notes_only(&b).iter().filter(|m| msg::as_note_on(m).is_some()).count(), 2, "{text}");
    assert_balanced(&b);
    assert!(b.contains(&msg::note_off(0, 50).to_vec()) && b.contains(&msg::note_off(4, 62).to_vec()), "{text}");
    assert!(b.contains(&msg::control(4, 123, 0).to_vec()));
}

/// The real MIDI system: JACK's dummy backend (no sound card). Needs `jackd2`, `jack-tools`,
/// `libjack-jackd2-dev` and `cargo test --features jack`.
#[cfg(feature = "jack")]
mod jack {
    use super::*;
    use cadenza::play::clock::MILLI;
    use cadenza::play::input::InputRecorder;
    use cadenza::sink::jack_out::{JackCapture, JackOut};
    use cadenza::sink::out::{connect_output, virtual_output, MidiOut};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    /// Starts `jackd -d dummy` unless a JACK server answers already. The server is left running
    /// for the other tests of this run; its PID goes to `target/tmp/cadenza-jackd.pid`, so that
    /// `.ci/run` stops that server and never one the user was running.
    // The server outlives each test on purpose (the others reuse it; `.ci/run` stops it by its
    // PID): it is never waited on.
    #[allow(clippy::zombie_processes)]
    fn ensure_jackd() {
        let up =
            || Command::new("jack_lsp").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if up() {
            return;
        }
        let jackd = Command::new("jackd")
            // Real-time scheduling when allowed (root in CI) and long periods: on a loaded
            // 2-core machine short non-real-time cycles overrun and JACK drops their MIDI.
            .args(["-d", "dummy", "-r", "48000", "-p", "1024"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("jackd is installed (apt-get install jackd2)");
        let pidfile = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cadenza-jackd.pid");
        let _ = std::fs::write(pidfile, jackd.id().to_string());
        let t = Instant::now();
        while !up() {
            assert!(t.elapsed() < Duration::from_secs(20), "jackd did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(rec: &InputRecorder, pred: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        let t = Instant::now();
        loop {
            let b: Vec<Vec<u8>> = rec.received().into_iter().map(|r| r.bytes).collect();
            if pred(&b) || t.elapsed() > Duration::from_secs(20) {
                return b;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Distinct port names per test: tests of one binary run in parallel.
    fn sink_port(test: &str) -> (InputRecorder, String) {
        ensure_jackd();
        let name = format!("sink-{test}-{}", std::process::id());
        let rec = InputRecorder::virtual_port(&name).expect("a JACK input port");
        (rec, name)
    }

    /// Plays `tune()` through `out` into `rec`: every note in order, then the closing CC 123.
    fn a_tune_arrives_in_order(out: Box<dyn MidiOut>, rec: &InputRecorder) {
        let e = Transport::start(vec![out], fast()).unwrap();
        e.set_tempo(600.0, At::Now).unwrap();
        let s = tune();
        e.play_with(&s, PlayOpts { port: 0, at: At::Now }).unwrap();
        assert!(e.wait_idle(&AtomicBool::new(false), false));
        e.shutdown();
        let want = expected_notes(&s);
        let got = wait_for(rec, |b| b.len() > want.len());
        assert_eq!(notes_only(&got), want);
        assert_eq!(got.last(), Some(&msg::control(0, 123, 0).to_vec()));
    }

    /// Loops `tune()` through `out`, stops it mid-cycle: every note that sounded is turned off.
    fn a_stop_leaves_nothing_sounding(out: Box<dyn MidiOut>, rec: &InputRecorder) {
        let e = Transport::start(vec![out], fast()).unwrap();
        e.set_tempo(400.0, At::Now).unwrap();
        e.set_loop("t", LoopSource::Fixed(tune()), PlayOpts { port: 0, at: At::Now }).unwrap();
        wait_for(rec, |b| b.len() >= 30);
        e.stop_loop("t", At::Now).unwrap();
        assert!(e.wait_idle(&AtomicBool::new(false), true));
        std::thread::sleep(Duration::from_millis(200));
        let b: Vec<Vec<u8>> = rec.received().into_iter().map(|r| r.bytes).collect();
        assert_balanced(&b);
        assert!(!b.contains(&msg::control(0, 123, 0).to_vec()), "a single stop needs no CC 123");
        drop(e);
    }

    /// Through the output cadenza plays on with `--features jack` (its own JACK port, which
    /// takes messages a period ahead): every note in order. midir's JACK output is not tested
    /// here: cadenza does not play through it (see `play::ports::midi_in` for why).
    #[test]
    fn a_tune_arrives_through_jack_in_order_with_every_note_off() {
        let (rec, port) = sink_port("tune");
        a_tune_arrives_in_order(connect_output(&port).expect("connect to our JACK input"), &rec);
    }

    /// A stop still turns off every note already handed over ahead of time.
    #[test]
    fn a_stop_through_jack_leaves_nothing_sounding() {
        let (rec, port) = sink_port("stop");
        a_stop_leaves_nothing_sounding(connect_output(&port).expect("connect to our JACK input"), &rec);
    }

    /// Each message handed over ahead of time lands on the frame its due time falls on (JACK's
    /// clock, as the receiving client sees it), not at the start of the next period as midir's
    /// JACK output writes everything; a note-off sent at once still follows the note-on.
    #[test]
    fn cadenzas_jack_output_places_each_message_at_its_frame() {
        ensure_jackd();
        let mut cap = JackCapture::open(&format!("frames-{}", std::process::id()), 4096).unwrap();
        let mut out = JackOut::connect(cap.name()).expect("connect to the capture port");
        assert!(out.lead() > 0, "it takes messages ahead of time");
        let stats = out.stats();
        let mut expected = Vec::new();
        for i in 0..40u64 {
            // Due 200 ms from now and every 7 ms after: all handed over well ahead.
            let due = 200 * MILLI + i * 7 * MILLI;
            let jack_now = out.now_us();
            out.send_at(0, due, &msg::note_on(0, 40 + i as u8, 90)).unwrap();
            expected.push(jack_now + due / 1000);
        }
        out.send(0, &msg::note_off(0, 79)).unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let got = cap.take();
        assert_eq!(got.len(), 41, "every message arrives");
        assert_eq!(got[40].bytes(), &msg::note_off(0, 79)[..], "the note-off sent last comes last");
        // One frame at 48 kHz is 21 µs; the mapping is exact to a frame plus the clock reads.
        let on_time = got[..40].iter().zip(&expected).filter(|(g, &want)| g.at_us.abs_diff(want) <= 100).count();
        let late = stats.late.load(std::sync::atomic::Ordering::Relaxed) as usize;
        assert!(40 - on_time <= late, "only a message handed over too late may miss its frame: {got:?} {expected:?}");
        assert!(on_time >= 30, "most land on their frame: {on_time} of 40");
    }

    /// One note on each downbeat of a 4/4 bar, on `channel`.
    fn downbeats(channel: u8, pitch: u8) -> Score {
        let mut s = Score::new();
        s.notes = vec![Note { channel, ..Note::new(0, 240, pitch) }];
        s.length = 1920;
        s
    }

    #[test]
    fn a_follower_locks_its_bars_to_a_leader_clock() {
        // Leader: 120 bpm, sends MIDI clock on a virtual port and marks its downbeats (pitch 72)
        // into the recorder. Follower: starts at 97 bpm at an arbitrary moment, follows the
        // leader's clock, marks its downbeats (pitch 60, channel 2) into the same recorder.
        let (rec, port) = sink_port("follow");
        let clock_port = format!("clock-follow-{}", std::process::id());
        let leader_clock = virtual_output(&clock_port).expect("a virtual JACK output");
        let leader_notes = connect_output(&port).expect("connect to our JACK input");
        let leader = Transport::start(vec![leader_clock, leader_notes], fast()).unwrap();
        let follower_notes = connect_output(&port).expect("connect to our JACK input");
        let follower = std::sync::Arc::new(Transport::start(vec![follower_notes], fast()).unwrap());
        follower.set_tempo(97.0, At::Now).unwrap();
        // The clock's trip through JACK takes two or three 1024-frame periods (each hop waits for
        // the next cycle); two of them are compensated.
        let two_periods = 2 * 1024 * 1_000_000_000 / 48_000;
        let follow =
            cadenza::play::clock_sync::follow_clock(follower.clone(), &clock_port, two_periods).expect("follow");
        follower.set_loop("f", LoopSource::Fixed(downbeats(2, 60)), PlayOpts { port: 0, at: At::Now }).unwrap();
        std::thread::sleep(Duration::from_millis(730));
        leader.set_tempo(120.0, At::Now).unwrap();
        leader.set_loop("l", LoopSource::Fixed(downbeats(0, 72)), PlayOpts { port: 1, at: At::NextBar }).unwrap();
        leader.clock_out(Some(0)).unwrap();
        // Six bars of the leader (12 s at 120 bpm).
        let on = |b: &Vec<u8>, ch: u8| msg::as_note_on(b).is_some_and(|(c, _)| c == ch);
        wait_for(&rec, |b| b.iter().filter(|m| on(m, 0)).count() >= 7);
        drop(follow);
        let got = rec.received();
        let times = |ch: u8| -> Vec<i64> { got.iter().filter(|r| on(&r.bytes, ch)).map(|r| r.at as i64).collect() };
        let (lead, ours) = (times(0), times(2));
        assert!(lead.len() >= 7, "the leader played: {lead:?}");
        // From the leader's third bar on, each of our downbeats lands on one of the leader's, late
        // by what the compensation left of the clock's trip (without it: 42-64 ms measured here),
        // and by about the same amount each bar. A beat is 500 ms: a wrong beat or a drifting
        // tempo cannot pass.
        let settled: Vec<i64> = ours.iter().copied().filter(|&t| t > lead[2] - 250_000_000 && t < lead[6]).collect();
        assert!(settled.len() >= 3, "the follower kept playing: {ours:?} (leader {lead:?})");
        let offsets: Vec<i64> =
            settled.iter().map(|&t| lead.iter().map(|&l| t - l).min_by_key(|d| d.abs()).unwrap() / 1_000_000).collect();
        let (lo, hi) = (*offsets.iter().min().unwrap(), *offsets.iter().max().unwrap());
        assert!(lo > -30 && hi < 70, "downbeats off the leader's by {offsets:?} ms: {ours:?} vs {lead:?}");
        assert!(hi - lo < 50, "the lock wanders: {offsets:?} ms");
        assert!((follower.tempo() - 120.0).abs() < 6.0, "tempo followed: {}", follower.tempo());
        leader.shutdown();
        follower.shutdown();
    }

    /// The child of `sigterm_turns_every_note_off`: plays long notes into `$CADENZA_PLAY_CHILD`
    /// until killed. Ignored in a normal run.
    #[test]
    #[ignore]
    fn sigterm_child() {
        let Ok(port) = std::env::var("CADENZA_PLAY_CHILD") else { return };
        let out = connect_output(&port).expect("child connects");
        let e = Transport::start(vec![out], TransportConfig::default()).unwrap();
        e.install_exit_handlers().unwrap();
        let mut s = Score::new();
        // A chord held for 100 beats, and a melody over it.
        s.notes = vec![Note::new(0, 48_000, 48), Note::new(0, 48_000, 55)];
        for i in 0..32u64 {
            s.notes.push(Note { channel: 1, ..Note::new(i * 240, 200, 60 + (i % 12) as u8) });
        }
        s.length = 48_000;
        e.set_loop("held", LoopSource::Fixed(s), PlayOpts { port: 0, at: At::Now }).unwrap();
        println!("playing");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    #[test]
    fn sigterm_turns_every_note_off() {
        let (rec, port) = sink_port("term");
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["play::jack::sigterm_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("CADENZA_PLAY_CHILD", &port)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the chord and a few melody notes are sounding.
        let b = wait_for(&rec, |b| b.iter().filter(|m| msg::as_note_on(m).is_some()).count() >= 6);
        assert!(b.len() >= 6, "the child played: {b:?}");
        // SAFETY: sending a signal to our own child process by its id.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + libc::SIGTERM), "exits with 128 + SIGTERM after silencing");
        std::thread::sleep(Duration::from_millis(200));
        let b: Vec<Vec<u8>> = rec.received().into_iter().map(|r| r.bytes).collect();
        assert_balanced(&b);
        // Held notes got real note-offs (not just CC 123), and CC 123 went to both used channels.
        assert!(b.contains(&msg::note_off(0, 48).to_vec()) && b.contains(&msg::note_off(0, 55).to_vec()));
        assert!(b.contains(&msg::control(0, 123, 0).to_vec()) && b.contains(&msg::control(1, 123, 0).to_vec()));
        assert!(!b.contains(&msg::control(2, 123, 0).to_vec()), "CC 123 only on channels used");
    }
}
