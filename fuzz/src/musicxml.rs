//! Fuzz target: the MusicXML reader (plain `.xml` text and `.mxl` zip archives).
#[path = "common/memory_cap.rs"]
mod memory_cap;

#[global_allocator]
static ALLOC: memory_cap::MemoryCap = memory_cap::MemoryCap::new();

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = if data.starts_with(b"PK") { "fuzz.mxl" } else { "fuzz.xml" };
        let _ = cadenza::sink::musicxml::read_bytes(data, std::path::Path::new(path));
    });
}
