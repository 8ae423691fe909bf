//! `write` and `write_vectored`: every byte of the caller's buffer (or of its pieces, in
//! order), in as many steps as it takes.
//!
//! - epoll and the fast path: one `send(MSG_NOSIGNAL | MSG_DONTWAIT)` (sockets) or
//!   `write(2)`; a vectored write one `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` or `writev(2)` of
//!   up to `IOV_STEP` pieces from where the last step ended (`gather.rs`);
//! - io_uring: SEND with MSG_NOSIGNAL (sockets) or WRITE; a vectored write SENDMSG with
//!   MSG_NOSIGNAL (sockets) or WRITEV;
//! - progress: complete when every byte is written; a step that moved nothing waits for
//!   readiness.

use std::os::fd::RawFd;

use super::gather::Gather;
use super::{Outcome, Request, Step};
use crate::buffer::Buffer;
use crate::sys::fd;
use crate::Error;

pub(crate) fn attempt<C>(fd: RawFd, is_socket: bool, req: &mut Request<C>) -> Outcome {
    if let Some(Buffer::Vectored(pieces)) = &req.buffer {
        let iov = req
            .gather
            .get_or_insert_with(|| Gather::new(pieces))
            .next(pieces);
        // SAFETY: `next` filled `iov` with slices of the request's pieces, which live
        // (unchanged: the kernel only reads them) for the duration of the call.
        return unsafe { fd::write_vectored(fd, iov, is_socket) }.into();
    }
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
    let ioprio = if poll_first && is_socket {
        super::RECVSEND_POLL_FIRST
    } else {
        0
    };
    if let Some(Buffer::Vectored(pieces)) = &req.buffer {
        let g = req.gather.get_or_insert_with(|| Gather::new(pieces));
        let n = g.next(pieces).len();
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
    if let (Some(Buffer::Vectored(pieces)), Some(g)) = (&req.buffer, &mut req.gather) {
        g.advance(pieces, n);
    }
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
