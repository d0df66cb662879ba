//! Transport tests on a fake clock and a recorder: exact timestamps, loop boundaries, flush, tempo, ledger.

use super::clock::{FakeClock, Nanos, MILLI, SECOND};
use super::event::msg;
use super::sequencer::{At, CycleRequest, Report};
use super::transport::{LoopSource, PlayOpts, Transport, TransportConfig};
use crate::score::{Note, Score};
use crate::sink::out::{Recorded, Recorder, RecorderHandle};
use crate::time::{Meter, Tick};
use std::collections::HashMap;

/// A quarter note at 120 bpm.
const Q: Nanos = 500 * MILLI;
/// A 4/4 bar at 120 bpm.
const BAR: Nanos = 2 * SECOND;

fn engine_with(config: TransportConfig) -> (Transport, RecorderHandle) {
    let (rec, h) = Recorder::new("rec", 1 << 16);
    let e = Transport::manual(vec![Box::new(rec)], config, FakeClock::new(0)).expect("manual engine");
    (e, h)
}

fn engine() -> (Transport, RecorderHandle) {
    engine_with(TransportConfig { program_changes: false, ..TransportConfig::default() })
}

fn score(notes: &[(Tick, Tick, u8)], length: Tick) -> Score {
    let mut s = Score::new();
    s.notes = notes.iter().map(|&(start, dur, pitch)| Note::new(start, dur, pitch)).collect();
    s.length = length;
    s.normalize();
    s
}

fn on(ch: u8, p: u8) -> Vec<u8> {
    msg::note_on(ch, p, 80).to_vec()
}

fn off(ch: u8, p: u8) -> Vec<u8> {
    msg::note_off(ch, p).to_vec()
}

fn timeline(m: &[Recorded]) -> Vec<(Nanos, Vec<u8>)> {
    m.iter().map(|r| (r.at, r.bytes().to_vec())).collect()
}

/// Every note-on has its note-off later on, and nothing sounds at the end.
fn assert_balanced(m: &[Recorded]) {
    let mut sounding: HashMap<(u8, u8), usize> = HashMap::new();
    for r in m {
        if let Some(k) = msg::as_note_on(r.bytes()) {
            *sounding.entry(k).or_default() += 1;
        } else if let Some(k) = msg::as_note_off(r.bytes()) {
            sounding.remove(&k);
        } else if r.bytes()[0] & 0xF0 == 0xB0 && r.bytes()[1] == 123 {
            sounding.retain(|(ch, _), _| *ch != r.bytes()[0] & 0x0F);
        }
    }
    assert!(sounding.is_empty(), "notes left sounding: {sounding:?}");
}

#[test]
fn a_score_plays_at_exact_times() {
    let (e, h) = engine();
    // Two quarters then a half note, at tick 0 of the timeline (the engine's start).
    e.play_with(&score(&[(0, 480, 60), (480, 480, 62), (960, 960, 64)], 1920), PlayOpts { port: 0, at: At::Now })
        .unwrap();
    e.advance_to(3 * SECOND).unwrap();
    let t = timeline(&h.messages());
    assert_eq!(
        t,
        vec![
            (0, on(0, 60)),
            (Q, off(0, 60)),
            (Q, on(0, 62)),
            (2 * Q, off(0, 62)),
            (2 * Q, on(0, 64)),
            (4 * Q, off(0, 64)),
        ]
    );
    assert_eq!(e.jitter().max, 0, "a fake clock sends every event exactly on time");
}

#[test]
fn play_at_the_next_bar_waits_for_the_bar_line() {
    let (e, h) = engine();
    e.advance_to(300 * MILLI).unwrap();
    e.play(&score(&[(0, 240, 67)], 480)).unwrap();
    e.advance_to(5 * SECOND).unwrap();
    assert_eq!(timeline(&h.messages()), vec![(BAR, on(0, 67)), (BAR + Q / 2, off(0, 67))]);
    assert!(e.is_idle(false) && e.is_idle(true));
}

#[test]
fn loops_repeat_on_bar_lines_and_replacements_wait_for_the_cycle_end() {
    let (e, h) = engine();
    // One bar: a whole-bar drone plus a quarter; the drone rings up to the bar line.
    let a = score(&[(0, 1920, 48), (960, 480, 60)], 1920);
    e.set_loop("a", LoopSource::Fixed(a), PlayOpts { port: 0, at: At::NextBar }).unwrap();
    e.advance_to(BAR + 100 * MILLI).unwrap();
    assert_eq!(e.loops(), vec!["a".to_string()]);
    // Replaced during cycle 1 (starting at 2 s... cycle 0 starts at 0): the new one starts at the
    // end of the running cycle, 4 s, and the old drone is cut there.
    let b = score(&[(0, 960, 72)], 960);
    e.set_loop("a", LoopSource::Fixed(b), PlayOpts { port: 0, at: At::NextCycle }).unwrap();
    e.advance_to(2 * BAR + 10 * Q).unwrap();
    let t = timeline(&h.messages());
    let expect = vec![
        (0, on(0, 48)),
        (2 * Q, on(0, 60)),
        (3 * Q, off(0, 60)),
        (BAR, off(0, 48)),
        (BAR, on(0, 48)),
        (BAR + 2 * Q, on(0, 60)),
        (BAR + 3 * Q, off(0, 60)),
        (2 * BAR, off(0, 48)),
        (2 * BAR, on(0, 72)),
        (2 * BAR + 2 * Q, off(0, 72)),
        (2 * BAR + 2 * Q, on(0, 72)),
        (2 * BAR + 4 * Q, off(0, 72)),
        (2 * BAR + 4 * Q, on(0, 72)),
        (2 * BAR + 6 * Q, off(0, 72)),
        (2 * BAR + 6 * Q, on(0, 72)),
        (2 * BAR + 8 * Q, off(0, 72)),
        (2 * BAR + 8 * Q, on(0, 72)),
        (2 * BAR + 10 * Q, off(0, 72)),
        (2 * BAR + 10 * Q, on(0, 72)),
    ];
    assert_eq!(t, expect);
}

#[test]
fn a_stop_at_the_next_bar_cuts_sounding_notes_on_the_bar_line() {
    let (e, h) = engine();
    // A two-bar loop with a note held across the bar line.
    e.set_loop("long", LoopSource::Fixed(score(&[(1440, 960, 55)], 3840)), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(1600 * MILLI).unwrap();
    e.stop_loop("long", At::NextBar).unwrap();
    e.advance_to(10 * SECOND).unwrap();
    assert_eq!(timeline(&h.messages()), vec![(3 * Q, on(0, 55)), (BAR, off(0, 55))]);
    assert!(e.loops().is_empty());
    assert!(e.is_idle(true));
}

#[test]
fn panic_drops_what_is_queued_and_turns_everything_off_at_once() {
    let (e, h) = engine();
    let s = score(&[(0, 1920, 40), (0, 1920, 47), (480, 480, 52)], 1920);
    e.set_loop("pad", LoopSource::Fixed(s.clone()), PlayOpts { port: 0, at: At::Now }).unwrap();
    let mut drums = s;
    for n in &mut drums.notes {
        n.channel = 9;
    }
    e.set_loop("drums", LoopSource::Fixed(drums), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(700 * MILLI).unwrap();
    // Commands take effect when the engine next runs: here at 700 ms.
    e.panic().unwrap();
    e.advance_to(5 * SECOND).unwrap();
    let m = h.messages();
    let after: Vec<(Nanos, Vec<u8>)> = timeline(&m).into_iter().filter(|(t, _)| *t > 600 * MILLI).collect();
    // Everything after the panic happens at the panic's time: the note-offs of the five sounding
    // notes, then CC 123 on the two channels used (0 and 9), and nothing else; the note-off of 52
    // queued for 1 s never goes out.
    assert!(after.iter().all(|(t, _)| *t == 700 * MILLI), "{after:?}");
    let bytes: Vec<Vec<u8>> = after.into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        bytes,
        vec![
            off(0, 40),
            off(0, 47),
            off(0, 52),
            off(9, 40),
            off(9, 47),
            off(9, 52),
            msg::control(0, 123, 0).to_vec(),
            msg::control(9, 123, 0).to_vec()
        ]
    );
    assert_balanced(&m);
    assert!(e.loops().is_empty());
}

#[test]
fn stopping_one_loop_now_keeps_the_others_playing() {
    let (e, h) = engine();
    e.set_loop("x", LoopSource::Fixed(score(&[(0, 1920, 60)], 1920)), PlayOpts { port: 0, at: At::Now }).unwrap();
    let mut y = score(&[(0, 480, 70)], 480);
    y.notes[0].channel = 1;
    e.set_loop("y", LoopSource::Fixed(y), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(300 * MILLI).unwrap();
    e.stop_loop("x", At::Now).unwrap();
    e.advance_to(BAR).unwrap();
    let t = timeline(&h.messages());
    assert_eq!(t[2], (300 * MILLI, off(0, 60)), "{t:?}");
    // y went on: note-on at every quarter up to the bar.
    let y_ons: Vec<Nanos> = t.iter().filter(|(_, b)| *b == on(1, 70)).map(|(t, _)| *t).collect();
    assert_eq!(y_ons, vec![0, Q, 2 * Q, 3 * Q, 4 * Q]);
    assert!(!t.iter().any(|(at, b)| *b == on(0, 60) && *at > 0), "x never started again");
    assert_eq!(e.loops(), vec!["y".to_string()]);
}

#[test]
fn tempo_changes_at_the_bar_re_anchor_without_a_jump() {
    let (e, h) = engine();
    e.set_loop("q", LoopSource::Fixed(score(&[(0, 240, 60)], 480)), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(SECOND).unwrap();
    e.set_tempo(60.0, At::NextBar).unwrap();
    e.advance_to(2 * BAR + 100 * MILLI).unwrap();
    let ons: Vec<Nanos> =
        timeline(&h.messages()).into_iter().filter(|(_, b)| *b == on(0, 60)).map(|(t, _)| t).collect();
    // Four quarters at 120 (0.5 s each) up to the bar at 2 s, then one quarter per second.
    assert_eq!(ons, vec![0, Q, 2 * Q, 3 * Q, BAR, BAR + SECOND, BAR + 2 * SECOND]);
    assert_eq!(e.tempo(), 60.0);
    // An immediate change applies from the first unscheduled tick: no event moves backwards.
    e.set_tempo(240.0, At::Now).unwrap();
    e.advance_to(8 * SECOND).unwrap();
    let all = h.messages();
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at));
    assert_balanced(&all[..all.len() - 1]);
    assert!(e.set_tempo(5.0, At::Now).is_err());
}

#[test]
fn a_producer_is_asked_one_cycle_ahead_and_its_errors_keep_the_old_music() {
    let (e, h) = engine();
    let producer = |r: &CycleRequest| -> Result<Score, super::transport::ProducerError> {
        if r.cycle == 2 {
            return Err("model fell over".into());
        }
        Ok(score(&[(0, 480, 60 + r.cycle as u8)], 960))
    };
    e.set_loop("gen", LoopSource::Producer(Box::new(producer)), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(5 * SECOND).unwrap();
    let ons: Vec<(Nanos, u8)> =
        h.messages().iter().filter_map(|r| msg::as_note_on(r.bytes()).map(|(_, p)| (r.at, p))).collect();
    // Cycles of one second: 60, 61, then cycle 2 failed so 61 repeats, then 63, 64, 65.
    assert_eq!(
        ons,
        vec![(0, 60), (SECOND, 61), (2 * SECOND, 61), (3 * SECOND, 63), (4 * SECOND, 64), (5 * SECOND, 65)]
    );
    let reports = e.take_reports();
    assert!(reports.iter().any(|r| matches!(r, Report::LoopError { name, .. } if name == "gen")), "{reports:?}");
    assert!(reports.iter().any(|r| matches!(r, Report::CycleLate { cycle: 2, .. })), "{reports:?}");
    // Each cycle is asked for when the one before starts being scheduled, so a producer that
    // answers at once has about a cycle (one second) to spare; the failed one was replayed.
    let t = e.loop_timing()["gen"];
    assert_eq!(t.replayed, 1, "{t:?}");
    assert!(t.made >= 4, "{t:?}");
    assert!((900.0..=1000.0).contains(&t.worst_margin_ms), "{t:?}");
    // A producer that fails at once is an error here and nothing changes.
    let bad = |_: &CycleRequest| -> Result<Score, super::transport::ProducerError> { Err("syntax error".into()) };
    let err = e.set_loop("gen", LoopSource::Producer(Box::new(bad)), PlayOpts::default()).unwrap_err();
    assert!(err.to_string().contains("syntax error"));
    assert_eq!(e.loops(), vec!["gen".to_string()]);
}

#[test]
fn every_note_on_gets_its_note_off_in_every_stop_path() {
    type Stop = fn(&Transport);
    let paths: [(&str, Stop); 6] = [
        ("stop at bar", |e| e.stop_loop("a", At::NextBar).unwrap()),
        ("stop now", |e| e.stop_loop("a", At::Now).unwrap()),
        ("stop all at bar", |e| e.stop_all(At::NextBar).unwrap()),
        ("panic", |e| e.panic().unwrap()),
        ("replace", |e| {
            e.set_loop("a", LoopSource::Fixed(score(&[(0, 100, 30)], 1920)), PlayOpts::default()).unwrap();
            e.stop_loop("a", At::NextCycle).unwrap();
        }),
        ("shutdown", |e| {
            e.shutdown();
        }),
    ];
    for (what, stop) in paths {
        let (e, h) = engine();
        let s = score(&[(0, 3000, 50), (100, 2000, 57), (700, 50, 64), (1900, 500, 67)], 1920);
        e.set_loop("a", LoopSource::Fixed(s), PlayOpts { port: 0, at: At::Now }).unwrap();
        e.play_with(&score(&[(0, 5000, 80)], 5000), PlayOpts { port: 0, at: At::Now }).unwrap();
        e.advance_to(2100 * MILLI).unwrap();
        stop(&e);
        e.advance_to(12 * SECOND).unwrap();
        if what != "stop at bar" && what != "stop now" && what != "replace" {
            assert_balanced(&h.messages());
        }
        // The one-shot note (still sounding when a loop alone stops) ends by itself or by shutdown.
        e.shutdown();
        let m = h.messages();
        assert_balanced(&m);
        assert!(m.iter().any(|r| msg::as_note_on(r.bytes()).is_some()), "{what}: something played");
    }
}

#[test]
fn dropping_the_engine_turns_notes_off() {
    let (rec, h) = Recorder::new("rec", 1024);
    let e = Transport::manual(vec![Box::new(rec)], TransportConfig::default(), FakeClock::new(0)).unwrap();
    e.set_loop("a", LoopSource::Fixed(score(&[(0, 1920, 60)], 1920)), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(SECOND).unwrap();
    drop(e);
    let b = h.bytes();
    // Program change first (program_changes is on by default), then the note, its note-off, CC 123.
    assert_eq!(b, vec![msg::program(0, 0).to_vec(), on(0, 60), off(0, 60), msg::control(0, 123, 0).to_vec()]);
}

#[test]
fn midi_clock_sends_24_pulses_per_quarter_from_the_bar_with_start_and_stop() {
    let (e, h) = engine();
    e.advance_to(100 * MILLI).unwrap();
    e.clock_out(Some(0)).unwrap();
    e.advance_to(BAR + Q).unwrap();
    e.clock_out(None).unwrap();
    e.advance_to(BAR + 2 * Q).unwrap();
    let t = timeline(&h.messages());
    assert_eq!(t[0], (BAR, vec![msg::START]));
    let pulses: Vec<Nanos> = t.iter().filter(|(_, b)| b[0] == msg::CLOCK).map(|(t, _)| *t).collect();
    // A pulse every 20 ticks (1/24 quarter = 20.833 ms at 120 bpm), rounded to the nanosecond.
    assert_eq!(pulses[0], BAR);
    assert_eq!(pulses[1], BAR + 20_833_333);
    assert_eq!(pulses[24], BAR + Q);
    let stop = t.iter().find(|(_, b)| b[0] == msg::STOP).expect("stop sent");
    assert!(stop.0 > BAR + Q && stop.0 <= BAR + Q + 110 * MILLI, "stop goes out one lookahead later");
    assert!(pulses.iter().all(|p| *p <= stop.0));
}

#[test]
fn meter_changes_move_the_bar_grid_at_the_next_bar() {
    let (e, h) = engine();
    e.advance_to(100 * MILLI).unwrap();
    e.set_meter(Meter::new(3, 4)).unwrap();
    // The first bar (4/4, at 0) is already under way; 3/4 bars start at 2 s: 2, 3.5, 5 s.
    e.advance_to(2100 * MILLI).unwrap();
    e.play(&score(&[(0, 10, 60)], 10)).unwrap();
    e.advance_to(4 * SECOND).unwrap();
    let t = timeline(&h.messages());
    assert_eq!(t[0], (BAR + 3 * Q, on(0, 60)));
}

#[test]
fn programs_are_sent_when_a_channel_changes_instrument() {
    let (e, h) = engine_with(TransportConfig::default());
    let mut s = score(&[(0, 100, 60), (480, 100, 62), (960, 100, 64)], 1440);
    s.notes[1].program = 40;
    s.notes[2].program = 40;
    e.play_with(&s, PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(2 * SECOND).unwrap();
    let b: Vec<Vec<u8>> = h.bytes().into_iter().filter(|b| b[0] & 0xF0 == 0xC0).collect();
    assert_eq!(b, vec![msg::program(0, 0).to_vec(), msg::program(0, 40).to_vec()]);
}

#[test]
fn empty_loops_and_unknown_ports_are_errors() {
    let (e, _h) = engine();
    assert!(e.set_loop("z", LoopSource::Fixed(Score::new()), PlayOpts::default()).is_err());
    assert!(e.play_with(&score(&[(0, 1, 60)], 1), PlayOpts { port: 3, at: At::Now }).is_err());
}

#[test]
fn failed_sends_are_counted_and_reported() {
    let (e, h) = engine();
    h.fail_next(1);
    e.play_with(&score(&[(0, 480, 60), (480, 480, 62)], 960), PlayOpts { port: 0, at: At::Now }).unwrap();
    e.advance_to(2 * SECOND).unwrap();
    let r = e.take_reports();
    assert!(r.contains(&Report::SendErrors { port: 0, count: 1 }), "{r:?}");
    assert_eq!(h.bytes()[0], off(0, 60), "the failed note-on is gone; its note-off still goes");
}

#[test]
fn following_a_leader_locks_bar_lines_to_its_bars() {
    let (e, h) = engine();
    // One note a beat, the downbeat marked by pitch 72; we start on our own grid at 120 bpm.
    let bar = score(&[(0, 240, 72), (480, 240, 60), (960, 240, 60), (1440, 240, 60)], 1920);
    e.set_loop("beat", LoopSource::Fixed(bar), PlayOpts { port: 0, at: At::Now }).unwrap();
    // The leader starts 0.73 s in, at 126 bpm; its tempo estimate is a little off (125.6), as a
    // smoothed estimate of a real clock is.
    let (start, beat) = (730 * MILLI, 60 * SECOND / 126);
    let leader_beat = |k: u64| start + k * beat;
    for k in 0..40 {
        e.advance_to(leader_beat(k)).unwrap();
        e.follow(k as f64 * 480.0, leader_beat(k), 125.6).unwrap();
    }
    e.advance_to(leader_beat(40)).unwrap();
    let all = h.messages();
    assert!(all.windows(2).all(|w| w[0].at <= w[1].at), "nothing moves backwards");
    let downbeats: Vec<Nanos> = timeline(&all).into_iter().filter(|(_, b)| *b == on(0, 72)).map(|(t, _)| t).collect();
    // From the leader's second bar on, every downbeat of ours falls on a downbeat of the leader
    // (the first wait lines the grid up within 2 ms; the PI loop then closes in on zero).
    let late: Vec<(Nanos, i64)> = downbeats
        .iter()
        .filter(|&&t| t > leader_beat(0))
        .map(|&t| {
            let k = ((t - start) as f64 / beat as f64).round() as u64;
            (t, t as i64 - leader_beat(k) as i64)
        })
        .collect();
    assert!(late.len() >= 5, "{late:?}");
    for &(t, err) in &late {
        let k = ((t - start) as f64 / beat as f64).round() as u64;
        assert_eq!(k % 4, 0, "our bar line at {t} is on leader beat {k}, not a downbeat");
        assert!(err.abs() < 2 * MILLI as i64, "downbeat {t} is {err} ns off the leader");
    }
    for &(t, err) in &late[late.len() - 4..] {
        assert!(err.abs() < 100_000, "downbeat {t} is still {err} ns off the leader: {late:?}");
    }
    // And the tempo in effect is the leader's, give or take the phase correction.
    assert!((e.tempo() - 126.0).abs() < 2.0, "{}", e.tempo());
}
