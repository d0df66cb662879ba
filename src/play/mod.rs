//! The only module that knows wall-clock time: clock, sequencer, real-time player, note-off ledger, ports.
//!
//! Threads (see `DESIGN.md`): the caller talks to [`Transport`]; a sequencer thread turns scores and
//! loops into timestamped events a lookahead ahead of now; the real-time player thread sends
//! them when due and keeps the note-off ledger. Nothing on the player's path allocates or locks.

pub mod clock;
pub mod clock_sync;
pub mod engine;
pub mod event;
pub mod input;
pub mod ledger;
pub mod player;
pub mod sequencer;

pub use clock::{Clock, FakeClock, MonotonicClock, Nanos};
pub use engine::{LoopSource, PlayError, PlayOpts, Producer, Silencer, Transport, TransportConfig};
pub use sequencer::{At, CycleRequest, Report};

#[cfg(test)]
mod tests;
