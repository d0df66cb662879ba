//! The only module that knows wall-clock time: clock, sequencer, real-time player, note-off ledger, ports.
