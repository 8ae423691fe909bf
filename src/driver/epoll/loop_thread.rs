//! The epoll loop thread: sleeps on the channel until a message or the next deadline, then
//! acts on it under the engine's lock: frees, cancels, detaches, handle drops, file threads'
//! outcomes, swap releases, deadlines. Readiness is served by the poller and by consumers in
//! `wait_io`, and requests by their submitters, each on its own thread under the same lock.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::State;
use crate::conn::lock;
use crate::driver::failure::{self, Failpoints, Thread};
use crate::engine::LoopMsg;

/// Messages handled per section before results are flushed, so a flood of submissions cannot
/// hold completions back for long.
const DRAIN: usize = 4096;

/// Runs the loop until `Close`, then shuts the engine down. A panic on the way (a bug, or the
/// test hook) fails the watcher closed instead (`crate::driver::failure`).
pub(crate) fn run<C: Send + 'static>(
    state: &Arc<State<C>>,
    rx: &Receiver<LoopMsg<C>>,
    fail: &Failpoints,
) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(state, rx, fail)));
    if let Err(p) = run {
        let why = failure::reason("gaio-loop", &*p);
        // Ends every request, then waits for the file threads' requests as a close does.
        let end = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock(state).fail(why.clone());
        }));
        if end.is_err() {
            // The engine itself is broken: a file thread may still write into a request's
            // buffer, so the engine is never freed (a leak, not a use after free).
            std::mem::forget(Arc::clone(state));
            lock(state).results().fail(why);
            return;
        }
    }
    shutdown(state, rx);
}

fn serve<C: Send + 'static>(state: &State<C>, rx: &Receiver<LoopMsg<C>>, fail: &Failpoints) {
    let mut sleep = lock(state).plan_sleep();
    'run: loop {
        let first = match recv(rx, sleep) {
            Ok(m) => m,
            Err(()) => break 'run,
        };
        fail.check(Thread::Loop);
        let mut s = lock(state);
        if let Some(m) = first {
            if !s.handle(m) {
                break 'run;
            }
            for _ in 0..DRAIN {
                match rx.try_recv() {
                    Ok(m) => {
                        if !s.handle(m) {
                            break 'run;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        s.expire();
        s.flush();
        sleep = s.plan_sleep();
    }
}

/// The next message, or `None` once `until` passes; `Err` once every sender is gone.
fn recv<C>(rx: &Receiver<LoopMsg<C>>, until: Option<Instant>) -> Result<Option<LoopMsg<C>>, ()> {
    match until {
        Some(at) => match rx.recv_deadline(at) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(()),
        },
        None => rx.recv().map(Some).map_err(|_| ()),
    }
}

/// After `Close` (the engine released every connection): waits for the requests on file
/// threads (each one bounded syscall), then handles what is still queued behind `Close`.
fn shutdown<C: Send + 'static>(
    state: &Mutex<crate::engine::Engine<C, super::Readiness<C>>>,
    rx: &Receiver<LoopMsg<C>>,
) {
    let mut s = lock(state);
    if !s.is_closed() {
        s.close();
    }
    while s.in_flight() > 0 {
        s.flush();
        drop(s);
        let m = rx.recv();
        s = lock(state);
        match m {
            Ok(m) => {
                s.handle(m);
            }
            Err(_) => break,
        }
    }
    s.driver.shutdown();
    // Handle drops, late wake-ups; a submission cannot be there (the submit gate closes before
    // `Close` is sent), but if one were, it still gets its single result.
    while let Ok(m) = rx.try_recv() {
        s.handle(m);
    }
    s.flush();
}
