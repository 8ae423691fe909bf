//! The poller thread: blocks in `epoll_wait` (through mio) and serves what each batch of
//! readiness woke itself, under the state's lock: an edge costs one thread wake-up (this one)
//! before the result reaches `wait_io`, not a hand-off to a second thread. (Go's gaio passes
//! each batch to its loop goroutine and waits for it; doing the work here removes that
//! hand-off and its acknowledgement.)

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use mio::{Events, Poll};

use super::{State, WAKE};
use crate::conn::lock;
use crate::conn::ConnId;
use crate::driver::failure::{Failpoints, Thread};

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

pub(crate) fn run<C: Send + 'static>(
    mut poll: Poll,
    state: &State<C>,
    shutdown: Arc<AtomicBool>,
    #[cfg(target_os = "linux")] leader: &super::leader::Leader<C>,
    fail: &Failpoints,
) {
    #[cfg(target_os = "linux")]
    let _done = Done(leader);
    let mut events = Events::with_capacity(EVENTS);
    #[cfg(target_os = "linux")]
    let mut seen = 0u64;
    loop {
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log_error!("epoll poller wait failed, the poller thread ends: {e}");
                return;
            }
        }
        fail.check(Thread::Poller);
        // A leader's wake-up taken here is passed on first, even on the way out.
        #[cfg(target_os = "linux")]
        if events.iter().any(|ev| ev.token() == super::KICK) {
            leader.forward_kick();
        }
        if shutdown.load(Ordering::Acquire) {
            return;
        }
        let mut s = lock(state);
        for ev in events.iter() {
            if ev.token() == WAKE {
                continue;
            }
            #[cfg(target_os = "linux")]
            if ev.token() == super::KICK {
                continue;
            }
            // ERR and HUP wake both directions; RDHUP wakes readers (mio folds it into
            // is_read_closed).
            s.ready(
                ConnId::from_token(ev.token().0),
                ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                ev.is_writable() || ev.is_write_closed() || ev.is_error(),
            );
        }
        s.flush();
        drop(s);
        // Consumers serving readiness in `wait_io` get it first; keep out of their way.
        #[cfg(target_os = "linux")]
        leader.stand_aside(&mut seen, &shutdown);
    }
}

/// Tells the leaders the poller is gone (on every exit path).
#[cfg(target_os = "linux")]
struct Done<'a, C: Send + 'static>(&'a super::leader::Leader<C>);

#[cfg(target_os = "linux")]
impl<C: Send + 'static> Drop for Done<'_, C> {
    fn drop(&mut self) {
        self.0.poller_exited();
    }
}
