//! Raw descriptor syscalls for the readiness backend: take-over checks, non-blocking mode, and
//! the read/write attempts (EINTR retried, EAGAIN reported as `None`).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use super::{syscall, Errno};
use crate::{Error, Result};

/// What kind of descriptor the watcher was given.
pub(crate) struct FdKind {
    pub(crate) is_socket: bool,
    /// A datagram socket (`SOCK_DGRAM`: UDP, Unix datagram): `recv_from`/`send_to` work on it.
    pub(crate) is_datagram: bool,
    /// A regular file or block device: driven by file requests (`read_at`, …), never polled.
    pub(crate) file: Option<FileInfo>,
}

/// What the submit side checks file requests against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileInfo {
    /// Opened with `O_DIRECT`: buffers, lengths and offsets must be aligned.
    pub(crate) direct: bool,
    pub(crate) align: DioAlignment,
}

/// Checks that `fd` can be driven by the watcher, and sets its blocking mode: non-blocking for
/// readiness (every attempt must return EAGAIN rather than block), blocking for io_uring (so the
/// kernel arms its internal poll instead of handing EAGAIN back).
///
/// Regular files and directories cannot be polled: [`Error::Unsupported`]. A closed or invalid
/// descriptor gives the OS error (`EBADF`).
pub(crate) fn prepare(fd: BorrowedFd<'_>, nonblocking: bool) -> Result<FdKind> {
    let raw = fd.as_raw_fd();
    // SAFETY: an all-zero `stat` is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `raw` is a descriptor borrowed for this call; `st` is a valid, writable stat.
    syscall(|| unsafe { libc::fstat(raw, &mut st) })?;
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFDIR {
        return Err(Error::Unsupported);
    }
    if fmt == libc::S_IFREG || fmt == libc::S_IFBLK {
        // Files are never polled and their blocking flag means nothing to pread/pwrite.
        // SAFETY: F_GETFL on a valid descriptor has no memory effects.
        let flags = syscall(|| unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
        #[cfg(target_os = "linux")]
        let direct = flags & libc::O_DIRECT != 0;
        #[cfg(not(target_os = "linux"))]
        let direct = false;
        return Ok(FdKind {
            is_socket: false,
            is_datagram: false,
            file: Some(FileInfo {
                direct,
                align: dio_alignment(fd)?,
            }),
        });
    }
    set_nonblocking(raw, nonblocking)?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    if fmt == libc::S_IFSOCK {
        socket2::SockRef::from(&fd).set_nosigpipe(true)?;
    }
    let is_socket = fmt == libc::S_IFSOCK;
    let is_datagram = is_socket
        && socket2::SockRef::from(&fd)
            .r#type()
            .is_ok_and(|t| t == socket2::Type::DGRAM);
    Ok(FdKind {
        is_socket,
        is_datagram,
        file: None,
    })
}

fn set_nonblocking(raw: RawFd, on: bool) -> Result<()> {
    // SAFETY: F_GETFL on a valid descriptor has no memory effects.
    let flags = syscall(|| unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    let want = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if want != flags {
        // SAFETY: F_SETFL on a valid descriptor has no memory effects.
        syscall(|| unsafe { libc::fcntl(raw, libc::F_SETFL, want) })?;
    }
    Ok(())
}

/// `Builder::busy_poll` as `SO_BUSY_POLL`'s microseconds (0 for none), capped at `i32::MAX`.
pub(crate) fn busy_poll_us(spin: std::time::Duration) -> u32 {
    spin.as_micros().min(i32::MAX as u128) as u32
}

/// Sets `SO_BUSY_POLL` to `us` microseconds on a socket, where the kernel allows it: a
/// non-socket (ENOTSOCK), a kernel without it (ENOPROTOOPT) or a value above
/// `net.core.busy_read` without CAP_NET_ADMIN (EPERM) leaves the socket as it was. Nothing is
/// done for `us == 0`.
pub(crate) fn set_busy_poll(fd: BorrowedFd<'_>, us: u32) {
    if us == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let val = us as libc::c_int;
        // SAFETY: `val` is a valid c_int for the duration of the call and its size is passed;
        // the descriptor is borrowed for the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_BUSY_POLL,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log_debug!(
                "SO_BUSY_POLL {us} us not set: {}",
                io::Error::last_os_error()
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Outcome of one syscall attempt.
pub(crate) enum Io {
    /// Bytes moved (0 on a read means EOF).
    Done(usize),
    /// EAGAIN: wait for readiness.
    WouldBlock,
    /// Any other error.
    Failed(io::Error),
}

fn classify(rc: io::Result<isize>) -> Io {
    match rc.map_err(Errno::from) {
        Ok(n) => Io::Done(n as usize),
        Err(Errno::WouldBlock) => Io::WouldBlock,
        Err(Errno::Other(e)) => Io::Failed(e),
    }
}

/// One read into `ptr[..len]`, retried on EINTR: `recv(MSG_DONTWAIT)` on sockets (so it never
/// blocks, even on a socket io_uring keeps in blocking mode), `read(2)` on anything else.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes and not read or written by anyone else for the
/// duration of the call.
pub(crate) unsafe fn read(fd: RawFd, ptr: *mut u8, len: usize, is_socket: bool) -> Io {
    classify(syscall(|| {
        if is_socket {
            // SAFETY: the caller guarantees `ptr[..len]` is writable and exclusively ours.
            unsafe { libc::recv(fd, ptr.cast(), len, libc::MSG_DONTWAIT) }
        } else {
            // SAFETY: as above.
            unsafe { libc::read(fd, ptr.cast(), len) }
        }
    }))
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const NOSIGNAL: libc::c_int = libc::MSG_NOSIGNAL;
/// Where `MSG_NOSIGNAL` does not exist (macOS), `prepare` sets `SO_NOSIGPIPE` on sockets instead.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
const NOSIGNAL: libc::c_int = 0;

/// One write of `buf`, retried on EINTR: `send(MSG_NOSIGNAL | MSG_DONTWAIT)` on sockets, so a
/// peer reset gives `EPIPE` instead of killing the process with SIGPIPE and the call never
/// blocks (even on a socket io_uring keeps in blocking mode); `write(2)` on anything else.
pub(crate) fn write(fd: RawFd, buf: &[u8], is_socket: bool) -> Io {
    classify(syscall(|| {
        if is_socket {
            // SAFETY: `buf` is a valid readable slice for the duration of the call.
            unsafe {
                libc::send(
                    fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    NOSIGNAL | libc::MSG_DONTWAIT,
                )
            }
        } else {
            // SAFETY: as above.
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) }
        }
    }))
}

/// One gathering write of `iov`'s slices in order, retried on EINTR: `sendmsg(MSG_NOSIGNAL |
/// MSG_DONTWAIT)` on sockets (no SIGPIPE, never blocks), `writev(2)` on anything else.
///
/// # Safety
/// Every entry of `iov` must describe memory valid for reads for the duration of the call.
pub(crate) unsafe fn write_vectored(fd: RawFd, iov: &[libc::iovec], is_socket: bool) -> Io {
    classify(syscall(|| {
        if is_socket {
            // SAFETY: all-zero is a valid `msghdr` (no name, no control data).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_ptr().cast_mut();
            msg.msg_iovlen = iov.len() as _;
            // SAFETY: `msg` points at `iov`, whose entries the caller guarantees readable; the
            // kernel only reads the iovecs and the memory they describe.
            unsafe { libc::sendmsg(fd, &msg, NOSIGNAL | libc::MSG_DONTWAIT) }
        } else {
            // SAFETY: as above; `iov.len()` is at most `IOV_STEP`, far below `c_int::MAX`.
            unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as libc::c_int) }
        }
    }))
}

/// Outcome of an attempt that yields a value rather than a byte count.
pub(crate) enum Io2<T> {
    Ready(T),
    WouldBlock,
    Failed(io::Error),
}

/// Accepts one connection from listening socket `fd`: close-on-exec and non-blocking, as
/// every descriptor the readiness backend drives. EINTR and ECONNABORTED (the peer gave up
/// while queued) are retried. The peer's address goes to `peer` (storage and its length,
/// which is set to the address's length on success).
pub(crate) fn accept(fd: RawFd, peer: &mut crate::request::AddrBuf) -> Io2<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    loop {
        let rc = syscall(|| {
            let (addr, len) = peer.as_mut_ptr();
            #[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
            // SAFETY: `addr` points at a `sockaddr_storage` (which holds every address family)
            // of `*len` bytes, and `len` at its length; `peer` is exclusively borrowed for the
            // call.
            let rc =
                unsafe { libc::accept4(fd, addr, len, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) };
            #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
            // SAFETY: as above; flags are set right after.
            let rc = unsafe { libc::accept(fd, addr, len) };
            rc
        });
        let new = match rc {
            // SAFETY: `rc` is a new descriptor that nothing else owns.
            Ok(rc) => unsafe { std::os::fd::OwnedFd::from_raw_fd(rc) },
            // The peer gave up while queued: take the next one.
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => continue,
            Err(e) => {
                return match Errno::from(e) {
                    Errno::WouldBlock => Io2::WouldBlock,
                    Errno::Other(e) => Io2::Failed(e),
                }
            }
        };
        #[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
        {
            let sock = socket2::SockRef::from(&new);
            if let Err(e) = sock
                .set_cloexec(true)
                .and_then(|()| sock.set_nonblocking(true))
            {
                return Io2::Failed(e);
            }
        }
        return Io2::Ready(new);
    }
}

/// Starts a non-blocking `connect(2)`: `Ready` if it finished at once, `WouldBlock` while it
/// is in progress (EINPROGRESS).
pub(crate) fn connect_start(fd: RawFd, addr: &crate::request::AddrBuf) -> Io2<()> {
    // One call, no EINTR retry: after EINTR the connection goes on in the background and a
    // second connect(2) would report EALREADY.
    let (addr, len) = addr.as_ptr();
    // SAFETY: `addr` points at a valid socket address of `len` bytes, borrowed for the call.
    let rc = unsafe { libc::connect(fd, addr, len) };
    if rc == 0 {
        return Io2::Ready(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // EINTR: the connection goes on in the background, as for EINPROGRESS.
        Some(libc::EINPROGRESS) | Some(libc::EINTR) | Some(libc::EALREADY) => Io2::WouldBlock,
        _ => Io2::Failed(err),
    }
}

/// Checks an in-progress connect after a readiness edge: the socket error if it failed,
/// `Ready` once a peer address exists, else `WouldBlock` (a fresh socket reports write
/// readiness and HUP before it is connected, so readiness alone proves nothing).
pub(crate) fn connect_finished(fd: RawFd) -> Io2<()> {
    // SAFETY: the loop owns `fd` and keeps it open for the duration of these calls.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    match sock.take_error() {
        Ok(Some(e)) => return Io2::Failed(e),
        Ok(None) => {}
        Err(e) => return Io2::Failed(e),
    }
    match sock.peer_addr() {
        Ok(_) => Io2::Ready(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Io2::WouldBlock,
        Err(e) => Io2::Failed(e),
    }
}

/// Direct-I/O alignment of a file, in bytes, as [`dio_alignment`](crate::dio_alignment)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DioAlignment {
    /// Required alignment of the buffer's start address.
    pub memory: usize,
    /// Required alignment of the file offset and of the length.
    pub offset: usize,
}

/// Fallback when the kernel does not report `STATX_DIOALIGN` (before 6.1, or a filesystem that
/// does not fill it): the logical block size every block device supports.
const FALLBACK_ALIGN: usize = 512;
const STATX_DIOALIGN: u32 = 0x2000;

/// The alignment `file` needs for `O_DIRECT` reads and writes, from
/// `statx(STATX_DIOALIGN)` (512 on this project's machine), or 512 bytes where the kernel does
/// not report it.
///
/// An error if `statx` fails on the descriptor.
pub(crate) fn dio_alignment(file: BorrowedFd<'_>) -> Result<DioAlignment> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: an all-zero statx is a valid value for the kernel to overwrite.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: an empty, NUL-terminated path with AT_EMPTY_PATH queries the descriptor
        // itself; `st` is valid and writable.
        syscall(|| unsafe {
            libc::statx(
                file.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                STATX_DIOALIGN,
                &mut st,
            )
        })?;
        if st.stx_mask & STATX_DIOALIGN != 0 && st.stx_dio_mem_align != 0 {
            return Ok(DioAlignment {
                memory: st.stx_dio_mem_align as usize,
                offset: st.stx_dio_offset_align.max(1) as usize,
            });
        }
    }
    let _ = file;
    Ok(DioAlignment {
        memory: FALLBACK_ALIGN,
        offset: FALLBACK_ALIGN,
    })
}

/// One `recvmsg(MSG_DONTWAIT | MSG_TRUNC)` of a single datagram into `iov`, its source into
/// `name` (storage and its length, which the kernel sets). Returns the datagram's full length
/// (more than `iov` holds when it was truncated: `MSG_TRUNC` in the flags makes the kernel
/// report it), retried on EINTR.
///
/// # Safety
/// `iov` must describe memory valid for writes and not touched by anyone else for the duration
/// of the call; `name` must point at `*name_len` writable bytes, and `control`, when given, at
/// that many writable bytes aligned for a `cmsghdr` (the control data's length comes back in
/// `control_len`).
pub(crate) unsafe fn recv_msg(
    fd: RawFd,
    iov: libc::iovec,
    name: *mut libc::sockaddr,
    name_len: &mut libc::socklen_t,
    control: Option<(*mut libc::c_void, usize)>,
    control_len: &mut usize,
) -> Io {
    let mut iov = iov;
    let rc = syscall(|| {
        // SAFETY: all-zero is a valid `msghdr` (no name, no control data, no iovecs).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = name.cast();
        msg.msg_namelen = *name_len;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some((p, len)) = control {
            msg.msg_control = p;
            msg.msg_controllen = len as _;
        }
        // SAFETY: `msg` points at the caller's writable iovec, name storage and control room
        // (see above).
        let rc = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if rc >= 0 {
            *name_len = msg.msg_namelen;
            *control_len = msg.msg_controllen as usize;
        }
        rc
    });
    classify(rc)
}

/// The length of the next datagram waiting on `fd`, without taking it
/// (`recv(MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT)` into no buffer), retried on EINTR.
pub(crate) fn peek_len(fd: RawFd) -> Io {
    // SAFETY: a zero-length receive writes no memory.
    classify(syscall(|| unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_PEEK | libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    }))
}

/// One `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)` of one datagram made of `iov`'s slices, to
/// `name` (`None`: the connected peer), retried on EINTR.
///
/// # Safety
/// Every entry of `iov` must describe memory valid for reads for the duration of the call;
/// `name`, when given, a socket address of that many bytes; `control`, when given, that many
/// bytes of control messages.
pub(crate) unsafe fn send_msg(
    fd: RawFd,
    iov: &[libc::iovec],
    name: Option<(*const libc::sockaddr, libc::socklen_t)>,
    control: Option<(*mut libc::c_void, usize)>,
) -> Io {
    classify(syscall(|| {
        // SAFETY: all-zero is a valid `msghdr` (no name, no control data).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        if let Some((p, len)) = name {
            msg.msg_name = p.cast_mut().cast();
            msg.msg_namelen = len;
        }
        if let Some((p, len)) = control {
            msg.msg_control = p;
            msg.msg_controllen = len as _;
        }
        msg.msg_iov = iov.as_ptr().cast_mut();
        msg.msg_iovlen = iov.len() as _;
        // SAFETY: `msg` points at readable iovecs and address (the caller's guarantee); the
        // kernel only reads them.
        unsafe { libc::sendmsg(fd, &msg, NOSIGNAL | libc::MSG_DONTWAIT) }
    }))
}

/// One `recvmmsg(MSG_DONTWAIT | MSG_TRUNC)`: up to `msgs.len()` datagrams, each entry's
/// `msg_len` set to its datagram's full length. Returns how many were received (EAGAIN only
/// when none was), retried on EINTR.
///
/// # Safety
/// Every header in `msgs` must point at writable iovecs and name storage, valid and touched by
/// nobody else for the duration of the call.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn recv_mmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> Io {
    classify(syscall(|| {
        // SAFETY: the caller's guarantee; `msgs.len()` is at most the batch size (64).
        unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            ) as isize
        }
    }))
}

/// One `sendmmsg(MSG_NOSIGNAL | MSG_DONTWAIT)`: up to `msgs.len()` datagrams, in order.
/// Returns how many were sent (an error only when none was), retried on EINTR.
///
/// # Safety
/// Every header in `msgs` must point at readable iovecs and addresses valid for the duration
/// of the call.
#[cfg(target_os = "linux")]
pub(crate) unsafe fn send_mmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> Io {
    classify(syscall(|| {
        // SAFETY: the caller's guarantee; `msgs.len()` is at most the batch size (64).
        unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                NOSIGNAL | libc::MSG_DONTWAIT,
            ) as isize
        }
    }))
}
