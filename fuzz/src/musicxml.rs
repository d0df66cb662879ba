//! Fuzz target: the MusicXML reader (plain `.xml` text and `.mxl` zip archives).
fn main() {
    afl::fuzz!(|data: &[u8]| {
        let path = if data.starts_with(b"PK") { "fuzz.mxl" } else { "fuzz.xml" };
        let _ = cadenza::sink::musicxml::read_bytes(data, std::path::Path::new(path));
    });
}
