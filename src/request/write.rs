//! `write`: every byte of the caller's buffer, in as many steps as it takes.
//!
//! - epoll and the fast path: one `send(MSG_NOSIGNAL | MSG_DONTWAIT)` (sockets) or
//!   `write(2)`;
//! - io_uring: SEND with MSG_NOSIGNAL (sockets) or WRITE;
//! - progress: complete when every byte is written; a step that moved nothing waits for
//!   readiness.

use std::os::fd::RawFd;

use super::{Outcome, Request, Step};
use crate::sys::fd;
use crate::Error;

pub(crate) fn attempt<C>(fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Outcome {
    fd::write(fd, req.rest(), is_socket).into()
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(
    fd: io_uring::types::Fd,
    is_socket: bool,
    req: &mut Request<C>,
) -> io_uring::squeue::Entry {
    use io_uring::opcode;
    let poll_first = req.poll_first;
    let rest = req.rest();
    // `rest` is at most MAX_STEP (i32::MAX) bytes long.
    let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
    if is_socket {
        let ioprio = if poll_first {
            super::RECVSEND_POLL_FIRST
        } else {
            0
        };
        opcode::Send::new(fd, ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .ioprio(ioprio)
            .build()
    } else {
        // Offset -1: the descriptor's own position, as write(2) uses (pipes have none).
        opcode::Write::new(fd, ptr, len).offset(u64::MAX).build()
    }
}

pub(crate) fn progress<C>(req: &mut Request<C>, outcome: Outcome, ending: Option<Error>) -> Step {
    let Outcome::Moved(n, _) = outcome else {
        return Step::Done(None, None);
    };
    req.size += n;
    if req.size >= req.len() {
        Step::Done(None, None)
    } else if ending.is_some() {
        Step::Done(None, ending)
    } else if n == 0 {
        // Nothing went out: the descriptor has no room.
        req.poll_first = true;
        Step::WouldBlock
    } else {
        Step::Again
    }
}
