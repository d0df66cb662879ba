//! Score files by kind: which reader an extension names, and reading any of them. `convert`,
//! `generate`/`score` prompts, `eval` and scripts' `load` all read files through here, so every
//! command accepts the same files.

use super::{abc, midi_file, musicxml};
use crate::score::Score;
use std::path::{Path, PathBuf};

/// The kinds of score file cadenza reads, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `.abc`.
    Abc,
    /// `.mid`, `.midi`, `.smf`.
    Midi,
    /// `.xml`, `.musicxml`, `.mxl` (read only).
    MusicXml,
}

impl Kind {
    pub fn of(path: &Path) -> Option<Kind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "abc" => Some(Kind::Abc),
            "mid" | "midi" | "smf" => Some(Kind::Midi),
            "xml" | "musicxml" | "mxl" => Some(Kind::MusicXml),
            _ => None,
        }
    }
}

/// Why a score file could not be read. Each reader's error already names the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: unknown score file type (expected .abc, .txt, .mid, .midi, .xml, .musicxml or .mxl)")]
    UnknownKind(PathBuf),
    #[error("{0}: a tune number selects a tune of an ABC file; this is not ABC")]
    TuneOfNonAbc(PathBuf),
    #[error(transparent)]
    Abc(#[from] abc::AbcFileError),
    #[error(transparent)]
    Midi(#[from] midi_file::MidiError),
    #[error(transparent)]
    MusicXml(#[from] musicxml::MusicXmlError),
}

/// Reads a score file of any kind; `tune` picks an ABC file's tune by its `X:` number. A `.txt`
/// file is read as ABC text too (prompts are often saved so), though folders of takes count
/// only the kinds [`Kind::of`] names.
pub fn read(path: &Path, tune: Option<u32>) -> Result<Score, ReadError> {
    let is_txt = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let kind =
        Kind::of(path).or(is_txt.then_some(Kind::Abc)).ok_or_else(|| ReadError::UnknownKind(path.to_path_buf()))?;
    if tune.is_some() && kind != Kind::Abc {
        return Err(ReadError::TuneOfNonAbc(path.to_path_buf()));
    }
    Ok(match kind {
        Kind::Abc => abc::read(path, tune)?,
        Kind::Midi => midi_file::read(path)?,
        Kind::MusicXml => musicxml::read(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension_in_any_case() {
        assert_eq!(Kind::of(Path::new("x.MXL")), Some(Kind::MusicXml));
        assert_eq!(Kind::of(Path::new("a/b.Mid")), Some(Kind::Midi));
        assert_eq!(Kind::of(Path::new("t.txt")), None, "a folder's notes.txt is not a take");
        assert_eq!(Kind::of(Path::new("x.wav")), None);
        assert_eq!(Kind::of(Path::new("noext")), None);
    }

    #[test]
    fn unknown_kinds_and_tunes_of_midi_are_errors_naming_the_file() {
        let e = read(Path::new("take.wav"), None).unwrap_err().to_string();
        assert!(e.starts_with("take.wav: unknown score file type"), "{e}");
        let e = read(Path::new("take.mid"), Some(2)).unwrap_err().to_string();
        assert!(e.starts_with("take.mid: a tune number"), "{e}");
    }
}
