//! Integration tests: midi.
