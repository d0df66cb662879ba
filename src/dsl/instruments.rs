//! General MIDI instrument names ⇄ program numbers (0-based), for `%%instrument` and friends.

/// The 128 General MIDI level 1 program names, index = program number (0-based).
pub const GM_NAMES: [&str; 128] = [
    "acoustic grand piano",
    "bright acoustic piano",
    "electric grand piano",
    "honky-tonk piano",
    "electric piano 1",
    "electric piano 2",
    "harpsichord",
    "clavinet",
    "celesta",
    "glockenspiel",
    "music box",
    "vibraphone",
    "marimba",
    "xylophone",
    "tubular bells",
    "dulcimer",
    "drawbar organ",
    "percussive organ",
    "rock organ",
    "church organ",
    "reed organ",
    "accordion",
    "harmonica",
    "tango accordion",
    "acoustic guitar (nylon)",
    "acoustic guitar (steel)",
    "electric guitar (jazz)",
    "electric guitar (clean)",
    "electric guitar (muted)",
    "overdriven guitar",
    "distortion guitar",
    "guitar harmonics",
    "acoustic bass",
    "electric bass (finger)",
    "electric bass (pick)",
    "fretless bass",
    "slap bass 1",
    "slap bass 2",
    "synth bass 1",
    "synth bass 2",
    "violin",
    "viola",
    "cello",
    "contrabass",
    "tremolo strings",
    "pizzicato strings",
    "orchestral harp",
    "timpani",
    "string ensemble 1",
    "string ensemble 2",
    "synth strings 1",
    "synth strings 2",
    "choir aahs",
    "voice oohs",
    "synth voice",
    "orchestra hit",
    "trumpet",
    "trombone",
    "tuba",
    "muted trumpet",
    "french horn",
    "brass section",
    "synth brass 1",
    "synth brass 2",
    "soprano sax",
    "alto sax",
    "tenor sax",
    "baritone sax",
    "oboe",
    "english horn",
    "bassoon",
    "clarinet",
    "piccolo",
    "flute",
    "recorder",
    "pan flute",
    "blown bottle",
    "shakuhachi",
    "whistle",
    "ocarina",
    "lead 1 (square)",
    "lead 2 (sawtooth)",
    "lead 3 (calliope)",
    "lead 4 (chiff)",
    "lead 5 (charang)",
    "lead 6 (voice)",
    "lead 7 (fifths)",
    "lead 8 (bass + lead)",
    "pad 1 (new age)",
    "pad 2 (warm)",
    "pad 3 (polysynth)",
    "pad 4 (choir)",
    "pad 5 (bowed)",
    "pad 6 (metallic)",
    "pad 7 (halo)",
    "pad 8 (sweep)",
    "fx 1 (rain)",
    "fx 2 (soundtrack)",
    "fx 3 (crystal)",
    "fx 4 (atmosphere)",
    "fx 5 (brightness)",
    "fx 6 (goblins)",
    "fx 7 (echoes)",
    "fx 8 (sci-fi)",
    "sitar",
    "banjo",
    "shamisen",
    "koto",
    "kalimba",
    "bagpipe",
    "fiddle",
    "shanai",
    "tinkle bell",
    "agogo",
    "steel drums",
    "woodblock",
    "taiko drum",
    "melodic tom",
    "synth drum",
    "reverse cymbal",
    "guitar fret noise",
    "breath noise",
    "seashore",
    "bird tweet",
    "telephone ring",
    "helicopter",
    "applause",
    "gunshot",
];

/// Short names musicians type, mapped to programs (checked before the full GM names).
pub const ALIASES: [(&str, u8); 30] = [
    ("piano", 0),
    ("grand piano", 0),
    ("epiano", 4),
    ("harpsichord", 6),
    ("organ", 19),
    ("accordion", 21),
    ("harmonica", 22),
    ("guitar", 24),
    ("nylon guitar", 24),
    ("steel guitar", 25),
    ("electric guitar", 27),
    ("bass", 32),
    ("violin", 40),
    ("viola", 41),
    ("cello", 42),
    ("double bass", 43),
    ("strings", 48),
    ("harp", 46),
    ("choir", 52),
    ("voice", 52),
    ("trumpet", 56),
    ("horn", 60),
    ("sax", 65),
    ("oboe", 68),
    ("clarinet", 71),
    ("flute", 73),
    ("recorder", 74),
    ("tin whistle", 78),
    ("bagpipes", 109),
    ("fiddle", 110),
];

/// The program for an instrument name (case and surrounding space ignored), or a number.
pub fn program(name: &str) -> Option<u8> {
    let n = name.trim().to_ascii_lowercase();
    if let Ok(p) = n.parse::<u8>() {
        return (p < 128).then_some(p);
    }
    let n = n.replace(['_', '-'], " ");
    ALIASES
        .iter()
        .find(|(a, _)| *a == n)
        .map(|(_, p)| *p)
        .or_else(|| GM_NAMES.iter().position(|g| *g == n).map(|p| p as u8))
}

/// The General MIDI name of a program.
pub fn name(program: u8) -> &'static str {
    GM_NAMES[program as usize & 127]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names() {
        // Numbers from the General MIDI 1 sound set (1-based there, 0-based here).
        assert_eq!(program("piano"), Some(0));
        assert_eq!(program("Violin"), Some(40));
        assert_eq!(program("viola"), Some(41));
        assert_eq!(program("cello"), Some(42));
        assert_eq!(program("flute"), Some(73));
        assert_eq!(program("fiddle"), Some(110));
        assert_eq!(program("church organ"), Some(19));
        assert_eq!(program("tin-whistle"), Some(78));
        assert_eq!(program("41"), Some(41));
        assert_eq!(program("kazoo"), None);
        assert_eq!(name(73), "flute");
        assert_eq!(name(127), "gunshot");
    }
}
