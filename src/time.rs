//! Time: musical ticks at a fixed PPQ, meters, the tempo map (ticks ⇄ seconds), and the
//! nanoseconds the play clock and MIDI outputs count in.

use serde::{Deserialize, Serialize};

/// A point or span in musical time, in ticks.
pub type Tick = u64;

/// Nanoseconds on the play clock (see `play::clock`): a plain integer, so outputs and the
/// player share it without depending on each other.
pub type Nanos = u64;
pub const MICRO: Nanos = 1_000;
pub const MILLI: Nanos = 1_000_000;
pub const SECOND: Nanos = 1_000_000_000;

/// Ticks per quarter note. 480 divides evenly by 2, 3, 4, 5, 6, 8, 10, 12, 16 and 32, so
/// ABC's tuplets and the usual grids land on whole ticks.
pub const PPQ: u32 = 480;

/// Ticks in a whole note.
pub const WHOLE: Tick = 4 * PPQ as Tick;

/// Default tempo when a file says nothing: 120 quarter notes per minute.
pub const DEFAULT_BPM: f64 = 120.0;

/// How a meter was written, so it prints back the way it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MeterSymbol {
    /// `M:6/8`
    #[default]
    Numeric,
    /// `M:C` (4/4)
    Common,
    /// `M:C|` (2/2)
    Cut,
    /// `M:none`: free meter; bars are whatever the bar lines say.
    Free,
}

/// A time signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meter {
    pub num: u32,
    pub den: u32,
    pub symbol: MeterSymbol,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new(4, 4)
    }
}

/// Largest numerator or denominator of a meter (see [`Meter::is_writable`]).
pub const MAX_METER_PART: u32 = 64;

impl Meter {
    pub const fn new(num: u32, den: u32) -> Self {
        Meter { num, den, symbol: MeterSymbol::Numeric }
    }

    /// `M:none`. Bars still need a length for slicing; we use 4/4.
    pub const fn free() -> Self {
        Meter { num: 4, den: 4, symbol: MeterSymbol::Free }
    }

    /// Whether every score format cadenza writes can say this meter: numerator and denominator
    /// from 1 to [`MAX_METER_PART`], the bound the ABC reader holds `M:` to. Readers of other
    /// formats leave out time signatures beyond it (a MIDI file's `1/32768`), so whatever cadenza
    /// reads it can write and read back.
    pub fn is_writable(&self) -> bool {
        (1..=MAX_METER_PART).contains(&self.num) && (1..=MAX_METER_PART).contains(&self.den)
    }

    /// Length of one bar in ticks.
    pub fn bar_ticks(&self) -> Tick {
        WHOLE * self.num as Tick / self.den.max(1) as Tick
    }

    /// Length of one beat (the denominator's note value) in ticks.
    pub fn beat_ticks(&self) -> Tick {
        WHOLE / self.den.max(1) as Tick
    }

    /// Compound meters (6/8, 9/8, 12/8) count in dotted beats.
    pub fn is_compound(&self) -> bool {
        self.den >= 8 && self.num.is_multiple_of(3) && self.num > 3
    }
}

impl std::fmt::Display for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.symbol {
            MeterSymbol::Common => write!(f, "C"),
            MeterSymbol::Cut => write!(f, "C|"),
            MeterSymbol::Free => write!(f, "none"),
            MeterSymbol::Numeric => write!(f, "{}/{}", self.num, self.den),
        }
    }
}

/// One tempo setting, effective from `tick` on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TempoChange {
    pub tick: Tick,
    /// Microseconds per quarter note, as MIDI stores it, so MIDI round trips are exact.
    pub micros_per_quarter: u32,
}

impl TempoChange {
    pub fn bpm(&self) -> f64 {
        60_000_000.0 / self.micros_per_quarter as f64
    }
}

/// Converts a tempo in quarter notes per minute to MIDI's microseconds per quarter (at least
/// one: a tempo of 0 µs would stop time).
pub fn bpm_to_micros(bpm: f64) -> u32 {
    ((60_000_000.0 / bpm.max(1.0)).round() as u32).max(1)
}

/// Tempo changes in tick order; the first always sits at tick 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TempoMap {
    changes: Vec<TempoChange>,
}

impl Default for TempoMap {
    fn default() -> Self {
        TempoMap::constant(DEFAULT_BPM)
    }
}

impl TempoMap {
    pub fn constant(bpm: f64) -> Self {
        TempoMap { changes: vec![TempoChange { tick: 0, micros_per_quarter: bpm_to_micros(bpm) }] }
    }

    pub fn changes(&self) -> &[TempoChange] {
        &self.changes
    }

    /// Sets the tempo from `tick` on, replacing a change at the same tick.
    pub fn set(&mut self, tick: Tick, micros_per_quarter: u32) {
        let change = TempoChange { tick, micros_per_quarter };
        match self.changes.binary_search_by_key(&tick, |c| c.tick) {
            Ok(i) => self.changes[i] = change,
            Err(i) => self.changes.insert(i, change),
        }
        // A map whose first change is later than 0 keeps the default before it; make that
        // explicit so lookups never fall off the front.
        if self.changes[0].tick != 0 {
            self.changes.insert(0, TempoChange { tick: 0, micros_per_quarter: bpm_to_micros(DEFAULT_BPM) });
        }
        self.dedup();
    }

    /// Sets the tempo from `tick` on, in constant time when `tick` is past the last change (as
    /// when copies of a score are joined in order); otherwise as [`Self::set`].
    pub fn push(&mut self, tick: Tick, micros_per_quarter: u32) {
        match self.changes.last() {
            Some(last) if tick > last.tick => {
                if last.micros_per_quarter != micros_per_quarter {
                    self.changes.push(TempoChange { tick, micros_per_quarter });
                }
            }
            _ => self.set(tick, micros_per_quarter),
        }
    }

    pub fn set_bpm(&mut self, tick: Tick, bpm: f64) {
        self.set(tick, bpm_to_micros(bpm))
    }

    /// Drops changes that repeat the tempo before them (they carry no information).
    fn dedup(&mut self) {
        self.changes.dedup_by(|later, earlier| later.micros_per_quarter == earlier.micros_per_quarter);
    }

    /// The tempo in effect at `tick`.
    pub fn at(&self, tick: Tick) -> TempoChange {
        let i = self.changes.partition_point(|c| c.tick <= tick);
        self.changes[i.saturating_sub(1)]
    }

    pub fn bpm_at(&self, tick: Tick) -> f64 {
        self.at(tick).bpm()
    }

    /// Seconds from tick 0 to `tick`.
    pub fn seconds_at(&self, tick: Tick) -> f64 {
        let mut seconds = 0.0;
        for (i, c) in self.changes.iter().enumerate() {
            if c.tick >= tick {
                break;
            }
            let end = self.changes.get(i + 1).map_or(tick, |n| n.tick.min(tick));
            seconds += (end - c.tick) as f64 * c.micros_per_quarter as f64 / 1e6 / PPQ as f64;
        }
        seconds
    }

    /// The tick sounding at `seconds` (rounded down).
    pub fn tick_at(&self, seconds: f64) -> Tick {
        let mut elapsed = 0.0;
        for (i, c) in self.changes.iter().enumerate() {
            let secs_per_tick = c.micros_per_quarter as f64 / 1e6 / PPQ as f64;
            if let Some(next) = self.changes.get(i + 1) {
                let span = (next.tick - c.tick) as f64 * secs_per_tick;
                if elapsed + span > seconds {
                    return c.tick + ((seconds - elapsed) / secs_per_tick) as Tick;
                }
                elapsed += span;
            } else {
                return c.tick + ((seconds - elapsed).max(0.0) / secs_per_tick) as Tick;
            }
        }
        0
    }

    /// Shifts every change by `offset` ticks (used when concatenating scores).
    pub fn shifted(&self, offset: Tick) -> Vec<TempoChange> {
        self.changes.iter().map(|c| TempoChange { tick: c.tick + offset, ..*c }).collect()
    }

    /// Keeps the changes inside `[from, to)`, re-based to 0, with the tempo at `from` first.
    pub fn slice(&self, from: Tick, to: Tick) -> TempoMap {
        let mut map =
            TempoMap { changes: vec![TempoChange { tick: 0, micros_per_quarter: self.at(from).micros_per_quarter }] };
        for c in &self.changes {
            if c.tick > from && c.tick < to {
                map.set(c.tick - from, c.micros_per_quarter);
            }
        }
        map
    }

    /// Multiplies every tick by `num/den` (tempo stretch keeps wall-clock speed per tick).
    pub fn scaled(&self, num: u64, den: u64) -> TempoMap {
        let mut map = TempoMap { changes: Vec::new() };
        for c in &self.changes {
            map.changes.push(TempoChange { tick: c.tick * num / den, ..*c });
        }
        map.dedup();
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_lengths() {
        assert_eq!(Meter::new(4, 4).bar_ticks(), 1920);
        assert_eq!(Meter::new(6, 8).bar_ticks(), 1440);
        assert_eq!(Meter::new(3, 4).bar_ticks(), 1440);
        assert_eq!(Meter::new(2, 2).bar_ticks(), 1920);
        assert!(Meter::new(6, 8).is_compound());
        assert!(!Meter::new(3, 8).is_compound());
    }

    #[test]
    fn seconds_follow_tempo_changes() {
        let mut map = TempoMap::constant(120.0);
        assert_eq!(map.seconds_at(PPQ as Tick), 0.5);
        map.set_bpm(PPQ as Tick * 4, 60.0);
        // four beats at 120 (2 s) then two beats at 60 (2 s)
        assert!((map.seconds_at(PPQ as Tick * 6) - 4.0).abs() < 1e-9);
        assert_eq!(map.tick_at(4.0), PPQ as Tick * 6);
        assert_eq!(map.tick_at(1.0), PPQ as Tick * 2);
        assert_eq!(map.bpm_at(PPQ as Tick * 5), 60.0);
    }

    #[test]
    fn set_keeps_a_change_at_zero() {
        let mut map = TempoMap { changes: vec![] };
        map.changes.push(TempoChange { tick: 0, micros_per_quarter: 500_000 });
        map.set(960, 400_000);
        map.set(960, 500_000);
        assert_eq!(map.changes().len(), 1);
        let s = map.slice(0, 100);
        assert_eq!(s.changes()[0].tick, 0);
    }
}
