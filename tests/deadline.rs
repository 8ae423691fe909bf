//! Deadlines. Ports of Go gaio's `TestDeadline` (`testSingleDeadline`) and
//! `TestDeadline1k`…`TestDeadline8k` (`testDeadline`), research/gaio.md §3.2 items 2 and 12, plus
//! checks of DESIGN.md property 7 (a deadline never fires early, keeps partial progress in
//! `size`, and is told apart from a cancellation).
//!
//! Go's `time_test.go` (`TestTimedHeapOrderAndIndex`, `TestTimedHeapSwapUpdatesIndex`) tests the
//! internals of Go's timer heap (index back-pointers); their analogue here is the unit tests
//! in `src/deadline.rs` (order, skipped dead entries, compaction), run by the same
//! `cargo test`.

#[macro_use]
mod util;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gaio::{Backend, Buffer, Error, OpType, Watcher};

const MIB: usize = 1 << 20;

/// How late a deadline may be reported before a test fails. Generous: tests run two at a
/// time on a 2-core machine next to 8k-connection tests. Typical lateness is printed.
const SLACK: Duration = Duration::from_secs(1);

/// Go's `testDeadline(par)`: `par` connections to an echo server (128-byte buffers), each with
/// one swap read due in one second, on which nothing is ever sent. Exactly `par` results must
/// come back, every one `Deadline`, none before its deadline; then nothing more.
fn deadline_par(backend: Backend, par: usize) {
    let _guard = util::many_fds_guard();
    let Some(srv) = util::echo_server(backend, 128) else {
        return;
    };
    // The context carries each read's deadline, to check it did not fire early.
    let Some(w) = util::watcher_for::<Instant>(backend) else {
        return;
    };
    if !util::fds_available(2 * par) {
        return;
    }
    let start = Instant::now();
    let failure: Mutex<Option<String>> = Mutex::new(None);
    std::thread::scope(|s| {
        // Go keeps the conns referenced (`defer conn.Close()`) until the test ends; so does
        // this thread, by returning them.
        let dialer = s.spawn(|| {
            let mut conns = Vec::with_capacity(par);
            for i in 0..par {
                let fail = |what: String| *failure.lock().unwrap() = Some(what);
                let stream = match TcpStream::connect_timeout(&srv.addr, Duration::from_secs(10)) {
                    Ok(s) => s,
                    Err(e) => {
                        fail(format!("dial {i}: {e}"));
                        break;
                    }
                };
                let conn = match w.watch(&stream) {
                    Ok(c) => c,
                    Err(e) => {
                        fail(format!("watch {i}: {e}"));
                        break;
                    }
                };
                drop(stream);
                let at = Instant::now() + Duration::from_secs(1);
                if let Err(e) = w.read_timeout(at, &conn, None, at) {
                    fail(format!("read_timeout {i}: {}", e.error));
                    break;
                }
                conns.push(conn);
            }
            conns
        });
        let mut n = 0;
        let mut latest = Duration::ZERO;
        let abort = || failure.lock().unwrap().clone().or_else(|| srv.failure());
        let what = format!("{par} read deadlines");
        let rest = util::wait_until_or(&w, Duration::from_secs(60), what, abort, |res| {
            let now = Instant::now();
            assert_eq!(res.op, OpType::Read);
            assert!(util::is_deadline(&res.error), "expected Deadline: {res:?}");
            assert!(now >= res.context, "a deadline fired early");
            assert_eq!(res.size, 0);
            assert!(matches!(res.buffer, Buffer::None), "{res:?}");
            latest = latest.max(now - res.context);
            n += 1;
            n == par
        });
        assert!(rest.is_empty(), "more than {par} results: {rest:?}");
        util::expect_quiet(&w, Duration::from_millis(300));
        let conns = dialer.join().unwrap();
        assert_eq!(conns.len(), par);
        println!(
            "{par} deadlines in {:?}; the latest reported {latest:?} after its instant",
            start.elapsed()
        );
    });
}

/// Submits `write_timeout`s of 1 MiB due one second after submission on `conn`, each
/// answered by the next, until one ends with `Deadline` (the peer does not read, so the
/// socket buffers fill). Checks that write's partial progress and returns it.
fn write_until_deadline(w: &Watcher<Instant>, conn: &gaio::Conn) -> usize {
    let at = Instant::now() + Duration::from_secs(1);
    w.write_timeout(at, conn, vec![0x77; MIB], at).unwrap();
    let mut writes = 0;
    let mut kept = 0;
    util::wait_until(w, Duration::from_secs(60), "a write deadline", |res| {
        assert_eq!(res.op, OpType::Write);
        match &res.error {
            None => {
                assert_eq!(res.size, MIB);
                writes += 1;
                let at = Instant::now() + Duration::from_secs(1);
                let buf = util::user_buf(res.buffer);
                w.write_timeout(at, &res.conn, buf, at).unwrap();
                false
            }
            Some(Error::Deadline) => {
                let now = Instant::now();
                assert!(now >= res.context, "the write deadline fired early");
                assert!(now - res.context < SLACK, "{:?} late", now - res.context);
                assert!(res.size < MIB, "a full write reported Deadline: {res:?}");
                kept = res.size;
                assert_eq!(util::user_buf(res.buffer).len(), MIB);
                true
            }
            Some(e) => panic!("write failed: {e:?}"),
        }
    });
    println!("{writes} × 1 MiB written, then a write timed out after {kept} bytes");
    kept
}

backend_tests! {
    /// Go `TestDeadline` (`testSingleDeadline`): (a) a swap read due in one second on an echo
    /// connection the client never writes to ends with `Deadline`, no memory, size 0, not
    /// before its instant; (b) as in Go, on the same connection, 1 MiB `write_timeout`s (due
    /// one second after each submission) are chained until one times out: the client never
    /// reads the echo, so both directions fill up.
    fn deadline(backend) {
        let Some(srv) = util::echo_server(backend, 1024) else { return };
        let Some(w) = util::watcher_for::<Instant>(backend) else { return };
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);

        let at = Instant::now() + Duration::from_secs(1);
        // Go submits from a goroutine.
        std::thread::scope(|sc| {
            sc.spawn(|| w.read_timeout(at, &conn, None, at).unwrap());
        });
        util::wait_until(&w, Duration::from_secs(10), "the read deadline", |res| {
            let now = Instant::now();
            assert_eq!(res.op, OpType::Read);
            assert!(util::is_deadline(&res.error), "{res:?}");
            assert!(now >= at, "fired {:?} early", at - now);
            assert!(now - at < SLACK, "fired {:?} late", now - at);
            assert!(matches!(res.buffer, Buffer::None) && res.size == 0, "{res:?}");
            println!("read deadline reported {:?} after its instant", now - at);
            true
        });

        // Go starts a hang-up server here but never uses it; the intended case is
        // `write_deadline_hangup` below.
        write_until_deadline(&w, &conn);
    }

    /// What Go's `TestDeadline` (b) meant to test: chained 1 MiB `write_timeout`s to a server
    /// that accepts and never reads end with `Deadline`, keeping the partial byte count.
    fn write_deadline_hangup(backend) {
        let Some(w) = util::watcher_for::<Instant>(backend) else { return };
        let srv = util::hangup_server();
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);
        write_until_deadline(&w, &conn);
    }

    /// Property 7: a `read_full` that times out keeps what it had gathered: 10 of 100 bytes
    /// arrive, then `Deadline` with size 10 and those bytes in the caller's buffer.
    fn read_full_deadline_keeps_partial(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (mut client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);
        let at = Instant::now() + Duration::from_millis(500);
        w.read_full((), &conn, vec![0; 100], Some(at)).unwrap();
        client.write_all(b"0123456789").unwrap();
        util::wait_until(&w, Duration::from_secs(10), "the read_full deadline", |res| {
            let now = Instant::now();
            assert_eq!(res.op, OpType::ReadFull);
            assert!(util::is_deadline(&res.error), "{res:?}");
            assert!(now >= at, "fired early");
            assert_eq!(res.size, 10);
            assert_eq!(res.data(), b"0123456789");
            assert_eq!(util::user_buf(res.buffer).len(), 100);
            true
        });
        util::expect_quiet(&w, Duration::from_millis(200));
    }

    /// A deadline already in the past on a silent connection fires at once (within the
    /// slack), as `Deadline`, not as an error of submission.
    fn deadline_in_the_past(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (_client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);
        let at = Instant::now() - Duration::from_secs(1);
        let id = w.read_timeout((), &conn, Some(vec![0; 8]), at).unwrap();
        let start = Instant::now();
        util::wait_until(&w, SLACK, "a past deadline", |res| {
            assert_eq!(res.id, id);
            assert!(util::is_deadline(&res.error), "{res:?}");
            true
        });
        println!("past deadline reported after {:?}", start.elapsed());
    }

    /// A deadline is told apart from a cancellation: a read due in an hour that is freed ends
    /// with `ClosedPipe`, and its deadline never fires afterwards.
    fn free_is_not_deadline(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (_client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);
        let short = w.read_timeout((), &conn, None, Instant::now() + Duration::from_millis(200));
        let short = short.unwrap();
        util::wait_until(&w, Duration::from_secs(10), "the short deadline", |res| {
            assert_eq!(res.id, short);
            assert!(util::is_deadline(&res.error), "{res:?}");
            true
        });
        let long = Instant::now() + Duration::from_secs(3600);
        let id = w.read_timeout((), &conn, None, long).unwrap();
        w.free(&conn).unwrap();
        util::wait_until(&w, Duration::from_secs(10), "the freed read", |res| {
            assert_eq!(res.id, id);
            assert!(util::is_closed_pipe(&res.error), "{res:?}");
            true
        });
        util::expect_quiet(&w, Duration::from_millis(300));
    }

    /// Go `TestDeadline1k`: 1024 connections.
    fn deadline_1k(backend) { deadline_par(backend, 1024) }
    /// Go `TestDeadline2k`: 2048 connections.
    fn deadline_2k(backend) { deadline_par(backend, 2048) }
    /// Go `TestDeadline4k`: 4096 connections.
    fn deadline_4k(backend) { deadline_par(backend, 4096) }
    /// Go `TestDeadline8k`: 8192 connections.
    fn deadline_8k(backend) { deadline_par(backend, 8192) }
}
