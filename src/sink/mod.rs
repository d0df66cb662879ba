//! Where scores go (and come from, for files): MIDI files, ABC text, MusicXML import, piano roll, MIDI outputs.

pub mod abc;
pub mod files;
#[cfg(feature = "jack")]
pub mod jack_out;
pub mod midi_file;
pub mod musicxml;
pub mod out;
pub mod pianoroll;

/// Largest score file any reader opens (ABC, MIDI, MusicXML): well past any real collection
/// or performance, and past what a score may hold ([`crate::score::MAX_NOTES`]), so a
/// multi-gigabyte file is refused by its size before it is read.
pub const MAX_FILE_BYTES: u64 = 256 << 20;

/// Reads a whole file of at most [`MAX_FILE_BYTES`], or says it is larger (the size is checked
/// on the bytes read, not only on what the file system claims).
pub fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    read_at_most(path, MAX_FILE_BYTES, "the largest score file cadenza reads")
}

/// Reads a whole file of at most `limit` bytes, or says it is larger than `limit` (`what` says
/// whose bound it is); the size is checked on the bytes read, not on what the file claims.
pub fn read_at_most(path: &std::path::Path, limit: u64, what: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        let msg = format!("larger than {limit} bytes, {what}");
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, msg));
    }
    Ok(bytes)
}
