//! The readiness backend: epoll on Linux through `mio`'s portable API (so it also builds where
//! mio uses kqueue). One loop thread owns all state, waits in `epoll_wait` itself and performs
//! every syscall a request needs after its first attempt (which runs on the submitting thread:
//! `crate::lane`). Go's gaio splits the wait into a poller thread that hands each batch of
//! readiness to the loop; merged, that hand-off (a thread wake-up per batch) is gone.
//! Descriptors are registered once, edge-triggered, for read and write, and never modified
//! until they are deregistered on release.

mod event_loop;
mod file_pool;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Registry, Token, Waker};

use crate::conn::ConnId;
use crate::sys::Core;
use crate::{Error, Result};

/// The submit side's handle on the readiness backend.
pub(crate) struct Epoll {
    registry: Registry,
    wake: Arc<EpollWake>,
}

impl Epoll {
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

    /// Interrupts the loop's wait (it then finds `Close` in its channel).
    pub(crate) fn shutdown(&self) {
        self.wake.force();
    }

    /// After the loop thread is joined: closes the waker's eventfd, which handles and swap
    /// slices would otherwise keep open.
    pub(crate) fn finish(&self) {
        crate::conn::lock(&self.wake.waker).take();
    }
}

/// Token of the waker that interrupts the loop's `epoll_wait`. Connection tokens never take
/// this value (generations stop short of the all-ones pattern).
pub(crate) const WAKE: Token = Token(usize::MAX);

/// Wakes the loop from `epoll_wait` when a message arrives while it sleeps there: the loop
/// raises `sleeping` before it blocks and checks its channel once more; a sender writes the
/// waker's eventfd only if it finds the flag raised. A busy loop costs senders one atomic swap.
/// Handles and swap slices may outlive the loop, so the waker sits behind a lock and is
/// dropped (its eventfd closed) once the loop thread is gone: a late sender finds `None`,
/// never a reused descriptor number.
pub(crate) struct EpollWake {
    sleeping: AtomicBool,
    waker: std::sync::Mutex<Option<Waker>>,
}

impl EpollWake {
    /// The loop is about to block in `epoll_wait`.
    fn announce_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// The loop is awake again.
    fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    /// Interrupts the wait regardless of the flag.
    fn force(&self) {
        if let Some(w) = crate::conn::lock(&self.waker).as_ref() {
            let _ = w.wake();
        }
    }
}

impl crate::sys::KernelWake for EpollWake {
    fn notify(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.force();
        }
    }
}

/// Makes the poll instance and its waker, before the watcher's channel exists: senders need
/// the waker.
pub(crate) fn prepare() -> Result<(Poll, Arc<EpollWake>)> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKE)?;
    Ok((
        poll,
        Arc::new(EpollWake {
            sleeping: AtomicBool::new(false),
            waker: std::sync::Mutex::new(Some(waker)),
        }),
    ))
}

/// Starts the loop thread on `poll` (from [`prepare`]).
pub(crate) fn start<C: Send + 'static>(
    core: Core<C>,
    poll: Poll,
    wake: Arc<EpollWake>,
) -> Result<(Epoll, Vec<JoinHandle<()>>)> {
    let registry = poll.registry().try_clone()?;
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(1);

    let guard = core.results.close_on_panic();
    let lp = event_loop::EventLoop::new(
        core.rx,
        poll,
        wake.clone(),
        registry.try_clone()?,
        core.swap_pool,
        core.results,
        core.ids.clone(),
        core.gc,
        event_loop::ConnMaker {
            registry: registry.try_clone()?,
            ids: core.ids,
            watcher_id: core.watcher_id,
            owner: core.owner,
        },
        core.tx.clone(),
    );
    let slot = core.loop_slot;
    let loop_thread = std::thread::Builder::new()
        .name("gaio-loop".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            let _ = ready_tx.send(());
            lp.run();
            slot.exit();
        })?;
    ready_rx
        .recv()
        .map_err(|_| io::Error::other("gaio thread failed to start"))?;
    Ok((Epoll { registry, wake }, vec![loop_thread]))
}
