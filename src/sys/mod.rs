//! OS calls only: the one syscall wrapper ([`syscall`]) and errno classifier ([`Errno`]),
//! descriptor checks and blocking mode, eventfds, and the non-blocking syscall attempts the
//! request kinds use (`crate::request`).

pub(crate) mod fd;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Runs a libc call until it is not interrupted: its non-negative return, or the `errno` of a
/// negative one as an `io::Error`. Every syscall of the crate that returns an integer goes
/// through here (mio's `syscall!`, with EINTR retried once, here, for all).
pub(crate) fn syscall<T: Copy + PartialOrd + Default>(
    mut call: impl FnMut() -> T,
) -> io::Result<T> {
    loop {
        let rc = call();
        if rc >= T::default() {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// What a failed syscall's errno means to the watcher: the one classifier.
pub(crate) enum Errno {
    /// EAGAIN / EWOULDBLOCK: wait for readiness.
    WouldBlock,
    /// Any other error.
    Other(io::Error),
}

impl From<io::Error> for Errno {
    fn from(e: io::Error) -> Errno {
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Errno::WouldBlock,
            #[allow(unreachable_patterns)] // EWOULDBLOCK == EAGAIN on Linux, not everywhere
            Some(libc::EWOULDBLOCK) => Errno::WouldBlock,
            _ => Errno::Other(e),
        }
    }
}

/// A new non-blocking, close-on-exec eventfd (the wake-ups of the epoll leader and of the
/// io_uring ring thread).
#[cfg(target_os = "linux")]
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes no pointers.
    let fd = syscall(|| unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to eventfd `fd`, waking whoever waits on it. An error (EAGAIN at the counter's
/// limit, which the callers never reach in practice) would only cost this one wake-up.
#[cfg(target_os = "linux")]
pub(crate) fn eventfd_signal(fd: std::os::fd::BorrowedFd<'_>) {
    use std::os::fd::AsRawFd;
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to an eventfd the caller keeps open.
    let _ = syscall(|| unsafe {
        libc::write(
            fd.as_raw_fd(),
            (&one as *const u64).cast(),
            std::mem::size_of::<u64>(),
        )
    });
}

/// A close-on-exec duplicate of `fd`.
pub(crate) fn dup(fd: std::os::fd::RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers; `fd` is the caller's open descriptor.
    let dup = syscall(|| unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: `dup` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}
