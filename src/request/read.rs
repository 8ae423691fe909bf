//! `read` and `read_full`: into the caller's buffer, or (no buffer) into a swap buffer.
//!
//! - epoll and the fast path: one `recv(MSG_DONTWAIT)` (sockets) or `read(2)`;
//! - io_uring: RECV (sockets) or READ, a swap read with BUFFER_SELECT from the provided
//!   buffer ring, so a waiting swap read holds no buffer;
//! - progress: 0 bytes is EOF; a `read` completes on any data, a `read_full` when its buffer
//!   is full; a swap read completes with the slice that holds its bytes.

use std::os::fd::RawFd;
use std::sync::Mutex;

use super::{Kind, Outcome, Request, Step};
use crate::conn::lock;
use crate::swap::SwapPool;
use crate::sys::fd::{self, Io};
use crate::Error;

pub(crate) fn attempt<C>(
    fd: RawFd,
    is_socket: bool,
    req: &mut Request<C>,
    swap: &Mutex<SwapPool>,
) -> Outcome {
    if req.buffer.is_some() {
        let rest = req.rest_mut();
        // SAFETY: `rest` is the unfilled tail of the caller's buffer, which the request owns
        // exclusively while it is pending.
        return unsafe { fd::read(fd, rest.as_mut_ptr(), rest.len(), is_socket) }.into();
    }
    // Held from finding the space until the slice is committed: no other thread may read into
    // the same region.
    let mut swap = lock(swap);
    let Some((ptr, len)) = swap.space() else {
        return Outcome::NoSwap;
    };
    // SAFETY: `space` returned a region of `len` writable bytes that no live slice covers,
    // and the pool's lock keeps every other reader out of it until `commit`.
    match unsafe { fd::read(fd, ptr, len.min(super::MAX_STEP), is_socket) } {
        Io::Done(0) => Outcome::Moved(0, None),
        Io::Done(n) => Outcome::Moved(n, Some(swap.commit(n))),
        Io::WouldBlock => Outcome::WouldBlock,
        Io::Failed(e) => Outcome::Failed(e),
    }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(
    fd: io_uring::types::Fd,
    is_socket: bool,
    req: &mut Request<C>,
    group: u16,
    swap_len: u32,
) -> io_uring::squeue::Entry {
    use io_uring::{opcode, squeue};
    let ioprio = if req.poll_first && is_socket {
        super::RECVSEND_POLL_FIRST
    } else {
        0
    };
    if req.buffer.is_none() {
        let len = swap_len.min(super::MAX_STEP as u32);
        let e = if is_socket {
            opcode::Recv::new(fd, std::ptr::null_mut(), len)
                .buf_group(group)
                .ioprio(ioprio)
                .build()
        } else {
            opcode::Read::new(fd, std::ptr::null_mut(), len)
                .offset(u64::MAX)
                .buf_group(group)
                .build()
        };
        return e.flags(squeue::Flags::BUFFER_SELECT);
    }
    let rest = req.rest_mut();
    // `rest` is at most MAX_STEP (i32::MAX) bytes long.
    let (ptr, len) = (rest.as_mut_ptr(), rest.len() as u32);
    if is_socket {
        opcode::Recv::new(fd, ptr, len).ioprio(ioprio).build()
    } else {
        // Offset -1: the descriptor's own position, as read(2) uses (pipes have none).
        opcode::Read::new(fd, ptr, len).offset(u64::MAX).build()
    }
}

pub(crate) fn progress<C>(req: &mut Request<C>, outcome: Outcome, ending: Option<Error>) -> Step {
    let Outcome::Moved(n, swap) = outcome else {
        return Step::Done(None, None);
    };
    if n == 0 {
        return Step::Done(None, Some(Error::Eof));
    }
    if req.buffer.is_none() {
        req.size = n;
        return match swap {
            Some(s) => Step::Done(Some(s), None),
            // io_uring with BUFFER_SELECT always names the buffer it filled.
            None => Step::Done(
                None,
                Some(Error::Io(std::io::Error::other(
                    "data arrived without a swap buffer",
                ))),
            ),
        };
    }
    req.size += n;
    if req.kind == Kind::Read || req.size >= req.len() {
        Step::Done(None, None)
    } else if ending.is_some() {
        Step::Done(None, ending)
    } else {
        Step::Again
    }
}
