//! Fuzz target: the token decoders of the bundled models (`tune`, `remi`, ...): arbitrary id
//! sequences pushed one by one with the grammar mask asked after each, then decoded whole.
//! The first input byte picks the model; the rest are little-endian u16 ids (any value, so
//! out-of-vocabulary ids are exercised too).
#[path = "common/memory_cap.rs"]
mod memory_cap;

#[global_allocator]
static ALLOC: memory_cap::MemoryCap = memory_cap::MemoryCap::new();

use cadenza::tokens::Encoding;

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let encodings: Vec<Box<dyn Encoding>> = ["folk", "folk-lstm", "chorale"]
        .iter()
        .filter_map(|m| cadenza::tokens::load(&root.join(m).join("vocab.json")).ok())
        .collect();
    assert!(!encodings.is_empty(), "no bundled vocabulary found under {}", root.display());
    // Read-only inside the loop: a panic leaves nothing half-changed.
    let encodings = std::panic::AssertUnwindSafe(encodings);
    afl::fuzz!(|data: &[u8]| {
        let Some((&pick, rest)) = data.split_first() else { return };
        let enc = &encodings[pick as usize % encodings.len()];
        let ids: Vec<u32> = rest.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32).collect();
        let mut decoder = enc.decoder();
        let mut mask = vec![true; enc.vocab().len()];
        for &id in &ids {
            decoder.push(id);
            mask.iter_mut().for_each(|m| *m = true);
            decoder.mask(&mut mask);
        }
        let _ = decoder.finish();
        let _ = enc.decode(&ids);
    });
}
