//! The manual mode of [`super::Transport`]: no threads; a test moves a [`FakeClock`] with
//! [`super::Transport::advance_to`] and every event is sent exactly when due, so tests assert
//! exact timestamps without reading the wall clock.

use super::clock::{Clock, FakeClock, Nanos};
use super::player::{Player, Step};
use super::sequencer::{Command, CycleRequest, Report, Sequencer};
use super::threads::period;
use super::transport::Producer;
use crate::sink::out::MidiOut;
use std::sync::mpsc::{Receiver, Sender};

/// Everything of a manual engine, stepped by [`Transport::advance_to`].
pub(super) struct ManualCore {
    pub(super) seq: Sequencer,
    pub(super) player: Player,
    pub(super) commands: Receiver<Command>,
    pub(super) returned: rtrb::Consumer<Box<dyn MidiOut>>,
    pub(super) producers: Vec<Feeder>,
    pub(super) clock: FakeClock,
}

/// A generating loop's producer with its name, generation and request channel.
pub(super) type Feeder = (String, u64, Receiver<CycleRequest>, Box<dyn Producer>);

/// Moves `core`'s fake clock to `t`, running the sequencer and player on the way: each event
/// is sent at exactly its due time.
pub(super) fn advance(core: &mut ManualCore, t: Nanos, reports: &Sender<Report>) {
    let period = period(core.seq.lookahead());
    let mut now = core.clock.now();
    let mut next_fill = now;
    loop {
        while let Ok(c) = core.commands.try_recv() {
            core.seq.handle(c);
        }
        if now >= next_fill {
            core.seq.fill(now);
            next_fill = now + period;
            serve_producers(core, reports);
        }
        while core.returned.pop().is_ok() {}
        let next_due = match core.player.poll(now) {
            Step::Until(x) => x,
            Step::Idle => Nanos::MAX,
            Step::Shutdown => return,
        };
        let next = next_due.min(next_fill);
        if next > t {
            if now < t {
                core.clock.set(t);
                now = t;
                continue;
            }
            return;
        }
        core.clock.set(next);
        now = next;
    }
}

fn serve_producers(core: &mut ManualCore, reports: &Sender<Report>) {
    let mut made = Vec::new();
    for (name, generation, rx, producer) in &mut core.producers {
        while let Ok(req) = rx.try_recv() {
            match producer.next(&req) {
                Ok(score) => {
                    made.push(Command::Cycle { name: name.clone(), generation: *generation, cycle: req.cycle, score })
                }
                Err(e) => {
                    let _ = reports.send(Report::LoopError { name: name.clone(), message: e.to_string() });
                }
            }
        }
    }
    for c in made {
        core.seq.handle(c);
    }
}
