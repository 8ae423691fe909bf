//! The harness around the engine and its fake: connections on real socket pairs, submissions,
//! completions, and the checks every result goes through.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::buffer::Buffer;
use crate::conn::{Conn, ConnId, IdAllocator};
use crate::engine::{ConnMaker, Engine, LoopMsg, Start};
use crate::lane::Lane;
use crate::op::{OpId, OpResult};
use crate::request::{Kind, Outcome, Request};
use crate::results::ResultQueue;
use crate::swap::SwapPool;
use crate::Error;

use super::fake::*;

pub(super) const WATCHER: u64 = 7;

/// A connection of the test: its handle, and the other end of its socket pair.
pub(super) struct Sock {
    pub(super) conn: Conn,
    pub(super) peer: OwnedFd,
    pub(super) ino: u64,
}

impl Sock {
    pub(super) fn id(&self) -> ConnId {
        self.conn.id()
    }
}

/// What the test submitted, for checking its one result.
pub(super) struct Sub {
    /// Length of the buffer submitted with it (`None`: no buffer).
    pub(super) len: Option<usize>,
    pub(super) conn: ConnId,
    /// The direction it was queued in (`None`: a file request, or refused at submission).
    pub(super) fifo: Option<Lane>,
    pub(super) results: usize,
}

/// The engine, its fake driver, and the bookkeeping that checks every result.
pub(super) struct H<const R: bool> {
    pub(super) e: Engine<u64, Fake<R>>,
    pub(super) results: Arc<ResultQueue<u64>>,
    pub(super) ids: Arc<IdAllocator>,
    pub(super) owner: Arc<Owner>,
    pub(super) seq: u64,
    pub(super) subs: HashMap<u64, Sub>,
    /// Per connection and direction: the last seq delivered (FIFO check).
    pub(super) last: HashMap<(ConnId, u8), u64>,
    /// What the last `submit` returned.
    pub(super) tick: bool,
    pub(super) swap: SwapPool,
}

impl<const R: bool> H<R> {
    pub(super) fn new() -> Self {
        let results = Arc::new(ResultQueue::new(std::time::Duration::ZERO));
        let ids = Arc::new(IdAllocator::default());
        let owner = Arc::new(Owner::default());
        let e = Engine::new(
            Fake::new(),
            results.clone(),
            ids.clone(),
            Arc::new(crate::stats::GcCounters::default()),
            ConnMaker {
                watcher_id: WATCHER,
                owner: owner.clone(),
                busy_poll_us: 0,
            },
        );
        H {
            e,
            results,
            ids,
            owner,
            seq: 1,
            subs: HashMap::new(),
            last: HashMap::new(),
            tick: false,
            swap: swap_pool(),
        }
    }

    pub(super) fn fake(&mut self) -> &mut Fake<R> {
        &mut self.e.driver
    }

    /// A new connection, taken over by the engine (as `LoopMsg::Watch`).
    pub(super) fn sock(&mut self) -> Sock {
        let (mine, peer) = socketpair();
        let id = self.ids.alloc();
        let raw = mine.as_raw_fd();
        let ino = ino(raw).unwrap();
        let conn = Conn::with_file(id, WATCHER, raw, true, None, self.owner.clone());
        self.fake().inos.insert(ino, id);
        self.e.handle(LoopMsg::Watch {
            id,
            fd: mine,
            is_socket: true,
            handle: conn.downgrade(),
        });
        Sock { conn, peer, ino }
    }

    /// Submits a request of `kind` on `s` whose starts are answered by `script` (then by the
    /// fake's default); returns its seq.
    pub(super) fn sub(
        &mut self,
        kind: Kind,
        s: &Sock,
        buf: Option<Vec<u8>>,
        deadline: Option<Instant>,
        poll_first: bool,
        script: Vec<Start>,
    ) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        let id = OpId {
            watcher: 0,
            seq,
            conn: s.id(),
        };
        let len = buf.as_ref().map(Vec::len);
        let mut req = Request::new(id, kind, &s.conn, seq, buf.map(Buffer::User), deadline);
        req.poll_first = poll_first;
        self.fake().script.insert(seq, script.into());
        let lane = kind.lane();
        if let Some(lane) = lane {
            // As the submit side does: counted as pending in the lane word until delivered.
            s.conn.0.lanes.claim(lane, false);
        }
        // Refused at once (freed, closed): never queued, so outside the FIFO order.
        let t = &self.e.table;
        let queued = !self.e.closed
            && t.index_of(s.id())
                .and_then(|i| t.get(i))
                .is_some_and(|sl| !sl.closing);
        self.subs.insert(
            seq,
            Sub {
                len,
                conn: s.id(),
                fifo: lane.filter(|_| queued),
                results: 0,
            },
        );
        self.tick = self.e.submit(req);
        seq
    }

    pub(super) fn read(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::Read, s, Some(vec![0; n]), None, false, script)
    }

    pub(super) fn read_full(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::ReadFull, s, Some(vec![0; n]), None, false, script)
    }

    pub(super) fn swap_read(&mut self, s: &Sock, script: Vec<Start>) -> u64 {
        self.sub(Kind::Read, s, None, None, false, script)
    }

    pub(super) fn write(&mut self, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        self.sub(Kind::Write, s, Some(vec![1; n]), None, false, script)
    }

    pub(super) fn file(&mut self, kind: Kind, s: &Sock, n: usize, script: Vec<Start>) -> u64 {
        let buf = (n > 0).then(|| vec![2; n]);
        self.sub(kind, s, buf, None, false, script)
    }

    /// The driver reports the outcome of request `seq`, which it holds.
    pub(super) fn complete(&mut self, seq: u64, outcome: Outcome) {
        let (key, _) = self
            .fake()
            .held
            .remove(&seq)
            .unwrap_or_else(|| panic!("request {seq} is not in flight"));
        self.e.complete(key, outcome);
    }

    pub(super) fn held(&mut self, seq: u64) -> bool {
        self.fake().held.contains_key(&seq)
    }

    /// `Watcher::free`.
    pub(super) fn free(&mut self, s: &Sock) {
        s.conn.0.freed.store(true, Ordering::Release);
        self.e.free(s.id());
    }

    pub(super) fn cancel(&mut self, s: &Sock, seq: u64) -> bool {
        self.e.cancel(OpId {
            watcher: 0,
            seq,
            conn: s.id(),
        })
    }

    /// Flushes and takes every result, checking each: one per submitted request, none for a
    /// request in flight, FIFO per direction, the buffer back whole.
    pub(super) fn take(&mut self) -> Vec<OpResult<u64>> {
        self.e.flush();
        let got: Vec<_> = self
            .results
            .take(Some(Duration::ZERO), None)
            .expect("result queue closed")
            .into_iter()
            .collect();
        for r in &got {
            let seq = r.id.seq;
            assert_eq!(r.context, seq, "context returned untouched");
            let sub = self
                .subs
                .get_mut(&seq)
                .unwrap_or_else(|| panic!("result for unknown request {seq}"));
            sub.results += 1;
            assert_eq!(sub.results, 1, "request {seq} has a second result: {r:?}");
            assert_eq!(r.id.conn, sub.conn);
            assert_eq!(r.conn.id(), sub.conn);
            assert!(
                !self.e.driver.held.contains_key(&seq),
                "result for request {seq} still in flight"
            );
            match (sub.len, &r.buffer) {
                (Some(n), Buffer::User(v)) => assert_eq!(v.len(), n, "buffer back whole"),
                (Some(_), b) => panic!("request {seq}: buffer not given back: {b:?}"),
                (None, Buffer::None) => {}
                (None, Buffer::Swap(s)) => {
                    assert!(r.error.is_none());
                    assert_eq!(s.len(), r.size);
                }
                (None, b) => panic!("request {seq}: unexpected buffer {b:?}"),
            }
            // A cancel or a deadline ends a request behind the front at once, out of order;
            // every other result of a direction comes in submission order.
            let early = matches!(r.error, Some(Error::Canceled | Error::Deadline));
            if let Some(lane) = sub.fifo.filter(|_| !early) {
                if let Some(prev) = self.last.insert((sub.conn, lane as u8), seq) {
                    assert!(prev < seq, "{seq} delivered after {prev}: not FIFO");
                }
            }
        }
        got
    }

    /// Takes the results and expects exactly these requests, in this order.
    pub(super) fn expect(&mut self, seqs: &[u64]) -> Vec<OpResult<u64>> {
        let got = self.take();
        let ids: Vec<u64> = got.iter().map(|r| r.id.seq).collect();
        assert_eq!(ids, seqs, "results: {got:?}");
        got
    }

    /// Every request submitted had exactly one result; nothing is in flight.
    pub(super) fn all_done(&mut self) {
        self.take();
        assert_eq!(self.e.in_flight(), 0);
        assert!(self.e.driver.held.is_empty(), "{:?}", self.e.driver.held);
        let missing: Vec<u64> = self
            .subs
            .iter()
            .filter(|(_, s)| s.results != 1)
            .map(|(q, _)| *q)
            .collect();
        assert!(missing.is_empty(), "requests without a result: {missing:?}");
        assert!(self.e.ops.is_empty(), "requests left in the engine");
    }

    pub(super) fn forgets(&self, s: &Sock) -> usize {
        self.e.driver.forgets(s.ino)
    }
}

pub(super) fn moved(n: usize) -> Start {
    Start::Done(Outcome::Moved(n, None))
}

pub(super) fn eagain() -> Start {
    Start::Done(Outcome::WouldBlock)
}

pub(super) fn flight() -> Start {
    Start::InFlight
}

pub(super) fn failed() -> Outcome {
    Outcome::Failed(std::io::Error::from_raw_os_error(libc::ECONNRESET))
}

/// The error's variant, for comparing (`Error` is not `PartialEq`).
pub(super) fn err(r: &OpResult<u64>) -> &'static str {
    match &r.error {
        None => "ok",
        Some(Error::Eof) => "Eof",
        Some(Error::ClosedPipe) => "ClosedPipe",
        Some(Error::ConnClosed) => "ConnClosed",
        Some(Error::Canceled) => "Canceled",
        Some(Error::Deadline) => "Deadline",
        Some(Error::Io(_)) => "Io",
        Some(Error::Unsupported) => "Unsupported",
        Some(_) => "other",
    }
}

pub(super) fn past() -> Instant {
    Instant::now()
        .checked_sub(Duration::from_millis(5))
        .expect("clock")
}
