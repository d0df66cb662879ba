//! What stops script code: the cancel flag (Ctrl-C, `stop`) and the operation limit in force on
//! each thread, read by the Rhai engine's progress hook. Per thread, because loop bodies run
//! beside REPL lines and a Ctrl-C must stop only the line.

use rhai::Dynamic;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Limits for one run of script code.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Rhai operations one run may take (0: unlimited).
    pub max_operations: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Generous for a line typed live (a few seconds of pure script work); a model call is
        // one operation, so generation is not limited by this.
        Limits { max_operations: 200_000_000 }
    }
}

/// Limits for one cycle of a loop body: a body must finish well within a bar.
pub const LOOP_LIMITS: Limits = Limits { max_operations: 20_000_000 };

/// The cancel flag and limits in force on this thread; [`on_progress`] reads them.
struct Guard {
    cancel: Arc<AtomicBool>,
    limits: Limits,
}

thread_local! {
    static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
}

/// Runs `f` with `cancel` and `limits` in force for script code on this thread.
pub(crate) fn guarded<T>(cancel: Arc<AtomicBool>, limits: Limits, f: impl FnOnce() -> T) -> T {
    let previous = GUARD.with(|g| g.borrow_mut().replace(Guard { cancel, limits }));
    let out = f();
    GUARD.with(|g| *g.borrow_mut() = previous);
    out
}

/// Whether the code running on this thread has been asked to stop (API calls that wait, such
/// as a generation, poll this).
pub fn cancelled() -> bool {
    GUARD.with(|g| g.borrow().as_ref().is_some_and(|g| g.cancel.load(Ordering::Relaxed)))
}

/// The cancel flag of the code running on this thread, to hand to a worker.
pub(crate) fn current_cancel() -> Option<Arc<AtomicBool>> {
    GUARD.with(|g| g.borrow().as_ref().map(|g| g.cancel.clone()))
}

/// Marker values [`on_progress`] returns; turned back into errors by [`super::error::eval_error`].
pub(crate) const CANCELLED: &str = "cancelled (Ctrl-C)";
pub(crate) const TOO_MANY_OPS: &str = "operation limit reached";

/// The Rhai progress hook: stops the run on this thread when its cancel flag is raised or it
/// passes its operation limit.
pub(crate) fn on_progress(ops: u64) -> Option<Dynamic> {
    GUARD.with(|g| {
        let g = g.borrow();
        let g = g.as_ref()?;
        if g.cancel.load(Ordering::Relaxed) {
            Some(Dynamic::from(CANCELLED))
        } else if g.limits.max_operations > 0 && ops > g.limits.max_operations {
            Some(Dynamic::from(TOO_MANY_OPS))
        } else {
            None
        }
    })
}
