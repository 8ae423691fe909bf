//! `Watcher::waker` / `Waker::wake` and `Watcher::wait_io_into` (issue 13, items 3 and 4), on
//! both backends:
//!
//! - a wake-up from another thread ends a `wait_io()` / `wait_io_into(None)` blocked with no
//!   timeout and no result: on epoll the consumer is the leader, asleep inside `epoll_wait`
//!   (checked through `/proc/self/task/<tid>/syscall` before waking), on io_uring it sleeps on
//!   the condition variable (a futex); a watchdog fails the test after 5 s if the wake-up did
//!   nothing, and the wait must return with zero results;
//! - a leader and a follower blocked at once: each wake-up ends one of them;
//! - a wake-up before the wait makes the next wait return at once; many collapse into one;
//! - `wake` after `close`, and after the watcher is dropped, is `WatcherClosed`;
//! - `wait_io_into` appends to a non-empty vector and returns the count; `Some(ZERO)` returns 0
//!   with nothing ready; steady state allocates nothing on the calling thread (a counting
//!   allocator).

#[macro_use]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gaio::{Backend, Buffer, Error, OpResult, Watcher};

/// Counts allocations made by the current thread (a const-initialised thread local: no
/// allocation or destructor of its own).
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

const LIMIT: Duration = Duration::from_secs(5);

/// The system call thread `tid` is in (`/proc/self/task/<tid>/syscall`'s first field), if it
/// is blocked in one.
fn syscall_of(tid: i32) -> Option<i64> {
    let s = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Waits (up to 5 s) until thread `tid` sleeps where a blocked `wait_io` sleeps on this
/// backend: in `epoll_wait` (the leader) on epoll, in a futex (the condition variable) on
/// io_uring.
fn until_blocked(backend: Backend, tid: i32) {
    let wanted: &[i64] = match backend {
        // epoll_wait, epoll_pwait, epoll_pwait2
        Backend::Epoll => &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait, 441],
        _ => &[libc::SYS_futex],
    };
    util::eventually(
        LIMIT,
        format!("the consumer to block in {wanted:?}"),
        || {
            util::thread_state(tid) == Some('S')
                && syscall_of(tid).is_some_and(|n| wanted.contains(&n))
        },
    );
}

/// How a consumer waits.
#[derive(Clone, Copy)]
enum How {
    WaitIo,
    Into,
}

fn blocked_wait(w: &Watcher<u32>, how: How) -> gaio::Result<usize> {
    match how {
        How::WaitIo => w.wait_io().map(|b| b.len()),
        How::Into => {
            let mut out = Vec::new();
            let n = w.wait_io_into(&mut out, None)?;
            assert_eq!(n, out.len());
            Ok(n)
        }
    }
}

/// A consumer thread blocked without a timeout; it reports its tid first, then what its wait
/// returned.
fn spawn_consumer(w: &Arc<Watcher<u32>>, how: How) -> (i32, mpsc::Receiver<gaio::Result<usize>>) {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let w = w.clone();
    std::thread::spawn(move || {
        tid_tx.send(util::gettid()).unwrap();
        let _ = done_tx.send(blocked_wait(&w, how));
    });
    let tid = tid_rx.recv_timeout(LIMIT).expect("the consumer started");
    (tid, done_rx)
}

/// The watchdog: the blocked wait must end within 5 s, with zero results.
fn expect_woken(w: &Watcher<u32>, done: &mpsc::Receiver<gaio::Result<usize>>, what: &str) {
    match done.recv_timeout(LIMIT) {
        Ok(Ok(0)) => {}
        Ok(other) => panic!("{what}: the woken wait returned {other:?}, not Ok(0)"),
        Err(_) => {
            // Unblock the consumer before failing (close ends every wait).
            let _ = w.close();
            panic!("{what}: wake() did not end the blocked wait within {LIMIT:?}");
        }
    }
}

fn woken_while_blocked(backend: Backend, how: How) {
    let Some(w) = util::watcher_for::<u32>(backend) else {
        return;
    };
    let w = Arc::new(w);
    let waker = w.waker();
    let (tid, done) = spawn_consumer(&w, how);
    until_blocked(backend, tid);
    waker.wake().unwrap();
    expect_woken(&w, &done, "one consumer");
    // The wake-up was consumed: a poll finds nothing and returns at once.
    assert_eq!(
        w.wait_io_into(&mut Vec::new(), Some(Duration::ZERO))
            .unwrap(),
        0
    );
}

backend_tests! {
    /// `wait_io()` blocked with no timeout (the epoll leader inside `epoll_wait`; the
    /// condition variable on io_uring) returns an empty batch on a wake-up from another thread.
    fn wake_ends_blocked_wait_io(backend) {
        woken_while_blocked(backend, How::WaitIo);
    }

    /// The same for `wait_io_into(&mut out, None)`: `Ok(0)`.
    fn wake_ends_blocked_wait_io_into(backend) {
        woken_while_blocked(backend, How::Into);
    }

    /// Two consumers blocked (on epoll a leader in `epoll_wait` and a follower on the
    /// condition variable): each wake-up ends one of them.
    fn each_wake_ends_one_of_two_blocked_waits(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let w = Arc::new(w);
        let waker = w.waker().clone();
        let (tid_a, done_a) = spawn_consumer(&w, How::WaitIo);
        let (tid_b, done_b) = spawn_consumer(&w, How::Into);
        // Both asleep: one of them in epoll_wait on epoll, both in a futex on io_uring.
        util::eventually(LIMIT, "both consumers asleep", || {
            [tid_a, tid_b].iter().all(|&t| util::thread_state(t) == Some('S') && syscall_of(t).is_some())
        });
        if backend == Backend::Epoll {
            util::eventually(LIMIT, "one consumer leading in epoll_wait", || {
                [tid_a, tid_b].iter().any(|&t| {
                    syscall_of(t).is_some_and(|n| n == libc::SYS_epoll_wait || n == libc::SYS_epoll_pwait)
                })
            });
        }
        waker.wake().unwrap();
        let first = Instant::now();
        let (woken, other) = loop {
            if let Ok(r) = done_a.try_recv() {
                break (r, &done_b);
            }
            if let Ok(r) = done_b.try_recv() {
                break (r, &done_a);
            }
            if first.elapsed() > LIMIT {
                let _ = w.close();
                panic!("wake() ended neither blocked wait within {LIMIT:?}");
            }
            std::thread::yield_now();
        };
        assert!(matches!(woken, Ok(0)), "{woken:?}");
        waker.wake().unwrap();
        expect_woken(&w, other, "the second consumer");
    }

    /// A wake-up with nobody waiting makes the next wait return at once, empty.
    fn wake_before_wait_returns_at_once(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        w.waker().wake().unwrap();
        let t = Instant::now();
        assert_eq!(w.wait_io_timeout(LIMIT).unwrap().len(), 0);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        // And with wait_io_into.
        w.waker().wake().unwrap();
        let t = Instant::now();
        assert_eq!(w.wait_io_into(&mut Vec::new(), Some(LIMIT)).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    }

    /// Many wake-ups before one wait collapse into one: the wait after it waits its timeout.
    fn many_wakes_collapse(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let waker = w.waker();
        for _ in 0..100 {
            waker.clone().wake().unwrap();
        }
        let t = Instant::now();
        assert_eq!(w.wait_io_into(&mut Vec::new(), Some(LIMIT)).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        let quiet = Duration::from_millis(200);
        let t = Instant::now();
        assert_eq!(w.wait_io_into(&mut Vec::new(), Some(quiet)).unwrap(), 0);
        assert!(t.elapsed() >= quiet, "a second wake-up was left: {:?}", t.elapsed());
    }

    /// A result ready and a wake-up pending: one return takes both (the wake-up is consumed).
    fn a_return_with_results_consumes_the_wake(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (a, mut b) = UnixStream::pair().unwrap();
        let conn = w.watch(&a).unwrap();
        b.write_all(b"x").unwrap();
        w.read(1, &conn, None).unwrap();
        let mut out = Vec::new();
        let start = Instant::now();
        while out.is_empty() {
            assert!(start.elapsed() < LIMIT, "no read result");
            w.wait_io_into(&mut out, Some(Duration::from_millis(100))).unwrap();
        }
        w.waker().wake().unwrap();
        b.write_all(b"y").unwrap();
        w.read(2, &conn, None).unwrap();
        // Either the read or the wake-up ends this wait; if it was the wake-up alone, the read
        // still comes.
        out.clear();
        while out.is_empty() {
            assert!(start.elapsed() < LIMIT, "no second read result");
            w.wait_io_into(&mut out, Some(Duration::from_millis(100))).unwrap();
        }
        let quiet = Duration::from_millis(200);
        let t = Instant::now();
        assert_eq!(w.wait_io_into(&mut out, Some(quiet)).unwrap(), 0);
        assert!(t.elapsed() >= quiet, "the wake-up survived a return: {:?}", t.elapsed());
    }

    /// `wake` on a closed watcher, and on a dropped one, is `WatcherClosed`; so is a clone.
    fn wake_after_close_errors(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let waker = w.waker();
        waker.wake().unwrap();
        w.close().unwrap();
        assert!(matches!(waker.wake(), Err(Error::WatcherClosed)));
        assert!(matches!(w.waker().wake(), Err(Error::WatcherClosed)));
        // The wake-up left before close does not outlive it: wait_io reports the close.
        assert!(matches!(w.wait_io_into(&mut Vec::new(), None), Err(Error::WatcherClosed)));
        let clone = waker.clone();
        drop(w);
        assert!(matches!(clone.wake(), Err(Error::WatcherClosed)));
        assert!(format!("{clone:?}").contains("dropped: true"), "{clone:?}");
    }

    /// `wait_io_into` appends after what the vector holds and returns how many it appended;
    /// `Some(ZERO)` with nothing ready returns 0 at once and leaves the vector as it was;
    /// after close the queued results come first, then `WatcherClosed`.
    fn wait_io_into_appends_and_counts(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (a, mut b) = UnixStream::pair().unwrap();
        let conn = w.watch(&a).unwrap();
        let mut out: Vec<OpResult<u32>> = Vec::new();
        let t = Instant::now();
        assert_eq!(w.wait_io_into(&mut out, Some(Duration::ZERO)).unwrap(), 0);
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(out.is_empty());
        for (i, ctx) in [10u32, 11].into_iter().enumerate() {
            b.write_all(&[ctx as u8]).unwrap();
            w.read(ctx, &conn, None).unwrap();
            let start = Instant::now();
            loop {
                assert!(start.elapsed() < LIMIT, "no result for {ctx}");
                let before = out.len();
                let n = w.wait_io_into(&mut out, Some(Duration::from_millis(100))).unwrap();
                assert_eq!(out.len(), before + n, "returns how many it appended");
                if out.len() > i {
                    break;
                }
            }
        }
        assert_eq!(out.iter().map(|r| r.context).collect::<Vec<_>>(), [10, 11]);
        assert_eq!(out[0].data(), [10]);
        assert_eq!(out[1].data(), [11]);
        assert_eq!(w.wait_io_into(&mut out, Some(Duration::ZERO)).unwrap(), 0);
        assert_eq!(out.len(), 2, "a poll with nothing ready leaves the vector as it was");
        // A pending read ends with ClosedPipe on close; it is returned before WatcherClosed.
        w.read(12, &conn, None).unwrap();
        w.close().unwrap();
        let mut rest = Vec::new();
        loop {
            match w.wait_io_into(&mut rest, None) {
                Ok(n) => assert!(n > 0, "after close only results or WatcherClosed"),
                Err(Error::WatcherClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(rest.iter().map(|r| r.context).collect::<Vec<_>>(), [12]);
        assert!(util::is_closed_pipe(&rest[0].error));
    }

    /// Steady state allocates nothing in `wait_io_into` on the calling thread: once the
    /// vector and the queue's deque have room, a round of read results costs no allocation
    /// (results moved from the deque, which the queue keeps, into the caller's vector).
    fn wait_io_into_does_not_allocate(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (a, mut b) = UnixStream::pair().unwrap();
        let conn = w.watch(&a).unwrap();
        let mut out: Vec<OpResult<u32>> = Vec::with_capacity(16);
        let mut buf = Some(vec![0u8; 64]);
        let mut counted = 0u64;
        for round in 0..300u32 {
            b.write_all(&[round as u8]).unwrap();
            w.read(round, &conn, buf.take()).unwrap();
            let start = Instant::now();
            while out.is_empty() {
                assert!(start.elapsed() < LIMIT, "no result in round {round}");
                let before = allocs();
                w.wait_io_into(&mut out, Some(Duration::from_millis(100))).unwrap();
                if round >= 100 {
                    counted += allocs() - before;
                }
            }
            assert_eq!(out.len(), 1);
            for r in out.drain(..) {
                assert!(r.error.is_none(), "{:?}", r.error);
                match r.buffer {
                    Buffer::User(v) => buf = Some(v),
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(counted, 0, "allocations in 200 rounds of wait_io_into");
        assert!(out.capacity() >= 16);
    }
}
