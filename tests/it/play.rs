//! Integration tests: play.
