//! How the epoll driver starts a request: a stream request is one non-blocking syscall on the
//! thread that holds the engine (its outcome comes back at once); a file request is a
//! `RWF_NOWAIT` attempt there, and otherwise a blocking syscall on a file thread, whose outcome
//! comes back through the loop's channel. Descriptors are registered once, edge-triggered, for
//! read and write, and deregistered before they close.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use super::file_pool::{FilePool, Job};
use crate::conn::ConnId;
use crate::engine::{Driver, Start};
use crate::request::{self, file, Outcome, Request};
use crate::swap::SwapPool;

/// The epoll driver, inside the engine (behind the engine's lock).
pub(crate) struct Readiness<C> {
    registry: Registry,
    /// Shared with the submit side's fast path.
    swap: Arc<Mutex<SwapPool>>,
    files: FilePool<C>,
}

impl<C: Send + 'static> Readiness<C> {
    pub(crate) fn new(registry: Registry, swap: Arc<Mutex<SwapPool>>, files: FilePool<C>) -> Self {
        Readiness {
            registry,
            swap,
            files,
        }
    }

    /// Lets the file threads finish their jobs and joins them.
    pub(crate) fn shutdown(&mut self) {
        self.files.shutdown();
    }
}

/// Registers `fd` for edge-triggered read and write readiness under `id`'s token.
pub(crate) fn register(registry: &Registry, fd: RawFd, id: ConnId) -> std::io::Result<()> {
    registry.register(
        &mut SourceFd(&fd),
        Token(id.token()),
        Interest::READABLE | Interest::WRITABLE,
    )
}

impl<C: Send + 'static> Driver<C> for Readiness<C> {
    const READINESS: bool = true;

    fn start(&mut self, _key: usize, fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Start {
        Start::Done(request::attempt(fd, is_socket, req, &self.swap))
    }

    fn start_file(&mut self, key: usize, fd: RawFd, req: &mut Request<C>) -> Start {
        if let Some(outcome) = file::attempt(fd, req) {
            return Start::Done(outcome);
        }
        let job = Job {
            run: file::Blocking::of(fd, req),
            key,
            seq: req.id.seq,
        };
        if self.files.submit(job) {
            Start::InFlight
        } else {
            Start::Done(Outcome::Failed(std::io::Error::other(
                "no file thread could be started",
            )))
        }
    }

    /// A file thread's syscall cannot be stopped: the request ends when it returns.
    fn cancel(&mut self, _key: usize, _req: &Request<C>) {}

    /// The swap pool announced the starvation itself (`SwapPool::space`), after its re-check.
    fn starving(&mut self) -> bool {
        false
    }

    fn retrying(&mut self) {
        crate::conn::lock(&self.swap).clear_starving();
    }

    fn adopt(&mut self, fd: &OwnedFd, id: ConnId) -> std::io::Result<()> {
        register(&self.registry, fd.as_raw_fd(), id)
    }

    /// One `recvmmsg`/`sendmmsg` for several queued datagrams (Linux).
    #[cfg(target_os = "linux")]
    fn start_batch(
        &mut self,
        fd: RawFd,
        ops: &mut slab::Slab<Request<C>>,
        keys: &[usize],
        out: &mut Vec<Outcome>,
    ) -> bool {
        request::datagram::attempt_batch(fd, ops, keys, out);
        true
    }

    fn forget(&mut self, fd: &OwnedFd) {
        // Deregister before close, so another descriptor sharing the open file description (an
        // inherited copy) cannot keep a stale registration alive. Files were never registered.
        let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
    }
}
