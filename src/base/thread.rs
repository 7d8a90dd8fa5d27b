//! How camhub's own threads are scheduled: the batch class for threads that work behind the media thread.

/// Makes the calling thread a batch thread (Linux `SCHED_BATCH`, its nice value unchanged): it gets its fair share of
/// the CPU, but waking it never preempts the thread that runs. For threads that work behind the media thread (a
/// recording's streaming threads, the sync thread): the media thread wakes them as it hands them work, and, as normal
/// threads, they took its core mid-turn (at 10 recording cameras, 46 of the media thread's 96 context switches a
/// second were such preemptions; as batch threads, 5). A failure only costs the preference, said in the debug log.
pub fn run_as_batch() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_BATCH.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } != 0 {
        tracing::debug!(err = %std::io::Error::last_os_error(), "cannot make this thread a batch thread");
    }
}
