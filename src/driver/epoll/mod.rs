//! The readiness backend: epoll on Linux through `mio`'s portable API (so it also builds where
//! mio uses kqueue). The engine sits behind one lock that every thread with news takes: the
//! poller (`poller.rs`) and consumers in `wait_io` (`leader.rs`) serve readiness, a submitter
//! queues (and attempts) its own request, and the loop thread (`loop_thread.rs`) handles
//! frees, cancels, detaches, file threads' outcomes and deadlines. How a request starts is in
//! `readiness.rs`.

mod file_pool;
#[cfg(target_os = "linux")]
mod leader;
mod loop_thread;
mod poller;
mod readiness;

pub(crate) use readiness::Readiness;

/// Token of the waker that interrupts the poller's wait for shutdown. Connection tokens never
/// take this value (generations stop short of the all-ones pattern).
pub(crate) const WAKE: Token = Token(usize::MAX);

/// Token of the leader's kick eventfd (Linux), likewise never a connection's.
#[cfg(target_os = "linux")]
pub(crate) const KICK: Token = Token(usize::MAX - 1);

/// The engine over the epoll driver, behind the lock every thread takes.
pub(crate) type State<C> = Mutex<crate::engine::Engine<C, Readiness<C>>>;

use std::io;
use std::os::fd::OwnedFd;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use crossbeam_channel::Sender;
use mio::{Poll, Registry, Token, Waker};

use crate::conn::{lock, ConnId, ConnShared};
use crate::driver::{failure, Core};
use crate::engine::LoopMsg;
use crate::request::Request;
use crate::{Error, Result};

/// The submit side's handle on the readiness backend.
pub(crate) struct Epoll<C> {
    registry: Registry,
    waker: Arc<Waker>,
    shutdown: Arc<AtomicBool>,
    state: Arc<State<C>>,
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
    pub(crate) fn swap_retry(&self) -> Weak<dyn crate::driver::SwapRetry> {
        let state: Arc<dyn crate::driver::SwapRetry> = self.state.clone();
        Arc::downgrade(&state)
    }

    /// Queues a request on the caller's thread and attempts it if it is first in its
    /// direction; its result, if it has one already, goes to `wait_io` before this returns.
    pub(crate) fn submit(&self, req: Request<C>) {
        let tick = {
            let mut s = lock(&self.state);
            let tick = s.submit(req);
            s.flush();
            tick
        };
        if tick {
            // The loop thread exits only on Close, which no submission can follow.
            let _ = self.tx.send(LoopMsg::Tick);
        }
    }

    /// The last cork on connection `id` ended: starts its held writes on this thread.
    pub(crate) fn uncork(&self, id: ConnId) {
        let mut s = lock(&self.state);
        s.uncorked(id);
        s.flush();
    }

    /// Registers a descriptor for edge-triggered read and write readiness under `id`'s token.
    /// `EPERM` (epoll refuses the kind of file) becomes [`Error::Unsupported`].
    pub(crate) fn register(&self, fd: RawFd, id: ConnId) -> Result<()> {
        readiness::register(&self.registry, fd, id).map_err(|e| match e.raw_os_error() {
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

    /// Interrupts the poller's wait (it sees the shutdown flag, or the test hook).
    pub(crate) fn wake_poller(&self) {
        let _ = self.waker.wake();
        // It may be standing aside (parked) while consumers lead.
        #[cfg(target_os = "linux")]
        self.leader.wake_poller();
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
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(2);

    let files = file_pool::FilePool::new(core.tx.channel(), core.failpoints.clone());
    let driver = Readiness::new(registry.try_clone()?, core.swap_pool.clone(), files);
    let state = Arc::new(Mutex::new(core.engine(driver)));
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
    let fail = core.failpoints.clone();
    let watcher = core.watcher_id;
    let loop_thread = std::thread::Builder::new()
        .name("gaio-loop".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            log_debug!("watcher {watcher}: epoll loop thread started");
            let _ = ready.send(());
            loop_thread::run(&st, &rx, &fail);
            slot.exit();
            log_debug!("watcher {watcher}: epoll loop thread stopped");
        })?;

    let slot = core.poller_slot;
    let close_tx = core.tx.clone();
    let stop = shutdown.clone();
    let guard = core.results.close_on_panic();
    let st = state.clone();
    let fail = core.failpoints.clone();
    #[cfg(target_os = "linux")]
    let lead = leader.clone();
    let poller_thread = std::thread::Builder::new()
        .name("gaio-poller".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            log_debug!("watcher {watcher}: epoll poller thread started");
            let _ = ready_tx.send(());
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(target_os = "linux")]
                poller::run(poll, &st, stop, &lead, &fail);
                #[cfg(not(target_os = "linux"))]
                poller::run(poll, &st, stop, &fail);
            }));
            if let Err(p) = run {
                // Readiness is still served by consumers in `wait_io`, and the loop thread
                // drains the file threads; the engine ends everything and reports it.
                lock(&st).fail(failure::reason("gaio-poller", &*p));
            }
            slot.exit();
            log_debug!("watcher {watcher}: epoll poller thread stopped");
        });
    let poller_thread = match poller_thread {
        Ok(t) => {
            #[cfg(target_os = "linux")]
            leader.set_poller(t.thread().clone());
            t
        }
        Err(e) => {
            log_debug!("watcher {watcher}: epoll poller thread not started: {e}");
            // The loop exits on Close; nothing was registered yet.
            let _ = close_tx.send(LoopMsg::Close);
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

impl<C: Send + 'static> crate::driver::SwapRetry for State<C> {
    fn try_retry(&self) -> bool {
        // Never block: the slice may be dropped by a thread that holds this lock already
        // (try_lock then fails), or while another thread serves; the loop thread takes over.
        let Ok(mut s) = self.try_lock() else {
            return false;
        };
        s.retry_starved();
        s.flush();
        true
    }
}
