//! The ABC-like language: AST with spans, nom parser, lowering to `Score`, printing, diagnostics.
//!
//! `parse` reads the first tune of a text, `parse_tune` picks one by `X:`, `parse_file` reads
//! every tune (a bad tune is reported, the others still parse), `parse_file_lenient` also skips
//! what does not parse inside a tune (as abc2midi reads real collections, each skip reported),
//! `parse_one` and `parse_file_with` read as [`ReadOptions`] say, `print` writes a `Score` back
//! as ABC. The grammar is `grammar/abc.ebnf`; parser functions carry its rule names.

pub mod ast;
pub mod diagnostics;
pub mod fields;
pub mod instruments;
pub mod lower;
mod order;
pub mod parser;
pub mod print;
mod rational;

pub use diagnostics::DslError;
pub use lower::LowerOptions;
pub use print::print;

use crate::score::Score;
use parser::{Parser, TuneSlice};

/// One tune of a multi-tune file: its number, title, first line, and the score or the error.
#[derive(Debug, Clone)]
pub struct TuneResult {
    /// The `X:` number (`None` for text without `X:`).
    pub x: Option<u32>,
    /// The first `T:` of the tune, found even when the tune fails to parse.
    pub title: Option<String>,
    /// 1-based line of the tune's first line in the file.
    pub line: usize,
    pub result: Result<Score, DslError>,
    /// What a lenient parse skipped in this tune (always empty from [`parse_file`]).
    pub skipped: Vec<DslError>,
}

/// Parses every tune in `text`. Tunes fail one by one; a broken tune never loses the others.
pub fn parse_file(text: &str) -> Vec<TuneResult> {
    parse_file_with(text, ReadOptions::default())
}

/// [`parse_file`] for collections written by many hands: what does not parse inside a music
/// line is skipped one character at a time and reported in the tune's `skipped` (at most
/// [`parser::MAX_SKIPPED`] per tune), as abc2midi warns and plays on. Header fields, `%%`
/// directives and the music's meaning (a note beyond MIDI's range) are still errors.
pub fn parse_file_lenient(text: &str) -> Vec<TuneResult> {
    parse_file_with(text, ReadOptions { lenient: true, ..ReadOptions::default() })
}

/// How [`parse_file_with`] reads a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Skip what does not parse inside a music line (see [`parse_file_lenient`]).
    pub lenient: bool,
    /// Play trills and rolls as abc2midi does (see [`lower::LowerOptions`]); off, the written
    /// note.
    pub ornaments: bool,
}

impl ReadOptions {
    /// The parser and the lowering these options ask for.
    fn split(self, text: &str) -> (Parser<'_>, lower::LowerOptions) {
        let p = if self.lenient { Parser::lenient(text) } else { Parser::new(text) };
        (p, lower::LowerOptions { ornaments: self.ornaments })
    }
}

/// Every tune of `text`, read as `options` say.
pub fn parse_file_with(text: &str, options: ReadOptions) -> Vec<TuneResult> {
    let (p, lower_options) = options.split(text);
    let (header, slices) = p.file();
    let (fields, directives) = p.file_header(&header);
    // Line numbers are counted incrementally: tunes come in file order.
    let (mut line, mut counted) = (1, 0);
    let mut spare = Vec::new();
    slices
        .into_iter()
        .map(|s| {
            let mut skipped = Vec::new();
            let result = tune_score(&p, s, &fields, &directives, &mut spare, &mut skipped, lower_options);
            let body = &text[s.start..s.end];
            let title = body.lines().find_map(|l| parser::strip2(l, b'T', b':')).map(|t| t.trim().to_string());
            line += text.as_bytes()[counted..s.start].iter().filter(|&&b| b == b'\n').count();
            counted = s.start;
            TuneResult { x: s.x, title, line, result, skipped }
        })
        .collect()
}

fn tune_score<'a>(
    p: &Parser<'a>,
    s: TuneSlice,
    fields: &[ast::Field<'a>],
    directives: &[(&'a str, ast::Span)],
    spare: &mut Vec<ast::Item<'a>>,
    skipped: &mut Vec<DslError>,
    options: lower::LowerOptions,
) -> Result<Score, DslError> {
    let with_x = |e: DslError| match s.x {
        Some(x) => e.in_tune(x),
        None => e,
    };
    let mut tune = p.tune_in(s, std::mem::take(spare)).map_err(with_x)?;
    skipped.extend(tune.skipped.iter().map(|&(at, expected)| with_x(DslError::at(p.src, at, expected))));
    // File-header fields and directives are defaults for every tune: they go first.
    if !fields.is_empty() {
        tune.header.splice(0..0, fields.iter().copied());
    }
    if !directives.is_empty() {
        tune.directives.splice(0..0, directives.iter().copied());
    }
    let score = lower::lower_with(&tune, p.src, options);
    *spare = tune.body;
    let mut score = score.map_err(with_x)?;
    if s.x.is_none() {
        score.meta.reference = None;
    }
    Ok(score)
}

/// Parses the first tune of `text` (or the whole text when it has no `X:` line).
pub fn parse(text: &str) -> Result<Score, DslError> {
    parse_one(text, None, ReadOptions::default()).map(|(score, _)| score)
}

/// Parses the tune numbered `x` (its `X:` field) in `text`.
pub fn parse_tune(text: &str, x: u32) -> Result<Score, DslError> {
    parse_one(text, Some(x), ReadOptions::default()).map(|(score, _)| score)
}

/// Parses one tune of `text` as `options` say: the one numbered `x`, or the first; only that
/// tune is parsed. Returns what a lenient read skipped in it beside the score.
pub fn parse_one(text: &str, x: Option<u32>, options: ReadOptions) -> Result<(Score, Vec<DslError>), DslError> {
    let (p, lower_options) = options.split(text);
    let (header, slices) = p.file();
    let (fields, directives) = p.file_header(&header);
    let slice = match x {
        Some(x) => slices
            .iter()
            .find(|s| s.x == Some(x))
            .ok_or_else(|| DslError::at(text, text.len(), format!("a tune with X:{x}"))),
        None => slices.first().ok_or_else(|| DslError::at(text, 0, "a tune")),
    }?;
    let mut skipped = Vec::new();
    let score = tune_score(&p, *slice, &fields, &directives, &mut Vec::new(), &mut skipped, lower_options)?;
    Ok((score, skipped))
}

/// Parses one tune into its syntax tree (for tools that want what was written, not its sound).
pub fn parse_ast(text: &str) -> Result<ast::Tune<'_>, DslError> {
    let p = Parser::new(text);
    let (_, slices) = p.file();
    match slices.first() {
        Some(&s) => p.tune(s),
        None => Err(DslError::at(text, 0, "a tune")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `.abc` file under a directory, recursively.
    pub(crate) fn abc_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                abc_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "abc") {
                out.push(p);
            }
        }
    }

    /// Parses the whole music21 corpus and prints the failures (run by hand with --ignored).
    #[test]
    #[ignore]
    fn corpus_report() {
        let dir = std::env::var("CADENZA_ABC_DIR").unwrap_or_else(|_| "corpus/music21/corpus".into());
        let mut files = Vec::new();
        abc_files(std::path::Path::new(&dir), &mut files);
        files.sort();
        let (mut ok, mut bad, mut reprint_bad) = (0, 0, 0);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            for t in parse_file(&text) {
                match t.result {
                    Ok(s) => {
                        ok += 1;
                        // Printing must give the same score back.
                        let printed = print(&s);
                        match parse(&printed) {
                            Ok(back) if back == s => {}
                            Ok(_) => {
                                reprint_bad += 1;
                                println!("REPRINT DIFF {}: X:{:?}", f.display(), t.x);
                            }
                            Err(e) => {
                                reprint_bad += 1;
                                println!("REPRINT ERR {}: X:{:?}\n{e}", f.display(), t.x);
                            }
                        }
                    }
                    Err(e) => {
                        bad += 1;
                        println!("{}: X:{:?}\n{e}\n", f.display(), t.x);
                    }
                }
            }
        }
        println!("files {}, tunes parsed {ok}, failed {bad}, reprinted differently {reprint_bad}", files.len());
    }
}

#[cfg(test)]
mod dump {
    /// Prints `pitch start end` for every note of tune `CADENZA_X` of `CADENZA_ABC` (by hand).
    #[test]
    #[ignore]
    fn dump_notes() {
        let (Ok(path), Ok(x)) = (std::env::var("CADENZA_ABC"), std::env::var("CADENZA_X")) else { return };
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        let s = super::parse_tune(&text, x.parse().unwrap()).unwrap();
        for n in &s.notes {
            println!("NOTE {} {} {}", n.pitch, n.start, n.end());
        }
    }

    /// Prints the error of `CADENZA_ABC` between markers (to write golden files by hand).
    #[test]
    #[ignore]
    fn dump_error() {
        let Ok(path) = std::env::var("CADENZA_ABC") else { return };
        let text = std::fs::read_to_string(path).unwrap();
        if let Err(e) = super::parse(&text) {
            println!("<<<{e}>>>");
        }
    }
}
