//! `write` and `write_vectored`: every byte of the caller's buffer (or of its pieces, in
//! order), in as many steps as it takes.
//!
//! - epoll and the fast path: one `send(MSG_NOSIGNAL | MSG_DONTWAIT)` (sockets) or
//!   `write(2)`; a vectored write one `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` or `writev(2)` of
//!   up to [`IOV_STEP`] pieces;
//! - io_uring: SEND with MSG_NOSIGNAL (sockets) or WRITE; a vectored write SENDMSG with
//!   MSG_NOSIGNAL (sockets) or WRITEV;
//! - progress: complete when every byte is written; a step that moved nothing waits for
//!   readiness.

use std::os::fd::RawFd;

use super::{Outcome, Request, Step, MAX_STEP};
use crate::buffer::Buffer;
use crate::sys::fd;
use crate::Error;

/// Pieces of a vectored write one step sends at most (the kernel's own limit, `UIO_MAXIOV`, is
/// 1024): a write of more pieces takes more steps, each a syscall or an SQE. 64 iovecs are
/// 1 KiB on the stack of the thread that attempts it.
pub(crate) const IOV_STEP: usize = 64;

pub(crate) fn attempt<C>(fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Outcome {
    if let Some(Buffer::Vectored(pieces)) = &req.buffer {
        let mut iov = [EMPTY_IOV; IOV_STEP];
        let n = gather(pieces, req.size, &mut iov);
        // SAFETY: `gather` filled `iov[..n]` with slices of the request's pieces, which live
        // (unchanged: the kernel only reads them) for the duration of the call.
        return unsafe { fd::write_vectored(fd, &iov[..n], is_socket) }.into();
    }
    fd::write(fd, req.rest(), is_socket).into()
}

pub(super) const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// Fills `iov` with the unsent parts of `pieces` after the first `skip` bytes, in order: as
/// many as fit, skipping empty ones, at most [`MAX_STEP`] bytes in all (a CQE's result is an
/// `i32`). Returns how many entries it filled. The pointers are `*mut` only because `iovec`'s
/// are: the kernel reads through them.
pub(super) fn gather(pieces: &[Buffer], mut skip: usize, iov: &mut [libc::iovec]) -> usize {
    let (mut n, mut budget) = (0, MAX_STEP);
    for piece in pieces {
        if n == iov.len() || budget == 0 {
            break;
        }
        let bytes = piece.as_slice();
        if skip >= bytes.len() {
            skip -= bytes.len();
            continue;
        }
        let part = &bytes[skip..];
        skip = 0;
        let len = part.len().min(budget);
        budget -= len;
        iov[n] = libc::iovec {
            iov_base: part.as_ptr().cast_mut().cast(),
            iov_len: len,
        };
        n += 1;
    }
    n
}

/// What the kernel reads for a vectored write on io_uring until its CQE: the iovec array and,
/// for a socket, the message header that points at it.
#[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
pub(crate) struct Gather {
    pub(super) iov: [libc::iovec; IOV_STEP],
    pub(super) msg: libc::msghdr,
}

impl Gather {
    /// An empty array and header (no name: a send_to sets its destination).
    #[cfg(all(target_os = "linux", feature = "io-uring"))]
    pub(super) fn new_boxed() -> Box<Gather> {
        Box::new(Gather {
            iov: [EMPTY_IOV; IOV_STEP],
            // SAFETY: all-zero is a valid `msghdr` (no name, no control data, no iovecs).
            msg: unsafe { std::mem::zeroed() },
        })
    }
}

// SAFETY: the raw pointers in a `Gather` point into the pieces of the request that owns it (and
// `msg` into its own `iov`), never at thread-local memory; they are written only by the thread
// that holds the request to build an SQE, and read by the kernel. Moving the box to another
// thread with its request moves nothing the pointers refer to.
unsafe impl Send for Gather {}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(
    fd: io_uring::types::Fd,
    is_socket: bool,
    req: &mut Request<C>,
) -> io_uring::squeue::Entry {
    use io_uring::opcode;
    let poll_first = req.poll_first;
    let ioprio = if poll_first && is_socket {
        super::RECVSEND_POLL_FIRST
    } else {
        0
    };
    if let Some(Buffer::Vectored(pieces)) = &req.buffer {
        let g = req.gather.get_or_insert_with(Gather::new_boxed);
        let n = gather(pieces, req.size, &mut g.iov);
        // A request is started again only after its previous CQE came back, so rewriting the
        // array and header here never changes what the kernel is reading.
        if is_socket {
            g.msg.msg_iov = g.iov.as_mut_ptr();
            g.msg.msg_iovlen = n as _;
            return opcode::SendMsg::new(fd, &g.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .ioprio(ioprio)
                .build();
        }
        return opcode::Writev::new(fd, g.iov.as_ptr(), n as u32)
            .offset(u64::MAX)
            .build();
    }
    let rest = req.rest();
    // `rest` is at most MAX_STEP (i32::MAX) bytes long.
    let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
    if is_socket {
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
