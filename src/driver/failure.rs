//! A backend thread that fails (a panic: a bug, or the test hook) fails closed: it ends the
//! engine as `close` would (fast paths closed before any descriptor, requests in flight
//! drained before their memory goes, every pending request given its one result), then
//! `wait_io` reports `Error::WatcherFailed` with the thread and the reason.
//!
//! The test hook ([`Failpoints`]) makes a chosen thread panic at a known point, so the tests
//! can prove this on every thread of both backends.

use std::any::Any;
use std::sync::atomic::{AtomicU8, Ordering};

/// The backend threads the hook can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Thread {
    /// epoll's loop thread (`gaio-loop`).
    Loop = 1,
    /// epoll's poller thread (`gaio-poller`).
    Poller = 2,
    /// an epoll file thread (`gaio-file-N`), at its next job.
    File = 3,
    /// io_uring's ring thread (`gaio-uring`).
    Ring = 4,
}

impl Thread {
    /// The thread named `name` (its thread name's prefix).
    pub(crate) fn named(name: &str) -> Option<Thread> {
        Some(match name {
            "gaio-loop" => Thread::Loop,
            "gaio-poller" => Thread::Poller,
            "gaio-file" => Thread::File,
            "gaio-uring" => Thread::Ring,
            _ => return None,
        })
    }
}

/// Which thread, if any, the test hook wants to fail.
#[derive(Default)]
pub(crate) struct Failpoints(AtomicU8);

impl Failpoints {
    pub(crate) fn arm(&self, t: Thread) {
        self.0.store(t as u8, Ordering::SeqCst);
    }

    /// Panics if `t` is armed (once: the hook disarms itself).
    pub(crate) fn check(&self, t: Thread) {
        if self.0.load(Ordering::Relaxed) == t as u8
            && self
                .0
                .compare_exchange(t as u8, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            panic!("failure injected by the test hook");
        }
    }
}

/// Why thread `name` failed, from its panic payload (and a `log` error record of it).
pub(crate) fn reason(name: &str, payload: &(dyn Any + Send)) -> String {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into());
    let why = format!("thread {name} failed: {what}");
    // The requests pending get `WatcherFailed`; this record is what outlives them.
    log_error!("{why}; the watcher fails closed");
    why
}
