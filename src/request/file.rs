//! File requests: `read_at`, `write_at`, `fsync`, `fdatasync`. Requests on one file run side
//! by side (outside the FIFO queues); an fsync waits for the writes submitted before it (the
//! engine's barrier, `crate::engine::files`).
//!
//! - epoll: `preadv2`/`pwritev2` with `RWF_NOWAIT` where the driver runs (page-cache hits cost
//!   one syscall and no hop), and the misses, every `O_DIRECT` request and every fsync as a
//!   plain blocking syscall on a file thread ([`blocking`]);
//! - io_uring: READ, WRITE, FSYNC (DATASYNC) at the request's offset;
//! - progress: a `read_at` ends at the end of the file (EOF if nothing was read, else short),
//!   and on an `O_DIRECT` file also when a short read leaves it off the file's alignment; a
//!   `write_at` continues until every byte is written.

use std::os::fd::RawFd;

use super::{Kind, Outcome, Request, Step};
use crate::Error;

/// Where request `req` continues in its file: `offset + size`. The submit side refuses an
/// `offset + len` beyond `i64::MAX`, so this neither overflows nor leaves `off_t`.
fn position<C>(req: &Request<C>) -> u64 {
    req.offset.saturating_add(req.size as u64)
}

/// One attempt that never waits for the device: `Some(outcome)`, or `None` when the request
/// must go to a file thread (not cached, `O_DIRECT`, an fsync, or `RWF_NOWAIT` unsupported).
pub(crate) fn attempt<C>(fd: RawFd, req: &mut Request<C>) -> Option<Outcome> {
    // RWF_NOWAIT covers locks and allocation, not the device: on an O_DIRECT file it would wait
    // for the disk where the driver runs.
    if !matches!(req.kind, Kind::ReadAt | Kind::WriteAt)
        || req.conn.0.file.is_some_and(|f| f.direct)
    {
        return None;
    }
    let offset = position(req);
    let kind = req.kind;
    let (ptr, len) = tail(req);
    let iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    #[cfg(target_os = "linux")]
    let rc = crate::sys::syscall(|| {
        // SAFETY: `iov` describes the unfilled tail of a read's buffer, which the request owns
        // exclusively while it is pending, or the unwritten tail of a write's, which the kernel
        // only reads and which lives as long as the request; `fd` is open (the engine closes it only after every
        // request on it has ended).
        unsafe {
            match kind {
                Kind::ReadAt => libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT),
                _ => libc::pwritev2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT),
            }
        }
    });
    #[cfg(not(target_os = "linux"))]
    let rc: std::io::Result<isize> = {
        let _ = (fd, kind, &iov, offset);
        return None;
    };
    match rc {
        Ok(n) if n > 0 || kind == Kind::ReadAt => Some(Outcome::Moved(n as usize, None)),
        // A write that moved nothing: let a file thread wait for the device.
        Ok(_) => None,
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => None,
            _ => Some(Outcome::Failed(e)),
        },
    }
}

/// What a file thread needs to run a request: the rest of its buffer and where it goes.
#[derive(Clone, Copy)]
pub(crate) struct Blocking {
    pub(crate) fd: RawFd,
    pub(crate) ptr: *mut u8,
    pub(crate) len: usize,
    pub(crate) offset: u64,
    pub(crate) kind: Kind,
}

impl Blocking {
    pub(crate) fn of<C>(fd: RawFd, req: &mut Request<C>) -> Blocking {
        let (offset, kind) = (position(req), req.kind);
        let (ptr, len) = tail(req);
        Blocking {
            fd,
            ptr,
            len,
            offset,
            kind,
        }
    }
}

/// The rest of a file request's buffer as the kernel takes it: a `read_at` fills its
/// (mutable) tail; a `write_at` sends its tail, which may be shared memory (an `Arc<[u8]>`, a
/// `&'static [u8]`): the pointer is `*mut` only because the syscall's and the SQE's types are,
/// and nothing writes through it.
fn tail<C>(req: &mut Request<C>) -> (*mut u8, usize) {
    if req.kind == Kind::ReadAt {
        let rest = req.rest_mut();
        (rest.as_mut_ptr(), rest.len())
    } else {
        let rest = req.rest();
        (rest.as_ptr().cast_mut(), rest.len())
    }
}

/// The blocking syscall a file thread runs, EINTR retried.
///
/// # Safety
/// `job.ptr[..job.len]` must be the live tail of the request's buffer (exclusive for a
/// `read_at`; a `write_at` only reads it) and `job.fd` open until this returns.
pub(crate) unsafe fn blocking(job: &Blocking) -> Outcome {
    let rc = crate::sys::syscall(|| {
        // SAFETY: the caller guarantees the buffer and the descriptor (see above).
        unsafe {
            match job.kind {
                Kind::ReadAt => {
                    libc::pread(job.fd, job.ptr.cast(), job.len, job.offset as libc::off_t)
                }
                Kind::WriteAt => {
                    libc::pwrite(job.fd, job.ptr.cast(), job.len, job.offset as libc::off_t)
                }
                Kind::Fsync => libc::fsync(job.fd) as isize,
                _ => fdatasync(job.fd) as isize,
            }
        }
    });
    match (rc, job.kind) {
        (Ok(_), Kind::Fsync | Kind::Fdatasync) => Outcome::Finished,
        (Ok(n), _) => Outcome::Moved(n as usize, None),
        (Err(e), _) => Outcome::Failed(e),
    }
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: the caller passes an open descriptor.
    unsafe { libc::fdatasync(fd) }
}

/// macOS has no fdatasync; fsync gives at least the same guarantee.
#[cfg(any(target_os = "macos", target_os = "ios"))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: the caller passes an open descriptor.
    unsafe { libc::fsync(fd) }
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(fd: io_uring::types::Fd, req: &mut Request<C>) -> io_uring::squeue::Entry {
    use io_uring::{opcode, types};
    let (offset, kind) = (position(req), req.kind);
    let (ptr, len) = tail(req);
    // The tail is at most MAX_STEP (i32::MAX) bytes long.
    let len = len as u32;
    match kind {
        Kind::ReadAt => opcode::Read::new(fd, ptr, len).offset(offset).build(),
        Kind::WriteAt => opcode::Write::new(fd, ptr.cast_const(), len)
            .offset(offset)
            .build(),
        Kind::Fdatasync => opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build(),
        _ => opcode::Fsync::new(fd).build(),
    }
}

/// A `read_at` on an `O_DIRECT` file that came back short at a position off the file's
/// alignment has reached the end of the file as it was: reading on from there would be refused
/// (`EINVAL`) if a concurrent write had meanwhile made the file longer. It ends as a short read.
fn direct_read_ended<C>(req: &Request<C>) -> bool {
    req.kind == Kind::ReadAt
        && req.conn.0.file.is_some_and(|f| {
            let align = f.align.offset.max(1) as u64;
            f.direct && position(req) % align != 0
        })
}

pub(crate) fn progress<C>(req: &mut Request<C>, outcome: Outcome, ending: Option<Error>) -> Step {
    let n = match (req.kind, outcome) {
        // An fsync that finished while an ending was pending still ends with it (the caller
        // asked for it to stop; the data may or may not be durable).
        (Kind::Fsync | Kind::Fdatasync, _) => return Step::Done(None, ending),
        (_, Outcome::Moved(n, _)) => n,
        _ => return Step::Done(None, ending),
    };
    if n == 0 && req.kind == Kind::ReadAt {
        let eof = (req.size == 0).then_some(Error::Eof);
        return Step::Done(None, ending.or(eof));
    }
    req.size += n;
    if req.size >= req.len() || direct_read_ended(req) {
        Step::Done(None, None)
    } else if ending.is_some() {
        Step::Done(None, ending)
    } else {
        Step::Again
    }
}
