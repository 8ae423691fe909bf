//! Soak: mixed load on each backend for a bounded time, checking that neither the descriptor
//! count nor the resident set grows.
//!
//! Load (one client watcher driven by the test thread, against [`util::echo_server`] on the
//! same backend):
//! - 32 connection slots, each echoing messages of 1 byte to 64 KiB of random data and
//!   comparing every byte; the echo comes back through `read_full` (caller buffer) or through
//!   swap reads, alternately;
//! - churn: after one message in 16 the slot's connection goes away, by `free` or by dropping
//!   its last handle (alternately), and a new one is dialled and watched;
//! - deadlines: an idle connection always has a read due in 2 ms, which fires;
//! - cancellation: every 8th of those reads is cancelled instead of left to expire.
//!
//! Samples: after a warm-up (a fifth of the run, at least 2 s) and at the end, the load is
//! quiesced (no new work, every request completed, the server has closed what the churn left)
//! and the descriptor count and `VmRSS` are taken.
//! - Descriptors: at a quiescent point the open descriptors are exactly the fixed ones plus two
//!   per live slot, so the end count must equal the warm-up count: tolerance zero.
//! - RSS: at most 8 MiB more at the end than after the warm-up. The warm-up brings the heap
//!   to its steady state (message buffers up to 64 KiB × 2 per slot, the allocator's
//!   per-thread arenas, the swap buffers); what remains is allocator fragmentation, well under
//!   8 MiB in practice. A leak of 8 MiB spread over the operations after the warm-up (printed;
//!   hundreds of thousands) is under 100 bytes per operation or a few KiB per churned
//!   connection, so a leak of one buffer, one connection state or one result per operation
//!   exceeds it.
//!
//! CI runs 10 s per backend; `GAIO_SOAK_SECS=60` runs longer. Needs a process of its own
//! (descriptors and RSS are per process): under plain `cargo test` it skips.

#[macro_use]
mod util;

use std::time::{Duration, Instant};

use gaio::{Backend, Conn, Error, OpId, OpResult, OpType, Watcher};

const SLOTS: usize = 32;
const MAX_MSG: usize = 64 << 10;
const RSS_TOLERANCE_KIB: u64 = 8 << 10;
/// Context of the idle connection's deadline reads.
const IDLE: u64 = u64::MAX;

fn soak_secs() -> u64 {
    std::env::var("GAIO_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

struct Slot {
    conn: Option<Conn>,
    /// The message in flight, and how many bytes of its echo have come back.
    msg: Vec<u8>,
    got: usize,
    busy: bool,
    messages: u64,
}

#[derive(Default, Debug)]
struct Counts {
    ops: u64,
    messages: u64,
    bytes: u64,
    churned: u64,
    deadlines: u64,
    canceled: u64,
}

struct Load<'a> {
    backend: Backend,
    w: &'a Watcher<u64>,
    srv: &'a util::EchoServer,
    slots: Vec<Slot>,
    rng: util::XorShift,
    idle: Conn,
    idle_pending: Option<OpId>,
    counts: Counts,
}

impl Load<'_> {
    fn dial(&self) -> Conn {
        let s = util::dial(self.srv.addr);
        let c = self.w.watch(&s).expect("watch");
        drop(s);
        c
    }

    /// Starts the next message on slot `i`, churning its connection first now and then.
    fn start(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if slot.conn.is_none() || slot.messages % 16 == 15 {
            if let Some(old) = slot.conn.take() {
                if self.counts.churned % 2 == 0 {
                    self.w.free(&old).expect("free");
                }
                drop(old); // the last handle: released by the watcher
                self.counts.churned += 1;
            }
            let c = self.dial();
            self.slots[i].conn = Some(c);
        }
        let len = 1 + (self.rng.next_u64() as usize % MAX_MSG);
        let mut msg = vec![0u8; len];
        self.rng.fill(&mut msg);
        let slot = &mut self.slots[i];
        slot.msg = msg;
        slot.got = 0;
        slot.busy = true;
        let conn = slot.conn.as_ref().unwrap();
        self.w
            .write(i as u64, conn, slot.msg.clone())
            .unwrap_or_else(|e| panic!("write refused: {}", e.error));
        self.counts.ops += 1;
    }

    /// Submits the next read of slot `i`'s echo.
    fn read_echo(&mut self, i: usize) {
        let slot = &self.slots[i];
        let conn = slot.conn.as_ref().unwrap();
        let left = slot.msg.len() - slot.got;
        let r = if slot.messages % 2 == 0 {
            self.w.read_full(i as u64, conn, vec![0; left], None)
        } else {
            self.w.read(i as u64, conn, None)
        };
        r.unwrap_or_else(|e| panic!("read refused: {}", e.error));
        self.counts.ops += 1;
    }

    fn arm_idle(&mut self) {
        let at = Instant::now() + Duration::from_millis(2);
        let id = self
            .w
            .read_timeout(IDLE, &self.idle, Some(vec![0; 16]), at)
            .unwrap_or_else(|e| panic!("idle read refused: {}", e.error));
        self.counts.ops += 1;
        if self.counts.ops % 8 == 0 {
            self.w.cancel(id).expect("cancel");
        }
        self.idle_pending = Some(id);
    }

    fn on_result(&mut self, r: OpResult<u64>, running: bool) {
        let b = self.backend;
        if r.context == IDLE {
            match r.error {
                Some(Error::Deadline) => self.counts.deadlines += 1,
                Some(Error::Canceled) => self.counts.canceled += 1,
                _ => panic!("{b}: idle read: {r:?}"),
            }
            self.idle_pending = None;
            if running {
                self.arm_idle();
            }
            return;
        }
        if let Some(f) = self.srv.failure() {
            panic!("{b}: echo server: {f}");
        }
        let i = r.context as usize;
        assert!(r.error.is_none(), "{b}: slot {i}: {r:?}");
        match r.op {
            OpType::Write => {
                assert_eq!(r.size, self.slots[i].msg.len());
                self.read_echo(i);
            }
            _ => {
                let slot = &mut self.slots[i];
                let data = r.data();
                let want = &slot.msg[slot.got..slot.got + data.len()];
                assert!(data == want, "{b}: slot {i}: echoed bytes differ");
                slot.got += data.len();
                self.counts.bytes += data.len() as u64;
                if slot.got < slot.msg.len() {
                    drop(r);
                    self.read_echo(i);
                } else {
                    slot.busy = false;
                    slot.messages += 1;
                    self.counts.messages += 1;
                    drop(r);
                    if running {
                        self.start(i);
                    }
                }
            }
        }
    }

    /// Runs the load until `until`.
    fn run(&mut self, until: Instant) {
        for i in 0..SLOTS {
            if !self.slots[i].busy {
                self.start(i);
            }
        }
        if self.idle_pending.is_none() {
            self.arm_idle();
        }
        let mut last_progress = Instant::now();
        while Instant::now() < until {
            let batch: Vec<_> = self
                .w
                .wait_io_timeout(Duration::from_millis(100))
                .expect("wait_io")
                .collect();
            if !batch.is_empty() {
                last_progress = Instant::now();
            }
            assert!(
                last_progress.elapsed() < Duration::from_secs(10),
                "{}: no progress for 10 s",
                self.backend
            );
            for r in batch {
                self.on_result(r, true);
            }
        }
    }

    /// Lets every request finish without starting new ones.
    fn quiesce(&mut self) {
        let start = Instant::now();
        while self.slots.iter().any(|s| s.busy) || self.idle_pending.is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{}: quiescing took over 20 s",
                self.backend
            );
            let batch: Vec<_> = self
                .w
                .wait_io_timeout(Duration::from_millis(100))
                .expect("wait_io")
                .collect();
            for r in batch {
                self.on_result(r, false);
            }
        }
        util::expect_quiet(self.w, Duration::from_millis(10));
    }
}

/// Waits (bounded) until the open descriptors number `want`: the echo server frees its side
/// of a churned connection when it reads the EOF, a moment after the client side went away,
/// and nothing notifies that.
fn settle_fds(want: usize, when: &str) -> usize {
    let mut n = 0;
    util::eventually(
        Duration::from_secs(10),
        format!("{want} descriptors {when}"),
        || {
            n = util::fd_count();
            n == want
        },
    );
    n
}

backend_tests! {
    /// Mixed load for `GAIO_SOAK_SECS` (default 10) seconds; no descriptor and no memory
    /// growth between the warm-up and the end (see the file's documentation).
    fn soak(backend) {
        if !util::own_process("soak") { return; }
        let secs = soak_secs();
        let fds_pre = util::open_fds();
        {
            let Some(srv) = util::echo_server(backend, 64 << 10) else { return };
            let Some(w) = util::watcher_for::<u64>(backend) else { return };
            let (_idle_peer, idle_mine) = util::tcp_pair();
            let idle = w.watch(&idle_mine).unwrap();
            drop(idle_mine);
            // Fixed descriptors: the two watchers, the server's listener, the idle pair.
            let fixed = util::fd_count();
            let mut load = Load {
                backend,
                w: &w,
                srv: &srv,
                slots: (0..SLOTS)
                    .map(|_| Slot { conn: None, msg: Vec::new(), got: 0, busy: false, messages: 0 })
                    .collect(),
                rng: util::XorShift::new(if backend == Backend::Epoll { 0x50a4 } else { 0x50a5 }),
                idle,
                idle_pending: None,
                counts: Counts::default(),
            };
            let start = Instant::now();
            let warm = Duration::from_secs(secs / 5).max(Duration::from_secs(2));
            load.run(start + warm);
            load.quiesce();
            // Each live slot: the client's watched descriptor and the server's.
            let fds_warm = settle_fds(fixed + 2 * SLOTS, "after the warm-up");
            let rss_warm = util::vm_rss_kib();
            let ops_warm = load.counts.ops;
            load.run(start + Duration::from_secs(secs));
            load.quiesce();
            let fds_end = settle_fds(fds_warm, "at the end");
            let rss_end = util::vm_rss_kib();
            let c = &load.counts;
            let ops = c.ops - ops_warm;
            println!(
                "{backend}: soak {:?}: {} messages ({} MiB echoed and verified), {} requests \
                 ({ops} after the warm-up), {} connections churned, {} deadlines fired, {} \
                 reads cancelled",
                start.elapsed(),
                c.messages,
                c.bytes >> 20,
                c.ops,
                c.churned,
                c.deadlines,
                c.canceled
            );
            println!(
                "{backend}: descriptors {fds_warm} after the warm-up, {fds_end} at the end; \
                 VmRSS {rss_warm} KiB after the warm-up, {rss_end} KiB at the end ({:+} KiB; \
                 tolerance {RSS_TOLERANCE_KIB} KiB = {:.0} bytes per request after the warm-up)",
                rss_end as i64 - rss_warm as i64,
                (RSS_TOLERANCE_KIB * 1024) as f64 / ops.max(1) as f64
            );
            assert!(c.deadlines > 0 && c.canceled > 0 && c.churned > 0, "{c:?}");
            assert!(
                rss_end <= rss_warm + RSS_TOLERANCE_KIB,
                "{backend}: VmRSS grew from {rss_warm} KiB to {rss_end} KiB"
            );
            drop(load);
        }
        util::assert_fds(&fds_pre, fds_pre.len(), "after the soak");
    }
}
