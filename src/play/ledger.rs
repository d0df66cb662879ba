//! The note-off ledger: which notes are sounding on which port and channel, so none is left hanging.
//!
//! Fixed size, allocated once when the player is built; updating it is an array write, so the
//! real-time thread can keep it for every message it sends.

use super::event::{msg, MAX_PORTS};

const SLOTS: usize = MAX_PORTS * 16 * 128;

fn slot(port: u8, channel: u8, pitch: u8) -> Option<usize> {
    let port = port as usize;
    (port < MAX_PORTS).then(|| (port * 16 + (channel & 0x0F) as usize) * 128 + (pitch & 0x7F) as usize)
}

/// Sounding notes per port, channel and pitch, with the track that started each.
pub struct Ledger {
    /// How many note-ons without their note-off (the same pitch can be struck twice).
    counts: Box<[u8]>,
    /// Tag of the track whose note-on came last at that slot.
    tags: Box<[u32]>,
    /// Channels that ever carried a note, per port (bit n = channel n): CC 123 goes only there.
    used: [u16; MAX_PORTS],
    sounding: usize,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            counts: vec![0; SLOTS].into_boxed_slice(),
            tags: vec![0; SLOTS].into_boxed_slice(),
            used: [0; MAX_PORTS],
            sounding: 0,
        }
    }
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Updates the table for a message just sent on `port`.
    pub fn record(&mut self, port: u8, bytes: &[u8], tag: u32) {
        if let Some((ch, pitch)) = msg::as_note_on(bytes) {
            if let Some(i) = slot(port, ch, pitch) {
                self.counts[i] = self.counts[i].saturating_add(1);
                self.tags[i] = tag;
                self.used[port as usize] |= 1 << ch;
                self.sounding += 1;
            }
        } else if let Some((ch, pitch)) = msg::as_note_off(bytes) {
            if let Some(i) = slot(port, ch, pitch) {
                // MIDI turns a pitch off whatever count it had; so does the ledger.
                self.sounding -= self.counts[i] as usize;
                self.counts[i] = 0;
            }
        } else if bytes.len() == 3 && bytes[0] & 0xF0 == 0xB0 && (bytes[1] == msg::ALL_NOTES_OFF || bytes[1] == 120) {
            let ch = bytes[0] & 0x0F;
            for pitch in 0..128u8 {
                if let Some(i) = slot(port, ch, pitch) {
                    self.sounding -= self.counts[i] as usize;
                    self.counts[i] = 0;
                }
            }
        }
    }

    /// Notes sounding now.
    pub fn sounding(&self) -> usize {
        self.sounding
    }

    pub fn is_sounding(&self, port: u8, channel: u8, pitch: u8) -> bool {
        slot(port, channel, pitch).is_some_and(|i| self.counts[i] > 0)
    }

    /// Channels of `port` that carried notes (bit n = channel n).
    pub fn used_channels(&self, port: u8) -> u16 {
        self.used.get(port as usize).copied().unwrap_or(0)
    }

    /// Calls `send(port, note_off)` for every sounding note (of track `tag` only, and on port
    /// `only_port` only, when given) and clears them. Walks only ports and channels that were used.
    pub fn release(&mut self, tag: Option<u32>, only_port: Option<u8>, mut send: impl FnMut(u8, [u8; 3])) {
        if self.sounding == 0 {
            return;
        }
        for port in 0..MAX_PORTS as u8 {
            if only_port.is_some_and(|p| p != port) {
                continue;
            }
            let used = self.used[port as usize];
            if used == 0 {
                continue;
            }
            for ch in 0..16u8 {
                if used & (1 << ch) == 0 {
                    continue;
                }
                for pitch in 0..128u8 {
                    let Some(i) = slot(port, ch, pitch) else { continue };
                    if self.counts[i] > 0 && tag.is_none_or(|t| self.tags[i] == t) {
                        self.sounding -= self.counts[i] as usize;
                        self.counts[i] = 0;
                        send(port, msg::note_off(ch, pitch));
                    }
                }
            }
        }
    }

    /// Calls `send(port, cc123)` for each used channel of each used port.
    pub fn all_notes_off(&self, mut send: impl FnMut(u8, [u8; 3])) {
        for port in 0..MAX_PORTS as u8 {
            let used = self.used[port as usize];
            for ch in 0..16u8 {
                if used & (1 << ch) != 0 {
                    send(port, msg::control(ch, msg::ALL_NOTES_OFF, 0));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_what_sounds_and_only_used_channels() {
        let mut l = Ledger::new();
        l.record(0, &msg::note_on(0, 60, 90), 1);
        l.record(0, &msg::note_on(0, 60, 90), 1);
        l.record(1, &msg::note_on(9, 36, 90), 2);
        l.record(0, &msg::note_on(3, 64, 90), 2);
        l.record(0, &msg::note_off(3, 64), 2);
        assert_eq!(l.sounding(), 3);
        let mut offs = Vec::new();
        l.release(Some(2), None, |p, b| offs.push((p, b)));
        assert_eq!(offs, vec![(1, msg::note_off(9, 36))]);
        l.release(None, None, |p, b| offs.push((p, b)));
        assert_eq!(offs[1], (0, msg::note_off(0, 60)));
        assert_eq!(offs.len(), 2, "a doubly struck pitch needs one note-off");
        assert_eq!(l.sounding(), 0);
        let mut cc = Vec::new();
        l.all_notes_off(|p, b| cc.push((p, b)));
        assert_eq!(cc, vec![(0, msg::control(0, 123, 0)), (0, msg::control(3, 123, 0)), (1, msg::control(9, 123, 0))]);
    }

    #[test]
    fn ignores_ports_beyond_the_table() {
        let mut l = Ledger::new();
        l.record(200, &msg::note_on(0, 60, 90), 1);
        assert_eq!(l.sounding(), 0);
        l.record(0, &msg::note_on(0, 60, 90), 1);
        l.record(0, &msg::control(0, 123, 0), 0);
        assert_eq!(l.sounding(), 0);
    }
}
