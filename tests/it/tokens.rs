//! Integration tests: tokens.
