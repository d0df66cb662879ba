//! Where "now" comes from: a real monotonic clock for playing and a fake one that tests move by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::time::{Nanos, MICRO, MILLI, SECOND};

/// A source of monotonic time in nanoseconds since the clock's own origin.
pub trait Clock: Send + Sync {
    fn now(&self) -> Nanos;
    /// Blocks the calling thread for about `d` (a fake clock moves its time instead).
    fn sleep(&self, d: Nanos);
    /// True for clocks whose time only moves when told (sleeping would never reach a deadline).
    fn is_fake(&self) -> bool {
        false
    }
}

/// The real clock: `Instant` (CLOCK_MONOTONIC on Linux) measured from when it was made.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock { origin: Instant::now() }
    }
}

impl MonotonicClock {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Nanos {
        self.origin.elapsed().as_nanos() as Nanos
    }

    fn sleep(&self, d: Nanos) {
        std::thread::sleep(Duration::from_nanos(d));
    }
}

/// A clock whose time moves only by [`FakeClock::set`], [`FakeClock::advance`] or `sleep`.
/// Clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock {
    now: Arc<AtomicU64>,
}

impl FakeClock {
    pub fn new(start: Nanos) -> Self {
        FakeClock { now: Arc::new(AtomicU64::new(start)) }
    }

    /// Moves time to `t` (never backwards: a monotonic clock cannot).
    pub fn set(&self, t: Nanos) {
        self.now.fetch_max(t, Ordering::SeqCst);
    }

    pub fn advance(&self, d: Nanos) {
        self.now.fetch_add(d, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Nanos {
        self.now.load(Ordering::SeqCst)
    }

    fn sleep(&self, d: Nanos) {
        self.advance(d)
    }

    fn is_fake(&self) -> bool {
        true
    }
}

/// Sleeps until `deadline` as precisely as the system allows: a coarse sleep to `spin` before the
/// deadline, then spinning. Returns early (without reaching the deadline) after at most
/// `max_chunk`, so the caller can look at its control flags.
pub fn sleep_toward(clock: &dyn Clock, deadline: Nanos, spin: Nanos, max_chunk: Nanos) {
    let now = clock.now();
    if now >= deadline {
        return;
    }
    let left = deadline - now;
    if clock.is_fake() {
        clock.sleep(left.min(max_chunk));
        return;
    }
    if left > spin {
        clock.sleep((left - spin).min(max_chunk));
        return;
    }
    while clock.now() < deadline {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_moves_only_when_told_and_never_back() {
        let c = FakeClock::new(10);
        assert_eq!(c.now(), 10);
        c.advance(5);
        assert_eq!(c.now(), 15);
        c.set(12);
        assert_eq!(c.now(), 15);
        let shared = c.clone();
        shared.sleep(5);
        assert_eq!(c.now(), 20);
        sleep_toward(&c, 100, 0, 30);
        assert_eq!(c.now(), 50, "a chunk is at most max_chunk");
        sleep_toward(&c, 100, 0, 1000);
        assert_eq!(c.now(), 100);
    }

    #[test]
    fn monotonic_clock_does_not_go_back() {
        let c = MonotonicClock::new();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
