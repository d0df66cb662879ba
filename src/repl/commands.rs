//! Colon commands (`:help`, `:models`, `:ports`, `:loops`, `:stop`, `:panic`, `:load`, ...).

use crate::script::{help, Session};

/// What a colon command produced.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Text to print.
    Text(String),
    Quit,
    /// Save the history (to this file, or the default one).
    SaveHistory(Option<std::path::PathBuf>),
    /// Switch to vi (`true`) or emacs key bindings.
    EditMode(bool),
}

/// The commands, with one line each for `:help` and completion.
pub const COMMANDS: &[(&str, &str)] = &[
    ("help", ":help [fn]      this overview, or one function with an example"),
    ("models", ":models         models that can be loaded (* = current)"),
    ("ports", ":ports          MIDI output ports"),
    ("loops", ":loops          running loops, how far ahead each one's next cycle is made"),
    ("takes", ":takes [N]       the last N takes (default 10): replay(n), branch(n, ...), take(n)"),
    ("stop", ":stop           stop every loop (at its next boundary)"),
    ("panic", ":panic          stop everything now and send every note off"),
    ("load", ":load FILE      run a .rhai script in this session"),
    ("save-history", ":save-history [FILE]  write the history now"),
    ("vi", ":vi             vi key bindings"),
    ("emacs", ":emacs          emacs key bindings"),
    ("quit", ":quit           every note off, then exit (also Ctrl-D)"),
];

/// Runs `cmd` (the text after the colon).
pub fn run(session: &mut Session, cmd: &str) -> Outcome {
    let cmd = cmd.trim();
    let (name, arg) = match cmd.split_once(char::is_whitespace) {
        Some((n, a)) => (n, a.trim()),
        None => (cmd, ""),
    };
    let stage = &session.ctx().stage;
    match name {
        "help" | "h" | "?" => {
            if arg.is_empty() {
                let mut t = help::overview();
                t.push_str("\ncommands:\n");
                for (_, line) in COMMANDS {
                    t.push_str(&format!("  {line}\n"));
                }
                Outcome::Text(t)
            } else {
                let arg = arg.trim_start_matches(':');
                if let Some((_, line)) = COMMANDS.iter().find(|(n, _)| *n == arg) {
                    return Outcome::Text(line.to_string());
                }
                Outcome::Text(help::topic(arg).unwrap_or_else(|| help::unknown(arg)))
            }
        }
        "models" => {
            let current = stage.model_name();
            let models = stage.models();
            if models.is_empty() {
                return Outcome::Text(format!("no models found (current: {current}); see models/README"));
            }
            Outcome::Text(
                models
                    .iter()
                    .map(|m| if *m == current { format!("* {m}") } else { format!("  {m}") })
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        }
        "ports" => match stage.ports() {
            Ok(p) if p.is_empty() => Outcome::Text("no MIDI output ports".into()),
            Ok(p) => {
                Outcome::Text(p.iter().enumerate().map(|(i, n)| format!("{i}: {n}")).collect::<Vec<_>>().join("\n"))
            }
            Err(e) => Outcome::Text(format!("ports: {e}")),
        },
        "loops" => {
            let loops = stage.describe_loops();
            if loops.is_empty() {
                Outcome::Text("no loops running".into())
            } else {
                Outcome::Text(loops.join("\n"))
            }
        }
        "takes" => {
            let n = arg.parse::<usize>().unwrap_or(10);
            let all = stage.takes.list();
            if all.is_empty() {
                Outcome::Text("no takes yet: every gen and harmonize is one".into())
            } else {
                let lines: Vec<String> = all[all.len().saturating_sub(n)..].iter().map(|e| e.summary()).collect();
                Outcome::Text(lines.join("\n"))
            }
        }
        "stop" => {
            let n = stage.loops.names().len();
            stage.stop_all();
            Outcome::Text(format!("stopped {n} loop{}", if n == 1 { "" } else { "s" }))
        }
        "panic" => {
            stage.panic();
            Outcome::Text("panic: everything stopped, every note off".into())
        }
        "load" => {
            if arg.is_empty() {
                return Outcome::Text(":load needs a file: `:load scripts/first.rhai`".into());
            }
            match session.eval_file(std::path::Path::new(arg)) {
                Ok(v) => Outcome::Text(session.describe(&v).map(|d| format!("=> {d}")).unwrap_or_default()),
                Err(e) => Outcome::Text(format!("{arg}:\n{e}")),
            }
        }
        "save-history" => Outcome::SaveHistory((!arg.is_empty()).then(|| arg.into())),
        "vi" => Outcome::EditMode(true),
        "emacs" => Outcome::EditMode(false),
        "quit" | "q" | "exit" => Outcome::Quit,
        _ => Outcome::Text(format!("unknown command `:{name}`; :help lists them")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::takes::TakeEntry;
    use crate::script::{buffer_output, Options};

    fn text(o: Outcome) -> String {
        match o {
            Outcome::Text(t) => t,
            _ => panic!("expected text"),
        }
    }

    #[test]
    fn takes_lists_the_last_n_of_the_history() {
        let mut o = Options::new(buffer_output().0);
        o.no_midi = true;
        let mut session = Session::new(o);
        assert!(text(run(&mut session, "takes")).contains("no takes yet"));
        for seed in 1..=3 {
            let score = crate::dsl::parse("X:1\nK:D\nDFA|\n").unwrap();
            let opts = crate::script::stage::GenOpts { seed: Some(seed), ..Default::default() };
            let entry = TakeEntry {
                n: 0,
                unix_secs: 0,
                call: "gen".into(),
                prompt: None,
                opts,
                bpm: 120.0,
                record: None,
                copied_from: None,
                score,
            };
            session.ctx().stage.takes.add(entry);
        }
        let last_two = text(run(&mut session, "takes 2"));
        assert_eq!(last_two.lines().count(), 2, "{last_two}");
        assert!(last_two.lines().next().unwrap().contains("seed 2 "), "{last_two}");
        assert_eq!(text(run(&mut session, "takes")).lines().count(), 3);
    }
}
