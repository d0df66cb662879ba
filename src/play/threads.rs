//! The threaded mode of [`super::Transport`]: a sequencer thread that fills the rings a
//! lookahead ahead of the clock, the real-time player thread that sends each event when due,
//! and one feeder thread per generating loop.

use super::clock::{Clock, Nanos, MILLI};
use super::player::{Player, Stats};
use super::sequencer::{Command, CycleRequest, Report, Sequencer};
use super::transport::{PlayError, Producer};
use crate::sink::out::MidiOut;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Name of the real-time thread (the panic hook must not wait on it from inside it).
pub const PLAYER_THREAD: &str = "cadenza-player";

/// Threads of a running engine.
pub(super) struct Threads {
    pub(super) sequencer: Option<JoinHandle<()>>,
    pub(super) player: Option<JoinHandle<Vec<Box<dyn MidiOut>>>>,
    pub(super) watcher: Option<JoinHandle<()>>,
}

/// How often the sequencer wakes to refill, as a fraction of the lookahead.
pub(super) fn period(lookahead: Nanos) -> Nanos {
    (lookahead / 4).clamp(MILLI, 50 * MILLI)
}

/// Starts the player thread (real-time when asked) and the sequencer thread over `clock`.
pub(super) fn spawn(
    seq: Sequencer,
    player: Player,
    commands: Receiver<Command>,
    mut returned: rtrb::Consumer<Box<dyn MidiOut>>,
    clock: Arc<dyn Clock>,
    realtime: bool,
    stats: Arc<Stats>,
) -> Result<Threads, PlayError> {
    let pclock = clock.clone();
    let player = std::thread::Builder::new()
        .name(PLAYER_THREAD.into())
        .spawn(move || {
            let granted = realtime && super::realtime::make_realtime();
            stats.realtime.store(if granted { 1 } else { 2 }, std::sync::atomic::Ordering::Release);
            player.run(pclock)
        })
        .map_err(|e| PlayError::Thread { what: "player", reason: e.to_string() })?;
    let sequencer = std::thread::Builder::new()
        .name("cadenza-sequencer".into())
        .spawn(move || sequencer_thread(seq, commands, &mut returned, clock))
        .map_err(|e| PlayError::Thread { what: "sequencer", reason: e.to_string() })?;
    Ok(Threads { sequencer: Some(sequencer), player: Some(player), watcher: None })
}

/// Starts a loop's feeder thread: its producer makes each cycle one cycle ahead.
pub(super) fn spawn_feeder(
    name: &str,
    generation: u64,
    producer: Box<dyn Producer>,
    requests: Receiver<CycleRequest>,
    commands: Sender<Command>,
    reports: Sender<Report>,
) -> Result<(), PlayError> {
    let lname = name.to_string();
    std::thread::Builder::new()
        .name(format!("cadenza-loop-{name}"))
        .spawn(move || feeder_thread(lname, generation, producer, requests, commands, reports))
        .map(|_| ())
        .map_err(|e| PlayError::Thread { what: "loop", reason: e.to_string() })
}

fn sequencer_thread(
    mut seq: Sequencer,
    commands: Receiver<Command>,
    returned: &mut rtrb::Consumer<Box<dyn MidiOut>>,
    clock: Arc<dyn Clock>,
) {
    let wait = Duration::from_nanos(period(seq.lookahead()));
    loop {
        match commands.recv_timeout(wait) {
            Ok(c) => {
                seq.catch_up(clock.now());
                seq.handle(c);
                while let Ok(c) = commands.try_recv() {
                    seq.handle(c);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => seq.handle(Command::Shutdown),
        }
        // Outputs the player gave back are closed here, off the real-time thread.
        while returned.pop().is_ok() {}
        if seq.is_shutdown() {
            break;
        }
        seq.fill(clock.now());
    }
}

/// Runs a loop's producer one cycle ahead; ends when the loop is replaced or stopped (the
/// sequencer drops the request channel).
fn feeder_thread(
    name: String,
    generation: u64,
    mut producer: Box<dyn Producer>,
    requests: Receiver<CycleRequest>,
    commands: Sender<Command>,
    reports: Sender<Report>,
) {
    while let Ok(mut req) = requests.recv() {
        // Behind by more than one cycle: only the latest request matters.
        while let Ok(r) = requests.try_recv() {
            req = r;
        }
        match producer.next(&req) {
            Ok(score) => {
                let c = Command::Cycle { name: name.clone(), generation, cycle: req.cycle, score };
                if commands.send(c).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = reports.send(Report::LoopError { name: name.clone(), message: e.to_string() });
            }
        }
    }
}
