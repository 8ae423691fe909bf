//! The readiness backend: epoll on Linux through `mio`'s portable API (so it also builds where
//! mio uses kqueue). Two threads as in gaio, the poller blocked in the kernel wait and the loop
//! thread, but the state is shared behind one lock rather than owned by the loop: the poller
//! serves readiness itself, a submitter queues its own request (and attempts it), and the loop
//! thread handles frees, cancels, detaches, file completions and deadlines. Descriptors are
//! registered once, edge-triggered, for read and write, and never modified until they are
//! deregistered on release.

mod event_loop;
mod file_pool;
#[cfg(target_os = "linux")]
mod leader;
mod poller;

use std::io;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::unix::SourceFd;
use mio::{Interest, Poll, Registry, Token, Waker};

use crate::conn::{lock, ConnId, ConnShared};
use crate::op::Op;
use crate::sys::{Core, LoopMsg};
use crate::{Error, Result};

/// The submit side's handle on the readiness backend.
pub(crate) struct Epoll<C> {
    registry: Registry,
    waker: Arc<Waker>,
    shutdown: Arc<AtomicBool>,
    state: Arc<Mutex<event_loop::EventLoop<C>>>,
    tx: Sender<LoopMsg<C>>,
    #[cfg(target_os = "linux")]
    leader: Arc<leader::Leader<C>>,
}

impl<C: Send + 'static> Epoll<C> {
    /// Adds a registered descriptor to the state (on the caller's thread, so a request
    /// submitted right after finds it).
    pub(crate) fn watch(&self, id: ConnId, fd: OwnedFd, is_socket: bool, handle: Weak<ConnShared>) {
        lock(&self.state).watch(id, fd, is_socket, handle);
    }

    /// What lets a consumer in `wait_io` serve readiness itself (Linux).
    pub(crate) fn lead(&self) -> Option<Arc<dyn crate::results::Lead>> {
        #[cfg(target_os = "linux")]
        return Some(self.leader.clone());
        #[cfg(not(target_os = "linux"))]
        None
    }

    /// The state, for a thread that releases swap space to serve starved reads itself.
    pub(crate) fn swap_retry(&self) -> Weak<dyn crate::sys::SwapRetry> {
        let state: Arc<dyn crate::sys::SwapRetry> = self.state.clone();
        Arc::downgrade(&state)
    }

    /// Queues a request on the caller's thread and attempts it if it is first in its
    /// direction; its result, if it has one already, goes to `wait_io` before this returns.
    pub(crate) fn submit(&self, op: Op<C>) {
        let tick = {
            let mut s = lock(&self.state);
            let tick = s.submit_direct(op);
            s.flush();
            tick
        };
        if tick {
            // The loop thread exits only on Close, which no submission can follow.
            let _ = self.tx.send(LoopMsg::Tick);
        }
    }

    /// Registers a descriptor for edge-triggered read and write readiness under `id`'s token.
    /// `EPERM` (epoll refuses the kind of file) becomes [`Error::Unsupported`].
    pub(crate) fn register(&self, fd: RawFd, id: ConnId) -> Result<()> {
        self.registry
            .register(
                &mut SourceFd(&fd),
                Token(id.token()),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM) => Error::Unsupported,
                _ => Error::Io(e),
            })
    }

    /// After the threads are joined: no consumer leads any more, and the leader's descriptors
    /// are closed.
    pub(crate) fn finish(&self) {
        #[cfg(target_os = "linux")]
        self.leader.retire();
    }

    /// Tells the poller to exit and interrupts its wait.
    pub(crate) fn shutdown(&self) {
        // SeqCst: the leader's claim checks it against `leading` (see `Leader::try_claim`).
        self.shutdown.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        #[cfg(target_os = "linux")]
        self.leader.wake_poller();
    }
}

/// Starts the poller and loop threads.
pub(crate) fn start<C: Send + 'static>(core: Core<C>) -> Result<(Epoll<C>, Vec<JoinHandle<()>>)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = Arc::new(Waker::new(poll.registry(), poller::WAKE)?);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(2);

    let state = Arc::new(Mutex::new(event_loop::EventLoop::new(
        registry.try_clone()?,
        core.swap_pool,
        core.results.clone(),
        core.ids.clone(),
        core.gc,
        event_loop::ConnMaker {
            registry: registry.try_clone()?,
            ids: core.ids,
            watcher_id: core.watcher_id,
            owner: core.owner,
        },
        core.tx.channel(),
    )));
    #[cfg(target_os = "linux")]
    let leader = {
        use std::os::fd::AsRawFd;
        let l = leader::Leader::new(
            &poll.as_raw_fd(),
            &registry,
            state.clone(),
            waker.clone(),
            shutdown.clone(),
        )?;
        if let Some(k) = l.kick() {
            core.results.set_kick(k);
        }
        Arc::new(l)
    };
    let slot = core.loop_slot;
    let ready = ready_tx.clone();
    let guard = core.results.close_on_panic();
    let st = state.clone();
    let rx = core.rx;
    let loop_thread = std::thread::Builder::new()
        .name("gaio-loop".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            let _ = ready.send(());
            event_loop::EventLoop::run(&st, rx);
            slot.exit();
        })?;

    let slot = core.poller_slot;
    let close_tx = core.tx.clone();
    let stop = shutdown.clone();
    let guard = core.results.close_on_panic();
    let st = state.clone();
    #[cfg(target_os = "linux")]
    let lead = leader.clone();
    let poller_thread = std::thread::Builder::new()
        .name("gaio-poller".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            let _ = ready_tx.send(());
            #[cfg(target_os = "linux")]
            poller::run(poll, &st, stop, &lead);
            #[cfg(not(target_os = "linux"))]
            poller::run(poll, &st, stop);
            slot.exit();
        });
    let poller_thread = match poller_thread {
        Ok(t) => {
            #[cfg(target_os = "linux")]
            leader.set_poller(t.thread().clone());
            t
        }
        Err(e) => {
            // The loop exits on Close; nothing was registered yet.
            let _ = close_tx.send(crate::sys::LoopMsg::Close);
            let _ = loop_thread.join();
            return Err(Error::Io(e));
        }
    };
    for _ in 0..2 {
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("gaio thread failed to start"))?;
    }
    Ok((
        Epoll {
            registry,
            waker,
            shutdown,
            state,
            tx: core.tx.channel(),
            #[cfg(target_os = "linux")]
            leader,
        },
        vec![loop_thread, poller_thread],
    ))
}
