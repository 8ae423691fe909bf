//! The ring thread's loop: the same semantics as the epoll loop, expressed as SQEs and CQEs.
//!
//! Per connection and direction at most one request is in the kernel (the front of that
//! direction's FIFO queue); the rest wait in userspace, which keeps gaio's ordering (io_uring
//! gives no order between two RECVs on one socket). A write is resubmitted until every byte is
//! written, a `read_full` until its buffer is full. Deadlines and frees cancel in-flight
//! requests with ASYNC_CANCEL and deliver only when the CQE comes back: a buffer is never
//! returned, and a descriptor never closed, while the kernel may still use it.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_channel::Receiver;
use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use super::buf_ring::{BufRing, BGID};
use super::RingWake;
use crate::conn::{Conn, ConnId, ConnOwner, ConnShared, IdAllocator};
use crate::deadline::{DeadlineHeap, Entry};
use crate::op::{Ending, Op, OpId, OpKind, OpResult};
use crate::results::ResultQueue;
use crate::swap::SwapSlice;
use crate::sys::{Core, FileState, GcCounters, LoopMsg};
use crate::{Error, Result};

/// `user_data` of the always-pending eventfd read.
const WAKE_UD: u64 = u64::MAX;
/// `user_data` of ASYNC_CANCEL requests (their own CQEs carry nothing we need).
const CANCEL_UD: u64 = u64::MAX - 1;
/// `IORING_RECVSEND_POLL_FIRST`: arm poll before trying, after an unexpected EAGAIN.
const RECVSEND_POLL_FIRST: u16 = 1;
/// Messages handled per iteration before the loop submits and reaps.
const DRAIN: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Read = 0,
    Write = 1,
}

fn dir_of(kind: OpKind) -> Dir {
    if kind.is_read_side() {
        Dir::Read
    } else {
        Dir::Write
    }
}

struct UConn {
    id: ConnId,
    /// The handles' shared part, for closing the submit-side fast path (`crate::lane`).
    handle: Weak<ConnShared>,
    fd: OwnedFd,
    is_socket: bool,
    queues: [VecDeque<usize>; 2],
    in_flight: [bool; 2],
    /// Freed or dropped: waiting for in-flight CQEs before the descriptor is closed.
    closing: bool,
    starved: bool,
    /// `Watcher::detach` waits here for the descriptor once the last CQE is in.
    detach: Option<crossbeam_channel::Sender<Option<OwnedFd>>>,
    /// File requests' state, once there are any.
    file: Option<Box<FileState>>,
}

impl UConn {
    fn fs(&mut self) -> &mut FileState {
        self.file.get_or_insert_with(Default::default)
    }
}

struct Pending<C> {
    op: Op<C>,
    in_flight: bool,
    /// The last attempt hit EAGAIN: the next one arms poll first.
    poll_first: bool,
    /// Buffer ring generation when this swap read was armed: an ENOBUFS from before a later
    /// publish is stale and is retried at once.
    buf_gen: u64,
}

/// What a CQE means for its request.
enum Next {
    Done(Option<SwapSlice>, Option<Error>),
    /// An accept produced this descriptor.
    Accepted(OwnedFd),
    Resubmit,
    Starve,
}

pub(crate) struct RingLoop<C> {
    // Field order is drop order: the ring goes first, then the memory it pointed at.
    ring: IoUring,
    bufs: BufRing,
    wake_buf: Box<u64>,
    wake: Arc<RingWake>,
    wake_armed: bool,
    rx: Receiver<LoopMsg<C>>,
    results: Arc<ResultQueue<C>>,
    ids: Arc<IdAllocator>,
    gc: Arc<GcCounters>,
    conns: Vec<Option<UConn>>,
    ops: Slab<Pending<C>>,
    /// Requests of ours in the kernel (the wake read and cancels not counted).
    in_flight: usize,
    deadlines: DeadlineHeap,
    starved: Vec<ConnId>,
    out: Vec<OpResult<C>>,
    cqes: Vec<(u64, i32, u32)>,
    closing: bool,
    watcher_id: u64,
    owner: Arc<dyn ConnOwner>,
}

impl<C> RingLoop<C> {
    pub(crate) fn new(ring: IoUring, core: Core<C>, wake: Arc<RingWake>) -> Result<Self> {
        let bufs = BufRing::new(&ring, core.swap_count, core.swap_size, core.swap)
            .map_err(|e| super::explain("provided buffer ring", &e))?;
        Ok(RingLoop {
            ring,
            bufs,
            wake_buf: Box::new(0),
            wake,
            wake_armed: false,
            rx: core.rx,
            results: core.results,
            ids: core.ids,
            gc: core.gc,
            conns: Vec::new(),
            ops: Slab::with_capacity(1024),
            in_flight: 0,
            deadlines: DeadlineHeap::default(),
            starved: Vec::new(),
            out: Vec::with_capacity(1024),
            cqes: Vec::with_capacity(1024),
            closing: false,
            watcher_id: core.watcher_id,
            owner: core.owner,
        })
    }

    pub(crate) fn run(mut self) {
        self.arm_wake();
        loop {
            let mut handled = 0;
            while handled < DRAIN && !self.closing {
                match self.rx.try_recv() {
                    Ok(m) => {
                        handled += 1;
                        self.handle(m);
                    }
                    Err(_) => break,
                }
            }
            if self.bufs.has_held() && self.bufs.recycle() {
                self.retry_starved();
            }
            self.expire();
            self.reap();
            self.results.push_all(&mut self.out);
            if self.closing && self.in_flight == 0 {
                break;
            }
            let more_msgs = !self.closing && !self.rx.is_empty();
            if more_msgs || !self.ring.completion().is_empty() {
                self.submit(false);
            } else {
                self.wake.announce_sleep();
                if !self.closing && !self.rx.is_empty() {
                    self.wake.awake();
                    self.submit(false);
                } else {
                    self.submit(true);
                    self.wake.awake();
                }
            }
        }
        self.teardown();
    }

    fn handle(&mut self, msg: LoopMsg<C>) {
        match msg {
            LoopMsg::Watch {
                id,
                fd,
                is_socket,
                handle,
            } => self.watch(id, fd, is_socket, handle),
            LoopMsg::Submit(op) => self.submit_op(op),
            LoopMsg::Free(id) => {
                if let Some(i) = self.index_of(id) {
                    self.begin_release(i);
                }
            }
            LoopMsg::Cancel { id, reply } => {
                let _ = reply.send(self.cancel(id));
            }
            LoopMsg::Detach { id, reply } => match self.index_of(id) {
                Some(i) if self.conns[i].as_ref().is_some_and(|c| !c.closing) => {
                    if let Some(c) = self.conns[i].as_mut() {
                        c.detach = Some(reply);
                    }
                    self.begin_release(i);
                }
                _ => {
                    let _ = reply.send(None);
                }
            },
            LoopMsg::Dropped(id) => {
                if let Some(i) = self.index_of(id) {
                    self.begin_release(i);
                    self.gc.closed.fetch_add(1, Ordering::Relaxed);
                }
            }
            // Buffers are recycled every iteration; the message only woke us.
            LoopMsg::SwapReleased | LoopMsg::Tick | LoopMsg::FileDone { .. } => {}
            LoopMsg::Close => {
                self.closing = true;
                for i in 0..self.conns.len() {
                    self.begin_release(i);
                }
                // Anything that raced in behind Close (a submission cannot: the gate is shut).
                while let Ok(m) = self.rx.try_recv() {
                    if let LoopMsg::Submit(op) = m {
                        self.out.push(op.finish(None, Some(Error::ClosedPipe)));
                    }
                }
            }
        }
    }

    fn watch(&mut self, id: ConnId, fd: OwnedFd, is_socket: bool, handle: Weak<ConnShared>) {
        let i = id.index as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(UConn {
            id,
            handle,
            fd,
            is_socket,
            queues: [VecDeque::new(), VecDeque::new()],
            in_flight: [false; 2],
            closing: false,
            starved: false,
            detach: None,
            file: None,
        });
    }

    /// Ends request `id` with `Canceled` if it is still pending; false if it is not.
    fn cancel(&mut self, id: OpId) -> bool {
        let Some(i) = self.index_of(id.conn) else {
            return false;
        };
        let Some(c) = self.conns[i].as_ref() else {
            return false;
        };
        let ops = &self.ops;
        let key = c
            .queues
            .iter()
            .flatten()
            .chain(c.file.iter().flat_map(|f| f.files.iter()))
            .copied()
            .find(|&k| ops.get(k).is_some_and(|p| p.op.id == id));
        match key {
            Some(k) => {
                self.end_request(k, Ending::Canceled);
                true
            }
            None => false,
        }
    }

    fn index_of(&self, id: ConnId) -> Option<usize> {
        let i = id.index as usize;
        match self.conns.get(i) {
            Some(Some(c)) if c.id == id => Some(i),
            _ => None,
        }
    }

    fn submit_op(&mut self, op: Op<C>) {
        let i = match self.index_of(op.conn.id()) {
            Some(i) if self.conns[i].as_ref().is_some_and(|c| !c.closing) => i,
            _ => {
                self.out.push(op.finish(None, Some(Error::ConnClosed)));
                return;
            }
        };
        let dir = dir_of(op.kind);
        let is_file = op.kind.is_file();
        if let Some(at) = op.deadline {
            let key = self.ops.vacant_key();
            self.deadlines.push(Entry {
                at,
                id: op.id.seq,
                key,
            });
        }
        // A read or write whose inline attempt just hit EAGAIN arms poll before trying again.
        let poll_first = op.started;
        let key = self.ops.insert(Pending {
            op,
            in_flight: false,
            poll_first,
            buf_gen: 0,
        });
        if is_file {
            self.file_submit(i, key);
            return;
        }
        if let Some(c) = self.conns[i].as_mut() {
            c.queues[dir as usize].push_back(key);
        }
        self.arm(i, dir);
    }

    /// A new file request: reads and writes go to the kernel at once, side by side; an fsync
    /// waits for the writes submitted before it.
    fn file_submit(&mut self, i: usize, key: usize) {
        let (kind, seq) = (self.ops[key].op.kind, self.ops[key].op.id.seq);
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        c.fs().files.push(key);
        match kind {
            OpKind::WriteAt => {
                c.fs().writes.insert(seq);
            }
            OpKind::Fsync | OpKind::Fdatasync if c.fs().fsync_must_wait(seq) => {
                c.fs().fsyncs.push_back(key);
                return;
            }
            _ => {}
        }
        self.arm_file(i, key);
    }

    fn arm_file(&mut self, i: usize, key: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let fd = types::Fd(c.fd.as_raw_fd());
        let p = &mut self.ops[key];
        let ud = user_data(key, p.op.id.seq);
        let off = p.op.offset + p.op.size as u64;
        let sqe = match (p.op.kind, p.op.buffer.as_mut()) {
            (OpKind::ReadAt, Some(b)) => {
                let rest = &mut b[p.op.size..];
                let len = rest.len().min(u32::MAX as usize) as u32;
                opcode::Read::new(fd, rest.as_mut_ptr(), len)
                    .offset(off)
                    .build()
            }
            (OpKind::WriteAt, Some(b)) => {
                let rest = &b[p.op.size..];
                let len = rest.len().min(u32::MAX as usize) as u32;
                opcode::Write::new(fd, rest.as_ptr(), len)
                    .offset(off)
                    .build()
            }
            (OpKind::Fdatasync, _) => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            _ => opcode::Fsync::new(fd).build(),
        };
        p.in_flight = true;
        c.fs().busy += 1;
        self.in_flight += 1;
        self.push(sqe.user_data(ud));
    }

    /// The CQE of file request `key` on file `i`.
    fn file_complete(&mut self, i: usize, key: usize, res: i32) {
        if let Some(c) = self.conns[i].as_mut() {
            c.fs().busy -= 1;
        }
        let p = &mut self.ops[key];
        let len = p.op.buffer.as_ref().map_or(0, |b| b.len());
        enum F {
            Finish(Option<Error>),
            Again,
        }
        let next = if res < 0 {
            match -res {
                libc::EAGAIN | libc::EINTR | libc::ECANCELED if p.op.cancel.is_some() => {
                    F::Finish(p.op.cancel.take().map(Ending::error))
                }
                libc::EAGAIN | libc::EINTR => F::Again,
                libc::ECANCELED => F::Finish(Some(Error::ClosedPipe)),
                e => F::Finish(Some(Error::Io(std::io::Error::from_raw_os_error(e)))),
            }
        } else {
            match p.op.kind {
                OpKind::Fsync | OpKind::Fdatasync => {
                    F::Finish(p.op.cancel.take().map(Ending::error))
                }
                OpKind::ReadAt if res == 0 => F::Finish(
                    p.op.cancel
                        .take()
                        .map(Ending::error)
                        .or_else(|| (p.op.size == 0).then_some(Error::Eof)),
                ),
                _ => {
                    p.op.size += res as usize;
                    if p.op.size >= len || p.op.direct_read_ended() {
                        F::Finish(None)
                    } else if let Some(e) = p.op.cancel.take().map(Ending::error) {
                        F::Finish(Some(e))
                    } else {
                        F::Again
                    }
                }
            }
        };
        match next {
            F::Again if !self.conns[i].as_ref().is_some_and(|c| c.closing) => self.arm_file(i, key),
            F::Again => self.file_finish(i, key, Some(Error::ClosedPipe)),
            F::Finish(e) => self.file_finish(i, key, e),
        }
    }

    /// Delivers file request `key`; a finished write may let waiting fsyncs go.
    fn file_finish(&mut self, i: usize, key: usize, err: Option<Error>) {
        let p = self.ops.remove(key);
        let (seq, was_write) = (p.op.id.seq, p.op.kind == OpKind::WriteAt);
        self.out.push(p.op.finish(None, err));
        let mut ready = Vec::new();
        if let Some(c) = self.conns[i].as_mut() {
            c.fs().files.retain(|&k| k != key);
            c.fs().fsyncs.retain(|&k| k != key);
            if was_write {
                let ops = &self.ops;
                ready = c.fs().write_done(seq, |f| ops[f].op.id.seq);
            }
        }
        let closing = self.conns[i].as_ref().is_some_and(|c| c.closing);
        for f in ready {
            if closing {
                self.file_finish(i, f, Some(Error::ClosedPipe));
            } else {
                self.arm_file(i, f);
            }
        }
        self.maybe_finish_release(i);
    }

    /// Puts the front request of connection `i`'s `dir` queue into the kernel, unless one is
    /// there already or the connection waits for swap space.
    fn arm(&mut self, i: usize, dir: Dir) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        if c.in_flight[dir as usize] || c.closing {
            return;
        }
        let Some(&key) = c.queues[dir as usize].front() else {
            return;
        };
        // A swap read that found the buffer ring empty waits for a buffer to come back; a
        // caller-buffer read behind it (after the swap read timed out, say) need not.
        if c.starved && self.ops[key].op.buffer.is_none() {
            return;
        }
        let fd = types::Fd(c.fd.as_raw_fd());
        let is_socket = c.is_socket;
        let p = &mut self.ops[key];
        let ud = user_data(key, p.op.id.seq);
        let ioprio = if p.poll_first && is_socket {
            RECVSEND_POLL_FIRST
        } else {
            0
        };
        let sqe = match (&mut p.op.buffer, p.op.kind) {
            (_, OpKind::Accept) => {
                opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            }
            (_, OpKind::Connect) => match &p.op.addr {
                Some(a) => opcode::Connect::new(fd, a.as_ptr().cast(), a.len()).build(),
                None => return,
            },
            (Some(buf), OpKind::Write) => {
                let rest = &buf[p.op.size..];
                let len = rest.len().min(u32::MAX as usize) as u32;
                if is_socket {
                    opcode::Send::new(fd, rest.as_ptr(), len)
                        .flags(libc::MSG_NOSIGNAL)
                        .ioprio(ioprio)
                        .build()
                } else {
                    opcode::Write::new(fd, rest.as_ptr(), len)
                        .offset(u64::MAX)
                        .build()
                }
            }
            (Some(buf), _) => {
                let rest = &mut buf[p.op.size..];
                let len = rest.len().min(u32::MAX as usize) as u32;
                if is_socket {
                    opcode::Recv::new(fd, rest.as_mut_ptr(), len)
                        .ioprio(ioprio)
                        .build()
                } else {
                    opcode::Read::new(fd, rest.as_mut_ptr(), len)
                        .offset(u64::MAX)
                        .build()
                }
            }
            (None, _) => {
                let len = self.bufs.buf_size() as u32;
                let e = if is_socket {
                    opcode::Recv::new(fd, std::ptr::null_mut(), len)
                        .buf_group(BGID)
                        .ioprio(ioprio)
                        .build()
                } else {
                    opcode::Read::new(fd, std::ptr::null_mut(), len)
                        .offset(u64::MAX)
                        .buf_group(BGID)
                        .build()
                };
                e.flags(squeue::Flags::BUFFER_SELECT)
            }
        };
        p.in_flight = true;
        p.buf_gen = self.bufs.generation();
        c.in_flight[dir as usize] = true;
        self.in_flight += 1;
        self.push(sqe.user_data(ud));
    }

    /// Pushes one SQE, submitting (and reaping, if the kernel pushes back) until there is room.
    fn push(&mut self, sqe: squeue::Entry) {
        loop {
            // SAFETY: every pointer in the SQEs we build (caller buffers, the wake buffer, the
            // provided buffer ring) stays valid until the matching CQE is reaped: requests
            // keep their buffers in `ops` until then, and the loop never drops them earlier.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return;
            }
            self.submit(false);
        }
    }

    /// Submits what is queued and, if `block`, waits for a completion or the next deadline.
    /// EBUSY (completion queue full) is answered by reaping, never by dropping anything.
    fn submit(&mut self, block: bool) {
        loop {
            let r = if block {
                let ts = self.deadlines.next().map(|at| {
                    let d = at.saturating_duration_since(Instant::now());
                    Timespec::from(d)
                });
                match &ts {
                    Some(ts) => {
                        let args = SubmitArgs::new().timespec(ts);
                        self.ring.submitter().submit_with_args(1, &args)
                    }
                    None => self.ring.submitter().submit_and_wait(1),
                }
            } else {
                self.ring.submitter().submit()
            };
            match r {
                Ok(_) => return,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ETIME) | Some(libc::EINTR) => return,
                    Some(libc::EBUSY) | Some(libc::EAGAIN) => {
                        self.reap();
                        if block {
                            return;
                        }
                    }
                    // Nothing sensible to do but keep going; the next iteration retries.
                    _ => return,
                },
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed {
            return;
        }
        let ptr = (&mut *self.wake_buf as *mut u64).cast::<u8>();
        let sqe = opcode::Read::new(types::Fd(self.wake.raw), ptr, 8)
            .offset(u64::MAX)
            .build()
            .user_data(WAKE_UD);
        self.wake_armed = true;
        self.push(sqe);
    }

    /// Takes every CQE off the completion queue and acts on it.
    fn reap(&mut self) {
        loop {
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            if cqes.is_empty() {
                self.cqes = cqes;
                return;
            }
            for &(ud, res, flags) in &cqes {
                self.complete(ud, res, flags);
            }
            cqes.clear();
            self.cqes = cqes;
        }
    }

    fn complete(&mut self, ud: u64, res: i32, flags: u32) {
        if ud == WAKE_UD {
            self.wake_armed = false;
            if !self.closing {
                self.arm_wake();
            }
            return;
        }
        if ud == CANCEL_UD {
            return;
        }
        let key = (ud & 0xffff_ffff) as usize;
        let Some(p) = self.ops.get_mut(key) else {
            return;
        };
        if user_data(key, p.op.id.seq) != ud || !p.in_flight {
            return;
        }
        p.in_flight = false;
        self.in_flight -= 1;
        let dir = dir_of(p.op.kind);
        let cid = p.op.conn.id();
        if p.op.kind.is_file() {
            if let Some(i) = self.index_of(cid) {
                self.file_complete(i, key, res);
            }
            return;
        }
        let swap = cqueue::buffer_select(flags)
            .and_then(|bid| self.bufs.take(bid, res.max(0) as usize, flags));
        let next = outcome(p, res, swap);
        let i = self.index_of(cid);
        if let Some(c) = i.and_then(|i| self.conns[i].as_mut()) {
            c.in_flight[dir as usize] = false;
        }
        match next {
            Next::Resubmit => {
                if let Some(i) = i {
                    self.arm(i, dir);
                }
            }
            // Buffers went back into the ring after this read was armed: the kernel has them
            // now, so try again instead of waiting for a release that already happened.
            Next::Starve if self.ops[key].buf_gen != self.bufs.generation() => {
                if let Some(i) = i {
                    self.arm(i, dir);
                }
            }
            Next::Starve => {
                if let Some(c) = i.and_then(|i| self.conns[i].as_mut()) {
                    if !c.starved {
                        c.starved = true;
                        self.starved.push(c.id);
                    }
                    self.bufs.shared().set_starving();
                }
                // A buffer may have come back between the ENOBUFS and now.
                if self.bufs.recycle() {
                    self.retry_starved();
                }
            }
            Next::Accepted(new_fd) => {
                let id = self.ids.alloc();
                let conn = Conn::new(id, self.watcher_id, new_fd.as_raw_fd(), self.owner.clone());
                self.watch(id, new_fd, true, conn.downgrade());
                if let Some(p) = self.ops.get_mut(key) {
                    p.op.accepted = Some(conn);
                }
                self.finish_request(key, i, dir, None, None);
            }
            Next::Done(swap, err) => self.finish_request(key, i, dir, swap, err),
        }
    }

    /// Delivers request `key` (its CQE said it is done) and moves its queue on.
    fn finish_request(
        &mut self,
        key: usize,
        i: Option<usize>,
        dir: Dir,
        swap: Option<SwapSlice>,
        err: Option<Error>,
    ) {
        let p = self.ops.remove(key);
        if let Some(c) = i.and_then(|i| self.conns[i].as_mut()) {
            let q = &mut c.queues[dir as usize];
            if let Some(pos) = q.iter().position(|&k| k == key) {
                q.remove(pos);
            }
        }
        self.out.push(p.op.finish(swap, err));
        if let Some(i) = i {
            if self.conns[i].as_ref().is_some_and(|c| c.closing) {
                self.end_queue(i, dir);
            } else {
                self.arm(i, dir);
            }
            self.maybe_finish_release(i);
        }
    }

    fn retry_starved(&mut self) {
        self.bufs.shared().clear_starving();
        for id in std::mem::take(&mut self.starved) {
            if let Some(i) = self.index_of(id) {
                if let Some(c) = self.conns[i].as_mut() {
                    c.starved = false;
                }
                self.arm(i, Dir::Read);
            }
        }
    }

    /// Deadlines: a queued request ends at once; one in the kernel is cancelled and ends when
    /// its CQE comes back, keeping what it moved.
    fn expire(&mut self) {
        if self.deadlines.next().is_none() {
            return;
        }
        let now = Instant::now();
        loop {
            let ops = &self.ops;
            let live = |e: &Entry| ops.get(e.key).is_some_and(|p| p.op.id.seq == e.id);
            let Some(e) = self.deadlines.pop_expired(now, live) else {
                break;
            };
            self.end_request(e.key, Ending::Deadline);
        }
        let ops = &self.ops;
        self.deadlines.compact(ops.len(), |e| {
            ops.get(e.key).is_some_and(|p| p.op.id.seq == e.id)
        });
    }

    /// Ends request `key` with `err`: at once if it is not in the kernel, else by cancelling.
    fn end_request(&mut self, key: usize, err: Ending) {
        let Some(p) = self.ops.get_mut(key) else {
            return;
        };
        if p.in_flight {
            if p.op.cancel.is_none() {
                p.op.cancel = Some(err);
                let ud = user_data(key, p.op.id.seq);
                self.push(opcode::AsyncCancel::new(ud).build().user_data(CANCEL_UD));
            }
            return;
        }
        if self.ops[key].op.kind.is_file() {
            // Not in the kernel: an fsync waiting for earlier writes.
            if let Some(i) = self.index_of(self.ops[key].op.conn.id()) {
                self.file_finish(i, key, Some(err.error()));
            }
            return;
        }
        let p = self.ops.remove(key);
        let dir = dir_of(p.op.kind);
        let i = self.index_of(p.op.conn.id());
        if let Some(c) = i.and_then(|i| self.conns[i].as_mut()) {
            let q = &mut c.queues[dir as usize];
            if let Some(pos) = q.iter().position(|&k| k == key) {
                q.remove(pos);
            }
        }
        self.out.push(p.op.finish(None, Some(err.error())));
        if let Some(i) = i {
            self.arm(i, dir);
        }
    }

    /// Starts releasing connection `i`: every request ends with `ClosedPipe`, in queue order
    /// per direction as on epoll. A request in the kernel is cancelled first and the ones behind
    /// it end when its CQE comes back; the descriptor closes after the last CQE.
    fn begin_release(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        if c.closing {
            return;
        }
        c.closing = true;
        // No submitter may start a syscall on the descriptor from here on (`crate::lane`).
        crate::lane::close(&c.handle);
        let files: Vec<usize> = c
            .file
            .iter()
            .flat_map(|f| f.files.iter())
            .copied()
            .collect();
        for dir in [Dir::Read, Dir::Write] {
            self.end_queue(i, dir);
        }
        for key in files {
            if self.ops.contains(key) {
                self.end_request(key, Ending::ClosedPipe);
            }
        }
        self.maybe_finish_release(i);
    }

    /// Ends connection `i`'s `dir` queue front to back with `ClosedPipe`, stopping at a request
    /// still in the kernel (which is cancelled; its CQE resumes this).
    fn end_queue(&mut self, i: usize, dir: Dir) {
        while let Some(&key) = self.conns[i]
            .as_ref()
            .and_then(|c| c.queues[dir as usize].front())
        {
            let Some(p) = self.ops.get(key) else {
                // Cannot happen (a queued key always has its op); never spin on it.
                if let Some(c) = self.conns[i].as_mut() {
                    c.queues[dir as usize].pop_front();
                }
                continue;
            };
            let in_kernel = p.in_flight;
            self.end_request(key, Ending::ClosedPipe);
            if in_kernel {
                return;
            }
        }
    }

    fn maybe_finish_release(&mut self, i: usize) {
        // Only once nothing of this connection is in the kernel: closing the descriptor
        // earlier could let a queued SQE reach a reused descriptor number.
        let done = matches!(&self.conns[i], Some(c) if c.closing
            && !c.in_flight[0]
            && !c.in_flight[1]
            && c.file.as_ref().map_or(0, |f| f.busy) == 0);
        if !done {
            return;
        }
        if let Some(c) = self.conns[i].take() {
            // Requests still queued (none should be) end here too.
            for key in c
                .queues
                .iter()
                .flatten()
                .chain(c.file.iter().flat_map(|f| f.files.iter()))
            {
                if let Some(p) = self.ops.try_remove(*key) {
                    self.out.push(p.op.finish(None, Some(Error::ClosedPipe)));
                }
            }
            self.ids.release(c.id);
            match c.detach {
                Some(reply) => {
                    let _ = reply.send(Some(c.fd));
                }
                None => drop(c.fd),
            }
        }
    }

    /// After the last request: take the wake read back, unregister the buffer ring.
    fn teardown(&mut self) {
        if self.wake_armed {
            self.push(
                opcode::AsyncCancel::new(WAKE_UD)
                    .build()
                    .user_data(CANCEL_UD),
            );
            // The eventfd read ends with ECANCELED (or data); bounded by the kernel.
            while self.wake_armed {
                self.submit(true);
                self.reap();
            }
        }
        self.bufs.unregister(&self.ring);
        self.results.push_all(&mut self.out);
    }
}

/// Packs a slab key and the low 32 bits of an op id into `user_data`, so a CQE for a
/// finished request can never be taken for a later one in the same slot.
fn user_data(key: usize, id: u64) -> u64 {
    ((id & 0x7fff_ffff) << 32) | (key as u64 & 0xffff_ffff)
}

/// What CQE result `res` means for request `p`.
fn outcome<C>(p: &mut Pending<C>, res: i32, swap: Option<SwapSlice>) -> Next {
    p.poll_first = false;
    if res < 0 {
        let errno = -res;
        return match errno {
            libc::ENOBUFS if p.op.buffer.is_none() => match p.op.cancel.take().map(Ending::error) {
                Some(e) => Next::Done(None, Some(e)),
                None => Next::Starve,
            },
            libc::EAGAIN | libc::EINTR | libc::ECANCELED if p.op.cancel.is_some() => {
                Next::Done(None, p.op.cancel.take().map(Ending::error))
            }
            libc::EAGAIN | libc::EINTR => {
                p.poll_first = true;
                Next::Resubmit
            }
            // Cancelled by the kernel itself (ring teardown).
            libc::ECANCELED => Next::Done(None, Some(Error::ClosedPipe)),
            _ => Next::Done(
                None,
                Some(Error::Io(std::io::Error::from_raw_os_error(errno))),
            ),
        };
    }
    let n = res as usize;
    let op = &mut p.op;
    match op.kind {
        OpKind::Accept => {
            use std::os::fd::FromRawFd;
            // SAFETY: a successful ACCEPT returns a new descriptor that nothing else owns.
            return Next::Accepted(unsafe { OwnedFd::from_raw_fd(res) });
        }
        OpKind::Connect => return Next::Done(None, None),
        _ => {}
    }
    match (op.kind, op.buffer.as_ref().map(|b| b.len())) {
        (OpKind::Write, Some(len)) => {
            op.size += n;
            if op.size >= len {
                Next::Done(None, None)
            } else if let Some(e) = p.op.cancel.take().map(Ending::error) {
                Next::Done(None, Some(e))
            } else {
                Next::Resubmit
            }
        }
        (_, Some(len)) => {
            if n == 0 {
                return Next::Done(None, Some(Error::Eof));
            }
            op.size += n;
            if op.kind == OpKind::Read || op.size >= len {
                Next::Done(None, None)
            } else if let Some(e) = p.op.cancel.take().map(Ending::error) {
                Next::Done(None, Some(e))
            } else {
                Next::Resubmit
            }
        }
        (_, None) => {
            if n == 0 {
                return Next::Done(None, Some(Error::Eof));
            }
            op.size = n;
            match swap {
                Some(s) => Next::Done(Some(s), None),
                // A CQE with data but no buffer cannot happen with BUFFER_SELECT.
                None => Next::Done(
                    None,
                    Some(Error::Io(std::io::Error::other(
                        "io_uring returned data without a provided buffer",
                    ))),
                ),
            }
        }
    }
}
