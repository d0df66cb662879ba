//! The functions and the `Score` type a script sees; each wraps one call into a lower layer.

use super::sandbox::Access;
use super::stage::GenOpts;
use super::Ctx;
use crate::dsl::fields::ScaleValue;
use crate::score::Score;
use crate::time::{Tick, PPQ};
use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, NativeCallContext, INT};
use std::sync::{Arc, Weak};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// A runtime error carrying `msg`; rhai adds the position of the call.
fn err<T>(msg: impl std::fmt::Display) -> Res<T> {
    Err(msg.to_string().into())
}

fn ctx_of(w: &Weak<Ctx>) -> Res<Arc<Ctx>> {
    match w.upgrade() {
        Some(c) => Ok(c),
        None => err("the session has ended"),
    }
}

/// The GM program for an instrument name: exact, else the first name containing it.
/// (The DSL's `%%instrument` table, so a script and a tune agree on every name.)
pub fn gm_program(name: &str) -> Option<u8> {
    use crate::dsl::instruments::{program, GM_NAMES};
    let n = name.trim().to_lowercase().replace(['_', '-'], " ");
    program(name).or_else(|| {
        (!n.is_empty()).then(|| GM_NAMES.iter().position(|g| g.contains(n.as_str()))).flatten().map(|p| p as u8)
    })
}

/// Instrument names for completion: the short aliases, then the General MIDI names.
pub fn instrument_names() -> Vec<String> {
    use crate::dsl::instruments::{ALIASES, GM_NAMES};
    ALIASES.iter().map(|(a, _)| a.to_string()).chain(GM_NAMES.iter().map(|g| g.to_string())).collect()
}

pub use crate::score::{parse_pitch, pitch_name};

/// How the REPL prints a result.
pub fn describe(v: &Dynamic) -> String {
    if let Some(s) = v.clone().try_cast::<Score>() {
        return s.summary();
    }
    if v.is_string() {
        return format!("{v:?}");
    }
    if v.is_array() {
        if let Some(a) = v.clone().try_cast::<Array>() {
            let items: Vec<String> = a.iter().map(describe).collect();
            return format!("[{}]", items.join(", "));
        }
    }
    if v.is_map() {
        if let Some(m) = v.clone().try_cast::<Map>() {
            let items: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", describe(v))).collect();
            return format!("#{{{}}}", items.join(", "));
        }
    }
    v.to_string()
}

fn to_u32(v: INT, what: &str) -> Res<u32> {
    u32::try_from(v).or_else(|_| err(format!("{what} must be between 0 and {}, not {v}", u32::MAX)))
}

fn note_map(n: &crate::score::Note) -> Dynamic {
    let mut m = Map::new();
    m.insert("start".into(), (n.start as INT).into());
    m.insert("dur".into(), (n.dur as INT).into());
    m.insert("pitch".into(), (n.pitch as INT).into());
    m.insert("name".into(), pitch_name(n.pitch).into());
    m.insert("velocity".into(), (n.velocity as INT).into());
    m.insert("channel".into(), (n.channel as INT).into());
    m.insert("voice".into(), (n.voice as INT).into());
    m.insert("program".into(), (n.program as INT).into());
    m.into()
}

/// Reads an integer field of a map that may have been written as a float.
fn map_int(m: &Map, key: &str) -> Res<Option<i64>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => {
            if let Ok(i) = v.as_int() {
                Ok(Some(i))
            } else if let Ok(f) = v.as_float() {
                Ok(Some(f.round() as i64))
            } else {
                err(format!("`{key}` must be a number, not {}", v.type_name()))
            }
        }
    }
}

fn map_float(m: &Map, key: &str) -> Res<Option<f64>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) => {
            if let Ok(f) = v.as_float() {
                Ok(Some(f))
            } else if let Ok(i) = v.as_int() {
                Ok(Some(i as f64))
            } else {
                err(format!("`{key}` must be a number, not {}", v.type_name()))
            }
        }
    }
}

fn map_str(m: &Map, key: &str) -> Res<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) if v.is_unit() => Ok(None),
        Some(v) if v.is_string() => Ok(Some(v.to_string())),
        Some(v) => err(format!("`{key}` must be a string, not {}", v.type_name())),
    }
}

/// Reads a pitch given as a number or a name (`"C4"`).
fn dyn_pitch(v: &Dynamic, key: &str) -> Res<u8> {
    if let Ok(i) = v.as_int() {
        return u8::try_from(i)
            .ok()
            .filter(|p| *p <= 127)
            .map_or_else(|| err(format!("`{key}`: {i} is not a MIDI pitch")), Ok);
    }
    if v.is_string() {
        let s = v.to_string();
        return parse_pitch(&s).map_or_else(|| err(format!("`{key}`: `{s}` is not a pitch (write C4, F#3, 60)")), Ok);
    }
    err(format!("`{key}` must be a pitch (number or name like \"C4\")"))
}

/// `scale`: a name (`"D dorian"`, `"A minor pentatonic"`, `"key"`, `"key pentatonic"`,
/// `"any"`) or an array of pitch classes.
fn scale_opt(m: &Map) -> Res<Option<ScaleValue>> {
    let Some(v) = m.get("scale") else { return Ok(None) };
    if let Some(a) = v.clone().try_cast::<Array>() {
        let mut pcs = Vec::new();
        for x in a {
            match x.as_int() {
                Ok(pc) if (0..12).contains(&pc) => pcs.push(pc as u8),
                _ => return err(format!("gen: `scale` pitch classes run from 0 (C) to 11 (B), not {x}")),
            }
        }
        pcs.sort_unstable();
        pcs.dedup();
        return Ok(Some(ScaleValue::PitchClasses(pcs)));
    }
    let text = v.to_string();
    crate::dsl::fields::scale_value(&text)
        .map(Some)
        .or_else(|e| err(format!("gen: `scale` \"{text}\": expected {}", e.expected)))
}

fn map_bool(m: &Map, key: &str) -> Res<Option<bool>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => v.as_bool().map(Some).or_else(|_| err(format!("gen: `{key}` must be true or false"))),
    }
}

/// `score * n`: refused when the result would pass [`crate::score::MAX_REPEAT_NOTES`] notes.
fn repeat_bounded(s: &Score, n: INT) -> Res<Score> {
    let times = to_u32(n, "repeat count")?;
    let notes = s.notes.len().saturating_mul(times as usize);
    if notes > crate::score::MAX_REPEAT_NOTES {
        return err(format!(
            "repeat: {} notes × {times} would be {notes} notes; at most {}",
            s.notes.len(),
            crate::score::MAX_REPEAT_NOTES
        ));
    }
    within_bounds(s.repeat(times))
}

/// A score made by a script operation, refused (with the bound it passes) beyond the sizes any
/// score may have, so `a + a + a ...` or `stretch(1e9)` cannot grow without end.
fn within_bounds(s: Score) -> Res<Score> {
    s.check_bounds().or_else(err)?;
    Ok(s)
}

/// The scores of a script array, or an error naming the first value that is not one.
fn scores_of(what: &str, list: Array) -> Res<Vec<Score>> {
    list.into_iter()
        .map(|v| {
            let name = v.type_name();
            v.try_cast::<Score>().map_or_else(|| err(format!("{what}: expected scores, found {name}")), Ok)
        })
        .collect()
}

/// The options map of `gen`, checked: unknown keys are errors, so a typo is not ignored.
pub fn gen_opts(m: &Map) -> Res<GenOpts> {
    const KNOWN: &[&str] = &[
        "bars",
        "notes",
        "tokens",
        "temperature",
        "top_k",
        "top_p",
        "seed",
        "style",
        "key",
        "range",
        "scale",
        "in_key",
        "max_polyphony",
        "whole_bars",
        "mono_voices",
        "no_parallels",
        "end_on_tonic",
        "end_on_final",
        "model",
        "repetition_penalty",
        "same_pitch_bias",
        "recall_bias",
        "recall_spread",
        "length_temperature",
        "length_top_p",
        "guidance",
        "composer",
        "instrument",
        "meter",
        "form",
        "part_bars",
        "keep_bars",
        "cadence",
    ];
    for k in m.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return err(format!("gen: unknown option `{k}` (known: {})", KNOWN.join(", ")));
        }
    }
    let range = match m.get("range") {
        None => None,
        Some(v) if v.is_unit() => None,
        Some(v) => {
            if let Some(a) = v.clone().try_cast::<Array>() {
                if a.len() != 2 {
                    return err("gen: `range` must be [low, high]");
                }
                Some((dyn_pitch(&a[0], "range")?, dyn_pitch(&a[1], "range")?))
            } else if v.is_string() {
                let s = v.to_string();
                let Some((lo, hi)) = s.split_once("..") else {
                    return err(format!("gen: `range` \"{s}\" must look like \"C4..C6\""));
                };
                Some((dyn_pitch(&lo.into(), "range")?, dyn_pitch(&hi.into(), "range")?))
            } else {
                return err("gen: `range` must be [low, high] or \"C4..C6\"");
            }
        }
    };
    if let Some((lo, hi)) = range {
        if lo > hi {
            return err(format!("gen: range {}..{} is reversed", pitch_name(lo), pitch_name(hi)));
        }
    }
    let pos = |key: &str, v: Option<i64>| -> Res<Option<u32>> {
        match v {
            Some(x) if x < 0 || x > u32::MAX as i64 => err(format!("gen: `{key}` must be positive, not {x}")),
            Some(x) => Ok(Some(x as u32)),
            None => Ok(None),
        }
    };
    let scale = scale_opt(m)?;
    let scale = scale.map(ScaleValue::fields);
    Ok(GenOpts {
        bars: pos("bars", map_int(m, "bars")?)?,
        notes: pos("notes", map_int(m, "notes")?)?,
        tokens: pos("tokens", map_int(m, "tokens")?)?,
        temperature: map_float(m, "temperature")?,
        top_k: pos("top_k", map_int(m, "top_k")?)?,
        top_p: map_float(m, "top_p")?,
        seed: map_int(m, "seed")?.map(|s| s as u64),
        style: map_str(m, "style")?,
        composer: map_str(m, "composer")?,
        instrument: map_str(m, "instrument")?,
        key: map_str(m, "key")?,
        meter: map_str(m, "meter")?,
        range,
        // What the scale sets (`ScaleValue::fields`); "no pitch-class limit" (`scale: "any"`) is
        // written as all twelve, since `None` here means "as the prompt or model says".
        pitch_classes: scale
            .as_ref()
            .and_then(|f| f.pitch_classes.clone())
            .map(|p| p.unwrap_or_else(|| (0..12).collect())),
        in_key: map_bool(m, "in_key")?.or(scale.as_ref().and_then(|f| f.in_key)),
        pentatonic: scale.as_ref().and_then(|f| f.pentatonic),
        max_polyphony: pos("max_polyphony", map_int(m, "max_polyphony")?)?,
        whole_bars: map_bool(m, "whole_bars")?,
        mono_voices: map_bool(m, "mono_voices")?,
        no_parallels: map_bool(m, "no_parallels")?,
        end_on_tonic: map_bool(m, "end_on_tonic")?,
        end_on_final: map_bool(m, "end_on_final")?,
        model: map_str(m, "model")?,
        repetition_penalty: map_float(m, "repetition_penalty")?,
        same_pitch_bias: map_float(m, "same_pitch_bias")?,
        recall_bias: map_float(m, "recall_bias")?,
        recall_spread: map_float(m, "recall_spread")?,
        length_temperature: map_float(m, "length_temperature")?,
        length_top_p: map_float(m, "length_top_p")?,
        guidance: map_float(m, "guidance")?,
        form: map_str(m, "form")?,
        part_bars: pos("part_bars", map_int(m, "part_bars")?)?,
        keep_bars: pos("keep_bars", map_int(m, "keep_bars")?)?,
        cadence: map_bool(m, "cadence")?,
    })
}

/// Registers the `Score` type and every API function on `engine`.
pub fn register(engine: &mut Engine, ctx: &Arc<Ctx>) {
    register_score(engine);
    register_music(engine, Arc::downgrade(ctx));
}

fn register_score(engine: &mut Engine) {
    engine.register_type_with_name::<Score>("Score");
    engine.register_fn("to_string", |s: &mut Score| s.summary());
    engine.register_fn("to_debug", |s: &mut Score| s.summary());
    engine.register_fn("transpose", |s: &mut Score, semitones: INT| -> Res<Score> {
        let st = i32::try_from(semitones).or_else(|_| err(format!("transpose by {semitones}?")))?;
        s.transpose(st).or_else(err)
    });
    engine.register_fn("slice", |s: &mut Score, from: INT, to: INT| -> Res<Score> {
        s.slice_bars(to_u32(from, "first bar")?, to_u32(to, "end bar")?).or_else(err)
    });
    engine.register_fn("concat", |a: &mut Score, b: Score| within_bounds(a.concat(&b)));
    engine.register_fn("concat", |list: Array| -> Res<Score> {
        within_bounds(Score::concat_all(&scores_of("concat", list)?))
    });
    engine.register_fn("+", |a: Score, b: Score| within_bounds(a.concat(&b)));
    engine.register_fn("repeat", |s: &mut Score, n: INT| -> Res<Score> { repeat_bounded(s, n) });
    engine.register_fn("*", |s: Score, n: INT| -> Res<Score> { repeat_bounded(&s, n) });
    engine.register_fn("stack", |a: &mut Score, b: Score| within_bounds(a.merge(&b)));
    engine.register_fn("stack", |list: Array| -> Res<Score> {
        within_bounds(Score::merge_all(&scores_of("stack", list)?))
    });
    engine.register_fn("quantize", |s: &mut Score, division: INT| -> Res<Score> {
        // `division` as in note values: 8 = eighth notes, 16 = sixteenths.
        if division <= 0 || (4 * PPQ as INT) % division != 0 {
            return err(format!("quantize: {division} must divide a whole note (1, 2, 4, 8, 16, 32, 3, 6, 12 ...)"));
        }
        s.quantize(4 * PPQ as Tick / division as Tick).or_else(err)
    });
    engine.register_fn("stretch", |s: &mut Score, factor: f64| -> Res<Score> {
        if !(factor.is_finite() && factor > 0.0) {
            return err(format!("stretch: factor {factor} must be positive"));
        }
        // A rational close to the factor keeps tick arithmetic exact.
        let den = 1000u64;
        let num = (factor * den as f64).round().max(1.0) as u64;
        within_bounds(s.stretch(num, den).or_else(err)?)
    });
    engine.register_fn("channel", |s: &mut Score, ch: INT| -> Res<Score> {
        if !(1..=16).contains(&ch) {
            return err(format!("channel {ch} must be 1..=16"));
        }
        let mut out = s.clone();
        for n in &mut out.notes {
            n.channel = (ch - 1) as u8;
        }
        for v in &mut out.voices {
            v.channel = (ch - 1) as u8;
        }
        Ok(out)
    });
    engine.register_fn("program", |s: &mut Score, p: INT| -> Res<Score> {
        if !(0..=127).contains(&p) {
            return err(format!("program {p} must be 0..=127 (General MIDI)"));
        }
        let mut out = s.clone();
        for n in &mut out.notes {
            n.program = p as u8;
        }
        for v in &mut out.voices {
            v.program = p as u8;
        }
        out.meta.program = Some(p as u8);
        Ok(out)
    });
    engine.register_fn("instrument", |s: &mut Score, name: &str| -> Res<Score> {
        let Some(p) = gm_program(name) else {
            return err(format!(
                "instrument `{name}` is not a General MIDI name (try violin, flute, acoustic grand piano)"
            ));
        };
        let mut out = s.clone();
        for n in &mut out.notes {
            n.program = p;
        }
        for v in &mut out.voices {
            v.program = p;
        }
        out.meta.program = Some(p);
        out.meta.instrument = Some(crate::dsl::instruments::name(p).to_string());
        Ok(out)
    });
    engine.register_fn("velocity", |s: &mut Score, v: INT| -> Res<Score> {
        if !(1..=127).contains(&v) {
            return err(format!("velocity {v} must be 1..=127"));
        }
        let mut out = s.clone();
        for n in &mut out.notes {
            n.velocity = v as u8;
        }
        Ok(out)
    });
    engine.register_fn("with_style", |s: &mut Score, style: &str| {
        let mut out = s.clone();
        out.meta.style = Some(style.to_string());
        out
    });
    engine.register_fn("len", |s: &mut Score| s.notes.len() as INT);
    engine.register_get("len", |s: &mut Score| s.notes.len() as INT);
    engine.register_get("bars", |s: &mut Score| s.bar_count() as INT);
    engine.register_get("length", |s: &mut Score| s.length as INT);
    engine.register_get("beats", |s: &mut Score| s.beats());
    engine.register_get("key", |s: &mut Score| s.key().to_string());
    engine.register_get("meter", |s: &mut Score| s.meter().to_string());
    engine.register_get("title", |s: &mut Score| s.meta.title.clone().map_or(Dynamic::UNIT, Dynamic::from));
    engine.register_get("style", |s: &mut Score| s.meta.style.clone().map_or(Dynamic::UNIT, Dynamic::from));
    engine.register_get("bpm", |s: &mut Score| s.meta.tempo.bpm_at(0));
    engine.register_get("notes", |s: &mut Score| s.notes.iter().map(note_map).collect::<Array>());
    engine.register_get("pitches", |s: &mut Score| {
        s.notes.iter().map(|n| Dynamic::from(n.pitch as INT)).collect::<Array>()
    });
    engine.register_fn("==", |a: Score, b: Score| a == b);
    engine.register_fn("!=", |a: Score, b: Score| a != b);
    engine.register_fn("note_name", |p: INT| -> Res<String> {
        u8::try_from(p)
            .ok()
            .filter(|p| *p <= 127)
            .map(pitch_name)
            .map_or_else(|| err(format!("{p} is not a MIDI pitch")), Ok)
    });
    engine.register_fn("empty", Score::new);
}

fn register_music(engine: &mut Engine, w: Weak<Ctx>) {
    // --- text and files ------------------------------------------------------------------
    let c = w.clone();
    engine.register_fn("abc", move |text: &str| -> Res<Score> { ctx_of(&c)?.stage.abc(text).or_else(err) });
    let c = w.clone();
    engine.register_fn("load", move |path: &str| -> Res<Score> { ctx_of(&c)?.stage.load(path).or_else(err) });
    let c = w.clone();
    engine.register_fn("abc_text", move |s: Score| -> Res<String> { ctx_of(&c)?.stage.abc_text(&s).or_else(err) });
    let c = w.clone();
    engine
        .register_fn("save", move |s: Score, path: &str| -> Res<()> { ctx_of(&c)?.stage.save(&s, path).or_else(err) });
    let c = w.clone();
    engine.register_fn("show", move |s: Score| -> Res<()> {
        let ctx = ctx_of(&c)?;
        ctx.print(ctx.stage.abc_text(&s).or_else(err)?.trim_end());
        ctx.print(crate::sink::pianoroll::render(&s, &crate::sink::pianoroll::Style::terminal()).trim_end());
        Ok(())
    });
    engine.register_fn("roll", |s: Score| crate::sink::pianoroll::render(&s, &crate::sink::pianoroll::Style::plain()));

    // --- models and generation -------------------------------------------------------------
    let c = w.clone();
    engine.register_fn("model", move |name: &str| -> Res<String> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.set_model(name, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("model", move || -> Res<String> { Ok(ctx_of(&c)?.stage.model_name()) });
    let c = w.clone();
    engine.register_fn("models", move || -> Res<Array> {
        Ok(ctx_of(&c)?.stage.models().into_iter().map(Dynamic::from).collect())
    });
    let c = w.clone();
    engine.register_fn("style", move |name: &str| -> Res<String> { ctx_of(&c)?.stage.set_style(name).or_else(err) });
    let c = w.clone();
    engine.register_fn("style", move || -> Res<Dynamic> {
        Ok(ctx_of(&c)?.stage.style().map_or(Dynamic::UNIT, Dynamic::from))
    });
    let c = w.clone();
    engine.register_fn("styles", move || -> Res<Array> {
        let cancel = line_cancel();
        let styles = ctx_of(&c)?.stage.styles_blocking(&cancel).or_else(|e| fail(e, &cancel))?;
        Ok(styles.into_iter().map(Dynamic::from).collect())
    });
    let c = w.clone();
    engine.register_fn("gen", move |prompt: Score, opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.generate(Some(&prompt), &gen_opts(&opts)?, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("gen", move |prompt: Score| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.generate(Some(&prompt), &GenOpts::default(), &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("gen", move |opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.generate(None, &gen_opts(&opts)?, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("harmonize", move |melody: Score, opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.harmonize(&melody, &gen_opts(&opts)?, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("harmonize", move |melody: Score| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.harmonize(&melody, &GenOpts::default(), &cancel).or_else(|e| fail(e, &cancel))
    });
    register_takes(engine, &w);
    let c = w.clone();
    engine.register_fn("duet", move |a: &str, b: &str, opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        let turns = duet_turns(&opts)?;
        let opts = gen_opts(&without(&opts, "turns"))?;
        ctx_of(&c)?.stage.duet(None, [a, b], turns, &opts, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("duet", move |call: Score, a: &str, b: &str, opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        let turns = duet_turns(&opts)?;
        let opts = gen_opts(&without(&opts, "turns"))?;
        ctx_of(&c)?.stage.duet(Some(&call), [a, b], turns, &opts, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("score_ll", move |s: Score| -> Res<Map> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.likelihood(&s, None, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("score_ll", move |s: Score, model: &str| -> Res<Map> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.likelihood(&s, Some(model), &cancel).or_else(|e| fail(e, &cancel))
    });

    // --- playing ---------------------------------------------------------------------------
    let c = w.clone();
    engine.register_fn("play", move |s: Score| -> Res<()> { ctx_of(&c)?.stage.play(&s).or_else(err) });
    let c = w.clone();
    engine.register_fn("tempo", move |bpm: f64| -> Res<f64> { ctx_of(&c)?.stage.set_tempo(bpm).or_else(err) });
    let c = w.clone();
    engine.register_fn("tempo", move |bpm: INT| -> Res<f64> { ctx_of(&c)?.stage.set_tempo(bpm as f64).or_else(err) });
    let c = w.clone();
    engine.register_fn("tempo", move || -> Res<f64> { Ok(ctx_of(&c)?.stage.tempo()) });
    let c = w.clone();
    engine.register_fn("ports", move || -> Res<Array> {
        let ctx = ctx_of(&c)?;
        match ctx.stage.ports() {
            Ok(p) => Ok(p.into_iter().map(Dynamic::from).collect()),
            // No MIDI system (a server, CI): there are simply no ports; say why once.
            Err(e) => {
                ctx.print(&format!("no MIDI ports: {e}"));
                Ok(Array::new())
            }
        }
    });
    let c = w.clone();
    engine.register_fn("out", move |name: &str| -> Res<String> { ctx_of(&c)?.stage.out(name).or_else(err) });
    let c = w.clone();
    engine.register_fn("in_ports", move || -> Res<Array> {
        Ok(ctx_of(&c)?.stage.input_ports().or_else(err)?.into_iter().map(Dynamic::from).collect())
    });
    let c = w.clone();
    engine.register_fn("listen", move |port: &str| -> Res<String> { ctx_of(&c)?.stage.listen(port).or_else(err) });
    let c = w.clone();
    engine.register_fn("listen", move || -> Res<String> { ctx_of(&c)?.stage.listen("").or_else(err) });
    let c = w.clone();
    engine.register_fn("heard", move || -> Res<Score> { ctx_of(&c)?.stage.heard().or_else(err) });
    let c = w.clone();
    engine.register_fn("send_clock", move |on: bool| -> Res<()> { ctx_of(&c)?.stage.send_clock(on).or_else(err) });
    let c = w.clone();
    engine.register_fn("follow_clock", move |port: &str| -> Res<()> {
        ctx_of(&c)?.stage.follow_clock(port, 0.0).or_else(err)
    });
    let c = w.clone();
    engine.register_fn("follow_clock", move |port: &str, latency_ms: f64| -> Res<()> {
        ctx_of(&c)?.stage.follow_clock(port, latency_ms).or_else(err)
    });
    let c = w.clone();
    engine.register_fn("follow_clock", move |port: &str, latency_ms: i64| -> Res<()> {
        ctx_of(&c)?.stage.follow_clock(port, latency_ms as f64).or_else(err)
    });
    let c = w.clone();
    engine.register_fn("panic", move || -> Res<()> {
        ctx_of(&c)?.stage.panic();
        Ok(())
    });
    let c = w.clone();
    engine.register_fn("wait", move || -> Res<()> {
        let ctx = ctx_of(&c)?;
        let cancel = line_cancel();
        if !ctx.stage.wait_idle(&cancel, false) && cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return fail(String::new(), &cancel);
        }
        Ok(())
    });
    let c = w.clone();
    engine.register_fn("sleep", move |seconds: f64| -> Res<()> {
        let ctx = ctx_of(&c)?;
        sleep_cancellable(&ctx, seconds)
    });
    let c = w.clone();
    engine.register_fn("sleep", move |seconds: INT| -> Res<()> {
        let ctx = ctx_of(&c)?;
        sleep_cancellable(&ctx, seconds as f64)
    });

    // --- loops -----------------------------------------------------------------------------
    for name in ["Loop", "live_loop"] {
        let c = w.clone();
        engine.register_fn(name, move |nc: NativeCallContext, name: ImmutableString, body: FnPtr| -> Res<()> {
            let ctx = ctx_of(&c)?;
            super::loops::define(&ctx, &nc, name.as_str(), body)
        });
        let c = w.clone();
        engine.register_fn(name, move |name: ImmutableString, opts: Map| -> Res<()> {
            let ctx = ctx_of(&c)?;
            super::loops::define_generating(&ctx, name.as_str(), gen_loop(&opts)?)
        });
    }
    let c = w.clone();
    engine.register_fn("stop", move |name: &str| -> Res<bool> { Ok(ctx_of(&c)?.stage.stop_loop(name)) });
    let c = w.clone();
    engine.register_fn("stop", move || -> Res<()> {
        let ctx = ctx_of(&c)?;
        ctx.stage.stop_all();
        Ok(())
    });
    let c = w.clone();
    engine.register_fn("loops", move || -> Res<Array> {
        Ok(ctx_of(&c)?.stage.loops.names().into_iter().map(Dynamic::from).collect())
    });

    // --- files ---------------------------------------------------------------------------
    // Only inside the sandbox (the working folder and --allow-dir folders).
    let c = w.clone();
    engine.register_fn("write_text", move |path: &str, text: &str| -> Res<()> {
        let real = ctx_of(&c)?.stage.sandbox.check(path, Access::Write).or_else(|e| err(format!("write_text: {e}")))?;
        std::fs::write(real, text).or_else(|e| err(format!("write_text {path}: {e}")))
    });
    let c = w.clone();
    engine.register_fn("read_text", move |path: &str| -> Res<String> {
        let real = ctx_of(&c)?.stage.sandbox.check(path, Access::Read).or_else(|e| err(format!("read_text: {e}")))?;
        read_text_bounded(&real).or_else(|e| err(format!("read_text {path}: {e}")))
    });

    // --- help ------------------------------------------------------------------------------
    engine.register_fn("help", super::help::overview);
    engine.register_fn("help", |name: &str| super::help::topic(name).unwrap_or_else(|| super::help::unknown(name)));
}

/// Most bytes `read_text` reads: the longest string a script may hold.
pub const MAX_TEXT_BYTES: u64 = super::MAX_STRING_BYTES as u64;

/// A text file of at most [`MAX_TEXT_BYTES`], read without trusting its size (a device or a
/// growing file may claim none).
fn read_text_bounded(path: &std::path::Path) -> std::io::Result<String> {
    let bytes = crate::sink::read_at_most(path, MAX_TEXT_BYTES, "the longest text a script holds")?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// `takes()`, `take(n)`, `replay(n)`, `branch(n, opts)`, `save_take(n, path)`: the take history
/// (`export` is a Rhai keyword).
fn register_takes(engine: &mut Engine, w: &Weak<Ctx>) {
    let c = w.clone();
    engine.register_fn("takes", move || -> Res<Array> {
        Ok(ctx_of(&c)?.stage.takes.list().iter().map(|e| Dynamic::from(e.summary())).collect())
    });
    let c = w.clone();
    engine.register_fn("take", move |n: INT| -> Res<Score> {
        let n = take_number(n)?;
        Ok(ctx_of(&c)?.stage.take(n).or_else(err)?.score)
    });
    let c = w.clone();
    engine.register_fn("replay", move |n: INT| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.replay(take_number(n)?, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("branch", move |n: INT, opts: Map| -> Res<Score> {
        let cancel = line_cancel();
        ctx_of(&c)?.stage.branch(take_number(n)?, &gen_opts(&opts)?, &cancel).or_else(|e| fail(e, &cancel))
    });
    let c = w.clone();
    engine.register_fn("save_take", move |n: INT, path: &str| -> Res<()> {
        let ctx = ctx_of(&c)?;
        let take = ctx.stage.take(take_number(n)?).or_else(err)?;
        ctx.stage.save(&take.score, path).or_else(err)
    });
}

/// A generating loop's options: `prompt`, `mode` ("variation" or "continue"), `every` (a new
/// cycle every N), and gen's options (`bars` default 4: a loop's cycle needs a length).
fn gen_loop(m: &Map) -> Res<super::loops::GenLoop> {
    use super::loops::{GenLoop, LoopMode};
    let prompt = match m.get("prompt") {
        None => None,
        Some(v) => Some(v.clone().try_cast::<Score>().map_or_else(|| err("loop: `prompt` must be a Score"), Ok)?),
    };
    let pause_bars = whole_in(m, "pause_bars", 1..=64, 1, "bars")? as u32;
    let mode = match m.get("mode").map(|v| v.to_string()).as_deref() {
        None | Some("variation") => LoopMode::Variation,
        Some("continue") => LoopMode::Continue,
        Some("answer") => LoopMode::Answer { pause_bars },
        Some(other) => return err(format!("loop: mode `{other}` must be \"continue\", \"variation\" or \"answer\"")),
    };
    let every = whole_in(m, "every", 1..=1024, 1, "cycles")? as u64;
    let mut rest = m.clone();
    for k in ["prompt", "mode", "every", "pause_bars"] {
        rest.remove(k);
    }
    let mut opts = gen_opts(&rest)?;
    if opts.form.is_some() || opts.notes.is_some() || opts.tokens.is_some() {
        return err("loop: a generating loop's cycle is `bars` long (default 4); form, notes and tokens do not apply");
    }
    opts.bars = Some(opts.bars.unwrap_or(4));
    Ok(GenLoop { prompt, mode, every, opts })
}

/// A loop option that must be a whole number in `range` (`default` when absent); `unit` names
/// what it counts in the error.
fn whole_in(m: &Map, key: &str, range: std::ops::RangeInclusive<INT>, default: INT, unit: &str) -> Res<INT> {
    match m.get(key) {
        None => Ok(default),
        Some(v) => match v.as_int() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => err(format!(
                "loop: `{key}` must be a whole number of {unit} {}..={}, not {v}",
                range.start(),
                range.end()
            )),
        },
    }
}

/// `turns` of a duet's options (default 4).
fn duet_turns(opts: &Map) -> Res<u32> {
    match opts.get("turns") {
        None => Ok(4),
        Some(v) => to_u32(v.as_int().or_else(|_| err("duet: `turns` must be a whole number"))?, "turns"),
    }
}

/// `m` without `key` (options one call reads itself before passing the rest to gen's parser).
fn without(m: &Map, key: &str) -> Map {
    let mut m = m.clone();
    m.remove(key);
    m
}

fn take_number(n: INT) -> Res<u64> {
    u64::try_from(n).ok().filter(|&n| n > 0).map_or_else(|| err(format!("take numbers start at 1, not {n}")), Ok)
}

/// The cancel flag of the code running on this thread (a fresh, never-raised one outside a run).
fn line_cancel() -> Arc<std::sync::atomic::AtomicBool> {
    super::guard::current_cancel().unwrap_or_default()
}

/// An error from a call that can be cancelled: a raised flag means Ctrl-C (or a stopped loop),
/// which the session reports as a cancellation rather than an error.
fn fail<T>(msg: impl std::fmt::Display, cancel: &std::sync::atomic::AtomicBool) -> Res<T> {
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(EvalAltResult::ErrorTerminated("cancelled".into(), rhai::Position::NONE).into());
    }
    err(msg)
}

/// Sleeps while the music plays; Ctrl-C ends the wait.
fn sleep_cancellable(ctx: &Ctx, seconds: f64) -> Res<()> {
    if !(seconds.is_finite() && seconds >= 0.0) {
        return err(format!("sleep: {seconds} seconds?"));
    }
    let cancel = line_cancel();
    ctx.stage.sleep(seconds, &cancel);
    if cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return fail(String::new(), &cancel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitch_names_round_trip() {
        assert_eq!(pitch_name(60), "C4");
        assert_eq!(pitch_name(69), "A4");
        assert_eq!(pitch_name(61), "C#4");
        assert_eq!(parse_pitch("A4"), Some(69));
        assert_eq!(parse_pitch("c4"), Some(60));
        assert_eq!(parse_pitch("Bb3"), Some(58));
        assert_eq!(parse_pitch("F#5"), Some(78));
        assert_eq!(parse_pitch("72"), Some(72));
        assert_eq!(parse_pitch("H2"), None);
        assert_eq!(parse_pitch("G9"), Some(127));
        assert_eq!(parse_pitch("A9"), None);
        for p in 0..=127u8 {
            assert_eq!(parse_pitch(&pitch_name(p)), Some(p));
        }
        // General MIDI numbering (program numbers from the GM 1 sound set, 0-based).
        assert_eq!(gm_program("violin"), Some(40));
        assert_eq!(gm_program("flute"), Some(73));
        assert_eq!(gm_program("acoustic grand piano"), Some(0));
        assert_eq!(gm_program("fiddle"), Some(110));
        assert_eq!(gm_program("gunshot"), Some(127));
        assert_eq!(gm_program("Tenor_Sax"), Some(66));
        assert_eq!(gm_program("grand"), Some(0));
        assert_eq!(gm_program("kazoo"), None);
    }
}
