//! The syntax tree of one ABC tune: what was written, with byte spans into the source text.
//!
//! Nodes borrow `&str` slices from the source so parsing allocates only the item vectors.
//! Nothing here knows about ticks or keys; `lower` gives the tree its musical meaning.

/// A byte range `[start, end)` in the whole source text (not the tune), so diagnostics can name
/// the line and column of the file the user wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }
}

/// A note length as written, relative to the unit length `L:`: `2` is 2/1, `/` is 1/2,
/// `3/2` is 3/2, `//` is 1/4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub num: u32,
    pub den: u32,
}

impl Length {
    pub const ONE: Length = Length { num: 1, den: 1 };
}

impl Default for Length {
    fn default() -> Self {
        Length::ONE
    }
}

/// An explicit accidental in front of a note: `^^ ^ = _ __`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accidental {
    DoubleSharp,
    Sharp,
    Natural,
    Flat,
    DoubleFlat,
}

impl Accidental {
    /// Semitones this accidental sets the letter to (natural = 0).
    pub fn semitones(self) -> i8 {
        match self {
            Accidental::DoubleSharp => 2,
            Accidental::Sharp => 1,
            Accidental::Natural => 0,
            Accidental::Flat => -1,
            Accidental::DoubleFlat => -2,
        }
    }
}

/// A written pitch: letter, optional accidental, octave. `C` is octave 0 (middle C), `c` is 1,
/// each `'` adds one and each `,` takes one away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pitch {
    pub accidental: Option<Accidental>,
    /// 0 = C .. 6 = B.
    pub letter: u8,
    pub octave: i8,
}

/// A note: pitch, length, and whether a tie `-` follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note {
    pub pitch: Pitch,
    pub length: Length,
    pub tie: bool,
    pub span: Span,
}

/// What kind of rest: `z` (sounding rest), `x` (invisible rest), `Z`/`X` (whole bars).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestKind {
    Rest,
    Invisible,
    /// `Z4`: the length counts bars, not units.
    Bars,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rest {
    pub kind: RestKind,
    pub length: Length,
    pub span: Span,
}

/// `[CEG]2`: notes sounding together; the chord's length multiplies each note's own length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chord {
    pub notes: Vec<Note>,
    pub length: Length,
    pub tie: bool,
    pub span: Span,
}

/// `(p:q:r`: the next `r` notes take the time of `q`, `p` of them written. Missing numbers are
/// `None` and get ABC's defaults in `lower` (they depend on the meter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuplet {
    pub p: u32,
    pub q: Option<u32>,
    pub r: Option<u32>,
    pub span: Span,
}

/// `>` (dotted then short) or `<` (short then dotted), repeated 1-3 times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broken {
    /// True for `>`: the note before gets longer.
    pub first_long: bool,
    pub count: u8,
    pub span: Span,
}

/// The bar line family. Repeat signs and endings are what `lower` cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// `|`, `.|`
    Single,
    /// `||`
    Double,
    /// `|]` (end of piece)
    Final,
    /// `[|` (start)
    Thick,
    /// `|:`
    RepeatStart,
    /// `:|` (and `:||`, `:|]`)
    RepeatEnd,
    /// `::`, `:|:`, `:||:`
    RepeatBoth,
}

/// An ending number list: `[1`, `|2`, `[1,3`, `[1-3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The passes this ending plays on (1-based).
    pub passes: Vec<u32>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    pub kind: BarKind,
    /// `:|2` and `|1` carry an ending right after the bar.
    pub ending: Option<Ending>,
    pub span: Span,
}

/// A `X:value` field, either on its own line or inline as `[K:D]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    /// The field letter (`K`, `M`, ...), as an ASCII byte.
    pub name: u8,
    /// The value after the colon, trimmed, comment removed.
    pub value: &'a str,
    pub span: Span,
    /// Where `value` starts in the source (for errors inside the value).
    pub value_start: usize,
}

/// One thing in the tune body, in written order.
// An explicit tag byte: without it the variant hides in a niche of `Bar`'s fields and every
// `match` on an item (the lowering loop makes one per item) has to decode it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[repr(u8)]
pub enum Item<'a> {
    Note(Note),
    Rest(Rest),
    Chord(Chord),
    /// `{ga}`: grace notes before the next note (`acciaccatura` when written `{/g}`).
    Grace(Vec<Note>, Span),
    Tuplet(Tuplet),
    Broken(Broken),
    Bar(Bar),
    /// `[2` after a bar line that did not carry it.
    Ending(Ending),
    /// `!trill!`, `~`, `.`, `H` ... : kept by name; `!p!`-style dynamics set velocity.
    Decoration(&'a str, Span),
    /// `"Am"` chord symbols and `"^text"` annotations (the raw text between quotes).
    Annotation(&'a str, Span),
    /// A field line in the body or an inline field.
    Field(Field<'a>),
    /// `%%name rest-of-line` inside the body.
    Directive(&'a str, Span),
    SlurStart(Span),
    SlurEnd(Span),
}

impl Item<'_> {
    pub fn span(&self) -> Span {
        match self {
            Item::Note(n) => n.span,
            Item::Rest(r) => r.span,
            Item::Chord(c) => c.span,
            Item::Grace(_, s) => *s,
            Item::Tuplet(t) => t.span,
            Item::Broken(b) => b.span,
            Item::Bar(b) => b.span,
            Item::Ending(e) => e.span,
            Item::Decoration(_, s) | Item::Annotation(_, s) | Item::Directive(_, s) => *s,
            Item::Field(f) => f.span,
            Item::SlurStart(s) | Item::SlurEnd(s) => *s,
        }
    }
}

/// One tune: its header fields (X: through K:) and its body, in written order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tune<'a> {
    /// The `X:` number (0 when the tune had none, e.g. a bare fragment typed at the REPL).
    pub x: u32,
    pub span: Span,
    pub header: Vec<Field<'a>>,
    /// `%%` directives in the header (file header directives come first).
    pub directives: Vec<(&'a str, Span)>,
    pub body: Vec<Item<'a>>,
    /// What a lenient parse skipped: (byte offset, what was expected there), in source order.
    pub skipped: Vec<(usize, &'static str)>,
}
