//! `cadenza convert IN OUT [--tune X]`: converts between ABC, MIDI and MusicXML by file extension.
//!
//! In: `.abc` (tune `--tune X`, else the first; repeats and endings expanded in playing order,
//! tempo from `Q:` or 120 bpm), `.mid`/`.midi`, `.xml`/`.musicxml`/`.mxl`. Out: `.mid`/`.midi`
//! (format 1, one track per voice) or `.abc`. Writing ABC from performed MIDI first snaps notes
//! to the coarsest grid that fits the onsets (see [`pick_grid`]); meter and key come from the
//! file's time and key signatures, or the key is guessed from the notes when the file has none.

use crate::score::{Key, Mode, Score};
use crate::sink::files::Kind;
use crate::sink::{abc, midi_file};
use crate::time::{Tick, PPQ};
use anyhow::bail;
use std::path::{Path, PathBuf};

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Input file: .abc, .mid/.midi, .xml/.musicxml/.mxl.
    pub input: PathBuf,
    /// Output file: .mid/.midi or .abc.
    pub output: PathBuf,
    /// For ABC input: the tune to convert, by its `X:` number (default: the first tune).
    #[arg(long)]
    pub tune: Option<u32>,
    /// Write even over the input file, or over an existing file of another kind.
    #[arg(long)]
    pub force: bool,
    /// For ABC input: skip what does not parse inside a music line (damaged collections), as
    /// abc2midi does, and say what was skipped; without it the first error stops the convert.
    #[arg(long)]
    pub lenient: bool,
    /// For ABC input: play trills (`T`) and rolls (`~`) as abc2midi does instead of keeping the
    /// written note.
    #[arg(long)]
    pub ornaments: bool,
}

/// Refuses an output that would destroy something: the input itself (a 20,000-tune file
/// overwritten with one tune), or an existing file whose content is not the kind we would write.
fn check_output(args: &Args) -> anyhow::Result<()> {
    if args.force || !args.output.exists() {
        return Ok(());
    }
    let same = match (args.input.canonicalize(), args.output.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!("{}: that is the input file; writing it would lose it (--force to do it anyway)", args.output.display());
    }
    let mut head = [0u8; 4];
    let is_midi = std::fs::File::open(&args.output)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map(|_| &head == b"MThd")
        .unwrap_or(false);
    let writing_midi = Kind::of(&args.output) == Some(Kind::Midi);
    if is_midi != writing_midi {
        let what = if is_midi { "a MIDI file" } else { "not a MIDI file" };
        bail!(
            "{}: it exists and is {what}; refusing to write over it (--force to do it anyway)",
            args.output.display()
        );
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    check_output(&args)?;
    let is_abc = Kind::of(&args.input) == Some(Kind::Abc);
    let score = if (args.lenient || args.ornaments) && is_abc {
        let options = crate::dsl::ReadOptions { lenient: args.lenient, ornaments: args.ornaments };
        let (score, skipped) = abc::read_with(&args.input, args.tune, options)?;
        if let Some(first) = skipped.first() {
            eprintln!(
                "{}: skipped {} place(s) that are not ABC; the first:\n{first}",
                args.input.display(),
                skipped.len()
            );
        }
        score
    } else {
        load(&args.input, args.tune)?
    };
    if score.notes.is_empty() {
        bail!("{}: no notes to convert (an empty or header-only tune)", args.input.display());
    }
    // ABC in is notation already, exact to the tick: printing it again must not move a note
    // (a take's `f/3 e8/3` was snapped to `[e-f]` once 99% of its notes sat on the grid).
    if is_abc && Kind::of(&args.output) == Some(Kind::Abc) {
        abc::write(&score, &args.output)?;
    } else {
        save(&score, &args.output)?;
    }
    eprintln!(
        "{} → {}: {} notes, {} voices, {:.1} beats",
        args.input.display(),
        args.output.display(),
        score.notes.len(),
        score.voices.len().max(1),
        score.beats()
    );
    Ok(())
}

/// Reads any input kind into a score.
pub fn load(path: &Path, tune: Option<u32>) -> anyhow::Result<Score> {
    Ok(crate::sink::files::read(path, tune)?)
}

/// Writes a score as the kind the output's extension names.
pub fn save(score: &Score, path: &Path) -> anyhow::Result<()> {
    match Kind::of(path) {
        Some(Kind::Midi) => midi_file::write(score, path)?,
        Some(Kind::Abc) => abc::write(&for_abc(score), path)?,
        _ => bail!("{}: unknown output type (expected .mid, .midi or .abc)", path.display()),
    }
    Ok(())
}

/// Prepares a score read from a performance (MIDI, MusicXML) for printing as ABC: snaps it to a
/// grid and fills in a key when the file gave none. A score already on its grid is unchanged.
pub fn for_abc(score: &Score) -> Score {
    let grid = pick_grid(score);
    // Only jitter is snapped: a time further from the grid than a performance's slop is meant
    // (a tuplet, an odd length) and stays where it is.
    let snap = |t: Tick| {
        let g = grid.snap(t);
        if g.abs_diff(t) <= SNAP_TOLERANCE {
            g
        } else {
            t
        }
    };
    let mut s = score.clone();
    for n in &mut s.notes {
        let start = snap(n.start);
        // A note the snap would shrink to nothing gets the grid's finest step.
        let end = snap(n.end());
        let end = if end > start { end } else { start + grid.finest() };
        n.start = start;
        n.dur = end - start;
    }
    s.length = snap(s.length);
    s.normalize();
    if s.meta.keys.is_empty() && !s.notes.is_empty() {
        s.meta.keys.push((0, guess_key(&s)));
    }
    s
}

/// A quantization grid: multiples of a binary step, optionally together with multiples of a
/// triplet step (so straight sixteenths and triplet eighths can share a tune).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub step: Tick,
    pub triplet: Option<Tick>,
}

impl Grid {
    /// The nearest grid point (the binary one on a tie).
    pub fn snap(&self, t: Tick) -> Tick {
        let near = |g: Tick| {
            let down = t / g * g;
            if t - down <= down + g - t {
                down
            } else {
                down + g
            }
        };
        let a = near(self.step);
        match self.triplet {
            Some(g) => {
                let b = near(g);
                if b.abs_diff(t) < a.abs_diff(t) {
                    b
                } else {
                    a
                }
            }
            None => a,
        }
    }

    fn finest(&self) -> Tick {
        self.triplet.map_or(self.step, |g| g.min(self.step))
    }
}

/// How far from a grid point a performed time may be and still count as meant for it.
pub const SNAP_TOLERANCE: Tick = PPQ as Tick / 48;

/// Grids tried, coarsest first, in ticks at 480 per quarter: quarter, eighth, eighth or triplet
/// eighth, sixteenth, sixteenth or triplet eighth, sixteenth or triplet sixteenth, 32nd ...
const GRIDS: [(Tick, Option<Tick>); 10] = [
    (480, None),
    (240, None),
    (240, Some(160)),
    (120, None),
    (120, Some(160)),
    (120, Some(80)),
    (60, None),
    (60, Some(80)),
    (60, Some(40)),
    (30, Some(40)),
];

/// The coarsest grid on which (nearly) every onset and end already lies: at least 99% of them
/// within 1/48 of a quarter (10 ticks). Notes from notation (ABC, MusicXML, our own MIDI) land
/// exactly; performed MIDI lands near. The finest grid is the fallback.
pub fn pick_grid(score: &Score) -> Grid {
    let tol = SNAP_TOLERANCE;
    let times: Vec<Tick> = score.notes.iter().flat_map(|n| [n.start, n.end()]).collect();
    let grids = GRIDS.map(|(step, triplet)| Grid { step, triplet });
    if times.is_empty() {
        return grids[1];
    }
    for g in grids {
        let near = times.iter().filter(|&&t| g.snap(t).abs_diff(t) <= tol).count();
        if near * 100 >= times.len() * 99 {
            return g;
        }
    }
    grids[grids.len() - 1]
}

/// The major or minor key whose scale holds the most sounding time (drums left out); minor
/// when the last note is the relative minor's tonic. Fewer accidentals win ties.
pub fn guess_key(score: &Score) -> Key {
    let mut weight = [0u64; 12];
    for n in score.notes.iter().filter(|n| n.channel != 9) {
        weight[n.pitch as usize % 12] += n.dur.max(1);
    }
    let mut best = (0u64, 0i32);
    for fifths in [0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6] {
        let key = Key::from_fifths(fifths, false);
        let w: u64 = key.pitch_classes().iter().map(|&pc| weight[pc as usize]).sum();
        if w > best.0 {
            best = (w, fifths);
        }
    }
    let major = Key::from_fifths(best.1, false);
    let minor = Key::from_fifths(best.1, true);
    let last = score.notes.iter().filter(|n| n.channel != 9).max_by_key(|n| (n.end(), n.start));
    match last {
        Some(n) if n.pitch % 12 == minor.tonic_pc() && minor.mode == Mode::Minor => minor,
        _ => major,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Note;

    #[test]
    fn grid_follows_the_onsets() {
        let g = |step, triplet| Grid { step, triplet };
        let mut s = Score::new();
        s.notes = (0..8).map(|i| Note::new(i * 240, 240, 60)).collect();
        assert_eq!(pick_grid(&s), g(240, None));
        // Triplet eighths among straight eighths: both grids at once, and they survive.
        for (i, p) in [62u8, 64, 65].iter().enumerate() {
            s.notes.push(Note::new(1920 + i as Tick * 160, 160, *p));
        }
        assert_eq!(pick_grid(&s), g(240, Some(160)));
        assert_eq!(for_abc(&s).notes, {
            let mut n = s.notes.clone();
            n.sort();
            n
        });
        // Performed timing (up to 7 ticks off, notes 7 short) still finds sixteenths.
        let mut p = Score::new();
        p.notes = (0..16).map(|i| Note::new(i * 120 + [0, 7, 3, 5][i as usize % 4], 113, 60)).collect();
        assert_eq!(pick_grid(&p), g(120, None));
        let q = for_abc(&p);
        assert!(q.notes.iter().all(|n| n.start % 120 == 0 && n.dur == 120), "{:?}", q.notes);
    }

    #[test]
    fn key_guess_finds_d_major_and_e_minor() {
        let mut s = Score::new();
        let d_major = [62u8, 64, 66, 67, 69, 71, 73, 74];
        s.notes = d_major.iter().enumerate().map(|(i, &p)| Note::new(i as Tick * 240, 240, p)).collect();
        assert_eq!(guess_key(&s).to_string(), "D");
        let e_minor = [64u8, 66, 67, 69, 71, 72, 74, 76, 64];
        s.notes = e_minor.iter().enumerate().map(|(i, &p)| Note::new(i as Tick * 240, 240, p)).collect();
        assert_eq!(guess_key(&s).to_string(), "Em");
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    fn args(input: &Path, output: &Path, force: bool) -> Args {
        Args {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
            tune: None,
            force,
            lenient: false,
            ornaments: false,
        }
    }

    /// Regression: `convert many.abc many.abc --tune 3` overwrote a 20,000-tune file with one
    /// tune; a header-only file wrote an empty MIDI file with exit code 0.
    #[test]
    fn convert_refuses_to_overwrite_its_input_or_another_kind_and_empty_tunes() {
        let dir = tempfile::tempdir().unwrap();
        let abc_path = dir.path().join("many.abc");
        std::fs::write(&abc_path, "X:1\nK:G\nGABc|\nX:3\nK:D\nDFAd|\n").unwrap();
        let e = run(Args { tune: Some(3), ..args(&abc_path, &abc_path, false) }).unwrap_err().to_string();
        assert!(e.contains("input file"), "{e}");
        assert!(std::fs::read_to_string(&abc_path).unwrap().contains("X:1"), "the input is intact");
        // A MIDI file under an .abc name, and text under a .mid name, are not written over.
        let midi = dir.path().join("take.mid");
        run(args(&abc_path, &midi, false)).unwrap();
        let disguised = dir.path().join("really-midi.abc");
        std::fs::copy(&midi, &disguised).unwrap();
        let e = run(args(&abc_path, &disguised, false)).unwrap_err().to_string();
        assert!(e.contains("is a MIDI file"), "{e}");
        let text = dir.path().join("notes.mid");
        std::fs::write(&text, "my notes").unwrap();
        assert!(run(args(&abc_path, &text, false)).unwrap_err().to_string().contains("not a MIDI file"));
        run(args(&abc_path, &text, true)).unwrap();
        // The same kind is rewritten as before.
        run(args(&abc_path, &midi, false)).unwrap();
        let header = dir.path().join("header.abc");
        std::fs::write(&header, "X:1\nT:Only a header\nK:G\n").unwrap();
        let e = run(args(&header, &dir.path().join("h.mid"), false)).unwrap_err().to_string();
        assert!(e.contains("no notes"), "{e}");
        assert!(!dir.path().join("h.mid").exists());
    }
}
