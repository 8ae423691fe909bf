//! Faults, on both backends: the peer resets in the middle of a large write and of a
//! `read_full`, half-closes, or never reads (write deadline); `free` and `close` with thousands
//! of requests in flight; `close` from another thread while `wait_io` blocks; a consumer that
//! stops calling `wait_io` for a while; `RLIMIT_NOFILE` exhausted; submissions from 8 threads
//! at once. In every case each accepted request yields exactly one result with its buffer
//! (DESIGN.md property 1) and nothing leaks (property 4).
//!
//! No test sleeps to synchronise: each waits on an observable event (bytes a peer received,
//! a thread's scheduler state in `/proc`, `swap_stats`), and every wait is bounded.

#[macro_use]
mod util;

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gaio::{Conn, Error, OpResult, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);
const MIB: usize = 1 << 20;

/// Exactly one result within 10 s, and no second one right after.
use util::one;

/// Exactly `n` results within `limit`.
fn collect<C: Send + 'static>(w: &Watcher<C>, n: usize, limit: Duration) -> Vec<OpResult<C>> {
    let mut v = Vec::with_capacity(n);
    if n == 0 {
        return v;
    }
    let rest = util::wait_until(w, limit, format!("{n} results"), |r| {
        v.push(r);
        v.len() == n
    });
    assert!(rest.is_empty(), "more than {n} results: {rest:?}");
    v
}

/// A watched loopback pair: `(peer, conn)`; the watcher's duplicate is the only server-side
/// descriptor.
fn pair<C: Send + 'static>(w: &Watcher<C>) -> (TcpStream, Conn) {
    let (peer, mine) = util::tcp_pair();
    let conn = w.watch(&mine).unwrap();
    drop(mine);
    peer.set_read_timeout(Some(T10)).unwrap();
    peer.set_write_timeout(Some(T10)).unwrap();
    (peer, conn)
}

/// A write and a read through `w` on a fresh pair: the watcher still works.
fn still_works<C: Send + 'static + Default>(w: &Watcher<C>) {
    let (mut peer, conn) = pair(w);
    w.write(C::default(), &conn, b"ping".to_vec()).unwrap();
    let r = one(w, "the write of the liveness check");
    assert!(r.error.is_none(), "{r:?}");
    let mut b = [0u8; 4];
    peer.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"ping");
    peer.write_all(b"pong").unwrap();
    w.read_full(C::default(), &conn, vec![0; 4], None).unwrap();
    let r = one(w, "the read of the liveness check");
    assert!(r.error.is_none(), "{r:?}");
    assert_eq!(r.data(), b"pong");
}

fn errno(e: &Option<Error>) -> Option<i32> {
    e.as_ref().and_then(Error::raw_os_error)
}

/// The peer's receive buffer small, so a large write stays in progress until it reads.
fn small_rcvbuf(s: &TcpStream) {
    socket2::SockRef::from(s)
        .set_recv_buffer_size(64 << 10)
        .unwrap();
}

backend_tests! {
    /// The peer reads 1 MiB of a 64 MiB write, then resets. The write ends with exactly one
    /// result: `EPIPE` or `ECONNRESET`, `size` at least the MiB the peer read and less than
    /// 64 MiB, the whole buffer back. A write submitted after the reset fails the same way.
    fn peer_reset_during_large_write(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, conn) = pair(&w);
        small_rcvbuf(&peer);
        w.write(1, &conn, vec![0xab; 64 * MIB]).unwrap();
        let mut first = vec![0u8; MIB];
        peer.read_exact(&mut first).unwrap();
        assert!(first.iter().all(|&b| b == 0xab));
        util::reset(peer);
        let r = one(&w, "the interrupted write");
        let e = errno(&r.error);
        assert!(e == Some(libc::EPIPE) || e == Some(libc::ECONNRESET), "{backend}: {r:?}");
        assert!(r.size >= MIB && r.size < 64 * MIB, "{backend}: size {}", r.size);
        assert_eq!(util::user_buf(r.buffer).len(), 64 * MIB);
        println!("{backend}: reset during a 64 MiB write: {:?} after {} bytes", r.error, r.size);
        w.write(2, &conn, vec![1; 16]).unwrap();
        let r2 = one(&w, "a write after the reset");
        let e2 = errno(&r2.error);
        assert!(e2 == Some(libc::EPIPE) || e2 == Some(libc::ECONNRESET), "{backend}: {r2:?}");
        assert_eq!(r2.size, 0);
        println!("{backend}: a write after the reset: {:?}", r2.error);
        still_works(&w);
    }

    /// `read_full` of 1 MiB; the peer sends 1000 bytes, then resets. Exactly one result:
    /// `ECONNRESET`, keeping whatever part of the 1000 bytes was read before the reset (in
    /// order), the buffer back. A read after that gets EOF (the error is reported once).
    fn peer_reset_during_read_full(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, conn) = pair(&w);
        w.read_full(1, &conn, vec![0; MIB], None).unwrap();
        let sent = util::random_bytes(1000, 7);
        peer.write_all(&sent).unwrap();
        util::reset(peer);
        let r = one(&w, "the interrupted read_full");
        assert_eq!(errno(&r.error), Some(libc::ECONNRESET), "{backend}: {r:?}");
        assert!(r.size <= 1000, "{r:?}");
        assert_eq!(r.data(), &sent[..r.size], "{backend}: partial data out of order");
        assert_eq!(util::user_buf(r.buffer).len(), MIB);
        println!("{backend}: reset during read_full: {:?} after {} of 1000 bytes", r.error, r.size);
        w.read(2, &conn, None).unwrap();
        let r2 = one(&w, "a read after the reset");
        assert!(matches!(r2.error, Some(Error::Eof)), "{backend}: {r2:?}");
        println!("{backend}: a read after the reset: {:?}", r2.error);
        still_works(&w);
    }

    /// Half-close: the peer sends "abc" and shuts its write side. A pending `read_full` of 10
    /// ends with `Eof` keeping "abc"; later reads get `Eof` at once; writing still works (the
    /// peer reads it); after `free` the peer sees EOF.
    fn peer_half_close(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, conn) = pair(&w);
        w.read_full(1, &conn, vec![0; 10], None).unwrap();
        peer.write_all(b"abc").unwrap();
        peer.shutdown(Shutdown::Write).unwrap();
        let r = one(&w, "read_full at the half-close");
        assert!(matches!(r.error, Some(Error::Eof)), "{backend}: {r:?}");
        assert_eq!(r.data(), b"abc");
        assert_eq!(util::user_buf(r.buffer).len(), 10);
        for i in 2..5 {
            let buf = if i % 2 == 0 { None } else { Some(vec![0; 8]) };
            w.read(i, &conn, buf).unwrap();
            let r = one(&w, "a read after EOF");
            assert!(matches!(r.error, Some(Error::Eof)), "{backend}: {r:?}");
            assert_eq!(r.size, 0);
        }
        w.write(9, &conn, b"still open".to_vec()).unwrap();
        let r = one(&w, "a write to the half-closed peer");
        assert!(r.error.is_none(), "{backend}: {r:?}");
        let mut b = [0u8; 10];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"still open");
        w.free(&conn).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("EOF after free");
        assert!(rest.is_empty());
    }

    /// A peer that never reads: a 64 MiB `write_timeout` due in 300 ms ends with `Deadline`,
    /// not before its instant and within a second of it, with `0 < size < 64 MiB` and the
    /// buffer back. The write queued behind it still runs. The peer then reads exactly the
    /// first `size` bytes of the big buffer followed by the second write, then EOF after
    /// `free`: the reported size is the truth.
    fn write_deadline_peer_never_reads(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, conn) = pair(&w);
        small_rcvbuf(&peer);
        let big = util::random_bytes(64 * MIB, 11);
        let at = Instant::now() + Duration::from_millis(300);
        w.write_timeout(1, &conn, big.clone(), at).unwrap();
        w.write(2, &conn, b"behind".to_vec()).unwrap();
        // The write behind may complete in the same batch (6 bytes can fit once the big
        // write stops) or after the peer reads: take results as they come.
        let mut behind = None;
        let mut first = None;
        util::wait_until(&w, T10, "the write deadline", |r| {
            if r.context == 1 {
                first = Some((r, Instant::now()));
                true
            } else {
                behind = Some(r);
                false
            }
        })
        .into_iter()
        .for_each(|r| behind = Some(r));
        let (r, when) = first.unwrap();
        let late = when.saturating_duration_since(at);
        assert!(matches!(r.error, Some(Error::Deadline)), "{backend}: {r:?}");
        assert!(when >= at, "{backend}: the deadline fired early");
        assert!(late < Duration::from_secs(1), "{backend}: deadline {late:?} late");
        let size = r.size;
        assert!(size > 0 && size < 64 * MIB, "{backend}: size {size}");
        assert_eq!(util::user_buf(r.buffer), big, "the buffer comes back unchanged");
        println!("{backend}: write deadline after {size} bytes, {late:?} late");
        // The peer drains: the partial big write, then "behind".
        let mut got = vec![0u8; size + 6];
        peer.read_exact(&mut got).unwrap();
        assert!(got[..size] == big[..size], "{backend}: the partial write's bytes differ");
        assert_eq!(&got[size..], b"behind");
        let r = behind.unwrap_or_else(|| one(&w, "the write behind the deadline"));
        assert_eq!(r.context, 2);
        assert!(r.error.is_none(), "{r:?}");
        util::expect_quiet(&w, Duration::from_millis(20));
        w.free(&conn).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).expect("EOF after free");
        assert!(rest.is_empty(), "{} bytes more than the results reported", rest.len());
    }

    /// 4 connections with 1200 requests each in flight (1000 reads with caller and swap
    /// buffers, some with deadlines an hour away; 200 writes of 64 KiB to peers that do not
    /// read). Freeing two of them ends their 2400 requests with `ClosedPipe` in order; closing
    /// the watcher ends the other 2400 the same way, then `wait_io` gives `WatcherClosed`.
    /// Every request has exactly one result with its buffer; afterwards no descriptor and no
    /// watcher thread is left.
    fn free_and_close_with_thousands_in_flight(backend) {
        if !util::own_process("free_and_close_with_thousands_in_flight") { return; }
        let fds0 = util::open_fds();
        let threads0 = util::gaio_threads();
        let Some(w) = util::watcher_for::<(usize, usize)>(backend) else { return };
        let mut peers = Vec::new();
        let mut conns = Vec::new();
        let far = Instant::now() + Duration::from_secs(3600);
        let mut lens = BTreeMap::new();
        for c in 0..4 {
            let (peer, conn) = pair(&w);
            small_rcvbuf(&peer);
            for k in 0..1000 {
                let buf = if k % 2 == 0 { None } else { Some(vec![0; 32 + k]) };
                lens.insert((c, k), buf.as_ref().map(Vec::len));
                if k % 3 == 0 {
                    w.read_timeout((c, k), &conn, buf, far).unwrap();
                } else {
                    w.read((c, k), &conn, buf).unwrap();
                }
            }
            for k in 1000..1200 {
                lens.insert((c, k), Some(64 << 10));
                w.write((c, k), &conn, vec![c as u8; 64 << 10]).unwrap();
            }
            peers.push(peer);
            conns.push(conn);
        }
        // Some of the first writes on each connection fit into the socket buffers and
        // complete; every other request ends with `ClosedPipe`. Either way: one result each,
        // the buffer back, and per connection and direction in submission order.
        let mut seen = HashSet::new();
        let mut last: BTreeMap<(usize, bool), usize> = BTreeMap::new();
        let (mut closed, mut completed) = (0usize, 0usize);
        let mut check = |r: OpResult<(usize, usize)>| {
            assert!(seen.insert(r.context), "two results for {:?}", r.context);
            let want = lens[&r.context];
            assert_eq!(r.buffer.as_slice().len(), want.unwrap_or(0), "{r:?}");
            assert!(!r.buffer.is_swap(), "{r:?}");
            match r.error {
                Some(Error::ClosedPipe) => closed += 1,
                None if r.op == OpType::Write && r.size == 64 << 10 => completed += 1,
                _ => panic!("{backend}: {r:?}"),
            }
            let (c, k) = r.context;
            let dir = (c, r.op == OpType::Write);
            if let Some(&prev) = last.get(&dir) {
                assert!(prev < k, "{backend}: {:?} after {prev}", r.context);
            }
            last.insert(dir, k);
            seen.iter().filter(|(c, _)| *c < 2).count() == 2400
        };
        w.free(&conns[0]).unwrap();
        w.free(&conns[1]).unwrap();
        let start = Instant::now();
        let rest = util::wait_until(&w, Duration::from_secs(30), "the freed requests", &mut check);
        rest.into_iter().for_each(|r| {
            check(r);
        });
        println!("{backend}: free of 2 connections with 2400 requests: {:?}", start.elapsed());
        let start = Instant::now();
        w.close().unwrap();
        loop {
            assert!(start.elapsed() < Duration::from_secs(30), "draining after close");
            match w.wait_io_timeout(T10) {
                Ok(b) => {
                    assert!(!b.is_empty(), "wait_io timed out after close");
                    b.for_each(|r| {
                        check(r);
                    });
                }
                Err(Error::WatcherClosed) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let drained = start.elapsed();
        println!(
            "{backend}: close: drained in {drained:?}; {closed} ClosedPipe, {completed} writes \
             completed"
        );
        assert_eq!(seen.len(), 4800);
        drop((peers, conns, w));
        util::eventually(T10, "the watcher threads to exit", || util::gaio_threads() == threads0);
        util::assert_fds(&fds0, fds0.len(), "after free, close and drop");
    }

    /// `close` from one thread while another blocks in `wait_io` (no timeout) with 100 reads
    /// pending: the blocked thread receives the 100 `ClosedPipe` results and then
    /// `Err(WatcherClosed)`; it does not hang. Also with two threads blocked and nothing
    /// pending: both return `WatcherClosed`. "Blocked" is checked, not assumed: the waiting
    /// thread is asleep (state S in `/proc/self/task/<tid>/stat`) before `close` is called.
    fn close_while_wait_io_blocks(backend) {
        for (waiters, pending) in [(1usize, 100usize), (2, 0), (2, 100)] {
            let Some(w) = util::watcher_for::<usize>(backend) else { return };
            let w = Arc::new(w);
            let (_peer, conn) = pair(&w);
            for i in 0..pending {
                let buf = if i % 2 == 0 { None } else { Some(vec![0; 8]) };
                w.read(i, &conn, buf).unwrap();
            }
            let (done_tx, done) = std::sync::mpsc::channel();
            let (tid_tx, tids) = std::sync::mpsc::channel();
            let mut handles = Vec::new();
            for _ in 0..waiters {
                let (w, done_tx, tid_tx) = (w.clone(), done_tx.clone(), tid_tx.clone());
                handles.push(std::thread::spawn(move || {
                    tid_tx.send(util::gettid()).unwrap();
                    let mut got = Vec::new();
                    let end = loop {
                        match w.wait_io() {
                            Ok(batch) => {
                                for r in batch {
                                    got.push((r.context, r.error));
                                }
                            }
                            Err(e) => break e,
                        }
                    };
                    let _ = done_tx.send((got, end));
                }));
            }
            for _ in 0..waiters {
                let tid = tids.recv_timeout(T10).unwrap();
                util::eventually(T10, "the waiter to block in wait_io", || {
                    util::thread_state(tid) == Some('S')
                });
            }
            w.close().unwrap();
            let mut all = Vec::new();
            for _ in 0..waiters {
                let (got, end) = done.recv_timeout(T10).unwrap_or_else(|_| {
                    panic!("{backend}: a thread blocked in wait_io did not return after close")
                });
                assert!(matches!(end, Error::WatcherClosed), "{backend}: {end:?}");
                all.extend(got);
            }
            // Each waiter has sent its outcome and is returning: join it, so that no thread
            // (and no watcher handle) outlives the test.
            for h in handles {
                h.join().unwrap();
            }
            assert_eq!(all.len(), pending, "{backend}: results delivered after close");
            let ids: HashSet<usize> = all.iter().map(|(c, _)| *c).collect();
            assert_eq!(ids.len(), pending, "a result delivered twice");
            assert!(all.iter().all(|(_, e)| matches!(e, Some(Error::ClosedPipe))));
            println!("{backend}: {waiters} waiter(s), {pending} pending: all returned");
        }
    }

    /// A consumer that stops calling `wait_io`: 100 connections, each with a 4 KiB write, a
    /// swap read and then a read with a deadline 50 ms out. Nobody calls `wait_io` until every
    /// write has reached its peer, every swap read holds its data (all 100 slices live in the
    /// queue, by `swap_stats`) and the deadlines have passed. Then all 300 results arrive,
    /// each exactly once, with the right bytes: results wait, they do not vanish.
    fn consumer_pauses(backend) {
        const N: usize = 100;
        let Some(w) = util::watcher_for::<(usize, u8)>(backend) else { return };
        let mut peers = Vec::new();
        let at = Instant::now() + Duration::from_millis(50);
        for i in 0..N {
            let (peer, conn) = pair(&w);
            w.write((i, 0), &conn, util::message(i, 4096)).unwrap();
            w.read((i, 1), &conn, None).unwrap();
            w.read_timeout((i, 2), &conn, Some(vec![0; 16]), at).unwrap();
            peers.push((peer, conn));
        }
        for (i, (peer, _)) in peers.iter_mut().enumerate() {
            let mut got = vec![0u8; 4096];
            peer.read_exact(&mut got).unwrap();
            assert!(got == util::message(i, 4096), "connection {i}: wrong bytes");
            peer.write_all(&util::message(i + 1000, 100)).unwrap();
        }
        util::eventually(T10, "100 swap reads holding their data", || {
            w.swap_stats().slices_live == N
        });
        util::eventually(T10, "the deadlines to pass", || Instant::now() > at);
        let mut seen = HashSet::new();
        let res = collect(&w, 3 * N, T10);
        for r in &res {
            assert!(seen.insert(r.context), "{backend}: twice {:?}", r.context);
            let (i, k) = r.context;
            match k {
                0 => assert!(r.error.is_none() && r.size == 4096, "{r:?}"),
                1 => {
                    assert!(r.error.is_none(), "{r:?}");
                    assert!(r.buffer.is_swap());
                    assert_eq!(r.data(), &util::message(i + 1000, 100)[..], "conn {i}");
                }
                _ => {
                    assert!(util::is_deadline(&r.error), "{backend}: {r:?}");
                    assert_eq!(r.size, 0);
                }
            }
        }
        drop(res);
        assert_eq!(w.swap_stats().slices_live, 0);
        util::expect_quiet(&w, Duration::from_millis(50));
    }

    /// `RLIMIT_NOFILE` exhausted: with the soft limit lowered and every descriptor number
    /// taken, `watch` fails with `Io(EMFILE)`, `connect` is refused with `Io(EMFILE)` and its
    /// context back, and building a second watcher fails with a typed error; none of them
    /// leaves a descriptor behind. Connections watched before keep working meanwhile (a
    /// request needs no descriptor). Once descriptors are free again, `watch` works.
    fn nofile_exhausted(backend) {
        if !util::own_process("nofile_exhausted") { return; }
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut old_peer, old_conn) = pair(&w);
        let (mut peer, mine) = util::tcp_pair();
        let fds0 = util::open_fds();
        let (soft0, _) = util::nofile();
        let max_fd = *fds0.keys().max().unwrap() as libc::rlim_t;
        util::set_nofile_soft(max_fd + 32);
        let mut fillers = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(f) => fillers.push(f),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    break;
                }
            }
            assert!(fillers.len() < 1000, "the lowered limit does not apply");
        }
        // Listing /proc/self/fd needs a descriptor: free one number for each snapshot.
        let snapshot = |fillers: &mut Vec<std::fs::File>| {
            drop(fillers.pop());
            let fds = util::open_fds();
            fillers.push(std::fs::File::open("/dev/null").expect("the freed number"));
            fds
        };
        let full = snapshot(&mut fillers);
        match w.watch(&mine) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}"),
            other => panic!("{backend}: watch without a free descriptor: {other:?}"),
        }
        match w.connect(7, peer.local_addr().unwrap(), None) {
            Err(e) => {
                assert_eq!(e.error.raw_os_error(), Some(libc::EMFILE), "{e:?}");
                assert_eq!(e.context, 7);
            }
            Ok(id) => panic!("{backend}: connect without a free descriptor accepted: {id:?}"),
        }
        match Watcher::builder().backend(backend).build::<u32>() {
            Err(Error::Io(e)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{backend}: {e}");
                println!("{backend}: building a watcher without a free descriptor: Io({e})");
            }
            Err(e) => panic!("{backend}: building a watcher without a free descriptor: {e:?}"),
            Ok(_) => panic!("{backend}: a watcher was built without a free descriptor"),
        }
        let now = snapshot(&mut fillers);
        assert_eq!(now, full, "{backend}: the failed calls changed the open descriptors");
        // The connection watched before still works: requests need no descriptor.
        w.write(1, &old_conn, b"still".to_vec()).unwrap();
        let r = one(&w, "a write while descriptors are exhausted");
        assert!(r.error.is_none(), "{r:?}");
        let mut b = [0u8; 5];
        old_peer.read_exact(&mut b).unwrap();
        old_peer.write_all(b"alive").unwrap();
        w.read(2, &old_conn, None).unwrap();
        let r = one(&w, "a read while descriptors are exhausted");
        assert_eq!(r.data(), b"alive", "{r:?}");
        drop(r);
        // Free descriptors again: watch works.
        drop(fillers);
        util::set_nofile_soft(soft0);
        let conn = w.watch(&mine).expect("watch once descriptors are free");
        drop(mine);
        w.write(3, &conn, b"back".to_vec()).unwrap();
        assert!(one(&w, "the write after recovery").error.is_none());
        let mut b = [0u8; 4];
        peer.set_read_timeout(Some(T10)).unwrap();
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"back");
        w.free(&conn).unwrap();
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        drop(peer);
        // `mine` and `peer` are closed now, and the watcher's duplicate of `mine` with `conn`.
        util::assert_fds(&fds0, fds0.len() - 2, "after recovery");
    }

    /// Submissions from 8 threads at once on 4 shared connections: each thread writes 500
    /// 64-byte records (thread, connection, sequence number) and submits 20 `read_full`s of
    /// 64 bytes, while two other threads consume results with `wait_io`. Every request yields
    /// exactly one result, to exactly one consumer; each peer receives every record written
    /// to it once, and each thread's records in its submission order; the peers' 64-byte
    /// records reach the reads once each.
    fn submissions_from_8_threads(backend) {
        const THREADS: usize = 8;
        const WRITES: usize = 500;
        const READS: usize = 20;
        const REC: usize = 64;
        let Some(w) = util::watcher_for::<(usize, usize)>(backend) else { return };
        let mut peers = Vec::new();
        let mut conns = Vec::new();
        for _ in 0..4 {
            let (peer, conn) = pair(&w);
            peers.push(peer);
            conns.push(conn);
        }
        let total = THREADS * (WRITES + READS);
        let per_conn_bytes = THREADS * WRITES / 4 * REC;
        let per_conn_reads = THREADS * READS / 4;
        let record = |t: usize, c: usize, k: usize| -> Vec<u8> {
            let mut r = util::message(t * 1_000_003 + k, REC);
            r[0] = t as u8;
            r[1] = c as u8;
            r[2..6].copy_from_slice(&(k as u32).to_le_bytes());
            r
        };
        let seen = Mutex::new(HashSet::new());
        let count = AtomicUsize::new(0);
        let read_data: Mutex<Vec<Vec<Vec<u8>>>> = Mutex::new(vec![Vec::new(); 4]);
        let failure: Mutex<Option<String>> = Mutex::new(None);
        std::thread::scope(|s| {
            // Peers: read every record, then send their own records for the reads.
            let mut peer_threads = Vec::new();
            for (c, mut peer) in peers.drain(..).enumerate() {
                peer_threads.push(s.spawn(move || {
                    let mut got = vec![0u8; per_conn_bytes];
                    peer.read_exact(&mut got).unwrap();
                    for k in 0..per_conn_reads {
                        peer.write_all(&util::message(c * 7919 + k, REC)).unwrap();
                    }
                    (got, peer)
                }));
            }
            // Consumers.
            for _ in 0..2 {
                s.spawn(|| {
                    let start = Instant::now();
                    while count.load(Ordering::Acquire) < total {
                        if start.elapsed() > Duration::from_secs(30) {
                            *failure.lock().unwrap() = Some("consumers timed out".into());
                            return;
                        }
                        let batch = w.wait_io_timeout(Duration::from_millis(50)).unwrap();
                        for r in batch {
                            if let Some(e) = &r.error {
                                *failure.lock().unwrap() = Some(format!("{:?}: {e:?}", r.context));
                            }
                            if !seen.lock().unwrap().insert(r.context) {
                                *failure.lock().unwrap() = Some(format!("twice {:?}", r.context));
                            }
                            if r.op == OpType::ReadFull {
                                let c = r.context.0 % 4;
                                read_data.lock().unwrap()[c].push(r.data().to_vec());
                            }
                            count.fetch_add(1, Ordering::AcqRel);
                        }
                    }
                });
            }
            // Submitters.
            for t in 0..THREADS {
                let (w, conns) = (&w, &conns);
                s.spawn(move || {
                    for k in 0..WRITES {
                        let c = (t + k) % 4;
                        w.write((t, k), &conns[c], record(t, c, k)).unwrap();
                        if k % (WRITES / READS) == 0 {
                            let j = WRITES + k / (WRITES / READS);
                            // Reads of thread t go to connection t % 4 (the context's first
                            // field modulo 4 names it for the consumer).
                            w.read_full((t, j), &conns[t % 4], vec![0; REC], None).unwrap();
                        }
                    }
                });
            }
            for (c, h) in peer_threads.into_iter().enumerate() {
                let (got, _peer) = h.join().unwrap();
                let mut next: BTreeMap<usize, usize> = BTreeMap::new();
                let mut recs = HashSet::new();
                for r in got.chunks(REC) {
                    let t = r[0] as usize;
                    assert_eq!(r[1] as usize, c, "{backend}: a record on the wrong connection");
                    let k = u32::from_le_bytes(r[2..6].try_into().unwrap()) as usize;
                    assert_eq!(r, &record(t, c, k)[..], "{backend}: record ({t}, {k}) corrupt");
                    assert!(recs.insert((t, k)), "record ({t}, {k}) twice");
                    if let Some(&prev) = next.get(&t) {
                        assert!(k > prev, "{backend}: thread {t}'s records out of order");
                    }
                    next.insert(t, k);
                }
                assert_eq!(recs.len(), THREADS * WRITES / 4);
            }
        });
        if let Some(f) = failure.into_inner().unwrap() {
            panic!("{backend}: {f}");
        }
        assert_eq!(count.load(Ordering::Acquire), total);
        assert_eq!(seen.into_inner().unwrap().len(), total);
        for (c, reads) in read_data.into_inner().unwrap().into_iter().enumerate() {
            assert_eq!(reads.len(), per_conn_reads);
            let mut want: Vec<Vec<u8>> =
                (0..per_conn_reads).map(|k| util::message(c * 7919 + k, REC)).collect();
            let mut got = reads;
            want.sort();
            got.sort();
            assert!(got == want, "{backend}: connection {c}: the reads' records differ");
        }
        util::expect_quiet(&w, Duration::from_millis(50));
    }
}
