//! The real-time rule, proven: the player's loop neither allocates nor frees. A counting global
//! allocator (this test binary's own) counts every allocation and free made on the thread that
//! runs the player while it sends thousands of events, stops tracks, flushes, swaps ports, and
//! hands back more ports than the return ring holds.

use cadenza::play::event::{msg, Event};
use cadenza::play::player::{Control, Player, Rings, Stats, Step};
use cadenza::sink::out::{MidiOut, Recorder};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts allocations, reallocations and frees made on a thread that turned counting on.
struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static FREES: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // `const` and `Cell<bool>`: no lazy initialisation and no destructor, so reading it inside
    // the allocator cannot itself allocate.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: every call is passed straight to the system allocator; counting touches only atomics
// and a const thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counting() {
            FREES.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` with this thread's allocations counted; returns (allocations, frees).
fn count<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let (a, b) = (ALLOCS.load(Ordering::Relaxed), FREES.load(Ordering::Relaxed));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCS.load(Ordering::Relaxed) - a, FREES.load(Ordering::Relaxed) - b)
}

const MS: u64 = 1_000_000;

#[test]
fn the_player_loop_never_allocates_or_frees() {
    let rings = Rings::new(1 << 15);
    let (mut events, mut controls, mut returned) = (rings.events.0, rings.control.0, rings.returned.1);
    let (rec, handle) = Recorder::new("rec", 1 << 17);
    let stats = Arc::new(Stats::default());
    let mut player = Player::new(rings.events.1, rings.control.1, rings.returned.0, vec![Box::new(rec)], stats.clone());

    // 6,000 notes (12,000 events) on 4 tracks and 16 channels, every millisecond; everything the
    // loop will need is made here, before counting.
    let mut n = 0;
    for i in 0..6_000u64 {
        let (ch, pitch, tag) = ((i % 16) as u8, 36 + (i % 48) as u8, 1 + (i % 4) as u32);
        let on = Event { tag, ..Event::new(i * MS, 0, &msg::note_on(ch, pitch, 90)) };
        let off = Event { tag, ..Event::new(i * MS + MS / 2, 0, &msg::note_off(ch, pitch)) };
        events.push(on).unwrap();
        events.push(off).unwrap();
        n += 2;
    }
    // More ports than the return ring (64) plus its parking places (16) would hold at once,
    // less than both: 70 swaps the sequencer does not collect in time.
    let spares: Vec<Box<dyn MidiOut>> =
        (0..70).map(|i| Box::new(Recorder::new(&format!("spare{i}"), 1 << 10).0) as Box<dyn MidiOut>).collect();
    let mut spares = spares.into_iter();

    let ((), allocs, frees) = count(|| {
        let mut now = 0;
        let mut step = 0u64;
        while now < 6_100 * MS {
            match step {
                1_000 => controls.push(Control::StopTag(2)).unwrap_or(()),
                2_000 => controls.push(Control::Flush { epoch: 0 }).unwrap_or(()),
                3_000..=3_069 => {
                    if let Some(out) = spares.next() {
                        controls.push(Control::SetOutput(1 + (step % 4) as u8, out)).unwrap_or(());
                    }
                }
                4_000 => controls.push(Control::RemoveOutput(2)).unwrap_or(()),
                _ => {}
            }
            match player.poll(now) {
                Step::Until(t) => now = t.min(now + MS / 4).max(now + 1),
                Step::Idle | Step::Shutdown => now += MS,
            }
            step += 1;
        }
    });
    assert_eq!((allocs, frees), (0, 0), "the player allocated {allocs} times and freed {frees} times");
    assert_eq!(stats.leaked_outputs.load(Ordering::Relaxed), 0, "no port was leaked");
    // The music went out (less what the stop dropped), and every port came back to this side:
    // 64 in the ring at once, the rest parked until the ring had room.
    let sent = handle.messages().len();
    assert!(sent > n / 2, "only {sent} of {n} messages were sent");
    let mut back = 0;
    while returned.pop().is_ok() {
        back += 1;
    }
    assert_eq!(back, 64, "the return ring is full; the rest wait parked");
    let ((), _, frees) = count(|| {
        player.poll(6_200 * MS);
    });
    assert_eq!(frees, 0);
    while returned.pop().is_ok() {
        back += 1;
    }
    // 70 swapped into 4 empty slots give back 66, and the removed one makes 67.
    assert_eq!(back, 67, "every port handed back came back");
}
