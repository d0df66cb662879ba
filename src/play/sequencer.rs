//! The sequencer: turns scores and named loops into timestamped MIDI events, a lookahead window ahead of now.
//!
//! Musical time is integer ticks on one global timeline; a tempo anchor maps ticks to clock
//! nanoseconds. Everything before `horizon` has been handed to the player, so every change
//! (stop, replace, tempo) applies at a tick at or after the horizon and nothing already queued
//! ever moves: tempo changes re-anchor without a jump.

use super::clock::{Nanos, MILLI};
use super::event::{msg, Event, MAX_PORTS, SYSTEM_TAG};
use super::player::Control;
use crate::score::Score;
use crate::sink::out::MidiOut;
use crate::time::{Meter, Tick, PPQ};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Where a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum At {
    /// As soon as possible: the first tick not yet handed to the player (one lookahead away).
    Now,
    /// The next bar line of the global bar grid.
    #[default]
    NextBar,
    /// For a running loop: the end of its current cycle (for anything else: the next bar).
    NextCycle,
}

/// A request to a loop's producer for the score of a coming cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct CycleRequest {
    pub name: String,
    /// 0 for the first cycle, counting up.
    pub cycle: u64,
    /// Tempo when asked (quarter notes per minute).
    pub bpm: f64,
}

/// Counters shared with the engine, for waiting until idle.
#[derive(Default)]
pub struct SeqShared {
    /// Events pushed into the ring so far.
    pub pushed: AtomicU64,
    /// Commands the sequencer has carried out (compared with the engine's count of those sent).
    pub handled: AtomicU64,
    /// Named loops and one-shot plays running or waiting to start.
    pub tracks: AtomicUsize,
    pub oneshots: AtomicUsize,
    /// `pushed` when the last one-shot play finished (its last note-off queued).
    pub oneshot_mark: AtomicU64,
    /// The tempo in effect at the horizon, as f64 bits.
    pub bpm_bits: AtomicU64,
    /// Ticks already scheduled (the horizon).
    pub horizon: AtomicU64,
    /// Names of the loops playing (the sequencer thread writes it; never the player).
    pub loops: std::sync::Mutex<Vec<String>>,
    /// How far ahead each generating loop's cycles arrive (the sequencer thread writes it).
    pub timing: std::sync::Mutex<std::collections::BTreeMap<String, LoopTiming>>,
}

/// How a loop whose cycles are made one ahead keeps its deadlines: a cycle is due when the
/// sequencer must schedule its first note (a lookahead before it sounds).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoopTiming {
    /// The margins of the last [`RECENT_MARGINS`] cycles (a ring; `made` says how full).
    pub recent_ms: [f64; RECENT_MARGINS],
    /// Cycles that arrived in time.
    pub made: u64,
    /// Cycles that were not ready when due: the last good one played again.
    pub replayed: u64,
    /// Milliseconds to spare when the last cycle arrived (negative: it came late).
    pub last_margin_ms: f64,
    /// The least time to spare so far.
    pub worst_margin_ms: f64,
}

/// Margins kept per loop for the median.
pub const RECENT_MARGINS: usize = 32;

impl LoopTiming {
    /// The median margin of the last [`RECENT_MARGINS`] cycles, in milliseconds.
    pub fn median_margin_ms(&self) -> f64 {
        let n = (self.made as usize).min(RECENT_MARGINS);
        if n == 0 {
            return f64::NAN;
        }
        let mut v = self.recent_ms[..n].to_vec();
        v.sort_by(f64::total_cmp);
        v[n / 2]
    }
}

/// What the sequencer tells the user about (the engine turns these into messages).
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// A loop's producer was not ready with the next cycle; the last one repeats.
    CycleLate {
        name: String,
        cycle: u64,
    },
    /// A loop's producer failed; the last good cycle keeps playing.
    LoopError {
        name: String,
        message: String,
    },
    /// A score with nothing to loop (length 0).
    EmptyLoop {
        name: String,
    },
    /// The ring to the player was full; events wait (raise the ring capacity).
    RingFull,
    PortVanished {
        port: String,
    },
    PortBack {
        port: String,
    },
    SendErrors {
        port: u8,
        count: u64,
    },
    /// Events later than a step of [`super::player::LATE_STEPS`] since the last report.
    Late {
        step_ms: u64,
        count: u64,
        max_ms: f64,
    },
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Report::CycleLate { name, cycle } => {
                write!(f, "loop {name}: cycle {cycle} was not ready in time; repeating the last one")
            }
            Report::LoopError { name, message } => {
                write!(f, "loop {name}: {message} (the last good cycle keeps playing)")
            }
            Report::EmptyLoop { name } => write!(f, "loop {name}: the score is empty (length 0); nothing to loop"),
            Report::RingFull => write!(f, "timing: the player's queue is full; events are waiting"),
            Report::PortVanished { port } => {
                write!(f, "MIDI port `{port}` vanished; reconnecting when it returns (other ports play on)")
            }
            Report::PortBack { port } => write!(f, "MIDI port `{port}` is back; reconnected"),
            Report::SendErrors { port, count } => write!(f, "MIDI output {port}: {count} messages failed to send"),
            Report::Late { step_ms, count, max_ms } => {
                let what = match step_ms {
                    0..=1 => "timing note",
                    2..=5 => "timing warning",
                    6..=20 => "timing error",
                    _ => "timing error (raise the lookahead or lighten the load)",
                };
                write!(f, "{what}: {count} events more than {step_ms} ms late (worst {max_ms:.1} ms)")
            }
        }
    }
}

/// Commands from the engine to the sequencer.
pub enum Command {
    Play {
        score: Score,
        port: u8,
        at: At,
    },
    SetLoop {
        name: String,
        score: Score,
        port: u8,
        at: At,
        feeder: Option<Sender<CycleRequest>>,
        generation: u64,
    },
    Cycle {
        name: String,
        generation: u64,
        cycle: u64,
        score: Score,
    },
    StopLoop {
        name: String,
        at: At,
    },
    StopAll {
        at: At,
    },
    Panic,
    Tempo {
        bpm: f64,
        at: At,
    },
    Meter(Meter),
    /// Phase lock to a leader (an incoming MIDI clock): at clock time `at` the leader was
    /// `leader_tick` ticks past its start (a downbeat) and plays at `bpm`.
    Follow {
        leader_tick: f64,
        at: Nanos,
        bpm: f64,
    },
    SetOutput(u8, Box<dyn MidiOut>),
    RemoveOutput(u8),
    /// Sends MIDI clock on a port from the next bar (`None` stops it).
    ClockOut {
        port: Option<u8>,
    },
    Shutdown,
}

/// One note-on prepared from a score: offsets within the cycle.
#[derive(Debug, Clone, Copy)]
struct Prepared {
    start: Tick,
    dur: Tick,
    channel: u8,
    pitch: u8,
    velocity: u8,
    program: u8,
}

#[derive(Debug, Clone)]
struct Cycle {
    notes: Arc<[Prepared]>,
    len: Tick,
}

fn prepare(score: &Score) -> Cycle {
    let mut notes: Vec<Prepared> = score
        .notes
        .iter()
        .map(|n| Prepared {
            start: n.start,
            // A zero-length note would put its note-off before its note-on at the same tick.
            dur: n.dur.max(1),
            channel: n.channel & 0x0F,
            pitch: n.pitch & 0x7F,
            velocity: n.velocity,
            program: n.program & 0x7F,
        })
        .collect();
    notes.sort_by_key(|n| (n.start, n.channel, n.pitch));
    let end = score.notes.iter().map(|n| n.end()).max().unwrap_or(0);
    Cycle { notes: notes.into(), len: score.length.max(end) }
}

/// A play or a loop instance.
struct Track {
    tag: u32,
    /// `None` for a one-shot play.
    name: Option<String>,
    port: u8,
    start: Tick,
    cycle: Cycle,
    cycle_no: u64,
    idx: usize,
    next: Option<Cycle>,
    feeder: Option<Sender<CycleRequest>>,
    generation: u64,
    offs: BinaryHeap<Reverse<(Tick, u8, u8)>>,
    end_at: Option<Tick>,
    done: bool,
}

/// Order of events at the same tick: note-offs first (so a re-struck pitch sounds), then
/// system and program messages, then note-ons.
const K_OFF: u8 = 0;
const K_SYS: u8 = 1;
const K_ON: u8 = 2;

struct Pending {
    tick: Tick,
    kind: u8,
    tag: u32,
    port: u8,
    len: u8,
    bytes: [u8; 3],
}

/// The sequencer state; [`Sequencer::fill`] does one round of work.
pub struct Sequencer {
    lookahead: Nanos,
    tick0: Tick,
    time0: Nanos,
    nanos_per_tick: f64,
    bpm: f64,
    pending_tempo: Option<(Tick, f64)>,
    /// The phase lock's running sum of errors (in beats), for [`Sequencer::follow`].
    follow_integral: f64,
    bar_origin: Tick,
    bar: Tick,
    pending_meter: Option<(Tick, Tick)>,
    horizon: Tick,
    tracks: Vec<Track>,
    next_tag: u32,
    epoch: u32,
    programs: [[Option<u8>; 16]; MAX_PORTS],
    program_changes: bool,
    clock_port: Option<u8>,
    clock_next: Tick,
    clock_start: Option<(Tick, u8)>,
    backlog: std::collections::VecDeque<Event>,
    events: rtrb::Producer<Event>,
    control: rtrb::Producer<Control>,
    reports: Sender<Report>,
    shared: Arc<SeqShared>,
    reported_full: bool,
    shutdown: bool,
    /// The latest clock time seen (a fill or a command), for measuring loops' margins.
    now: Nanos,
}

/// MIDI clock: 24 pulses per quarter note.
pub const CLOCK_TICKS: Tick = PPQ as Tick / 24;

impl Sequencer {
    /// A sequencer whose tick 0 sounds at clock time `start`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        start: Nanos,
        lookahead: Nanos,
        bpm: f64,
        program_changes: bool,
        events: rtrb::Producer<Event>,
        control: rtrb::Producer<Control>,
        reports: Sender<Report>,
        shared: Arc<SeqShared>,
    ) -> Sequencer {
        let bpm = sane_bpm(bpm);
        let s = Sequencer {
            lookahead,
            tick0: 0,
            time0: start,
            nanos_per_tick: nanos_per_tick(bpm),
            bpm,
            pending_tempo: None,
            follow_integral: 0.0,
            bar_origin: 0,
            bar: Meter::default().bar_ticks(),
            pending_meter: None,
            horizon: 0,
            tracks: Vec::new(),
            next_tag: 1,
            epoch: 0,
            programs: [[None; 16]; MAX_PORTS],
            program_changes,
            clock_port: None,
            clock_next: 0,
            clock_start: None,
            backlog: Default::default(),
            events,
            control,
            reports,
            shared,
            reported_full: false,
            shutdown: false,
            now: start,
        };
        s.shared.bpm_bits.store(bpm.to_bits(), Ordering::Relaxed);
        s
    }

    pub fn is_shutdown(&self) -> bool {
        self.shutdown
    }

    pub fn lookahead(&self) -> Nanos {
        self.lookahead
    }

    /// Clock time of `tick` (at or after the anchor).
    pub fn time_of(&self, tick: Tick) -> Nanos {
        self.time0 + ((tick.saturating_sub(self.tick0)) as f64 * self.nanos_per_tick).round() as Nanos
    }

    /// The last tick sounding at or before `t`.
    pub fn tick_at(&self, t: Nanos) -> Tick {
        if t <= self.time0 {
            return self.tick0;
        }
        self.tick0 + ((t - self.time0) as f64 / self.nanos_per_tick).floor() as Tick
    }

    pub fn horizon(&self) -> Tick {
        self.horizon
    }

    /// Before commands are handled: when nothing plays and the horizon has fallen behind `now`
    /// (the engine just started and connecting the port took 16 ms, or the thread slept), moves
    /// it to a lookahead past `now`, as a running sequencer keeps it. Otherwise `At::Now` would
    /// land in the past and the first notes go out late. Nothing is scheduled before the new
    /// horizon, so nothing is skipped; bar lines keep their origin.
    pub fn catch_up(&mut self, now: Nanos) {
        self.now = self.now.max(now);
        if !self.tracks.is_empty() || !self.backlog.is_empty() || self.pending_tempo.is_some() {
            return;
        }
        let due = self.tick_at(now + self.lookahead);
        if due > self.horizon {
            self.horizon = due;
            self.shared.horizon.store(self.horizon, Ordering::Relaxed);
        }
    }

    pub fn bpm(&self) -> f64 {
        self.bpm
    }

    fn next_bar(&self, from: Tick) -> Tick {
        if from <= self.bar_origin {
            return self.bar_origin;
        }
        let k = (from - self.bar_origin).div_ceil(self.bar);
        self.bar_origin + k * self.bar
    }

    fn resolve(&self, at: At, track: Option<&Track>) -> Tick {
        match at {
            At::Now => self.horizon,
            At::NextBar => self.next_bar(self.horizon),
            At::NextCycle => match track {
                Some(t) if t.start >= self.horizon => t.start,
                Some(t) => (t.start + t.cycle.len).max(self.horizon),
                None => self.next_bar(self.horizon),
            },
        }
    }

    fn new_tag(&mut self) -> u32 {
        let t = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        t
    }

    fn live_loop(&self, name: &str) -> Option<usize> {
        // The running instance is the one without an end or whose end is still ahead; a replacement
        // waiting to start comes later in the list, so search from the back.
        self.tracks.iter().rposition(|t| t.name.as_deref() == Some(name) && !t.done)
    }

    /// Applies one command.
    /// Carries out one command, then publishes the result and counts the command as handled, so
    /// `Transport::is_idle` never mistakes a command still in the channel for silence.
    pub fn handle(&mut self, cmd: Command) {
        self.apply(cmd);
        self.publish();
        self.shared.handled.fetch_add(1, Ordering::Release);
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Play { score, port, at } => {
                let cycle = prepare(&score);
                if cycle.notes.is_empty() {
                    return;
                }
                let start = self.resolve(at, None);
                let tag = self.new_tag();
                self.tracks.push(Track {
                    tag,
                    name: None,
                    port: port.min(MAX_PORTS as u8 - 1),
                    start,
                    cycle,
                    cycle_no: 0,
                    idx: 0,
                    next: None,
                    feeder: None,
                    generation: 0,
                    offs: BinaryHeap::new(),
                    end_at: None,
                    done: false,
                });
            }
            Command::SetLoop { name, score, port, at, feeder, generation } => {
                let cycle = prepare(&score);
                if cycle.len == 0 {
                    let _ = self.reports.send(Report::EmptyLoop { name });
                    return;
                }
                let old = self.live_loop(&name);
                let start = self.resolve(at, old.map(|i| &self.tracks[i]));
                if let Some(i) = old {
                    let t = &mut self.tracks[i];
                    if t.start >= start {
                        // The old instance has not started yet: it never will.
                        t.done = true;
                        t.end_at = Some(t.start);
                    } else {
                        t.end_at = Some(t.end_at.map_or(start, |e| e.min(start)));
                    }
                    t.feeder = None;
                }
                let tag = self.new_tag();
                let track = Track {
                    tag,
                    name: Some(name.clone()),
                    port: port.min(MAX_PORTS as u8 - 1),
                    start,
                    cycle,
                    cycle_no: 0,
                    idx: 0,
                    next: None,
                    feeder,
                    generation,
                    offs: BinaryHeap::new(),
                    end_at: None,
                    done: false,
                };
                // Ask for cycle 1 now: the producer gets a whole cycle's time to make it.
                if let Some(f) = &track.feeder {
                    let _ = f.send(CycleRequest { name, cycle: 1, bpm: self.bpm });
                }
                self.tracks.push(track);
            }
            Command::Cycle { name, generation, cycle, score } => {
                let found =
                    self.tracks.iter().position(|t| t.name.as_deref() == Some(&name) && t.generation == generation);
                if let Some(i) = found {
                    // Due when the sequencer must schedule the cycle's start: a lookahead before
                    // it sounds. Cycle `cycle` starts `cycle - cycle_no` cycles after this one.
                    let t = &self.tracks[i];
                    let start = t.start + t.cycle.len * cycle.saturating_sub(t.cycle_no).max(1);
                    let due = self.time_of(start) as f64 - self.lookahead as f64;
                    let margin_ms = (due - self.now as f64) / 1e6;
                    if let Ok(mut timing) = self.shared.timing.lock() {
                        let e = timing.entry(name.clone()).or_default();
                        e.recent_ms[e.made as usize % RECENT_MARGINS] = margin_ms;
                        e.made += 1;
                        e.last_margin_ms = margin_ms;
                        e.worst_margin_ms = if e.made == 1 { margin_ms } else { e.worst_margin_ms.min(margin_ms) };
                    }
                    // A cycle that comes after its turn (the last one was repeated) plays next.
                    let t = &mut self.tracks[i];
                    if cycle >= t.cycle_no {
                        let c = prepare(&score);
                        if c.len == 0 {
                            let _ = self.reports.send(Report::EmptyLoop { name });
                        } else {
                            t.next = Some(c);
                        }
                    }
                }
            }
            Command::StopLoop { name, at } => {
                if at == At::Now {
                    while let Some(i) = self.tracks.iter().position(|t| t.name.as_deref() == Some(&name)) {
                        self.stop_now(i);
                    }
                } else if let Some(i) = self.live_loop(&name) {
                    let end = self.resolve(at, Some(&self.tracks[i]));
                    for t in self.tracks.iter_mut().filter(|t| t.name.as_deref() == Some(&name)) {
                        if t.start >= end {
                            t.done = true;
                        } else {
                            t.end_at = Some(t.end_at.map_or(end, |e| e.min(end)));
                        }
                        t.feeder = None;
                    }
                }
            }
            Command::StopAll { at: At::Now } | Command::Panic => self.flush(),
            Command::StopAll { at } => {
                for i in 0..self.tracks.len() {
                    let end = self.resolve(at, Some(&self.tracks[i]));
                    let t = &mut self.tracks[i];
                    t.end_at = Some(t.end_at.map_or(end, |e| e.min(end)));
                    t.feeder = None;
                }
            }
            Command::Tempo { bpm, at } => {
                let tick = self.resolve(at, None);
                self.pending_tempo = Some((tick, sane_bpm(bpm)));
                self.apply_tempo_if_due();
            }
            Command::Meter(m) => {
                let at = self.next_bar(self.horizon);
                self.pending_meter = Some((at, m.bar_ticks().max(1)));
            }
            Command::Follow { leader_tick, at, bpm } => self.follow(leader_tick, at, bpm),
            Command::SetOutput(slot, out) => self.push_control(Control::SetOutput(slot, out)),
            Command::RemoveOutput(slot) => self.push_control(Control::RemoveOutput(slot)),
            Command::ClockOut { port: Some(p) } => {
                let at = self.next_bar(self.horizon);
                self.clock_start = Some((at, p.min(MAX_PORTS as u8 - 1)));
            }
            Command::ClockOut { port: None } => {
                if let Some(p) = self.clock_port.take() {
                    let at = self.time_of(self.horizon);
                    self.push_event(Event {
                        at,
                        tag: SYSTEM_TAG,
                        epoch: self.epoch,
                        port: p,
                        len: 1,
                        bytes: [msg::STOP, 0, 0],
                    });
                }
                self.clock_start = None;
            }
            Command::Shutdown => {
                self.tracks.clear();
                self.backlog.clear();
                self.push_control(Control::Shutdown);
                self.shutdown = true;
            }
        }
        self.publish();
    }

    fn push_control(&mut self, c: Control) {
        // The control ring is only full if the player has stopped; then nothing can be done.
        let _ = self.control.push(c);
    }

    /// Stops one track at once: its queued events are dropped and its notes turned off by the player.
    fn stop_now(&mut self, i: usize) {
        let t = self.tracks.remove(i);
        self.backlog.retain(|e| e.tag != t.tag);
        if t.name.is_none() {
            self.finish_oneshot();
        }
        self.push_control(Control::StopTag(t.tag));
    }

    /// Everything stops at once: the ring's contents are dropped and every note turned off.
    fn flush(&mut self) {
        let oneshots = self.tracks.iter().filter(|t| t.name.is_none()).count();
        self.tracks.clear();
        self.backlog.clear();
        self.epoch += 1;
        self.push_control(Control::Flush { epoch: self.epoch });
        if oneshots > 0 {
            self.finish_oneshot();
        }
        // Programs may be reset by the synth's own panic handling; send them again.
        self.programs = [[None; 16]; MAX_PORTS];
    }

    fn finish_oneshot(&self) {
        self.shared.oneshot_mark.store(self.shared.pushed.load(Ordering::Relaxed), Ordering::Release);
    }

    fn publish(&self) {
        if let Ok(mut names) = self.shared.loops.lock() {
            *names = self.loop_names();
        }
        self.shared.tracks.store(self.tracks.len(), Ordering::Release);
        self.shared.oneshots.store(self.tracks.iter().filter(|t| t.name.is_none()).count(), Ordering::Release);
        self.shared.bpm_bits.store(self.bpm.to_bits(), Ordering::Relaxed);
        self.shared.horizon.store(self.horizon, Ordering::Relaxed);
    }

    /// One step of the phase-locked loop that keeps our bar lines on a leader's.
    ///
    /// The phase error is where our bar grid is at `at` minus where the leader is, wrapped to
    /// half a bar either way. Small errors (up to half a beat) are removed by playing slightly
    /// faster or slower than the leader for the next beat: a PI controller (half the error now,
    /// a tenth of the sum so far, which cancels a steady bias in the leader's tempo estimate; at
    /// most ±10%, so a melody never audibly lurches). A larger error (the leader just started, or jumped)
    /// cannot be caught up without skipping music, so the music waits instead: the unscheduled
    /// part moves later by the error modulo a bar, never earlier. Both re-anchor at the horizon,
    /// so nothing already queued moves.
    fn follow(&mut self, leader_tick: f64, at: Nanos, leader_bpm: f64) {
        let leader_bpm = sane_bpm(leader_bpm);
        let bar = self.bar as f64;
        let ours = self.tick0 as f64 + (at as f64 - self.time0 as f64) / self.nanos_per_tick;
        let phase = (ours - self.bar_origin as f64) - leader_tick;
        let error = (phase + bar / 2.0).rem_euclid(bar) - bar / 2.0;
        let beat = crate::time::PPQ as f64;
        let time_at_horizon = self.time_of(self.horizon);
        let (bpm, delay_ticks) = if error.abs() <= beat / 2.0 {
            self.follow_integral = (self.follow_integral + error / beat).clamp(-1.0, 1.0);
            let correction = 0.5 * error / beat + 0.1 * self.follow_integral;
            (leader_bpm * (1.0 - correction).clamp(0.9, 1.1), 0.0)
        } else {
            self.follow_integral = 0.0;
            (leader_bpm, error.rem_euclid(bar))
        };
        self.pending_tempo = None;
        self.tick0 = self.horizon;
        self.bpm = sane_bpm(bpm);
        self.nanos_per_tick = nanos_per_tick(self.bpm);
        self.time0 = time_at_horizon + (delay_ticks * nanos_per_tick(leader_bpm)).round() as Nanos;
    }

    fn apply_tempo_if_due(&mut self) {
        if let Some((tick, bpm)) = self.pending_tempo {
            if tick <= self.horizon {
                // Re-anchor at the horizon: ticks already queued keep their times.
                let at = self.horizon.max(tick);
                self.time0 = self.time_of(at);
                self.tick0 = at;
                self.bpm = bpm;
                self.nanos_per_tick = nanos_per_tick(bpm);
                self.pending_tempo = None;
            }
        }
    }

    /// Names of the loops playing or about to start.
    pub fn loop_names(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.tracks.iter().filter(|t| t.end_at.is_none() && !t.done).filter_map(|t| t.name.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Schedules everything sounding up to `now + lookahead` and pushes it to the player.
    pub fn fill(&mut self, now: Nanos) {
        self.now = self.now.max(now);
        if self.shutdown || !self.drain_backlog() {
            return;
        }
        let target = now + self.lookahead;
        loop {
            let target_tick = self.tick_at(target) + 1;
            let mut limit = target_tick;
            if let Some((t, _)) = self.pending_tempo {
                limit = limit.min(t.max(self.horizon));
            }
            if let Some((t, _)) = self.pending_meter {
                limit = limit.min(t.max(self.horizon));
            }
            if limit > self.horizon {
                self.schedule_until(limit);
                self.horizon = limit;
            }
            if let Some((t, bar)) = self.pending_meter {
                if t <= self.horizon {
                    self.bar_origin = t;
                    self.bar = bar;
                    self.pending_meter = None;
                    continue;
                }
            }
            if self.pending_tempo.is_some_and(|(t, _)| t <= self.horizon) {
                self.apply_tempo_if_due();
                continue;
            }
            break;
        }
        self.drain_backlog();
        self.publish();
    }

    fn push_event(&mut self, ev: Event) {
        self.backlog.push_back(ev);
    }

    /// Moves queued events into the ring; false when the ring is full.
    fn drain_backlog(&mut self) -> bool {
        while let Some(ev) = self.backlog.front().copied() {
            if self.events.push(ev).is_err() {
                if !self.reported_full {
                    self.reported_full = true;
                    let _ = self.reports.send(Report::RingFull);
                }
                return false;
            }
            self.backlog.pop_front();
            self.shared.pushed.fetch_add(1, Ordering::Release);
        }
        self.reported_full = false;
        true
    }

    /// Generates every event with a tick in `[horizon, limit)`, in time order across tracks.
    fn schedule_until(&mut self, limit: Tick) {
        let mut batch: Vec<Pending> = Vec::new();
        self.clock_events(limit, &mut batch);
        let mut requests: Vec<(Sender<CycleRequest>, CycleRequest)> = Vec::new();
        let mut late: Vec<Report> = Vec::new();
        let mut finished_oneshot = false;
        for t in &mut self.tracks {
            if t.done {
                continue;
            }
            emit(t, limit, self.program_changes, &mut self.programs, &mut batch, &mut requests, &mut late, self.bpm);
            if t.done && t.name.is_none() {
                finished_oneshot = true;
            }
        }
        self.tracks.retain(|t| !t.done);
        batch.sort_by_key(|p| (p.tick, p.kind));
        for p in batch {
            let at = self.time_of(p.tick);
            self.backlog.push_back(Event {
                at,
                tag: p.tag,
                epoch: self.epoch,
                port: p.port,
                len: p.len,
                bytes: p.bytes,
            });
        }
        if finished_oneshot {
            // The mark counts events queued so far, so include this batch.
            let pushed = self.shared.pushed.load(Ordering::Relaxed) + self.backlog.len() as u64;
            self.shared.oneshot_mark.store(pushed, Ordering::Release);
        }
        for (f, r) in requests {
            let _ = f.send(r);
        }
        for r in late {
            if let (Report::CycleLate { name, .. }, Ok(mut timing)) = (&r, self.shared.timing.lock()) {
                timing.entry(name.clone()).or_default().replayed += 1;
            }
            let _ = self.reports.send(r);
        }
    }

    fn clock_events(&mut self, limit: Tick, batch: &mut Vec<Pending>) {
        if let Some((at, port)) = self.clock_start {
            if at < limit {
                let at = at.max(self.horizon);
                batch.push(Pending { tick: at, kind: K_SYS, tag: SYSTEM_TAG, port, len: 1, bytes: [msg::START, 0, 0] });
                self.clock_port = Some(port);
                self.clock_next = at;
                self.clock_start = None;
            }
        }
        if let Some(port) = self.clock_port {
            while self.clock_next < limit {
                let tick = self.clock_next;
                batch.push(Pending { tick, kind: K_SYS, tag: SYSTEM_TAG, port, len: 1, bytes: [msg::CLOCK, 0, 0] });
                self.clock_next += CLOCK_TICKS;
            }
        }
    }
}

/// Emits one track's events with ticks below `limit`: note-ons, their note-offs (kept in a heap so
/// they can cross cycle ends), cycle roll-overs, and the cut at `end_at`.
#[allow(clippy::too_many_arguments)]
fn emit(
    t: &mut Track,
    limit: Tick,
    program_changes: bool,
    programs: &mut [[Option<u8>; 16]; MAX_PORTS],
    batch: &mut Vec<Pending>,
    requests: &mut Vec<(Sender<CycleRequest>, CycleRequest)>,
    late: &mut Vec<Report>,
    bpm: f64,
) {
    let oneshot = t.name.is_none();
    loop {
        let next_on = if t.idx < t.cycle.notes.len() {
            t.start + t.cycle.notes[t.idx].start
        } else if oneshot {
            Tick::MAX
        } else {
            t.start + t.cycle.len
        };
        let next_off = t.offs.peek().map_or(Tick::MAX, |Reverse((tick, _, _))| *tick);
        let end = t.end_at.unwrap_or(Tick::MAX);
        let tick = next_on.min(next_off).min(end);
        if oneshot && tick == Tick::MAX {
            t.done = true;
            return;
        }
        if tick >= limit {
            return;
        }
        if next_off == tick && (next_off <= end) {
            let Reverse((_, ch, pitch)) = t.offs.pop().unwrap_or(Reverse((tick, 0, 0)));
            let b = msg::note_off(ch, pitch);
            batch.push(Pending { tick, kind: K_OFF, tag: t.tag, port: t.port, len: 3, bytes: b });
            continue;
        }
        if end == tick {
            // Cut: notes still sounding end at the boundary, in pitch order.
            while let Some(Reverse((_, ch, pitch))) = t.offs.pop() {
                let b = msg::note_off(ch, pitch);
                batch.push(Pending { tick, kind: K_OFF, tag: t.tag, port: t.port, len: 3, bytes: b });
            }
            t.done = true;
            return;
        }
        if t.idx < t.cycle.notes.len() {
            let n = t.cycle.notes[t.idx];
            t.idx += 1;
            let prog = &mut programs[t.port as usize][n.channel as usize];
            if program_changes && n.channel != 9 && *prog != Some(n.program) {
                *prog = Some(n.program);
                let b = msg::program(n.channel, n.program);
                batch.push(Pending { tick, kind: K_SYS, tag: t.tag, port: t.port, len: 2, bytes: [b[0], b[1], 0] });
            }
            batch.push(Pending {
                tick,
                kind: K_ON,
                tag: t.tag,
                port: t.port,
                len: 3,
                bytes: msg::note_on(n.channel, n.pitch, n.velocity),
            });
            t.offs.push(Reverse((tick + n.dur, n.channel, n.pitch)));
            continue;
        }
        // Roll over to the next cycle.
        t.start += t.cycle.len;
        t.cycle_no += 1;
        t.idx = 0;
        match t.next.take() {
            Some(c) => t.cycle = c,
            None => {
                if t.feeder.is_some() {
                    late.push(Report::CycleLate { name: t.name.clone().unwrap_or_default(), cycle: t.cycle_no });
                }
            }
        }
        if let Some(f) = &t.feeder {
            let r = CycleRequest { name: t.name.clone().unwrap_or_default(), cycle: t.cycle_no + 1, bpm };
            requests.push((f.clone(), r));
        }
    }
}

fn sane_bpm(bpm: f64) -> f64 {
    if bpm.is_finite() {
        bpm.clamp(1.0, 2000.0)
    } else {
        crate::time::DEFAULT_BPM
    }
}

fn nanos_per_tick(bpm: f64) -> f64 {
    60.0e9 / bpm / PPQ as f64
}

/// Default lookahead: long enough to ride out scheduler hiccups, short enough to feel live.
pub const DEFAULT_LOOKAHEAD: Nanos = 100 * MILLI;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::play::clock::MILLI;
    use crate::play::player::Rings;
    use crate::score::Note;

    /// Regression: the first notes after the engine started went out 16 ms late, because
    /// connecting the port took that long and `At::Now` still meant tick 0 (the engine's start).
    #[test]
    fn a_play_after_an_idle_start_is_due_after_now_not_at_the_start() {
        let rings = Rings::new(64);
        let (tx, _reports) = std::sync::mpsc::channel();
        let lookahead = 40 * MILLI;
        let mut seq = Sequencer::new(
            0,
            lookahead,
            120.0,
            false,
            rings.events.0,
            rings.control.0,
            tx,
            Arc::new(SeqShared::default()),
        );
        let mut events = rings.events.1;
        let mut score = Score::new();
        score.notes = vec![Note::new(0, 480, 60)];
        score.length = 480;
        let now = 16 * MILLI;
        seq.catch_up(now);
        seq.handle(Command::Play { score: score.clone(), port: 0, at: At::Now });
        seq.fill(now);
        let first = events.pop().expect("the note-on was scheduled");
        assert!(first.at >= now, "due at {} ns, before now ({now} ns)", first.at);
        assert!(first.at <= now + lookahead + MILLI, "due at {} ns, more than a lookahead away", first.at);
        // While something plays, the horizon is left alone: nothing may be skipped.
        let before = seq.horizon();
        seq.catch_up(now + 10 * lookahead);
        assert_eq!(seq.horizon(), before);
    }
}
