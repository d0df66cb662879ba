//! The nom parser: ABC text → [`ast::Tune`]s. One method per rule of `grammar/abc.ebnf`, named
//! after the rule.
//!
//! The file is split into tunes by lines first (a tune starts at `X:` and ends at a blank line),
//! so one broken tune never hides the others. Inside a music line the parser looks at the first
//! byte to pick the rule, and every rule works on `&str` slices: nothing is copied.

use super::ast::*;
use super::diagnostics::DslError;
use nom::bytes::complete::take_while1;
use nom::character::complete::{char, digit1, one_of};
use nom::combinator::opt;
use nom::error::{ErrorKind, ParseError};
use nom::IResult;

/// A parse failure: where it happened and what the rule wanted there.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PErr<'a> {
    pub input: &'a str,
    pub expected: &'static str,
}

impl<'a> ParseError<&'a str> for PErr<'a> {
    fn from_error_kind(input: &'a str, kind: ErrorKind) -> Self {
        let expected = match kind {
            ErrorKind::Digit => "a number",
            ErrorKind::OneOf => "a note letter",
            _ => "valid ABC",
        };
        PErr { input, expected }
    }

    fn append(_: &'a str, _: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, PErr<'a>>;

/// A rule's nom result as a plain `Result` for `?` in `music_line`.
#[inline]
fn lift<'a, T>(at: &'a str, r: PResult<'a, T>) -> Result<(&'a str, T), PErr<'a>> {
    match r {
        Ok(ok) => Ok(ok),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(e),
        Err(nom::Err::Incomplete(_)) => Err(PErr { input: at, expected: "more input" }),
    }
}

/// Fails for good (no backtracking) at `input`, saying what was expected.
fn fail<'a, T>(input: &'a str, expected: &'static str) -> PResult<'a, T> {
    Err(nom::Err::Failure(PErr { input, expected }))
}

/// Where one tune's text lies in the file, found by [`Parser::file`] before it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuneSlice {
    /// The `X:` number, `None` for text with no `X:` line (a fragment).
    pub x: Option<u32>,
    pub start: usize,
    pub end: usize,
}

/// The parser over one source text. Rules are methods so they can turn slices into absolute
/// spans (`offset`) without threading a position through nom's input.
pub struct Parser<'a> {
    pub src: &'a str,
    /// Skip what does not parse in a music line (one character at a time, each noted in the
    /// tune's `skipped`) instead of failing the tune, as abc2midi reads real collections.
    pub lenient: bool,
}

/// Most characters a lenient parse skips in one tune before it gives the tune up: a text that
/// is mostly not ABC is better refused than read as a few stray notes.
pub const MAX_SKIPPED: usize = 64;

/// Lines of `text` starting at byte `base`: (offset, line without `\n` / `\r\n`).
fn lines_at(text: &str, base: usize) -> Lines<'_> {
    Lines { text, at: 0, base }
}

/// The iterator of [`lines_at`]. ABC lines are short (about 20 bytes), where `str::lines`
/// spends more on setting up its search than on searching; this one looks at 8 bytes a step.
struct Lines<'a> {
    text: &'a str,
    /// Start of the next line in `text`.
    at: usize,
    /// Offset of `text` in the source.
    base: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a str);

    #[inline]
    fn next(&mut self) -> Option<(usize, &'a str)> {
        let b = self.text.as_bytes();
        let start = self.at;
        if start >= b.len() {
            return None;
        }
        let end = find_newline(b, start);
        self.at = end + 1;
        let mut line = &self.text[start..end.min(b.len())];
        if let Some(l) = line.strip_suffix('\r') {
            line = l;
        }
        Some((self.base + start, line))
    }
}

/// Index of the first `\n` in `b` at or after `from`, or `b.len()` (memchr's SIMD search).
#[inline]
fn find_newline(b: &[u8], from: usize) -> usize {
    memchr::memchr(b'\n', &b[from..]).map_or(b.len(), |i| from + i)
}

/// `line` without its first two bytes when they are `a` and `b` (a two-byte compare; the
/// generic `strip_prefix` called `memcmp` once per line).
#[inline]
pub(crate) fn strip2(line: &str, a: u8, b: u8) -> Option<&str> {
    let bytes = line.as_bytes();
    (bytes.len() >= 2 && bytes[0] == a && bytes[1] == b).then(|| &line[2..])
}

fn is_blank(line: &str) -> bool {
    line.bytes().all(|b| b == b' ' || b == b'\t')
}

/// `K:`-style field line: a letter (or `+`) then a colon.
fn field_letter(line: &str) -> Option<u8> {
    let b = line.as_bytes();
    if b.len() >= 2 && b[1] == b':' && (b[0].is_ascii_alphabetic() || b[0] == b'+') {
        Some(b[0])
    } else {
        None
    }
}

/// In the body a line like `A:|` or `e:|` is music, not a field: note letters never start a
/// body field (ABC's body fields are K L M P Q T V W w and friends).
fn body_field_letter(line: &str) -> Option<u8> {
    field_letter(line).filter(|b| !matches!(b, b'A'..=b'G' | b'a'..=b'g'))
}

/// The value of a field: after the colon, up to a `%` comment, trimmed.
fn field_value(rest: &str) -> &str {
    let b = rest.as_bytes();
    let mut end = b.len();
    for i in 0..b.len() {
        if b[i] == b'%' && (i == 0 || b[i - 1] != b'\\') {
            end = i;
            break;
        }
    }
    rest[..end].trim()
}

/// The accidental `b` starts with, if any, and its length in bytes.
#[inline]
fn accidental_at(b: &[u8]) -> (usize, Option<Accidental>) {
    match b {
        [b'^', b'^', ..] => (2, Some(Accidental::DoubleSharp)),
        [b'_', b'_', ..] => (2, Some(Accidental::DoubleFlat)),
        [b'^', ..] => (1, Some(Accidental::Sharp)),
        [b'_', ..] => (1, Some(Accidental::Flat)),
        [b'=', ..] => (1, Some(Accidental::Natural)),
        _ => (0, None),
    }
}

/// The octave marks `b` starts with: their length and the octaves they move (clamped to ±10).
#[inline]
fn octave_marks(b: &[u8]) -> (usize, i8) {
    let mut n = 0i32;
    let mut k = 0;
    while let Some(&c) = b.get(k) {
        match c {
            b'\'' => n += 1,
            b',' => n -= 1,
            _ => break,
        }
        k += 1;
    }
    (k, n.clamp(-10, 10) as i8)
}

/// The run of ASCII digits `b` starts with: its length and its value (`None` when it does not
/// fit a `u32`, as `str::parse` would say).
#[inline]
fn digits(b: &[u8]) -> (usize, Option<u32>) {
    let mut value = Some(0u32);
    let mut k = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(k) {
        value = value.and_then(|v| v.checked_mul(10)?.checked_add((c - b'0') as u32));
        k += 1;
    }
    (k, value)
}

/// Leading decimal digits of `s` as a number (`X: 12 ` → 12).
fn leading_number(s: &str) -> Option<u32> {
    let d: &str = &s[..s.bytes().take_while(u8::is_ascii_digit).count()];
    d.parse().ok()
}

impl<'a> Parser<'a> {
    pub fn new(src: &'a str) -> Self {
        Parser { src, lenient: false }
    }

    /// A parser that skips what does not parse in music lines (see [`Parser::lenient`]).
    pub fn lenient(src: &'a str) -> Self {
        Parser { src, lenient: true }
    }

    /// Byte offset of a slice of `src` (every input the rules see is one).
    fn offset(&self, rest: &str) -> usize {
        rest.as_ptr() as usize - self.src.as_ptr() as usize
    }

    fn span(&self, from: &str, to: &str) -> Span {
        Span::new(self.offset(from), self.offset(to))
    }

    pub fn error(&self, e: PErr<'_>) -> DslError {
        DslError::at(self.src, self.offset(e.input), e.expected)
    }

    /// file = file_header tune* : finds where each tune is. A tune starts at an `X:` line and
    /// ends at the first blank line or the next `X:`. Text with no `X:` at all is one tune.
    pub fn file(&self) -> (Vec<(usize, &'a str)>, Vec<TuneSlice>) {
        let mut header_lines = Vec::new();
        let mut tunes: Vec<TuneSlice> = Vec::new();
        let mut open = false;
        for (off, line) in lines_at(self.src, 0) {
            if let Some(rest) = strip2(line, b'X', b':') {
                if open {
                    if let Some(t) = tunes.last_mut() {
                        t.end = off;
                    }
                }
                tunes.push(TuneSlice { x: Some(leading_number(rest.trim_start()).unwrap_or(0)), start: off, end: 0 });
                open = true;
            } else if open && is_blank(line) {
                if let Some(t) = tunes.last_mut() {
                    t.end = off;
                }
                open = false;
            } else if tunes.is_empty() {
                header_lines.push((off, line));
            }
        }
        if open {
            if let Some(t) = tunes.last_mut() {
                t.end = self.src.len();
            }
        }
        if tunes.is_empty() {
            return (Vec::new(), vec![TuneSlice { x: None, start: 0, end: self.src.len() }]);
        }
        (header_lines, tunes)
    }

    /// The `%%` directives and fields of the file header (before the first tune); they apply to
    /// every tune as defaults.
    pub fn file_header(&self, lines: &[(usize, &'a str)]) -> (Vec<Field<'a>>, Vec<(&'a str, Span)>) {
        let mut fields = Vec::new();
        let mut directives = Vec::new();
        for &(off, line) in lines {
            if let Some(d) = strip2(line, b'%', b'%') {
                directives.push((d.trim(), Span::new(off, off + line.len())));
            } else if line.starts_with('%') {
                continue;
            } else if let Some(name) = field_letter(line) {
                fields.push(self.field_line(off, name, line));
            }
        }
        (fields, directives)
    }

    fn field_line(&self, off: usize, name: u8, line: &'a str) -> Field<'a> {
        let value = field_value(&line[2..]);
        let value_start = self.offset(value);
        Field { name, value, span: Span::new(off, off + line.len()), value_start }
    }

    /// tune = header body : header fields up to and including `K:`, then body lines.
    pub fn tune(&self, slice: TuneSlice) -> Result<Tune<'a>, DslError> {
        self.tune_in(slice, Vec::new())
    }

    /// [`Parser::tune`] reusing `body`'s allocation (a file's tunes are parsed one after the
    /// other; the item vector is the largest allocation of the parse).
    pub fn tune_in(&self, slice: TuneSlice, mut body: Vec<Item<'a>>) -> Result<Tune<'a>, DslError> {
        let text = &self.src[slice.start..slice.end];
        body.clear();
        // Real tunes have about one item per three bytes; reserving avoids regrowth.
        body.reserve(text.len() / 3);
        // Room for a typical header (X T M L K and a few more) without regrowth.
        let header = Vec::with_capacity(12);
        let mut tune =
            Tune { x: slice.x.unwrap_or(0), span: Span::new(slice.start, slice.end), header, body, ..Tune::default() };
        let mut in_body = false;
        for (off, line) in lines_at(text, slice.start) {
            if let Some(d) = strip2(line, b'%', b'%') {
                let span = Span::new(off, off + line.len());
                if in_body {
                    tune.body.push(Item::Directive(d.trim(), span));
                } else {
                    tune.directives.push((d.trim(), span));
                }
                continue;
            }
            if line.starts_with('%') {
                continue;
            }
            if !in_body {
                if let Some(name) = field_letter(line) {
                    let f = self.field_line(off, name, line);
                    tune.header.push(f);
                    in_body = name == b'K';
                    continue;
                }
                if is_blank(line) {
                    continue;
                }
                // Music before any `K:` (a fragment typed at the REPL): the body starts here.
                in_body = true;
            }
            if let Some(name) = body_field_letter(line) {
                tune.body.push(Item::Field(self.field_line(off, name, line)));
                continue;
            }
            let mut rest = line;
            while let Err(e) = self.music_line(rest, &mut tune.body) {
                if !self.lenient || tune.skipped.len() >= MAX_SKIPPED {
                    return Err(self.error(e));
                }
                tune.skipped.push((self.offset(e.input), e.expected));
                // Go on one character past where the element failed (an element pushes its
                // item only once it has parsed whole, so nothing half-read is kept).
                let mut chars = e.input.chars();
                chars.next();
                rest = chars.as_str();
            }
        }
        Ok(tune)
    }

    /// music_line = element* comment? : every element of one line, appended to `items`.
    pub fn music_line(&self, line: &'a str, items: &mut Vec<Item<'a>>) -> Result<(), PErr<'a>> {
        // Each arm pushes its item straight into `items`: wrapping items in a common result
        // type first cost a copy of every item, which showed in the corpus benchmark.
        let mut i = line;
        while let Some(&b) = i.as_bytes().first() {
            i = match b {
                b' ' | b'\t' | b'`' | b'$' | b'y' | b'*' | b';' => &i[1..],
                // A comment or a line continuation ends the line.
                b'%' | b'\\' => return Ok(()),
                b'A'..=b'G' | b'a'..=b'g' | b'^' | b'_' | b'=' => {
                    let (r, n) = lift(i, self.note(i))?;
                    items.push(Item::Note(n));
                    r
                }
                b'z' | b'x' | b'Z' | b'X' => {
                    let (r, n) = lift(i, self.rest(i))?;
                    items.push(Item::Rest(n));
                    r
                }
                b'[' => match i.as_bytes().get(1) {
                    Some(b'0'..=b'9') => {
                        let (r, e) = lift(i, self.ending(i))?;
                        items.push(Item::Ending(e));
                        r
                    }
                    Some(b'|') => {
                        let (r, e) = lift(i, self.bar_line(i))?;
                        items.push(Item::Bar(e));
                        r
                    }
                    Some(c) if c.is_ascii_alphabetic() && i.as_bytes().get(2) == Some(&b':') => {
                        let (r, f) = lift(i, self.inline_field(i))?;
                        items.push(Item::Field(f));
                        r
                    }
                    _ => {
                        let (r, c) = lift(i, self.chord(i))?;
                        items.push(Item::Chord(c));
                        r
                    }
                },
                b'|' | b':' => {
                    let (r, e) = lift(i, self.bar_line(i))?;
                    items.push(Item::Bar(e));
                    r
                }
                b'.' if i.as_bytes().get(1) == Some(&b'|') => {
                    let (r, e) = lift(i, self.bar_line(&i[1..]))?;
                    items.push(Item::Bar(e));
                    r
                }
                b'{' => {
                    let (r, (g, s)) = lift(i, self.grace(i))?;
                    items.push(Item::Grace(g, s));
                    r
                }
                b'(' => match i.as_bytes().get(1) {
                    Some(b'2'..=b'9') => {
                        let (r, t) = lift(i, self.tuplet(i))?;
                        items.push(Item::Tuplet(t));
                        r
                    }
                    _ => {
                        items.push(Item::SlurStart(self.span(i, &i[1..])));
                        &i[1..]
                    }
                },
                b')' => {
                    items.push(Item::SlurEnd(self.span(i, &i[1..])));
                    &i[1..]
                }
                b'>' | b'<' => {
                    let (r, t) = lift(i, self.broken_rhythm(i))?;
                    items.push(Item::Broken(t));
                    r
                }
                b'"' => {
                    let (r, (a, s)) = lift(i, self.annotation(i))?;
                    items.push(Item::Annotation(a, s));
                    r
                }
                b'!' | b'+' | b'~' | b'.' | b'H'..=b'W' | b'h'..=b'w' => {
                    let (r, d) = lift(i, self.decoration(i))?;
                    if let Some((d, s)) = d {
                        items.push(Item::Decoration(d, s));
                    }
                    r
                }
                b'-' => {
                    // A tie written apart from its note (`A -B`, `"C"-`): tie the last note.
                    tie_last(items);
                    &i[1..]
                }
                _ => return Err(PErr { input: i, expected: "a note, rest, chord, bar line or decoration" }),
            };
        }
        Ok(())
    }

    /// note = pitch length tie?
    pub fn note(&self, i: &'a str) -> PResult<'a, Note> {
        let start = i;
        let (i, pitch) = self.pitch(i)?;
        // Most notes have no length: skip the call for those.
        let (i, length) = match i.as_bytes().first() {
            Some(b'0'..=b'9' | b'/') => self.length(i)?,
            _ => (i, Length::ONE),
        };
        let (i, tie) = match i.as_bytes().first() {
            Some(b'-') => (&i[1..], true),
            _ => (i, false),
        };
        Ok((i, Note { pitch, length, tie, span: self.span(start, i) }))
    }

    /// pitch = accidental? letter octave
    // Notes are most of every tune, so the note rules read bytes directly instead of composing
    // nom combinators: each combinator layer cost a result wrap and a re-check of the input.
    #[inline]
    pub fn pitch(&self, i: &'a str) -> PResult<'a, Pitch> {
        let b = i.as_bytes();
        let (k, accidental) = accidental_at(b);
        let (letter, octave) = match b.get(k) {
            Some(&c @ b'C'..=b'G') => (c - b'C', 0i8),
            Some(&c @ (b'A' | b'B')) => (c - b'A' + 5, 0),
            Some(&c @ b'c'..=b'g') => (c - b'c', 1),
            Some(&c @ (b'a' | b'b')) => (c - b'a' + 5, 1),
            _ => return fail(&i[k..], "a note letter A-G or a-g"),
        };
        let (m, marks) = octave_marks(&b[k + 1..]);
        Ok((&i[k + 1 + m..], Pitch { accidental, letter, octave: octave.saturating_add(marks) }))
    }

    /// accidental = "^^" | "^" | "=" | "__" | "_"
    pub fn accidental(&self, i: &'a str) -> PResult<'a, Accidental> {
        match accidental_at(i.as_bytes()) {
            (k, Some(a)) => Ok((&i[k..], a)),
            (_, None) => Err(nom::Err::Error(PErr { input: i, expected: "an accidental" })),
        }
    }

    /// octave = ("'" | ",")* : each `'` raises an octave, each `,` lowers one.
    pub fn octave(&self, i: &'a str) -> PResult<'a, i8> {
        let (k, marks) = octave_marks(i.as_bytes());
        Ok((&i[k..], marks))
    }

    /// length = number? ("/" number? | "/"+)? : `2`, `/2`, `/`, `//`, `3/2`, `3/`.
    #[inline]
    pub fn length(&self, i: &'a str) -> PResult<'a, Length> {
        // Most notes have no length at all: answer those before anything else.
        let b = i.as_bytes();
        match b.first() {
            Some(b'0'..=b'9' | b'/') => {}
            _ => return Ok((i, Length::ONE)),
        }
        let (n_len, num) = digits(b);
        let num = match num {
            _ if n_len == 0 => 1,
            Some(n) if n > 0 && n <= 4096 => n,
            Some(0) => return fail(&i[..n_len], "a length above zero"),
            _ => return fail(&i[..n_len], "a length up to 4096"),
        };
        let slashes = b[n_len..].iter().take_while(|&&c| c == b'/').count();
        let (run, i) = i[n_len..].split_at(slashes);
        match slashes {
            0 => Ok((i, Length { num, den: 1 })),
            1 => {
                let (d_len, den) = digits(i.as_bytes());
                let den = match den {
                    _ if d_len == 0 => 2,
                    Some(n) if n > 0 && n <= 4096 => n,
                    _ => return fail(&i[..d_len], "a length divisor from 1 to 4096"),
                };
                Ok((&i[d_len..], Length { num, den }))
            }
            13.. => fail(run, "at most 12 slashes"),
            _ => Ok((i, Length { num, den: 1 << slashes })),
        }
    }

    /// rest = ("z" | "x" | "Z" | "X") length
    pub fn rest(&self, i: &'a str) -> PResult<'a, Rest> {
        let start = i;
        let (i, c) = one_of("zxZX")(i)?;
        let kind = match c {
            'z' => RestKind::Rest,
            'x' => RestKind::Invisible,
            _ => RestKind::Bars,
        };
        let (i, length) = self.length(i)?;
        Ok((i, Rest { kind, length, span: self.span(start, i) }))
    }

    /// chord = "[" (note | decoration | annotation | space)+ "]" length tie?
    pub fn chord(&self, i: &'a str) -> PResult<'a, Chord> {
        let start = i;
        let (mut i, _) = char('[')(i)?;
        let mut notes = Vec::with_capacity(4);
        loop {
            match i.as_bytes().first() {
                Some(b']') => break,
                // Slurs may open or close inside a chord (`[E4(e4]`); they do not sound.
                Some(b' ' | b'\t' | b'(' | b')') => i = &i[1..],
                Some(b'A'..=b'G' | b'a'..=b'g' | b'^' | b'_' | b'=') => {
                    let (r, n) = self.note(i)?;
                    notes.push(n);
                    i = r;
                }
                Some(b'"') => i = self.annotation(i)?.0,
                Some(b'!' | b'+' | b'~' | b'.' | b'H'..=b'W' | b'h'..=b'w') => i = self.decoration(i)?.0,
                Some(b'-') => {
                    if let Some(n) = notes.last_mut() {
                        n.tie = true;
                    }
                    i = &i[1..];
                }
                _ => return fail(i, "a note or `]` to close the chord"),
            }
        }
        if notes.is_empty() {
            return fail(i, "a note inside the chord");
        }
        let i = &i[1..];
        let (i, length) = self.length(i)?;
        let (i, tie) = opt(char('-'))(i)?;
        Ok((i, Chord { notes, length, tie: tie.is_some(), span: self.span(start, i) }))
    }

    /// grace = "{" "/"? (note | chord | space)+ "}" : grace notes before the next note.
    pub fn grace(&self, i: &'a str) -> PResult<'a, (Vec<Note>, Span)> {
        let start = i;
        let (i, _) = char('{')(i)?;
        let (mut i, _) = opt(char('/'))(i)?;
        let mut notes = Vec::with_capacity(4);
        loop {
            match i.as_bytes().first() {
                Some(b'}') => break,
                Some(b' ' | b'\t' | b'-' | b'(' | b')' | b'>' | b'<') => i = &i[1..],
                Some(b'A'..=b'G' | b'a'..=b'g' | b'^' | b'_' | b'=') => {
                    let (r, n) = self.note(i)?;
                    notes.push(n);
                    i = r;
                }
                // A chord inside a grace group: its first note stands for it.
                Some(b'[') => {
                    let (r, c) = self.chord(i)?;
                    notes.push(c.notes[0]);
                    i = r;
                }
                Some(b'!' | b'+' | b'~' | b'.' | b'H'..=b'W' | b'h'..=b'w') => i = self.decoration(i)?.0,
                _ => return fail(i, "a grace note or `}`"),
            }
        }
        let i = &i[1..];
        Ok((i, (notes, self.span(start, i))))
    }

    /// tuplet = "(" digit (":" digit?)? (":" digit?)? : `(3`, `(3:2`, `(3:2:3`, `(3::2`.
    pub fn tuplet(&self, i: &'a str) -> PResult<'a, Tuplet> {
        let start = i;
        let (i, _) = char('(')(i)?;
        let (i, p) = digit1(i)?;
        let number =
            |d: &'a str| d.parse::<u32>().map_err(|_| nom::Err::Failure(PErr { input: d, expected: "a small number" }));
        let p = number(p)?;
        let (i, q) = opt(|i| {
            let (i, _) = char(':')(i)?;
            opt(digit1)(i)
        })(i)?;
        let (i, r) = match q {
            Some(_) => opt(|i| {
                let (i, _) = char(':')(i)?;
                opt(digit1)(i)
            })(i)?,
            None => (i, None),
        };
        let q = q.flatten().map(number).transpose()?;
        let r = r.flatten().map(number).transpose()?;
        if p < 2 || q == Some(0) || r == Some(0) || p > 64 {
            return fail(start, "a tuplet `(p:q:r` with p from 2 to 64");
        }
        Ok((i, Tuplet { p, q, r, span: self.span(start, i) }))
    }

    /// broken_rhythm = ">"{1,3} | "<"{1,3}
    pub fn broken_rhythm(&self, i: &'a str) -> PResult<'a, Broken> {
        let first_long = i.starts_with('>');
        let (rest, run) = take_while1(|c| c == if first_long { '>' } else { '<' })(i)?;
        if run.len() > 3 {
            return fail(i, "at most three `>` or `<`");
        }
        Ok((rest, Broken { first_long, count: run.len() as u8, span: self.span(i, rest) }))
    }

    /// bar_line = "[|" | ":"* "|"+ "]"? ":"* | ":"+ , then an optional ending number (`:|2`).
    pub fn bar_line(&self, i: &'a str) -> PResult<'a, Bar> {
        // Bar lines come every few notes: read the bytes directly (see `pitch`).
        let start = i;
        let b = i.as_bytes();
        let thick = b.starts_with(b"[|");
        let from = if thick { 2 } else { 0 };
        let mut k = from;
        while let Some(b':' | b'|') = b.get(k) {
            k += 1;
        }
        let run = &b[from..k];
        let close = (run.last() == Some(&b'|') || (thick && run.is_empty())) && b.get(k) == Some(&b']');
        if close {
            k += 1;
        }
        let i = &i[k..];
        let lead = run.iter().take_while(|&&b| b == b':').count();
        let trail = run.iter().rev().take_while(|&&b| b == b':').count();
        let pipes = run.iter().filter(|&&b| b == b'|').count();
        let kind = if pipes == 0 {
            if run.is_empty() {
                BarKind::Thick
            } else {
                BarKind::RepeatBoth
            }
        } else if lead > 0 && trail > 0 {
            BarKind::RepeatBoth
        } else if lead > 0 {
            BarKind::RepeatEnd
        } else if trail > 0 {
            BarKind::RepeatStart
        } else if thick {
            BarKind::Thick
        } else if close {
            BarKind::Final
        } else if pipes >= 2 {
            BarKind::Double
        } else {
            BarKind::Single
        };
        let bar_end = i;
        let (i, ending) = if i.as_bytes().first().is_some_and(u8::is_ascii_digit) {
            let (i, passes) = self.ending_list(i)?;
            (i, Some(Ending { passes, span: self.span(bar_end, i) }))
        } else {
            (i, None)
        };
        Ok((i, Bar { kind, ending, span: self.span(start, i) }))
    }

    /// ending = "[" ending_list
    pub fn ending(&self, i: &'a str) -> PResult<'a, Ending> {
        let start = i;
        let (i, _) = char('[')(i)?;
        let (i, passes) = self.ending_list(i)?;
        Ok((i, Ending { passes, span: self.span(start, i) }))
    }

    /// ending_list = number (("," | "-") number)* : `1`, `1,3`, `1-3`.
    pub fn ending_list(&self, i: &'a str) -> PResult<'a, Vec<u32>> {
        let mut passes = Vec::with_capacity(2);
        let (mut i, first) = digit1(i)?;
        let mut last = first.parse::<u32>().unwrap_or(1).min(64);
        passes.push(last);
        loop {
            let sep = i.as_bytes().first().copied();
            if !matches!(sep, Some(b',' | b'-')) || !i.as_bytes().get(1).is_some_and(u8::is_ascii_digit) {
                break;
            }
            let (r, d) = digit1(&i[1..])?;
            let n = d.parse::<u32>().unwrap_or(1).min(64);
            if sep == Some(b'-') {
                passes.extend(last + 1..=n);
            } else {
                passes.push(n);
            }
            last = n;
            i = r;
        }
        Ok((i, passes))
    }

    /// inline_field = "[" letter ":" text "]"
    pub fn inline_field(&self, i: &'a str) -> PResult<'a, Field<'a>> {
        let start = i;
        let name = i.as_bytes()[1];
        let body = &i[3..];
        let Some(close) = body.find(']') else { return fail(body, "`]` closing the inline field") };
        let raw = &body[..close];
        let value = raw.trim();
        let rest = &body[close + 1..];
        Ok((rest, Field { name, value, span: self.span(start, rest), value_start: self.offset(value) }))
    }

    /// annotation = '"' text '"' : a chord symbol (`"Am"`) or a text annotation (`"^rit."`).
    pub fn annotation(&self, i: &'a str) -> PResult<'a, (&'a str, Span)> {
        let body = &i[1..];
        let Some(close) = body.find('"') else { return fail(i, "a closing `\"` on the same line") };
        let rest = &body[close + 1..];
        Ok((rest, (&body[..close], self.span(i, rest))))
    }

    /// decoration = "!" name "!" | "+" name "+" | one of `~ . H..W h..w`.
    /// A lone `!` (old ABC's line break) or `+` decorates nothing and is skipped.
    pub fn decoration(&self, i: &'a str) -> PResult<'a, Option<(&'a str, Span)>> {
        let b = i.as_bytes()[0];
        if b == b'!' || b == b'+' {
            let body = &i[1..];
            let end = body.find(b as char).filter(|&e| e > 0 && !body[..e].contains(' '));
            return match end {
                Some(e) => {
                    let rest = &body[e + 1..];
                    Ok((rest, Some((&body[..e], self.span(i, rest)))))
                }
                None => Ok((&i[1..], None)),
            };
        }
        Ok((&i[1..], Some((&i[..1], self.span(i, &i[1..])))))
    }
}

/// Marks the last note or chord in `items` as tied.
fn tie_last(items: &mut [Item<'_>]) {
    for item in items.iter_mut().rev() {
        match item {
            Item::Note(n) => {
                n.tie = true;
                return;
            }
            Item::Chord(c) => {
                c.tie = true;
                return;
            }
            Item::Annotation(..) | Item::Decoration(..) | Item::SlurEnd(_) | Item::SlurStart(_) => continue,
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(line: &str) -> Vec<Item<'_>> {
        let p = Parser::new(line);
        let mut v = Vec::new();
        p.music_line(line, &mut v).unwrap();
        v
    }

    #[test]
    fn lengths() {
        let p = Parser::new("");
        let cases = [
            ("2", 2, 1),
            ("/2", 1, 2),
            ("/", 1, 2),
            ("//", 1, 4),
            ("3/2", 3, 2),
            ("3/", 3, 2),
            ("", 1, 1),
            ("///", 1, 8),
        ];
        for (s, num, den) in cases {
            let (_, l) = p.length(s).unwrap();
            assert_eq!((l.num, l.den), (num, den), "{s}");
        }
    }

    #[test]
    fn notes_and_pitches() {
        let v = items("^^C,, _e' =f/ c'3/2-");
        let Item::Note(n) = &v[0] else { panic!() };
        assert_eq!(n.pitch, Pitch { accidental: Some(Accidental::DoubleSharp), letter: 0, octave: -2 });
        let Item::Note(n) = &v[1] else { panic!() };
        assert_eq!((n.pitch.letter, n.pitch.octave, n.pitch.accidental), (2, 2, Some(Accidental::Flat)));
        let Item::Note(n) = &v[3] else { panic!() };
        assert!(n.tie);
        assert_eq!((n.length.num, n.length.den), (3, 2));
    }

    #[test]
    fn bar_lines_and_endings() {
        let kinds = |s| {
            items(s)
                .into_iter()
                .filter_map(|i| match i {
                    Item::Bar(b) => Some((b.kind, b.ending.map(|e| e.passes))),
                    Item::Ending(e) => Some((BarKind::Single, Some(e.passes))),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        use BarKind::*;
        assert_eq!(
            kinds("| || |] [| |: :| :: :|2 [1,3"),
            vec![
                (Single, None),
                (Double, None),
                (Final, None),
                (Thick, None),
                (RepeatStart, None),
                (RepeatEnd, None),
                (RepeatBoth, None),
                (RepeatEnd, Some(vec![2])),
                (Single, Some(vec![1, 3]))
            ]
        );
        assert_eq!(kinds("|1-3"), vec![(Single, Some(vec![1, 2, 3]))]);
    }

    #[test]
    fn errors_point_at_the_culprit() {
        let src = "AB ?C";
        let p = Parser::new(src);
        let mut v = Vec::new();
        let e = p.music_line(src, &mut v).unwrap_err();
        assert_eq!(p.offset(e.input), 3);
        let src = "A [CE";
        let p = Parser::new(src);
        let e = p.music_line(src, &mut v).unwrap_err();
        assert_eq!((p.offset(e.input), e.expected), (5, "a note or `]` to close the chord"));
    }
}
