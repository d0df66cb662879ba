//! Integration tests: dsl. Constructs of ABC 2.1, equivalence laws for its sugar, golden caret
//! errors, abc2midi's rendering of real tunes, multi-tune files, and `parse(print(s)) == s`.

use cadenza::dsl::{self, instruments, DslError};
use cadenza::score::{Key, Mode, Note, Score, Voice};
use cadenza::time::{Meter, MeterSymbol, TempoMap, Tick};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dsl").join(name)
}

/// (pitch, start, end) of every note, in order.
fn notes_of(s: &Score) -> Vec<(u8, Tick, Tick)> {
    s.notes.iter().map(|n| (n.pitch, n.start, n.end())).collect()
}

/// Notes of a body under `M:4/4 L:1/8 K:C` (an eighth is 240 ticks).
fn play(body: &str) -> Vec<(u8, Tick, Tick)> {
    play_in("K:C", body)
}

fn play_in(header: &str, body: &str) -> Vec<(u8, Tick, Tick)> {
    let text = format!("X:1\nT:t\nM:4/4\nL:1/8\n{header}\n{body}\n");
    match dsl::parse(&text) {
        Ok(s) => notes_of(&s),
        Err(e) => panic!("{text}\n{e}"),
    }
}

/// Asserts that two spellings of the same music sound the same.
macro_rules! same {
    ($a:expr, $b:expr) => {
        assert_eq!(play($a), play($b), "`{}` should equal `{}`", $a, $b)
    };
}

// ---------------------------------------------------------------- constructs

#[test]
fn header_fields_fill_meta() {
    let s = dsl::parse(
        "X:7\nT:The Kesh\nT:Second title\nC:Trad.\nM:6/8\nL:1/8\nQ:3/8=120\nK:Gmix\n\
         %%style irish\n%%composer oneill\n%%instrument fiddle\n%%temperature 0.9\n%%top_k 40\n%%top_p 0.95\n\
         %%seed 7\n%%bars 8\n%%model folk\nGAG GAB|\n",
    )
    .unwrap();
    let m = &s.meta;
    assert_eq!(m.reference, Some(7));
    assert_eq!(m.title.as_deref(), Some("The Kesh"));
    assert_eq!(m.composer_field.as_deref(), Some("Trad."));
    assert_eq!(s.meter(), Meter::new(6, 8));
    assert_eq!(s.key(), Key::new(4, 0, Mode::Mixolydian));
    // 3/8 = 120 is 120 dotted quarters, 180 quarters a minute.
    assert_eq!(m.tempo, TempoMap::constant(180.0));
    assert_eq!(m.style.as_deref(), Some("irish"));
    assert_eq!(m.composer.as_deref(), Some("oneill"));
    assert_eq!(m.instrument.as_deref(), Some("fiddle"));
    assert_eq!(m.program, Some(110));
    assert_eq!(s.voices[0].program, 110);
    assert_eq!(s.notes[0].program, 110);
    let g = &m.gen;
    assert_eq!((g.temperature, g.top_k, g.top_p, g.seed, g.bars), (Some(0.9), Some(40), Some(0.95), Some(7), Some(8)));
    assert_eq!(g.model.as_deref(), Some("folk"));
    let p = dsl::parse("X:1\n%%program 41\nK:C\nC|\n").unwrap();
    assert_eq!((p.meta.program, p.notes[0].program), (Some(41), 41));
    assert_eq!(instruments::program("viola"), Some(41));
}

#[test]
fn all_modes_and_key_accidentals() {
    // K: value -> MIDI pitches of the written notes F, B and c.
    let cases = [
        ("K:Ador", [66, 71, 72]), // A dorian has G major's signature
        ("K:Dmix", [66, 71, 72]), // D mixolydian = G major
        ("K:Bb", [65, 70, 72]),
        ("K:F#m", [66, 71, 73]),  // F# C# G#
        ("K:Ephr", [65, 71, 72]), // = C major
        ("K:Flyd", [65, 71, 72]),
        ("K:Bloc", [65, 71, 72]),
        ("K:Gdor", [65, 70, 72]), // = F major
        ("K:Eaeo", [66, 71, 72]), // = G major
        ("K:D ^g", [66, 71, 73]), // D major plus G#
        ("K:none", [65, 71, 72]),
    ];
    for (k, want) in cases {
        let got: Vec<u8> = play_in(k, "F B c").iter().map(|x| x.0).collect();
        assert_eq!(got, want.to_vec(), "{k}");
    }
    assert_eq!(play_in("K:D ^g", "G")[0].0, 68);
}

#[test]
fn meters_common_cut_and_none() {
    let m = |v: &str| dsl::parse(&format!("X:1\nM:{v}\nK:C\nC|\n")).unwrap().meter();
    assert_eq!(m("C"), Meter { num: 4, den: 4, symbol: MeterSymbol::Common });
    assert_eq!(m("C|"), Meter { num: 2, den: 2, symbol: MeterSymbol::Cut });
    assert_eq!(m("none").symbol, MeterSymbol::Free);
    // The default unit follows the meter: 2/4 is under 3/4, so L is 1/16 (120 ticks).
    let s = dsl::parse("X:1\nM:2/4\nK:C\nC D|\n").unwrap();
    assert_eq!(s.notes[1].start, 120);
    let s = dsl::parse("X:1\nM:3/4\nK:C\nC D|\n").unwrap();
    assert_eq!(s.notes[1].start, 240);
}

#[test]
fn pitches_octaves_and_accidentals() {
    let n = play("C, C c c' ^C _B, =F ^^F __B");
    let pitches: Vec<u8> = n.iter().map(|x| x.0).collect();
    assert_eq!(pitches, vec![48, 60, 72, 84, 61, 58, 65, 67, 69]);
}

#[test]
fn accidentals_carry_through_the_bar() {
    // Carried to the end of the bar, in every octave (abc2midi: `^c c'` plays C#6).
    same!("^F F f | F", "^F ^F ^f | =F");
    same!("_B B =B B", "_B _B =B =B");
    same!("^c c'", "^c ^c'");
    // A tie keeps its accidental across the bar line.
    assert_eq!(play("^F2-|F2"), vec![(66, 0, 960)]);
}

#[test]
fn every_length_form() {
    let n = play("A2 A/2 A/ A// A3/2 A3/ A");
    let durs: Vec<Tick> = n.iter().map(|x| x.2 - x.1).collect();
    assert_eq!(durs, vec![480, 120, 120, 60, 360, 360, 240]);
    same!("A//", "A/4");
    same!("A/", "A/2");
}

#[test]
fn broken_rhythm_equals_its_expansion() {
    same!("A>B", "A3/2B/2");
    same!("A<B", "A/2B3/2");
    same!("A>>B", "A7/4B/4");
    same!("A<<B", "A/4B7/4");
    same!("A>>>B", "A15/8B/8");
    same!("A2>B2", "A3B");
    same!("[CE]>G", "[CE]3/2G/2");
    same!("z>A", "z3/2A/2");
    same!("!p!A>\"Am\"B", "!p!A3/2\"Am\"B/2");
}

#[test]
fn tuplets_equal_their_expansion() {
    same!("(3ABc", "A2/3B2/3c2/3");
    same!("(3:2:3ABc", "A2/3B2/3c2/3");
    same!("(3::ABc d", "A2/3B2/3c2/3 d");
    same!("(2AB", "A3/2B3/2");
    same!("(4ABcd", "A3/4B3/4c3/4d3/4");
    same!("(3:2:2AB c", "A2/3B2/3 c");
    // (5 in simple time is 5 in the time of 2; rounding never drifts over a whole group.
    let n = play("(5ABcde f");
    assert_eq!(n[5].1, 480);
    // Six-eight: (5 means 5 in the time of 3.
    let s = dsl::parse("X:1\nM:6/8\nL:1/8\nK:C\n(5ABcde f|\n").unwrap();
    assert_eq!(s.notes[5].start, 720);
}

#[test]
fn rests_ties_slurs_chords() {
    same!("A z B x C", "A z B z C");
    same!("A-A", "A2");
    same!("A2-|A2 B", "A4 B");
    same!("(AB) c", "AB c");
    same!("A -A", "A2");
    // `Z4` is four bars of rest.
    assert_eq!(play("Z2 | C")[0].1, 2 * 1920);
    // A chord lasts its first note's length; notes keep their own.
    assert_eq!(play("[CEG]2 A"), vec![(60, 0, 480), (64, 0, 480), (67, 0, 480), (69, 480, 720)]);
    // (Notes sort by start, then length.)
    assert_eq!(play("[C2E]G"), vec![(64, 0, 240), (60, 0, 480), (67, 480, 720)]);
    same!("[CE]-[CE]", "[CE]2");
    same!("[C-E]C", "[C2E]");
}

#[test]
fn grace_notes_last_a_quarter_of_the_unit_each() {
    // abc2midi 4.84: `{ga}A2` (L:1/8) plays g 0-60, a 60-120, A 120-480; a single grace before
    // a long note is as short (`{A}G2`: A 0-60, G 60-480, O'Neill's 1134 in tests/data/abc2midi),
    // and graces never take more than half of a short one.
    assert_eq!(play("{ga}A2"), vec![(79, 0, 60), (81, 60, 120), (69, 120, 480)]);
    assert_eq!(play("{A}G2"), vec![(69, 0, 60), (67, 60, 480)]);
    assert_eq!(play("{/g}A"), vec![(79, 0, 60), (69, 60, 240)]);
    assert_eq!(play("{gag}A/"), vec![(79, 0, 20), (81, 20, 40), (79, 40, 60), (69, 60, 120)]);
}

#[test]
fn decorations_and_symbols_do_not_change_pitches() {
    same!("!trill!A ~B TC uD vE +fermata+F", "A B C D E F2");
    same!("\"Am\"A \"^rit.\"B \"G7\"c", "A B c");
    let s = dsl::parse("X:1\nK:C\n\"Am\"A \"^rit.\"B \"G7\"c|\n").unwrap();
    assert_eq!(s.meta.chord_symbols, vec![(0, "Am".to_string()), (480, "G7".to_string())]);
    // abc2midi's renderings: staccato sounds half; a fermata doubles the note.
    assert_eq!(play(".A2 B"), vec![(69, 0, 240), (71, 480, 720)]);
    assert_eq!(play("HA B"), vec![(69, 0, 480), (71, 480, 720)]);
    // Dynamics set the velocity of the notes that follow.
    let s = dsl::parse("X:1\nK:C\n!p!A !ff!B|\n").unwrap();
    assert_eq!((s.notes[0].velocity, s.notes[1].velocity), (60, 112));
    assert_eq!(dsl::parse("X:1\nK:C\nA|\n").unwrap().notes[0].velocity, 80);
}

#[test]
fn repeats_and_endings_play_in_order() {
    same!("|:AB:|", "ABAB");
    same!("AB:|", "ABAB");
    same!("|:A|1B:|2c|]", "ABAc");
    same!("|:A[1B:|[2c|]", "ABAc");
    same!("|:A|1B:|2c:|3d|]", "ABAcAd");
    same!("|:A|1,2B:|3c|]", "ABABAc");
    same!("|:A::B:|", "AABB");
    same!("|:A:|:B:|", "AABB");
    same!("[|A||B|]", "AB");
    same!("A:|B:|", "AABB");
    same!("|:A :| |: B [1 c :| [2 d |]", "AA BcBd");
}

/// Where a `:|` with no `|:` of its own goes back to (ABC 2.1 §4.8 leaves it open). As abc2midi
/// 4.84 plays it (each case rendered with it): after a plain `:|`, to the last double bar
/// (`||`, `|]`, `[|`) since, else to that `:|`; with no `:|` before, to the start, double bars
/// or not. One difference is kept on purpose: a double bar that closes a set of endings starts
/// the next strain (`|: A |1 B :|2 c || d :|` plays d twice); abc2midi goes back to the first
/// strain and skips its endings (A B A c d A d), which no tune means.
#[test]
fn repeats_without_a_start_go_where_abc2midi_goes() {
    same!("A :| B || c :|", "AA B cc");
    same!("A :| B |] c :|", "AA B cc");
    same!("A :| B || c || d :|", "AA B c dd");
    same!("A || B :|", "AB AB");
    same!("|: A :| |: B [|]:|", "AA BB");
    same!("|: A |1 B :|2 c || d :|", "AB Ac dd");
    same!("|: A |1 B :|2 c || d |1 e :|2 f ||", "AB Ac de df");
}

#[test]
fn inline_fields_and_line_breaks() {
    same!("F [K:D] F", "F ^F");
    same!("[L:1/4]A [L:1/8]A", "A2 A");
    same!("AB \\\ncd", "ABcd");
    same!("AB % comment\ncd", "ABcd");
    same!("AB\nw: la la\ncd", "ABcd");
    same!("AB\nK:D\nF", "AB^F");
    same!("AB [r:remark] c", "ABc");
    let s = dsl::parse("X:1\nM:4/4\nL:1/4\nK:C\nCDEF|[M:3/4]CDE|[Q:1/4=60]C|\n").unwrap();
    assert_eq!(s.meta.meters, vec![(0, Meter::new(4, 4)), (1920, Meter::new(3, 4))]);
    assert_eq!(s.meta.tempo.bpm_at(3360), 60.0);
    assert_eq!(s.meta.tempo.bpm_at(0), 120.0);
}

#[test]
fn voices_play_together() {
    let s = dsl::parse("X:1\nM:4/4\nL:1/4\nK:C\nV:1\nCDEF|\nV:2\n%%MIDI program 42\nC,4|\nV:1\nG4|\n").unwrap();
    assert_eq!(s.voices.len(), 2);
    assert_eq!(s.voices[1], Voice { name: "2".into(), channel: 1, program: 42 });
    let v2: Vec<&Note> = s.notes.iter().filter(|n| n.voice == 1).collect();
    assert_eq!((v2[0].start, v2[0].dur, v2[0].pitch, v2[0].channel, v2[0].program), (0, 1920, 48, 1, 42));
    let last = s.notes.iter().rfind(|n| n.voice == 0).unwrap();
    assert_eq!((last.start, last.pitch), (1920, 67));
    // Inline voice switches work too.
    let t = dsl::parse("X:1\nL:1/4\nK:C\n[V:S] c2 | [V:A] E2 |\n").unwrap();
    assert_eq!(notes_of(&t), vec![(64, 0, 960), (72, 0, 960)]);
}

/// Trills and rolls as abc2midi 4.84 plays them when ornaments are asked for (each case rendered with
/// it): upper neighbour in the key and the note alternating, upper first, in notes of a quarter
/// halved until one lasts at most 100 ms; written, the trill is the note.
#[test]
fn trills_play_as_abc2midi_plays_them_when_asked() {
    let read = |q: &str, body: &str, ornaments: bool| {
        let text = format!("X:1\nM:4/4\nL:1/8\nQ:{q}\nK:C\n{body}\n");
        let opts = dsl::ReadOptions { ornaments, ..Default::default() };
        let s = dsl::parse_file_with(&text, opts).remove(0).result.unwrap();
        s.notes.iter().map(|n| (n.pitch, n.start, n.dur)).collect::<Vec<_>>()
    };
    let alternating = |upper: u8, note: u8, step: Tick, n: u64| -> Vec<(u8, Tick, Tick)> {
        (0..n).map(|i| (if i % 2 == 0 { upper } else { note }, i * step, step)).collect()
    };
    // 32nds at 120 bpm, 64ths at 60, 16ths at 240; a dotted `c>` gets 6.
    assert_eq!(read("1/4=120", "Tc2", true), alternating(74, 72, 60, 8));
    assert_eq!(read("1/4=60", "Tc2", true), alternating(74, 72, 30, 16));
    assert_eq!(read("1/4=240", "Tc2", true), alternating(74, 72, 120, 4));
    assert_eq!(read("1/4=120", "!trill!c>d", true)[..6], alternating(74, 72, 60, 6)[..]);
    // The upper note is the key's: in F, a trill on A goes to B flat.
    assert_eq!(read("1/4=120", "[K:F]TA", true), alternating(70, 69, 60, 4));
    assert_eq!(read("1/4=120", "Tc2", false), vec![(72, 0, 480)]);
    // Rolls: a note three units long is three beats, the last two cut from above and below;
    // any other is one cut from above (graces a quarter of the unit).
    assert_eq!(
        read("1/4=120", "~c3", true),
        vec![(72, 0, 240), (74, 240, 60), (72, 300, 180), (71, 480, 60), (72, 540, 180)]
    );
    assert_eq!(read("1/4=120", "~c2", true), vec![(74, 0, 60), (72, 60, 420)]);
    assert_eq!(read("1/4=120", "~c2", false), vec![(72, 0, 480)]);
}

#[test]
fn parts_follow_the_header_order() {
    let s = dsl::parse("X:1\nL:1/4\nP:ABA\nK:C\nP:A\nCD|\nP:B\nEF|\n").unwrap();
    let pitches: Vec<u8> = s.notes.iter().map(|n| n.pitch).collect();
    assert_eq!(pitches, vec![60, 62, 64, 65, 60, 62]);
    assert_eq!(s.meta.parts, vec![(0, "A".into()), (960, "B".into()), (1920, "A".into())]);
    // Each part repeats on its own: B's `:|` goes back to B, not into A (abc2midi 4.84 plays
    // C D E F E F C D).
    let s = dsl::parse("X:1\nL:1/4\nP:ABA\nK:C\nP:A\nCD|]\nP:B\nEF:|\n").unwrap();
    let pitches: Vec<u8> = s.notes.iter().map(|n| n.pitch).collect();
    assert_eq!(pitches, vec![60, 62, 64, 65, 64, 65, 60, 62]);
    // A label that is not an order plays as written.
    let s = dsl::parse("X:1\nL:1/4\nP:Verse\nK:C\nCD|\n").unwrap();
    assert_eq!(s.notes.len(), 2);
}

#[test]
fn multi_tune_files_keep_going_past_a_bad_tune() {
    let text = "% a file header\n%%style irish\n\nX:1\nT:One\nK:G\nGAB|\n\nX:2\nT:Broken\nK:G\nGA ? B|\n\nX:3\nT:Three\nK:D\nDEF|\n";
    let tunes = dsl::parse_file(text);
    assert_eq!(tunes.len(), 3);
    assert!(tunes[0].result.is_ok() && tunes[2].result.is_ok());
    let e = tunes[1].result.as_ref().unwrap_err();
    assert_eq!((e.line, e.column, e.tune), (12, 4, Some(2)));
    assert_eq!(tunes[1].title.as_deref(), Some("Broken"));
    assert_eq!(tunes[2].x, Some(3));
    // The file header's directives reach every tune.
    assert_eq!(tunes[2].result.as_ref().unwrap().meta.style.as_deref(), Some("irish"));
    assert_eq!(dsl::parse_tune(text, 3).unwrap().notes[0].pitch, 62);
    assert!(dsl::parse_tune(text, 9).unwrap_err().to_string().contains("X:9"));
    // `parse` is the first tune.
    assert_eq!(dsl::parse(text).unwrap().meta.title.as_deref(), Some("One"));
    // A fragment without X: or K: is a tune too.
    assert_eq!(dsl::parse("CDE").unwrap().notes.len(), 3);
}

// ---------------------------------------------------------------- errors

/// The hard constraints a prompt can carry for generation, and how they print back.
#[test]
fn constraint_directives_fill_meta_and_print_back() {
    let text = "X:1\n%%range D4 B5\n%%scale D dorian\n%%polyphony 1\n%%whole_bars\n%%mono_voices\n\
                %%repetition_penalty 1.2\nM:6/8\nL:1/8\nK:Ador\neAA eAA|\n";
    let s = dsl::parse(text).unwrap();
    let g = &s.meta.gen;
    assert_eq!(g.range, Some((62, 83)));
    // D dorian: D E F G A B C.
    assert_eq!(g.pitch_classes, Some(vec![0, 2, 4, 5, 7, 9, 11]));
    assert_eq!((g.max_polyphony, g.whole_bars, g.in_key, g.repetition_penalty), (Some(1), true, false, Some(1.2)));
    assert!(g.mono_voices);
    let printed = dsl::print(&s);
    assert!(
        printed.contains("%%range D4 B5\n%%scale 0 2 4 5 7 9 11\n%%polyphony 1\n%%whole_bars\n%%mono_voices\n"),
        "{printed}"
    );
    assert_eq!(dsl::parse(&printed).unwrap(), s);

    let scale = |v: &str| dsl::parse(&format!("X:1\n%%scale {v}\nK:C\nC|\n")).unwrap().meta.gen;
    assert!(scale("key").in_key);
    assert_eq!(scale("key").pitch_classes, None);
    assert_eq!(scale("A minor pentatonic").pitch_classes, Some(vec![0, 2, 4, 7, 9]));
    assert_eq!(scale("G pentatonic").pitch_classes, Some(vec![2, 4, 7, 9, 11]));
    assert_eq!(scale("F#m").pitch_classes, Some(vec![1, 2, 4, 6, 8, 9, 11]));
    assert_eq!(scale("7, 0,4 0").pitch_classes, Some(vec![0, 4, 7]));
    let key_pentatonic = scale("key  pentatonic");
    assert!(key_pentatonic.in_key && key_pentatonic.pentatonic && key_pentatonic.pitch_classes.is_none());
    let any = scale("any");
    assert!(any.no_scale && !any.in_key && any.pitch_classes.is_none());
    assert!(dsl::parse("X:1\n%%scale pentatonic\nK:C\nC|\n").is_err(), "a pentatonic of nothing");
    // Both print back as written.
    for v in ["key pentatonic", "any"] {
        let s = dsl::parse(&format!("X:1\n%%scale {v}\nK:C\nC|\n")).unwrap();
        let printed = dsl::print(&s);
        assert!(printed.contains(&format!("%%scale {v}\n")), "{printed}");
        assert_eq!(dsl::parse(&printed).unwrap().meta.gen, s.meta.gen);
    }
    let np = dsl::parse("X:1\n%%no_parallels\nK:C\nC|\n").unwrap();
    assert!(np.meta.gen.no_parallels);
    assert!(dsl::print(&np).contains("%%no_parallels\n"));
    // `%%scale any` keeps a model's default scale out; other settings still fall back.
    let model = cadenza::score::GenSettings { in_key: true, pentatonic: true, top_p: Some(0.9), ..Default::default() };
    let merged = any.or(&model);
    assert!(!merged.in_key && !merged.pentatonic && merged.top_p == Some(0.9));
    assert!(scale("C").or(&model).in_key, "without `any` the model's scale stays");
    // A scale named in the prompt replaces the model's: `key` over `key pentatonic` is diatonic.
    let key_over = scale("key").or(&model);
    assert!(key_over.in_key && !key_over.pentatonic, "{key_over:?}");
    // A later `%%scale` line decides the key fields again; pitch classes are kept beside the
    // key, so a header with both reads back the same whichever comes first.
    let both = dsl::parse("X:1\n%%scale key pentatonic\n%%scale key\n%%scale 0 2 4 7 9\nK:C\nC|\n").unwrap().meta.gen;
    assert!(both.in_key && !both.pentatonic && both.pitch_classes == Some(vec![0, 2, 4, 7, 9]), "{both:?}");
    let reordered = dsl::parse("X:1\n%%scale 0 2 4 7 9\n%%scale key\nK:C\nC|\n").unwrap().meta.gen;
    assert_eq!(reordered, both);
    let range = |v: &str| dsl::parse(&format!("X:1\n%%range {v}\nK:C\nC|\n")).map(|s| s.meta.gen.range);
    assert_eq!(range("55..84").unwrap(), Some((55, 84)));
    assert_eq!(range("G3-C6").unwrap(), Some((55, 84)));
    assert!(range("C6 C4").is_err(), "a reversed range is an error");
}

#[test]
fn golden_error_messages() {
    let dir = data("errors");
    let mut seen = 0;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.iter().filter(|p| p.extension().is_some_and(|x| x == "abc")) {
        let text = std::fs::read_to_string(path).unwrap();
        let err: DslError = match dsl::parse(&text) {
            Ok(_) => panic!("{} should fail", path.display()),
            Err(e) => e,
        };
        let want = std::fs::read_to_string(path.with_extension("err")).unwrap();
        assert_eq!(err.to_string(), want.trim_end_matches('\n'), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} golden errors");
}

#[test]
fn errors_never_panic_on_garbage() {
    let inputs = [
        "[",
        "{",
        "(",
        "\"",
        "!",
        "X:",
        "X:1\nK:",
        "X:1\nK:C\n[K:",
        "((((",
        "A99999999999",
        "[1-",
        "|:::|]",
        "^",
        "(0A",
        "z/0",
    ];
    for s in inputs {
        let _ = dsl::parse(s);
        let _ = dsl::parse_file(s);
    }
}

// ---------------------------------------------------------------- real tunes vs abc2midi

/// Reads a golden file: `pitch onset end` lines from abc2midi's rendering.
fn golden(name: &str) -> Vec<(u8, Tick, Tick)> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    let mut v: Vec<(u8, Tick, Tick)> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (f[0] as u8, f[1], f[2])
        })
        .collect();
    v.sort_by_key(|&(p, s, _)| (s, p));
    v
}

#[test]
fn real_tunes_sound_as_abc2midi_plays_them() {
    for tune in ["our_boys_reel", "bride_of_kildare_reel", "little_heathy_hill", "essen_han1_x1"] {
        let text = std::fs::read_to_string(data(&format!("{tune}.abc"))).unwrap();
        let s = dsl::parse(&text).unwrap_or_else(|e| panic!("{tune}: {e}"));
        let mut mine = notes_of(&s);
        mine.sort_by_key(|&(p, s, _)| (s, p));
        assert_eq!(mine, golden(&format!("{tune}.abc2midi.txt")), "{tune}");
    }
}

// ---------------------------------------------------------------- printing

/// A strain whose last bar differs the second time is printed once, with first and second
/// endings, as the tune books write it (and as the `tune` encoding shows it to the models), and
/// reads back to the same notes.
#[test]
fn printing_folds_first_and_second_endings() {
    let src = "X:1\nT:Endings\nM:2/4\nL:1/8\nK:G\nGA|:Bc dB|Ag fe|1dc A2:|2dc G2|]\n";
    let s = dsl::parse(src).unwrap();
    let text = dsl::print(&s);
    assert_eq!(text, "X:1\nT:Endings\nM:2/4\nL:1/8\nK:G\nGA|: Bc dB| Ag fe| [1 dc A2:|\n[2 dc G2|]\n", "got:\n{text}");
    assert_eq!(dsl::parse(&text).unwrap().notes, s.notes);
    // Written out in full, the same strain folds the same way.
    let long = dsl::parse("X:1\nM:2/4\nL:1/8\nK:G\nGA|Bc dB|Ag fe|dc A2|Bc dB|Ag fe|dc G2|]\n").unwrap();
    assert!(dsl::print(&long).contains("[1 dc A2:|"), "{}", dsl::print(&long));
}

#[test]
fn printing_is_clean_abc() {
    let s = dsl::parse("X:5\nT:Printed\nM:4/4\nL:1/8\nK:D\n|:DEFG A2B2:|c2-c2 (3def g2|\n").unwrap();
    let text = dsl::print(&s);
    assert_eq!(text, "X:5\nT:Printed\nM:4/4\nL:1/8\nK:D\n|:DEFG A2 B2:| c4 (3def g2|]\n", "got:\n{text}");
    assert_eq!(dsl::parse(&text).unwrap(), s);
    // Eighths are beamed as folk collections write them: by dotted quarter in 6/8, half bar in
    // 4/4, quarter in 3/4; a pickup counts its beats back from the bar line.
    for (meter, body, want) in [
        ("6/8", "AFAdFA|GBdgdB|", "AFA dFA| GBd gdB|]"),
        ("4/4", "ABcdefge|", "ABcd efge|]"),
        ("3/4", "ABcdef|", "AB cd ef|]"),
        ("6/8", "FG|AFAdFA|", "FG| AFA dFA|]"),
    ] {
        let s = dsl::parse(&format!("X:1\nM:{meter}\nL:1/8\nK:D\n{body}\n")).unwrap();
        let text = dsl::print(&s);
        assert_eq!(text.lines().last(), Some(want), "{meter}: {text}");
        assert_eq!(dsl::parse(&text).unwrap(), s);
    }
}

#[test]
fn printing_real_tunes_round_trips() {
    for tune in ["our_boys_reel", "bride_of_kildare_reel", "little_heathy_hill", "essen_han1_x1"] {
        let text = std::fs::read_to_string(data(&format!("{tune}.abc"))).unwrap();
        let s = dsl::parse(&text).unwrap();
        let printed = dsl::print(&s);
        let back = dsl::parse(&printed).unwrap_or_else(|e| panic!("{tune}:\n{printed}\n{e}"));
        assert_eq!(notes_of(&back), notes_of(&s), "{tune}:\n{printed}");
        assert_eq!(back, s, "{tune}:\n{printed}");
    }
}

/// A score "on the grid": what `print` promises to round-trip exactly.
///
/// - 1 to 3 voices with simple names, the default channel for their index, any program;
/// - in each voice, a sequence of rests, notes and chords (distinct pitches 36..=96), each lasting
///   a whole number of sixteenths (120 ticks) up to a half note, so every start and end lies on
///   the sixteenth grid and pitches never overlap within a voice; velocity 80;
/// - one meter and one key at tick 0, a constant whole-number tempo, a title and an `X:`;
/// - length = the end of the longest voice.
fn grid_score() -> impl Strategy<Value = Score> {
    let meters = prop::sample::select(vec![
        Meter::new(4, 4),
        Meter::new(3, 4),
        Meter::new(2, 4),
        Meter::new(6, 8),
        Meter::new(9, 8),
        Meter::new(5, 4),
        Meter { num: 4, den: 4, symbol: MeterSymbol::Common },
        Meter { num: 2, den: 2, symbol: MeterSymbol::Cut },
    ]);
    let key = (0u8..7, -1i8..=1, prop::sample::select(Mode::ALL.to_vec())).prop_map(|(l, a, m)| Key::new(l, a, m));
    let event = (0usize..4, prop::collection::btree_set(36u8..=96, 1..4), 1u64..=8);
    let voice = (prop::collection::vec(event, 0..24), prop::sample::select(vec![0u8, 40, 73]));
    (meters, key, 40u32..=200, 1u32..1000, prop::collection::vec(voice, 1..=3)).prop_map(
        |(meter, key, bpm, x, voices)| {
            let mut s = Score::new();
            s.meta.reference = Some(x);
            s.meta.title = Some(format!("Grid {x}"));
            s.meta.meters = vec![(0, meter)];
            s.meta.keys = vec![(0, key)];
            s.meta.tempo = TempoMap::constant(bpm as f64);
            let names = ["S", "A", "T"];
            let single = voices.len() == 1;
            for (vi, (events, program)) in voices.into_iter().enumerate() {
                // A lone voice is ABC's default voice "1"; several get names.
                let name = if single { "1".to_string() } else { names[vi].to_string() };
                s.voices.push(Voice { name, channel: vi as u8, program });
                let mut t = 0;
                for (kind, pitches, sixteenths) in events {
                    let dur = sixteenths * 120;
                    if kind > 0 {
                        for p in pitches.iter().take(kind) {
                            s.notes.push(Note {
                                start: t,
                                dur,
                                pitch: *p,
                                velocity: 80,
                                channel: vi as u8,
                                voice: vi as u8,
                                program,
                            });
                        }
                    }
                    t += dur;
                }
                s.length = s.length.max(t);
            }
            s.normalize();
            s
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn print_then_parse_is_the_identity_on_the_grid(s in grid_score()) {
        let text = dsl::print(&s);
        let back = dsl::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}\n{e}")))?;
        prop_assert_eq!(&back, &s, "printed:\n{}", text);
    }

    #[test]
    fn parse_never_panics(text in "[A-Ga-gz|:\\[\\]()<>/0-9^_=,' {}\"!~.-]{0,40}") {
        let _ = dsl::parse(&format!("X:1\nK:C\n{text}\n"));
    }
}

/// Regression: voices past 256 wrapped around onto the first ones (`vi as u8`) with no error.
#[test]
fn more_than_256_voices_is_an_error_not_a_wrap() {
    let mut text = String::from("X:1\nL:1/4\nK:C\n");
    for v in 0..257 {
        text.push_str(&format!("V:v{v}\nC|\n"));
    }
    let e = dsl::parse(&text).unwrap_err().to_string();
    assert!(e.contains("at most 256 voices (this tune has 257)"), "{e}");
    let ok: String = text.lines().take(3 + 2 * 256).map(|l| format!("{l}\n")).collect();
    assert_eq!(dsl::parse(&ok).unwrap().voices.len(), 256);
}

/// Inputs the fuzzer (`scripts/fuzz.sh abc`) found crashing the reader, kept as regressions:
/// every tune reads (strictly and leniently, ornaments played) to a score or an error, and what
/// is read prints. The first: changes recorded out of time order inside parts; a trill that
/// expanded without bound.
#[test]
fn fuzz_findings_read_without_panicking() {
    for path in crate::fuzz_findings("abc", 2) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let read = std::panic::catch_unwind(|| {
            for tune in dsl::parse_file(&text) {
                if let Ok(score) = tune.result {
                    let _ = dsl::print(&score);
                }
            }
            dsl::parse_file_with(&text, dsl::ReadOptions { lenient: true, ornaments: true }).len()
        });
        assert!(read.is_ok(), "{} panics the ABC reader", path.display());
        // `slow-` ones took the fuzzer over a second: a trill on a long note at a slow tempo
        // expanded into millions of notes (now at most `MAX_TRILL_NOTES` per trill).
        if name.starts_with("slow-") {
            let notes: usize = dsl::parse_file_with(&text, dsl::ReadOptions { lenient: true, ornaments: true })
                .iter()
                .filter_map(|t| t.result.as_ref().ok())
                .map(|s| s.notes.len())
                .sum();
            assert!(notes <= 10_000, "{name}: {notes} notes from {} bytes", text.len());
        }
    }
}

/// `%%top_p 0` would leave the sampler nothing to draw from: refused where it is written, as
/// the sampler itself refuses it (it used to parse and fail only when generating).
#[test]
fn a_top_p_of_zero_is_refused_at_its_line() {
    let e = dsl::parse("X:1\n%%top_p 0\nK:C\nC|]\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
    assert!(e.to_string().contains("above 0"), "{e}");
    assert_eq!(dsl::parse("X:1\n%%top_p 1\nK:C\nC|]\n").unwrap().meta.gen.top_p, Some(1.0));
}
