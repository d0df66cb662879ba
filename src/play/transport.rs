//! `play::Transport`: the handle the rest of cadenza plays through; it runs the sequencer and the real-time player.
//!
//! Two modes share all the logic: [`Transport::start`] runs threads ([`super::threads`]);
//! [`Transport::manual`] runs none and is stepped by a test ([`super::manual`]). Ports live in
//! [`super::ports`], leaving without hanging notes in [`super::exit`].

use super::clock::{Clock, FakeClock, MonotonicClock, Nanos, MILLI};
use super::event::MAX_PORTS;
use super::manual::{self, ManualCore};
use super::player::{Jitter, Player, Rings, Stats, LATE_STEPS};
use super::ports::{self, Slot};
use super::sequencer::{At, Command, CycleRequest, Report, SeqShared, Sequencer, DEFAULT_LOOKAHEAD};
use super::threads::{self, Threads};
use crate::score::Score;
use crate::sink::out::{MidiOut, OutError};
use crate::time::Meter;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What can go wrong driving the engine.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error(transparent)]
    Out(#[from] OutError),
    #[error("tempo {0} must be between 10 and 1000 bpm")]
    BadTempo(f64),
    #[error("the play engine has shut down")]
    Stopped,
    #[error("all {0} output slots are in use")]
    NoSlot(usize),
    #[error("no output in slot {0}")]
    NoSuchSlot(u8),
    #[error("loop {name}: {message}")]
    Loop { name: String, message: String },
    #[error("loop {name}: the score is empty (length 0); nothing to loop")]
    EmptyLoop { name: String },
    #[error("cannot start the {what} thread: {reason}")]
    Thread { what: &'static str, reason: String },
    #[error("stepping time by hand needs an engine made with Transport::manual")]
    NotManual,
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    #[error("MIDI input: {0}")]
    Input(String),
}

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// How far ahead of now the sequencer schedules.
    pub lookahead: Nanos,
    /// Starting tempo (quarter notes per minute).
    pub bpm: f64,
    /// Capacity of the event ring to the player.
    pub ring_capacity: usize,
    /// Send a program change when a note's program differs from what its channel last got.
    pub program_changes: bool,
    /// Ask for real-time scheduling for the player thread (works as root or with rtprio rights).
    pub realtime: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            lookahead: DEFAULT_LOOKAHEAD,
            bpm: crate::time::DEFAULT_BPM,
            ring_capacity: 1 << 14,
            program_changes: true,
            realtime: true,
        }
    }
}

/// Makes the score of each coming cycle of a loop. Called on a worker thread of its own (never
/// the sequencer's), one cycle ahead, so it may take up to a cycle's time (a model generating).
pub trait Producer: Send {
    fn next(&mut self, req: &CycleRequest) -> Result<Score, ProducerError>;
}

/// Why a producer made no score for a cycle: any error (a script's, a model's); the transport
/// reports its message and keeps the last good cycle playing.
pub type ProducerError = Box<dyn std::error::Error + Send + Sync>;

impl<F: FnMut(&CycleRequest) -> Result<Score, ProducerError> + Send> Producer for F {
    fn next(&mut self, req: &CycleRequest) -> Result<Score, ProducerError> {
        self(req)
    }
}

/// What a loop plays each cycle.
// One per loop, built once and moved a few times off the real-time thread: boxing the score
// would add an allocation and an indirection for nothing.
#[allow(clippy::large_enum_variant)]
pub enum LoopSource {
    /// The same score every cycle.
    Fixed(Score),
    /// A new score each cycle, asked for one cycle ahead.
    Producer(Box<dyn Producer>),
}

/// Where and when a loop or play starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlayOpts {
    /// Output slot (0 = the first output the engine was started with).
    pub port: u8,
    pub at: At,
}

enum Mode {
    Threads(Mutex<Threads>),
    Manual(Box<Mutex<ManualCore>>),
}

/// The play engine. `Send + Sync`: share it in an `Arc`.
pub struct Transport {
    pub(super) commands: Mutex<Sender<Command>>,
    reports_tx: Sender<Report>,
    reports: Mutex<Receiver<Report>>,
    shared: Arc<SeqShared>,
    pub(super) stats: Arc<Stats>,
    clock: Arc<dyn Clock>,
    mode: Mode,
    generation: AtomicU64,
    /// Commands sent to the sequencer (see `SeqShared::handled`).
    sent: AtomicU64,
    slots: Arc<Mutex<Vec<Option<Slot>>>>,
    seen_late: Mutex<SeenLate>,
    closing: Arc<AtomicBool>,
    lookahead: Nanos,
}

/// What both kinds of engine (threaded and manual) are built from: the sequencer and player
/// joined by their rings, the command and report channels, and the shared counters.
struct Parts {
    seq: Sequencer,
    player: Player,
    cmd_tx: Sender<Command>,
    cmd_rx: Receiver<Command>,
    rep_tx: Sender<Report>,
    rep_rx: Receiver<Report>,
    shared: Arc<SeqShared>,
    stats: Arc<Stats>,
    returned: rtrb::Consumer<Box<dyn MidiOut>>,
    slots: Vec<Option<Slot>>,
}

impl Parts {
    fn new(outputs: Vec<Box<dyn MidiOut>>, config: &TransportConfig, now: Nanos) -> Result<Parts, PlayError> {
        let slots = ports::slots_of(&outputs)?;
        let rings = Rings::new(config.ring_capacity);
        let (cmd_tx, cmd_rx) = channel();
        let (rep_tx, rep_rx) = channel();
        let shared = Arc::new(SeqShared::default());
        let stats = Arc::new(Stats::default());
        let seq = Sequencer::new(
            now,
            config.lookahead,
            config.bpm,
            config.program_changes,
            rings.events.0,
            rings.control.0,
            rep_tx.clone(),
            shared.clone(),
        );
        let player = Player::new(rings.events.1, rings.control.1, rings.returned.0, outputs, stats.clone());
        Ok(Parts { seq, player, cmd_tx, cmd_rx, rep_tx, rep_rx, shared, stats, returned: rings.returned.1, slots })
    }
}

impl Transport {
    /// Starts the sequencer and player threads on the monotonic clock.
    pub fn start(outputs: Vec<Box<dyn MidiOut>>, config: TransportConfig) -> Result<Transport, PlayError> {
        Transport::start_with_clock(outputs, config, Arc::new(MonotonicClock::new()))
    }

    /// Starts the threads on `clock`.
    pub fn start_with_clock(
        outputs: Vec<Box<dyn MidiOut>>,
        config: TransportConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Transport, PlayError> {
        let p = Parts::new(outputs, &config, clock.now())?;
        let mut threads =
            threads::spawn(p.seq, p.player, p.cmd_rx, p.returned, clock.clone(), config.realtime, p.stats.clone())?;
        let slots = Arc::new(Mutex::new(p.slots));
        let closing = Arc::new(AtomicBool::new(false));
        threads.watcher = ports::spawn_watcher(slots.clone(), p.cmd_tx.clone(), p.rep_tx.clone(), closing.clone());
        let mode = Mode::Threads(Mutex::new(threads));
        Ok(Transport::assemble(p.cmd_tx, p.rep_tx, p.rep_rx, p.shared, p.stats, clock, mode, slots, closing, &config))
    }

    /// An engine with no threads, on a fake clock that only [`Transport::advance_to`] moves.
    pub fn manual(
        outputs: Vec<Box<dyn MidiOut>>,
        config: TransportConfig,
        clock: FakeClock,
    ) -> Result<Transport, PlayError> {
        let p = Parts::new(outputs, &config, clock.now())?;
        let core = ManualCore {
            seq: p.seq,
            player: p.player,
            commands: p.cmd_rx,
            returned: p.returned,
            producers: Vec::new(),
            clock: clock.clone(),
        };
        let mode = Mode::Manual(Box::new(Mutex::new(core)));
        let slots = Arc::new(Mutex::new(p.slots));
        let closing = Arc::new(AtomicBool::new(false));
        Ok(Transport::assemble(
            p.cmd_tx,
            p.rep_tx,
            p.rep_rx,
            p.shared,
            p.stats,
            Arc::new(clock),
            mode,
            slots,
            closing,
            &config,
        ))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        commands: Sender<Command>,
        reports_tx: Sender<Report>,
        reports: Receiver<Report>,
        shared: Arc<SeqShared>,
        stats: Arc<Stats>,
        clock: Arc<dyn Clock>,
        mode: Mode,
        slots: Arc<Mutex<Vec<Option<Slot>>>>,
        closing: Arc<AtomicBool>,
        config: &TransportConfig,
    ) -> Transport {
        Transport {
            commands: Mutex::new(commands),
            reports_tx,
            reports: Mutex::new(reports),
            shared,
            stats,
            clock,
            mode,
            generation: AtomicU64::new(1),
            sent: AtomicU64::new(0),
            slots,
            seen_late: Mutex::new(SeenLate::default()),
            closing,
            lookahead: config.lookahead,
        }
    }

    /// Transport clock now.
    pub fn now(&self) -> Nanos {
        self.clock.now()
    }

    fn send(&self, c: Command) -> Result<(), PlayError> {
        let tx = self.commands.lock().unwrap_or_else(|p| p.into_inner());
        tx.send(c).map_err(|_| PlayError::Stopped)?;
        self.sent.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Plays `score` once on output 0 at the next bar.
    pub fn play(&self, score: &Score) -> Result<(), PlayError> {
        self.play_with(score, PlayOpts::default())
    }

    pub fn play_with(&self, score: &Score, opts: PlayOpts) -> Result<(), PlayError> {
        self.check_slot(opts.port)?;
        self.send(Command::Play { score: score.clone(), port: opts.port, at: opts.at })
    }

    fn check_slot(&self, port: u8) -> Result<(), PlayError> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        match slots.get(port as usize) {
            Some(Some(_)) => Ok(()),
            // An engine without outputs (batch runs, `--no-midi`) still schedules on slot 0.
            _ if port == 0 => Ok(()),
            _ => Err(PlayError::NoSuchSlot(port)),
        }
    }

    /// Starts or replaces the loop `name`. A replacement starts at `opts.at` (the end of the
    /// running cycle for [`At::NextCycle`]); the old one is cut there. For a producer, the first
    /// cycle is made here, on the caller's thread, so a failure leaves the old loop playing and
    /// comes back as the error.
    pub fn set_loop(&self, name: &str, source: LoopSource, opts: PlayOpts) -> Result<(), PlayError> {
        self.check_slot(opts.port)?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        match source {
            LoopSource::Fixed(score) => {
                if score.length == 0 && score.notes.is_empty() {
                    return Err(PlayError::EmptyLoop { name: name.to_string() });
                }
                self.send(Command::SetLoop {
                    name: name.to_string(),
                    score,
                    port: opts.port,
                    at: opts.at,
                    feeder: None,
                    generation,
                })
            }
            LoopSource::Producer(mut producer) => {
                let req = CycleRequest { name: name.to_string(), cycle: 0, bpm: self.tempo() };
                let first = producer
                    .next(&req)
                    .map_err(|e| PlayError::Loop { name: name.to_string(), message: e.to_string() })?;
                if first.length == 0 && first.notes.is_empty() {
                    return Err(PlayError::EmptyLoop { name: name.to_string() });
                }
                let (req_tx, req_rx) = channel::<CycleRequest>();
                match &self.mode {
                    Mode::Manual(core) => {
                        let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
                        core.producers.retain(|(n, ..)| n != name);
                        core.producers.push((name.to_string(), generation, req_rx, producer));
                    }
                    Mode::Threads(_) => {
                        let tx = self.commands.lock().unwrap_or_else(|p| p.into_inner()).clone();
                        threads::spawn_feeder(name, generation, producer, req_rx, tx, self.reports_tx.clone())?;
                    }
                }
                self.send(Command::SetLoop {
                    name: name.to_string(),
                    score: first,
                    port: opts.port,
                    at: opts.at,
                    feeder: Some(req_tx),
                    generation,
                })
            }
        }
    }

    /// Stops loop `name` at `at` (its sounding notes end there).
    pub fn stop_loop(&self, name: &str, at: At) -> Result<(), PlayError> {
        self.send(Command::StopLoop { name: name.to_string(), at })
    }

    /// Stops every play and loop at `at`; [`At::Now`] is the same as [`Transport::panic`].
    pub fn stop_all(&self, at: At) -> Result<(), PlayError> {
        self.send(Command::StopAll { at })
    }

    /// Stops everything at once: queued events are dropped, every sounding note gets its
    /// note-off, and CC 123 goes to each channel that was used.
    pub fn panic(&self) -> Result<(), PlayError> {
        self.send(Command::Panic)
    }

    /// Sets the tempo (10..=1000 bpm) from `at`; queued events keep their times.
    pub fn set_tempo(&self, bpm: f64, at: At) -> Result<(), PlayError> {
        if !(bpm.is_finite() && (10.0..=1000.0).contains(&bpm)) {
            return Err(PlayError::BadTempo(bpm));
        }
        self.send(Command::Tempo { bpm, at })
    }

    /// Locks the bar grid to a leader: at clock time `at` (see [`Transport::now`]) the leader was
    /// `leader_tick` ticks (at [`crate::time::PPQ`]) past its first downbeat, playing at `bpm`.
    /// Call it once a beat; the sequencer nudges its tempo (or, for a large error, waits) so its
    /// bar lines fall on the leader's.
    pub fn follow(&self, leader_tick: f64, at: Nanos, bpm: f64) -> Result<(), PlayError> {
        if !(bpm.is_finite() && (10.0..=1000.0).contains(&bpm)) {
            return Err(PlayError::BadTempo(bpm));
        }
        self.send(Command::Follow { leader_tick, at, bpm })
    }

    /// The tempo at the scheduling horizon.
    pub fn tempo(&self) -> f64 {
        f64::from_bits(self.shared.bpm_bits.load(Ordering::Relaxed))
    }

    /// The global bar grid's meter from the next bar on.
    pub fn set_meter(&self, meter: Meter) -> Result<(), PlayError> {
        self.send(Command::Meter(meter))
    }

    /// How far ahead each generating loop's cycles arrive, by loop name (see
    /// [`super::sequencer::LoopTiming`]).
    pub fn loop_timing(&self) -> std::collections::BTreeMap<String, super::sequencer::LoopTiming> {
        self.shared.timing.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Whether the player thread got real-time scheduling: `Some(true)` (SCHED_FIFO), `Some(false)`
    /// (normal scheduling: no rights, or not asked), `None` while it has not started (waits up
    /// to 200 ms for it).
    pub fn realtime(&self) -> Option<bool> {
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        loop {
            match self.stats.realtime.load(Ordering::Acquire) {
                1 => return Some(true),
                2 => return Some(false),
                _ if std::time::Instant::now() >= deadline => return None,
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Names of the loops playing (as of the sequencer's last round).
    pub fn loops(&self) -> Vec<String> {
        self.shared.loops.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Adds an output in the first free slot and returns the slot.
    pub fn add_output(&self, out: Box<dyn MidiOut>) -> Result<u8, PlayError> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let i = match slots.iter().position(|s| s.is_none()) {
                Some(i) => i,
                None if slots.len() < MAX_PORTS => {
                    slots.push(None);
                    slots.len() - 1
                }
                None => return Err(PlayError::NoSlot(MAX_PORTS)),
            };
            slots[i] = Some(ports::slot_of(&*out));
            i as u8
        };
        self.send(Command::SetOutput(slot, out))?;
        Ok(slot)
    }

    /// Removes an output (its notes are turned off first).
    pub fn remove_output(&self, slot: u8) -> Result<(), PlayError> {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match slots.get_mut(slot as usize) {
                Some(s @ Some(_)) => *s = None,
                _ => return Err(PlayError::NoSuchSlot(slot)),
            }
        }
        self.send(Command::RemoveOutput(slot))
    }

    /// `(slot, name)` of each output.
    pub fn outputs(&self) -> Vec<(u8, String)> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.iter().enumerate().filter_map(|(i, s)| s.as_ref().map(|s| (i as u8, s.name.clone()))).collect()
    }

    /// Sends MIDI clock (24 ppqn, Start at the next bar) on output `port`; `None` sends Stop.
    pub fn clock_out(&self, port: Option<u8>) -> Result<(), PlayError> {
        if let Some(p) = port {
            self.check_slot(p)?;
        }
        self.send(Command::ClockOut { port })
    }

    /// True when nothing is scheduled or queued (with `loops_too` false: no one-shot play is).
    pub fn is_idle(&self, loops_too: bool) -> bool {
        // A command still on its way (a play or loop just sent) is not silence.
        if self.shared.handled.load(Ordering::Acquire) < self.sent.load(Ordering::Acquire) {
            return false;
        }
        let consumed = self.stats.consumed.load(Ordering::Acquire);
        if loops_too {
            self.shared.tracks.load(Ordering::Acquire) == 0 && consumed >= self.shared.pushed.load(Ordering::Acquire)
        } else {
            self.shared.oneshots.load(Ordering::Acquire) == 0
                && consumed >= self.shared.oneshot_mark.load(Ordering::Acquire)
        }
    }

    /// Waits until [`Transport::is_idle`] or `cancel` is set; true when idle. A manual engine moves
    /// its fake clock forward to get there (at most an hour of fake time).
    pub fn wait_idle(&self, cancel: &AtomicBool, loops_too: bool) -> bool {
        // A command just sent may not have reached the sequencer: give it one round first.
        let settle = self.now() + threads::period(self.lookahead) * 2;
        loop {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            let now = self.now();
            if now >= settle && self.is_idle(loops_too) {
                return true;
            }
            match &self.mode {
                Mode::Manual(_) => {
                    if now > settle + 3600 * super::clock::SECOND || self.advance_to(now + MILLI).is_err() {
                        return false;
                    }
                }
                Mode::Threads(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Moves a manual engine's fake clock to `t`, running the sequencer and player on the way:
    /// each event is sent at exactly its due time.
    pub fn advance_to(&self, t: Nanos) -> Result<(), PlayError> {
        let Mode::Manual(core) = &self.mode else { return Err(PlayError::NotManual) };
        let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
        manual::advance(&mut core, t, &self.reports_tx);
        Ok(())
    }

    /// Lateness so far (median, p99, max over every event sent).
    pub fn jitter(&self) -> Jitter {
        self.stats.jitter()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Messages for the user since the last call: loop errors, late cycles, vanished ports, and
    /// lateness in escalating steps (only the highest step crossed is reported).
    pub fn take_reports(&self) -> Vec<Report> {
        let mut out: Vec<Report> = Vec::new();
        if let Ok(rx) = self.reports.lock() {
            while let Ok(r) = rx.try_recv() {
                out.push(r);
            }
        }
        let mut seen = self.seen_late.lock().unwrap_or_else(|p| p.into_inner());
        let now: [u64; 4] = std::array::from_fn(|i| self.stats.late_over[i].load(Ordering::Relaxed));
        // The highest step crossed since it was last shown; a step already shown is shown again
        // only after LATE_REPEAT, with the count since, so a slow machine gets one line a
        // minute, not one per entry.
        if let Some(i) = (0..4).rev().find(|&i| now[i] > seen.shown_count[i]) {
            let due = seen.shown_at[i].is_none_or(|at| at.elapsed() >= LATE_REPEAT);
            if due {
                out.push(Report::Late {
                    step_ms: LATE_STEPS[i] / MILLI,
                    count: now[i] - seen.shown_count[i],
                    max_ms: self.stats.max_late.load(Ordering::Relaxed) as f64 / MILLI as f64,
                });
                // Lower steps are covered by this line too.
                seen.shown_count[..=i].copy_from_slice(&now[..=i]);
                seen.shown_at[..=i].fill(Some(std::time::Instant::now()));
            }
        }
        for p in 0..MAX_PORTS {
            let e = self.stats.send_errors[p].load(Ordering::Relaxed);
            if e > seen.send_errors[p] {
                out.push(Report::SendErrors { port: p as u8, count: e - seen.send_errors[p] });
                seen.send_errors[p] = e;
            }
        }
        out
    }

    /// Stops everything, turns every note off, ends the threads and hands the outputs back.
    pub fn shutdown(&self) -> Vec<Box<dyn MidiOut>> {
        self.closing.store(true, Ordering::Relaxed);
        let _ = self.send(Command::Shutdown);
        match &self.mode {
            Mode::Threads(t) => {
                let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(s) = t.sequencer.take() {
                    let _ = s.join();
                }
                if let Some(w) = t.watcher.take() {
                    let _ = w.join();
                }
                t.player.take().and_then(|p| p.join().ok()).unwrap_or_default()
            }
            Mode::Manual(core) => {
                let mut core = core.lock().unwrap_or_else(|p| p.into_inner());
                let core = &mut *core;
                while let Ok(c) = core.commands.try_recv() {
                    core.seq.handle(c);
                }
                let now = core.clock.now();
                core.player.poll(now);
                Vec::new()
            }
        }
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if !self.closing.load(Ordering::Relaxed) {
            self.shutdown();
        }
    }
}

/// How long before a lateness step already shown is shown again.
const LATE_REPEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// What [`Transport::take_reports`] has told the user so far.
#[derive(Default)]
struct SeenLate {
    /// Events over each lateness step when that step was last shown, and when.
    shown_count: [u64; 4],
    shown_at: [Option<std::time::Instant>; 4],
    send_errors: [u64; MAX_PORTS],
}
