//! The only module that knows wall-clock time: clock, sequencer, real-time player, note-off ledger, ports.
//!
//! Threads (see `DESIGN.md`): the caller talks to [`Transport`]; a sequencer thread turns scores and
//! loops into timestamped events a lookahead ahead of now; the real-time player thread sends
//! them when due and keeps the note-off ledger. Nothing on the player's path allocates or locks.

pub mod clock;
pub mod event;
pub mod exit;
pub mod ledger;
mod manual;
pub mod player;
pub mod ports;
pub mod realtime;
pub mod sequencer;
mod threads;
pub mod transport;

pub use clock::{Clock, FakeClock, MonotonicClock, Nanos};
pub use exit::{Silencer, EXIT_GRACE};
pub use ports::{clock_sync, input};
pub use sequencer::{At, CycleRequest, LoopTiming, Report};
pub use threads::PLAYER_THREAD;
pub use transport::{LoopSource, PlayError, PlayOpts, Producer, ProducerError, Transport, TransportConfig};

#[cfg(test)]
mod tests;
