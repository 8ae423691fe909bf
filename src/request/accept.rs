//! `accept`: one connection from a listening socket, taken over by the engine.
//!
//! - epoll: `accept4(SOCK_CLOEXEC | SOCK_NONBLOCK)`, ECONNABORTED retried;
//! - io_uring: ACCEPT with SOCK_CLOEXEC;
//! - both write the peer's address into the request's boxed `addr` storage, which the result
//!   turns into `OpResult::addr`;
//! - progress: the new descriptor goes to the engine, which registers it and hands out its
//!   `Conn` in the result.

use std::os::fd::RawFd;

use super::{AddrBuf, Outcome, Request, Step};
use crate::sys::fd::{self, Io2};

pub(crate) fn attempt<C>(fd: RawFd, req: &mut Request<C>) -> Outcome {
    let peer = req.addr.get_or_insert_with(AddrBuf::empty);
    match fd::accept(fd, peer) {
        Io2::Ready(new_fd) => Outcome::Accepted(new_fd),
        Io2::WouldBlock => Outcome::WouldBlock,
        Io2::Failed(e) => Outcome::Failed(e),
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(fd: io_uring::types::Fd, req: &mut Request<C>) -> io_uring::squeue::Entry {
    // The box stays where it is until the request is finished, which is after its CQE (the
    // engine keeps a request in flight until its outcome is back).
    let (addr, len) = req.addr.get_or_insert_with(AddrBuf::empty).as_mut_ptr();
    io_uring::opcode::Accept::new(fd, addr, len)
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
