//! `shutdown`: shuts down one or both directions of a socket, in the write direction's FIFO
//! order (after every write queued before it).
//!
//! - epoll and the fast path: `shutdown(2)` (never attempted inline: the engine queue keeps
//!   it behind the writes; see `Handle::inline_allowed`);
//! - io_uring: SHUTDOWN (5.11); a kernel without it gets the same `shutdown(2)`, done at once
//!   by the driver's start;
//! - progress: done when the call returns.

use std::os::fd::RawFd;

use super::{Outcome, Request, Step};
use crate::sys::syscall;

/// The `how` of `shutdown(2)` for the request's direction (both, if the submit side set
/// none, which it never does).
fn how<C>(req: &Request<C>) -> i32 {
    match req.how.unwrap_or(std::net::Shutdown::Both) {
        std::net::Shutdown::Read => libc::SHUT_RD,
        std::net::Shutdown::Write => libc::SHUT_WR,
        std::net::Shutdown::Both => libc::SHUT_RDWR,
    }
}

pub(crate) fn attempt<C>(fd: RawFd, req: &Request<C>) -> Outcome {
    let how = how(req);
    // SAFETY: shutdown(2) takes no pointers; `fd` is the request's descriptor, kept open by
    // the engine while the request is in its queue.
    match syscall(|| unsafe { libc::shutdown(fd, how) }) {
        Ok(_) => Outcome::Finished,
        Err(e) => Outcome::Failed(e),
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(fd: io_uring::types::Fd, req: &Request<C>) -> io_uring::squeue::Entry {
    io_uring::opcode::Shutdown::new(fd, how(req)).build()
}

pub(crate) fn progress() -> Step {
    Step::Done(None, None)
}
