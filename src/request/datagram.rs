//! `recv_from` and `send_to`: one datagram each, all or nothing (no partial progress, no
//! continuation).
//!
//! - epoll and the fast path: one `recvmsg(MSG_DONTWAIT | MSG_TRUNC)` or
//!   `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)`; several queued on one socket (the engine serving
//!   a connection's queue) go out as one `recvmmsg`/`sendmmsg` of up to [`BATCH`]
//!   ([`attempt_batch`]);
//! - io_uring: RECVMSG (with `MSG_TRUNC`) into the caller's buffer, SENDMSG; several queued
//!   go out as one non-blocking `recvmmsg`/`sendmmsg` made by the ring thread (the same
//!   [`attempt_batch`]), the request that then meets EAGAIN as an SQE that polls first (one
//!   in flight per direction: the kernel gives no order between two RECVMSGs on a socket); a
//!   receive into the swap buffer waits with POLL_ADD and then receives with `recvmsg` on the
//!   ring thread into the swap pool ([`ring_attempt`]), because a provided buffer may have
//!   less room left than a datagram needs (incremental consumption), which would cut it;
//! - progress: every outcome ends the request. A receive's byte count is the datagram's full
//!   length (`MSG_TRUNC` makes the kernel report it): `size` is what fit, and a longer
//!   datagram is reported as truncated (`OpResult::truncated`).

use std::os::fd::RawFd;
use std::sync::Mutex;

use super::{AddrBuf, Kind, Outcome, Request, Step};
use crate::buffer::Buffer;
use crate::conn::lock;
use crate::swap::SwapPool;
use crate::sys::fd::{self, Io};

/// The largest datagram `send_to` takes, in bytes: 65 535 minus the IPv4 and UDP headers
/// (20 + 8). IPv6 would allow 65 527; one limit for both families keeps a datagram that fits
/// one fitting the other.
pub const MAX_DATAGRAM: usize = 65_507;

/// The most datagrams one [`send_to_gso`](crate::Watcher::send_to_gso) sends: the kernel's
/// `UDP_MAX_SEGMENTS` before Linux 6.10 raised it to 128.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Datagrams one `recvmmsg`/`sendmmsg` moves at most (a queue of more takes more calls).
pub(crate) const BATCH: usize = 64;

/// What the kernel reads or writes besides the datagram's bytes: the peer's address (a
/// receive's source, a send's destination) and, on io_uring, the message header and iovec
/// that point at it and at the buffer until the CQE (boxed: stable while the request moves).
pub(crate) struct Msg {
    pub(crate) name: AddrBuf,
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    iov: libc::iovec,
    hdr: libc::msghdr,
    /// A receive's datagram length as the kernel reported it (more than `size` when cut).
    pub(crate) full: usize,
    /// Control data: a send's `UDP_SEGMENT` (GSO), a receive's room for `UDP_GRO`.
    control: Control,
    /// Bytes of `control` in use: a send's message, a receive's room (0: none).
    control_len: usize,
    /// A receive on a GRO socket: the size of each datagram the kernel coalesced into this
    /// one (`UDP_GRO`), if it did.
    pub(crate) segment: Option<usize>,
}

/// Room for one control message with an `int` (cmsg buffers must be aligned for `cmsghdr`).
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; 32]);

/// `UDP_SEGMENT` and `UDP_GRO` (`linux/udp.h`; libc has them only for some targets).
#[cfg(target_os = "linux")]
pub(crate) const UDP_SEGMENT: libc::c_int = 103;
#[cfg(target_os = "linux")]
pub(crate) const UDP_GRO: libc::c_int = 104;

// SAFETY: the raw pointers in a `Msg` point into the request that owns it (its buffer, and the
// box itself), never at thread-local memory; they are written only by the thread that holds
// the request, to build an SQE, and read by the kernel. Moving the box to another thread with
// its request moves nothing they point at.
unsafe impl Send for Msg {}

impl Msg {
    /// Room for a receive's source address and for the kernel's `UDP_GRO` segment size:
    /// always, so that a receive pending when GRO is turned on still learns where a
    /// coalesced datagram splits.
    pub(crate) fn for_recv() -> Box<Msg> {
        let storage = socket2::SockAddrStorage::zeroed();
        let len = storage.size_of();
        let mut m = Msg::with(AddrBuf { storage, len });
        m.control_len = std::mem::size_of::<Control>();
        m
    }

    /// A send's destination, and with `segment`, a `UDP_SEGMENT` control message: the kernel
    /// sends the buffer as datagrams of `segment` bytes (GSO).
    pub(crate) fn to(to: std::net::SocketAddr, segment: Option<u16>) -> Box<Msg> {
        let a = socket2::SockAddr::from(to);
        let mut m = Msg::with(AddrBuf {
            len: a.len(),
            storage: a.as_storage(),
        });
        #[cfg(target_os = "linux")]
        if let Some(seg) = segment {
            m.control_len = m.put_cmsg(libc::SOL_UDP, UDP_SEGMENT, &seg.to_ne_bytes());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = segment;
        m
    }

    /// Writes one control message (`level`, `ty`, `data`) at the start of `control`;
    /// returns its space in bytes.
    #[cfg(target_os = "linux")]
    fn put_cmsg(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) -> usize {
        // SAFETY: CMSG_SPACE and CMSG_LEN only compute sizes.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(data.len() as u32) as usize,
                libc::CMSG_LEN(data.len() as u32) as usize,
            )
        };
        assert!(
            space <= std::mem::size_of::<Control>(),
            "control message too big"
        );
        // SAFETY: all-zero is a valid `msghdr`.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_control = self.control.0.as_mut_ptr().cast();
        h.msg_controllen = space as _;
        // SAFETY: `h` describes `control` (aligned for `cmsghdr`, `space` bytes of it), so
        // the first header and its data lie inside it; the data is `data.len()` bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&h);
            (*c).cmsg_level = level;
            (*c).cmsg_type = ty;
            (*c).cmsg_len = len as _;
            std::ptr::copy_nonoverlapping(data.as_ptr(), libc::CMSG_DATA(c), data.len());
        }
        space
    }

    /// The control buffer for a call: a send's message, or a receive's room (its length reset
    /// for the kernel to fill); `None` when there is none.
    fn control(&mut self) -> Option<(*mut libc::c_void, usize)> {
        (self.control_len > 0).then(|| (self.control.0.as_mut_ptr().cast(), self.control_len))
    }

    /// Reads the `UDP_GRO` segment size out of `len` bytes of control data the kernel wrote.
    fn take_gro(&mut self, len: usize) {
        self.segment = None;
        #[cfg(target_os = "linux")]
        {
            if self.control_len == 0 || len == 0 {
                return;
            }
            // SAFETY: all-zero is a valid `msghdr`.
            let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
            h.msg_control = self.control.0.as_mut_ptr().cast();
            h.msg_controllen = len.min(self.control_len) as _;
            // SAFETY: `h` describes the control data the kernel wrote (at most our buffer);
            // CMSG_FIRSTHDR/NXTHDR stay within it, and the data of a UDP_GRO message is one
            // `int` (read unaligned, to be safe).
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&h);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                        self.segment = usize::try_from(v).ok().filter(|&n| n > 0);
                    }
                    c = libc::CMSG_NXTHDR(&h, c);
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = len;
    }

    /// The next outcome comes from a syscall, which sets `name.len` and the control length
    /// itself: the header's (an earlier SQE's) must not override them in `progress`.
    fn by_syscall(&mut self) {
        self.hdr.msg_name = std::ptr::null_mut();
        self.hdr.msg_control = std::ptr::null_mut();
    }

    fn with(name: AddrBuf) -> Box<Msg> {
        Box::new(Msg {
            name,
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: all-zero is a valid `msghdr` (no name, no control data, no iovecs).
            hdr: unsafe { std::mem::zeroed() },
            full: 0,
            control: Control([0; 32]),
            control_len: 0,
            segment: None,
        })
    }
}

/// Takes the swap space for the next datagram on `fd`, so that a swap receive is never cut
/// by where the pool's free space happens to end: room for the largest datagram (or a whole
/// swap buffer, when the buffers are smaller) when the current buffer has it; otherwise the
/// datagram's length is asked first (`MSG_PEEK | MSG_TRUNC`, one more syscall) and the
/// datagram packs into what is left if it fits there. `Err` with the outcome when there is no
/// datagram (EAGAIN), an error, or no space.
fn swap_space(fd: RawFd, swap: &mut SwapPool) -> Result<(*mut u8, usize), Outcome> {
    let largest = MAX_DATAGRAM.min(swap.buffer_size());
    let need = if swap.room() >= largest {
        largest
    } else {
        match fd::peek_len(fd) {
            Io::Done(n) => n.max(1),
            Io::WouldBlock => return Err(Outcome::WouldBlock),
            Io::Failed(e) => return Err(Outcome::Failed(e)),
        }
    };
    swap.space_for(need).ok_or(Outcome::NoSwap)
}

/// One non-blocking attempt (epoll, and the fast path of both backends).
pub(crate) fn attempt<C>(fd: RawFd, req: &mut Request<C>, swap: &Mutex<SwapPool>) -> Outcome {
    match req.kind {
        Kind::RecvFrom => recv(fd, req, swap),
        _ => send(fd, req),
    }
}

fn recv<C>(fd: RawFd, req: &mut Request<C>, swap: &Mutex<SwapPool>) -> Outcome {
    if req.buffer.is_some() {
        let rest = req.rest_mut();
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let Some(m) = req.msg.as_mut() else {
            return no_msg();
        };
        m.by_syscall();
        let control = m.control();
        let (name, len) = m.name.as_mut_ptr();
        let mut control_len = 0;
        // SAFETY: `iov` is the caller's buffer, which the request owns exclusively while it
        // is pending; `name`/`len` and the control room are the request's own.
        let io = unsafe { fd::recv_msg(fd, iov, name, &mut *len, control, &mut control_len) };
        m.take_gro(control_len);
        return io.into();
    }
    let Some(m) = req.msg.as_mut() else {
        return no_msg();
    };
    m.by_syscall();
    // Held from finding the space until the slice is committed: no other thread may receive
    // into the same region.
    let mut swap = lock(swap);
    let (ptr, len) = match swap_space(fd, &mut swap) {
        Ok(r) => r,
        Err(o) => return o,
    };
    let iov = libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    };
    let control = m.control();
    let (name, name_len) = m.name.as_mut_ptr();
    let mut control_len = 0;
    // SAFETY: `space_for` returned a region of `len` writable bytes that no live slice
    // covers, and the pool's lock keeps every other reader out of it until `commit`; the name
    // storage and the control room are the request's own.
    let io = unsafe { fd::recv_msg(fd, iov, name, &mut *name_len, control, &mut control_len) };
    m.take_gro(control_len);
    match io {
        // An empty datagram: nothing to hand out.
        Io::Done(0) => Outcome::Moved(0, None),
        Io::Done(n) => Outcome::Moved(n, Some(swap.commit(n.min(len)))),
        Io::WouldBlock => Outcome::WouldBlock,
        Io::Failed(e) => Outcome::Failed(e),
    }
}

fn send<C>(fd: RawFd, req: &mut Request<C>) -> Outcome {
    let name = req.msg.as_ref().map(|m| m.name.as_ptr());
    let control = req.msg.as_mut().and_then(|m| m.control());
    if let Some(Buffer::Vectored(pieces)) = &req.buffer {
        let mut iov = [super::gather::EMPTY_IOV; super::gather::IOV_STEP];
        let n = super::gather::fill(pieces, 0, 0, super::MAX_STEP, &mut iov);
        // SAFETY: `fill` filled `iov[..n]` with slices of the request's pieces, which live
        // unchanged for the call; `name` is the request's own destination.
        return unsafe { fd::send_msg(fd, &iov[..n], name, control) }.into();
    }
    let rest = req.rest();
    let iov = [libc::iovec {
        iov_base: rest.as_ptr().cast_mut().cast(),
        iov_len: rest.len(),
    }];
    // SAFETY: `iov` describes the request's buffer, readable for the call; `name` is the
    // request's own destination.
    unsafe { fd::send_msg(fd, &iov, name, control) }.into()
}

fn no_msg() -> Outcome {
    Outcome::Failed(std::io::Error::other(
        "datagram request without its address",
    ))
}

/// True when `req` may go out in one `recvmmsg`/`sendmmsg` with the requests behind it: a
/// receive into the caller's buffer (swap receives take their space one at a time), or a send
/// of one contiguous buffer.
pub(crate) fn batchable<C>(req: &Request<C>) -> bool {
    match req.kind {
        Kind::RecvFrom => req.buffer.is_some(),
        Kind::SendTo => !matches!(req.buffer, Some(Buffer::Vectored(_))),
        _ => false,
    }
}

/// One `recvmmsg` or `sendmmsg` for the requests `keys` of `ops` (consecutive in their
/// queue, front first, all [`batchable`] and of one kind). Pushes one outcome per request it
/// decided, in order: the datagrams moved, then for a receive that got fewer than it asked
/// for, `WouldBlock` for the next (the kernel met EAGAIN, or an error it reports on the next
/// call, which wakes the socket); a send that went out in part decides only the sent ones
/// (the next call reports the error, if there is one). A failure of the whole call decides
/// the first request only.
#[cfg(target_os = "linux")]
pub(crate) fn attempt_batch<C>(
    fd: RawFd,
    ops: &mut slab::Slab<Request<C>>,
    keys: &[usize],
    out: &mut Vec<Outcome>,
) {
    let n = keys.len().min(BATCH);
    let recv = ops[keys[0]].kind == Kind::RecvFrom;
    let mut iovs = [super::gather::EMPTY_IOV; BATCH];
    // SAFETY: all-zero is a valid `mmsghdr` (an empty message header, length 0).
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (j, &key) in keys[..n].iter().enumerate() {
        let req = &mut ops[key];
        let (base, len) = if recv {
            let rest = req.rest_mut();
            (rest.as_mut_ptr(), rest.len())
        } else {
            let rest = req.rest();
            (rest.as_ptr().cast_mut(), rest.len())
        };
        iovs[j] = libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        let Some(m) = req.msg.as_mut() else {
            // Never: every datagram request has its address box.
            out.push(no_msg());
            return;
        };
        let hdr = &mut msgs[j].msg_hdr;
        if recv {
            let (name, _) = m.name.as_mut_ptr();
            hdr.msg_name = name.cast();
            hdr.msg_namelen = m.name.len;
        } else {
            let (name, name_len) = m.name.as_ptr();
            hdr.msg_name = name.cast_mut().cast();
            hdr.msg_namelen = name_len;
        }
        if let Some((p, len)) = m.control() {
            hdr.msg_control = p;
            hdr.msg_controllen = len as _;
        }
        hdr.msg_iov = &mut iovs[j];
        hdr.msg_iovlen = 1;
    }
    // SAFETY: every header points at its own iovec in `iovs` (alive for the call) and at its
    // request's buffer and address box, which stay where they are: nothing touches `ops`
    // until the call returns, and a request owns its buffer exclusively while it is pending.
    let io = unsafe {
        if recv {
            fd::recv_mmsg(fd, &mut msgs[..n])
        } else {
            fd::send_mmsg(fd, &mut msgs[..n])
        }
    };
    match io {
        Io::Done(got) => {
            for (j, &key) in keys[..got.min(n)].iter().enumerate() {
                if recv {
                    if let Some(m) = ops[key].msg.as_mut() {
                        m.name.len = msgs[j].msg_hdr.msg_namelen;
                        m.by_syscall();
                        m.take_gro(msgs[j].msg_hdr.msg_controllen as _);
                    }
                }
                out.push(Outcome::Moved(msgs[j].msg_len as usize, None));
            }
            if got == 0 || (recv && got < n) {
                out.push(Outcome::WouldBlock);
            }
        }
        Io::WouldBlock => out.push(Outcome::WouldBlock),
        Io::Failed(e) => out.push(Outcome::Failed(e)),
    }
}

/// On io_uring, a swap receive is a syscall on the ring thread once the socket is readable
/// (after EAGAIN it polls first, [`sqe`]): its outcome now, or `None` for any other request.
#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn ring_attempt<C>(
    fd: RawFd,
    req: &mut Request<C>,
    swap: &Mutex<SwapPool>,
) -> Option<Outcome> {
    if req.kind != Kind::RecvFrom || req.buffer.is_some() || req.poll_first {
        return None;
    }
    Some(recv(fd, req, swap))
}

#[cfg(all(target_os = "linux", feature = "io-uring"))]
pub(crate) fn sqe<C>(fd: io_uring::types::Fd, req: &mut Request<C>) -> io_uring::squeue::Entry {
    use io_uring::opcode;
    let ioprio = if req.poll_first {
        super::RECVSEND_POLL_FIRST
    } else {
        0
    };
    if req.kind == Kind::RecvFrom && req.buffer.is_none() {
        // A swap receive waits for readability, then receives on the ring thread.
        req.polling = true;
        return opcode::PollAdd::new(fd, libc::POLLIN as u32).build();
    }
    req.polling = false;
    if let (Kind::SendTo, Some(Buffer::Vectored(pieces))) = (req.kind, &req.buffer) {
        // A datagram goes out whole: the cursor stays at the start.
        let g = req
            .gather
            .get_or_insert_with(|| super::gather::Gather::new(pieces));
        let n = g.next(pieces).len();
        g.msg.msg_iov = g.iov.as_mut_ptr();
        g.msg.msg_iovlen = n as _;
        if let Some(m) = req.msg.as_mut() {
            let (name, len) = m.name.as_ptr();
            g.msg.msg_name = name.cast_mut().cast();
            g.msg.msg_namelen = len;
            if let Some((p, len)) = m.control() {
                g.msg.msg_control = p;
                g.msg.msg_controllen = len as _;
            }
        }
        return opcode::SendMsg::new(fd, &g.msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .ioprio(ioprio)
            .build();
    }
    let (base, len) = if req.kind == Kind::RecvFrom {
        let rest = req.rest_mut();
        (rest.as_mut_ptr(), rest.len())
    } else {
        let rest = req.rest();
        (rest.as_ptr().cast_mut(), rest.len())
    };
    let recv = req.kind == Kind::RecvFrom;
    let m = req.msg.get_or_insert_with(Msg::for_recv);
    m.iov = libc::iovec {
        iov_base: base.cast(),
        iov_len: len,
    };
    if recv {
        let (name, _) = m.name.as_mut_ptr();
        m.hdr.msg_name = name.cast();
        m.hdr.msg_namelen = m.name.len;
    } else {
        let (name, name_len) = m.name.as_ptr();
        m.hdr.msg_name = name.cast_mut().cast();
        m.hdr.msg_namelen = name_len;
    }
    m.hdr.msg_iov = &mut m.iov;
    m.hdr.msg_iovlen = 1;
    match m.control() {
        Some((p, len)) => {
            m.hdr.msg_control = p;
            m.hdr.msg_controllen = len as _;
        }
        None => {
            m.hdr.msg_control = std::ptr::null_mut();
            m.hdr.msg_controllen = 0;
        }
    }
    // A request is started again only after its previous CQE came back, so rewriting the
    // header here never changes what the kernel is reading.
    if recv {
        opcode::RecvMsg::new(fd, &mut m.hdr)
            .flags(libc::MSG_TRUNC as u32)
            .ioprio(ioprio)
            .build()
    } else {
        opcode::SendMsg::new(fd, &m.hdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .ioprio(ioprio)
            .build()
    }
}

/// Every outcome that moved a datagram ends the request: a receive keeps what fit (`size`)
/// and the datagram's full length (`n`, for `truncated`), a send the bytes sent.
pub(crate) fn progress<C>(req: &mut Request<C>, outcome: Outcome) -> Step {
    let Outcome::Moved(n, swap) = outcome else {
        return Step::Done(None, None);
    };
    if req.kind == Kind::RecvFrom {
        let room = match (&req.buffer, &swap) {
            (Some(_), _) => req.len(),
            (None, Some(s)) => s.len(),
            (None, None) => 0,
        };
        req.size = n.min(room);
        if let Some(m) = req.msg.as_mut() {
            m.full = n;
            // io_uring's RECVMSG wrote the source's and the control data's lengths into the
            // header.
            if !m.hdr.msg_name.is_null() {
                m.name.len = m.hdr.msg_namelen;
            }
            if !m.hdr.msg_control.is_null() {
                // `size_t` on glibc, `socklen_t` on musl.
                let len = m.hdr.msg_controllen as _;
                m.take_gro(len);
            }
        }
        return Step::Done(swap, None);
    }
    req.size = n;
    Step::Done(None, None)
}
