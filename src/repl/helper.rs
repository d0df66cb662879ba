//! The line editor's helper: completion, signature hints, syntax highlighting, multi-line input.

use super::commands::COMMANDS;
use crate::script::{help, Session};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::{CmdKind, Highlighter};
use rustyline::hint::{Hinter, HistoryHinter};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// Names the completer offers beyond the API: refreshed after every entry.
#[derive(Debug, Default, Clone)]
pub struct Names {
    pub variables: Vec<String>,
    pub functions: Vec<String>,
    pub models: Vec<String>,
    pub styles: Vec<String>,
    pub ports: Vec<String>,
}

/// Updates `names` from the session (variables, functions, models, styles, ports).
pub fn refresh(names: &Mutex<Names>, session: &Session) {
    let stage = &session.ctx().stage;
    let n = Names {
        variables: session.variables(),
        functions: session.functions(),
        models: stage.models(),
        styles: stage.styles(),
        ports: stage.cached_ports(),
    };
    if let Ok(mut g) = names.lock() {
        *g = n;
    }
}

const KEYWORDS: &[&str] = &[
    "let", "const", "fn", "if", "else", "for", "in", "while", "loop", "do", "until", "return", "break", "continue",
    "true", "false", "switch", "throw", "try", "catch", "import", "export", "as", "private", "this", "global",
];

const GREY: &str = "\x1b[90m";
const RESET: &str = "\x1b[0m";
const KEYWORD: &str = "\x1b[35m";
const API: &str = "\x1b[36m";
const STRING: &str = "\x1b[32m";
const NUMBER: &str = "\x1b[33m";
const COMMAND: &str = "\x1b[1;34m";

pub struct CadenzaHelper {
    names: Arc<Mutex<Names>>,
    files: FilenameCompleter,
    history_hints: HistoryHinter,
}

impl CadenzaHelper {
    pub fn new(names: Arc<Mutex<Names>>) -> Self {
        CadenzaHelper { names, files: FilenameCompleter::new(), history_hints: HistoryHinter::new() }
    }

    fn names(&self) -> Names {
        self.names.lock().map(|n| n.clone()).unwrap_or_default()
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Start (byte index) of the identifier-like word ending at `pos`.
fn word_start(line: &str, pos: usize) -> usize {
    line[..pos].char_indices().rev().take_while(|(_, c)| is_ident(*c)).last().map_or(pos, |(i, _)| i)
}

/// If `pos` is inside a string literal, the byte index where the literal's text starts.
fn open_string(line: &str, pos: usize) -> Option<usize> {
    let mut quote: Option<(char, usize)> = None;
    let mut escaped = false;
    for (i, c) in line[..pos].char_indices() {
        match quote {
            Some((q, _)) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some((c, i + 1)),
            None => {}
        }
    }
    quote.map(|(_, start)| start)
}

/// The name of the function whose call's argument list contains `pos` (`model("fo|` → model).
fn enclosing_call(line: &str, pos: usize) -> Option<String> {
    let before = &line[..pos];
    let mut depth = 0i32;
    for (i, c) in before.char_indices().rev() {
        match c {
            ')' | ']' | '}' => depth += 1,
            '(' | '[' | '{' if depth > 0 => depth -= 1,
            '(' => {
                let start = word_start(before, i);
                let name = &before[start..i];
                return (!name.is_empty()).then(|| name.to_string());
            }
            '[' | '{' => return None,
            _ => {}
        }
    }
    None
}

fn pairs(prefix: &str, items: impl IntoIterator<Item = String>) -> Vec<Pair> {
    let mut v: Vec<String> = items.into_iter().filter(|s| s.starts_with(prefix)).collect();
    v.sort();
    v.dedup();
    v.into_iter().map(|s| Pair { display: s.clone(), replacement: s }).collect()
}

impl Completer for CadenzaHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let names = self.names();
        if let Some(rest) = line.strip_prefix(':') {
            let cmd_end = 1 + rest.find(char::is_whitespace).unwrap_or(rest.len());
            if pos <= cmd_end {
                return Ok((1, pairs(&line[1..pos], COMMANDS.iter().map(|(c, _)| c.to_string()))));
            }
            let cmd = &line[1..cmd_end];
            if cmd == "help" {
                let start = word_start(line, pos);
                let topics = help::TOPICS.iter().map(|t| t.name.to_string());
                return Ok((
                    start,
                    pairs(&line[start..pos], topics.chain(COMMANDS.iter().map(|(c, _)| c.to_string()))),
                ));
            }
            if cmd == "load" || cmd == "save-history" {
                return self.files.complete(line, pos, ctx);
            }
            return Ok((pos, Vec::new()));
        }
        if let Some(start) = open_string(line, pos) {
            let prefix = &line[start..pos];
            let call = enclosing_call(line, pos).unwrap_or_default();
            let items: Vec<String> = match call.as_str() {
                "model" | "score_ll" => names.models.clone(),
                "style" | "with_style" => names.styles.clone(),
                "out" => names.ports.clone(),
                "instrument" => crate::script::api::instrument_names(),
                "help" => help::TOPICS.iter().map(|t| t.name.to_string()).collect(),
                "load" | "save" | "abc" => return self.files.complete(line, pos, ctx),
                _ => {
                    let mut all = names.models.clone();
                    all.extend(names.styles.clone());
                    all.extend(names.ports.clone());
                    all
                }
            };
            return Ok((start, pairs(prefix, items)));
        }
        let start = word_start(line, pos);
        let prefix = &line[start..pos];
        if prefix.is_empty() {
            return Ok((pos, Vec::new()));
        }
        let after_dot = start > 0 && line[..start].ends_with('.');
        let mut items: Vec<String> = Vec::new();
        if after_dot {
            items.extend(help::METHODS.iter().map(|s| s.to_string()));
        } else {
            items.extend(help::TOPICS.iter().map(|t| t.name.to_string()));
            items.extend(names.variables.iter().cloned());
            items.extend(names.functions.iter().cloned());
            items.extend(KEYWORDS.iter().map(|s| s.to_string()));
        }
        Ok((start, pairs(prefix, items)))
    }
}

impl Hinter for CadenzaHelper {
    type Hint = String;

    /// At the end of `name(`, the rest of that function's signature; otherwise history.
    fn hint(&self, line: &str, pos: usize, ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        if let Some(before) = line.strip_suffix('(') {
            let start = word_start(before, before.len());
            let name = &before[start..];
            if let Some(t) = help::TOPICS.iter().find(|t| t.name == name) {
                if let Some(rest) = t.signature.strip_prefix(name).and_then(|r| r.strip_prefix('(')) {
                    return Some(rest.to_string());
                }
            }
        }
        self.history_hints.hint(line, pos, ctx)
    }
}

/// Colours `line`: keywords, API functions, strings, numbers, comments, colon commands.
pub fn highlight_line(line: &str) -> String {
    if line.starts_with(':') {
        let end = line.find(char::is_whitespace).unwrap_or(line.len());
        return format!("{COMMAND}{}{RESET}{}", &line[..end], &line[end..]);
    }
    let mut out = String::with_capacity(line.len() * 2);
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut i = 0;
    let at = |k: usize| chars.get(k).map(|c| c.1);
    while i < chars.len() {
        let (b, c) = chars[i];
        if c == '/' && at(i + 1) == Some('/') {
            out.push_str(GREY);
            out.push_str(&line[b..]);
            out.push_str(RESET);
            break;
        }
        if c == '"' || c == '`' || c == '\'' {
            let mut j = i + 1;
            while j < chars.len() && chars[j].1 != c {
                if chars[j].1 == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = chars.get(j + 1).map_or(line.len(), |x| x.0);
            out.push_str(STRING);
            out.push_str(&line[b..end]);
            out.push_str(RESET);
            i = j + 1;
            continue;
        }
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len() && (chars[j].1.is_ascii_alphanumeric() || chars[j].1 == '.' || chars[j].1 == '_') {
                j += 1;
            }
            let end = chars.get(j).map_or(line.len(), |x| x.0);
            out.push_str(NUMBER);
            out.push_str(&line[b..end]);
            out.push_str(RESET);
            i = j;
            continue;
        }
        if is_ident(c) {
            let mut j = i;
            while j < chars.len() && is_ident(chars[j].1) {
                j += 1;
            }
            let end = chars.get(j).map_or(line.len(), |x| x.0);
            let word = &line[b..end];
            let color = if KEYWORDS.contains(&word) {
                Some(KEYWORD)
            } else if help::TOPICS.iter().any(|t| t.name == word) || help::METHODS.contains(&word) {
                Some(API)
            } else {
                None
            };
            match color {
                Some(col) => {
                    out.push_str(col);
                    out.push_str(word);
                    out.push_str(RESET);
                }
                None => out.push_str(word),
            }
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

impl Highlighter for CadenzaHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Owned(highlight_line(line))
    }

    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("{GREY}{hint}{RESET}"))
    }

    fn highlight_char(&self, _line: &str, _pos: usize, _kind: CmdKind) -> bool {
        // Colours depend on whole words and open strings: redraw on every change.
        true
    }
}

impl Validator for CadenzaHelper {
    /// An unfinished expression continues on the next line; two empty lines submit anyway
    /// (so a mistake shows its error instead of waiting forever).
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        if input.trim_start().starts_with(':') {
            return Ok(ValidationResult::Valid(None));
        }
        let blank_tail = input.split('\n').rev().take_while(|l| l.trim().is_empty()).count();
        if blank_tail >= 2 || !crate::script::is_incomplete(input) {
            return Ok(ValidationResult::Valid(None));
        }
        Ok(ValidationResult::Incomplete)
    }
}

impl Helper for CadenzaHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calls_and_strings() {
        assert_eq!(enclosing_call("model(\"fo", 9).as_deref(), Some("model"));
        assert_eq!(enclosing_call("gen(s, #{style: style(\"ir", 25).as_deref(), Some("style"));
        assert_eq!(open_string("model(\"fo", 9), Some(7));
        assert_eq!(open_string("a(\"x\") + b", 10), None);
        assert_eq!(word_start("let x = tra", 11), 8);
    }

    #[test]
    fn highlights_words_strings_and_numbers() {
        let h = highlight_line("let s = abc(\"K:D\") // tune");
        assert_eq!(h, format!("{KEYWORD}let{RESET} s = {API}abc{RESET}({STRING}\"K:D\"{RESET}) {GREY}// tune{RESET}"));
        assert_eq!(highlight_line("x + 12"), format!("x + {NUMBER}12{RESET}"));
        assert_eq!(highlight_line(":help gen"), format!("{COMMAND}:help{RESET} gen"));
    }
}
