//! Fuzz target: the ABC reader, strict and lenient, every tune of a file, and printing back what it read.
#[path = "common/memory_cap.rs"]
mod memory_cap;

#[global_allocator]
static ALLOC: memory_cap::MemoryCap = memory_cap::MemoryCap::new();

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else { return };
        for tune in cadenza::dsl::parse_file(text) {
            if let Ok(score) = tune.result {
                // Whatever is read prints back (and the printer must not panic on it).
                let _ = cadenza::dsl::print(&score);
            }
        }
        let options = cadenza::dsl::ReadOptions { lenient: true, ornaments: true };
        let _ = cadenza::dsl::parse_file_with(text, options);
    });
}
