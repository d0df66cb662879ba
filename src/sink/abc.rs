//! ABC text files: writes a `Score` through the DSL printer (and reads one through the parser).

use crate::dsl;
use crate::score::Score;
use std::path::{Path, PathBuf};

/// What can go wrong reading or writing an ABC file.
#[derive(Debug, thiserror::Error)]
pub enum AbcFileError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: dsl::DslError },
}

/// File text as the parser wants it: without a UTF-8 byte-order mark, and with old Mac line ends
/// (a lone CR) as LF. Diagnostics quote this text, so their lines and carets stay right.
pub fn normalize(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        out.push(if c == '\r' && b.get(i + 1) != Some(&b'\n') { '\n' } else { c });
    }
    out
}

/// Writes `score` as ABC text to `path`.
pub fn write(score: &Score, path: impl AsRef<Path>) -> Result<(), AbcFileError> {
    let path = path.as_ref();
    std::fs::write(path, dsl::print(score)).map_err(|source| AbcFileError::Write { path: path.to_path_buf(), source })
}

/// Reads tune `x` from an ABC file (the first tune when `x` is `None`), in playing order.
pub fn read(path: impl AsRef<Path>, x: Option<u32>) -> Result<Score, AbcFileError> {
    read_with(path, x, dsl::ReadOptions::default()).map(|(score, _)| score)
}

/// [`read`] as `options` say (`dsl::parse_one`): leniently, what does not parse inside a music
/// line is skipped, and each skip comes back with the score.
pub fn read_with(
    path: impl AsRef<Path>,
    x: Option<u32>,
    options: dsl::ReadOptions,
) -> Result<(Score, Vec<dsl::DslError>), AbcFileError> {
    let path = path.as_ref();
    let text = read_text(path)?;
    dsl::parse_one(&text, x, options).map_err(|source| AbcFileError::Parse { path: path.to_path_buf(), source })
}

fn read_text(path: &Path) -> Result<String, AbcFileError> {
    let bytes = super::read_bounded(path).map_err(|source| AbcFileError::Read { path: path.to_path_buf(), source })?;
    // Old collections are Latin-1; only titles and lyrics would show the difference.
    Ok(normalize(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_gives_the_score_back() {
        let s = dsl::parse("X:3\nT:Round\nM:3/4\nL:1/8\nK:G\nG2 AB c2 | d6 |]\n").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("round.abc");
        write(&s, &path).unwrap();
        assert_eq!(read(&path, Some(3)).unwrap(), s);
        assert!(matches!(read(dir.path().join("missing.abc"), None), Err(AbcFileError::Read { .. })));
        let err = read(&path, Some(9)).unwrap_err().to_string();
        assert!(err.contains("round.abc") && err.contains("X:9"), "{err}");
    }

    /// Regression: old-Mac line ends read as 0 notes with no error; a byte-order mark gave an
    /// error at an invisible character.
    #[test]
    fn cr_line_ends_and_a_byte_order_mark_read_like_lf() {
        let lf = "X:1\nM:2/4\nL:1/8\nK:D\nDFAd|fdAF|\n";
        let dir = tempfile::tempdir().unwrap();
        let want = dsl::parse(lf).unwrap();
        for (name, text) in [
            ("cr.abc", lf.replace('\n', "\r")),
            ("bom.abc", format!("\u{feff}{lf}")),
            ("crlf.abc", lf.replace('\n', "\r\n")),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            let got = read(&path, None).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got.notes, want.notes, "{name}");
        }
    }
}
