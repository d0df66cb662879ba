//! Fuzz target: the MIDI file reader, and writing back what it read.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(score) = cadenza::sink::midi_file::read_bytes(data) {
            let _ = cadenza::sink::midi_file::to_bytes(&score);
        }
    });
}
