//! Integration tests: script and REPL. The Rhai API through `Session`, and the real binary driven
//! in a pseudo-terminal (tmux) the way a person types at it.

use cadenza::play::FakeClock;
use cadenza::score::Score;
use cadenza::script::sandbox::Sandbox;
use cadenza::script::{buffer_output, Options, ScriptError, Session};
use cadenza::sink::out::{Recorder, RecorderHandle};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn session() -> (Session, Arc<Mutex<Vec<String>>>) {
    let (out, buf) = buffer_output();
    let mut o = Options::new(out);
    o.no_midi = true;
    o.sandbox = temp_sandbox();
    (Session::new(o), buf)
}

/// The working folder plus the system's temporary folder, where the tests' files are (as
/// `--allow-dir /tmp` would grant it).
fn temp_sandbox() -> Sandbox {
    Sandbox::new(&[std::env::temp_dir()]).unwrap()
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Regression: SIGTERM was registered only to end the wait after a script, so `cadenza -e` or
/// `cadenza run` busy in a loop of slow built-ins ignored it (850 s). Ctrl-C and SIGTERM both
/// stop a running script. The 60 s deadline only tells a hang from an exit; it times nothing.
#[test]
fn sigterm_and_ctrl_c_stop_a_busy_script() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.rhai");
    std::fs::write(&path, "let a = []; for i in 0..100000000 { a.push(i) }\nprint(\"finished\");").unwrap();
    for (signal, args) in [
        (libc::SIGTERM, vec!["run".to_string(), "--no-midi".into(), path.display().to_string()]),
        (libc::SIGINT, vec!["run".to_string(), "--no-midi".into(), path.display().to_string()]),
        (
            libc::SIGTERM,
            vec!["--no-midi".to_string(), "-e".into(), "let a = []; for i in 0..100000000 { a.push(i) }".into()],
        ),
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cadenza"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
        // SAFETY: signalling our own child process by its pid.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{args:?} ignored signal {signal}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("cancelled"), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("finished"), "{args:?}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The API through a Session
// ---------------------------------------------------------------------------------------------

#[test]
fn functions_defined_on_one_line_are_callable_on_the_next() {
    let (mut s, _) = session();
    let _ = s.eval("fn up(x) { x + 1 }").unwrap();
    let _ = s.eval("let n = up(1);").unwrap();
    assert_eq!(s.eval("up(n)").unwrap().as_int().unwrap(), 3);
    // A later definition replaces the earlier one.
    let _ = s.eval("fn up(x) { x + 10 }").unwrap();
    assert_eq!(s.eval("up(n)").unwrap().as_int().unwrap(), 12);
}

#[test]
fn a_failing_line_reports_the_position_and_changes_nothing() {
    let (mut s, _) = session();
    let _ = s.eval("let kept = 1;").unwrap();
    let e = s.eval("let kept = 2;\nlet x = kept +* 3;").unwrap_err();
    assert!(matches!(e, ScriptError::Parse { line: 2, .. }), "{e:?}");
    // Parse errors run nothing: `kept` is still 1.
    assert_eq!(s.eval("kept").unwrap().as_int().unwrap(), 1);
    let text = e.to_string();
    assert!(text.starts_with("2: let x = kept +* 3;\n"), "{text}");
}

#[test]
fn print_goes_to_the_session_output() {
    let (mut s, buf) = session();
    let _ = s.eval(r#"print("hello " + 40 + 2)"#).unwrap();
    assert_eq!(buf.lock().unwrap().as_slice(), ["hello 402"]);
}

const KESH: &str = "X:1\nT:Kesh\nM:6/8\nL:1/8\nK:G\nGAG GAB|ABA ABd|edd gdd|edB dBA|";

fn score_of(v: rhai::Dynamic) -> Score {
    v.try_cast::<Score>().expect("a Score")
}

#[test]
fn score_methods_equal_the_score_operations() {
    let (mut s, _) = session();
    let _ = s.eval(&format!("let t = abc({KESH:?});")).unwrap();
    let t = cadenza::dsl::parse(KESH).unwrap();
    assert_eq!(score_of(s.eval("t").unwrap()), t);
    assert_eq!(score_of(s.eval("t.transpose(-3)").unwrap()), t.transpose(-3).unwrap());
    assert_eq!(score_of(s.eval("t.slice(1, 3)").unwrap()), t.slice_bars(1, 3).unwrap());
    assert_eq!(score_of(s.eval("t.concat(t.transpose(2))").unwrap()), t.concat(&t.transpose(2).unwrap()));
    assert_eq!(score_of(s.eval("t + t").unwrap()), t.concat(&t));
    assert_eq!(score_of(s.eval("concat([t, t, t])").unwrap()), t.concat(&t).concat(&t));
    assert_eq!(score_of(s.eval("t.repeat(3)").unwrap()), t.repeat(3));
    assert_eq!(score_of(s.eval("t * 2").unwrap()), t.repeat(2));
    assert_eq!(score_of(s.eval("t.stack(t.transpose(7))").unwrap()), t.merge(&t.transpose(7).unwrap()));
    let (up, down) = (t.transpose(7).unwrap(), t.transpose(-5).unwrap());
    assert_eq!(score_of(s.eval("stack([t, t.transpose(7), t.transpose(-5)])").unwrap()), t.merge(&up).merge(&down));
    assert_eq!(score_of(s.eval("concat([t, t.transpose(7), t])").unwrap()), t.concat(&up).concat(&t));
    assert_eq!(score_of(s.eval("t.quantize(8)").unwrap()), t.quantize(240).unwrap());
    assert_eq!(s.eval("t.bars").unwrap().as_int().unwrap(), 4);
    assert_eq!(s.eval("t.len").unwrap().as_int().unwrap(), t.notes.len() as i64);
    assert_eq!(s.eval("t.key").unwrap().into_string().unwrap(), "G");
    assert_eq!(s.eval("t.meter").unwrap().into_string().unwrap(), "6/8");
    assert_eq!(s.eval("t.notes[0].name").unwrap().into_string().unwrap(), "G4");
    let fiddle = score_of(s.eval(r#"t.instrument("fiddle").channel(3)"#).unwrap());
    assert!(fiddle.notes.iter().all(|n| n.program == 110 && n.channel == 2));
    // Errors from score operations name the problem.
    let e = s.eval("t.transpose(100)").unwrap_err().to_string();
    assert!(e.contains("out of MIDI"), "{e}");
    let e = s.eval("t.slice(3, 1)").unwrap_err().to_string();
    assert!(e.contains("empty or reversed"), "{e}");
    // Growing a score past the bounds every score has is refused, saying which bound.
    let e = s.eval("t.stretch(1000000.0)").unwrap_err().to_string();
    assert!(e.contains("too large") && e.contains("at most 134217728 ticks"), "{e}");
    let e = s.eval("let u = t; for i in 0..20 { u = u + u; } u").unwrap_err().to_string();
    assert!(e.contains("too large"), "{e}");
    // An array's bound is named.
    let e = s.eval("let a = []; a.pad(200000, 0); a.len()").unwrap_err().to_string();
    assert!(e.contains("at most 131072 elements"), "{e}");
    assert_eq!(cadenza::script::MAX_ARRAY_LEN, 131072);
    let e = s.eval("let v = []; for i in 0..257 { v.push(t) } stack(v)").unwrap_err().to_string();
    assert!(e.contains("257 voices"), "{e}");
    // The REPL shows a score as one line.
    let v = s.eval("t").unwrap();
    assert_eq!(s.describe(&v).unwrap(), "Score(4 bars, 24 notes, K:G M:6/8, \"Kesh\", G4..G5)");
}

#[test]
fn a_dsl_error_inside_abc_points_into_the_tune_and_at_the_call() {
    let (mut s, _) = session();
    let e = s.eval("let bad = abc(\"K:G\\nGAB c#d|\");").unwrap_err();
    let text = e.to_string();
    // The script line with a caret at the call ...
    assert!(text.starts_with("let bad = abc("), "{text}");
    assert_eq!(e.position(), Some((1, 11)), "{text}");
    // ... and the DSL's own line/column and caret inside the tune.
    assert!(text.contains("line 2"), "{text}");
    // The variable was not created.
    assert!(s.eval("bad").is_err());
}

#[test]
fn files_round_trip_through_save_and_load() {
    let (mut s, _) = session();
    let dir = tempfile::tempdir().unwrap();
    let abc_path = dir.path().join("k.abc");
    let _ = s.eval(&format!("let t = abc({KESH:?}); save(t, {:?});", abc_path.display().to_string())).unwrap();
    let back = score_of(s.eval(&format!("load({:?})", abc_path.display().to_string())).unwrap());
    let t = cadenza::dsl::parse(KESH).unwrap();
    assert_eq!(back.notes, t.notes);
    // abc() given a path reads the file.
    let again = score_of(s.eval(&format!("abc({:?})", abc_path.display().to_string())).unwrap());
    assert_eq!(again.notes, t.notes);
    let e = s.eval(r#"save(t, "/tmp/x.wav")"#).unwrap_err().to_string();
    assert!(e.contains("unknown file type `.wav`"), "{e}");
}

/// Scripts get the working folder and granted folders, nothing else (issue 13: a shared script
/// could read `/etc/shadow` or write `../../.bashrc`).
#[test]
fn scripts_use_no_file_outside_their_folders() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::write(dir.path().join("secret.abc"), KESH).unwrap();
    let (out, _) = buffer_output();
    let mut o = Options::new(out);
    o.no_midi = true;
    o.sandbox = Sandbox::with_base(&work, &[]).unwrap();
    let mut s = Session::new(o);
    let _ = s.eval(&format!("let t = abc({KESH:?});")).unwrap();
    for (line, verb) in [
        ("read_text(\"/etc/passwd\")", "read"),
        ("read_text(\"../secret.abc\")", "read"),
        ("load(\"../secret.abc\")", "read"),
        ("write_text(\"../../evil.txt\", \"x\")", "write"),
        ("save(t, \"../escape.mid\")", "write"),
    ] {
        let e = s.eval(line).unwrap_err().to_string();
        assert!(
            e.contains(&format!("outside the folders this script may {verb}")) && e.contains("--allow-dir"),
            "{line}: {e}"
        );
    }
    // `abc` of a path outside reads it as ABC text (not a file), so it cannot probe for files.
    assert!(s.eval("abc(\"../secret.abc\")").is_err());
    assert!(!dir.path().join("escape.mid").exists());
    // Inside the working folder, relative paths work.
    let _ = s.eval("save(t, \"take.mid\"); write_text(\"notes.txt\", \"hello\");").unwrap();
    assert!(work.join("take.mid").is_file());
    assert_eq!(s.eval("read_text(\"notes.txt\")").unwrap().into_string().unwrap(), "hello");
    // `cadenza run --allow-dir` grants a folder; a folder that does not exist is an error.
    let script = work.join("s.rhai");
    std::fs::write(&script, "print(read_text(\"../secret.abc\").len());").unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cadenza"))
            .current_dir(&work)
            .args(["run", "--no-midi"])
            .args(extra)
            .arg(&script)
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("outside"), "{refused:?}");
    let allowed = run(&["--allow-dir", ".."]);
    assert!(allowed.status.success(), "{allowed:?}");
    assert_eq!(String::from_utf8_lossy(&allowed.stdout).trim(), KESH.len().to_string());
    let typo = run(&["--allow-dir", "../nope"]);
    assert!(!typo.status.success() && String::from_utf8_lossy(&typo.stderr).contains("nope"), "{typo:?}");
}

#[test]
fn show_prints_abc_and_a_piano_roll() {
    let (mut s, buf) = session();
    let _ = s.eval("show(abc(\"K:C\\nL:1/4\\nCEGc|\"))").unwrap();
    let out = buf.lock().unwrap().join("\n");
    let roll = score_of(s.eval("abc(\"K:C\\nL:1/4\\nCEGc|\")").unwrap());
    assert!(out.starts_with(cadenza::dsl::print(&roll).trim_end()), "{out}");
    assert!(out.contains("█"), "{out}");
    let plain = cadenza::sink::pianoroll::render(&roll, &cadenza::sink::pianoroll::Style::plain());
    assert_eq!(s.eval("roll(abc(\"K:C\\nL:1/4\\nCEGc|\"))").unwrap().into_string().unwrap(), plain);
    assert!(plain.lines().any(|l| l.starts_with("  C4 |#")), "{plain}");
}

#[test]
fn gen_rejects_unknown_options_by_name() {
    let (mut s, _) = session();
    let e = s.eval("gen(empty(), #{bars: 2, temprature: 0.5})").unwrap_err().to_string();
    assert!(e.contains("unknown option `temprature`"), "{e}");
    let e = s.eval(r#"gen(empty(), #{range: "C6..C4"})"#).unwrap_err().to_string();
    assert!(e.contains("reversed"), "{e}");
}

/// A session on a fake clock (`sleep` moves it) whose music goes to a recorder.
fn recording_session() -> (Session, Arc<Mutex<Vec<String>>>, RecorderHandle) {
    let (out, buf) = buffer_output();
    let mut o = Options::new(out);
    o.no_midi = true;
    let (rec, handle) = Recorder::new("recorder", 1 << 16);
    o.outputs.push(Box::new(rec));
    o.clock = Some(FakeClock::new(0));
    (Session::new(o), buf, handle)
}

/// Note-ons as (time in ns, pitch).
fn note_ons(h: &RecorderHandle) -> Vec<(u64, u8)> {
    h.messages()
        .iter()
        .filter(|m| m.len == 3 && m.bytes[0] & 0xF0 == 0x90 && m.bytes[2] > 0)
        .map(|m| (m.at, m.bytes[1]))
        .collect()
}

/// Every note-on has its note-off by the end.
fn balanced(h: &RecorderHandle) -> bool {
    let mut sounding = std::collections::HashMap::<(u8, u8), i32>::new();
    for m in h.messages() {
        let b = m.bytes();
        if b.len() == 3 && b[0] & 0xF0 == 0x90 && b[2] > 0 {
            *sounding.entry((b[0] & 15, b[1])).or_default() += 1;
        } else if b.len() == 3 && (b[0] & 0xF0 == 0x80 || (b[0] & 0xF0 == 0x90 && b[2] == 0)) {
            *sounding.entry((b[0] & 15, b[1])).or_default() -= 1;
        }
    }
    sounding.values().all(|&v| v <= 0)
}

const SCALE: [u8; 4] = [60, 62, 64, 65];
/// 1000 bpm: a quarter note lasts 60 ms, a 4/4 bar 240 ms.
const QUARTER_NS: u64 = 60_000_000;

/// The transposition of each 4-note cycle in `ons`, checking each cycle is the scale moved.
fn cycles(ons: &[(u64, u8)]) -> Vec<i32> {
    ons.chunks_exact(4)
        .map(|c| {
            let d = c[0].1 as i32 - SCALE[0] as i32;
            let want: Vec<u8> = SCALE.iter().map(|p| (*p as i32 + d) as u8).collect();
            assert_eq!(c.iter().map(|x| x.1).collect::<Vec<_>>(), want, "a cycle is the scale transposed");
            d
        })
        .collect()
}

#[test]
fn loops_rerun_their_body_each_cycle_and_survive_bad_edits() {
    let (mut s, buf, rec) = recording_session();
    let _ = s.eval("tempo(1000); let t = abc(\"K:C\\nL:1/4\\nCDEF|\");").unwrap();
    let _ = s.eval("loop(\"a\", |i| t.transpose(i % 5))").unwrap();
    let _ = s.eval("sleep(2.0)").unwrap();
    let ons = note_ons(&rec);
    assert!(ons.len() >= 24, "{ons:?}");
    // The body ran for every cycle with i = 0, 1, 2 ...; the cycles follow without a gap, every
    // onset one quarter (60 ms) after the last.
    let d = cycles(&ons);
    assert_eq!(d, (0..d.len() as i32).map(|i| i % 5).collect::<Vec<_>>());
    assert!(ons.windows(2).all(|w| w[1].0 - w[0].0 == QUARTER_NS), "{ons:?}");
    assert_eq!(s.eval("loops()").unwrap().into_array().unwrap().len(), 1);

    // A new body that fails is reported to the line and changes nothing.
    let e = s.eval("loop(\"a\", |i| t.transpose(1000))").unwrap_err().to_string();
    assert!(e.contains("out of MIDI"), "{e}");
    let _ = s.eval("sleep(1.0)").unwrap();
    let ons = note_ons(&rec);
    let d = cycles(&ons);
    assert_eq!(d, (0..d.len() as i32).map(|i| i % 5).collect::<Vec<_>>(), "the old body plays on");

    // A good new body replaces the old one at the end of a cycle, and time runs on evenly.
    let before = ons.len();
    let _ = s.eval("loop(\"a\", |i| t.transpose(12))").unwrap();
    assert!(buf.lock().unwrap().iter().any(|l| l.contains("loop `a` replaced")));
    let _ = s.eval("sleep(1.0)").unwrap();
    let ons = note_ons(&rec);
    assert!(ons.windows(2).all(|w| w[1].0 - w[0].0 == QUARTER_NS), "{ons:?}");
    let d = cycles(&ons);
    let first_new = d.iter().position(|&x| x == 12).expect("the new body plays");
    assert!(first_new * 4 >= before - 8, "the switch waits at most for the cycle prepared ahead");
    assert!(d[first_new..].iter().all(|&x| x == 12));

    // A body that starts failing later is reported, and its last good cycle plays on.
    // (Closures share captured variables: `calls` counts runs across cycles.)
    let _ = s
        .eval("let calls = 0; loop(\"a\", |i| { calls += 1; if calls > 2 { throw \"boom\" } t.transpose(7) })")
        .unwrap();
    let _ = s.eval("sleep(1.5)").unwrap();
    assert!(buf.lock().unwrap().iter().any(|l| l.contains("boom")), "{:?}", buf.lock().unwrap());
    let d = cycles(&note_ons(&rec));
    let first7 = d.iter().position(|&x| x == 7).expect("the third body plays");
    assert!(d[first7..].len() >= 4 && d[first7..].iter().all(|&x| x == 7), "{d:?}");

    // stop() ends it at the end of its cycle; every note gets its note-off.
    let _ = s.eval("stop(\"a\"); sleep(1.0)").unwrap();
    let n = note_ons(&rec).len();
    let _ = s.eval("sleep(1.0)").unwrap();
    assert_eq!(note_ons(&rec).len(), n, "nothing plays after stop");
    assert_eq!(n % 4, 0, "the last cycle played whole");
    assert_eq!(s.eval("loops()").unwrap().into_array().unwrap().len(), 0);
    assert!(balanced(&rec));
}

/// Regression: a loop defined and played within one entry (a whole script run by `cadenza
/// run`) could not find its closure on later cycles, because the session published the entry's
/// functions only after the entry had finished.
#[test]
fn a_loop_started_and_played_in_one_entry_finds_its_closure() {
    let (mut s, buf, rec) = recording_session();
    let _ = s
        .eval("tempo(1000);\nlet t = abc(\"K:C\\nL:1/4\\nCDEF|\");\nloop(\"a\", |i| t.transpose(i % 5));\nsleep(1.5);")
        .unwrap();
    let d = cycles(&note_ons(&rec));
    assert!(d.len() >= 5, "{d:?}");
    assert_eq!(d, (0..d.len() as i32).map(|i| i % 5).collect::<Vec<_>>(), "{:?}", buf.lock().unwrap());
    assert!(buf.lock().unwrap().is_empty(), "{:?}", buf.lock().unwrap());
}

#[test]
fn play_sounds_once_and_wait_returns_after_it() {
    let (mut s, _, rec) = recording_session();
    let _ = s.eval("tempo(1000); play(abc(\"K:C\\nL:1/4\\nCDEF|\")); wait();").unwrap();
    let ons = note_ons(&rec);
    assert_eq!(ons.iter().map(|o| o.1).collect::<Vec<_>>(), SCALE);
    assert!(ons.windows(2).all(|w| w[1].0 - w[0].0 == QUARTER_NS));
    // Shutting down (what `cadenza run` and Ctrl-D do) leaves no note sounding.
    s.shutdown();
    assert!(balanced(&rec), "{:?}", rec.messages().iter().map(|m| m.to_string()).collect::<Vec<_>>());
}

/// A small GPT-2 with random weights over the REMI encoding, written as a model folder named
/// `folk` (config.json, vocab.json, model.safetensors): enough to drive `gen` end to end without
/// the trained bundled model. Built once per test binary.
fn test_model() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        use cadenza::model::{train, Config, GptConfig};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("folk");
        std::fs::create_dir_all(&dir).unwrap();
        let enc = cadenza::tokens::build("remi", &cadenza::tokens::CondSpec::default(), &[]).unwrap();
        enc.vocab().save(&dir.join("vocab.json")).unwrap();
        let cfg = Config::Gpt2(GptConfig {
            vocab_size: enc.vocab().len(),
            n_positions: 512,
            n_embd: 32,
            n_layer: 1,
            n_head: 2,
            n_inner: None,
            layer_norm_epsilon: 1e-5,
            activation_function: "gelu_new".into(),
            scale_attn_weights: true,
            scale_attn_by_inverse_layer_idx: false,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            resid_pdrop: 0.0,
        });
        std::fs::write(dir.join("config.json"), cfg.to_json()).unwrap();
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
        train::Net::new(&cfg, vb).unwrap();
        train::init_params(&varmap, &cfg, 7).unwrap();
        varmap.save(dir.join("model.safetensors")).unwrap();
        tmp
    });
    Box::leak(dir.path().join("folk").into_boxed_path())
}

/// A session whose model is the test model, on a fake clock with a recorder.
fn model_session() -> (Session, Arc<Mutex<Vec<String>>>, RecorderHandle) {
    model_session_in(temp_sandbox())
}

/// As [`model_session`], with scripts held to `sandbox`.
fn model_session_in(sandbox: Sandbox) -> (Session, Arc<Mutex<Vec<String>>>, RecorderHandle) {
    let (out, buf) = buffer_output();
    let mut o = Options::new(out);
    o.no_midi = true;
    o.sandbox = sandbox;
    o.model = test_model().display().to_string();
    let (rec, handle) = Recorder::new("recorder", 1 << 16);
    o.outputs.push(Box::new(rec));
    o.clock = Some(FakeClock::new(0));
    (Session::new(o), buf, handle)
}

#[test]
fn gen_continues_a_prompt_repeatably_within_its_constraints() {
    let (mut s, _, _) = model_session();
    let _ = s.eval(&format!("let t = abc({KESH:?});")).unwrap();
    let a = score_of(s.eval("gen(t, #{bars: 2, seed: 5, temperature: 0.9})").unwrap());
    let b = score_of(s.eval("gen(t, #{bars: 2, seed: 5, temperature: 0.9})").unwrap());
    assert_eq!(a, b, "the same seed gives the same take");
    assert!(!a.notes.is_empty());
    // Only the continuation comes back, starting at 0, two 6/8 bars long.
    assert_eq!(a.length, 2 * 1440, "{a:?}");
    assert_eq!(a.meta.gen.seed, Some(5));
    // Key and range constraints hold on every note.
    let c = score_of(s.eval(r#"gen(t, #{bars: 2, seed: 9, key: "D", range: "C4..C5"})"#).unwrap());
    let d_major = [1u8, 2, 4, 6, 7, 9, 11];
    assert!(c.notes.iter().all(|n| d_major.contains(&(n.pitch % 12)) && (60..=72).contains(&n.pitch)), "{c:?}");
    // A named scale, monophony and a prompt's own `%%range` hold too.
    let e = score_of(s.eval(r#"gen(t, #{bars: 2, seed: 3, scale: "E minor pentatonic", max_polyphony: 1})"#).unwrap());
    assert!(e.notes.iter().all(|n| [2u8, 4, 7, 9, 11].contains(&(n.pitch % 12))), "{e:?}");
    let _ = s.eval(&format!("let r = abc({:?});", KESH.replace("K:", "%%range G4 G5\nK:"))).unwrap();
    let f = score_of(s.eval("gen(r, #{bars: 2, seed: 4})").unwrap());
    assert!(f.notes.iter().all(|n| (67..=79).contains(&n.pitch)), "{f:?}");
    assert_eq!(f.meta.gen.range, Some((67, 79)), "the take records the range it kept to");
    assert!(s.eval(r#"gen(t, #{scale: "H lydian"})"#).unwrap_err().to_string().contains("expected a scale"));
    // Likelihood comes back as numbers per note and per bar.
    let ll = s.eval("score_ll(t)").unwrap().try_cast::<rhai::Map>().unwrap();
    let total = ll["total"].as_float().unwrap();
    let per_note = ll["per_note"].as_float().unwrap();
    assert!(total < 0.0 && per_note < 0.0, "{ll:?}");
    assert_eq!(ll["bars"].clone().into_array().unwrap().len(), 4);
    // An unknown style lists the known ones.
    let e = s.eval(r#"gen(t, #{style: "klezmer"})"#).unwrap_err().to_string();
    assert!(e.contains("irish"), "{e}");
    assert!(s.eval("styles()").unwrap().into_array().unwrap().iter().any(|x| x.to_string() == "irish"));
}

#[test]
fn a_loop_that_generates_plays_a_new_take_each_cycle() {
    let (mut s, _, rec) = model_session();
    let _ =
        s.eval(&format!("tempo(600); let t = abc({KESH:?}); loop(\"g\", |i| gen(t, #{{bars: 1, seed: i}}))")).unwrap();
    let _ = s.eval("sleep(4.0); stop(); wait()").unwrap();
    s.shutdown();
    assert!(note_ons(&rec).len() > 4);
    assert!(balanced(&rec));
}

/// A loop the model writes: `mode: "continue"` prompts each new cycle with the last one played,
/// `every: 2` makes a new cycle every other one (the last plays again in between), every new
/// cycle is a take, and `:loops` says how far ahead of its deadline each cycle was made.
#[test]
fn a_generating_loop_continues_or_varies_every_n_cycles() {
    let (mut s, _, rec) = model_session();
    let _ = s
        .eval(&format!(
            "tempo(600); let t = abc({KESH:?}); loop(\"lead\", #{{prompt: t, bars: 1, mode: \"continue\", every: 2, seed: 3}})"
        ))
        .unwrap();
    // 600 bpm: a 6/8 bar (three quarters) lasts 0.3 s; 3 s is about ten cycles.
    let _ = s.eval("sleep(3.0);").unwrap();
    let lines = s.ctx().stage.describe_loops();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("lead: ") && lines[0].contains("ahead") && lines[0].contains("0 replayed"),
        "{lines:?}"
    );
    let _ = s.eval("stop(); wait()").unwrap();
    let takes: Vec<String> =
        s.eval("takes()").unwrap().into_array().unwrap().into_iter().map(|d| d.into_string().unwrap()).collect();
    // The first cycle and then every other one were generated (seeds 3, 5, 7, ...).
    assert!(takes.len() >= 4, "{takes:?}");
    assert!(takes[0].contains("seed 3 ") && takes[1].contains("seed 5 "), "{takes:?}");
    s.shutdown();
    assert!(balanced(&rec));
    // Cycles come in equal pairs: cycle 1 repeats cycle 0, cycle 3 repeats cycle 2.
    let ons = note_ons(&rec);
    let cycle = |k: u64| -> Vec<u8> {
        let bar = 300_000_000u64;
        let t0 = ons[0].0;
        ons.iter().filter(|(t, _)| *t >= t0 + k * bar && *t < t0 + (k + 1) * bar).map(|(_, p)| *p).collect()
    };
    assert_eq!(cycle(0), cycle(1));
    assert_eq!(cycle(2), cycle(3));
    for (line, want) in [
        ("loop(\"x\", #{mode: \"sideways\"})", "mode `sideways`"),
        ("loop(\"x\", #{mode: \"answer\"})", "call listen(\"port\") first"),
        ("loop(\"x\", #{every: 0})", "`every` must be"),
        ("loop(\"x\", #{notes: 4})", "form, notes and tokens do not apply"),
        ("loop(\"x\", #{prompt: 3})", "`prompt` must be a Score"),
    ] {
        let e = s.eval(line).unwrap_err().to_string();
        assert!(e.contains(want), "{line}: {e}");
    }
}

/// MIDI clock goes out on the current output from the next bar; MIDI input needs a MIDI system
/// and says so instead of failing silently.
#[test]
fn clock_out_and_input_from_scripts() {
    let (mut s, _, rec) = recording_session();
    let _ = s.eval("tempo(120); send_clock(true); sleep(2.0);").unwrap();
    let bytes = rec.bytes();
    assert_eq!(bytes.iter().filter(|b| b.as_slice() == [0xFA]).count(), 1, "one Start");
    // 2 s at 120 bpm is 4 beats: up to 96 pulses, minus the wait for the bar line.
    let pulses = bytes.iter().filter(|b| b.as_slice() == [0xF8]).count();
    assert!((24..=97).contains(&pulses), "{pulses} clock pulses");
    let _ = s.eval("send_clock(false); sleep(0.5);").unwrap();
    assert!(rec.bytes().iter().any(|b| b.as_slice() == [0xFC]), "Stop after send_clock(false)");
    let err = s.eval("heard()").unwrap_err().to_string();
    assert!(err.contains("listen("), "{err}");
    let err = s.eval(r#"listen("keyboard")"#).unwrap_err().to_string();
    assert!(err.contains("--no-midi"), "{err}");
}

/// True when the bundled `folk` model loads.
fn have_folk() -> bool {
    cadenza::gen::Generator::load("folk").is_ok()
}

#[test]
fn every_help_example_runs() {
    use cadenza::script::help::{EXAMPLE_SETUP, TOPICS};
    let mut ran = 0;
    for t in TOPICS {
        // `model("folk")` names the bundled model; the others run on the test model.
        if t.name == "model" && !have_folk() {
            eprintln!("help example of `model` not run: the bundled folk model is not there");
            continue;
        }
        // Examples name files relative to the working folder, as a user would: here a fresh
        // temporary one.
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _, _) = model_session_in(Sandbox::with_base(dir.path(), &[]).unwrap());
        let _ = s.eval(EXAMPLE_SETUP).unwrap();
        if let Err(e) = s.eval(t.example) {
            panic!("the example of `{}` fails:\n{}\n{e}", t.name, t.example);
        }
        ran += 1;
    }
    assert!(ran >= TOPICS.len() - 1);
}

// ---------------------------------------------------------------------------------------------
// The example scripts, each run as `cadenza run` runs it, into a recorder on a fake clock
// ---------------------------------------------------------------------------------------------

fn run_script(name: &str, args: &[&str]) -> (Session, Arc<Mutex<Vec<String>>>, RecorderHandle) {
    let (mut s, buf, rec) = model_session();
    s.set_var("ARGS", args.iter().map(|a| rhai::Dynamic::from(a.to_string())).collect::<rhai::Array>().into());
    let path = crate_dir().join("scripts").join(name);
    if let Err(e) = cadenza::cli::run::run_file(&mut s, &path) {
        panic!("{name} failed:\n{e}\noutput:\n{}", buf.lock().unwrap().join("\n"));
    }
    // What `cadenza run` does next: wait for the music, then every note off.
    cadenza::cli::repl::finish(&s, None, &std::sync::atomic::AtomicBool::new(false));
    s.shutdown();
    (s, buf, rec)
}

#[test]
fn script_first_session() {
    let dir = tempfile::tempdir().unwrap();
    let (_, buf, rec) = run_script("first_session.rhai", &[&dir.path().display().to_string()]);
    let out = buf.lock().unwrap().join("\n");
    assert!(out.contains("Score(16 bars"), "{out}");
    assert!(out.contains("the model answered with"), "{out}");
    // Both files hold the two-bar start (12 notes, G A G G A B | A B A A B d) and the answer.
    let start = [67u8, 69, 67, 67, 69, 71, 69, 71, 69, 69, 71, 74];
    let mid = cadenza::sink::midi_file::read(dir.path().join("first_session.mid")).unwrap();
    let abc = cadenza::sink::abc::read(dir.path().join("first_session.abc"), None).unwrap();
    for s in [&mid, &abc] {
        assert_eq!(s.notes[..12].iter().map(|n| n.pitch).collect::<Vec<_>>(), start);
        assert!(s.notes.len() > 12);
    }
    // Two plays sounded: the two-bar start (12 notes), then start and answer.
    assert!(note_ons(&rec).len() > 12 + 12);
    assert!(balanced(&rec));
}

#[test]
fn script_temperature_sweep_writes_a_csv_of_likelihoods() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let _ = run_script("temperature_sweep.rhai", &[&csv.display().to_string()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "temperature,seed,notes,total_ll,ll_per_note");
    assert_eq!(lines.len(), 1 + 5 * 3);
    for l in &lines[1..] {
        let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f.len(), 5);
        assert!(f[3] < 0.0 && f[4] < 0.0 && f[4] >= f[3], "{l}");
    }
}

#[test]
fn script_style_comparison_writes_a_midi_file_per_style() {
    let dir = tempfile::tempdir().unwrap();
    let (_, buf, _) = run_script("style_comparison.rhai", &[&dir.path().display().to_string()]);
    let styles = cadenza::tokens::CondSpec::default().styles;
    for st in &styles {
        let s = cadenza::sink::midi_file::read(dir.path().join(format!("style_{st}.mid"))).unwrap();
        assert!(s.notes.len() > 8, "{st}");
    }
    assert_eq!(buf.lock().unwrap().iter().filter(|l| l.contains("nats/note")).count(), styles.len());
}

#[test]
fn script_live_set_plays_loops_and_stops_them() {
    let (_, buf, rec) = run_script("live_set.rhai", &[]);
    let msgs = rec.messages();
    let on = |ch: u8| msgs.iter().filter(|m| m.len == 3 && m.bytes[0] == 0x90 | ch && m.bytes[2] > 0).count();
    assert!(on(0) > 16, "the tune loop played: {:?}", buf.lock().unwrap());
    assert!(on(1) >= 4, "the bass loop played on channel 2");
    // The bass stopped before the tune: its last note-on is earlier.
    let last =
        |ch: u8| msgs.iter().filter(|m| m.len == 3 && m.bytes[0] == 0x90 | ch && m.bytes[2] > 0).map(|m| m.at).max();
    assert!(last(1) < last(0));
    assert!(balanced(&rec));
    // No cycle failed along the way.
    let out = buf.lock().unwrap();
    assert!(!out.iter().any(|l| l.contains("last good cycle") || l.contains("not ready")), "{out:?}");
}

/// The stage set runs as `cadenza run` runs it: a form, a generating loop, a harmonised melody
/// (the bundled chorale model) and a duet, all into the recorder, every note ended.
#[test]
fn script_stage_set_plays_a_form_a_loop_a_chorale_and_a_duet() {
    let m = test_model().display().to_string();
    let (_, buf, rec) = run_script("stage_set.rhai", &[&m, &m, "chorale"]);
    let out = buf.lock().unwrap().join("\n");
    assert!(out.contains("the tune: Score(8 bars"), "four sections of two bars after the opening: {out}");
    assert!(out.contains("the hymn: Score(4 bars"), "{out}");
    assert!(out.contains("the duet: Score(10 bars"), "{out}");
    // The form, the loop's cycles (the first and more), the hymn, four duet answers.
    let takes: usize = out.lines().find_map(|l| l.strip_prefix("takes made: ")).unwrap().parse().unwrap();
    assert!(takes >= 1 + 2 + 1 + 4, "{out}");
    assert!(!out.contains("not ready"), "{out}");
    let msgs = rec.messages();
    let on = |ch: u8| msgs.iter().filter(|m| m.len == 3 && m.bytes[0] == 0x90 | ch && m.bytes[2] > 0).count();
    assert!(on(0) > 20, "the tune, the lead and the duet's call played on channel 1");
    assert!(on(1) > 0 && on(2) > 0, "the duet's two sides played on channels 2 and 3");
    assert!(balanced(&rec));
}

#[test]
fn cadenza_run_reports_the_position_of_an_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.rhai");
    std::fs::write(&path, "let a = 1;\nlet b = 2;\nlet c = a + nope;\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza")).args(["run", "--no-midi"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3:13: error", path.display())), "{err}");
    assert!(err.contains("3: let c = a + nope;"), "{err}");
    // A good script exits 0 and prints what it prints; -e prints the value.
    std::fs::write(&path, "print(`${ARGS[0]} ${ARGS.len()}`);").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza"))
        .args(["run", "--no-midi"])
        .arg(&path)
        .args(["x", "y"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x 2");
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza")).args(["--no-midi", "-e", "6 * 7"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // Loops started by -e play for --for seconds, then stop at the end of their cycle.
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza"))
        .args(["--no-midi", "--for", "0.3", "-e", "tempo(1000); loop(\"a\", |i| abc(\"K:C\\nCDEF|\"))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

// ---------------------------------------------------------------------------------------------
// The binary in a pseudo-terminal
// ---------------------------------------------------------------------------------------------

/// A tmux session running one command, on a private server socket.
struct Tmux {
    name: String,
}

const SOCKET: &str = "cadenza-it";

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

impl Tmux {
    fn start(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Tmux {
        let bin = env!("CARGO_BIN_EXE_cadenza");
        let mut cmd = String::new();
        for (k, v) in env {
            cmd.push_str(&format!("{k}='{}' ", v.display()));
        }
        cmd.push_str(&format!("exec '{bin}'"));
        for a in args {
            cmd.push_str(&format!(" '{a}'"));
        }
        let _ = Command::new("tmux").args(["-L", SOCKET, "kill-session", "-t", name]).output();
        // Tests share one private tmux server, which exits when its last session ends: a
        // session started just as another test's last one closes can meet the server on its
        // way out and fail (seen once in a full run), so a failed start is tried again.
        let started = (0..5).any(|attempt| {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Command::new("tmux")
                .args(["-L", SOCKET, "-f", "/dev/null", "new-session", "-d", "-s", name, "-x", "120", "-y", "40"])
                .arg(format!("cd '{}' && {cmd}", crate_dir().display()))
                .status()
                .expect("tmux runs")
                .success()
        });
        assert!(started, "tmux did not start session {name} in five tries");
        let _ = Command::new("tmux").args(["-L", SOCKET, "set-option", "-t", name, "remain-on-exit", "on"]).status();
        Tmux { name: name.to_string() }
    }

    /// Types `text` one character at a time, as a person does.
    fn send_text(&self, text: &str) {
        for c in text.chars() {
            // A lone `;` separates tmux commands; escaped, it is typed.
            let key = if c == ';' { "\\;".to_string() } else { c.to_string() };
            let st =
                Command::new("tmux").args(["-L", SOCKET, "send-keys", "-t", &self.name, "-l", "--", &key]).status();
            assert!(st.is_ok_and(|s| s.success()));
            std::thread::sleep(Duration::from_millis(8));
        }
    }

    fn key(&self, key: &str) {
        let st = Command::new("tmux").args(["-L", SOCKET, "send-keys", "-t", &self.name, key]).status();
        assert!(st.is_ok_and(|s| s.success()));
    }

    /// Sends lines in one burst, as a terminal without bracketed paste delivers a paste.
    fn burst(&self, lines: &[&str]) {
        let mut args = vec!["-L", SOCKET, "send-keys", "-t", &self.name];
        for l in lines {
            args.extend([*l, "Enter"]);
        }
        let st = Command::new("tmux").args(&args).status();
        assert!(st.is_ok_and(|s| s.success()));
    }

    fn line(&self, text: &str) {
        self.send_text(text);
        self.key("Enter");
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["-L", SOCKET, "capture-pane", "-p", "-t", &self.name, "-S", "-200"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn dead(&self) -> bool {
        let out = Command::new("tmux")
            .args(["-L", SOCKET, "display-message", "-p", "-t", &self.name, "#{pane_dead}"])
            .output()
            .expect("display-message");
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }

    /// Waits until `cond(screen)` holds; panics with the screen after a generous timeout (a
    /// failure bound, not a timing assertion).
    fn wait_for(&self, what: &str, cond: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.screen();
            if cond(&s) {
                return s;
            }
            if Instant::now() > end {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an empty prompt (tmux drops the space after it).
    fn wait_prompt(&self) -> String {
        self.wait_for("the prompt", |s| s.lines().any(|l| l.trim_end() == "♪"))
    }

    fn wait_text(&self, text: &str) -> String {
        self.wait_for(text, |s| s.contains(text))
    }

    /// Waits for `text` to appear `n` times on the screen.
    fn wait_count(&self, text: &str, n: usize) -> String {
        self.wait_for(&format!("{n} x {text}"), |s| s.matches(text).count() >= n)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", SOCKET, "kill-session", "-t", &self.name]).output();
    }
}

macro_rules! require_tmux {
    () => {
        if !tmux_available() {
            // CI sets CADENZA_REQUIRE_TOOLS so that a missing tmux fails instead of passing
            // silently; a developer's `cargo test` without tmux only skips these.
            assert!(std::env::var_os("CADENZA_REQUIRE_TOOLS").is_none(), "tmux is required (apt-get install tmux)");
            eprintln!("SKIPPED: tmux is not installed (apt-get install tmux)");
            return;
        }
    };
}

#[test]
fn repl_evaluates_completes_continues_and_points_at_errors() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("history.txt");
    let model = test_model().display().to_string();
    let t = Tmux::start("repl-basics", &["--no-midi", "--model", &model], &[("CADENZA_HISTORY", &hist)]);
    t.wait_prompt();
    // The prompt comes at once; the model reports from the background when it has loaded.
    t.wait_text("model `folk` ready");

    // A value is printed after `=>`. The second line is typed while the first still runs: keys
    // typed ahead of the prompt reach it (rustyline's `buffer-redux`; without it the first key
    // after an Enter was sometimes lost).
    t.line("let answer = 6 * 7");
    t.line("answer");
    t.wait_text("=> 42");
    // Lines arriving in one burst all run, none waits for another key.
    t.burst(&["500 + 5", "600 + 6", "700 + 7"]);
    t.wait_text("=> 707");
    t.wait_text("=> 606");

    // Tab completes a variable and an API function.
    t.send_text("answ");
    t.key("Tab");
    t.wait_text("♪ answer");
    t.send_text(" + 1");
    t.key("Enter");
    t.wait_text("=> 43");
    t.send_text("transp");
    t.key("Tab");
    t.wait_text("♪ transpose");
    t.key("C-u");

    // An open brace continues on the next line; the function then stays defined.
    t.line("fn dbl(x) {");
    t.line("  x * 2");
    t.line("}");
    t.line("dbl(21) + 0");
    t.wait_count("=> 42", 2);
    t.line("dbl(50)");
    t.wait_text("=> 100");

    // Two empty lines submit an unfinished entry, which then reports its error.
    t.line("let broken = (1 +");
    t.key("Enter");
    t.key("Enter");
    t.wait_text("^ Script is incomplete");

    // A runtime error shows the line with a caret under the bad name.
    t.line("let y = 1 + nope");
    let screen = t.wait_text("Variable not found: nope");
    let lines: Vec<&str> = screen.lines().collect();
    let i = lines.iter().position(|l| l.contains("^ Variable not found: nope")).unwrap();
    assert_eq!(lines[i - 1], "let y = 1 + nope");
    assert_eq!(lines[i].find('^'), lines[i - 1].find("nope"), "{screen}");

    // Colon commands.
    t.line(":help transpose");
    t.wait_text("example: let up = tune.transpose(5)");
    t.line(":loops");
    t.wait_text("no loops running");
    t.line(":nonsense");
    t.wait_text("unknown command `:nonsense`");

    // History: Up recalls the previous entry.
    t.line("40 + 4");
    t.wait_text("=> 44");
    t.key("Up");
    t.key("Enter");
    t.wait_count("=> 44", 2);

    // Ctrl-C during a running line cancels it and the REPL goes on.
    t.line("let n = 0; while true { n += 1 }");
    std::thread::sleep(Duration::from_millis(300));
    t.key("C-c");
    t.wait_text("cancelled; the music plays on.");
    t.line("n > 0");
    t.wait_text("=> true");

    // Ctrl-C during a generation cancels it; the REPL goes on.
    t.line("let long = gen(#{bars: 1024})");
    std::thread::sleep(Duration::from_millis(500));
    t.key("C-c");
    t.wait_count("cancelled; the music plays on.", 2);
    t.line("is_def_var(\"long\")");
    t.wait_text("=> false");

    // Ctrl-D exits with every note off, and the history was written.
    t.key("C-d");
    t.wait_text("all notes off. bye.");
    t.wait_for("exit", |_| t.dead());
    let saved = std::fs::read_to_string(&hist).unwrap();
    assert!(saved.contains("let answer = 6 * 7"), "{saved}");
    assert!(saved.contains("fn dbl(x) {"), "{saved}");
}

#[test]
fn history_survives_a_restart_and_quit_exits() {
    require_tmux!();
    let dir = tempfile::tempdir().unwrap();
    let hist = dir.path().join("h.txt");
    {
        let t = Tmux::start("repl-hist-1", &["--no-midi"], &[("CADENZA_HISTORY", &hist)]);
        t.wait_prompt();
        t.line("1000 + 7");
        t.wait_text("=> 1007");
        t.line(":quit");
        t.wait_for("exit", |_| t.dead());
    }
    let t = Tmux::start("repl-hist-2", &["--no-midi"], &[("CADENZA_HISTORY", &hist)]);
    t.wait_prompt();
    t.key("Up");
    t.wait_text("♪ :quit");
    t.key("Up");
    t.wait_text("♪ 1000 + 7");
    t.key("Enter");
    t.wait_text("=> 1007");
    t.line(":quit");
    t.wait_for("exit", |_| t.dead());
}

/// `cadenza score` reads every kind `convert` reads (MusicXML prompts were refused), names a bad
/// file once and prints its caret once (the path came three times, the error twice), and a
/// folder without config.json is called that, not "no model of that name".
#[test]
fn score_reads_every_kind_and_reports_each_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.abc");
    std::fs::write(&good, KESH).unwrap();
    let bad = dir.path().join("bad.abc");
    std::fs::write(&bad, "X:1\nK:C\nCDEF|\n&&&\n").unwrap();
    let xml = dir.path().join("p.xml");
    std::fs::write(
        &xml,
        r#"<?xml version="1.0"?><score-partwise><part-list><score-part id="P1"/></part-list><part id="P1"><measure number="1"><attributes><divisions>1</divisions></attributes><note><pitch><step>C</step><octave>4</octave></pitch><duration>1</duration></note><note><pitch><step>E</step><octave>4</octave></pitch><duration>1</duration></note></measure></part></score-partwise>"#,
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza"))
        .args(["score", "--model"])
        .arg(test_model())
        .args([&good, &bad, &xml])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("good.abc: 24 notes") && stdout.contains("p.xml: 2 notes"), "{stdout}");
    assert_eq!(stderr.matches("bad.abc").count(), 1, "{stderr}");
    assert_eq!(stderr.matches('^').count(), 1, "{stderr}");
    assert!(stderr.contains("1 of 3 files could not be scored"), "{stderr}");
    let empty = dir.path().join("empty-model");
    std::fs::create_dir(&empty).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_cadenza")).args(["score", "--model"]).arg(&empty).arg(&good).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no config.json"), "{stderr}");
}

/// Every gen is a take in a history on disk: listed, fetched, replayed note for note, branched
/// with one setting changed, saved, found again by a later session and by `cadenza takes`, and a
/// replay by other weights is refused.
#[test]
fn takes_are_kept_replayed_branched_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("takes.jsonl");
    let session_with_history = || {
        let (out, _) = buffer_output();
        let mut o = Options::new(out);
        o.no_midi = true;
        o.model = test_model().display().to_string();
        o.sandbox = Sandbox::with_base(dir.path(), &[]).unwrap();
        o.takes_file = Some(file.clone());
        Session::new(o)
    };
    let mut s = session_with_history();
    let _ = s.eval(&format!("let t = abc({KESH:?});")).unwrap();
    let first = score_of(s.eval("gen(t, #{bars: 2, seed: 11})").unwrap());
    let second = score_of(s.eval("gen(t, #{bars: 2})").unwrap());
    assert_eq!(score_of(s.eval("take(1)").unwrap()), first);
    assert_eq!(score_of(s.eval("take(2)").unwrap()), second);
    // The second call's seed was made up by the session and recorded: its replay is exact too.
    assert_eq!(score_of(s.eval("replay(2)").unwrap()).notes, second.notes);
    assert_eq!(score_of(s.eval("replay(1)").unwrap()).notes, first.notes);
    let hot = score_of(s.eval("branch(1, #{temperature: 1.7})").unwrap());
    assert_eq!(hot.meta.gen.temperature, Some(1.7));
    assert_eq!(hot.meta.gen.seed, Some(11), "a branch keeps the seed unless told");
    let lines: Vec<String> =
        s.eval("takes()").unwrap().into_array().unwrap().into_iter().map(|d| d.into_string().unwrap()).collect();
    assert_eq!(lines.len(), 5, "two gens, two replays, one branch: {lines:?}");
    assert!(lines[0].contains("gen") && lines[0].contains("seed 11") && lines[0].contains("2 bars"), "{}", lines[0]);
    let _ = s.eval("save_take(1, \"one.mid\")").unwrap();
    let saved = cadenza::sink::midi_file::read(dir.path().join("one.mid")).unwrap();
    assert_eq!(saved.notes.len(), first.notes.len());
    let e = s.eval("take(99)").unwrap_err().to_string();
    assert!(e.contains("take 99 is not in the history (takes 1..=5 are)"), "{e}");
    drop(s);

    // A later session continues the numbers and replays an earlier session's take.
    let mut later = session_with_history();
    assert_eq!(score_of(later.eval("replay(1)").unwrap()).notes, first.notes);
    assert_eq!(later.eval("takes()").unwrap().into_array().unwrap().len(), 6);

    // The same history from a shell.
    let out = Command::new(env!("CARGO_BIN_EXE_cadenza")).args(["takes", "--last", "2"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(listed.lines().last().unwrap().trim_start().starts_with('6'), "{listed}");

    // Weights that are not the ones that made a take cannot pass for them.
    let text = std::fs::read_to_string(&file).unwrap();
    let first_line = text.lines().next().unwrap();
    let hash_at = first_line.find("\"model_hash\":\"").unwrap() + 14;
    let mut forged = first_line.to_string();
    forged.replace_range(hash_at..hash_at + 4, "beef");
    let mut notes = serde_json::from_str::<serde_json::Value>(&forged).unwrap();
    notes["n"] = serde_json::json!(50);
    let first_note = &mut notes["score"]["notes"][0]["pitch"];
    *first_note = serde_json::json!(first_note.as_u64().unwrap() + 1);
    std::fs::write(&file, format!("{text}{notes}\n")).unwrap();
    let mut third = session_with_history();
    let e = third.eval("replay(50)").unwrap_err().to_string();
    assert!(e.contains("is not the one that made it (weights beef"), "{e}");
}

/// Two models answering each other: each phrase conditioned on the last, each side its own
/// voice, every phrase a take, the same seed the same duet, and the bounds refused by name.
#[test]
fn duet_alternates_two_models_phrase_by_phrase() {
    let (mut s, _, _) = model_session();
    let m = test_model().display().to_string();
    let _ = s.eval(&format!("let t = abc({KESH:?}); let m = {m:?};")).unwrap();
    let d = score_of(s.eval("duet(t, m, m, #{turns: 3, bars: 1, seed: 4})").unwrap());
    let names: Vec<&str> = d.voices.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["call", "a-folk", "b-folk"]);
    assert_eq!(d.voices.iter().map(|v| v.channel).collect::<Vec<_>>(), [0, 1, 2]);
    let kesh = cadenza::dsl::parse(KESH).unwrap();
    assert_eq!(d.bar_count(), kesh.bar_count() + 3, "the call, then three one-bar answers");
    // The first answer is what gen makes of the call with the same model and seed.
    let first = score_of(s.eval("gen(t, #{model: m, bars: 1, seed: 4})").unwrap());
    let answer: Vec<(u64, u8)> = d
        .notes
        .iter()
        .filter(|n| n.voice == 1 && n.start < kesh.length + first.length)
        .map(|n| (n.start - kesh.length, n.pitch))
        .collect();
    assert_eq!(answer, first.notes.iter().map(|n| (n.start, n.pitch)).collect::<Vec<_>>());
    assert_eq!(score_of(s.eval("duet(t, m, m, #{turns: 3, bars: 1, seed: 4})").unwrap()), d);
    assert_eq!(s.eval("takes()").unwrap().into_array().unwrap().len(), 3 + 1 + 3);
    for (line, want) in [
        ("duet(m, m, #{turns: 0})", "turns 0 must be 1..=64"),
        ("duet(m, m, #{turns: 65})", "turns 65 must be 1..=64"),
        ("duet(m, m, #{bars: 17})", "bars 17 must be 1..=16"),
    ] {
        let e = s.eval(line).unwrap_err().to_string();
        assert!(e.contains(want), "{line}: {e}");
    }
}

/// A take that copies 16 or more notes from a tune the model learnt from is marked as it is
/// made, with the tune's title (from `copies.bin` beside the weights), and the history keeps it.
#[test]
fn a_take_that_copies_a_training_tune_is_marked_with_its_title() {
    let dir = tempfile::tempdir().unwrap();
    // A model folder of its own (a copy of the test model), so the index does not leak into
    // other tests.
    let model = dir.path().join("copycat");
    std::fs::create_dir(&model).unwrap();
    for f in ["config.json", "model.safetensors", "vocab.json"] {
        std::fs::copy(test_model().join(f), model.join(f)).unwrap();
    }
    let file = dir.path().join("takes.jsonl");
    let session = || {
        let (out, buf) = buffer_output();
        let mut o = Options::new(out);
        o.no_midi = true;
        o.model = model.display().to_string();
        o.takes_file = Some(file.clone());
        (Session::new(o), buf)
    };
    let (mut s, buf) = session();
    let take = score_of(s.eval("gen(#{bars: 8, seed: 21})").unwrap());
    assert!(take.notes.len() > 20, "a take long enough to copy: {} notes", take.notes.len());
    assert!(!buf.lock().unwrap().iter().any(|l| l.contains("copies")), "no index yet, no mark");
    drop(s);
    // Pretend the model learnt that very take: index it beside the weights, then make it again.
    let index = cadenza::eval::copies::CopyIndex::build(&[("The Test Reel".into(), take.clone())]);
    index.save(&model.join("copies.bin")).unwrap();
    let (mut s, buf) = session();
    assert_eq!(score_of(s.eval("replay(1)").unwrap()).notes, take.notes);
    let out = buf.lock().unwrap().join("\n");
    assert!(out.contains("take 2 copies") && out.contains("of “The Test Reel”, a tune copycat learnt from"), "{out}");
    let lines: Vec<String> =
        s.eval("takes()").unwrap().into_array().unwrap().into_iter().map(|d| d.into_string().unwrap()).collect();
    assert!(lines[1].contains("copies “The Test Reel”") && !lines[0].contains("copies"), "{lines:?}");
}

/// Call and response: the loop keeps a bar of silence while the player plays; a bar after they
/// pause it plays the model's answer to what they played, on the next bar line, then listens
/// again. The player here is a recorded stream fed into a detached input.
#[test]
fn an_answering_loop_answers_when_the_player_pauses() {
    let (mut s, buf, rec) = model_session();
    let (input, feed) = cadenza::play::input::InputRecorder::detached("keyboard");
    s.ctx().stage.set_input(input);
    let _ = s.eval("tempo(120); loop(\"answer\", #{mode: \"answer\", bars: 1, seed: 9})").unwrap();
    // The player plays four quarter notes during the first bars (2 s a bar at 120 bpm)...
    for (i, p) in [60u8, 62, 64, 65].iter().enumerate() {
        let at = i as u64 * 500_000_000;
        feed.send(at, &[0x90, *p, 90]);
        let _ = s.eval("sleep(0.25)").unwrap();
        feed.send(at + 400_000_000, &[0x80, *p, 0]);
        let _ = s.eval("sleep(0.25)").unwrap();
    }
    // ...then pauses. Nothing was answered while they played.
    assert_eq!(note_ons(&rec).len(), 0, "{:?}", buf.lock().unwrap());
    let _ = s.eval("sleep(8.0)").unwrap();
    let answered = note_ons(&rec);
    assert!(!answered.is_empty(), "an answer after the pause: {:?}", buf.lock().unwrap());
    // The answer is a take, conditioned on the four notes heard.
    let takes: Vec<String> =
        s.eval("takes()").unwrap().into_array().unwrap().into_iter().map(|d| d.into_string().unwrap()).collect();
    assert_eq!(takes.len(), 1, "one answer for one call: {takes:?}");
    let _ = s.eval("stop(); wait()").unwrap();
    s.shutdown();
    assert!(balanced(&rec));
}
