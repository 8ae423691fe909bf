//! The readiness backend's state: every connection's queues, the requests, the deadline heap.
//! It lives behind one mutex, and whichever thread has news takes the lock and acts on it at
//! once: the poller serves the queues that readiness woke, a submitter queues (and attempts)
//! its own request, the loop thread handles the rest of the messages and the deadlines. Each
//! locked section ends by handing its results to `wait_io` as one batch. No readiness and no
//! request waits for a hand-off to another thread.
//!
//! Per connection, reads are served FIFO among reads and writes FIFO among writes. A request
//! whose direction has nothing queued is attempted at once (the immediate attempt that makes
//! edge-triggered readiness safe without draining); otherwise it waits for the next edge. On
//! an edge the queue is served front to back until a request would block.

mod files;

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::file_pool;
use crate::conn::{lock, Conn, ConnId, ConnOwner, ConnShared, IdAllocator};
use crate::deadline::{DeadlineHeap, Entry};
use crate::op::{Ending, Op, OpId, OpKind, OpResult};
use crate::results::ResultQueue;
use crate::swap::SwapPool;
use crate::sys::attempt::{attempt, Attempt};
use crate::sys::{FileState, GcCounters, LoopMsg};
use crate::Error;

/// Messages handled per iteration before results are flushed, so a flood of submissions
/// cannot hold completions back for long.
const DRAIN: usize = 4096;

#[derive(Clone, Copy)]
enum Dir {
    Read,
    Write,
}

fn dir_of(kind: OpKind) -> Dir {
    if kind.is_read_side() {
        Dir::Read
    } else {
        Dir::Write
    }
}

struct ConnState {
    id: ConnId,
    /// The handles' shared part, for closing the submit-side fast path before the fd closes.
    handle: Weak<ConnShared>,
    fd: OwnedFd,
    is_socket: bool,
    readers: VecDeque<usize>,
    writers: VecDeque<usize>,
    /// Listed in `EventLoop::starved`: the front reader waits for swap space.
    starved: bool,
    /// Per direction: an edge came while nothing was queued, and no attempt under the lock
    /// has met EAGAIN since. A request that met EAGAIN on the submitting thread is attempted
    /// again when queued only if this is set: otherwise no data (or space) came after its
    /// attempt, or the edge that announces it is still to be served and will find it queued.
    edge: [bool; 2],
    /// File requests' state, once there are any.
    file: Option<Box<FileState>>,
    /// Released while `busy`: finish when the last file request returns.
    closing: bool,
    /// A `detach` waiting for that.
    detach: Option<Sender<Option<OwnedFd>>>,
}

impl ConnState {
    fn fs(&mut self) -> &mut FileState {
        self.file.get_or_insert_with(Default::default)
    }

    fn busy(&self) -> usize {
        self.file.as_ref().map_or(0, |f| f.busy)
    }

    fn file_keys(&self) -> impl Iterator<Item = &usize> {
        self.file.iter().flat_map(|f| f.files.iter())
    }

    fn queue(&mut self, dir: Dir) -> &mut VecDeque<usize> {
        match dir {
            Dir::Read => &mut self.readers,
            Dir::Write => &mut self.writers,
        }
    }
}

pub(crate) struct EventLoop<C> {
    registry: Registry,
    /// Shared with the submit side's fast path (`crate::lane`).
    swap: Arc<Mutex<SwapPool>>,
    results: Arc<ResultQueue<C>>,
    ids: Arc<IdAllocator>,
    gc: Arc<GcCounters>,
    conns: Vec<Option<ConnState>>,
    ops: Slab<Op<C>>,
    deadlines: DeadlineHeap,
    starved: Vec<ConnId>,
    out: Vec<OpResult<C>>,
    /// Connections an accept produced while their listener's state was borrowed; added to
    /// `conns` right after.
    accepted: Vec<(ConnId, OwnedFd, Weak<ConnShared>)>,
    conn_maker: ConnMaker,
    pool: file_pool::FilePool<C>,
    /// When the loop thread wakes for deadlines next (`None`: only for a message). A request
    /// submitted with an earlier deadline must wake it.
    sleep_until: Option<Instant>,
}

/// What the loop needs to take over a connection it accepted itself.
pub(crate) struct ConnMaker {
    pub(crate) registry: Registry,
    pub(crate) ids: Arc<IdAllocator>,
    pub(crate) watcher_id: u64,
    pub(crate) owner: Arc<dyn ConnOwner>,
}

impl ConnMaker {
    /// Registers an accepted socket and makes its handle.
    fn adopt(&self, fd: &OwnedFd) -> std::io::Result<(ConnId, Conn)> {
        let id = self.ids.alloc();
        let raw = fd.as_raw_fd();
        if let Err(e) = self.registry.register(
            &mut SourceFd(&raw),
            Token(id.token()),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.ids.release(id);
            return Err(e);
        }
        Ok((id, Conn::new(id, self.watcher_id, raw, self.owner.clone())))
    }
}

impl<C: Send + 'static> EventLoop<C> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        registry: Registry,
        swap: Arc<Mutex<SwapPool>>,
        results: Arc<ResultQueue<C>>,
        ids: Arc<IdAllocator>,
        gc: Arc<GcCounters>,
        conn_maker: ConnMaker,
        done: Sender<LoopMsg<C>>,
    ) -> Self {
        EventLoop {
            accepted: Vec::new(),
            conn_maker,
            pool: file_pool::FilePool::new(done),
            sleep_until: None,
            registry,
            swap,
            results,
            ids,
            gc,
            conns: Vec::new(),
            ops: Slab::with_capacity(1024),
            deadlines: DeadlineHeap::default(),
            starved: Vec::new(),
            out: Vec::with_capacity(1024),
        }
    }

    /// The loop thread: sleeps on the channel until a message or the next deadline, then
    /// handles what came under the state's lock.
    pub(crate) fn run(state: &Mutex<Self>, rx: Receiver<LoopMsg<C>>) {
        let mut sleep = lock(state).plan_sleep();
        'run: loop {
            let first = match sleep {
                Some(at) => match rx.recv_deadline(at) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break 'run,
                },
                None => match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break 'run,
                },
            };
            let mut s = lock(state);
            if let Some(m) = first {
                if !s.handle(m) {
                    break 'run;
                }
                for _ in 0..DRAIN {
                    match rx.try_recv() {
                        Ok(m) => {
                            if !s.handle(m) {
                                break 'run;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            s.expire();
            s.flush();
            sleep = s.plan_sleep();
        }
        lock(state).shutdown(&rx);
    }

    /// Records when the loop thread wakes next and returns it.
    fn plan_sleep(&mut self) -> Option<Instant> {
        self.sleep_until = self.deadlines.next();
        self.sleep_until
    }

    /// Hands this locked section's results to `wait_io`.
    pub(crate) fn flush(&mut self) {
        self.results.push_all(&mut self.out);
    }

    /// Readiness from the poller for connection token `token`: serves the woken directions.
    pub(crate) fn ready(&mut self, token: usize, read: bool, write: bool) {
        let Some(i) = self.index_of(ConnId::from_token(token)) else {
            return; // stale: the connection is gone
        };
        for (woken, dir) in [(read, Dir::Read), (write, Dir::Write)] {
            if !woken {
                continue;
            }
            let Some(c) = self.conns[i].as_mut() else {
                return;
            };
            if c.queue(dir).is_empty() {
                c.edge[dir as usize] = true;
            } else {
                self.serve(i, dir);
            }
        }
    }

    /// A request submitted on the caller's thread; true if its deadline is earlier than the
    /// loop thread's planned wake-up, which the caller must then bring forward
    /// ([`LoopMsg::Tick`]).
    pub(crate) fn submit_direct(&mut self, op: Op<C>) -> bool {
        let deadline = op.deadline;
        self.submit(op);
        match deadline {
            Some(at) if self.sleep_until.map_or(true, |t| at < t) => {
                self.sleep_until = Some(at);
                true
            }
            _ => false,
        }
    }

    /// Handles one message; false means shut down.
    fn handle(&mut self, msg: LoopMsg<C>) -> bool {
        match msg {
            LoopMsg::Watch {
                id,
                fd,
                is_socket,
                handle,
            } => self.watch(id, fd, is_socket, handle),
            LoopMsg::FileDone { key, seq, res } => self.file_done(key, seq, res),
            LoopMsg::Submit(op) => self.submit(op),
            LoopMsg::Free(id) => {
                if let Some(i) = self.index_of(id) {
                    self.release(i);
                }
            }
            LoopMsg::Dropped(id) => {
                if let Some(i) = self.index_of(id) {
                    self.release(i);
                    self.gc.closed.fetch_add(1, Ordering::Relaxed);
                }
            }
            LoopMsg::Tick => {}
            LoopMsg::SwapReleased => self.retry_starved(),
            LoopMsg::Cancel { id, reply } => {
                let _ = reply.send(self.cancel(id));
            }
            LoopMsg::Detach { id, reply } => match self.index_of(id) {
                Some(i) => {
                    if let Some(c) = self.conns[i].as_mut() {
                        c.detach = Some(reply);
                    }
                    self.release(i);
                }
                None => {
                    let _ = reply.send(None);
                }
            },
            LoopMsg::Close => return false,
        }
        true
    }

    fn index_of(&self, id: ConnId) -> Option<usize> {
        let i = id.index as usize;
        match self.conns.get(i) {
            Some(Some(c)) if c.id == id => Some(i),
            _ => None,
        }
    }

    /// A descriptor taken over (on the caller's thread, or by an accept here).
    pub(crate) fn watch(
        &mut self,
        id: ConnId,
        fd: OwnedFd,
        is_socket: bool,
        handle: Weak<ConnShared>,
    ) {
        let i = id.index as usize;
        if self.conns.len() <= i {
            self.conns.resize_with(i + 1, || None);
        }
        self.conns[i] = Some(ConnState {
            id,
            handle,
            fd,
            is_socket,
            readers: VecDeque::new(),
            writers: VecDeque::new(),
            starved: false,
            // Unknown until the first EAGAIN: attempt.
            edge: [true; 2],
            file: None,
            closing: false,
            detach: None,
        });
    }

    fn submit(&mut self, op: Op<C>) {
        let i = match self.index_of(op.conn.id()) {
            Some(i) if self.conns[i].as_ref().is_some_and(|c| !c.closing) => i,
            // Freed (or dropped) between the submit-side check and here.
            _ => {
                self.out.push(op.finish(None, Some(Error::ConnClosed)));
                return;
            }
        };
        if op.kind.is_file() {
            self.file_submit(i, op);
            return;
        }
        let dir = dir_of(op.kind);
        let deadline = op.deadline;
        let id = op.id.seq;
        let key = self.ops.insert(op);
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let q = c.queue(dir);
        q.push_back(key);
        let first = q.len() == 1;
        // A request that met EAGAIN on the submitting thread waits for the next edge unless
        // one came since (see `ConnState::edge`).
        if first && (!self.ops[key].started || c.edge[dir as usize]) {
            self.serve(i, dir);
        }
        if let Some(at) = deadline {
            // Only a request still queued arms its deadline; an already-passed deadline fires
            // at the end of this iteration.
            if self.ops.get(key).is_some_and(|o| o.id.seq == id) {
                self.deadlines.push(Entry { at, id, key });
            }
        }
    }

    /// Serves the `dir` queue of connection `i` front to back until a request would block.
    fn serve(&mut self, i: usize, dir: Dir) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        let (fd, is_socket) = (c.fd.as_raw_fd(), c.is_socket);
        while let Some(&key) = c.queue(dir).front() {
            match attempt(fd, is_socket, &mut self.ops[key], &self.swap) {
                Attempt::Done(swap, err) => {
                    c.queue(dir).pop_front();
                    self.out.push(self.ops.remove(key).finish(swap, err));
                }
                Attempt::Accepted(new_fd) => {
                    c.queue(dir).pop_front();
                    let mut op = self.ops.remove(key);
                    match self.conn_maker.adopt(&new_fd) {
                        Ok((id, conn)) => {
                            self.accepted.push((id, new_fd, conn.downgrade()));
                            op.accepted = Some(conn);
                            self.out.push(op.finish(None, None));
                        }
                        Err(e) => self.out.push(op.finish(None, Some(Error::Io(e)))),
                    }
                }
                Attempt::WouldBlock => {
                    c.edge[dir as usize] = false;
                    break;
                }
                Attempt::NoSwap => {
                    if !c.starved {
                        c.starved = true;
                        self.starved.push(c.id);
                    }
                    break;
                }
            }
        }
        while let Some((id, fd, handle)) = self.accepted.pop() {
            self.watch(id, fd, true, handle);
        }
    }

    /// Ends request `id` with `Canceled` if it is still queued; false if it is not.
    fn cancel(&mut self, id: OpId) -> bool {
        let Some(i) = self.index_of(id.conn) else {
            return false;
        };
        if let Some(key) = self.conns[i].as_ref().and_then(|c| {
            c.file_keys()
                .copied()
                .find(|&k| self.ops.get(k).is_some_and(|o| o.id == id))
        }) {
            self.file_end(i, key, Ending::Canceled);
            return true;
        }
        for dir in [Dir::Read, Dir::Write] {
            let Some(c) = self.conns[i].as_mut() else {
                return false;
            };
            let ops = &self.ops;
            let q = c.queue(dir);
            if let Some(pos) = q.iter().position(|&k| ops[k].id == id) {
                let key = q.remove(pos).unwrap_or(usize::MAX);
                let op = self.ops.remove(key);
                self.out.push(op.finish(None, Some(Error::Canceled)));
                // The request behind it may be able to run now, with no new edge coming.
                if pos == 0 {
                    self.serve(i, dir);
                }
                return true;
            }
        }
        false
    }

    /// Serves the reads that wait for swap space, front first, until one would block.
    fn retry_starved(&mut self) {
        crate::conn::lock(&self.swap).clear_starving();
        let list = std::mem::take(&mut self.starved);
        for id in list {
            if let Some(i) = self.index_of(id) {
                if let Some(c) = self.conns[i].as_mut() {
                    c.starved = false;
                }
                self.serve(i, Dir::Read);
            }
        }
    }

    /// Fails every request whose deadline has passed with `Deadline`, keeping its progress.
    fn expire(&mut self) {
        if self.deadlines.next().is_none() {
            return;
        }
        let now = Instant::now();
        let ops = &self.ops;
        let live = |e: &Entry| ops.get(e.key).is_some_and(|o| o.id.seq == e.id);
        let mut expired = Vec::new();
        while let Some(e) = self.deadlines.pop_expired(now, live) {
            expired.push(e);
        }
        self.deadlines.compact(self.ops.len(), |e| {
            self.ops.get(e.key).is_some_and(|o| o.id.seq == e.id)
        });
        for e in expired {
            // Ending one request can end another in this list (serving the queue behind it, or
            // a release): act only on requests still pending.
            if !self.ops.get(e.key).is_some_and(|o| o.id.seq == e.id) {
                continue;
            }
            let key = e.key;
            if self.ops[key].kind.is_file() {
                if let Some(i) = self.index_of(self.ops[key].conn.id()) {
                    self.file_end(i, key, Ending::Deadline);
                }
                continue;
            }
            let op = self.ops.remove(key);
            let dir = dir_of(op.kind);
            let mut was_front = false;
            if let Some(i) = self.index_of(op.conn.id()) {
                if let Some(c) = self.conns[i].as_mut() {
                    let q = c.queue(dir);
                    if let Some(pos) = q.iter().position(|&k| k == key) {
                        was_front = pos == 0;
                        q.remove(pos);
                    }
                }
                self.out.push(op.finish(None, Some(Error::Deadline)));
                // The next request may be able to run now (data that arrived for a starved
                // front reader, say) and no new edge may come for it.
                if was_front {
                    self.serve(i, dir);
                }
            } else {
                self.out.push(op.finish(None, Some(Error::Deadline)));
            }
        }
    }

    /// Ends connection `i`: pending requests complete with `ClosedPipe`, the descriptor leaves
    /// epoll and is closed (or handed to a waiting `detach`), and the slot is recycled under a
    /// new generation. A file with requests on a file thread is finished when they return.
    fn release(&mut self, i: usize) {
        let Some(c) = self.conns[i].as_mut() else {
            return;
        };
        if c.busy() > 0 {
            if !c.closing {
                c.closing = true;
                let keys: Vec<usize> = c.file_keys().copied().collect();
                for key in keys {
                    self.file_end(i, key, Ending::ClosedPipe);
                }
            }
            return;
        }
        drop(self.unlink(i));
    }

    /// Takes connection `i` out: its requests end with `ClosedPipe`, it leaves epoll, and its
    /// descriptor goes to a waiting `detach` or is closed.
    fn unlink(&mut self, i: usize) -> Option<OwnedFd> {
        let mut c = self.conns[i].take()?;
        crate::lane::close(&c.handle);
        for key in c
            .readers
            .iter()
            .chain(c.writers.iter())
            .chain(c.file_keys())
        {
            if let Some(op) = self.ops.try_remove(*key) {
                self.out.push(op.finish(None, Some(Error::ClosedPipe)));
            }
        }
        let raw: RawFd = c.fd.as_raw_fd();
        // Deregister before close, so another descriptor sharing the open file description
        // (an inherited copy) cannot keep a stale registration alive.
        let _ = self.registry.deregister(&mut SourceFd(&raw));
        self.ids.release(c.id);
        match c.detach.take() {
            Some(reply) => {
                let _ = reply.send(Some(c.fd));
                None
            }
            None => Some(c.fd),
        }
    }

    fn shutdown(&mut self, rx: &Receiver<LoopMsg<C>>) {
        for i in 0..self.conns.len() {
            self.release(i);
        }
        // Files with requests on a file thread close when those return; wait for them
        // (each is one bounded syscall).
        while self.conns.iter().flatten().any(|c| c.busy() > 0) {
            match rx.recv() {
                Ok(LoopMsg::FileDone { key, seq, res }) => self.file_done(key, seq, res),
                Ok(LoopMsg::Submit(op)) => self.out.push(op.finish(None, Some(Error::ClosedPipe))),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        self.pool.shutdown();
        // Anything still queued behind `Close` (handle drops, late wakes) needs no result; a
        // submission cannot be there (the submit gate closes before `Close` is sent), but if
        // one were, it still gets its single result.
        while let Ok(m) = rx.try_recv() {
            match m {
                LoopMsg::Submit(op) => self.out.push(op.finish(None, Some(Error::ClosedPipe))),
                LoopMsg::Watch { fd, .. } => {
                    let raw = fd.as_raw_fd();
                    let _ = self.registry.deregister(&mut SourceFd(&raw));
                }
                _ => {}
            }
        }
        self.flush();
    }
}

impl<C: Send + 'static> crate::sys::SwapRetry for Mutex<EventLoop<C>> {
    fn try_retry(&self) -> bool {
        // Never block: the slice may be dropped by a thread that holds this lock already
        // (try_lock then fails), or while another thread serves; the loop thread takes over.
        let Ok(mut s) = self.try_lock() else {
            return false;
        };
        s.retry_starved();
        s.flush();
        true
    }
}
