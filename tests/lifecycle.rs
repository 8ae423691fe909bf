//! Lifecycle: free, dropping the last handle (Go's GC finalizer), close, dropping the watcher;
//! exactly one result per accepted submission through all of them (DESIGN.md property 1), and
//! no descriptor or thread left behind (property 4).
//!
//! Ports of Go gaio's `TestSocketClose`, `TestGC`, `TestDoubleClose`, `TestWaitIOAfterClose`,
//! `TestReadWriteAfterClose` and `TestFree` (research/gaio.md §3.2 items 8, 13-16, 20), plus
//! §3.5 (b) and (d), and leak tests.
//!
//! The leak tests count `/proc/self/fd` and `/proc/self/task`, so they need a process of their
//! own: cargo-nextest's default (one process per test); under plain `cargo test` each re-runs
//! itself in a child process (`util::own_process`). They compare snapshots taken within the
//! test, so descriptors the harness holds do not matter.

#[macro_use]
mod util;

use std::collections::HashSet;
use std::io::Read;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gaio::{Buffer, Conn, Error, GcStats, OpResult, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);

/// Connections per leak test.
const N: usize = 64;

/// `w.gc()` as `(found, closed)` (`GcStats` is `#[non_exhaustive]`: it cannot be built here).
fn gc_counts<C: Send + 'static>(w: &Watcher<C>) -> (u64, u64) {
    let g = w.gc();
    (g.found, g.closed)
}

/// `n` loopback pairs with the server side taken over by `w`: `(client peers, conns)`.
fn watched_pairs<C: Send + 'static>(w: &Watcher<C>, n: usize) -> (Vec<TcpStream>, Vec<Conn>) {
    let mut peers = Vec::with_capacity(n);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let (c, s) = util::tcp_pair();
        conns.push(w.watch(&s).unwrap());
        drop(s); // the watcher's duplicate is now the only server-side descriptor
        peers.push(c);
    }
    (peers, conns)
}

/// Takes results after `close` until `WatcherClosed`; each batch must be non-empty.
fn drain_after_close<C: Send + 'static>(w: &Watcher<C>) -> Vec<OpResult<C>> {
    let mut out = Vec::new();
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < T10, "draining after close did not end");
        match w.wait_io_timeout(T10) {
            Ok(b) => {
                assert!(
                    !b.is_empty(),
                    "wait_io timed out after close instead of WatcherClosed"
                );
                out.extend(b);
            }
            Err(Error::WatcherClosed) => return out,
            Err(e) => panic!("wait_io after close: {e}"),
        }
    }
}

/// Pending requests on `conns` for the close and drop tests: a read on each (swap and
/// caller buffers alternating) and one 64 MiB write on the first, which the peer never reads,
/// so it stays pending with partial progress. Returns how many were accepted.
fn submit_pending(w: &Watcher<usize>, conns: &[Conn]) -> usize {
    for (i, c) in conns.iter().enumerate() {
        let buf = if i % 2 == 0 { None } else { Some(vec![0; 32]) };
        w.read(i, c, buf).unwrap();
    }
    w.write(usize::MAX, &conns[0], vec![0xab; 64 << 20])
        .unwrap();
    conns.len() + 1
}

/// Checks the results of [`submit_pending`] after close: one per request, all `ClosedPipe`,
/// the caller buffers back, the write with partial progress.
fn check_closed_pipe(results: Vec<OpResult<usize>>, n: usize) {
    assert_eq!(results.len(), n + 1, "one result per pending request");
    let mut seen = HashSet::new();
    for r in results {
        assert!(util::is_closed_pipe(&r.error), "{r:?}");
        assert!(
            seen.insert(r.context),
            "two results for request {}",
            r.context
        );
        if r.context == usize::MAX {
            assert_eq!(r.op, OpType::Write);
            assert!(r.size < 64 << 20, "{r:?}");
            assert_eq!(util::user_buf(r.buffer).len(), 64 << 20);
        } else if r.context % 2 == 0 {
            assert!(matches!(r.buffer, Buffer::None), "{r:?}");
        } else {
            assert_eq!(util::user_buf(r.buffer).len(), 32);
        }
    }
}

/// Expects the watcher threads of this process to be exactly `expected` (by tid and name).
/// A joined thread can linger in /proc for a moment, so this polls, bounded.
fn expect_threads(expected: &[(i32, String)], when: &str) {
    util::eventually(T10, format!("the watcher threads {when}"), || {
        util::gaio_threads() == expected
    });
}

backend_tests! {
    /// Go `TestDoubleClose`: closing twice is fine.
    fn double_close(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        w.close().unwrap();
        w.close().unwrap();
    }

    /// Go `TestWaitIOAfterClose`: `wait_io` after close (nothing pending) gives
    /// `WatcherClosed`, as does `wait_io_timeout`, at once.
    fn wait_io_after_close(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        w.close().unwrap();
        assert!(matches!(w.wait_io(), Err(Error::WatcherClosed)));
        let start = Instant::now();
        assert!(matches!(w.wait_io_timeout(T10), Err(Error::WatcherClosed)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    /// Go `TestReadWriteAfterClose`: after close, submissions are refused with
    /// `WatcherClosed`, context and buffer handed back; so are `watch` and `free`.
    fn read_write_after_close(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        w.close().unwrap();
        let e = w.read("r", &conn, Some(vec![1])).unwrap_err();
        assert!(matches!(e.error, Error::WatcherClosed), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), ("r", Some(vec![1])));
        let e = w.write("w", &conn, vec![2]).unwrap_err();
        assert!(matches!(e.error, Error::WatcherClosed), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), ("w", Some(vec![2])));
        let e = w.read_full("rf", &conn, vec![3], None).unwrap_err();
        assert!(matches!(e.error, Error::WatcherClosed), "{e:?}");
        assert!(matches!(w.watch(&client), Err(Error::WatcherClosed)));
        assert!(matches!(w.free(&conn), Err(Error::WatcherClosed)));
    }

    /// Go `TestFree`: write "hello", wait for it, `free` returns Ok. Go then checks that its
    /// (already closed) original conn fails to read, which passes trivially. Here the check is
    /// real: the watcher's descriptor was the only one, so after `free` the peer reads "hello"
    /// and then EOF.
    fn free(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        w.write((), &conn, b"hello".to_vec()).unwrap();
        util::wait_until(&w, T10, "the write", |res| {
            assert!(res.error.is_none(), "{res:?}");
            true
        });
        w.free(&conn).unwrap();
        assert!(conn.is_freed());
        peer.set_read_timeout(Some(T10)).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("EOF after free");
        assert_eq!(got, b"hello");
    }

    /// research §3.5 (d): Go's `Free` on a conn it never saw registers it (and closes the
    /// caller's conn). A `Conn` only exists after `watch`, so the port is: freeing a
    /// connection that never had a request releases it (the peer sees EOF), freeing it again
    /// is a no-op, and every later submission is refused with `ConnClosed`, context and buffer
    /// back, with no result.
    fn free_twice_is_noop(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        w.free(&conn).unwrap();
        w.free(&conn).unwrap();
        assert!(conn.is_freed() && conn.clone().is_freed());
        let e = w.read(1, &conn, Some(vec![9; 4])).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), (1, Some(vec![9; 4])));
        let e = w.read(2, &conn, None).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
        let e = w.write(3, &conn, vec![1]).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec), Some(vec![1]));
        let e = w.read_timeout(4, &conn, None, Instant::now() + T10).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
        let e = w.read_full(5, &conn, vec![0; 2], None).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
        peer.set_read_timeout(Some(T10)).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("EOF after free");
        assert!(got.is_empty());
        util::expect_quiet(&w, Duration::from_millis(200));
    }

    /// research §3.5 (b): `free` with two pending reads (one with a deadline an hour out)
    /// gives two results, in order, each `ClosedPipe` with size 0 and its context; the
    /// caller's buffer comes back, the swap read has no memory. The deadline never fires
    /// later and nothing comes twice.
    fn free_pending_reads(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (_peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        let a = w
            .read_timeout("a", &conn, Some(vec![0; 8]), Instant::now() + Duration::from_secs(3600))
            .unwrap();
        let b = w.read("b", &conn, None).unwrap();
        w.free(&conn).unwrap();
        let mut got = Vec::new();
        let rest = util::wait_until(&w, T10, "two freed reads", |res| {
            got.push(res);
            got.len() == 2
        });
        assert!(rest.is_empty(), "{rest:?}");
        for r in &got {
            assert!(util::is_closed_pipe(&r.error), "{r:?}");
            assert_eq!(r.size, 0);
        }
        // Queue order, as in Go, on both backends (io_uring cancels the read in the kernel
        // first and ends the one behind it when that CQE is in).
        assert_eq!([got[0].id, got[1].id], [a, b]);
        let mut got = got.into_iter();
        let ra = got.next().unwrap();
        assert_eq!(ra.context, "a");
        assert_eq!(util::user_buf(ra.buffer).len(), 8);
        let rb = got.next().unwrap();
        assert_eq!(rb.context, "b");
        assert!(matches!(rb.buffer, Buffer::None), "{rb:?}");
        util::expect_quiet(&w, Duration::from_millis(300));
    }

    /// Go `TestSocketClose`: on the completed write, `free` the connection and submit a read
    /// on it. Go reports the read asynchronously ("use of closed network connection"); here it
    /// is refused at once with `ConnClosed`, the buffer and context handed back.
    fn socket_close(backend) {
        let Some(srv) = util::echo_server(backend, 1024) else { return };
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);
        w.write("write", &conn, b"hello world".to_vec()).unwrap();
        util::wait_until(&w, T10, "the write", |res| {
            assert_eq!(res.op, OpType::Write);
            assert!(res.error.is_none(), "{res:?}");
            w.free(&res.conn).unwrap();
            let e = w.read("read", &res.conn, Some(vec![0; 11])).unwrap_err();
            assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
            assert_eq!((e.context, e.buffer.map(|b| b.len())), ("read", Some(11)));
            true
        });
        util::expect_quiet(&w, Duration::from_millis(200));
    }

    /// `close` with requests pending: every one completes with `ClosedPipe` (the caller
    /// buffers back, a half-done 64 MiB write keeping its partial size), then `wait_io` gives
    /// `WatcherClosed`.
    fn close_fails_pending_requests(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (_peers, conns) = watched_pairs(&w, 8);
        let n = submit_pending(&w, &conns);
        w.close().unwrap();
        check_closed_pipe(drain_after_close(&w), n - 1);
    }

    /// Property 1 against `free`: a thread submits reads on one connection as fast as it can
    /// while the test frees it. Every accepted read yields exactly one result (`ClosedPipe`
    /// if it was pending at the free, `ConnClosed` if it reached the loop after it); refused
    /// ones (`ConnClosed`) yield none.
    fn free_races_submissions(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (_peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        let accepted = AtomicUsize::new(0);
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200_000 {
                    let buf = if i % 2 == 0 { None } else { Some(vec![0; 4]) };
                    match w.read(i, &conn, buf) {
                        Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            assert!(matches!(e.error, Error::ConnClosed), "{e:?}");
                            return;
                        }
                    };
                    if i == 1000 {
                        started_tx.send(()).unwrap();
                    }
                }
            });
            started.recv_timeout(T10).expect("the submitting thread started");
            w.free(&conn).unwrap();
        });
        let n = accepted.load(Ordering::Relaxed);
        let mut seen = HashSet::new();
        let (mut closed_pipe, mut conn_closed) = (0, 0);
        util::wait_until(&w, Duration::from_secs(30), format!("{n} results"), |res| {
            assert!(seen.insert(res.context), "two results for read {}", res.context);
            match res.error {
                Some(Error::ClosedPipe) => closed_pipe += 1,
                Some(Error::ConnClosed) => conn_closed += 1,
                ref e => panic!("unexpected {e:?}"),
            }
            seen.len() == n
        });
        util::expect_quiet(&w, Duration::from_millis(300));
        println!("{n} accepted: {closed_pipe} ClosedPipe, {conn_closed} ConnClosed");
    }

    /// Property 1 against `close`: a thread submits reads as fast as it can while the test
    /// closes the watcher. Every accepted read yields exactly one result (`ClosedPipe`),
    /// collected after close, then `WatcherClosed`.
    fn close_races_submissions(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (_peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        let accepted = AtomicUsize::new(0);
        let (started_tx, started) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200_000 {
                    match w.read(i, &conn, None) {
                        Ok(_) => accepted.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            assert!(matches!(e.error, Error::WatcherClosed), "{e:?}");
                            return;
                        }
                    };
                    if i == 1000 {
                        started_tx.send(()).unwrap();
                    }
                }
            });
            started.recv_timeout(T10).expect("the submitting thread started");
            w.close().unwrap();
        });
        let n = accepted.load(Ordering::Relaxed);
        let results = drain_after_close(&w);
        let mut seen = HashSet::new();
        for r in &results {
            assert!(util::is_closed_pipe(&r.error), "{r:?}");
            assert!(seen.insert(r.context), "two results for read {}", r.context);
        }
        assert_eq!(results.len(), n, "accepted {n}, got {} results", results.len());
    }

    /// Go `TestGC`: 200 threads each dial the echo server, take the connection over and write
    /// 1 KiB, keeping no handle. Once the 200 write results are dropped (their handles were the
    /// last), the loop must have released all 200: `gc()` reports found == closed == 200. Go
    /// needs forced GCs and polling; here drops are deterministic, and a probe write through
    /// the loop (which handles messages in order) is the barrier.
    fn gc(backend) {
        const PAR: usize = 200;
        let Some(srv) = util::echo_server(backend, 1024) else { return };
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let mut probe = util::Probe::new(&w);
        std::thread::scope(|s| {
            for _ in 0..PAR {
                s.spawn(|| {
                    let st = util::dial(srv.addr);
                    let c = w.watch(&st).unwrap();
                    drop(st);
                    w.write((), &c, vec![0; 1024]).unwrap();
                });
            }
        });
        let mut n = 0;
        util::wait_until_or(&w, T10, "200 writes", || srv.failure(), |res| {
            assert!(res.error.is_none(), "{res:?}");
            n += 1;
            n == PAR
        });
        let others = probe.sync(&w, ());
        assert!(others.is_empty(), "{others:?}");
        assert_eq!(gc_counts(&w), (PAR as u64, PAR as u64));
    }

    /// A pending request holds its connection: dropping the user's last handle while a read
    /// waits releases nothing (`gc().found` stays 0, the descriptor stays open); when the read
    /// completes (the peer closes: EOF) and its result is dropped, the connection is released.
    /// In a process of its own: it checks a descriptor number, which another test's socket
    /// could take over in between under plain `cargo test`.
    fn pending_request_keeps_conn(backend) {
        if !util::own_process("pending_request_keeps_conn") { return; }
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let mut probe = util::Probe::new(&w);
        let (peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        let fd = conn.raw_fd();
        w.read((), &conn, None).unwrap();
        drop(conn);
        assert!(probe.sync(&w, ()).is_empty());
        assert_eq!(gc_counts(&w), (0, 0));
        assert!(util::fd_is_open(fd));
        drop(peer);
        util::wait_until(&w, T10, "EOF", |res| {
            assert!(matches!(res.error, Some(Error::Eof)), "{res:?}");
            true
        });
        assert!(probe.sync(&w, ()).is_empty());
        assert_eq!(gc_counts(&w), (1, 1));
        assert!(!util::fd_is_open(fd), "the released connection's descriptor is still open");
    }

    /// No leak after `free`: 64 connections with a pending read each; after freeing them
    /// (and a probe barrier) every read has its `ClosedPipe`, the watcher's 64 descriptors are
    /// closed, and the watcher threads are the same.
    fn no_leak_after_free(backend) {
        if !util::own_process("no_leak_after_free") { return; }
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let mut probe = util::Probe::new(&w);
        let threads = util::gaio_threads();
        assert_eq!(threads.len(), util::threads_per_watcher(backend), "{threads:?}");
        let before = util::open_fds();
        let (peers, conns) = watched_pairs(&w, N);
        for (i, c) in conns.iter().enumerate() {
            w.read(i, c, Some(vec![0; 16])).unwrap();
        }
        util::assert_fds(&before, before.len() + 2 * N, "with 64 connections");
        for c in &conns {
            w.free(c).unwrap();
        }
        // io_uring ends an in-flight read by cancelling it, so the results (and the closes)
        // may come after the probe: wait for them first, then use the probe as the barrier.
        let mut n = 0;
        util::wait_until(&w, T10, "64 ClosedPipe results", |res| {
            assert!(util::is_closed_pipe(&res.error), "{res:?}");
            n += 1;
            n == N
        });
        assert!(probe.sync(&w, usize::MAX).is_empty());
        util::assert_fds(&before, before.len() + N, "after free (the peers are still open)");
        drop(peers);
        util::assert_fds(&before, before.len(), "after free and closing the peers");
        assert_eq!(w.gc(), GcStats::default(), "freed connections are not GC'd");
        drop(conns);
        assert!(probe.sync(&w, usize::MAX).is_empty());
        assert_eq!(w.gc(), GcStats::default(), "dropping freed handles counts nothing");
        expect_threads(&threads, "after free");
    }

    /// No leak after dropping the last handle (Go's GC finalizer): 64 connections, one
    /// completed write each, every handle dropped: `gc()` found == closed == 64 and the 64
    /// descriptors are closed.
    fn no_leak_after_last_handle_dropped(backend) {
        if !util::own_process("no_leak_after_last_handle_dropped") { return; }
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let mut probe = util::Probe::new(&w);
        let threads = util::gaio_threads();
        let before = util::open_fds();
        let (peers, conns) = watched_pairs(&w, N);
        for (i, c) in conns.iter().enumerate() {
            w.write(i, c, vec![i as u8]).unwrap();
        }
        drop(conns); // the pending writes hold the connections
        let mut n = 0;
        util::wait_until(&w, T10, "64 writes", |res| {
            assert!(res.error.is_none(), "{res:?}");
            n += 1;
            n == N // each result, the last handle of its connection, is dropped here
        });
        assert!(probe.sync(&w, usize::MAX).is_empty());
        assert_eq!(gc_counts(&w), (N as u64, N as u64));
        util::assert_fds(&before, before.len() + N, "after dropping every handle");
        drop(peers);
        util::assert_fds(&before, before.len(), "after dropping every handle and the peers");
        expect_threads(&threads, "after the handles were dropped");
    }

    /// No leak after `close`: with 64 connections and requests pending, `close` completes
    /// them all (`ClosedPipe`), joins the threads and closes every descriptor the watcher had,
    /// its own included (io_uring's wake-up eventfd too), while the watcher value and the
    /// user's handles still exist.
    fn no_leak_after_close(backend) {
        if !util::own_process("no_leak_after_close") { return; }
        let threads0 = util::gaio_threads();
        let fds0 = util::open_fds();
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let threads = util::gaio_threads();
        assert_eq!(threads.len(), threads0.len() + util::threads_per_watcher(backend));
        let (peers, conns) = watched_pairs(&w, N);
        let n = submit_pending(&w, &conns);
        w.close().unwrap();
        expect_threads(&threads0, "after close");
        check_closed_pipe(drain_after_close(&w), n - 1);
        drop(peers);
        util::assert_fds(&fds0, fds0.len(), "after close (handles still alive)");
        drop(conns);
        drop(w);
        util::assert_fds(&fds0, fds0.len(), "after dropping the closed watcher");
    }

    /// No leak after dropping the watcher without `close`: the drop does what close does
    /// (threads joined, every descriptor closed); handles and a swap slice
    /// that outlive the watcher stay valid and are dropped later without harm, and then every
    /// descriptor is gone.
    fn no_leak_after_watcher_drop(backend) {
        if !util::own_process("no_leak_after_watcher_drop") { return; }
        let threads0 = util::gaio_threads();
        let fds0 = util::open_fds();
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (mut peers, conns) = watched_pairs(&w, N);
        // One swap slice that will outlive the watcher.
        std::io::Write::write_all(&mut peers[0], b"outlives").unwrap();
        w.read(0, &conns[0], None).unwrap();
        let mut slice = None;
        util::wait_until(&w, T10, "the swap read", |res| {
            assert!(res.error.is_none(), "{res:?}");
            slice = Some(res.buffer);
            true
        });
        submit_pending(&w, &conns);
        drop(w);
        expect_threads(&threads0, "after dropping the watcher");
        drop(peers);
        util::assert_fds(&fds0, fds0.len(), "after dropping the watcher (handles alive)");
        match slice {
            Some(Buffer::Swap(s)) => assert_eq!(&s[..], b"outlives"),
            other => panic!("expected a swap slice, got {other:?}"),
        }
        drop(conns);
        util::assert_fds(&fds0, fds0.len(), "after dropping the handles too");
    }
}
