//! Per-tune features: the numbers whose distributions `cadenza eval` compares between sets.
//!
//! Melodic features read the top voice only (the highest-pitched voice, one note per onset), so
//! a chorale and a fiddle tune are measured on what a listener follows as the tune. Chorale
//! features (voice ranges, parallels, chords) need at least three voices and are absent
//! (`None`) otherwise; a feature absent from one of two sets is left out of their comparison.

use crate::score::{Note, Score};
use crate::time::{Tick, PPQ};
use std::collections::{HashMap, HashSet};

/// Which part of the comparison a feature belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// Pitch, rhythm and form of the top voice: the headline features.
    Melody,
    /// Only for scores with three or more voices.
    Chorale,
    /// Size of the tune. Left out of the headline mean and the classifier by default: a model
    /// asked for 16 bars is told how long to be, so length says more about the request than the
    /// music (`--with-length` puts them back).
    Length,
}

/// A feature's name, group, and what it measures (printed in `--json` and the README).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct FeatureDef {
    pub name: &'static str,
    pub group: Group,
    pub doc: &'static str,
}

const fn def(name: &'static str, group: Group, doc: &'static str) -> FeatureDef {
    FeatureDef { name, group, doc }
}

use Group::{Chorale, Length, Melody};

/// Every feature, in the order [`features`] returns them.
pub const FEATURES: &[FeatureDef] = &[
    def("pch_0", Melody, "share of notes on the tonic of the best-fitting key (Krumhansl-Kessler)"),
    def("pch_1", Melody, "share of notes 1 semitone above the tonic"),
    def("pch_2", Melody, "share of notes 2 semitones above the tonic"),
    def("pch_3", Melody, "share of notes 3 semitones above the tonic"),
    def("pch_4", Melody, "share of notes 4 semitones above the tonic"),
    def("pch_5", Melody, "share of notes 5 semitones above the tonic"),
    def("pch_6", Melody, "share of notes 6 semitones above the tonic"),
    def("pch_7", Melody, "share of notes 7 semitones above the tonic"),
    def("pch_8", Melody, "share of notes 8 semitones above the tonic"),
    def("pch_9", Melody, "share of notes 9 semitones above the tonic"),
    def("pch_10", Melody, "share of notes 10 semitones above the tonic"),
    def("pch_11", Melody, "share of notes 11 semitones above the tonic"),
    def("pc_entropy", Melody, "entropy of the pitch-class histogram, bits (0..log2 12)"),
    def("key_consistency", Melody, "share of notes in the scale of the best-fitting major/natural minor key"),
    def("pitch_range", Melody, "highest minus lowest pitch, semitones"),
    def("pitch_count", Melody, "distinct pitches used"),
    def("interval_mean", Melody, "mean absolute interval between consecutive notes, semitones"),
    def("leap_share", Melody, "share of intervals larger than 4 semitones"),
    def("step_share", Melody, "share of intervals of 1 or 2 semitones"),
    def("repeat_share", Melody, "share of repeated pitches (interval 0)"),
    def("dur_16th", Melody, "share of notes a sixteenth or shorter"),
    def("dur_8th", Melody, "share of eighth notes"),
    def("dur_quarter", Melody, "share of quarter notes"),
    def("dur_dotted", Melody, "share of dotted sixteenth, eighth, quarter or half notes"),
    def("dur_long", Melody, "share of other notes longer than a quarter"),
    def("dur_other", Melody, "share of other durations (triplets, odd ties)"),
    def("onset_downbeat", Melody, "share of onsets on the first beat of a bar"),
    def("onset_beat", Melody, "share of onsets on another beat (dotted quarters in compound meters)"),
    def("onset_eighth", Melody, "share of onsets on an eighth between beats"),
    def("onset_other", Melody, "share of onsets elsewhere (sixteenths, triplets)"),
    def("notes_per_bar", Melody, "notes per bar, from the first bar with a note to the last"),
    def("repeat_1bar", Melody, "share of 1-bar segments that occur earlier in the tune (same notes, same places)"),
    def("repeat_2bar", Melody, "share of 2-bar segments (starting on every bar) that occur earlier"),
    def("repeat_4bar", Melody, "share of 4-bar segments (starting on every bar) that occur earlier"),
    def(
        "bar_similarity",
        Melody,
        "mean over bars of the best Jaccard match of its (onset, pitch) set with another bar",
    ),
    def("final_tonic", Melody, "1 if the last note of the melody is on the tonic of the best-fitting key"),
    def("voice_range_1", Chorale, "range of the highest voice, semitones"),
    def("voice_range_2", Chorale, "range of the second voice from the top"),
    def("voice_range_3", Chorale, "range of the third voice from the top"),
    def("voice_range_4", Chorale, "range of the fourth voice from the top"),
    def("parallel_fifths", Chorale, "parallel fifths per 100 voice-pair moves"),
    def("parallel_octaves", Chorale, "parallel octaves and unisons per 100 voice-pair moves"),
    def("chord_vocab", Chorale, "distinct pitch-class sets sounding at onsets"),
    def(
        "final_chord",
        Chorale,
        "1 if the chord at the last onset has every voice, its top on the bass's pitch class and only a consonant triad above the bass",
    ),
    def("n_bars", Length, "bars, from the first with a note to the last"),
    def("n_notes", Length, "notes of the top voice"),
    def("duration_quarters", Length, "quarters from the first onset to the last note's end"),
];

/// One value per [`FEATURES`] entry; `None` where the feature does not apply.
pub type Features = Vec<Option<f64>>;

/// Bars beyond this many are not compared pairwise for `bar_similarity` (it is quadratic);
/// folk tunes have 16 to 64 and a chorale under 30, so only very long takes are cut.
const MAX_SIMILARITY_BARS: usize = 512;

/// Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor.
const KK_MAJOR: [f64; 12] = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88];
const KK_MINOR: [f64; 12] = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17];
const MAJOR_SCALE: [u8; 7] = [0, 2, 4, 5, 7, 9, 11];
const MINOR_SCALE: [u8; 7] = [0, 2, 3, 5, 7, 8, 10];

/// The tune as one line of notes: the top voice's notes in time order, one per onset, each cut
/// where the next begins (so durations are what is heard of the melody).
pub fn melody(score: &Score) -> Vec<Note> {
    let pitched: Vec<&Note> = score.notes.iter().filter(|n| n.channel != 9).collect();
    let voices = voice_order(&pitched);
    let top = voices.first().copied();
    let mut line: Vec<Note> = pitched.into_iter().filter(|n| Some(n.voice) == top).copied().collect();
    // Highest pitch first within an onset, then keep the first of each onset (the skyline).
    line.sort_by_key(|n| (n.start, std::cmp::Reverse(n.pitch)));
    line.dedup_by_key(|n| n.start);
    for i in 1..line.len() {
        let next = line[i].start;
        let prev = &mut line[i - 1];
        if prev.end() > next {
            prev.dur = next - prev.start;
        }
    }
    line
}

/// Voices that have notes, highest mean pitch first.
fn voice_order(pitched: &[&Note]) -> Vec<u8> {
    let mut sums: HashMap<u8, (u64, u64)> = HashMap::new();
    for n in pitched {
        let e = sums.entry(n.voice).or_default();
        e.0 += n.pitch as u64;
        e.1 += 1;
    }
    let mut v: Vec<(u8, f64)> = sums.into_iter().map(|(v, (s, c))| (v, s as f64 / c as f64)).collect();
    // Ties (same mean) by voice number, so the order never depends on hashing.
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(v, _)| v).collect()
}

/// The note sequence as tokens for n-gram matching: one per note after the first, the
/// interval from the previous note (semitones) and the note's duration (ticks) packed in a
/// `u64`. Intervals make a transposed copy count as a copy.
pub fn tokens(melody: &[Note]) -> Vec<u64> {
    melody.windows(2).map(|w| token(w[1].pitch as i32 - w[0].pitch as i32, w[1].dur)).collect()
}

/// Packs (interval, duration) into one token.
pub fn token(interval: i32, dur: Tick) -> u64 {
    (((interval + 256) as u64) << 32) | dur.min(u32::MAX as Tick)
}

/// Unpacks a token made by [`token`].
pub fn untoken(t: u64) -> (i32, Tick) {
    ((t >> 32) as i32 - 256, t & 0xffff_ffff)
}

/// Computes every feature of one score (see [`FEATURES`] for their meaning and order).
pub fn features(score: &Score) -> Features {
    // Bar positions as the corpus has them: a pickup moved to the end of a silent first bar
    // (see Score::align_pickup), so a pickup note is not taken for a downbeat.
    let aligned;
    let score = if score.meta.pickup > 0 {
        aligned = score.align_pickup();
        &aligned
    } else {
        score
    };
    let mel = melody(score);
    let mut out: Vec<Option<f64>> = Vec::with_capacity(FEATURES.len());
    let n = mel.len();
    let share = |count: usize, of: usize| if of == 0 { None } else { Some(count as f64 / of as f64) };

    // Pitch classes, relative to the tonic of the best-fitting key.
    let mut counts = [0usize; 12];
    let mut weights = [0f64; 12];
    for note in &mel {
        counts[note.pitch as usize % 12] += 1;
        weights[note.pitch as usize % 12] += note.dur.max(1) as f64;
    }
    let (tonic, minor) = best_key(&weights);
    for i in 0..12 {
        out.push(share(counts[(tonic + i) % 12], n));
    }
    out.push(if n == 0 {
        None
    } else {
        Some(
            -counts
                .iter()
                .filter(|&&c| c > 0)
                .map(|&c| c as f64 / n as f64 * (c as f64 / n as f64).log2())
                .sum::<f64>(),
        )
    });
    let scale = if minor { MINOR_SCALE } else { MAJOR_SCALE };
    out.push(share(scale.iter().map(|&d| counts[(tonic + d as usize) % 12]).sum(), n));
    let lo = mel.iter().map(|x| x.pitch).min();
    let hi = mel.iter().map(|x| x.pitch).max();
    out.push(lo.zip(hi).map(|(l, h)| (h - l) as f64));
    out.push(if n == 0 { None } else { Some(mel.iter().map(|x| x.pitch).collect::<HashSet<_>>().len() as f64) });

    // Intervals between consecutive notes of the melody.
    let iv: Vec<i32> = mel.windows(2).map(|w| (w[1].pitch as i32 - w[0].pitch as i32).abs()).collect();
    out.push(if iv.is_empty() { None } else { Some(iv.iter().sum::<i32>() as f64 / iv.len() as f64) });
    out.push(share(iv.iter().filter(|&&i| i > 4).count(), iv.len()));
    out.push(share(iv.iter().filter(|&&i| i == 1 || i == 2).count(), iv.len()));
    out.push(share(iv.iter().filter(|&&i| i == 0).count(), iv.len()));

    // Durations, in ticks at PPQ per quarter.
    let q = PPQ as Tick;
    let dotted = [q * 3 / 8, q * 3 / 4, q * 3 / 2, q * 3];
    let bins = [
        mel.iter().filter(|x| x.dur <= q / 4).count(),
        mel.iter().filter(|x| x.dur == q / 2).count(),
        mel.iter().filter(|x| x.dur == q).count(),
        mel.iter().filter(|x| dotted.contains(&x.dur)).count(),
        mel.iter().filter(|x| x.dur > q && !dotted.contains(&x.dur)).count(),
    ];
    for b in bins {
        out.push(share(b, n));
    }
    out.push(share(n - bins.iter().sum::<usize>(), n));

    // Where the onsets fall in their bar, and the bars themselves.
    let bars = Bars::of(score, &mel);
    let mut onset = [0usize; 4];
    for (i, note) in mel.iter().enumerate() {
        let pos = note.start - bars.start_of(bars.index[i]);
        let meter = score.meter_at(bars.start_of(bars.index[i]));
        let beat = if meter.is_compound() { 3 * meter.beat_ticks() } else { meter.beat_ticks() }.max(1);
        let slot = if pos == 0 {
            0
        } else if pos.is_multiple_of(beat) {
            1
        } else if pos.is_multiple_of(q / 2) {
            2
        } else {
            3
        };
        onset[slot] += 1;
    }
    for o in onset {
        out.push(share(o, n));
    }
    let n_bars = bars.count();
    out.push(if n_bars == 0 { None } else { Some(n as f64 / n_bars as f64) });
    let contents = bars.contents(&mel);
    for k in [1, 2, 4] {
        out.push(repetition(&contents, k));
    }
    out.push(bar_similarity(&contents));
    // How the tune closes: most folk tunes and chorale melodies end on the tonic (O'Neill's
    // Irish tunes 82%, Essen's German songs 73%, by the K: line's tonic).
    out.push(mel.last().map(|last| if last.pitch as usize % 12 == tonic { 1.0 } else { 0.0 }));

    // Chorale features: three or more voices.
    let pitched: Vec<&Note> = score.notes.iter().filter(|x| x.channel != 9).collect();
    let voices = voice_order(&pitched);
    let chorale = voices.len() >= 3;
    for v in 0..4 {
        let range = voices.get(v).filter(|_| chorale).map(|&voice| {
            let ps = pitched.iter().filter(|x| x.voice == voice).map(|x| x.pitch);
            (ps.clone().max().unwrap_or(0) - ps.min().unwrap_or(0)) as f64
        });
        out.push(range);
    }
    let h = if chorale { Some(harmony(&pitched, &voices)) } else { None };
    out.push(h.as_ref().and_then(|h| h.fifths));
    out.push(h.as_ref().and_then(|h| h.octaves));
    out.push(h.as_ref().map(|h| h.chords));
    out.push(h.as_ref().map(|h| if h.final_chord_closes { 1.0 } else { 0.0 }));

    // Length.
    out.push(if n_bars == 0 { None } else { Some(n_bars as f64) });
    out.push(Some(n as f64));
    out.push(match (mel.first(), mel.iter().map(Note::end).max()) {
        (Some(f), Some(end)) => Some((end - f.start) as f64 / q as f64),
        _ => None,
    });
    debug_assert_eq!(out.len(), FEATURES.len());
    out
}

/// Krumhansl-Schmuckler key finding: the (tonic pitch class, minor) whose profile correlates
/// best with the duration-weighted pitch-class histogram. C major for an empty histogram.
pub fn best_key(weights: &[f64; 12]) -> (usize, bool) {
    let mut best = (f64::NEG_INFINITY, 0, false);
    for minor in [false, true] {
        let profile = if minor { KK_MINOR } else { KK_MAJOR };
        for tonic in 0..12 {
            let rotated: Vec<f64> = (0..12).map(|i| profile[(i + 12 - tonic) % 12]).collect();
            let r = pearson(weights, &rotated);
            if r > best.0 {
                best = (r, tonic, minor);
            }
        }
    }
    (best.1, best.2)
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        return 0.0;
    }
    cov / (va * vb).sqrt()
}

/// One bar's melody notes as (onset in the bar, pitch, duration).
type BarNotes = Vec<(Tick, u8, Tick)>;

/// The bars a melody spans: bar start ticks and each note's bar.
struct Bars {
    starts: Vec<Tick>,
    /// Bar index (into `starts`) of each melody note.
    index: Vec<usize>,
    first: usize,
    last: usize,
}

impl Bars {
    fn of(score: &Score, mel: &[Note]) -> Bars {
        let mut starts = score.bar_starts();
        if starts.is_empty() {
            starts.push(0);
        }
        // Past the score's length (a score whose length was not fixed) bars go on at the meter.
        if let Some(end) = mel.iter().map(|x| x.start).max() {
            let bar = score.meter_at(*starts.last().unwrap_or(&0)).bar_ticks().max(1);
            while *starts.last().unwrap_or(&0) + bar <= end {
                let next = starts.last().unwrap_or(&0) + bar;
                starts.push(next);
            }
        }
        let index: Vec<usize> =
            mel.iter().map(|x| starts.partition_point(|&s| s <= x.start).saturating_sub(1)).collect();
        // Training tunes carry a silent lead bar (see Score::align_pickup): count bars from the
        // first that has a note, so a lead bar changes no feature.
        let first = index.first().copied().unwrap_or(0);
        let last = index.last().copied().unwrap_or(0);
        Bars { starts, index, first, last }
    }

    fn start_of(&self, bar: usize) -> Tick {
        self.starts[bar]
    }

    fn count(&self) -> usize {
        if self.index.is_empty() {
            0
        } else {
            self.last - self.first + 1
        }
    }

    /// Each bar's notes as (onset in the bar, pitch, duration), first bar with a note to last.
    fn contents(&self, mel: &[Note]) -> Vec<BarNotes> {
        let mut out = vec![Vec::new(); self.count()];
        for (note, &bar) in mel.iter().zip(&self.index) {
            out[bar - self.first].push((note.start - self.starts[bar], note.pitch, note.dur));
        }
        out
    }
}

/// Share of `k`-bar segments (one starting on each bar, empty ones skipped) whose notes occur
/// earlier in the tune as a segment of the same length: the tune's literal repetition.
fn repetition(bars: &[BarNotes], k: usize) -> Option<f64> {
    if bars.len() < k {
        return None;
    }
    let mut seen: HashSet<&[BarNotes]> = HashSet::new();
    let (mut total, mut repeated) = (0usize, 0usize);
    for seg in bars.windows(k) {
        if seg.iter().all(|b| b.is_empty()) {
            continue;
        }
        total += 1;
        if !seen.insert(seg) {
            repeated += 1;
        }
    }
    if total == 0 {
        None
    } else {
        Some(repeated as f64 / total as f64)
    }
}

/// Mean over non-empty bars of the best Jaccard similarity of the bar's (onset, pitch) set with
/// any other non-empty bar: 1 when every bar has an exact twin, near 0 for through-composed music.
fn bar_similarity(bars: &[BarNotes]) -> Option<f64> {
    let sets: Vec<HashSet<(Tick, u8)>> = bars
        .iter()
        .filter(|b| !b.is_empty())
        .take(MAX_SIMILARITY_BARS)
        .map(|b| b.iter().map(|&(t, p, _)| (t, p)).collect())
        .collect();
    if sets.len() < 2 {
        return None;
    }
    let mut total = 0.0;
    for (i, a) in sets.iter().enumerate() {
        let mut best: f64 = 0.0;
        for (j, b) in sets.iter().enumerate() {
            if i != j {
                let inter = a.intersection(b).count();
                best = best.max(inter as f64 / (a.len() + b.len() - inter) as f64);
            }
        }
        total += best;
    }
    Some(total / sets.len() as f64)
}

/// What [`harmony`] measures of a piece in parts.
struct Harmony {
    /// Parallel fifths and octaves per 100 voice-pair moves (None without moves).
    fifths: Option<f64>,
    octaves: Option<f64>,
    /// Distinct pitch-class sets sounding at onsets.
    chords: f64,
    /// The chord at the last onset closes: every voice sounds, the top on the bass's pitch
    /// class, nothing but a consonant triad above the bass (Bach: 385 of 408 chorales).
    final_chord_closes: bool,
}

/// Parallel fifths and octaves per 100 voice-pair moves among the top four voices (`voices`,
/// highest first), the chord vocabulary of all voices and whether the last chord closes. The
/// music is cut into slices at every onset; between two slices, a pair of voices that both
/// sound in both and both move the same way, a perfect fifth (or octave/unison, compound
/// intervals included) apart each time, moves in parallel.
fn harmony(pitched: &[&Note], voices: &[u8]) -> Harmony {
    let voices = &voices[..voices.len().min(4)];
    let mut sorted: Vec<&Note> = pitched.to_vec();
    sorted.sort_by_key(|n| n.start);
    let mut onsets: Vec<Tick> = sorted.iter().map(|n| n.start).collect();
    onsets.dedup();
    // One sweep over the onsets with the notes sounding at each: per slice, the pitch of each
    // voice (the highest, if a voice holds a chord) and the pitch-class set of everything.
    let (mut slices, mut chords) = (Vec::with_capacity(onsets.len()), HashSet::new());
    let (mut active, mut next): (Vec<&Note>, usize) = (Vec::new(), 0);
    for &t in &onsets {
        while next < sorted.len() && sorted[next].start <= t {
            active.push(sorted[next]);
            next += 1;
        }
        active.retain(|n| n.end() > t);
        let slice: Vec<Option<u8>> =
            voices.iter().map(|&v| active.iter().filter(|n| n.voice == v).map(|n| n.pitch).max()).collect();
        slices.push(slice);
        chords.insert(active.iter().fold(0u16, |m, n| m | 1 << (n.pitch % 12)));
    }
    let (mut moves, mut fifths, mut octaves) = (0usize, 0usize, 0usize);
    for w in slices.windows(2) {
        for a in 0..voices.len() {
            for b in a + 1..voices.len() {
                let (Some(a0), Some(b0), Some(a1), Some(b1)) = (w[0][a], w[0][b], w[1][a], w[1][b]) else { continue };
                moves += 1;
                let (da, db) = (a1 as i32 - a0 as i32, b1 as i32 - b0 as i32);
                if da == 0 || db == 0 || da.signum() != db.signum() {
                    continue;
                }
                let (i0, i1) = ((a0 as i32 - b0 as i32).rem_euclid(12), (a1 as i32 - b1 as i32).rem_euclid(12));
                if i0 == 7 && i1 == 7 {
                    fifths += 1;
                } else if i0 == 0 && i1 == 0 {
                    octaves += 1;
                }
            }
        }
    }
    let per100 = |c: usize| if moves == 0 { None } else { Some(100.0 * c as f64 / moves as f64) };
    // `active` is what sounds at the last onset.
    let every_voice = slices.last().is_some_and(|s| s.iter().all(Option::is_some));
    let (bass, top) = (active.iter().map(|n| n.pitch).min(), active.iter().map(|n| n.pitch).max());
    let final_chord_closes = match (bass, top) {
        (Some(b), Some(t)) => {
            every_voice && (t - b) % 12 == 0 && crate::score::triad_above(b, active.iter().map(|n| n.pitch))
        }
        _ => false,
    };
    Harmony { fifths: per100(fifths), octaves: per100(octaves), chords: chords.len() as f64, final_chord_closes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Meter;

    fn index(name: &str) -> usize {
        FEATURES.iter().position(|f| f.name == name).unwrap()
    }

    /// A melody from (pitch, eighths) pairs in 4/4, back to back.
    fn line(notes: &[(u8, u64)]) -> Score {
        let mut s = Score::new();
        let mut t = 0;
        for &(p, d) in notes {
            s.notes.push(Note::new(t, d * 240, p));
            t += d * 240;
        }
        s.meta.meters.push((0, Meter::new(4, 4)));
        s.normalize();
        s
    }

    #[test]
    fn scale_melody_features() {
        // C major scale up in eighths, twice (two identical bars).
        let bar = [(60, 1), (62, 1), (64, 1), (65, 1), (67, 1), (69, 1), (71, 1), (72, 1)];
        let s = line(&[bar, bar].concat());
        let f = features(&s);
        let get = |n: &str| f[index(n)].unwrap();
        assert_eq!(f.len(), FEATURES.len());
        assert_eq!(get("pch_0"), 4.0 / 16.0); // C and c in each bar
        assert_eq!(get("key_consistency"), 1.0);
        assert_eq!(get("pitch_range"), 12.0);
        assert_eq!(get("pitch_count"), 8.0);
        // 15 intervals: 12 steps and 3... within a bar 7 steps, across the bar line a leap of 12.
        assert_eq!(get("step_share"), 14.0 / 15.0);
        assert_eq!(get("leap_share"), 1.0 / 15.0);
        assert_eq!(get("dur_8th"), 1.0);
        assert_eq!(get("onset_downbeat"), 2.0 / 16.0);
        assert_eq!(get("onset_beat"), 6.0 / 16.0);
        assert_eq!(get("onset_eighth"), 8.0 / 16.0);
        assert_eq!(get("notes_per_bar"), 8.0);
        assert_eq!(get("repeat_1bar"), 0.5);
        assert_eq!(get("bar_similarity"), 1.0);
        assert_eq!(get("final_tonic"), 1.0, "ends on c");
        let open = features(&line(&[&bar[..], &bar[..], &[(62, 1)]].concat()));
        assert_eq!(open[index("final_tonic")], Some(0.0), "ends on d, in C");
        assert_eq!(get("n_bars"), 2.0);
        assert_eq!(get("duration_quarters"), 8.0);
        assert!(f[index("voice_range_1")].is_none());
        // Eight pitch classes used evenly but C twice as often: entropy just under log2(7) + a bit.
        assert!((get("pc_entropy") - 2.75).abs() < 1e-9, "{}", get("pc_entropy"));
    }

    #[test]
    fn a_silent_lead_bar_changes_nothing() {
        let s = line(&[(62, 2), (64, 2), (66, 4), (67, 8)]);
        let mut lead = s.clone();
        for n in &mut lead.notes {
            n.start += 1920;
        }
        lead.length += 1920;
        assert_eq!(features(&s), features(&lead));
        // A pickup is measured where the corpus's aligned copy has it: on the last beat, not on
        // a downbeat.
        let abc = crate::dsl::parse("X:1\nM:4/4\nL:1/8\nK:G\nD2|G2AB c2B2|A4 G4|\n").unwrap();
        assert_eq!(abc.meta.pickup, 480);
        let f = features(&abc);
        assert_eq!(f, features(&abc.align_pickup()));
        assert_eq!(f[index("onset_downbeat")], Some(2.0 / 8.0)); // G and A of 8 notes
    }

    #[test]
    fn key_finding_and_tokens() {
        let mut w = [0.0; 12];
        for pc in [9, 11, 0, 2, 4, 5, 7, 9, 9, 4, 0] {
            w[pc] += 1.0; // A minor, A and E stressed
        }
        assert_eq!(best_key(&w), (9, true));
        let s = line(&[(60, 1), (67, 2), (65, 1)]);
        let t = tokens(&melody(&s));
        assert_eq!(t.iter().map(|&x| untoken(x)).collect::<Vec<_>>(), vec![(7, 480), (-2, 240)]);
    }

    #[test]
    fn chorale_parallels() {
        // The top voice and a moving lower voice in parallel fifths twice; the bass holds C.
        let mut s = Score::new();
        let parts: [(u8, [u8; 3]); 3] = [(0, [67, 69, 71]), (1, [60, 60, 60]), (2, [60, 62, 64])];
        for (v, ps) in parts {
            for (i, p) in ps.iter().enumerate() {
                s.notes.push(Note { voice: v, ..Note::new(i as u64 * 480, 480, *p) });
            }
        }
        s.normalize();
        let f = features(&s);
        // Voice pairs between two slices: 3 pairs x 2 moves = 6; the top two voices are parallel
        // fifths twice (G/C -> A/D -> B/E).
        assert_eq!(f[index("parallel_fifths")], Some(100.0 * 2.0 / 6.0));
        assert_eq!(f[index("parallel_octaves")], Some(0.0));
        assert_eq!(f[index("voice_range_1")], Some(4.0));
        assert_eq!(f[index("voice_range_4")], None);
        assert_eq!(f[index("chord_vocab")], Some(3.0));
        // The melody is the soprano.
        assert_eq!(melody(&s).iter().map(|n| n.pitch).collect::<Vec<_>>(), vec![67, 69, 71]);
        // It ends on C-E-B: a seventh above the bass.
        assert_eq!(f[index("final_chord")], Some(0.0));
    }

    /// The final chord closes with every voice on a triad, the bass's pitch class on top; a
    /// voice that has stopped, or the third on top, leaves it open.
    #[test]
    fn final_chord_closes_only_full_with_the_bass_on_top() {
        let piece = |last: &[(u8, u8)]| {
            let mut s = Score::new();
            // A full G major chord, then the last onset's notes.
            for (v, p) in [(0, 67), (1, 62), (2, 59), (3, 43)] {
                s.notes.push(Note { voice: v, ..Note::new(0, 480, p) });
            }
            for &(v, p) in last {
                s.notes.push(Note { voice: v, ..Note::new(480, 960, p) });
            }
            s.normalize();
            features(&s)[index("final_chord")]
        };
        assert_eq!(piece(&[(0, 72), (1, 64), (2, 55), (3, 48)]), Some(1.0), "C-G-E-C");
        assert_eq!(piece(&[(0, 69), (1, 64), (2, 60), (3, 45)]), Some(1.0), "a minor triad");
        assert_eq!(piece(&[(0, 76), (1, 67), (2, 60), (3, 48)]), Some(0.0), "the third on top");
        assert_eq!(piece(&[(0, 72), (3, 48)]), Some(0.0), "two voices of four");
        assert_eq!(piece(&[(0, 72), (1, 65), (2, 55), (3, 48)]), Some(0.0), "a fourth above the bass");
    }
}
