//! Leader/follower readiness (Linux): a consumer that calls `wait_io` with no result ready
//! waits in `epoll_wait` itself and serves what readiness it gets on its own thread, so a busy
//! server's steady state runs on one thread, as a hand-written readiness loop does: no wake-up
//! of the poller, no hand-off of results between threads.
//!
//! At most one consumer leads at a time; others wait on the result queue's condition variable
//! and are handed the lead when the leader leaves with a batch. The poller thread remains the
//! fallback that serves readiness while no consumer is in `wait_io` (a consumer busy with its
//! batch, or none calling): after it serves a batch it stays out of the kernel wait for as long
//! as consumers keep leading (`stand_aside`), so it does not take events from them, and it
//! resumes within `NAP_MAX` of the last lead.
//!
//! Two wake-ups cross the shared epoll instance: the leader's `kick` eventfd (a result came from
//! another thread while the leader sleeps in the kernel) and mio's shutdown waker. epoll wakes
//! one waiter per event, so each side forwards the other's wake-up when it takes it.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread::Thread;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Waker};

use super::{State, KICK, WAKE};
use crate::conn::lock;
use crate::conn::ConnId;

/// Readiness events a leader takes per `epoll_wait` (as many as the poller: 12 KiB of stack).
const EVENTS: usize = 1024;

/// The poller's first and longest nap while consumers lead.
const NAP_MIN: Duration = Duration::from_millis(1);
const NAP_MAX: Duration = Duration::from_millis(32);

pub(crate) struct Leader<C> {
    /// A duplicate of the poller's epoll descriptor: the same instance. Taken out (closed) by
    /// `retire` once no consumer leads, so `close` leaves no descriptor open even while a
    /// consumer still holds this value.
    epfd: Mutex<Option<OwnedFd>>,
    /// Ours of the kick (the result queue holds the other, until its own close).
    kick: Mutex<Option<Arc<Kick>>>,
    /// Weak: a consumer that still holds this value after `close` must not keep the state
    /// (and the registry descriptors in it) alive.
    state: Weak<State<C>>,
    /// mio's shutdown waker, forwarded to the poller when a leader takes its event (dropped by
    /// `retire`, with its descriptor).
    waker: Mutex<Option<Arc<Waker>>>,
    /// Set on shutdown: no consumer leads from then on (so a forwarded shutdown wake-up
    /// reaches the poller instead of a leader waiting again).
    shutdown: Arc<AtomicBool>,
    /// A consumer leads now.
    leading: AtomicBool,
    /// Counts leads; the poller compares it across its naps.
    epoch: AtomicU64,
    /// The poller sleeps until the current leader leaves (it must be unparked).
    poller_asleep: AtomicBool,
    /// The poller thread exited: nothing to forward its wake-up to.
    poller_done: AtomicBool,
    poller: OnceLock<Thread>,
}

/// The leader's wake-up: an eventfd in the shared epoll instance.
pub(crate) struct Kick(OwnedFd);

impl crate::results::Kick for Kick {
    fn kick(&self) {
        // Every write is a new edge; the counter is never read.
        crate::sys::eventfd_signal(self.0.as_fd());
    }
}

impl<C: Send + 'static> Leader<C> {
    /// Shares the epoll instance `epfd` (duplicated) and registers the kick eventfd in it.
    pub(crate) fn new(
        epfd: &impl AsRawFd,
        registry: &Registry,
        state: Arc<State<C>>,
        waker: Arc<Waker>,
        shutdown: Arc<AtomicBool>,
    ) -> std::io::Result<Leader<C>> {
        let epfd = crate::sys::dup(epfd.as_raw_fd())?;
        let kick = Kick(crate::sys::eventfd()?);
        registry.register(&mut SourceFd(&kick.0.as_raw_fd()), KICK, Interest::READABLE)?;
        Ok(Leader {
            epfd: Mutex::new(Some(epfd)),
            kick: Mutex::new(Some(Arc::new(kick))),
            state: Arc::downgrade(&state),
            waker: Mutex::new(Some(waker)),
            shutdown,
            leading: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            poller_asleep: AtomicBool::new(false),
            poller_done: AtomicBool::new(false),
            poller: OnceLock::new(),
        })
    }

    /// The kick, for the result queue (`None` once retired).
    pub(crate) fn kick(&self) -> Option<Arc<Kick>> {
        lock(&self.kick).clone()
    }

    /// `Watcher::close`, after the backend's threads are joined (the shutdown flag is set, so
    /// no consumer claims the lead any more): wakes the consumer that leads, if any, waits
    /// until it has left the kernel wait, and closes our descriptors.
    pub(crate) fn retire(&self) {
        if let Some(k) = lock(&self.kick).as_ref() {
            crate::results::Kick::kick(&**k);
        }
        // The leader returns from epoll_wait at once (the kick is pending in the set) and
        // takes the state's lock, which nobody else holds now: a bounded wait.
        while self.leading.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_micros(50));
        }
        *lock(&self.epfd) = None;
        *lock(&self.kick) = None;
        *lock(&self.waker) = None;
    }

    pub(crate) fn set_poller(&self, t: Thread) {
        let _ = self.poller.set(t);
    }

    /// Shutdown: a parked poller must see it.
    pub(crate) fn wake_poller(&self) {
        if let Some(t) = self.poller.get() {
            t.unpark();
        }
    }

    pub(crate) fn poller_exited(&self) {
        self.poller_done.store(true, Ordering::SeqCst);
    }

    /// Called by the poller after it served a batch: while consumers keep leading, stay out of
    /// `epoll_wait` (where epoll would hand it their events). Returns once no consumer has led
    /// for a whole nap, or on shutdown. `seen` is the lead count at the poller's last look.
    pub(crate) fn stand_aside(&self, seen: &mut u64, shutdown: &AtomicBool) {
        let mut nap = NAP_MIN;
        loop {
            if shutdown.load(Ordering::Acquire) {
                return;
            }
            let epoch = self.epoch.load(Ordering::SeqCst);
            let leading = self.leading.load(Ordering::SeqCst);
            if epoch == *seen && !leading {
                return;
            }
            if epoch == *seen {
                // One leader has waited in the kernel for a whole nap: it takes every event
                // until it leaves, and it unparks us then.
                self.poller_asleep.store(true, Ordering::SeqCst);
                if self.leading.load(Ordering::SeqCst)
                    && self.epoch.load(Ordering::SeqCst) == epoch
                    && !shutdown.load(Ordering::Acquire)
                {
                    std::thread::park();
                }
                self.poller_asleep.store(false, Ordering::SeqCst);
                continue;
            }
            *seen = epoch;
            std::thread::park_timeout(nap);
            nap = (nap * 2).min(NAP_MAX);
        }
    }

    /// The poller took the leader's kick: pass it on (the leader is not in the kernel wait
    /// while it serves, so the new edge goes to whoever waits next: the leader, if it still
    /// leads).
    pub(crate) fn forward_kick(&self) {
        if self.leading.load(Ordering::SeqCst) {
            if let Some(k) = lock(&self.kick).as_ref() {
                crate::results::Kick::kick(&**k);
            }
        }
    }
}

impl<C: Send + 'static> crate::results::Lead for Leader<C> {
    fn try_claim(&self) -> bool {
        if self
            .leading
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            return false;
        }
        // Checked after the claim (both SeqCst): either `retire` sees us leading and waits,
        // or we see the shutdown and step back before touching a descriptor.
        if self.shutdown.load(Ordering::SeqCst) {
            self.leading.store(false, Ordering::SeqCst);
            return false;
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        true
    }

    fn lead(&self, timeout: Option<Duration>, awake: &dyn Fn()) {
        let ms: libc::c_int = match timeout {
            None => -1,
            // Round up: epoll_wait counts whole milliseconds, and returning early would only
            // make the caller come back.
            Some(t) => t.as_micros().div_ceil(1000).min(libc::c_int::MAX as u128) as libc::c_int,
        };
        // Open while we lead: `retire` waits for the lead to end before closing it.
        let epfd = lock(&self.epfd).as_ref().map(|f| f.as_raw_fd());
        let Some(epfd) = epfd else {
            awake();
            self.leading.store(false, Ordering::SeqCst);
            return;
        };
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        // SAFETY: `events` is a writable array of EVENTS entries and `epfd` an epoll
        // descriptor we own, kept open while we lead (see `retire`).
        let n = unsafe { libc::epoll_wait(epfd, events.as_mut_ptr(), EVENTS as libc::c_int, ms) };
        awake();
        let state = if n > 0 { self.state.upgrade() } else { None };
        if let Some(state) = state {
            let mut s = lock(&state);
            for ev in &events[..n as usize] {
                let (bits, token) = (ev.events, ev.u64 as usize);
                if token == KICK.0 {
                    continue;
                }
                if token == WAKE.0 {
                    // Shutdown: the poller must see it.
                    if !self.poller_done.load(Ordering::SeqCst) {
                        if let Some(w) = lock(&self.waker).as_ref() {
                            let _ = w.wake();
                        }
                    }
                    continue;
                }
                let (read, write) = readiness(bits);
                s.ready(ConnId::from_token(token), read, write);
            }
            s.flush();
        }
        self.leading.store(false, Ordering::SeqCst);
        if self.poller_asleep.load(Ordering::SeqCst) {
            self.wake_poller();
        }
    }
}

/// Which directions an epoll event wakes, as the poller reads mio's: ERR and HUP wake both,
/// RDHUP wakes readers.
fn readiness(bits: u32) -> (bool, bool) {
    let e = bits as libc::c_int;
    let read = e
        & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLRDHUP | libc::EPOLLERR)
        != 0;
    let write = e & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0;
    (read, write)
}
