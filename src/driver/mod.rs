//! The backends: each a thin driver of the engine (`crate::engine`) that starts requests,
//! reports what came back and does its own waiting (`epoll/`: epoll_wait with leader/follower
//! consumers and a poller thread; `uring/`: one ring thread that submits and reaps). The front
//! end (`crate::watcher`) reaches whichever runs through [`Handle`] and its methods only.

pub(crate) mod epoll;
pub(crate) mod failure;
mod link;
mod start;
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) mod uring;

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) use link::KernelWake;
pub(crate) use link::{LoopLink, LoopTx, SwapRetry};
pub(crate) use start::{start, Core, Parts, Settings};

use std::os::fd::{OwnedFd, RawFd};
use std::sync::{Arc, Weak};

use crate::conn::{ConnId, ConnShared};
use crate::engine::LoopMsg;
use crate::request::Request;

/// The submit side's handle on whichever backend runs.
pub(crate) enum Handle<C> {
    Epoll(epoll::Epoll<C>),
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    Uring(Arc<uring::RingWake>),
}

impl<C: Send + 'static> Handle<C> {
    /// Registers a taken-over descriptor under `id` (readiness backends; a no-op elsewhere).
    pub(crate) fn register(&self, fd: RawFd, id: ConnId) -> crate::Result<()> {
        match self {
            Handle::Epoll(e) => e.register(fd, id),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => {
                let _ = (fd, id);
                Ok(())
            }
        }
    }

    /// Hands a taken-over descriptor to the engine (epoll: under its lock, on this thread, so
    /// a request submitted right after finds it; io_uring: through the channel, ahead of any
    /// request on it). Refused only once the watcher is closed.
    #[cfg_attr(
        not(all(target_os = "linux", feature = "io-uring")),
        allow(unused_variables)
    )]
    pub(crate) fn watch(
        &self,
        tx: &LoopTx<C>,
        id: ConnId,
        fd: OwnedFd,
        is_socket: bool,
        handle: Weak<ConnShared>,
    ) -> Result<(), ()> {
        match self {
            Handle::Epoll(e) => {
                e.watch(id, fd, is_socket, handle);
                Ok(())
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => tx
                .send(LoopMsg::Watch {
                    id,
                    fd,
                    is_socket,
                    handle,
                })
                .map_err(|_| ()),
        }
    }

    /// Hands a request to the engine (epoll: on this thread, under its lock; io_uring: over
    /// the channel to the ring thread); a refusal gives it back.
    // The request comes back whole only when the backend has stopped (about 140 bytes moved
    // on that path; with the `bytes` feature a `Bytes` buffer takes it past clippy's 128).
    #[allow(clippy::result_large_err)]
    #[cfg_attr(
        not(all(target_os = "linux", feature = "io-uring")),
        allow(unused_variables)
    )]
    pub(crate) fn submit(&self, tx: &LoopTx<C>, req: Request<C>) -> Result<(), Request<C>> {
        match self {
            Handle::Epoll(e) => {
                e.submit(req);
                Ok(())
            }
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => tx.send(LoopMsg::Submit(req)).map_err(|e| match e.0 {
                LoopMsg::Submit(req) => req,
                _ => unreachable!("sent a Submit"),
            }),
        }
    }

    /// The blocking mode taken-over descriptors get: non-blocking for readiness (every
    /// attempt must return EAGAIN rather than block), blocking for io_uring (the kernel then
    /// arms its internal poll instead of handing EAGAIN back).
    pub(crate) fn nonblocking(&self) -> bool {
        match self {
            Handle::Epoll(_) => true,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => false,
        }
    }

    /// Whether `req` may be attempted on the submitting thread (`crate::engine::fast_path`):
    /// plain reads (caller buffer or swap), full reads and writes. On io_uring only sockets
    /// qualify: other descriptors are in blocking mode there, and only sockets take
    /// `MSG_DONTWAIT`.
    pub(crate) fn inline_allowed(&self, req: &Request<C>) -> bool {
        use crate::request::Kind;
        if !matches!(
            req.kind,
            Kind::Read | Kind::ReadFull | Kind::Write | Kind::RecvFrom | Kind::SendTo
        ) {
            return false;
        }
        // A corked connection's requests queue for the cork's end (`Watcher::cork`).
        if req.conn.0.corks.load(std::sync::atomic::Ordering::Acquire) > 0 {
            return false;
        }
        match self {
            Handle::Epoll(_) => true,
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => req.conn.0.is_socket,
        }
    }

    /// The last cork on connection `id` ended: start the requests it held back (epoll: here,
    /// under the engine's lock; io_uring: on the ring thread).
    #[cfg_attr(
        not(all(target_os = "linux", feature = "io-uring")),
        allow(unused_variables)
    )]
    pub(crate) fn uncork(&self, tx: &LoopTx<C>, id: ConnId) {
        match self {
            Handle::Epoll(e) => e.uncork(id),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => {
                let _ = tx.send(LoopMsg::Uncork(id));
            }
        }
    }

    /// The leader/follower hook of `wait_io`, where the backend has one.
    pub(crate) fn lead(&self) -> Option<Arc<dyn crate::results::Lead>> {
        match self {
            Handle::Epoll(e) => e.lead(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => None,
        }
    }

    /// After the backend's threads are joined: close what handles may still point at.
    pub(crate) fn finish(&self) {
        match self {
            Handle::Epoll(e) => e.finish(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(w) => w.close(),
        }
    }

    /// Whether this backend runs thread `t` (the test hook).
    pub(crate) fn has_thread(&self, t: failure::Thread) -> bool {
        use failure::Thread;
        match self {
            Handle::Epoll(_) => matches!(t, Thread::Loop | Thread::Poller | Thread::File),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(_) => t == Thread::Ring,
        }
    }

    /// Wakes every backend thread that waits (the test hook, after arming a failpoint).
    #[allow(irrefutable_let_patterns)] // epoll alone, without the io-uring feature
    pub(crate) fn wake_all(&self, tx: &LoopTx<C>) {
        let _ = tx.send(LoopMsg::Tick);
        if let Handle::Epoll(e) = self {
            e.wake_poller();
        }
    }

    /// Interrupts the backend's kernel wait so its threads see `Close`.
    pub(crate) fn shutdown(&self) {
        match self {
            Handle::Epoll(e) => e.shutdown(),
            #[cfg(all(target_os = "linux", feature = "io-uring"))]
            Handle::Uring(w) => w.force(),
        }
    }
}
