//! A score drawn as a piano roll of text: one row per pitch, one column per grid step, bar lines.

use crate::score::Score;
use crate::time::{Tick, PPQ};

/// How to draw: characters, colour, and how wide the terminal is.
#[derive(Debug, Clone)]
pub struct Style {
    /// Columns available, labels included; systems wrap at bar lines to fit.
    pub width: usize,
    /// ANSI colour per MIDI channel.
    pub color: bool,
    /// Box-drawing and block characters instead of ASCII.
    pub unicode: bool,
}

impl Style {
    /// ASCII, no colour, 100 columns: stable output for files and tests.
    pub fn plain() -> Style {
        Style { width: 100, color: false, unicode: false }
    }

    /// The current terminal's width, colour and block characters.
    pub fn terminal() -> Style {
        let width = crossterm::terminal::size().map(|(w, _)| w as usize).unwrap_or(100).max(40);
        Style { width, color: true, unicode: true }
    }
}

struct Glyphs {
    onset: char,
    hold: char,
    bar: char,
    beat: char,
}

const NAMES: [&str; 12] = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"];
/// Colours per channel (cycled): distinct on dark and light backgrounds.
const COLORS: [&str; 6] = ["\x1b[36m", "\x1b[33m", "\x1b[35m", "\x1b[32m", "\x1b[34m", "\x1b[31m"];
const RESET: &str = "\x1b[0m";

/// Grid step in ticks: the coarsest of the usual note values every onset and end falls on.
fn grid(score: &Score) -> Tick {
    let q = PPQ as Tick;
    for step in [q, q / 2, q / 4, q / 3, q / 6, q / 8, q / 12, q / 16] {
        if score.notes.iter().all(|n| n.start % step == 0 && n.end() % step == 0) {
            return step;
        }
    }
    q / 16
}

/// Draws `score` as text; every line ends with a newline. An empty score draws one line.
pub fn render(score: &Score, style: &Style) -> String {
    if score.notes.is_empty() {
        return "(no notes)\n".to_string();
    }
    let g = if style.unicode {
        Glyphs { onset: '█', hold: '▒', bar: '│', beat: '·' }
    } else {
        Glyphs { onset: '#', hold: '=', bar: '|', beat: '.' }
    };
    let lo = score.notes.iter().map(|n| n.pitch).min().unwrap_or(60);
    let hi = score.notes.iter().map(|n| n.pitch).max().unwrap_or(60);
    let label_w = 5;
    let avail = style.width.saturating_sub(label_w + 1).max(8);
    let mut step = grid(score);
    let end = score.length.max(score.notes.iter().map(|n| n.end()).max().unwrap_or(0));
    let mut bars = score.bar_starts();
    if bars.is_empty() {
        bars.push(0);
    }
    // Coarsen the grid until the longest bar fits in one system.
    let longest_bar = bars.windows(2).map(|w| w[1] - w[0]).chain([end - bars[bars.len() - 1]]).max().unwrap_or(1);
    while (longest_bar.div_ceil(step) as usize) + 1 > avail && step < 64 * PPQ as Tick {
        step *= 2;
    }
    // Group bars into systems that fit the width (a bar line column precedes each bar).
    let mut systems: Vec<(Tick, Tick)> = Vec::new();
    let mut sys_start = bars[0];
    let mut cols = 0usize;
    for (i, &b) in bars.iter().enumerate() {
        let b_end = bars.get(i + 1).copied().unwrap_or(end);
        let w = (b_end.saturating_sub(b)).div_ceil(step) as usize + 1;
        if cols > 0 && cols + w > avail {
            systems.push((sys_start, b));
            sys_start = b;
            cols = 0;
        }
        cols += w;
    }
    systems.push((sys_start, end));

    let mut out = String::new();
    for (si, &(from, to)) in systems.iter().enumerate() {
        if si > 0 {
            out.push('\n');
        }
        // Column layout: for each bar in the system, a bar-line column then its steps.
        let mut columns: Vec<Option<Tick>> = Vec::new();
        for (i, &b) in bars.iter().enumerate() {
            if b < from || b >= to {
                continue;
            }
            let b_end = bars.get(i + 1).copied().unwrap_or(end).min(to);
            columns.push(None);
            let mut t = b;
            while t < b_end {
                columns.push(Some(t));
                t += step;
            }
        }
        columns.push(None);
        for pitch in (lo..=hi).rev() {
            let name = format!("{}{}", NAMES[pitch as usize % 12], pitch as i32 / 12 - 1);
            out.push_str(&format!("{name:>4} "));
            for col in &columns {
                let Some(t) = *col else {
                    out.push(g.bar);
                    continue;
                };
                let cell_end = t + step;
                // A note onset inside this cell wins over a held note.
                let onset = score.notes.iter().find(|n| n.pitch == pitch && n.start >= t && n.start < cell_end);
                let held = score.notes.iter().find(|n| n.pitch == pitch && n.start < t && n.end() > t);
                let (ch, channel) = match (onset, held) {
                    (Some(n), _) => (g.onset, Some(n.channel)),
                    (None, Some(n)) => (g.hold, Some(n.channel)),
                    (None, None) => {
                        let beat = score.meter_at(t).beat_ticks().max(1);
                        let bar_start = bars.iter().rev().find(|&&b| b <= t).copied().unwrap_or(0);
                        ((if (t - bar_start) % beat == 0 { g.beat } else { ' ' }), None)
                    }
                };
                match (style.color, channel) {
                    (true, Some(c)) => {
                        out.push_str(COLORS[c as usize % COLORS.len()]);
                        out.push(ch);
                        out.push_str(RESET);
                    }
                    _ => out.push(ch),
                }
            }
            // No trailing spaces: lines compare cleanly in tests and copy cleanly.
            while out.ends_with(' ') {
                out.pop();
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::score::Note;
    use crate::time::Meter;

    #[test]
    fn draws_notes_bars_and_beats() {
        // Bar 1: C4 quarter, E4 quarter, G4 half. Bar 2: C5 whole. 4/4, eighth-free -> quarter grid.
        let mut s = Score::new();
        s.meta.meters.push((0, Meter::new(4, 4)));
        s.notes.push(Note::new(0, 480, 60));
        s.notes.push(Note::new(480, 480, 64));
        s.notes.push(Note::new(960, 960, 67));
        s.notes.push(Note::new(1920, 1920, 72));
        s.normalize();
        let text = render(&s, &Style::plain());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 13); // C5 down to C4
        assert_eq!(lines[0], "  C5 |....|#===|");
        assert_eq!(lines[5], "  G4 |..#=|....|");
        assert_eq!(lines[8], "  E4 |.#..|....|");
        assert_eq!(lines[12], "  C4 |#...|....|");
    }

    #[test]
    fn wraps_long_scores_at_bar_lines() {
        let mut s = Score::new();
        for i in 0..32u64 {
            s.notes.push(Note::new(i * 120, 120, 60 + (i % 3) as u8));
        }
        s.normalize();
        let style = Style { width: 30, ..Style::plain() };
        let text = render(&s, &style);
        let systems: Vec<&str> = text.split("\n\n").collect();
        assert_eq!(systems.len(), 2, "{text}");
        for line in text.lines().filter(|l| !l.is_empty()) {
            assert!(line.chars().count() <= 30, "{line}");
        }
        assert_eq!(render(&Score::new(), &style), "(no notes)\n");
    }
}
