//! The completion side: the queue the loop fills and `wait_io` empties, and the `Batch` it
//! returns.
//!
//! The loop appends a whole iteration's results under one lock and wakes a waiter only if one is
//! asleep, so a busy loop costs one lock per batch, not per result. `wait_io` swaps the filled
//! deque for an empty one (the one the previous `Batch` gave back), so steady state allocates
//! nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::op::OpResult;
use crate::sync::{lock, Condvar, Mutex, MutexGuard};
use crate::{Error, Result};

struct Inner<C> {
    ready: VecDeque<OpResult<C>>,
    /// An empty deque kept for the next swap.
    spare: VecDeque<OpResult<C>>,
    waiters: usize,
    closed: bool,
    /// Why a backend thread failed (`wait_io` then reports it instead of `WatcherClosed`).
    failure: Option<String>,
    /// A consumer leads (see [`Lead`]) and may be asleep in the kernel: a result pushed by
    /// another thread must kick it.
    leader_asleep: bool,
    /// How to wake a leader; dropped on close (its descriptor with it).
    kick: Option<std::sync::Arc<dyn Kick>>,
    /// A [`Waker`](crate::Waker) woke us and no `wait_io*` has returned since: the next one
    /// (or the one blocked now) returns at once, possibly empty. Several wakes collapse.
    woken: bool,
}

/// A backend that lets a consumer with nothing to take wait in the kernel itself and serve the
/// readiness it gets on its own thread (leader/follower; the epoll backend on Linux).
pub(crate) trait Lead: Send + Sync {
    /// Becomes the leader if no consumer leads now.
    fn try_claim(&self) -> bool;
    /// As the leader: waits in the kernel for up to `timeout` (`None`: no limit), calls
    /// `awake` as soon as the wait ends, serves what it found (its results go to the queue),
    /// and gives the lead up.
    fn lead(&self, timeout: Option<Duration>, awake: &dyn Fn());
}

/// Interrupts a leader's kernel wait.
pub(crate) trait Kick: Send + Sync {
    fn kick(&self);
}

pub(crate) struct ResultQueue<C> {
    inner: Mutex<Inner<C>>,
    cv: Condvar,
    /// How long a consumer that finds nothing spins before it sleeps (`Builder::busy_poll`).
    spin: Duration,
}

/// Spin hints between two looks at the queue while busy-polling: short enough to see a result
/// within a fraction of a microsecond, long enough not to hammer the lock the loop pushes
/// under.
const SPIN_HINTS: usize = 64;

impl<C> ResultQueue<C> {
    pub(crate) fn new(spin: Duration) -> Self {
        ResultQueue {
            spin,
            inner: Mutex::new(Inner {
                ready: VecDeque::with_capacity(128),
                spare: VecDeque::with_capacity(128),
                waiters: 0,
                closed: false,
                failure: None,
                leader_asleep: false,
                kick: None,
                woken: false,
            }),
            cv: Condvar::new(),
        }
    }

    /// Moves every result out of `out` into the queue (loop thread), and counts each stream
    /// request down in its connection's lane under the same lock, so a request completed
    /// inline afterwards is queued behind it (`crate::lane`).
    pub(crate) fn push_all(&self, out: &mut Vec<OpResult<C>>) {
        if out.is_empty() {
            return;
        }
        let mut g = lock(&self.inner);
        for r in out.iter() {
            if let Some(lane) = r.op.lane() {
                r.conn.0.lanes.delivered(lane);
            }
        }
        g.ready.extend(out.drain(..));
        Self::wake(&mut g, &self.cv);
    }

    /// Wakes whoever waits for results: condition-variable waiters, and a leader asleep in
    /// the kernel.
    fn wake(g: &mut Inner<C>, cv: &Condvar) {
        if g.waiters > 0 {
            cv.notify_all();
        }
        if g.leader_asleep {
            g.leader_asleep = false;
            if let Some(k) = &g.kick {
                k.kick();
            }
        }
    }

    /// Installs the leader's wake-up (once, at start).
    pub(crate) fn set_kick(&self, kick: std::sync::Arc<dyn Kick>) {
        lock(&self.inner).kick = Some(kick);
    }

    /// Queues a result completed on a submitting thread (the fast path of `crate::lane`).
    pub(crate) fn push_one(&self, r: OpResult<C>) {
        let mut g = lock(&self.inner);
        g.ready.push_back(r);
        Self::wake(&mut g, &self.cv);
    }

    /// [`Waker::wake`](crate::Waker::wake): sets the sticky flag and wakes whoever waits (the
    /// condition variable, and a leader in the kernel through the kick). Refused once closed
    /// (no descriptor is touched then: the kick was dropped by the close).
    pub(crate) fn notify(&self) -> Result<()> {
        let mut g = lock(&self.inner);
        if g.closed {
            return Err(Self::closed_error(&g));
        }
        g.woken = true;
        Self::wake(&mut g, &self.cv);
        Ok(())
    }

    fn closed_error(g: &Inner<C>) -> Error {
        match &g.failure {
            Some(why) => Error::WatcherFailed(why.clone()),
            None => Error::WatcherClosed,
        }
    }

    /// No more results will come: wake every waiter.
    pub(crate) fn close(&self) {
        let mut g = lock(&self.inner);
        g.closed = true;
        Self::wake(&mut g, &self.cv);
        // A leader checks `closed` before it waits again; the descriptor can go.
        g.kick = None;
    }

    /// A backend thread failed and no more results will come: once the queued ones are taken,
    /// `wait_io` reports `WatcherFailed(reason)`.
    pub(crate) fn fail(&self, reason: String) {
        let mut g = lock(&self.inner);
        g.failure.get_or_insert(reason);
        g.closed = true;
        Self::wake(&mut g, &self.cv);
        g.kick = None;
    }

    /// True once a failure was reported.
    pub(crate) fn is_failed(&self) -> bool {
        lock(&self.inner).failure.is_some()
    }

    /// A guard for a backend thread: if the thread unwinds from a panic (a bug), the queue is
    /// closed so `wait_io` reports `WatcherClosed` instead of waiting forever.
    pub(crate) fn close_on_panic(self: &std::sync::Arc<Self>) -> CloseOnPanic<C> {
        CloseOnPanic(self.clone())
    }

    /// Takes everything queued, waiting up to `timeout` (forever if `None`) for at least one
    /// result. An empty deque means the timeout passed or a [`Waker`](crate::Waker) woke the
    /// caller. Once closed and drained: `WatcherClosed` (`WatcherFailed` after a failure).
    ///
    /// With `lead`, a caller that finds nothing waits in the kernel itself if no other caller
    /// does (the leader), and the others wait on the condition variable; a leader leaving with
    /// a batch hands the lead to one of them.
    pub(crate) fn take(
        &self,
        timeout: Option<Duration>,
        lead: Option<&dyn Lead>,
    ) -> Result<VecDeque<OpResult<C>>> {
        let mut g = self.wait_ready(timeout, lead)?;
        if g.ready.is_empty() {
            return Ok(std::mem::take(&mut g.spare));
        }
        let spare = std::mem::take(&mut g.spare);
        Ok(std::mem::replace(&mut g.ready, spare))
    }

    /// As [`take`](Self::take), but appends the results to `out` (under the lock, so the
    /// queue keeps its deque and nothing is allocated once `out` has room) and returns how
    /// many it appended.
    pub(crate) fn take_into(
        &self,
        out: &mut Vec<OpResult<C>>,
        timeout: Option<Duration>,
        lead: Option<&dyn Lead>,
    ) -> Result<usize> {
        let mut g = self.wait_ready(timeout, lead)?;
        let n = g.ready.len();
        out.extend(g.ready.drain(..));
        Ok(n)
    }

    /// The wait of [`take`](Self::take): returns the lock once results are ready, or with
    /// none once the timeout passed or a wake-up came (the wake-up is consumed by any return,
    /// with or without results).
    fn wait_ready(
        &self,
        timeout: Option<Duration>,
        lead: Option<&dyn Lead>,
    ) -> Result<MutexGuard<'_, Inner<C>>> {
        // A timeout too long to add to `now` is no limit at all.
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut g = lock(&self.inner);
        let mut polled = false;
        // The end of the busy-poll spin, set when the caller first finds nothing.
        let mut spin_until: Option<Instant> = None;
        loop {
            if !g.ready.is_empty() {
                if let Some(l) = lead {
                    // Results are waiting, but so may readiness: serve what is ready now
                    // (without waiting) so it joins this batch, as a readiness loop polls once
                    // per turn. It also tells the poller a consumer is active.
                    if !polled && l.try_claim() {
                        polled = true;
                        drop(g);
                        l.lead(Some(Duration::ZERO), &|| {});
                        g = lock(&self.inner);
                        continue;
                    }
                }
                if lead.is_some() && g.waiters > 0 {
                    // Someone must keep serving readiness while this caller works.
                    self.cv.notify_one();
                }
                g.woken = false;
                return Ok(g);
            }
            if g.closed {
                return Err(Self::closed_error(&g));
            }
            if g.woken {
                g.woken = false;
                if lead.is_some() && g.waiters > 0 {
                    // A follower must not be left waiting with nobody leading.
                    self.cv.notify_one();
                }
                return Ok(g);
            }
            let left = match until {
                None => None,
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        if lead.is_some() && g.waiters > 0 {
                            // A follower must not be left waiting with nobody leading.
                            self.cv.notify_one();
                        }
                        return Ok(g);
                    }
                    Some(t - now)
                }
            };
            if !self.spin.is_zero() {
                let end = *spin_until.get_or_insert_with(|| {
                    let end = Instant::now() + self.spin;
                    until.map_or(end, |u| u.min(end))
                });
                if Instant::now() < end {
                    drop(g);
                    // A leader polls readiness without waiting; anyone else looks again soon.
                    match lead {
                        Some(l) if l.try_claim() => l.lead(Some(Duration::ZERO), &|| {}),
                        _ => (0..SPIN_HINTS).for_each(|_| std::hint::spin_loop()),
                    }
                    g = lock(&self.inner);
                    continue;
                }
            }
            if let Some(l) = lead {
                if l.try_claim() {
                    g.leader_asleep = true;
                    drop(g);
                    l.lead(left, &|| lock(&self.inner).leader_asleep = false);
                    g = lock(&self.inner);
                    continue;
                }
            }
            g.waiters += 1;
            g = match left {
                None => self.cv.wait(g).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    self.cv
                        .wait_timeout(g, d)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            g.waiters -= 1;
        }
    }

    /// Gives an emptied deque back for reuse.
    pub(crate) fn give_back(&self, mut d: VecDeque<OpResult<C>>) {
        d.clear();
        let mut g = lock(&self.inner);
        if g.spare.capacity() < d.capacity() {
            g.spare = d;
        }
    }
}

/// What a [`Waker`](crate::Waker) holds of the queue, without its result type.
pub(crate) trait Notify: Send + Sync {
    fn notify(&self) -> Result<()>;
}

impl<C: Send> Notify for ResultQueue<C> {
    fn notify(&self) -> Result<()> {
        ResultQueue::notify(self)
    }
}

pub(crate) struct CloseOnPanic<C>(std::sync::Arc<ResultQueue<C>>);

impl<C> Drop for CloseOnPanic<C> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.close();
        }
    }
}

/// One batch of results from [`Watcher::wait_io`](crate::Watcher::wait_io).
///
/// Iterate it by value (`for res in batch`) to take each [`OpResult`] out, or by reference with
/// [`iter`](Batch::iter). Swap-buffer data inside a result stays valid for as long as that
/// result's [`SwapSlice`](crate::SwapSlice) lives, so submitting the next operation inside the
/// loop is fine. Dropping the batch drops the results left in it and returns its storage to the
/// watcher for reuse.
pub struct Batch<'w, C> {
    items: VecDeque<OpResult<C>>,
    queue: &'w ResultQueue<C>,
}

impl<'w, C> Batch<'w, C> {
    pub(crate) fn new(items: VecDeque<OpResult<C>>, queue: &'w ResultQueue<C>) -> Self {
        Batch { items, queue }
    }

    /// Results left in the batch.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no result is left (only after a timeout, or once iterated).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The results, by reference.
    pub fn iter(&self) -> impl Iterator<Item = &OpResult<C>> {
        self.items.iter()
    }
}

impl<C> Iterator for Batch<'_, C> {
    type Item = OpResult<C>;
    fn next(&mut self) -> Option<OpResult<C>> {
        self.items.pop_front()
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.items.len(), Some(self.items.len()))
    }
}

impl<C> ExactSizeIterator for Batch<'_, C> {}

impl<C> Drop for Batch<'_, C> {
    fn drop(&mut self) {
        self.queue.give_back(std::mem::take(&mut self.items));
    }
}

impl<C> std::fmt::Debug for Batch<'_, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.items.iter()).finish()
    }
}

/// `loom` models of the leader/follower hand-off, the kick and close (`RUSTFLAGS="--cfg
/// gaio_loom" cargo test --release --lib loom`).
///
/// The backend is a fake [`Lead`] over a modelled "kernel": a lock and condition variable
/// guarding a kick flag (the eventfd) and a count of readiness events. Its `lead(None)` sleeps
/// until kicked or until readiness arrives, `lead(Some(ZERO))` does not sleep; either way it
/// takes the kick and the readiness, calls `awake`, serves each event as one result pushed
/// into the queue (as a leader serving readiness does), and gives the lead up. Time is
/// abstracted away: loom has no clock, so the models use only `timeout: None` and
/// `Some(Duration::ZERO)` (a `Some(ZERO)` deadline has always passed when it is checked); a
/// finite non-zero timeout, and the poller thread that serves readiness while no consumer
/// leads, are not modelled (without them a lost hand-off or kick is a hang, which loom
/// reports as a deadlock, instead of latency).
#[cfg(all(test, gaio_loom))]
mod loom_model {
    use super::*;
    use crate::buffer::Buffer;
    use crate::conn::{Conn, ConnId, ConnOwner};
    use crate::op::{OpId, OpType};
    use crate::sync::{AtomicBool, AtomicUsize};
    use loom::thread;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    struct NoOwner;
    impl ConnOwner for NoOwner {
        fn conn_dropped(&self, _: ConnId) {}
    }

    fn result(conn: &Conn, seq: u64) -> OpResult<u64> {
        OpResult {
            // A file request: no lane to count down in `push_all`.
            op: OpType::ReadAt,
            id: OpId {
                watcher: 0,
                seq,
                conn: conn.id(),
            },
            context: seq,
            conn: conn.clone(),
            buffer: Buffer::None,
            size: 0,
            error: None,
            accepted: None,
            addr: None,
            truncated: None,
            segment_size: None,
        }
    }

    #[derive(Default)]
    struct KState {
        kicked: bool,
        ready: usize,
    }

    /// The modelled kernel wait: the eventfd's flag and the readiness events.
    #[derive(Default)]
    struct Kernel {
        st: Mutex<KState>,
        cv: Condvar,
    }

    impl Kernel {
        /// Readiness arrives (a peer sent data): wakes a leader in the wait.
        fn ready(&self) {
            lock(&self.st).ready += 1;
            self.cv.notify_all();
        }
    }

    impl Kick for Kernel {
        fn kick(&self) {
            lock(&self.st).kicked = true;
            self.cv.notify_all();
        }
    }

    struct FakeLead {
        kernel: Arc<Kernel>,
        leading: AtomicBool,
        queue: Arc<ResultQueue<u64>>,
        conn: Conn,
        /// Results served from readiness so far (their ids start at 100).
        served: AtomicUsize,
    }

    impl Lead for FakeLead {
        fn try_claim(&self) -> bool {
            self.leading
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        }

        fn lead(&self, timeout: Option<Duration>, awake: &dyn Fn()) {
            let mut g = lock(&self.kernel.st);
            if timeout.is_none() {
                while !g.kicked && g.ready == 0 {
                    g = self.kernel.cv.wait(g).unwrap();
                }
            }
            g.kicked = false;
            let n = std::mem::take(&mut g.ready);
            drop(g);
            awake();
            if n > 0 {
                let mut out = (0..n)
                    .map(|_| {
                        let seq = 100 + self.served.fetch_add(1, Ordering::SeqCst) as u64;
                        result(&self.conn, seq)
                    })
                    .collect();
                self.queue.push_all(&mut out);
            }
            self.leading.store(false, Ordering::SeqCst);
        }
    }

    struct World {
        queue: Arc<ResultQueue<u64>>,
        lead: FakeLead,
        kernel: Arc<Kernel>,
        /// Ids of every result a consumer took.
        taken: Mutex<Vec<u64>>,
    }

    impl World {
        fn new() -> Arc<World> {
            let queue = Arc::new(ResultQueue::new(Duration::ZERO));
            let kernel = Arc::new(Kernel::default());
            queue.set_kick(kernel.clone());
            let conn = Conn::new(ConnId { index: 0, gen: 0 }, 0, -1, Arc::new(NoOwner));
            Arc::new(World {
                lead: FakeLead {
                    kernel: kernel.clone(),
                    leading: AtomicBool::new(false),
                    queue: queue.clone(),
                    conn,
                    served: AtomicUsize::new(0),
                },
                queue,
                kernel,
                taken: Mutex::new(Vec::new()),
            })
        }

        /// One `wait_io(timeout)`; records what it took. If that makes `close_at` results
        /// taken in all, closes the queue. `None` for `WatcherClosed`.
        fn consume(&self, timeout: Option<Duration>, close_at: Option<usize>) -> Option<usize> {
            match self.queue.take(timeout, Some(&self.lead)) {
                Ok(batch) => {
                    let n = batch.len();
                    let mut t = lock(&self.taken);
                    t.extend(batch.iter().map(|r| r.context));
                    let total = t.len();
                    drop(t);
                    self.queue.give_back(batch);
                    if close_at == Some(total) {
                        self.queue.close();
                    }
                    Some(n)
                }
                Err(Error::WatcherClosed) => None,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }

        fn taken(&self) -> Vec<u64> {
            let mut t = lock(&self.taken).clone();
            t.sort_unstable();
            t
        }
    }

    fn builder() -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b
    }

    /// A result pushed from a submitting thread while one consumer leads (asleep in the
    /// kernel) and the other follows: the push kicks the leader, exactly one consumer takes
    /// it, and the close that follows wakes the other, wherever it waits.
    #[test]
    fn loom_push_kicks_the_leader_and_close_wakes_everyone() {
        builder().check(|| {
            let w = World::new();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || w.consume(None, Some(1)))
                })
                .collect();
            w.queue.push_one(result(&w.lead.conn, 1));
            let got: Vec<_> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
            assert_eq!(w.taken(), [1], "the result is taken exactly once");
            assert!(got.contains(&Some(1)) && got.contains(&None), "{got:?}");
        });
    }

    /// A leader leaves with a batch while the other consumer follows; readiness that only a
    /// leader serves arrives: the follower must have taken over the lead to take it (woken by
    /// the push, which wakes every waiter, or handed the lead by the leaving leader; in these
    /// schedules the push's wake-up alone suffices: the hand-off's own `notify_one` matters
    /// for a leader whose finite timeout ran out, which is not modelled).
    #[test]
    fn loom_follower_is_handed_the_lead() {
        builder().check(|| {
            let w = World::new();
            let consumers: Vec<_> = (0..2)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || w.consume(None, Some(2)))
                })
                .collect();
            let net = {
                let w = w.clone();
                thread::spawn(move || w.kernel.ready())
            };
            w.queue.push_one(result(&w.lead.conn, 1));
            net.join().unwrap();
            for c in consumers {
                c.join().unwrap();
            }
            assert_eq!(w.taken(), [1, 100], "each result taken exactly once");
        });
    }

    /// A `wait_io_timeout(ZERO)` races a blocking `wait_io` and a push: it never sleeps
    /// (with results waiting it polls the kernel without waiting), and whatever it leaves
    /// the blocking one takes.
    #[test]
    fn loom_zero_timeout_poll_never_blocks() {
        builder().check(|| {
            let w = World::new();
            let blocking = {
                let w = w.clone();
                thread::spawn(move || w.consume(None, None))
            };
            let poll = {
                let w = w.clone();
                thread::spawn(move || w.consume(Some(Duration::ZERO), None))
            };
            w.queue.push_one(result(&w.lead.conn, 1));
            let polled = poll.join().unwrap();
            assert!(polled.is_some(), "only close ends a wait in WatcherClosed");
            if polled == Some(1) {
                w.queue.close();
            }
            let waited = blocking.join().unwrap();
            assert_eq!(w.taken(), [1], "the result is taken exactly once");
            assert_eq!(waited.is_none(), polled == Some(1));
        });
    }

    /// A `Waker::wake` races a consumer on its way into the kernel as the leader (or already
    /// asleep there, or not yet in `take`): the consumer's `wait_io(None)` returns, empty,
    /// whatever the interleaving (the sticky flag, or the kick through the kernel wait).
    #[test]
    fn loom_wake_ends_a_blocking_wait() {
        builder().check(|| {
            let w = World::new();
            let consumer = {
                let w = w.clone();
                thread::spawn(move || w.consume(None, None))
            };
            w.queue.notify().unwrap();
            assert_eq!(consumer.join().unwrap(), Some(0));
        });
    }
}
