//! Caret diagnostics: a byte offset in the source becomes `line L, column C: expected ...` plus
//! the offending line and a caret under the column.

use std::fmt;

/// A parse or lowering error in ABC text, positioned in the source the user wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DslError {
    /// 1-based line number in the whole text.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes), so the caret lines up.
    pub column: usize,
    /// What the parser wanted at that point ("a note, rest or bar line", "`]`", ...).
    pub expected: String,
    /// The source line the error is on, without its line break.
    pub source_line: String,
    /// The `X:` number of the tune, when the text had one.
    pub tune: Option<u32>,
}

impl DslError {
    /// Builds an error at byte `offset` of `src`, saying what was expected there.
    pub fn at(src: &str, offset: usize, expected: impl Into<String>) -> Self {
        let offset = floor_char_boundary(src, offset.min(src.len()));
        let line_start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
        let line = src[..line_start].bytes().filter(|&b| b == b'\n').count() + 1;
        let column = src[line_start..offset].chars().count() + 1;
        let source_line = src[line_start..line_end].trim_end_matches('\r').to_string();
        DslError { line, column, expected: expected.into(), source_line, tune: None }
    }

    pub fn in_tune(mut self, x: u32) -> Self {
        self.tune = Some(x);
        self
    }
}

impl fmt::Display for DslError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "line {}, column {}: expected {}", self.line, self.column, self.expected)?;
        writeln!(f, "{}", self.source_line)?;
        // Tabs in the line keep their width under the caret by being echoed as tabs.
        let pad: String =
            self.source_line.chars().take(self.column - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        write!(f, "{pad}^")
    }
}

/// The largest char boundary at or below `i` (offsets from byte-level scanning may land inside
/// a multi-byte character of a title or lyric).
fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_under_the_column() {
        let src = "X:1\nK:C\nAB?C\n";
        let e = DslError::at(src, 10, "a note");
        assert_eq!((e.line, e.column), (3, 3));
        assert_eq!(e.to_string(), "line 3, column 3: expected a note\nAB?C\n  ^");
    }

    #[test]
    fn columns_count_characters() {
        let src = "T:Käse\nK:C ?";
        let e = DslError::at(src, src.len() - 1, "x");
        assert_eq!((e.line, e.column), (2, 5));
        let e = DslError::at(src, 4, "x"); // inside 'ä'
        assert_eq!((e.line, e.column), (1, 4));
        let e = DslError::at(src, src.len(), "x");
        assert_eq!((e.line, e.column), (2, 6));
    }
}
