//! Script errors as the user sees them: the offending line with a caret under the column, and
//! Rhai's runtime errors unwrapped so the message says what went wrong.

use super::guard::TOO_MANY_OPS;
use rhai::{EvalAltResult, Position};

/// What can go wrong running script text. `Display` shows the offending line with a caret.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// The text does not parse; `line`/`column` are 1-based within the submitted text.
    #[error("{}", caret(.source_line, *.line, *.column, .message, *.multi_line))]
    Parse { line: usize, column: usize, source_line: String, message: String, multi_line: bool },
    /// Running it failed (a runtime error, a failing API call, a limit).
    #[error("{}", caret(.source_line, *.line, *.column, .message, *.multi_line))]
    Eval { line: usize, column: usize, source_line: String, message: String, multi_line: bool },
    /// Failed with no position to point at.
    #[error("{message}")]
    NoPosition { message: String },
    /// Stopped by Ctrl-C (or `stop`), not an error in the script.
    #[error("cancelled")]
    Cancelled,
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

impl ScriptError {
    /// 1-based (line, column) of the error, if it has one.
    pub fn position(&self) -> Option<(usize, usize)> {
        match self {
            ScriptError::Parse { line, column, .. } | ScriptError::Eval { line, column, .. } => Some((*line, *column)),
            _ => None,
        }
    }
}

/// `source_line` with a caret under `column` and the message after it; with a line-number prefix
/// when the input had several lines.
fn caret(source_line: &str, line: usize, column: usize, message: &str, multi_line: bool) -> String {
    let prefix = if multi_line { format!("{line}: ") } else { String::new() };
    let width = prefix.chars().count() + source_line.chars().take(column.saturating_sub(1)).count();
    let mut out = format!("{prefix}{source_line}\n");
    for (i, m) in message.lines().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&" ".repeat(width));
        out.push_str(if i == 0 { "^ " } else { "| " });
        out.push_str(m);
    }
    out
}

/// Builds a positioned error from a rhai position within `text`.
pub(crate) fn to_error(text: &str, pos: Position, message: String, parse: bool) -> ScriptError {
    let (Some(line), Some(column)) = (pos.line(), pos.position().or(Some(1))) else {
        return ScriptError::NoPosition { message };
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let source_line = lines.get(line - 1).copied().unwrap_or("").trim_end_matches('\r').to_string();
    let multi_line = lines.iter().filter(|l| !l.trim().is_empty()).count() > 1;
    if parse {
        ScriptError::Parse { line, column, source_line, message, multi_line }
    } else {
        ScriptError::Eval { line, column, source_line, message, multi_line }
    }
}

/// Turns a rhai runtime error into ours, unwrapping the error inside a function call so the
/// message says what went wrong rather than only "in call to function".
pub(crate) fn eval_error(text: &str, e: EvalAltResult) -> ScriptError {
    let pos = e.position();
    match e {
        EvalAltResult::ErrorTerminated(v, _) => {
            if v.clone().into_string().ok().as_deref() == Some(TOO_MANY_OPS) {
                to_error(text, pos, format!("{TOO_MANY_OPS}: stopped a line that ran too long"), false)
            } else {
                ScriptError::Cancelled
            }
        }
        EvalAltResult::ErrorInFunctionCall(name, _src, inner, p) => {
            // The call site is in `text`; the inner error is inside the function body (also in
            // some earlier line), so point at the call and say where inside it failed.
            if matches!(*inner, EvalAltResult::ErrorTerminated(..)) {
                return eval_error(text, *inner);
            }
            // A closure (`|i| ...`) has no name worth showing and was written in this text:
            // point at the failing spot inside it.
            if name.starts_with("anon$") && inner.position().line().is_some_and(|l| l <= text.split('\n').count()) {
                return eval_error(text, *inner);
            }
            let inner_line = inner.position().line();
            let inner_msg = strip_position(*inner);
            let inner_msg = match inner_line {
                Some(l) => format!("{inner_msg} (line {l} of `{name}`)"),
                None => inner_msg,
            };
            to_error(text, p, format!("in `{name}`: {inner_msg}"), false)
        }
        other => {
            let message = strip_position(other);
            to_error(text, pos, message, false)
        }
    }
}

/// A rhai error's message without its trailing ` (line L, position P)`.
fn strip_position(mut e: EvalAltResult) -> String {
    e.clear_position();
    match e {
        EvalAltResult::ErrorRuntime(v, _) => v.to_string(),
        // Rhai says only "too large": name the bound, so the fix is plain.
        EvalAltResult::ErrorDataTooLarge(what, _) => {
            let bound = if what.contains("string") {
                format!("a string may hold at most {} bytes", super::MAX_STRING_BYTES)
            } else if what.contains("map") {
                format!("a map may hold at most {} entries (nested maps and arrays count)", super::MAX_MAP_LEN)
            } else {
                format!("an array may hold at most {} elements (nested arrays and maps count)", super::MAX_ARRAY_LEN)
            };
            format!("{what} too large: {bound}")
        }
        other => other.to_string(),
    }
}
