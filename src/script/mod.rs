//! The Rhai engine and the API it exposes; the one module that wires the others together.
//!
//! A [`Session`] owns one Rhai `Engine` and `Scope`. Each line (or script) is compiled, its
//! functions are merged into the session's library (so `fn f() {}` on one line is callable on the
//! next, as in rhai's own `rhai-repl`), its statements are run, and the statements are dropped.
//! Every run happens under an operation limit and a cancel flag checked in `on_progress`, so a
//! runaway `loop {}` ends on Ctrl-C and a loop body can never freeze the music.

pub mod api;
pub mod error;
pub mod guard;
pub mod help;
pub mod loops;
pub mod sandbox;
pub mod stage;
pub mod takes;

pub use error::ScriptError;
use error::{eval_error, to_error};
use guard::guarded;
pub use guard::{cancelled, Limits, LOOP_LIMITS};
use rhai::{Dynamic, Engine, ParseErrorType, Scope, AST};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Longest string a script may make or read (Rhai refuses longer ones).
pub const MAX_STRING_BYTES: usize = 16 << 20;

/// Most elements in a script's array, counted through nested arrays and maps. Rhai checks it by
/// walking the whole array after every call that touches it, so filling one with `push` costs
/// the square of its length: at the 4 M elements allowed before, a `push` loop ran for hours;
/// 131,072 pushes take 8 s (measured with a training run holding both cores), and Ctrl-C stops
/// them at any point. A `Score` of any length is one element; `score.notes` lists up to this
/// many notes.
pub const MAX_ARRAY_LEN: usize = 1 << 17;
/// Most entries in a script's map, counted through nested maps and arrays (filling a map does
/// not walk it: 262,144 entries take under a second).
pub const MAX_MAP_LEN: usize = 1 << 20;

/// Where a session's text output goes: stdout for batch runs, rustyline's external printer
/// (above the prompt) in the REPL, a buffer in tests. Called from any thread.
pub type Output = Arc<dyn Fn(&str) + Send + Sync>;

/// An output that writes lines to stdout.
pub fn stdout_output() -> Output {
    Arc::new(|s: &str| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{s}");
        let _ = out.flush();
    })
}

/// An output that collects lines in memory (tests, `-e`).
pub fn buffer_output() -> (Output, Arc<Mutex<Vec<String>>>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let out: Output = Arc::new(move |s: &str| {
        if let Ok(mut v) = b.lock() {
            v.push(s.to_string());
        }
    });
    (out, buf)
}

/// Options for a new session.
pub struct Options {
    /// No MIDI ports at all: `play` and loops are scheduled but sound nowhere (batch tests).
    pub no_midi: bool,
    /// Output port to open (substring of its name); `None` opens a virtual port `cadenza`.
    pub port: Option<String>,
    /// Model for `gen` until `model(...)` changes it.
    pub model: String,
    /// Load the model in a background thread at start (the REPL: the prompt appears at once).
    pub preload: bool,
    pub limits: Limits,
    pub output: Output,
    /// More outputs for the play engine besides the MIDI port (a recorder in tests).
    pub outputs: Vec<Box<dyn crate::sink::out::MidiOut>>,
    /// Run the play engine on this fake clock: `sleep` and `wait` move it, nothing waits for
    /// real time (tests, rendering a script faster than it plays).
    pub clock: Option<crate::play::FakeClock>,
    /// When the play engine starts, install its SIGTERM/SIGHUP/SIGQUIT and panic handlers
    /// (every note off on the way out). For programs, not for sessions inside tests.
    pub exit_handlers: bool,
    /// The folders scripts may read and write (the working folder by default).
    pub sandbox: sandbox::Sandbox,
    /// Where takes are kept as JSON lines (none: in memory only).
    pub takes_file: Option<std::path::PathBuf>,
}

impl Options {
    pub fn new(output: Output) -> Self {
        Options {
            no_midi: false,
            port: None,
            model: crate::model::DEFAULT_MODEL.to_string(),
            preload: false,
            limits: Limits::default(),
            output,
            outputs: Vec::new(),
            clock: None,
            exit_handlers: false,
            sandbox: sandbox::Sandbox::new(&[]).unwrap_or_else(|_| sandbox::Sandbox::closed()),
            takes_file: None,
        }
    }
}

/// State shared between the session, its registered functions and its loop threads.
pub struct Ctx {
    pub output: Output,
    pub engine: Mutex<Option<Arc<Engine>>>,
    /// The session's function library (statements cleared), read by loop threads each cycle so
    /// redefining a function changes what a running loop plays.
    pub lib: Arc<Mutex<AST>>,
    pub stage: Arc<stage::Stage>,
    /// The text being run now (loop bodies keep it to point at their errors later).
    source: Mutex<String>,
}

impl Ctx {
    /// The text of the entry being run.
    pub fn current_source(&self) -> String {
        self.source.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn print(&self, s: &str) {
        (self.output)(s)
    }

    pub fn engine(&self) -> Option<Arc<Engine>> {
        self.engine.lock().ok().and_then(|e| e.clone())
    }
}

/// One scripting session: engine, variables, functions, and the music it started.
pub struct Session {
    engine: Arc<Engine>,
    scope: Scope<'static>,
    lib: Arc<Mutex<AST>>,
    cancel: Arc<AtomicBool>,
    limits: Limits,
    ctx: Arc<Ctx>,
}

impl Session {
    pub fn new(mut options: Options) -> Session {
        let lib = Arc::new(Mutex::new(AST::empty()));
        let stage = Arc::new(stage::Stage::new(&mut options));
        let ctx = Arc::new(Ctx {
            output: options.output.clone(),
            engine: Mutex::new(None),
            lib: lib.clone(),
            stage,
            source: Mutex::new(String::new()),
        });
        let mut engine = Engine::new();
        engine.set_max_call_levels(96);
        engine.set_max_expr_depths(128, 64);
        engine.set_max_string_size(MAX_STRING_BYTES);
        engine.set_max_array_size(MAX_ARRAY_LEN);
        engine.set_max_map_size(MAX_MAP_LEN);
        engine.on_progress(guard::on_progress);
        let out = options.output.clone();
        engine.on_print(move |s| out(s));
        let out = options.output.clone();
        engine.on_debug(move |s, _src, pos| {
            if pos.is_none() {
                out(&format!("debug: {s}"))
            } else {
                out(&format!("debug (line {}): {s}", pos.line().unwrap_or(0)))
            }
        });
        api::register(&mut engine, &ctx);
        let engine = Arc::new(engine);
        if let Ok(mut e) = ctx.engine.lock() {
            *e = Some(engine.clone());
        }
        if options.preload {
            ctx.stage.preload_model();
        }
        let mut scope = Scope::new();
        // Scripts read their arguments from ARGS; empty unless `cadenza run FILE ARGS...`.
        scope.push("ARGS", rhai::Array::new());
        Session { engine, scope, lib, cancel: Arc::new(AtomicBool::new(false)), limits: options.limits, ctx }
    }

    /// The flag that cancels the running line: set it from a SIGINT handler (Ctrl-C).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancel.clone()
    }

    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Names of the variables in scope (for completion).
    pub fn variables(&self) -> Vec<String> {
        self.scope.iter_raw().map(|(name, _, _)| name.to_string()).collect()
    }

    /// Names of script functions defined so far (for completion).
    pub fn functions(&self) -> Vec<String> {
        self.lib.lock().map(|l| l.iter_functions().map(|f| f.name.to_string()).collect()).unwrap_or_default()
    }

    /// True when `text` is an unfinished expression (see [`is_incomplete`]).
    pub fn is_incomplete(&self, text: &str) -> bool {
        is_incomplete(text)
    }

    /// Runs `text` (one REPL entry or a whole script) and returns the value of its last
    /// statement. Functions it defines stay for later calls; on error nothing of it is kept.
    pub fn eval(&mut self, text: &str) -> Result<Dynamic, ScriptError> {
        self.cancel.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.ctx.source.lock() {
            *s = text.to_string();
        }
        let src = rewrite_loop_calls(text);
        let ast = self.engine.compile_with_scope(&self.scope, &src).map_err(|e| {
            let message = e.0.to_string();
            to_error(text, e.1, message, true)
        })?;
        let mut lib = match self.lib.lock() {
            Ok(l) => l.clone(),
            Err(_) => AST::empty(),
        };
        lib += ast;
        // Publish the functions (closures included) before running: a loop started by this
        // entry calls its body from the engine's worker thread while the entry still runs.
        let mut functions = lib.clone();
        functions.clear_statements();
        if let Ok(mut l) = self.lib.lock() {
            *l = functions;
        }
        let engine = self.engine.clone();
        let scope = &mut self.scope;
        let result = guarded(self.cancel.clone(), self.limits, || engine.eval_ast_with_scope::<Dynamic>(scope, &lib));
        // Functions stay defined even when the entry fails, as in rhai-repl: a later line may
        // fix the call that failed.
        result.map_err(|e| eval_error(text, *e))
    }

    /// Runs a script file (its path is used in messages).
    pub fn eval_file(&mut self, path: &std::path::Path) -> Result<Dynamic, ScriptError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ScriptError::File { path: path.display().to_string(), reason: e.to_string() })?;
        // A `#!` line is a comment for the shell, not Rhai.
        let text = match text.strip_prefix("#!") {
            Some(rest) => format!("//{rest}"),
            None => text,
        };
        self.eval(&text)
    }

    /// Sets a variable (script arguments, `ARGS`).
    pub fn set_var(&mut self, name: &str, value: Dynamic) {
        self.scope.set_or_push(name.to_string(), value);
    }

    /// Formats a value for the REPL's `=> ...` line (None for unit).
    pub fn describe(&self, v: &Dynamic) -> Option<String> {
        if v.is_unit() {
            return None;
        }
        Some(api::describe(v))
    }

    /// Waits until everything started with `play` has sounded (and with `loops_too`, until
    /// every loop has been stopped and has ended), or until `cancel`.
    pub fn wait_idle(&self, cancel: &AtomicBool, loops_too: bool) -> bool {
        self.ctx.stage.wait_idle(cancel, loops_too)
    }

    /// Stops loops and music and turns every note off.
    pub fn shutdown(&self) {
        self.ctx.stage.shutdown()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.ctx.stage.shutdown();
        // Loop threads hold the Ctx; dropping the engine reference breaks the cycle.
        if let Ok(mut e) = self.ctx.engine.lock() {
            *e = None;
        }
    }
}

/// True when `text` is an unfinished expression (an open bracket, string or block) that the REPL
/// should continue on the next line rather than report. Parsing needs no registered functions,
/// so a bare engine answers (the line editor asks from its own thread, without the session).
pub fn is_incomplete(text: &str) -> bool {
    thread_local! {
        static PARSER: Engine = const { Engine::new_raw() };
    }
    let text = rewrite_loop_calls(text);
    PARSER.with(|engine| match engine.compile(&text) {
        Ok(_) => false,
        Err(e) => {
            let end = end_position(&text);
            match &*e.0 {
                ParseErrorType::UnexpectedEOF => true,
                ParseErrorType::BadInput(rhai::LexError::UnterminatedString) => true,
                ParseErrorType::MissingToken(..) | ParseErrorType::MissingSymbol(..) => {
                    e.1.is_none() || (e.1.line(), e.1.position()) >= (Some(end.0), Some(end.1))
                }
                _ => false,
            }
        }
    })
}

/// Line and column just past the end of `text` (1-based), where rhai reports end of input.
fn end_position(text: &str) -> (usize, usize) {
    let lines: Vec<&str> = text.split('\n').collect();
    let last = lines.last().map_or(0, |l| l.chars().count());
    (lines.len(), last + 1)
}

/// Rhai reserves `loop` for `loop { }`, but the music API wants `loop("name", |i| ...)`. A
/// `loop` followed by `(` can never be a loop statement, so such calls are rewritten to the
/// same-length name `Loop` (columns stay exact for carets). Strings and comments are skipped.
pub fn rewrite_loop_calls(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'`' | b'\'' => {
                let q = b[i];
                i += 1;
                while i < b.len() && b[i] != q {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let preceded_by_dot = start > 0 && b[start - 1] == b'.';
                if &b[start..i] == b"loop" && !preceded_by_dot {
                    let mut j = i;
                    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
                        j += 1;
                    }
                    if b.get(j) == Some(&b'(') {
                        out.push_str(&text[last..start]);
                        out.push_str("Loop");
                        last = i;
                    }
                }
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[last.min(text.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::guard::TOO_MANY_OPS;
    use super::*;

    fn session() -> (Session, Arc<Mutex<Vec<String>>>) {
        let (out, buf) = buffer_output();
        let mut o = Options::new(out);
        o.no_midi = true;
        (Session::new(o), buf)
    }

    #[test]
    fn loop_calls_are_rewritten_outside_strings() {
        assert_eq!(rewrite_loop_calls(r#"loop("a", |i| x)"#), r#"Loop("a", |i| x)"#);
        assert_eq!(rewrite_loop_calls("loop { x }"), "loop { x }");
        assert_eq!(rewrite_loop_calls(r#"print("loop(")"#), r#"print("loop(")"#);
        assert_eq!(rewrite_loop_calls("// loop(\nloop (1)"), "// loop(\nLoop (1)");
        assert_eq!(rewrite_loop_calls("myloop(1); s.loop(2)"), "myloop(1); s.loop(2)");
    }

    #[test]
    fn functions_survive_between_lines() {
        let (mut s, _) = session();
        let _ = s.eval("fn twice(x) { x * 2 }").unwrap();
        assert_eq!(s.eval("twice(21)").unwrap().as_int().unwrap(), 42);
        let _ = s.eval("let y = 5;").unwrap();
        assert_eq!(s.eval("twice(y)").unwrap().as_int().unwrap(), 10);
        assert!(s.functions().contains(&"twice".to_string()));
        assert!(s.variables().contains(&"y".to_string()));
    }

    #[test]
    fn incomplete_input_is_detected() {
        let (s, _) = session();
        assert!(s.is_incomplete("fn f() {"));
        assert!(s.is_incomplete("let x = [1, 2,"));
        assert!(s.is_incomplete("let t = `X:1\nK:D"));
        assert!(s.is_incomplete("print(1 +"));
        assert!(!s.is_incomplete("let x = 1;"));
        assert!(!s.is_incomplete("let x = );"));
        assert!(!s.is_incomplete("1 +* 2"));
    }

    #[test]
    fn errors_carry_a_caret_at_the_position() {
        let (mut s, _) = session();
        let e = s.eval("let x = 1 + undefined_var;").unwrap_err();
        assert_eq!(e.position(), Some((1, 13)));
        let text = e.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "let x = 1 + undefined_var;");
        assert_eq!(lines[1].find('^'), Some(12), "{text}");
        assert!(lines[1].contains("Variable not found"), "{text}");
        // An error inside a closure points inside the closure.
        let e = s.eval("let f = |x| x + nope_var; f.call(1)").unwrap_err();
        assert_eq!(e.position(), Some((1, 17)), "{e}");
        let e = s.eval("let y = (1 + ;").unwrap_err();
        assert!(matches!(e, ScriptError::Parse { .. }), "{e:?}");
    }

    #[test]
    fn runaway_loops_hit_the_limit_and_cancel_flag() {
        let (out, _) = buffer_output();
        let mut o = Options::new(out);
        o.no_midi = true;
        o.limits = Limits { max_operations: 100_000 };
        let mut s = Session::new(o);
        let e = s.eval("loop { }").unwrap_err();
        assert!(e.to_string().contains(TOO_MANY_OPS), "{e}");
        // Cancel from another thread while the line runs.
        let (out, _) = buffer_output();
        let mut o = Options::new(out);
        o.no_midi = true;
        o.limits = Limits { max_operations: 0 };
        let mut s = Session::new(o);
        let flag = s.cancel_flag();
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        // Keep setting the flag until the line returns: eval clears it when it starts, and the
        // order of the two threads is not known.
        let t = std::thread::spawn(move || {
            while !d.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
                flag.store(true, Ordering::SeqCst);
            }
        });
        let e = s.eval("let n = 0; loop { n += 1; }");
        done.store(true, Ordering::SeqCst);
        t.join().unwrap();
        assert!(matches!(e, Err(ScriptError::Cancelled)), "{e:?}");
        // The session is still usable.
        assert_eq!(s.eval("1 + 1").unwrap().as_int().unwrap(), 2);
    }
}
