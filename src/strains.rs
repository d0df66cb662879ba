//! Strains played twice: the run of bars that the `tune` encoding and the ABC printer both write
//! once between repeat signs, with first and second endings where the second time differs.
//!
//! Beside `score`, below `dsl` and `tokens`: a pure search over one key per bar, so the encoder
//! (which folds what the models are trained on) and the printer (which folds what a user reads)
//! find the same strains.

/// Longest strain the encoder folds into repeat signs, in bars (two 8-bar halves of a 16-bar
/// strain, as slow airs have).
pub const MAX_STRAIN_BARS: usize = 16;
/// Longest first or second ending the encoder recognises, in bars.
pub const MAX_ENDING_BARS: usize = 4;

/// How a run of bars is written: a bar on its own, or a strain of `len` bars played twice whose
/// last `ending` bars differ the second time (first and second endings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Bar(usize),
    Repeat { first: usize, len: usize, ending: usize },
}

/// Finds the strains of a tune played twice, greedily from the start, longest first: `bars` is
/// one content key per bar (equal keys = equal bars, including length and where the bar's first
/// event starts), `clean[i]` says no note crosses bar line `i` (the line before bar `i`;
/// `clean[bars.len()]` is the end), as a strain may only begin and end on such lines. Linear in
/// the number of bars (a constant number of tries at each). Strains are `shortest` bars or more.
pub fn fold<K: PartialEq>(bars: &[K], clean: &[bool], shortest: usize) -> Vec<Segment> {
    let n = bars.len();
    let mut out = Vec::new();
    let mut i = 0;
    let same = |a: usize, b: usize, len: usize| (0..len).all(|j| bars[a + j] == bars[b + j]);
    while i < n {
        let mut found = None;
        'len: for len in (shortest.max(1)..=MAX_STRAIN_BARS).rev() {
            if i + 2 * len > n || !clean[i] || !clean[i + len] || !clean[i + 2 * len] {
                continue;
            }
            for ending in 0..=MAX_ENDING_BARS.min(len - 1) {
                let common = len - ending;
                // A second ending starts on a clean line too, or the replay would cut a note.
                if ending > 0 && (!clean[i + common] || !clean[i + len + common]) {
                    continue;
                }
                if same(i, i + len, common) && (ending == 0 || !same(i + common, i + len + common, ending)) {
                    found = Some(Segment::Repeat { first: i, len, ending });
                    break 'len;
                }
            }
        }
        match found {
            Some(s @ Segment::Repeat { len, .. }) => {
                out.push(s);
                i += 2 * len;
            }
            _ => {
                out.push(Segment::Bar(i));
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_prefers_the_longest_strain_and_needs_clean_lines() {
        let bars = [1, 2, 1, 2, 3, 3];
        assert_eq!(
            fold(&bars, &[true; 7], 2),
            vec![Segment::Repeat { first: 0, len: 2, ending: 0 }, Segment::Bar(4), Segment::Bar(5)]
        );
        let mut clean = [true; 7];
        clean[2] = false;
        assert_eq!(fold(&bars, &clean, 2).len(), 6, "a note across the strain's end: no repeat");
    }

    #[test]
    fn endings_are_found_where_the_last_bars_differ() {
        // A (2 bars) twice with its second bar changed the second time, then a bar of its own.
        let bars = [1, 2, 1, 3, 4];
        assert_eq!(fold(&bars, &[true; 6], 1), vec![Segment::Repeat { first: 0, len: 2, ending: 1 }, Segment::Bar(4)]);
        // One bar played twice folds only when single bars may.
        assert_eq!(fold(&[5, 5], &[true; 3], 1), vec![Segment::Repeat { first: 0, len: 1, ending: 0 }]);
        assert_eq!(fold(&[5, 5], &[true; 3], 2), vec![Segment::Bar(0), Segment::Bar(1)]);
    }
}
