//! `connect`: the request's own socket to its address.
//!
//! - epoll: a non-blocking `connect(2)`, then on each write edge a check of `SO_ERROR` and the
//!   peer address (readiness alone proves nothing on a fresh socket);
//! - io_uring: CONNECT;
//! - progress: done once connected; errors come back as they are.

use std::os::fd::RawFd;

use super::{Outcome, Request, Step};
use crate::sys::fd::{self, Io2};

pub(crate) fn attempt<C>(fd: RawFd, req: &mut Request<C>) -> Outcome {
    let step = match (&req.addr, req.connecting) {
        (Some(addr), false) => fd::connect_start(fd, addr),
        _ => fd::connect_finished(fd),
    };
    match step {
        Io2::Ready(()) => Outcome::Finished,
        Io2::WouldBlock => {
            req.connecting = true;
            Outcome::WouldBlock
        }
        Io2::Failed(e) => Outcome::Failed(e),
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(
    fd: io_uring::types::Fd,
    req: &mut Request<C>,
) -> Option<io_uring::squeue::Entry> {
    let (addr, len) = req.addr.as_ref()?.as_ptr();
    Some(io_uring::opcode::Connect::new(fd, addr, len).build())
}

pub(crate) fn progress() -> Step {
    Step::Done(None, None)
}
