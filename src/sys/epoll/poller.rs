//! The poller thread: blocks in `epoll_wait` (through mio) and passes each batch of readiness
//! to the loop, then waits for the loop to hand the batch's vector back before it polls again
//! (gaio's lock-step `Signal`/`done` handshake: one batch in flight, no allocation per batch).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use mio::{Events, Poll, Token};

use crate::sys::{LoopMsg, Readiness};

/// Token of the waker that interrupts the poll for shutdown. Connection tokens never take this
/// value (generations stop short of the all-ones pattern).
pub(crate) const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

pub(crate) fn run<C>(
    mut poll: Poll,
    tx: Sender<LoopMsg<C>>,
    ack: Receiver<Vec<Readiness>>,
    shutdown: Arc<AtomicBool>,
) {
    let mut events = Events::with_capacity(EVENTS);
    let mut batch: Vec<Readiness> = Vec::with_capacity(EVENTS);
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            // ERR and HUP wake both directions; RDHUP wakes readers (mio folds it into
            // is_read_closed).
            batch.push(Readiness {
                token: ev.token().0,
                read: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                write: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            });
        }
        if batch.is_empty() {
            continue;
        }
        if tx.send(LoopMsg::Events(batch)).is_err() {
            return;
        }
        match ack.recv() {
            Ok(mut v) => {
                v.clear();
                batch = v;
            }
            Err(_) => return,
        }
    }
}
