//! Leaving without a hanging note: a [`Silencer`] any thread can use, the SIGTERM/SIGHUP/SIGQUIT
//! handler and the panic hook that turn every sounding note off before the process ends.

use super::player::Stats;
use super::sequencer::{At, Command};
use super::threads::PLAYER_THREAD;
use super::transport::{PlayError, Transport};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long to let outputs deliver the final note-offs before the process exits.
pub const EXIT_GRACE: Duration = Duration::from_millis(100);

impl Transport {
    /// A handle that can silence the player from anywhere (signal handlers, panic hooks).
    pub fn silencer(&self) -> Silencer {
        Silencer {
            stats: self.stats.clone(),
            commands: Arc::new(Mutex::new(self.commands.lock().unwrap_or_else(|p| p.into_inner()).clone())),
        }
    }

    /// On SIGTERM, SIGHUP or SIGQUIT: every sounding note off (and CC 123), then exit with
    /// 128 + the signal. Ctrl-C (SIGINT) is left to the REPL, which stops the music itself.
    pub fn install_exit_handlers(&self) -> Result<(), PlayError> {
        use signal_hook::consts::{SIGHUP, SIGQUIT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGHUP, SIGQUIT])
            .map_err(|e| PlayError::Signals(e.to_string()))?;
        let silencer = self.silencer();
        std::thread::Builder::new()
            .name("cadenza-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    silencer.silence(Duration::from_millis(500));
                    // Some backends (JACK) deliver from their own callback a period later;
                    // exiting at once would lose the note-offs just sent.
                    std::thread::sleep(EXIT_GRACE);
                    std::process::exit(128 + sig);
                }
            })
            .map_err(|e| PlayError::Thread { what: "signal", reason: e.to_string() })?;
        Ok(())
    }

    /// A panic in any thread turns every sounding note off (then the previous hook runs).
    pub fn install_panic_hook(&self) {
        let silencer = self.silencer();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The player silences itself while unwinding (its Drop); waiting on it here would hang.
            if std::thread::current().name() != Some(PLAYER_THREAD) {
                silencer.silence(Duration::from_millis(200));
            }
            previous(info);
        }));
    }
}

/// Silences the player from another thread: panic hooks, signal handlers.
#[derive(Clone)]
pub struct Silencer {
    stats: Arc<Stats>,
    commands: Arc<Mutex<Sender<Command>>>,
}

impl Silencer {
    /// Asks the player to turn every note off and stop playing what is queued, and the
    /// sequencer to stop everything; waits up to `timeout` for the player. True when done.
    pub fn silence(&self, timeout: Duration) -> bool {
        let target = self.stats.silence_requests.fetch_add(1, Ordering::AcqRel) + 1;
        if let Ok(tx) = self.commands.try_lock() {
            let _ = tx.send(Command::StopAll { at: At::Now });
        }
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.stats.silenced.load(Ordering::Acquire) >= target || !self.stats.running.load(Ordering::Acquire) {
                return self.stats.silenced.load(Ordering::Acquire) >= target;
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        false
    }
}
