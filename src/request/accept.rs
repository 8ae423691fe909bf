//! `accept`: one connection from a listening socket, taken over by the engine.
//!
//! - epoll: `accept4(SOCK_CLOEXEC | SOCK_NONBLOCK)`, ECONNABORTED retried;
//! - io_uring: ACCEPT with SOCK_CLOEXEC;
//! - both write the peer's address into the request's boxed `peer` storage, which the result
//!   turns into `OpResult::addr`;
//! - progress: the new descriptor goes to the engine, which registers it and hands out its
//!   `Conn` in the result.

use std::os::fd::RawFd;

use super::{Outcome, Request, Step};
use crate::sys::fd::{self, Io2};

/// The boxed storage an accept's peer address is written to (allocated only for accepts).
pub(crate) type Peer = Box<(socket2::SockAddrStorage, libc::socklen_t)>;

/// Fresh storage for one accept's peer address.
pub(crate) fn peer_storage() -> Peer {
    let storage = socket2::SockAddrStorage::zeroed();
    let len = storage.size_of();
    Box::new((storage, len))
}

/// The IP address in `peer`, as the kernel filled it in (`None` for other families, or an
/// accept that never completed: the family stays 0).
pub(crate) fn peer_addr(peer: Peer) -> Option<std::net::SocketAddr> {
    let (storage, len) = *peer;
    let len = len.min(storage.size_of());
    // SAFETY: `storage` is a zero-initialised `sockaddr_storage` that the kernel may have
    // overwritten with an address of `len` bytes (`len` never exceeds its size: the kernel
    // truncates, and reports the full length only when it is larger, which `min` caps).
    let addr = unsafe { socket2::SockAddr::new(storage, len) };
    addr.as_socket()
}

pub(crate) fn attempt<C>(fd: RawFd, req: &mut Request<C>) -> Outcome {
    let peer = req.peer.get_or_insert_with(peer_storage);
    match fd::accept(fd, peer) {
        Io2::Ready(new_fd) => Outcome::Accepted(new_fd),
        Io2::WouldBlock => Outcome::WouldBlock,
        Io2::Failed(e) => Outcome::Failed(e),
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn sqe<C>(fd: io_uring::types::Fd, req: &mut Request<C>) -> io_uring::squeue::Entry {
    let peer = req.peer.get_or_insert_with(peer_storage);
    let (storage, len) = (&mut peer.0, &mut peer.1);
    *len = storage.size_of();
    // The box stays where it is until the request is finished, which is after its CQE (the
    // engine keeps a request in flight until its outcome is back).
    let addr = (storage as *mut socket2::SockAddrStorage).cast::<libc::sockaddr>();
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
