//! The epoll loop thread: sleeps on the channel until a message or the next deadline, then
//! acts on it under the engine's lock: frees, cancels, detaches, handle drops, file threads'
//! outcomes, swap releases, deadlines. Readiness is served by the poller and by consumers in
//! `wait_io`, and requests by their submitters, each on its own thread under the same lock.

use std::sync::Mutex;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::State;
use crate::conn::lock;
use crate::engine::LoopMsg;

/// Messages handled per section before results are flushed, so a flood of submissions cannot
/// hold completions back for long.
const DRAIN: usize = 4096;

pub(crate) fn run<C: Send + 'static>(state: &State<C>, rx: Receiver<LoopMsg<C>>) {
    let mut sleep = lock(state).plan_sleep();
    'run: loop {
        let first = match recv(&rx, sleep) {
            Ok(m) => m,
            Err(()) => break 'run,
        };
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
    shutdown(state, &rx);
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
