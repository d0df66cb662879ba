//! Take history: every generation a session makes is a numbered take (what was asked, what the
//! model sampled, the music and its log-likelihood), kept as JSON lines on disk beside the REPL
//! history, so `take(n)`, `replay(n)`, `branch(n, ...)` and `cadenza takes` find the take that
//! worked, in this session or an earlier one.

use super::stage::GenOpts;
use crate::gen::TakeRecord;
use crate::score::Score;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Takes kept in memory (older ones stay in the file; `cadenza takes` lists them all).
pub const MAX_KEPT: usize = 1000;

/// One take as the history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TakeEntry {
    /// Its number, counted across sessions that share the file.
    pub n: u64,
    /// When it was made, in seconds since 1970 (UTC).
    pub unix_secs: u64,
    /// The script call that made it: `gen` or `harmonize`.
    pub call: String,
    /// The prompt (for `harmonize`, the melody); none for a tune from nothing.
    pub prompt: Option<Score>,
    /// The options with everything the session filled in made explicit (model, style, seed),
    /// so the same call makes the same take again.
    pub opts: GenOpts,
    /// The session tempo it was made at (a prompt without one takes it).
    pub bpm: f64,
    /// What the model was and did: its hash, the sampled key and meter, the ids and their
    /// log-likelihood (the first section's for a form).
    pub record: Option<TakeRecord>,
    /// The training tune it copies 16 or more notes of, when the model ships an index.
    #[serde(default)]
    pub copied_from: Option<String>,
    /// The music the call returned.
    pub score: Score,
}

impl TakeEntry {
    /// One line for `takes()` and `cadenza takes`.
    pub fn summary(&self) -> String {
        let ll = self.record.as_ref().map(|r| r.log_likelihood).unwrap_or(f64::NAN);
        let notes = self.score.notes.len();
        let per_note = if notes > 0 { ll / notes as f64 } else { f64::NAN };
        let copied = self.copied_from.as_ref().map_or(String::new(), |t| format!("  copies “{t}”"));
        format!(
            "{:>4}  {}  {:<9} {:<10} seed {:<20} K:{} M:{}  {} bars, {} notes, {:.2} nats/note{copied}",
            self.n,
            utc(self.unix_secs),
            self.call,
            self.opts.model.as_deref().unwrap_or("?"),
            self.opts.seed.map_or("?".to_string(), |s| s.to_string()),
            self.score.key(),
            self.score.meter(),
            self.score.bar_count(),
            notes,
            per_note,
        )
    }
}

/// `YYYY-MM-DD HH:MM` (UTC) for seconds since 1970, without a date library.
pub fn utc(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

/// The session's takes: the last [`MAX_KEPT`] in memory, all of them in the file.
pub struct TakeLog {
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: VecDeque<TakeEntry>,
    next: u64,
    /// The first write error, said once (a full disk must not flood the REPL).
    warned: bool,
}

impl TakeLog {
    /// A log kept only in memory.
    pub fn in_memory() -> TakeLog {
        TakeLog { file: None, inner: Mutex::new(Inner { entries: VecDeque::new(), next: 1, warned: false }) }
    }

    /// A log appended to `file`, continuing its numbering; the file's last takes are loaded so
    /// `take(n)` reaches earlier sessions. Unreadable lines are skipped.
    pub fn open(file: &Path) -> TakeLog {
        let mut entries = VecDeque::new();
        let mut next = 1;
        for e in read_entries(file) {
            next = next.max(e.n + 1);
            entries.push_back(e);
            if entries.len() > MAX_KEPT {
                entries.pop_front();
            }
        }
        TakeLog { file: Some(file.to_path_buf()), inner: Mutex::new(Inner { entries, next, warned: false }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Numbers `entry`, keeps it and appends it to the file. Returns its number and, the first
    /// time writing fails, why (the take is still kept in memory).
    pub fn add(&self, mut entry: TakeEntry) -> (u64, Option<String>) {
        let mut inner = self.lock();
        entry.n = inner.next;
        inner.next += 1;
        let n = entry.n;
        let mut warning = None;
        if let Some(file) = &self.file {
            if let Err(e) = append(file, &entry) {
                if !inner.warned {
                    inner.warned = true;
                    warning =
                        Some(format!("take history {}: {e} (takes are kept for this session only)", file.display()));
                }
            }
        }
        inner.entries.push_back(entry);
        if inner.entries.len() > MAX_KEPT {
            inner.entries.pop_front();
        }
        (n, warning)
    }

    /// Take `n`, if it is among the last [`MAX_KEPT`].
    pub fn get(&self, n: u64) -> Option<TakeEntry> {
        self.lock().entries.iter().find(|e| e.n == n).cloned()
    }

    /// The takes in memory, oldest first.
    pub fn list(&self) -> Vec<TakeEntry> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The numbers of the first and last take in memory.
    pub fn range(&self) -> Option<(u64, u64)> {
        let inner = self.lock();
        Some((inner.entries.front()?.n, inner.entries.back()?.n))
    }
}

fn append(file: &Path, entry: &TakeEntry) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    f.write_all(line.as_bytes())
}

/// Every readable take in `file`, in order, read line by line (memory stays bounded by the
/// caller); a missing file has none.
pub fn read_entries(file: &Path) -> impl Iterator<Item = TakeEntry> {
    let reader = std::fs::File::open(file).ok().map(std::io::BufReader::new);
    reader.into_iter().flat_map(|r| r.lines()).map_while(Result::ok).filter_map(|l| serde_json::from_str(&l).ok())
}

/// The take history beside a REPL history file: `takes.jsonl` in the same folder.
pub fn beside(history: &Path) -> PathBuf {
    history.with_file_name("takes.jsonl")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seed: u64) -> TakeEntry {
        TakeEntry {
            n: 0,
            unix_secs: 1_764_633_600,
            call: "gen".into(),
            prompt: None,
            opts: GenOpts { seed: Some(seed), model: Some("folk".into()), ..GenOpts::default() },
            bpm: 120.0,
            record: None,
            copied_from: None,
            score: crate::dsl::parse("X:1\nK:D\nDFA|\n").unwrap(),
        }
    }

    #[test]
    fn takes_are_numbered_kept_and_continue_across_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("takes.jsonl");
        let log = TakeLog::open(&file);
        assert_eq!(log.add(entry(1)), (1, None));
        assert_eq!(log.add(entry(2)).0, 2);
        assert_eq!(log.get(2).unwrap().opts.seed, Some(2));
        // A later session continues the numbers and finds the earlier takes.
        let again = TakeLog::open(&file);
        assert_eq!(again.range(), Some((1, 2)));
        assert_eq!(again.add(entry(3)).0, 3);
        assert_eq!(again.get(1).unwrap().score, entry(1).score);
        // A damaged line is skipped, not fatal.
        let mut f = std::fs::OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"{not json\n").unwrap();
        assert_eq!(read_entries(&file).count(), 3);
    }

    #[test]
    fn memory_holds_the_last_thousand() {
        let log = TakeLog::in_memory();
        for i in 0..(MAX_KEPT as u64 + 5) {
            log.add(entry(i));
        }
        assert_eq!(log.range(), Some((6, MAX_KEPT as u64 + 5)));
        assert!(log.get(1).is_none());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00");
        assert_eq!(utc(1_764_633_600 + 3_723), "2025-12-02 01:02");
    }

    #[test]
    fn a_file_that_cannot_be_written_warns_once_and_keeps_the_take() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: appending fails.
        let file = dir.path().join("takes.jsonl");
        std::fs::create_dir(&file).unwrap();
        let log = TakeLog::open(&file);
        let (_, warning) = log.add(entry(1));
        assert!(warning.is_some_and(|w| w.contains("kept for this session only")));
        assert_eq!(log.add(entry(2)).1, None, "said once");
        assert_eq!(log.list().len(), 2);
    }
}
