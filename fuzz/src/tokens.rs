//! Fuzz target: the token decoders of the bundled models (`tune`, `remi`, ...): arbitrary id
//! sequences pushed one by one, the grammar mask asked where the input says, then decoded whole.
//! The first input byte picks the model; the rest are little-endian u16 words, each an id in its
//! low 12 bits (any value up to 4,095, so out-of-vocabulary ids are exercised too) and, when its
//! top four bits are all set, a request for the whole mask after that id. Asking for the mask
//! after every id made an execution cost O(ids × vocabulary) (2.3 ms for 670 ids under AFL's
//! instrumentation, 442 executions a second); now the fuzzer chooses the states it inspects, and
//! the mask is always asked once at the end, in the final state. At most [`MAX_MASKS`] are asked
//! per input: AFL learns that asking finds edges, and its queue had filled with inputs asking
//! hundreds of times (27 ms each, 150-700 executions a second). With 64 the queue still filled
//! with inputs asking 64 times (about 80 µs a mask under instrumentation: one instance fell from
//! 4,000 to 400 executions a second over an hour), so 8: a mask is the decoder's answer to one
//! state, and the states come from the ids, which stay unlimited.
#[path = "common/memory_cap.rs"]
mod memory_cap;

#[global_allocator]
static ALLOC: memory_cap::MemoryCap = memory_cap::MemoryCap::new();

use cadenza::tokens::Encoding;

/// The top four bits of a word that ask for the mask after its id.
const MASK_HERE: u16 = 0xF000;

/// Masks asked per input at most (besides the final one).
const MAX_MASKS: usize = 8;

/// Ids read per input at most (the rest of a longer input is ignored). With masks capped, the
/// second cause of a falling rate was length: AFL's havoc stage grew inputs to 59,000 ids (118
/// KB, 70 ms an execution against 0.3 ms for a tune-sized one) and two instances fell from
/// 3,300 to about 1,000 executions a second each within 40 minutes. A whole tune with its
/// repeats is about 1,000 ids in these encodings (the models' context is 1,024); four of them
/// reach every state a decoder has.
const MAX_IDS: usize = 4096;

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
        let words: Vec<u16> = rest.chunks_exact(2).take(MAX_IDS).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let ids: Vec<u32> = words.iter().map(|&w| (w & !MASK_HERE) as u32).collect();
        let mut decoder = enc.decoder();
        let mut mask = vec![true; enc.vocab().len()];
        let mut ask_mask = |decoder: &dyn cadenza::tokens::Decoder| {
            mask.iter_mut().for_each(|m| *m = true);
            decoder.mask(&mut mask);
        };
        let mut asked = 0;
        for (&id, &word) in ids.iter().zip(&words) {
            decoder.push(id);
            if word & MASK_HERE == MASK_HERE && asked < MAX_MASKS {
                asked += 1;
                ask_mask(decoder.as_ref());
            }
        }
        ask_mask(decoder.as_ref());
        let _ = decoder.finish();
        let _ = enc.decode(&ids);
    });
}
