//! Forms: a tune generated section by section (AABB, AABA, ABAC, QAQA'), each distinct section once.
//!
//! MusicVAE's idea of a hierarchical decoder, on top of ordinary generation jobs: a form names
//! its sections by letter (`AABB`); each new letter is generated once, for `part_bars` bars,
//! conditioned on everything before it (the prompt and the sections already made, which the
//! `tune` encoding shows the model folded into repeat signs, as it saw tunes in training); a
//! letter seen before is that section again, note for note; a primed letter (`A'`, `A''`) keeps
//! the first `keep_bars` of its letter's first section and generates the rest anew. With
//! `cadence`, every section must end on a note of the tonic or dominant chord and the last on the
//! tonic itself (a hard constraint, see [`Constraints::cadence`]), once the key is known: set by
//! the caller or the prompt, or sampled by the first section. A form ending in `*` (`AAB*`, the
//! bar form of a chorale) leaves its last section open: it runs until the model ends the tune.
//!
//! A model may carry a [`FormPrior`] (`"forms"` in `generation_config.json`): forms with weights,
//! one drawn per take from its seed when the caller asks for neither a form nor a length, as the
//! corpus has them (two in five Bach chorales repeat their first phrases).

use super::constraints::Constraints;
use super::generator::Generator;
use super::job::{Length, Request, TakeRecord};
use super::GenError;
use crate::score::{Note, Score};
use crate::time::Tick;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most sections a form may have.
pub const MAX_SECTIONS: usize = 32;
/// Most bars a section may have.
pub const MAX_PART_BARS: u32 = 64;

/// One section of a form: its letter and how many primes (`A''` = `A`, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    pub letter: char,
    pub primes: u8,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.letter, "'".repeat(self.primes as usize))
    }
}

/// A form and how to fill it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormSpec {
    pub sections: Vec<Section>,
    /// Bars of every section.
    pub part_bars: u32,
    /// Bars a primed section keeps from its letter's first section (the rest is new).
    pub keep_bars: u32,
    /// Sections end on a cadence (the last one on the tonic).
    pub cadence: bool,
    /// The last section has no length (`AAB*`): it ends where the model ends the tune.
    pub open_end: bool,
}

/// The form as written (`AAB*`, `QAQA'`), without its lengths.
impl std::fmt::Display for FormSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for s in &self.sections {
            write!(f, "{s}")?;
        }
        if self.open_end {
            write!(f, "*")?;
        }
        Ok(())
    }
}

impl FormSpec {
    /// Parses `AABB`, `AABA`, `ABAC`, `QAQA'`, `AAB*` (spaces and `-` ignored; `*` only last);
    /// `keep_bars` defaults to half a section.
    pub fn parse(form: &str, part_bars: u32) -> Result<FormSpec, GenError> {
        let bad = |why: String| GenError::Request(format!("form `{form}`: {why}"));
        if !(1..=MAX_PART_BARS).contains(&part_bars) {
            return Err(bad(format!("part_bars must be 1..={MAX_PART_BARS}, got {part_bars}")));
        }
        let mut sections: Vec<Section> = Vec::new();
        let mut open_end = false;
        for (i, c) in form.chars().enumerate() {
            if open_end && !matches!(c, ' ' | '-') {
                return Err(bad(format!("`*` ends a form: nothing may follow it (character {})", i + 1)));
            }
            match c {
                '*' if sections.is_empty() => return Err(bad("`*` needs a section before it".into())),
                '*' => open_end = true,
                'A'..='Z' => sections.push(Section { letter: c, primes: 0 }),
                '\'' => match sections.last_mut() {
                    Some(s) if s.primes < 3 => s.primes += 1,
                    Some(_) => return Err(bad(format!("at most three primes (character {})", i + 1))),
                    None => return Err(bad("a prime needs a letter before it".into())),
                },
                ' ' | '-' => {}
                other => {
                    return Err(bad(format!(
                    "`{other}` at character {} is not a section (capital letters, each optionally primed: AABA, QAQA')",
                    i + 1
                )))
                }
            }
        }
        if sections.is_empty() {
            return Err(bad("no sections".into()));
        }
        if sections.len() > MAX_SECTIONS {
            return Err(bad(format!("{} sections; at most {MAX_SECTIONS}", sections.len())));
        }
        Ok(FormSpec { sections, part_bars, keep_bars: part_bars / 2, cadence: true, open_end })
    }
}

/// One choice of a model's [`FormPrior`], as `generation_config.json` writes it:
/// `{"form": "AAB*", "part_bars": 4, "weight": 93}`; no `form` is a take without one.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormChoice {
    pub form: Option<String>,
    #[serde(default = "default_part_bars")]
    pub part_bars: u32,
    pub weight: f64,
}

fn default_part_bars() -> u32 {
    8
}

/// Forms a model's takes are drawn from when the caller gives neither a form nor a length.
#[derive(Debug, Clone, PartialEq)]
pub struct FormPrior {
    choices: Vec<(Option<FormSpec>, f64)>,
}

impl FormPrior {
    /// Checks every form and weight (finite, not negative, some positive).
    pub fn new(choices: &[FormChoice]) -> Result<FormPrior, GenError> {
        let mut out = Vec::with_capacity(choices.len());
        for c in choices {
            if !c.weight.is_finite() || c.weight < 0.0 {
                return Err(GenError::Request(format!("form weight {} must be a finite number ≥ 0", c.weight)));
            }
            let spec = c.form.as_deref().map(|f| FormSpec::parse(f, c.part_bars)).transpose()?;
            out.push((spec, c.weight));
        }
        if !out.iter().any(|(_, w)| *w > 0.0) {
            return Err(GenError::Request("forms: no choice has a positive weight".into()));
        }
        Ok(FormPrior { choices: out })
    }

    /// The form of the take with this seed (`None`: no form), in proportion to the weights; the
    /// same seed always draws the same.
    pub fn pick(&self, seed: u64) -> Option<&FormSpec> {
        use rand::{Rng, SeedableRng};
        // Its own stream: the take's tokens are drawn from `seed` itself.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x466F_726D_5072_696F);
        let total: f64 = self.choices.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0.0..total);
        for (spec, w) in &self.choices {
            if x < *w {
                return spec.as_ref();
            }
            x -= w;
        }
        self.choices.iter().rev().find(|(_, w)| *w > 0.0).and_then(|(s, _)| s.as_ref())
    }
}

/// How a section of the finished tune was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Generated anew (index into [`FormTake::records`]).
    Generated(usize),
    /// The earlier section at this index, again.
    Repeat(usize),
    /// The earlier section at this index for `kept` bars, then generated (index into records).
    Varied { of: usize, kept: u32, record: usize },
}

/// One section as placed in the tune.
#[derive(Debug, Clone, PartialEq)]
pub struct Placed {
    pub section: Section,
    /// First tick of the section in the tune.
    pub start: Tick,
    pub end: Tick,
    pub origin: Origin,
}

/// A finished form: the prompt and every section in playing order, how each was made, and the
/// record of every generation it took.
#[derive(Debug, Clone)]
pub struct FormTake {
    pub score: Score,
    /// Where the prompt ends and the form begins.
    pub start: Tick,
    pub sections: Vec<Placed>,
    pub records: Vec<TakeRecord>,
}

impl FormTake {
    /// The form's notes only (after the prompt), from tick `start`.
    pub fn notes(&self) -> Vec<Note> {
        self.score.notes.iter().filter(|n| n.start >= self.start).copied().collect()
    }
}

/// Pitch classes a section may end on: the tonic for the last, the notes of the tonic and
/// dominant chords otherwise.
fn cadence_classes(score: &Score, last: bool) -> Option<Vec<u8>> {
    if score.meta.keys.is_empty() {
        return None;
    }
    let key = score.key();
    let scale = key.mode.scale();
    let degree = |d: usize| (key.tonic_pc() + scale[d % 7]) % 12;
    let mut pcs: Vec<u8> = if last { vec![degree(0)] } else { [0, 2, 4, 1, 6].iter().map(|&d| degree(d)).collect() };
    pcs.sort_unstable();
    pcs.dedup();
    Some(pcs)
}

/// Generates `spec` after `base.prompt` with `base`'s settings; section `i` draws with seed
/// `base.seed + i`. `cancel` is checked between sections (and by each generation per token).
pub fn generate_form(
    gen: &Generator,
    base: &Request,
    spec: &FormSpec,
    cancel: &AtomicBool,
) -> Result<FormTake, GenError> {
    let mut so_far = base.conditioned_prompt();
    let bar = so_far.meter().bar_ticks().max(1);
    let start = so_far.length.div_ceil(bar) * bar;
    let mut sections: Vec<Placed> = Vec::with_capacity(spec.sections.len());
    let mut records = Vec::new();
    for (i, &section) in spec.sections.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(GenError::Cancelled);
        }
        let last = i + 1 == spec.sections.len();
        // The meter may have been sampled by the first section: bars are counted in it.
        let bar = so_far.meter().bar_ticks().max(1);
        let here = so_far.length.div_ceil(bar) * bar;
        let same = sections.iter().position(|p| p.section == section);
        let first_of_letter = sections.iter().position(|p| p.section.letter == section.letter);
        if let Some(j) = same {
            // Exactly the same section again.
            let src = &sections[j];
            let len = src.end - src.start;
            let copies: Vec<Note> = so_far
                .notes
                .iter()
                .filter(|n| n.start >= src.start && n.start < src.end)
                .map(|n| Note { start: n.start - src.start + here, ..*n })
                .collect();
            so_far.notes.extend(copies);
            so_far.length = here + len;
            so_far.normalize();
            sections.push(Placed { section, start: here, end: here + len, origin: Origin::Repeat(j) });
            continue;
        }
        let (kept, of) = match first_of_letter {
            Some(j) if section.primes > 0 => (spec.keep_bars.min(spec.part_bars - 1), Some(j)),
            _ => (0, None),
        };
        let mut prompt = so_far.clone();
        if let Some(j) = of {
            let src = &sections[j];
            let keep_end = (src.start + kept as Tick * bar).min(src.end);
            let copies: Vec<Note> = so_far
                .notes
                .iter()
                .filter(|n| n.start >= src.start && n.start < keep_end)
                // A note held across the cut ends there: the new bars start on the bar line.
                .map(|n| Note { start: n.start - src.start + here, dur: n.end().min(keep_end) - n.start, ..*n })
                .collect();
            prompt.notes.extend(copies);
            prompt.length = here + (keep_end - src.start);
            prompt.normalize();
        }
        let mut request = base.clone();
        request.prompt = prompt;
        // The form's prompt already carries the overrides (and, after the first section, the
        // sampled key and meter).
        request.overrides = Default::default();
        request.length = if last && spec.open_end { Length::Tune } else { Length::Bars(spec.part_bars - kept) };
        request.seed = base.seed.wrapping_add(i as u64);
        request.constraints = Constraints {
            cadence: if spec.cadence { cadence_classes(&request.prompt, last) } else { None },
            ..base.constraints.clone()
        };
        let take = gen.generate_cancellable(&request, cancel)?;
        if take.record.cancelled {
            return Err(GenError::Cancelled);
        }
        records.push(take.record.clone());
        let end = take.score.length;
        so_far = take.score;
        let origin = match of {
            Some(j) => Origin::Varied { of: j, kept, record: records.len() - 1 },
            None => Origin::Generated(records.len() - 1),
        };
        sections.push(Placed { section, start: here, end, origin });
    }
    Ok(FormTake { score: so_far, start, sections, records })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_with_primes_and_refuse_nonsense() {
        let f = FormSpec::parse("QAQA'", 4).unwrap();
        let names: Vec<String> = f.sections.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["Q", "A", "Q", "A'"]);
        assert_eq!(f.keep_bars, 2);
        assert!(FormSpec::parse("A-A-B-B", 8).is_ok());
        for (bad, why) in [
            ("", "no sections"),
            ("'A", "a prime needs a letter"),
            ("AaB", "`a` at character 2"),
            ("A''''", "at most three primes"),
        ] {
            let e = FormSpec::parse(bad, 8).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(FormSpec::parse("AB", 0).is_err());
        assert!(FormSpec::parse("AB", MAX_PART_BARS + 1).is_err());
        assert!(FormSpec::parse(&"A".repeat(MAX_SECTIONS + 1), 4).is_err());
        let bar_form = FormSpec::parse("AAB*", 4).unwrap();
        assert!(bar_form.open_end && bar_form.sections.len() == 3);
        assert_eq!(bar_form.to_string(), "AAB*");
        assert_eq!(FormSpec::parse("Q-A Q-A'", 4).unwrap().to_string(), "QAQA'");
        assert!(!FormSpec::parse("AAB", 4).unwrap().open_end);
        for (bad, why) in [("*", "needs a section"), ("A*B", "nothing may follow"), ("AB**", "nothing may follow")] {
            let e = FormSpec::parse(bad, 4).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn a_form_prior_draws_in_proportion_to_its_weights_and_the_same_for_a_seed() {
        let choice =
            |form: Option<&str>, weight: f64| FormChoice { form: form.map(str::to_string), part_bars: 4, weight };
        let prior = FormPrior::new(&[choice(Some("AAB*"), 2.0), choice(None, 3.0), choice(Some("AB"), 0.0)]).unwrap();
        let n = 10_000u64;
        let formed = (0..n).filter(|&s| prior.pick(s).is_some()).count() as f64 / n as f64;
        assert!((formed - 0.4).abs() < 0.02, "{formed}");
        assert!((0..n).all(|s| prior.pick(s).is_none_or(|f| f.open_end)), "a zero weight is never drawn");
        assert!((0..100).all(|s| prior.pick(s) == prior.pick(s)));
        for bad in [vec![choice(None, 0.0)], vec![choice(None, -1.0)], vec![choice(Some("a"), 1.0)], vec![]] {
            assert!(FormPrior::new(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cadences_are_the_tonic_last_and_tonic_or_dominant_chord_before() {
        let mut s = Score::new();
        assert_eq!(cadence_classes(&s, true), None, "no key yet: no cadence");
        s.meta.keys.push((0, crate::score::Key::new(1, 0, crate::score::Mode::Major)));
        assert_eq!(cadence_classes(&s, true), Some(vec![2]));
        // D major: D F# A (tonic chord), A C# E (dominant chord).
        assert_eq!(cadence_classes(&s, false), Some(vec![1, 2, 4, 6, 9]));
        s.meta.keys[0].1 = crate::score::Key::new(5, 0, crate::score::Mode::Minor);
        assert_eq!(cadence_classes(&s, true), Some(vec![9]));
    }
}
