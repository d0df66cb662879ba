//! The real-time player: pops timestamped events from a lock-free ring, waits until each is due, sends it.
//!
//! Everything here runs on one thread that must keep its deadlines, so the loop never allocates,
//! locks, logs or parses: it reads fixed-size events and control messages from `rtrb` rings,
//! writes atomics the other side reads, and keeps the note-off [`Ledger`].

use super::clock::{sleep_toward, Clock, Nanos, MICRO, MILLI};
use super::event::{msg, Event, MAX_PORTS, SYSTEM_TAG};
use super::ledger::Ledger;
use crate::sink::out::MidiOut;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Lateness thresholds reported in escalating steps: > 1 ms, > 5 ms, > 20 ms, > 100 ms.
pub const LATE_STEPS: [Nanos; 4] = [MILLI, 5 * MILLI, 20 * MILLI, 100 * MILLI];

/// Histogram resolution and range for lateness (1 µs buckets up to 5 ms, then one overflow bucket).
pub const HIST_BUCKET: Nanos = MICRO;
pub const HIST_LEN: usize = 5001;

/// How close to a deadline the player stops sleeping and spins (sleeps overshoot by tens of µs).
pub const SPIN: Nanos = 150 * MICRO;
/// The longest the player sleeps before looking at its control ring again.
pub const MAX_CHUNK: Nanos = 2 * MILLI;

/// Control messages from the sequencer to the player (a second ring beside the events).
pub enum Control {
    /// Puts an output in a slot; an output already there goes back to be dropped elsewhere.
    SetOutput(u8, Box<dyn MidiOut>),
    RemoveOutput(u8),
    /// Drops every event older than `epoch`, turns off every sounding note and sends CC 123.
    Flush {
        epoch: u32,
    },
    /// Drops the events of track `tag` and turns off the notes it started.
    StopTag(u32),
    /// Turns everything off and ends the thread.
    Shutdown,
}

/// Counters the player writes and everyone else reads.
pub struct Stats {
    pub sent: AtomicU64,
    /// Events taken from the ring (sent or dropped): with the sequencer's count, tells idleness.
    pub consumed: AtomicU64,
    pub late_over: [AtomicU64; 4],
    pub max_late: AtomicU64,
    pub hist: Box<[AtomicU32]>,
    pub send_errors: [AtomicU64; MAX_PORTS],
    pub sounding: AtomicUsize,
    /// Silence requests (panic hook, signals) and how many the player has carried out.
    pub silence_requests: AtomicU64,
    pub silenced: AtomicU64,
    pub running: AtomicBool,
    /// Outputs the player had to leak (never free) because the return ring and its parking
    /// places were full: should stay 0.
    pub leaked_outputs: AtomicU64,
    /// How the player thread is scheduled: 0 not known yet, 1 real-time (SCHED_FIFO), 2 normal
    /// (real-time was refused or not asked for).
    pub realtime: std::sync::atomic::AtomicU8,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            sent: AtomicU64::new(0),
            consumed: AtomicU64::new(0),
            late_over: Default::default(),
            max_late: AtomicU64::new(0),
            hist: (0..HIST_LEN).map(|_| AtomicU32::new(0)).collect(),
            send_errors: Default::default(),
            sounding: AtomicUsize::new(0),
            silence_requests: AtomicU64::new(0),
            leaked_outputs: AtomicU64::new(0),
            realtime: std::sync::atomic::AtomicU8::new(0),
            silenced: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }
}

/// Median, p99 and max lateness from the histogram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub count: u64,
    pub median: Nanos,
    pub p99: Nanos,
    pub max: Nanos,
}

impl Stats {
    fn note_lateness(&self, late: Nanos) {
        for (i, step) in LATE_STEPS.iter().enumerate() {
            if late > *step {
                self.late_over[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.max_late.fetch_max(late, Ordering::Relaxed);
        let b = ((late / HIST_BUCKET) as usize).min(HIST_LEN - 1);
        self.hist[b].fetch_add(1, Ordering::Relaxed);
    }

    /// Lateness percentiles so far (bucket upper edges; the overflow bucket reports the max).
    pub fn jitter(&self) -> Jitter {
        let counts: Vec<u64> = self.hist.iter().map(|c| c.load(Ordering::Relaxed) as u64).collect();
        let total: u64 = counts.iter().sum();
        let max = self.max_late.load(Ordering::Relaxed);
        let pct = |q: f64| -> Nanos {
            let want = ((total as f64 * q).ceil() as u64).max(1);
            let mut acc = 0;
            for (i, c) in counts.iter().enumerate() {
                acc += c;
                if acc >= want {
                    return if i == HIST_LEN - 1 { max } else { ((i as Nanos + 1) * HIST_BUCKET).min(max) };
                }
            }
            max
        };
        Jitter { count: total, median: pct(0.5), p99: pct(0.99), max }
    }

    pub fn reset_jitter(&self) {
        for c in self.hist.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.max_late.store(0, Ordering::Relaxed);
        for c in &self.late_over {
            c.store(0, Ordering::Relaxed);
        }
    }
}

/// What the player should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing queued.
    Idle,
    /// The next event is due at this time.
    Until(Nanos),
    Shutdown,
}

/// Sends on slot `port` a message due at `due`; counts a failure instead of reporting it (no
/// formatting here).
fn send_to(
    outs: &mut [Option<Box<dyn MidiOut>>],
    stats: &Stats,
    now: Nanos,
    due: Nanos,
    port: u8,
    bytes: &[u8],
) -> bool {
    let Some(Some(out)) = outs.get_mut(port as usize) else { return false };
    match out.send_at(now, due, bytes) {
        Ok(()) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(_) => {
            stats.send_errors[port as usize].fetch_add(1, Ordering::Relaxed);
            false
        }
    }
}

/// Dead track tags remembered (a stopped track's events still in the ring are dropped).
const DEAD_TAGS: usize = 64;

/// The player: owns the outputs and the ledger.
pub struct Player {
    events: rtrb::Consumer<Event>,
    control: rtrb::Consumer<Control>,
    returned: rtrb::Producer<Box<dyn MidiOut>>,
    /// Outputs waiting to go back when the return ring is full: moving a box here frees
    /// nothing, so a slow sequencer never makes the real-time thread drop a port.
    parked: [Option<Box<dyn MidiOut>>; MAX_PORTS],
    outs: Vec<Option<Box<dyn MidiOut>>>,
    /// Each slot's [`MidiOut::lead`]: its events are handed over that early.
    leads: [Nanos; MAX_PORTS],
    ledger: Ledger,
    stats: Arc<Stats>,
    pending: Option<Event>,
    min_epoch: u32,
    dead: [u32; DEAD_TAGS],
    dead_next: usize,
    seen_silence: u64,
    /// After a silence request, everything is dropped until the sequencer's next flush.
    muted: bool,
    finished: bool,
}

impl Player {
    pub fn new(
        events: rtrb::Consumer<Event>,
        control: rtrb::Consumer<Control>,
        returned: rtrb::Producer<Box<dyn MidiOut>>,
        outputs: Vec<Box<dyn MidiOut>>,
        stats: Arc<Stats>,
    ) -> Player {
        let mut outs: Vec<Option<Box<dyn MidiOut>>> = (0..MAX_PORTS).map(|_| None).collect();
        let mut leads = [0; MAX_PORTS];
        for (i, o) in outputs.into_iter().take(MAX_PORTS).enumerate() {
            leads[i] = o.lead();
            outs[i] = Some(o);
        }
        Player {
            events,
            control,
            returned,
            parked: std::array::from_fn(|_| None),
            outs,
            leads,
            ledger: Ledger::new(),
            stats,
            pending: None,
            min_epoch: 0,
            dead: [SYSTEM_TAG; DEAD_TAGS],
            dead_next: 0,
            seen_silence: 0,
            muted: false,
            finished: false,
        }
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn send(&mut self, now: Nanos, due: Nanos, port: u8, bytes: &[u8], tag: u32) {
        if send_to(&mut self.outs, &self.stats, now, due, port, bytes) {
            self.ledger.record(port, bytes, tag);
        }
    }

    /// Note-offs for everything sounding, then CC 123 on the channels that were used.
    pub fn silence(&mut self, now: Nanos) {
        // Split borrows: the ledger clears its own entries as it hands out the note-offs.
        let (outs, stats, ledger) = (&mut self.outs, &*self.stats, &mut self.ledger);
        ledger.release(None, None, |port, b| {
            send_to(outs, stats, now, now, port, &b);
        });
        ledger.all_notes_off(|port, b| {
            send_to(outs, stats, now, now, port, &b);
        });
        self.stats.sounding.store(0, Ordering::Relaxed);
    }

    fn release(&mut self, now: Nanos, tag: Option<u32>, only_port: Option<u8>) {
        let (outs, stats, ledger) = (&mut self.outs, &*self.stats, &mut self.ledger);
        ledger.release(tag, only_port, |port, b| {
            send_to(outs, stats, now, now, port, &b);
        });
        self.stats.sounding.store(self.ledger.sounding(), Ordering::Relaxed);
    }

    fn drop_pending(&mut self) {
        if self.pending.take().is_some() {
            self.stats.consumed.fetch_add(1, Ordering::Release);
        }
    }

    fn is_dropped(&mut self, ev: &Event) -> bool {
        if ev.epoch < self.min_epoch || self.muted {
            return true;
        }
        // A newer epoch means a flush happened on the other side; older events are stale.
        self.min_epoch = ev.epoch;
        ev.tag != SYSTEM_TAG && self.dead.contains(&ev.tag)
    }

    /// Hands an output back to be dropped off this thread: into the return ring, else into a
    /// parking place until the ring has room. Only if both are full (sixty-four swaps the
    /// sequencer has not collected, then sixteen more) is the output leaked, never freed here,
    /// and counted in [`Stats::leaked_outputs`].
    fn give_back(&mut self, out: Box<dyn MidiOut>) {
        let Err(rtrb::PushError::Full(out)) = self.returned.push(out) else { return };
        match self.parked.iter_mut().find(|p| p.is_none()) {
            Some(place) => *place = Some(out),
            None => {
                std::mem::forget(out);
                self.stats.leaked_outputs.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Moves parked outputs into the return ring while it has room.
    fn unpark(&mut self) {
        for place in self.parked.iter_mut() {
            if place.is_none() || self.returned.slots() == 0 {
                continue;
            }
            if let Some(out) = place.take() {
                if let Err(rtrb::PushError::Full(out)) = self.returned.push(out) {
                    *place = Some(out);
                }
            }
        }
    }

    fn handle_controls(&mut self, now: Nanos) -> bool {
        self.unpark();
        let req = self.stats.silence_requests.load(Ordering::Acquire);
        if req != self.seen_silence {
            self.seen_silence = req;
            self.drop_pending();
            self.muted = true;
            self.silence(now);
            self.stats.silenced.store(req, Ordering::Release);
        }
        while let Ok(c) = self.control.pop() {
            match c {
                Control::SetOutput(slot, out) => {
                    if let Some(lead) = self.leads.get_mut(slot as usize) {
                        *lead = out.lead();
                    }
                    if let Some(s) = self.outs.get_mut(slot as usize) {
                        if let Some(old) = s.replace(out) {
                            // Dropping a port frees memory and talks to the MIDI system: not here.
                            self.give_back(old);
                        }
                    } else {
                        self.give_back(out);
                    }
                }
                Control::RemoveOutput(slot) => {
                    // Its notes go off first: a removed synth must not keep sounding.
                    self.release(now, None, Some(slot));
                    if let Some(old) = self.outs.get_mut(slot as usize).and_then(|s| s.take()) {
                        self.give_back(old);
                    }
                }
                Control::Flush { epoch } => {
                    self.min_epoch = self.min_epoch.max(epoch);
                    self.muted = false;
                    if self.pending.is_some_and(|p| p.epoch < self.min_epoch) {
                        self.drop_pending();
                    }
                    self.silence(now);
                }
                Control::StopTag(tag) => {
                    self.dead[self.dead_next] = tag;
                    self.dead_next = (self.dead_next + 1) % DEAD_TAGS;
                    if self.pending.is_some_and(|p| p.tag == tag) {
                        self.drop_pending();
                    }
                    self.release(now, Some(tag), None);
                }
                Control::Shutdown => {
                    self.silence(now);
                    self.finished = true;
                    return false;
                }
            }
        }
        true
    }

    /// Handles control messages and sends every event due at or before `now`.
    pub fn poll(&mut self, now: Nanos) -> Step {
        if self.finished || !self.handle_controls(now) {
            return Step::Shutdown;
        }
        loop {
            let ev = match self.pending.take() {
                Some(ev) => ev,
                None => match self.events.pop() {
                    Ok(ev) => {
                        if self.is_dropped(&ev) {
                            self.stats.consumed.fetch_add(1, Ordering::Release);
                            continue;
                        }
                        ev
                    }
                    Err(_) => return Step::Idle,
                },
            };
            // An output that timestamps takes its events `lead` early and plays them on time.
            let hand_over = ev.at.saturating_sub(self.leads.get(ev.port as usize).copied().unwrap_or(0));
            if hand_over > now {
                self.pending = Some(ev);
                return Step::Until(hand_over);
            }
            // Late events go out at once; how late is counted, never logged (an event handed
            // over early counts as on time: the output places it).
            self.stats.note_lateness(now.saturating_sub(ev.at));
            self.send(now, ev.at, ev.port, ev.bytes(), ev.tag);
            self.stats.sounding.store(self.ledger.sounding(), Ordering::Relaxed);
            // Counted once sent (not when popped), so "idle" means the last event is out.
            self.stats.consumed.fetch_add(1, Ordering::Release);
        }
    }

    /// The thread body: poll, sleep toward the next deadline, repeat until shut down. Returns
    /// the outputs so the caller can close them off the real-time path.
    pub fn run(mut self, clock: Arc<dyn Clock>) -> Vec<Box<dyn MidiOut>> {
        self.stats.running.store(true, Ordering::Release);
        loop {
            match self.poll(clock.now()) {
                Step::Shutdown => break,
                Step::Until(t) => sleep_toward(&*clock, t, SPIN, MAX_CHUNK),
                // An empty ring: look again soon (the sequencer refills well ahead of time).
                Step::Idle => clock.sleep(MILLI),
            }
        }
        self.stats.running.store(false, Ordering::Release);
        self.outs.iter_mut().filter_map(|o| o.take()).collect()
    }
}

impl Drop for Player {
    /// A player that unwinds (a panic on its thread) or is dropped without a shutdown still turns
    /// its notes off: the ledger knows them and the outputs are still here.
    fn drop(&mut self) {
        if !self.finished {
            self.silence(0);
        }
    }
}

/// Both ends of one ring.
pub type Ring<T> = (rtrb::Producer<T>, rtrb::Consumer<T>);

/// Builds the rings between a sequencer and a player.
pub struct Rings {
    pub events: Ring<Event>,
    pub control: Ring<Control>,
    pub returned: Ring<Box<dyn MidiOut>>,
}

impl Rings {
    pub fn new(capacity: usize) -> Rings {
        Rings {
            events: rtrb::RingBuffer::new(capacity.max(16)),
            control: rtrb::RingBuffer::new(256),
            returned: rtrb::RingBuffer::new(MAX_PORTS * 4),
        }
    }
}

/// Recognises the note messages the player tracks (re-exported for tests).
pub fn is_note(bytes: &[u8]) -> bool {
    msg::as_note_on(bytes).is_some() || msg::as_note_off(bytes).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::out::Recorder;

    fn player_with_recorder(
    ) -> (Player, rtrb::Producer<Event>, rtrb::Producer<Control>, crate::sink::out::RecorderHandle) {
        let r = Rings::new(64);
        let (rec, h) = Recorder::new("rec", 1024);
        let p = Player::new(r.events.1, r.control.1, r.returned.0, vec![Box::new(rec)], Arc::new(Stats::default()));
        (p, r.events.0, r.control.0, h)
    }

    #[test]
    fn sends_when_due_counts_late_and_silences_on_stop() {
        let (mut p, mut ev, mut ctl, h) = player_with_recorder();
        let mut on = Event::new(100, 0, &msg::note_on(0, 60, 90));
        on.tag = 7;
        ev.push(on).unwrap();
        ev.push(Event::new(200, 0, &msg::note_on(1, 62, 90))).unwrap();
        assert_eq!(p.poll(50), Step::Until(100));
        assert!(h.messages().is_empty());
        assert_eq!(p.poll(100), Step::Until(200));
        assert_eq!(p.poll(2_000_300), Step::Idle);
        let m = h.messages();
        assert_eq!((m[0].at, m[1].at), (100, 2_000_300));
        assert_eq!(p.stats.late_over[0].load(Ordering::Relaxed), 1, "2 ms late is over the 1 ms step");
        assert_eq!(p.stats.late_over[1].load(Ordering::Relaxed), 0);
        ctl.push(Control::StopTag(7)).unwrap();
        p.poll(3_000_000);
        assert_eq!(h.bytes()[2], msg::note_off(0, 60).to_vec());
        assert!(p.ledger().is_sounding(0, 1, 62));
        ctl.push(Control::Shutdown).unwrap();
        assert_eq!(p.poll(4_000_000), Step::Shutdown);
        let b = h.bytes();
        assert_eq!(b[3], msg::note_off(1, 62).to_vec());
        assert_eq!(b[4..].to_vec(), vec![msg::control(0, 123, 0).to_vec(), msg::control(1, 123, 0).to_vec()]);
    }

    #[test]
    fn a_flush_drops_older_epochs_and_dropping_the_player_silences() {
        let (mut p, mut ev, mut ctl, h) = player_with_recorder();
        ev.push(Event::new(10, 0, &msg::note_on(2, 40, 90))).unwrap();
        let mut stale = Event::new(500, 0, &msg::note_on(2, 41, 90));
        stale.epoch = 0;
        ev.push(stale).unwrap();
        p.poll(10);
        ctl.push(Control::Flush { epoch: 1 }).unwrap();
        let mut fresh = Event::new(600, 0, &msg::note_on(2, 43, 90));
        fresh.epoch = 1;
        ev.push(fresh).unwrap();
        assert_eq!(p.poll(20), Step::Until(600));
        assert_eq!(p.poll(600), Step::Idle);
        drop(p);
        let b = h.bytes();
        assert_eq!(
            b,
            vec![
                msg::note_on(2, 40, 90).to_vec(),
                msg::note_off(2, 40).to_vec(),
                msg::control(2, 123, 0).to_vec(),
                msg::note_on(2, 43, 90).to_vec(),
                msg::note_off(2, 43).to_vec(),
                msg::control(2, 123, 0).to_vec(),
            ]
        );
    }

    #[test]
    fn jitter_percentiles_from_the_histogram() {
        let s = Stats::default();
        for i in 0..100 {
            s.note_lateness(i * MICRO);
        }
        s.note_lateness(7 * MILLI);
        let j = s.jitter();
        assert_eq!(j.count, 101);
        assert_eq!(j.median, 51 * MICRO);
        assert_eq!(j.p99, 100 * MICRO);
        assert_eq!(j.max, 7 * MILLI);
    }
}
