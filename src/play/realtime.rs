//! Real-time scheduling for the player thread, where the system grants it.

/// Asks Linux for real-time scheduling of the calling thread and tight timer slack. Without the
/// rights this quietly keeps normal scheduling (the lateness counters will tell).
pub fn make_realtime() -> bool {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread with a valid, initialised parameter struct.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        let param = libc::sched_param { sched_priority: 70 };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}
