//! One attempt at a stream request with plain non-blocking syscalls: what the readiness loop
//! does on every edge, and what any backend's submit-side fast path does before it hands a
//! request to its loop (`crate::lane`).

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Mutex;

use crate::conn::lock;
use crate::op::{Op, OpKind};
use crate::swap::{SwapPool, SwapSlice};
use crate::sys::fd::{self, Io, Io2};
use crate::Error;

/// What one attempt at a request came to.
pub(crate) enum Attempt {
    /// Finished: deliver it.
    Done(Option<SwapSlice>, Option<Error>),
    /// EAGAIN: wait for the next edge.
    WouldBlock,
    /// A swap read found every swap chunk held: wait for a release.
    NoSwap,
    /// An accept produced this descriptor.
    Accepted(OwnedFd),
}

/// Runs request `op` on `fd` as far as it can go without blocking. A swap read takes its space
/// from `swap`.
pub(crate) fn attempt<C>(
    fd: RawFd,
    is_socket: bool,
    op: &mut Op<C>,
    swap: &Mutex<SwapPool>,
) -> Attempt {
    match (op.kind, op.buffer.as_mut()) {
        (OpKind::Write, Some(buf)) => loop {
            match fd::write(fd, &buf[op.size..], is_socket) {
                Io::Done(0) => return Attempt::WouldBlock,
                Io::Done(n) => {
                    op.size += n;
                    if op.size == buf.len() {
                        return Attempt::Done(None, None);
                    }
                }
                Io::WouldBlock => return Attempt::WouldBlock,
                Io::Failed(e) => return Attempt::Done(None, Some(Error::Io(e))),
            }
        },
        (OpKind::Read | OpKind::ReadFull, Some(buf)) => loop {
            let rest = &mut buf[op.size..];
            // SAFETY: `rest` is the unfilled tail of the caller's buffer, which the op owns
            // exclusively while it is in the loop.
            match unsafe { fd::read(fd, rest.as_mut_ptr(), rest.len(), is_socket) } {
                Io::Done(0) => return Attempt::Done(None, Some(Error::Eof)),
                Io::Done(n) => {
                    op.size += n;
                    if op.kind == OpKind::Read || op.size == buf.len() {
                        return Attempt::Done(None, None);
                    }
                }
                Io::WouldBlock => return Attempt::WouldBlock,
                Io::Failed(e) => return Attempt::Done(None, Some(Error::Io(e))),
            }
        },
        // File requests never come here (`file_submit`).
        (OpKind::ReadAt | OpKind::WriteAt | OpKind::Fsync | OpKind::Fdatasync, _) => {
            Attempt::Done(None, Some(Error::Unsupported))
        }
        (OpKind::Accept, _) => match fd::accept(fd) {
            Io2::Ready(new_fd) => Attempt::Accepted(new_fd),
            Io2::WouldBlock => Attempt::WouldBlock,
            Io2::Failed(e) => Attempt::Done(None, Some(Error::Io(e))),
        },
        (OpKind::Connect, _) => {
            let step = match (&op.addr, op.started) {
                (Some(addr), false) => fd::connect_start(fd, addr),
                _ => fd::connect_finished(fd),
            };
            match step {
                Io2::Ready(()) => Attempt::Done(None, None),
                Io2::WouldBlock => {
                    op.started = true;
                    Attempt::WouldBlock
                }
                Io2::Failed(e) => Attempt::Done(None, Some(Error::Io(e))),
            }
        }
        (_, None) => {
            // Held from finding the space until the slice is committed: no other thread may
            // read into the same region.
            let mut swap = lock(swap);
            let Some((ptr, len)) = swap.space() else {
                return Attempt::NoSwap;
            };
            // SAFETY: `space` returned a region of `len` writable bytes that no live slice
            // covers, and the pool's lock keeps every other reader out of it until `commit`.
            match unsafe { fd::read(fd, ptr, len, is_socket) } {
                Io::Done(0) => Attempt::Done(None, Some(Error::Eof)),
                Io::Done(n) => {
                    op.size = n;
                    Attempt::Done(Some(swap.commit(n)), None)
                }
                Io::WouldBlock => Attempt::WouldBlock,
                Io::Failed(e) => Attempt::Done(None, Some(Error::Io(e))),
            }
        }
    }
}
