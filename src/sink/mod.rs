//! Where scores go (and come from, for files): MIDI files, ABC text, MusicXML import, piano roll, MIDI outputs.
