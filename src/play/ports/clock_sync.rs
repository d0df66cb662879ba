//! MIDI clock in both directions: sending 24 ppqn with start/stop (see the sequencer), and following an incoming clock.
//!
//! Sending lives in the sequencer (`Transport::clock_out`): pulses are ordinary timestamped events,
//! so they share the player's timing. Following: [`ClockFollower`] turns pulse arrival times into
//! a smoothed tempo and a beat/bar position; [`follow_clock`] wires a MIDI input to an engine.

use crate::play::clock::Nanos;
use crate::play::event::msg;
use crate::play::ports::midi_in::{connect_input, InputConnection};
use crate::play::sequencer::At;
use crate::play::transport::{PlayError, Transport};
use std::sync::{Arc, Mutex};

/// Pulses per quarter note in MIDI clock.
pub const PPQN: u64 = 24;
/// Song Position Pointer: where the leader will continue from, in sixteenths (two data bytes).
const SONG_POSITION: u8 = 0xF2;

/// Estimates tempo and position from incoming MIDI clock messages.
#[derive(Debug, Clone)]
pub struct ClockFollower {
    /// Smoothed nanoseconds between pulses (`None` until two pulses arrived).
    interval: Option<f64>,
    last: Option<Nanos>,
    /// Pulses since the last Start (or since the first pulse, or the last Song Position).
    pulses: u64,
    running: bool,
    /// True once a Start or Song Position Pointer said where the leader's song begins, so
    /// `pulses` counts from a downbeat and bars can be locked, not only tempo.
    located: bool,
    /// Weight of each new interval in the running average (0..1).
    alpha: f64,
}

impl Default for ClockFollower {
    fn default() -> Self {
        ClockFollower { interval: None, last: None, pulses: 0, running: true, located: false, alpha: 0.08 }
    }
}

/// What a message changed, for the caller to act on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockEvent {
    Pulse,
    Start,
    Stop,
    Continue,
    Other,
}

impl ClockFollower {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds one message received at `at`.
    pub fn feed(&mut self, at: Nanos, bytes: &[u8]) -> ClockEvent {
        match bytes.first().copied() {
            Some(msg::CLOCK) => {
                if let Some(last) = self.last {
                    let dt = at.saturating_sub(last) as f64;
                    match self.interval {
                        None => self.interval = Some(dt),
                        Some(i) => {
                            // A gap (dropped pulses, a stalled sender) or a burst says nothing
                            // about tempo; a real tempo change shows up as many moderate steps.
                            if dt > 0.0 && dt < i * 3.0 && dt > i / 3.0 {
                                self.interval = Some(i + self.alpha * (dt - i));
                            } else if dt > 0.0 && dt < 2.5e9 / PPQN as f64 && self.pulses < 4 {
                                self.interval = Some(dt);
                            }
                        }
                    }
                }
                self.last = Some(at);
                if self.running {
                    self.pulses += 1;
                }
                ClockEvent::Pulse
            }
            Some(msg::START) => {
                self.pulses = 0;
                self.running = true;
                self.located = true;
                ClockEvent::Start
            }
            Some(SONG_POSITION) if bytes.len() >= 3 => {
                // In sixteenths (6 pulses each); the next pulse sounds at that position.
                let sixteenths = (bytes[1] as u64 & 0x7F) | ((bytes[2] as u64 & 0x7F) << 7);
                self.pulses = sixteenths * PPQN / 4;
                self.located = true;
                ClockEvent::Other
            }
            Some(msg::CONTINUE) => {
                self.running = true;
                ClockEvent::Continue
            }
            Some(msg::STOP) => {
                self.running = false;
                ClockEvent::Stop
            }
            _ => ClockEvent::Other,
        }
    }

    /// Estimated tempo in quarter notes per minute.
    pub fn bpm(&self) -> Option<f64> {
        self.interval.filter(|i| *i > 0.0).map(|i| 60e9 / (i * PPQN as f64))
    }

    /// Pulses counted since Start.
    pub fn pulses(&self) -> u64 {
        self.pulses
    }

    /// True on the pulse that begins a beat (a quarter note).
    pub fn at_beat(&self) -> bool {
        self.pulses > 0 && (self.pulses - 1).is_multiple_of(PPQN)
    }

    /// Where the leader is on the pulse just received, in cadenza ticks past its first downbeat;
    /// `None` until a Start or Song Position said where the song begins.
    pub fn position_ticks(&self) -> Option<f64> {
        (self.located && self.pulses > 0).then(|| (self.pulses - 1) as f64 * crate::time::PPQ as f64 / PPQN as f64)
    }

    /// True on the pulse that begins a bar of `beats` quarters (the first pulse after Start is
    /// the downbeat).
    pub fn at_bar_start(&self, beats: u64) -> bool {
        self.pulses > 0 && (self.pulses - 1).is_multiple_of(PPQN * beats.max(1))
    }

    pub fn is_running(&self) -> bool {
        self.running
    }
}

/// A running clock follower; dropping it disconnects the input.
pub struct FollowHandle {
    _conn: InputConnection,
    pub state: Arc<Mutex<ClockFollower>>,
}

/// Follows the MIDI clock arriving on input `port` (index, name or unique substring). Once the
/// leader has sent Start (or a Song Position), cadenza's bar lines are phase-locked to the
/// leader's: every beat the engine gets the leader's position and smoothed tempo
/// ([`Transport::follow`]). Before that only the tempo follows, updated at most once a beat and only
/// when it moved by more than 0.3 bpm (so jitter in the sender does not wobble the music).
///
/// A pulse arrives some time after the leader sent it (the MIDI system's latency: two or three
/// periods through JACK); `latency` says how long, so the bars lock to when the leader played
/// them rather than to when we heard about it. Any remainder shows as a steady lag.
pub fn follow_clock(engine: Arc<Transport>, port: &str, latency: Nanos) -> Result<FollowHandle, PlayError> {
    let state = Arc::new(Mutex::new(ClockFollower::new()));
    let st = state.clone();
    let mut last_set = engine.tempo();
    let on_message = move |stamp_us: u64, bytes: &[u8]| {
        let Ok(mut f) = st.lock() else { return };
        // The engine's clock, read now, dates the pulse for the phase lock: the port's own
        // timestamps count from another origin (they serve for intervals only).
        let now = engine.now().saturating_sub(latency);
        if f.feed(stamp_us * 1000, bytes) != ClockEvent::Pulse || !f.is_running() || !f.at_beat() {
            return;
        }
        let Some(bpm) = f.bpm() else { return };
        if let Some(leader_tick) = f.position_ticks() {
            let _ = engine.follow(leader_tick, now, bpm);
        } else if (bpm - last_set).abs() > 0.3 && engine.set_tempo(bpm, At::Now).is_ok() {
            last_set = bpm;
        }
    };
    let (conn, _) = connect_input(port, "cadenza-clock-in", Box::new(on_message))?;
    Ok(FollowHandle { _conn: conn, state })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pulses of a steady tempo with a fixed ±jitter pattern (deterministic).
    fn pulses(f: &mut ClockFollower, from: Nanos, n: u64, bpm: f64, jitter: i64) -> Nanos {
        let step = 60e9 / bpm / PPQN as f64;
        let mut t = from;
        for k in 0..n {
            let j = if k % 2 == 0 { jitter } else { -jitter };
            let at = (from as f64 + k as f64 * step) as i64 + j;
            f.feed(at.max(0) as Nanos, &[msg::CLOCK]);
            t = at as Nanos;
        }
        t
    }

    #[test]
    fn follows_tempo_through_jitter_and_changes() {
        let mut f = ClockFollower::new();
        f.feed(0, &[msg::START]);
        // 120 bpm with ±300 µs jitter on every pulse (intervals 20.83 ms ± 0.6 ms).
        let t = pulses(&mut f, 0, 24 * 8, 120.0, 300_000);
        let bpm = f.bpm().unwrap();
        assert!((bpm - 120.0).abs() < 0.5, "{bpm}");
        // Then 90 bpm: after eight beats the estimate has converged.
        pulses(&mut f, t + 27_777_778, 24 * 8, 90.0, 0);
        let bpm = f.bpm().unwrap();
        assert!((bpm - 90.0).abs() < 0.2, "{bpm}");
    }

    #[test]
    fn a_gap_does_not_disturb_the_estimate_and_start_resets_the_bar() {
        let mut f = ClockFollower::new();
        let t = pulses(&mut f, 0, 48, 100.0, 0);
        // Half a second with no pulses (a stalled sender), then the same tempo again.
        pulses(&mut f, t + 500_000_000, 48, 100.0, 0);
        assert!((f.bpm().unwrap() - 100.0).abs() < 0.01);
        f.feed(0, &[msg::START]);
        assert_eq!(f.pulses(), 0);
        f.feed(1, &[msg::CLOCK]);
        assert!(f.at_bar_start(4));
        for k in 0..96 {
            f.feed(2 + k, &[msg::CLOCK]);
        }
        assert!(f.at_bar_start(4), "pulse 97 starts bar 2 of 4/4");
        f.feed(200, &[msg::STOP]);
        f.feed(201, &[msg::CLOCK]);
        assert_eq!(f.pulses(), 97, "stopped: pulses keep tempo but not position");
    }

    #[test]
    fn position_is_known_only_after_start_or_song_position() {
        let mut f = ClockFollower::new();
        pulses(&mut f, 0, 30, 120.0, 0);
        assert_eq!(f.position_ticks(), None, "joined a running clock: tempo only");
        f.feed(0, &[msg::START]);
        f.feed(1, &[msg::CLOCK]);
        assert!(f.at_beat());
        assert_eq!(f.position_ticks(), Some(0.0));
        for k in 0..24 {
            f.feed(2 + k, &[msg::CLOCK]);
        }
        assert!(f.at_beat());
        assert_eq!(f.position_ticks(), Some(480.0));
        // Song Position 16 sixteenths = bar 2 of 4/4: the next pulse is its downbeat.
        f.feed(100, &[SONG_POSITION, 16, 0]);
        f.feed(101, &[msg::CLOCK]);
        assert_eq!(f.position_ticks(), Some(4.0 * 480.0));
        assert!(f.at_bar_start(4));
    }
}
