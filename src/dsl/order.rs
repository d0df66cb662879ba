//! Playing order: how a voice's repeats, endings and header `P:` part order turn notation time
//! into the order abc2midi plays it, and how changes written in notation time follow.

use crate::score::push_change;
use crate::time::Tick;

/// A repeat or structure sign at a notation tick of one voice.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Marker {
    RepeatStart,
    RepeatEnd,
    /// `[1`, `[2`, `[1,3`: the passes the ending plays on.
    Ending(u32),
    /// `||`, `|]`, `[|`: closes a set of endings.
    Close,
}

/// The order ABC plays a voice in: notation-time segments `[from, to)` with repeats and
/// endings expanded.
pub(crate) fn play_order(markers: &[(Tick, Marker)], end: Tick) -> Vec<(Tick, Tick)> {
    let mut segs = Vec::new();
    let push = |segs: &mut Vec<(Tick, Tick)>, a: Tick, b: Tick| {
        if b > a {
            segs.push((a, b));
        }
    };
    let mut cursor = 0;
    let mut rep_start = 0;
    // Start of the first ending of the current set, and the ending being read (start, passes).
    let mut first_ending: Option<Tick> = None;
    let mut ending: Option<(Tick, u32)> = None;
    // The repeat start is where the last plain `:|` was (not a `|:` or the tune's start): only
    // then does a double bar move it.
    let mut after_repeat_end = false;
    for (t, m) in markers {
        let t = *t;
        match m {
            Marker::RepeatStart => {
                rep_start = t;
                first_ending = None;
                ending = None;
                after_repeat_end = false;
            }
            Marker::Ending(passes) => {
                first_ending.get_or_insert(t);
                ending = Some((t, *passes));
            }
            // A double bar that closes a set of endings starts the next strain; so does one after
            // a plain `:|`, as in abc2midi (`A :| B || C :|` plays A A B C C); with no `:|`
            // before, the next `:|` goes back to the start (`A || B :|` plays A B A B).
            // (abc2midi does not restart at a double bar that closes endings: it plays
            // `|: A |1 B :|2 C || D :|` as A B A C D A D, where the tunes mean A B A C D D.)
            Marker::Close => {
                if ending.is_some() || after_repeat_end {
                    rep_start = t;
                }
                first_ending = None;
                ending = None;
            }
            Marker::RepeatEnd => {
                push(&mut segs, cursor, t);
                match (ending.take(), first_ending) {
                    (Some((e, passes)), Some(first)) => {
                        // An ending for passes 1 and 2 is played, then the body again, then it
                        // again; after its last pass the body leads into the next ending.
                        for _ in 1..passes {
                            push(&mut segs, rep_start, first);
                            push(&mut segs, e, t);
                        }
                        push(&mut segs, rep_start, first);
                    }
                    _ => {
                        push(&mut segs, rep_start, t);
                        rep_start = t;
                        after_repeat_end = true;
                        first_ending = None;
                    }
                }
                cursor = t;
            }
        }
    }
    push(&mut segs, cursor, end);
    // Adjacent segments read more simply merged.
    let mut merged: Vec<(Tick, Tick)> = Vec::with_capacity(segs.len());
    for (a, b) in segs {
        match merged.last_mut() {
            Some(last) if last.1 == a => last.1 = b,
            _ => merged.push((a, b)),
        }
    }
    merged
}

/// Header `P:` play order: `ABA`, `A2B`, `(AB)2C`. `None` when the value is a label, not an
/// order (`P:Verse`).
pub(crate) fn part_order(v: &str) -> Option<Vec<char>> {
    fn group(chars: &[u8], i: &mut usize, out: &mut Vec<char>, depth: u32) -> Option<()> {
        while *i < chars.len() {
            let c = chars[*i];
            *i += 1;
            let item: Vec<char> = match c {
                b'A'..=b'Z' => vec![c as char],
                b'(' if depth < 4 => {
                    let mut inner = Vec::new();
                    group(chars, i, &mut inner, depth + 1)?;
                    inner
                }
                b')' if depth > 0 => return Some(()),
                b' ' | b'.' | b'\t' => continue,
                _ => return None,
            };
            let digits = chars[*i..].iter().take_while(|b| b.is_ascii_digit()).count();
            let times = std::str::from_utf8(&chars[*i..*i + digits]).ok()?.parse::<usize>().unwrap_or(1).min(16);
            *i += digits;
            for _ in 0..times {
                out.extend_from_slice(&item);
            }
        }
        (depth == 0).then_some(())
    }
    let mut out = Vec::new();
    group(v.as_bytes(), &mut 0, &mut out, 0)?;
    (out.len() > 1).then_some(out)
}

/// Reorders a voice's segments by the header part order. `None` (play as written) when some
/// part in the order has no `P:` label in the body.
pub(crate) fn apply_parts(
    segs: &[(Tick, Tick)],
    order: &[char],
    labels: &[(Tick, String)],
    end: Tick,
) -> Option<Vec<(Tick, Tick)>> {
    if labels.is_empty() {
        return None;
    }
    let range = |p: char| -> Option<(Tick, Tick)> {
        let i = labels.iter().position(|(_, l)| l.starts_with(p) && l.len() <= 2)?;
        let stop = labels.get(i + 1).map_or(end, |(t, _)| *t);
        Some((labels[i].0, stop))
    };
    let mut out = Vec::new();
    // Music before the first label is an introduction: it plays once, first.
    let intro = (0, labels[0].0);
    for r in std::iter::once(Some(intro)).chain(order.iter().map(|&p| range(p))) {
        let (from, to) = r?;
        for &(a, b) in segs {
            let (a, b) = (a.max(from), b.min(to));
            if b > a {
                out.push((a, b));
            }
        }
    }
    Some(out)
}

/// Changes recorded in notation time, replayed along the play order.
pub(crate) fn map_changes<T: Clone + PartialEq>(changes: &[(Tick, T)], segs: &[(Tick, Tick)]) -> Vec<(Tick, T)> {
    let mut out: Vec<(Tick, T)> = Vec::new();
    // The search below needs the changes in time order. Tempo changes are recorded from every
    // voice at that voice's own time, so a `Q:` in a later voice can come before the first
    // voice's last one (found by fuzzing, but legal ABC); a stable sort keeps same-time changes
    // in the order written.
    let sorted: Vec<(Tick, T)>;
    let changes = if changes.windows(2).all(|w| w[0].0 <= w[1].0) {
        changes
    } else {
        let mut v = changes.to_vec();
        v.sort_by_key(|c| c.0);
        sorted = v;
        &sorted[..]
    };
    if changes.is_empty() {
        return out;
    }
    if segs.is_empty() {
        out.push((0, changes[0].1.clone()));
        return out;
    }
    let mut offset = 0;
    for &(a, b) in segs {
        // The value in effect where this segment starts (the last change at or before `a`).
        // Before the first change nothing is in effect (the score's default applies).
        let i = changes.partition_point(|(t, _)| *t <= a);
        if i > 0 {
            push_change(&mut out, offset, changes[i - 1].1.clone());
        }
        for (t, v) in changes[i..].iter().take_while(|(t, _)| *t < b) {
            push_change(&mut out, t - a + offset, v.clone());
        }
        offset += b.saturating_sub(a);
    }
    out
}
