//! Fuzz target: the MIDI file reader, and writing back what it read.
#[path = "common/memory_cap.rs"]
mod memory_cap;

#[global_allocator]
static ALLOC: memory_cap::MemoryCap = memory_cap::MemoryCap::new();

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(score) = cadenza::sink::midi_file::read_bytes(data) {
            let _ = cadenza::sink::midi_file::to_bytes(&score);
        }
    });
}
