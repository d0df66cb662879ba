//! Timestamped, pre-encoded MIDI events: what the sequencer hands the real-time player.

use super::clock::Nanos;

/// Output slots an engine can hold (one per part or loop); the ledger is sized by it.
pub const MAX_PORTS: usize = 16;

/// Tag of events that belong to no track (clock pulses, silencing).
pub const SYSTEM_TAG: u32 = 0;

/// One MIDI message due at an absolute time. `Copy` and fixed-size, so it moves through the
/// lock-free ring without allocation and the player never parses anything but the status byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// When it is due, on the engine clock.
    pub at: Nanos,
    /// The track (play or loop instance) it belongs to, so a stopped track's events can be dropped.
    pub tag: u32,
    /// Flush generation: the player drops events older than the last flush.
    pub epoch: u32,
    /// Output slot.
    pub port: u8,
    pub len: u8,
    pub bytes: [u8; 3],
}

impl Event {
    pub fn new(at: Nanos, port: u8, bytes: &[u8]) -> Event {
        let mut b = [0u8; 3];
        let len = bytes.len().min(3);
        b[..len].copy_from_slice(&bytes[..len]);
        Event { at, tag: SYSTEM_TAG, epoch: 0, port, len: len as u8, bytes: b }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Encoders for the few messages cadenza sends. Values are masked into range, so the bytes are
/// always valid MIDI whatever a caller passes.
pub mod msg {
    pub fn note_on(channel: u8, pitch: u8, velocity: u8) -> [u8; 3] {
        // Velocity 0 would mean note-off; a note the score asks for must sound.
        [0x90 | (channel & 0x0F), pitch & 0x7F, (velocity & 0x7F).max(1)]
    }

    pub fn note_off(channel: u8, pitch: u8) -> [u8; 3] {
        [0x80 | (channel & 0x0F), pitch & 0x7F, 0]
    }

    pub fn control(channel: u8, controller: u8, value: u8) -> [u8; 3] {
        [0xB0 | (channel & 0x0F), controller & 0x7F, value & 0x7F]
    }

    pub fn program(channel: u8, program: u8) -> [u8; 2] {
        [0xC0 | (channel & 0x0F), program & 0x7F]
    }

    /// CC 123: All Notes Off.
    pub const ALL_NOTES_OFF: u8 = 123;
    pub const CLOCK: u8 = 0xF8;
    pub const START: u8 = 0xFA;
    pub const CONTINUE: u8 = 0xFB;
    pub const STOP: u8 = 0xFC;

    /// `Some((channel, pitch))` for a note-on with velocity > 0.
    pub fn as_note_on(b: &[u8]) -> Option<(u8, u8)> {
        (b.len() == 3 && b[0] & 0xF0 == 0x90 && b[2] > 0).then(|| (b[0] & 0x0F, b[1]))
    }

    /// `Some((channel, pitch))` for a note-off (or a note-on with velocity 0).
    pub fn as_note_off(b: &[u8]) -> Option<(u8, u8)> {
        (b.len() == 3 && (b[0] & 0xF0 == 0x80 || (b[0] & 0xF0 == 0x90 && b[2] == 0))).then(|| (b[0] & 0x0F, b[1]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_and_recognises_notes() {
        assert_eq!(msg::note_on(3, 60, 100), [0x93, 60, 100]);
        assert_eq!(msg::note_on(0, 200, 0), [0x90, 72, 1]);
        assert_eq!(msg::as_note_on(&[0x93, 60, 100]), Some((3, 60)));
        assert_eq!(msg::as_note_on(&[0x93, 60, 0]), None);
        assert_eq!(msg::as_note_off(&[0x93, 60, 0]), Some((3, 60)));
        assert_eq!(msg::as_note_off(&msg::note_off(15, 1)), Some((15, 1)));
        let e = Event::new(7, 1, &msg::program(2, 40));
        assert_eq!(e.bytes(), &[0xC2, 40]);
    }
}
