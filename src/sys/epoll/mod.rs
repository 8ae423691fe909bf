//! The readiness backend: epoll on Linux through `mio`'s portable API (so it also builds where
//! mio uses kqueue). Two threads as in gaio: the poller blocks in the kernel wait, the loop owns
//! all state and performs every syscall. Descriptors are registered once, edge-triggered, for
//! read and write, and never modified until they are deregistered on release.

mod event_loop;
mod file_pool;
mod poller;

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
    waker: Waker,
    shutdown: Arc<AtomicBool>,
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

    /// Tells the poller to exit and interrupts its wait.
    pub(crate) fn shutdown(&self) {
        self.shutdown.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }
}

/// Starts the poller and loop threads.
pub(crate) fn start<C: Send + 'static>(core: Core<C>) -> Result<(Epoll, Vec<JoinHandle<()>>)> {
    let poll = Poll::new()?;
    let registry = poll.registry().try_clone()?;
    let waker = Waker::new(poll.registry(), poller::WAKE)?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let (ack_tx, ack_rx) = crossbeam_channel::bounded(1);
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<()>(2);

    let guard = core.results.close_on_panic();
    let lp = event_loop::EventLoop::new(
        core.rx,
        ack_tx,
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
        core.tx.channel(),
    );
    let slot = core.loop_slot;
    let ready = ready_tx.clone();
    let loop_thread = std::thread::Builder::new()
        .name("gaio-loop".into())
        .spawn(move || {
            let _guard = guard;
            slot.enter();
            let _ = ready.send(());
            lp.run();
            slot.exit();
        })?;

    let slot = core.poller_slot;
    let close_tx = core.tx.clone();
    let tx = core.tx.channel();
    let stop = shutdown.clone();
    let poller_thread = std::thread::Builder::new()
        .name("gaio-poller".into())
        .spawn(move || {
            slot.enter();
            let _ = ready_tx.send(());
            poller::run(poll, tx, ack_rx, stop);
            slot.exit();
        });
    let poller_thread = match poller_thread {
        Ok(t) => t,
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
        },
        vec![loop_thread, poller_thread],
    ))
}
