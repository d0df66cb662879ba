//! The one integration test binary: each module below drives one area end to end.

mod dsl;
mod gen;
mod midi;
mod model;
mod play;
mod script;
mod tokens;
