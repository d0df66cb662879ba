//! Copies, live: a compact index of a model's training tunes (`copies.bin` beside the weights)
//! that tells, as each take is made, whether it copies [`COPY_NOTES`] or more notes from one
//! training tune, and which. Notes are compared as (interval, duration) tokens, as `cadenza
//! eval`'s novelty does, so a copy in another key is still a copy.
//!
//! The file holds each tune's title and its tokens, two bytes each (an interval and an index
//! into a table of durations); loading builds a hash map from every run of `COPY_NOTES - 1`
//! tokens to where it occurs, and a hit is confirmed token by token, so hash collisions never
//! name a tune that was not copied.

use super::features::{melody, tokens, untoken};
use crate::score::Score;
use crate::time::Tick;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;

/// A take that shares this many consecutive notes with a training tune is a copy.
pub const COPY_NOTES: usize = 16;
/// Tokens in a run of [`COPY_NOTES`] notes.
const RUN: usize = COPY_NOTES - 1;
/// File signature and version.
const MAGIC: &[u8; 8] = b"CADCOPY1";
/// Most tunes and tokens a file may claim (a folk corpus has 12 k tunes and 1.2 M tokens).
const MAX_TUNES: usize = 1 << 20;
const MAX_TOKENS: usize = 1 << 26;

/// Why an index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CopiesError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a copies index ({reason})")]
    Format { path: String, reason: String },
}

/// One training tune in the index.
struct Entry {
    title: String,
    /// (interval + 128, duration index) per token.
    tokens: Vec<(u8, u8)>,
}

/// The training tunes a model learnt from, searchable for copies.
pub struct CopyIndex {
    durations: Vec<Tick>,
    tunes: Vec<Entry>,
    /// Hash of a run of tokens → (tune, start) of one place it occurs.
    runs: HashMap<u64, (u32, u32)>,
}

/// A copy found in a take.
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub title: String,
    /// Consecutive notes the take shares with that tune (at least [`COPY_NOTES`]).
    pub notes: usize,
}

fn hash_run(run: &[(u8, u8)]) -> u64 {
    let mut h = DefaultHasher::new();
    run.hash(&mut h);
    h.finish()
}

impl CopyIndex {
    /// Indexes `(title, score)` pairs: each tune's melody as tokens. Intervals beyond an
    /// octave and a half either way and lengths beyond the table's 255 are left out of runs.
    pub fn build(tunes: &[(String, Score)]) -> CopyIndex {
        let mut durations: Vec<Tick> = Vec::new();
        let mut entries = Vec::new();
        for (title, score) in tunes {
            let mut packed = Vec::new();
            for t in tokens(&melody(score)) {
                let (interval, dur) = untoken(t);
                let d = match durations.iter().position(|&x| x == dur) {
                    Some(i) => i,
                    None if durations.len() < 255 => {
                        durations.push(dur);
                        durations.len() - 1
                    }
                    None => 255,
                };
                // 255 marks "not indexable": it never matches (see `pack`).
                let i = if (-127..=127).contains(&interval) { (interval + 128) as u8 } else { 255 };
                packed.push((i, d as u8));
            }
            entries.push(Entry { title: title.clone(), tokens: packed });
        }
        CopyIndex::from_entries(durations, entries)
    }

    fn from_entries(durations: Vec<Tick>, tunes: Vec<Entry>) -> CopyIndex {
        let mut runs = HashMap::new();
        for (ti, e) in tunes.iter().enumerate() {
            for (start, run) in e.tokens.windows(RUN).enumerate() {
                if run.iter().all(|&(i, d)| i != 255 && d != 255) {
                    runs.entry(hash_run(run)).or_insert((ti as u32, start as u32));
                }
            }
        }
        CopyIndex { durations, tunes, runs }
    }

    /// The tunes indexed.
    pub fn len(&self) -> usize {
        self.tunes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tunes.is_empty()
    }

    /// A take's melody as the index's tokens (`None` where a token is not indexable).
    fn pack(&self, score: &Score) -> Vec<Option<(u8, u8)>> {
        tokens(&melody(score))
            .into_iter()
            .map(|t| {
                let (interval, dur) = untoken(t);
                let d = self.durations.iter().position(|&x| x == dur)?;
                (-127..=127).contains(&interval).then_some(((interval + 128) as u8, d as u8))
            })
            .collect()
    }

    /// The longest copy of [`COPY_NOTES`] or more notes the take makes from one training tune.
    pub fn find(&self, take: &Score) -> Option<Copy> {
        let seq = self.pack(take);
        let mut best: Option<(usize, u32)> = None;
        let mut i = 0;
        while i + RUN <= seq.len() {
            let window: Option<Vec<(u8, u8)>> = seq[i..i + RUN].iter().copied().collect();
            let hit = window.and_then(|w| {
                let &(ti, start) = self.runs.get(&hash_run(&w))?;
                let tune = &self.tunes[ti as usize].tokens;
                (tune[start as usize..start as usize + RUN] == w[..]).then_some((ti, start as usize))
            });
            match hit {
                Some((ti, start)) => {
                    // Extend the confirmed run as far as both go.
                    let tune = &self.tunes[ti as usize].tokens;
                    let mut len = RUN;
                    while i + len < seq.len() && start + len < tune.len() && seq[i + len] == Some(tune[start + len]) {
                        len += 1;
                    }
                    if best.is_none_or(|(l, _)| len > l) {
                        best = Some((len, ti));
                    }
                    i += len.saturating_sub(RUN).max(1);
                }
                None => i += 1,
            }
        }
        best.map(|(tokens, ti)| Copy { title: self.tunes[ti as usize].title.clone(), notes: tokens + 1 })
    }

    /// Writes the index: signature, durations, then each tune's title and tokens.
    pub fn save(&self, path: &Path) -> Result<(), CopiesError> {
        let mut out = MAGIC.to_vec();
        out.push(self.durations.len() as u8);
        for d in &self.durations {
            out.extend((*d as u32).to_le_bytes());
        }
        out.extend((self.tunes.len() as u32).to_le_bytes());
        for e in &self.tunes {
            let title = e.title.as_bytes();
            let title = &title[..title.len().min(u16::MAX as usize)];
            out.extend((title.len() as u16).to_le_bytes());
            out.extend(title);
            out.extend((e.tokens.len() as u32).to_le_bytes());
            for &(i, d) in &e.tokens {
                out.extend([i, d]);
            }
        }
        std::fs::write(path, out).map_err(|source| CopiesError::Io { path: path.display().to_string(), source })
    }

    /// Reads an index written by [`CopyIndex::save`]; every length is checked against what is
    /// left and the documented bounds, so a damaged file is an error, never a huge allocation.
    pub fn load(path: &Path) -> Result<CopyIndex, CopiesError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CopiesError::Io { path: name.clone(), source })?;
        let bad = |reason: &str| CopiesError::Format { path: name.clone(), reason: reason.to_string() };
        let mut r = Reader { b: &bytes, at: 0 };
        if r.take(8).ok_or_else(|| bad("too short"))? != MAGIC {
            return Err(bad("wrong signature"));
        }
        let nd = r.u8().ok_or_else(|| bad("truncated"))? as usize;
        let durations =
            (0..nd).map(|_| r.u32().map(Tick::from)).collect::<Option<Vec<_>>>().ok_or_else(|| bad("truncated"))?;
        let nt = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        if nt > MAX_TUNES {
            return Err(bad("claims too many tunes"));
        }
        let mut tunes = Vec::with_capacity(nt.min(bytes.len() / 6));
        let mut total = 0usize;
        for _ in 0..nt {
            let tl = r.u16().ok_or_else(|| bad("truncated"))? as usize;
            let title = String::from_utf8_lossy(r.take(tl).ok_or_else(|| bad("truncated title"))?).into_owned();
            let n = r.u32().ok_or_else(|| bad("truncated"))? as usize;
            total += n;
            if total > MAX_TOKENS {
                return Err(bad("claims too many notes"));
            }
            let raw =
                r.take(n.checked_mul(2).ok_or_else(|| bad("bad length"))?).ok_or_else(|| bad("truncated tune"))?;
            tunes.push(Entry { title, tokens: raw.chunks_exact(2).map(|c| (c[0], c[1])).collect() });
        }
        Ok(CopyIndex::from_entries(durations, tunes))
    }
}

/// Reads little-endian numbers off a byte slice, `None` past its end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len())?;
        let s = &self.b[self.at..end];
        self.at = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|s| s[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// The index beside a model's weights, if it ships one.
pub fn beside(model_dir: &Path) -> Option<CopyIndex> {
    let path = model_dir.join("copies.bin");
    path.is_file().then(|| CopyIndex::load(&path).ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tune(body: &str) -> Score {
        crate::dsl::parse(&format!("X:1\nL:1/8\nK:D\n{body}\n")).unwrap()
    }

    const KESH: &str = "GAG GAB|ABA ABd|edd gdd|edB dBA|GAG GAB|ABA ABd|edd gdd|BAG G3|";

    #[test]
    fn a_take_copying_sixteen_notes_is_named_even_transposed() {
        let idx = CopyIndex::build(&[("The Kesh".into(), tune(KESH)), ("Other".into(), tune("DFA dAF|GBd gdB|"))]);
        // The whole Kesh a fourth up, after notes of its own.
        let copy = tune(&format!("C4 E2|{KESH}")).transpose(5).unwrap();
        let found = idx.find(&copy).expect("a copy");
        assert_eq!(found.title, "The Kesh");
        assert!(found.notes >= COPY_NOTES, "{found:?}");
        // Fifteen notes are not a copy.
        assert_eq!(idx.find(&tune("GAG GAB|ABA ABd|edd|")), None);
        assert_eq!(idx.find(&tune("FED CDE|FGA BAG|FED CDE|FGA BAG|")), None);
    }

    #[test]
    fn saved_and_loaded_it_finds_the_same_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("copies.bin");
        let idx = CopyIndex::build(&[("The Kesh".into(), tune(KESH))]);
        idx.save(&path).unwrap();
        let back = CopyIndex::load(&path).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back.find(&tune(KESH)).map(|c| c.notes), idx.find(&tune(KESH)).map(|c| c.notes));
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 5, 9, 20, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            assert!(CopyIndex::load(&path).is_err(), "cut at {cut}");
        }
        // A tune claiming four billion notes is refused, not allocated.
        let mut huge = bytes.clone();
        let at = 8 + 1 + 4 * bytes[8] as usize + 4 + 2 + "The Kesh".len();
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        std::fs::write(&path, &huge).unwrap();
        let e = CopyIndex::load(&path).err().expect("refused").to_string();
        assert!(e.contains("too many notes"), "{e}");
    }
}
