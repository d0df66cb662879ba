//! Help text for every API function, each with an example (`:help fn`, `help("fn")`).
//!
//! Every example here is run by a test, so the help never drifts from the API.

/// One function's help.
pub struct Topic {
    pub name: &'static str,
    pub signature: &'static str,
    pub about: &'static str,
    pub example: &'static str,
}

/// Setup shared by the examples: a tune called `tune`.
pub const EXAMPLE_SETUP: &str = r#"let tune = abc("X:1\nT:Scale\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|dcBA GFED|]");"#;

pub const TOPICS: &[Topic] = &[
    Topic {
        name: "abc",
        signature: "abc(text) -> Score",
        about: "Parses ABC-like text (or reads an .abc file when given a path) into a Score. Use `...` quotes for \
                several lines.",
        example: r#"let t = abc("K:G\nL:1/8\nGABc dedB|");"#,
    },
    Topic {
        name: "load",
        signature: "load(path) -> Score",
        about: "Reads a score from a file: .abc, .mid/.midi, .xml/.musicxml/.mxl. Scripts use files in the working \
                folder and folders granted with --allow-dir only.",
        example: r#"save(tune, "help.mid"); let t = load("help.mid");"#,
    },
    Topic {
        name: "save",
        signature: "save(score, path)",
        about: "Writes a score as a MIDI file (.mid) or ABC text (.abc), by extension, in the working folder or a \
                folder granted with --allow-dir.",
        example: r#"save(tune, "help.abc");"#,
    },
    Topic {
        name: "show",
        signature: "show(score)",
        about: "Prints the score as ABC text and as a piano roll in the terminal.",
        example: "show(tune);",
    },
    Topic {
        name: "roll",
        signature: "roll(score) -> string",
        about: "The piano roll as plain text (ASCII, no colour).",
        example: "print(roll(tune));",
    },
    Topic {
        name: "abc_text",
        signature: "abc_text(score) -> string",
        about: "The score printed back as ABC text.",
        example: "let text = abc_text(tune);",
    },
    Topic {
        name: "gen",
        signature: "gen(score, #{bars, notes, temperature, top_k, top_p, repetition_penalty, same_pitch_bias, \
                    recall_bias, recall_spread, length_temperature, length_top_p, guidance, seed, \
                    style, instrument, key, meter, scale, in_key, range, max_polyphony, whole_bars, mono_voices, no_parallels, \
                    end_on_tonic, end_on_final, \
                    model, \
                    form, part_bars, keep_bars, cadence}) -> Score",
        about: "Continues the prompt with the current model and returns only the new music. `bars` (default: the \
                prompt's %%bars, else a whole tune, ended where the model ends it, with the key and meter the \
                model samples when neither the prompt nor `key`/`meter` set them) or `notes` set the length. \
                `form: \"AABA\"` with `part_bars: 8` generates each new section once, repeats a letter seen before \
                note for note, and for a primed one (`A'`) keeps `keep_bars` (default half) and makes the rest \
                anew; `form: \"AAB*\"` leaves the last section open (it ends where the model ends the tune); \
                sections end on a cadence (`cadence: false` to lift it). With neither a form nor a length, a model \
                with forms in its generation_config.json draws one per take (the chorale model: two takes in five \
                repeat their opening, as Bach's do); `form: \"none\"` draws none. Settings the prompt carries in %% lines \
                apply unless an option says otherwise. Hard constraints: `key: \"Dmix\"` conditions on a key \
                and keeps every note in it (`in_key: false` only conditions), `scale: \"A minor pentatonic\"` \
                or `scale: [0, 2, 4, 7, 9]`, `scale: \"key pentatonic\"` (the pentatonic of the key, given or \
                sampled), `scale: \"any\"` (no scale), `range: \"C4..C6\"`, `max_polyphony: 1`, `whole_bars: true`, `mono_voices: true` (one note at a time in each voice), `no_parallels: true` (no parallel fifths or \
                octaves; the chorale model's default), `end_on_tonic: true` (a whole tune ends on the tonic: its \
                last note, or a last chord with the tonic in the bass and on top; the chorale model's default), \
                `end_on_final: true` (a whole tune ends on a degree of its key that one in ten or more of its \
                style's tunes end on: the tonic for Irish tunes, the mode finals for Chinese ones; the folk \
                models' default). \
                `recall_bias: 2` (nats) leans a bar that has opened like an earlier bar towards playing it \
                again note for note (the folk models' default, per style; 0 is off); `recall_spread: 1` draws \
                each take's from 0 to twice that, so some takes bring much back and some little, as tunes do. \
                `seed` makes it repeatable (else a fresh one, recorded in the result). `gen(#{...})` starts \
                from nothing. Ctrl-C cancels.",
        example: "let more = gen(tune, #{bars: 2, temperature: 0.9, top_k: 20, seed: 7});",
    },
    Topic {
        name: "duet",
        signature: "duet([call,] model_a, model_b, #{turns, bars, seed, temperature, ...}) -> Score",
        about: "Two models answering each other: `model_a` answers the call (or starts from nothing), `model_b` \
                answers that, and so on for `turns` phrases (default 4, at most 64) of `bars` bars (default 4, at \
                most 16), each conditioned on the last phrase. One score, each side in its own voice and channel; \
                every phrase is a take. Ctrl-C stops it.",
        example: "let d = duet(tune, \"folk\", \"folk\", #{turns: 2, bars: 1, seed: 9});",
    },
    Topic {
        name: "takes",
        signature: "takes() -> [String]",
        about: "The take history, one line a take: its number, when, the call, model, seed, key, meter, length and \
                log-likelihood per note. Every gen and harmonize is a take, kept as JSON lines beside the REPL \
                history (`--takes FILE` elsewhere) so earlier sessions' takes are there too; `cadenza takes` \
                lists them in a shell.",
        example: "gen(tune, #{bars: 1, seed: 5}); for line in takes() { print(line) }",
    },
    Topic {
        name: "take",
        signature: "take(n) -> Score",
        about: "The music of take `n`, as it came out.",
        example: "gen(tune, #{bars: 1, seed: 5}); let t = take(1);",
    },
    Topic {
        name: "replay",
        signature: "replay(n) -> Score",
        about: "Makes take `n` again from its prompt, options and seed: note for note the same, or an error saying \
                the model is not the one that made it. The replay is a new take.",
        example: "gen(tune, #{bars: 1, seed: 5}); let same = replay(1);",
    },
    Topic {
        name: "branch",
        signature: "branch(n, #{temperature, seed, bars, ...}) -> Score",
        about: "Take `n`'s prompt and options with some changed (same seed unless `seed` is given): hear what one \
                setting does to a take you liked. Options as for gen.",
        example: "gen(tune, #{bars: 1, seed: 5}); let hotter = branch(1, #{temperature: 1.3});",
    },
    Topic {
        name: "save_take",
        signature: "save_take(n, path)",
        about: "Writes take `n` as a MIDI file (.mid) or ABC text (.abc), as save does (`export` is a word Rhai \
                keeps for itself).",
        example: "gen(tune, #{bars: 1, seed: 5}); save_take(1, \"take1.abc\");",
    },
    Topic {
        name: "harmonize",
        signature: "harmonize(melody, #{model, seed, temperature, top_p, ...}) -> Score",
        about: "Harmonises a melody: its top line is the soprano note for note and the model (`chorale` unless \
                `model` names another with several voices) samples the other voices for the melody's bars, in its \
                key and meter. Options as for gen. Ctrl-C cancels.",
        example: "let choir = harmonize(abc(\"X:1\\nM:4/4\\nL:1/4\\nK:G\\nG A B c|d2 B2|c B A G|G4|]\"), #{seed: 3});",
    },
    Topic {
        name: "score_ll",
        signature: "score_ll(score [, model]) -> #{total, per_note, notes, bars}",
        about: "Log-likelihood of a score under the model: total (natural log), per note, and the surprise \
                (negative log-likelihood per note) of each bar.",
        example: "let ll = score_ll(tune); print(ll.per_note);",
    },
    Topic {
        name: "model",
        signature: "model([name]) -> string",
        about: "Chooses the model `gen` uses (a name from :models or a directory); with no argument, the current one.",
        example: r#"model("folk");"#,
    },
    Topic {
        name: "models",
        signature: "models() -> array",
        about: "Names of the models that can be loaded.",
        example: "print(models());",
    },
    Topic {
        name: "style",
        signature: "style([name]) -> string",
        about: "Sets the default style `gen` conditions on (see styles()); with no argument, the current one.",
        example: r#"style("irish");"#,
    },
    Topic {
        name: "styles",
        signature: "styles() -> array",
        about: "Styles the current model knows.",
        example: "print(styles());",
    },
    Topic {
        name: "play",
        signature: "play(score)",
        about: "Plays a score once on the current output from the next bar line (of the bar grid loops \
                share); returns at once. wait() waits until it has sounded.",
        example: "play(tune);",
    },
    Topic {
        name: "tempo",
        signature: "tempo([bpm]) -> float",
        about: "Sets the playing tempo in quarter notes per minute (loops follow at their next bar); with no \
                argument, the current one.",
        example: "tempo(132);",
    },
    Topic {
        name: "ports",
        signature: "ports() -> array",
        about: "Names of the MIDI output ports.",
        example: "print(ports());",
    },
    Topic {
        name: "out",
        signature: "out(name) -> string",
        about: "Sends the music to the MIDI port whose name contains `name` (or its number); returns its full name.",
        example: r#"// out("FLUID"); out("0");"#,
    },
    Topic {
        name: "in_ports",
        signature: "in_ports() -> array",
        about: "Names of the MIDI input ports (keyboards, controllers, a DAW's outputs).",
        example: "// print(in_ports());",
    },
    Topic {
        name: "listen",
        signature: "listen([port]) -> string",
        about: "Records what is played on a MIDI input (name substring or number); with no argument opens a \
                virtual input `cadenza-in` to connect a keyboard to. heard() collects what was played.",
        example: r#"// listen("keyboard");"#,
    },
    Topic {
        name: "heard",
        signature: "heard() -> Score",
        about: "What was played on the listened input since listen() or the last heard(), at the session \
                tempo, snapped to sixteenths: call and response is `gen(heard(), #{bars: 2})`.",
        example: r#"// loop("answer", |i| gen(heard(), #{bars: 2}));"#,
    },
    Topic {
        name: "send_clock",
        signature: "send_clock(on)",
        about: "Sends MIDI clock (24 per quarter, Start at the next bar, Stop when turned off) on the current \
                output, so a DAW or drum machine follows cadenza's tempo.",
        example: "send_clock(true); send_clock(false);",
    },
    Topic {
        name: "follow_clock",
        signature: "follow_clock(port) / follow_clock(port, latency_ms)",
        about: "Follow the MIDI clock arriving on an input: once the DAW sends Start (or a song \
                position), cadenza's bar lines lock to the DAW's bars (a small tempo nudge each \
                beat; on Start the music waits for the DAW's next bar). Before that only the \
                tempo follows. latency_ms (default 0) is how long the clock takes to reach \
                cadenza; cadenza's bars come that much earlier. follow_clock(\"\") stops following.",
        example: r#"// follow_clock("DAW"); follow_clock("DAW", 40); follow_clock("");"#,
    },
    Topic {
        name: "loop",
        signature: "loop(name, |i| score) | loop(name, #{prompt, mode, every, bars, ...})",
        about: "A named loop: the closure runs every cycle (i = 0, 1, 2 ...) and what it returns is played. \
                Defining it again replaces it at the next cycle; if the new body fails, the old one keeps \
                playing. With options instead of a closure the model writes each cycle (`bars`, default 4, \
                and gen's options): `mode: \"continue\"` goes on from what it just played, `\"variation\"` \
                (the default) samples the prompt anew, `\"answer\"` listens to the MIDI input (`listen`) and, once \
                the player pauses for `pause_bars` (default 1) after playing, answers what they played on \
                the next bar line; `every: 2` makes a new cycle every other one. Each cycle \
                is made one cycle ahead; if it is not ready in time the last one plays again, and `:loops` shows \
                how far ahead each loop runs. `live_loop` is the same function.",
        example: r#"loop("melody", |i| tune.transpose(i % 3));"#,
    },
    Topic {
        name: "live_loop",
        signature: "live_loop(name, |i| score)",
        about: "Another name for loop().",
        example: r#"live_loop("bass", |i| tune.transpose(-12));"#,
    },
    Topic {
        name: "stop",
        signature: "stop([name]) ",
        about: "Stops one loop at the end of its cycle; with no argument, every loop (and what play() \
                started) at the end of their cycles. panic() stops everything at once.",
        example: r#"stop("melody"); stop();"#,
    },
    Topic {
        name: "loops",
        signature: "loops() -> array",
        about: "Names of the running loops.",
        example: "print(loops());",
    },
    Topic {
        name: "panic",
        signature: "panic()",
        about: "Stops everything now and turns every note off.",
        example: "panic();",
    },
    Topic {
        name: "wait",
        signature: "wait()",
        about: "Waits until what play() started has sounded (Ctrl-C ends the wait).",
        example: "wait();",
    },
    Topic {
        name: "sleep",
        signature: "sleep(seconds)",
        about: "Waits while loops play (Ctrl-C ends the wait).",
        example: "sleep(0.01);",
    },
    Topic {
        name: "transpose",
        signature: "score.transpose(semitones) -> Score",
        about: "Moves every note (not drums) and the key by semitones.",
        example: "let up = tune.transpose(5);",
    },
    Topic {
        name: "slice",
        signature: "score.slice(from_bar, to_bar) -> Score",
        about: "Bars from..to (0-based, end excluded), starting at 0.",
        example: "let first = tune.slice(0, 1);",
    },
    Topic {
        name: "concat",
        signature: "score.concat(other) -> Score   (also a + b, concat([a, b, c]))",
        about: "One score after the other.",
        example: "let both = tune.concat(tune.transpose(2)); let same = tune + tune;",
    },
    Topic {
        name: "repeat",
        signature: "score.repeat(n) -> Score   (also score * n)",
        about: "The score n times in a row.",
        example: "let twice = tune.repeat(2);",
    },
    Topic {
        name: "stack",
        signature: "score.stack(other) -> Score   (also stack([a, b, c]))",
        about: "Plays scores at the same time, as separate voices.",
        example: "let chordal = tune.stack(tune.transpose(4));",
    },
    Topic {
        name: "quantize",
        signature: "score.quantize(division) -> Score",
        about: "Snaps onsets and ends to a grid: 8 = eighth notes, 16 = sixteenths, 12 = eighth triplets.",
        example: "let q = tune.quantize(8);",
    },
    Topic {
        name: "stretch",
        signature: "score.stretch(factor) -> Score",
        about: "Scales durations: 2.0 is twice as long (half speed), 0.5 twice as fast.",
        example: "let slow = tune.stretch(2.0);",
    },
    Topic {
        name: "channel",
        signature: "score.channel(n) -> Score",
        about: "Moves every note to MIDI channel n (1-16; 10 is drums).",
        example: "let bass = tune.transpose(-24).channel(2);",
    },
    Topic {
        name: "instrument",
        signature: "score.instrument(name) -> Score",
        about: "Sets the General MIDI instrument by name (violin, flute, ...) or number.",
        example: r#"let fiddle = tune.instrument("violin");"#,
    },
    Topic {
        name: "program",
        signature: "score.program(n) -> Score",
        about: "Sets the General MIDI program number (0-127).",
        example: "let organ = tune.program(19);",
    },
    Topic {
        name: "velocity",
        signature: "score.velocity(v) -> Score",
        about: "Sets every note's velocity (1-127).",
        example: "let soft = tune.velocity(40);",
    },
    Topic {
        name: "with_style",
        signature: "score.with_style(name) -> Score",
        about: "The same music tagged with a style, which gen() then conditions on.",
        example: r#"let prompt = tune.with_style("irish");"#,
    },
    Topic {
        name: "note_name",
        signature: "note_name(pitch) -> string",
        about: "The name of a MIDI pitch (60 is C4).",
        example: "print(note_name(69));",
    },
    Topic {
        name: "empty",
        signature: "empty() -> Score",
        about: "A score with no notes.",
        example: "let nothing = empty();",
    },
    Topic {
        name: "write_text",
        signature: "write_text(path, text)",
        about: "Writes text to a file (a CSV of results, say).",
        example: r#"write_text("help.csv", "a,b\n1,2\n");"#,
    },
    Topic {
        name: "read_text",
        signature: "read_text(path) -> string",
        about: "Reads a text file.",
        example: r#"write_text("help.txt", "hello"); let t = read_text("help.txt");"#,
    },
    Topic {
        name: "help",
        signature: "help([name]) -> string",
        about: "This help as text.",
        example: r#"print(help("gen"));"#,
    },
];

/// Method and property names on Score (for completion and highlighting).
pub const METHODS: &[&str] = &[
    "transpose",
    "slice",
    "concat",
    "repeat",
    "stack",
    "quantize",
    "stretch",
    "channel",
    "instrument",
    "program",
    "velocity",
    "with_style",
    "len",
    "bars",
    "length",
    "beats",
    "key",
    "meter",
    "title",
    "style",
    "bpm",
    "notes",
    "pitches",
];

/// The list of functions with one line each.
pub fn overview() -> String {
    let mut out = String::from("functions (`:help NAME` for one, with an example):\n");
    for t in TOPICS {
        out.push_str(&format!("  {:<60} {}\n", t.signature, first_sentence(t.about)));
    }
    out.push_str("score properties: .bars .len .length .beats .key .meter .title .style .bpm .notes .pitches\n");
    out
}

/// `text` broken at spaces into lines of at most `width` characters, each starting with `indent`
/// (a terminal would otherwise break words in the middle).
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out
}

fn first_sentence(s: &str) -> &str {
    match s.find(". ") {
        Some(i) => &s[..=i],
        None => s,
    }
}

/// Help for one function.
pub fn topic(name: &str) -> Option<String> {
    TOPICS
        .iter()
        .find(|t| t.name == name)
        .map(|t| format!("{}\n{}\n  example: {}", t.signature, wrap(t.about, "  ", 96), t.example))
}

/// The message for a name with no help, suggesting close names.
pub fn unknown(name: &str) -> String {
    let close: Vec<&str> =
        TOPICS.iter().map(|t| t.name).filter(|n| n.contains(name) || name.contains(n) || edit1(n, name)).collect();
    if close.is_empty() {
        format!("no help for `{name}`; :help lists every function")
    } else {
        format!("no help for `{name}`; did you mean {}?", close.join(", "))
    }
}

/// True when `a` and `b` differ by at most one edit (a typo).
fn edit1(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if a.len() > b.len() {
            i += 1;
        } else if b.len() > a.len() {
            j += 1;
        } else {
            i += 1;
            j += 1;
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_has_an_example_and_unique_name() {
        let mut names: Vec<&str> = TOPICS.iter().map(|t| t.name).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        for t in TOPICS {
            assert!(
                !t.example.is_empty() && t.signature.starts_with(&t.name.replace("score.", ""))
                    || t.signature.contains(t.name)
            );
        }
        assert!(topic("gen").unwrap().contains("example: "));
        assert!(unknown("transpos").contains("transpose"));
        assert!(unknown("zzz").contains(":help"));
        let w = wrap("one two three four five six", "  ", 12);
        assert_eq!(w, "  one two\n  three four\n  five six");
        assert!(topic("gen")
            .unwrap()
            .lines()
            .all(|l| l.chars().count() <= 96 || l.starts_with("gen(") || l.contains("example")));
    }
}
