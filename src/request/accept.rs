//! `accept`: one connection from a listening socket, taken over by the engine.
//!
//! - epoll: `accept4(SOCK_CLOEXEC | SOCK_NONBLOCK)`, ECONNABORTED retried;
//! - io_uring: ACCEPT with SOCK_CLOEXEC;
//! - progress: the new descriptor goes to the engine, which registers it and hands out its
//!   `Conn` in the result.

use std::os::fd::RawFd;

use super::{Outcome, Step};
use crate::sys::fd::{self, Io2};

pub(crate) fn attempt(fd: RawFd) -> Outcome {
    match fd::accept(fd) {
        Io2::Ready(new_fd) => Outcome::Accepted(new_fd),
        Io2::WouldBlock => Outcome::WouldBlock,
        Io2::Failed(e) => Outcome::Failed(e),
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe(fd: io_uring::types::Fd) -> io_uring::squeue::Entry {
    io_uring::opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
        .flags(libc::SOCK_CLOEXEC)
        .build()
}

pub(crate) fn progress(outcome: Outcome) -> Step {
    match outcome {
        Outcome::Accepted(fd) => Step::Accepted(fd),
        // An accept reports a descriptor or an error; nothing else can come back.
        _ => Step::Done(
            None,
            Some(crate::Error::Io(std::io::Error::other(
                "accept returned no descriptor",
            ))),
        ),
    }
}
