//! Named live loops: a body re-run every cycle, replaced in place, the last good version kept.
//!
//! The play engine asks a loop's [`Producer`] for each coming cycle one cycle ahead, on a worker
//! thread of its own. Ours runs the Rhai body there under the loop limits and the loop's own
//! cancel flag, with the session's current function library (so redefining a function changes
//! what a running loop plays). Redefining a loop runs the new body at once, in the line that
//! redefines it: a body that fails is reported there and never replaces the one playing. A body
//! that fails on a later cycle is reported, and the engine keeps playing its last good cycle.

use super::{Ctx, LOOP_LIMITS};
use crate::play::{CycleRequest, Producer, ProducerError};
use crate::score::Score;
use rhai::{Dynamic, EvalAltResult, FnPtr, NativeCallContext, INT};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// What the session knows about one loop (the engine knows how it sounds).
struct LoopInfo {
    /// Cycles made by every version of this loop so far; a new version counts on from here.
    made: AtomicU64,
    /// The last cycle made without error.
    last_good: Mutex<Score>,
    /// Cancels the body of the version playing now (set when it is stopped or replaced).
    cancel: Mutex<Arc<AtomicBool>>,
}

/// The loops a session started, by name.
#[derive(Default)]
pub struct Loops {
    loops: Mutex<BTreeMap<String, Arc<LoopInfo>>>,
}

impl Loops {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<LoopInfo>>> {
        self.loops.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn names(&self) -> Vec<String> {
        self.map().keys().cloned().collect()
    }

    /// One line per loop for `:loops`, with its name.
    pub fn describe(&self) -> Vec<(String, String)> {
        self.map()
            .iter()
            .map(|(name, l)| {
                let last = l.last_good.lock().map(|s| s.summary()).unwrap_or_default();
                (name.clone(), format!("{name}: {} cycles made, last {last}", l.made.load(Ordering::Relaxed)))
            })
            .collect()
    }

    /// Forgets `name` and cancels its body; true when it was running.
    pub fn forget(&self, name: &str) -> bool {
        match self.map().remove(name) {
            Some(l) => {
                l.cancel.lock().unwrap_or_else(|p| p.into_inner()).store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    /// Forgets every loop.
    pub fn forget_all(&self) {
        for (_, l) in std::mem::take(&mut *self.map()) {
            l.cancel.lock().unwrap_or_else(|p| p.into_inner()).store(true, Ordering::SeqCst);
        }
    }
}

/// A cycle from what a body returned: a Score, or unit for one silent bar.
fn to_cycle(v: Dynamic) -> Result<Score, Box<EvalAltResult>> {
    if v.is_unit() {
        let mut s = Score::new();
        s.length = s.meter().bar_ticks();
        return Ok(s);
    }
    let type_name = v.type_name().to_string();
    match v.try_cast::<Score>() {
        Some(s) if s.length == 0 => {
            Err("a loop body returned a score of length 0; return a bar of rest instead".into())
        }
        Some(s) => Ok(s),
        None => Err(format!("a loop body must return a Score, not {type_name}").into()),
    }
}

/// The engine's producer for one version of a loop.
struct BodyProducer {
    ctx: Weak<Ctx>,
    info: Arc<LoopInfo>,
    body: FnPtr,
    /// The first cycle, already made by `define` (so its errors went to the line).
    first: Option<Score>,
    /// Cycle number of this version's cycle 0.
    base: u64,
    cancel: Arc<AtomicBool>,
    /// The entry that defined the body, for carets in errors of later cycles.
    source: String,
}

impl Producer for BodyProducer {
    fn next(&mut self, req: &CycleRequest) -> Result<Score, ProducerError> {
        let score = match self.first.take() {
            Some(s) => s,
            None => {
                let ctx = self.ctx.upgrade().ok_or("the session has ended")?;
                let engine = ctx.engine().ok_or("the session has ended")?;
                let lib = ctx.lib.lock().map(|l| l.clone()).unwrap_or_default();
                let i = self.base + req.cycle;
                let r = super::guard::guarded(self.cancel.clone(), LOOP_LIMITS, || {
                    self.body.call::<Dynamic>(&engine, &lib, (i as INT,)).and_then(to_cycle)
                });
                match r {
                    Ok(s) => s,
                    Err(_) if self.cancel.load(Ordering::Relaxed) => return Err("stopped".into()),
                    Err(e) => return Err(format!("cycle {i}:\n{}", super::error::eval_error(&self.source, *e)).into()),
                }
            }
        };
        self.info.made.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.info.last_good.lock() {
            *g = score.clone();
        }
        Ok(score)
    }
}

/// `loop(name, body)`: starts a loop, or replaces the body of the one with that name at the
/// end of its current cycle.
pub fn define(ctx: &Arc<Ctx>, nc: &NativeCallContext, name: &str, body: FnPtr) -> Result<(), Box<EvalAltResult>> {
    let base = made_so_far(ctx, name);
    // Run the new body now, in this line: its errors belong to the person typing it, and the
    // version playing is not touched.
    let first = body.call_within_context::<Dynamic>(nc, (base as INT,)).and_then(to_cycle)?;
    let source = ctx.current_source();
    start(ctx, name, first, |info, first, cancel| {
        Box::new(BodyProducer { ctx: Arc::downgrade(ctx), info, body, first: Some(first), base, cancel, source })
    })
}

/// How a generating loop (`loop(name, #{...})`) makes each cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopMode {
    /// Each cycle continues from the tail of what the loop just played.
    Continue,
    /// Each cycle is a new sample from the same prompt.
    Variation,
    /// Call and response: a bar of silence while the player plays; once they pause for
    /// `pause_bars` cycles after playing, the next cycle is the model's answer to what they
    /// played (at the next bar line), then it listens again.
    Answer { pause_bars: u32 },
}

/// What a generating loop was asked for.
pub struct GenLoop {
    pub prompt: Option<Score>,
    pub mode: LoopMode,
    /// A new cycle every `every` cycles; in between the last one plays again.
    pub every: u64,
    pub opts: super::stage::GenOpts,
}

impl GenLoop {
    /// The options for cycle `i`: a given seed moves on by the cycle number, so a seeded
    /// variation loop still varies and replays the same way.
    fn cycle_opts(&self, i: u64) -> super::stage::GenOpts {
        let mut o = self.opts.clone();
        o.seed = o.seed.map(|s| s.wrapping_add(i));
        o
    }
}

/// `loop(name, #{prompt, mode, every, bars, ...})`: a loop whose cycles the model makes, one
/// cycle ahead of when they are due (the first one now, in this line). Started or replaced as
/// a body loop is.
pub fn define_generating(ctx: &Arc<Ctx>, name: &str, spec: GenLoop) -> Result<(), Box<EvalAltResult>> {
    let base = made_so_far(ctx, name);
    let first = match spec.mode {
        LoopMode::Answer { .. } => {
            if ctx.stage.input_activity().is_none() {
                return Err(
                    format!("loop {name}: mode \"answer\" answers a MIDI input; call listen(\"port\") first").into()
                );
            }
            silent_bar(crate::time::Meter::default())
        }
        _ => ctx
            .stage
            .generate(spec.prompt.as_ref(), &spec.cycle_opts(base), &AtomicBool::new(false))
            .map_err(|e| -> Box<EvalAltResult> { format!("loop {name}: {e}").into() })?,
    };
    start(ctx, name, first, |info, first, cancel| {
        Box::new(GenProducer {
            ctx: Arc::downgrade(ctx),
            info,
            spec,
            last: first.clone(),
            first: Some(first),
            base,
            cancel,
            heard: (0, 0),
        })
    })
}

/// One bar of silence in `meter` (what an answering loop plays while it listens; the session
/// keeps no meter of its own, so 4/4).
fn silent_bar(meter: crate::time::Meter) -> Score {
    let mut s = Score::new();
    s.meta.meters = vec![(0, meter)];
    s.length = meter.bar_ticks();
    s
}

/// Cycles made by earlier versions of the loop `name` (a new version counts on from there).
fn made_so_far(ctx: &Ctx, name: &str) -> u64 {
    ctx.stage.loops.map().get(name).map_or(0, |l| l.made.load(Ordering::Relaxed))
}

/// Starts (or replaces) loop `name` with its first cycle made and the producer of the rest.
fn start(
    ctx: &Arc<Ctx>,
    name: &str,
    first: Score,
    producer: impl FnOnce(Arc<LoopInfo>, Score, Arc<AtomicBool>) -> Box<dyn Producer>,
) -> Result<(), Box<EvalAltResult>> {
    let existing = ctx.stage.loops.map().get(name).cloned();
    let cancel = Arc::new(AtomicBool::new(false));
    let info = match &existing {
        Some(l) => l.clone(),
        None => Arc::new(LoopInfo {
            made: AtomicU64::new(0),
            last_good: Mutex::new(first.clone()),
            cancel: Mutex::new(cancel.clone()),
        }),
    };
    let producer = producer(info.clone(), first, cancel.clone());
    ctx.stage.set_loop(name, producer).map_err(|e| -> Box<EvalAltResult> { e.to_string().into() })?;
    // The old version's body may be running for a cycle that will not play: cancel it.
    let old = std::mem::replace(&mut *info.cancel.lock().unwrap_or_else(|p| p.into_inner()), cancel);
    if existing.is_some() {
        old.store(true, Ordering::SeqCst);
        ctx.print(&format!("loop `{name}` replaced; the new version starts at the end of this cycle"));
    }
    ctx.stage.loops.map().insert(name.to_string(), info);
    Ok(())
}

/// The engine's producer for a generating loop: runs on the loop's feeder thread, a cycle
/// ahead, so a generation has a whole cycle's time (`:loops` shows how much it had to spare).
struct GenProducer {
    ctx: Weak<Ctx>,
    info: Arc<LoopInfo>,
    spec: GenLoop,
    /// What the loop played last (the prompt of the next cycle in `Continue` mode).
    last: Score,
    first: Option<Score>,
    base: u64,
    cancel: Arc<AtomicBool>,
    /// Answer mode: the input's activity count last cycle, and cycles it has not changed.
    heard: (u64, u32),
}

impl GenProducer {
    /// Answer mode: the model's answer once the player has paused, else a bar of silence.
    fn answer(&mut self, ctx: &Ctx, pause_bars: u32, cycle: u64) -> Result<Score, ProducerError> {
        let (activity, has_notes) = ctx.stage.input_activity().ok_or("nothing is listening any more")?;
        if activity != self.heard.0 {
            self.heard = (activity, 0);
        } else {
            self.heard.1 = self.heard.1.saturating_add(1);
        }
        if self.heard.1 < pause_bars || !has_notes {
            return Ok(silent_bar(crate::time::Meter::default()));
        }
        let call = ctx.stage.heard()?;
        Ok(ctx.stage.generate(Some(&call), &self.spec.cycle_opts(cycle), &self.cancel)?)
    }
}

impl Producer for GenProducer {
    fn next(&mut self, req: &CycleRequest) -> Result<Score, ProducerError> {
        let score = match self.first.take() {
            Some(s) => s,
            None if matches!(self.spec.mode, LoopMode::Answer { .. }) => {
                let LoopMode::Answer { pause_bars } = self.spec.mode else { unreachable!() };
                let ctx = self.ctx.upgrade().ok_or("the session has ended")?;
                self.answer(&ctx, pause_bars, self.base + req.cycle)?
            }
            None if !(self.base + req.cycle).is_multiple_of(self.spec.every) => self.last.clone(),
            None => {
                let ctx = self.ctx.upgrade().ok_or("the session has ended")?;
                let prompt = match self.spec.mode {
                    LoopMode::Continue => Some(&self.last),
                    LoopMode::Variation | LoopMode::Answer { .. } => self.spec.prompt.as_ref(),
                };
                ctx.stage.generate(prompt, &self.spec.cycle_opts(self.base + req.cycle), &self.cancel)?
            }
        };
        self.info.made.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut g) = self.info.last_good.lock() {
            *g = score.clone();
        }
        self.last = score.clone();
        Ok(score)
    }
}
