//! Where scores go (and come from, for files): MIDI files, ABC text, MusicXML import, piano roll, MIDI outputs.

pub mod abc;
pub mod files;
pub mod midi_file;
pub mod musicxml;
pub mod out;
pub mod pianoroll;
