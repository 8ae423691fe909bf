//! Backend choice and what only a second backend can get wrong: the fallback path (forced
//! epoll, forced io_uring, Auto, io_uring blocked by seccomp as Docker does), idle connections
//! that must hold no swap buffer, a slow consumer with thousands of completions outstanding,
//! and free/close/drop with requests in the kernel.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use gaio::{Backend, Error, OpResult, OpType, Watcher};

/// Whether io_uring must run here: built in (the `io-uring` cargo feature) and allowed by the
/// kernel.
fn uring_enabled() -> bool {
    Backend::Uring.compiled_in()
        && std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .map(|s| s.trim() == "0")
            .unwrap_or(false)
}

/// Collects exactly `n` results, failing after `limit`.
fn collect<C: Send + 'static>(w: &Watcher<C>, n: usize, limit: Duration) -> Vec<OpResult<C>> {
    let start = Instant::now();
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        assert!(
            start.elapsed() < limit,
            "timed out with {} of {n} results",
            v.len()
        );
        v.extend(w.wait_io_timeout(Duration::from_millis(100)).unwrap());
    }
    v
}

#[test]
fn forced_epoll_runs_epoll() {
    let w: Watcher = Watcher::builder().backend(Backend::Epoll).build().unwrap();
    assert_eq!(w.backend(), Backend::Epoll);
}

#[test]
fn forced_uring_runs_where_enabled() {
    let r: gaio::Result<Watcher> = Watcher::builder().backend(Backend::Uring).build();
    if uring_enabled() {
        let w = r.expect("io_uring_disabled is 0, so the uring backend must build");
        assert_eq!(w.backend(), Backend::Uring);
    } else {
        assert!(matches!(r, Err(Error::BackendUnavailable(_))), "{r:?}");
    }
}

/// Without the `io-uring` cargo feature, forcing io_uring is refused with the documented
/// reason and `Auto` runs epoll (with the feature: nothing to check here).
#[test]
fn uring_not_compiled_in_is_refused_by_name() {
    if Backend::Uring.compiled_in() || !cfg!(target_os = "linux") {
        return;
    }
    match Watcher::builder().backend(Backend::Uring).build::<()>() {
        Err(Error::BackendUnavailable(why)) => assert_eq!(
            why,
            "io_uring support not compiled in (cargo feature io-uring)"
        ),
        other => panic!("forced uring without the feature: {other:?}"),
    }
    let auto: Watcher = Watcher::builder().backend(Backend::Auto).build().unwrap();
    assert_eq!(auto.backend(), Backend::Epoll);
}

#[test]
fn auto_picks_uring_where_enabled() {
    let w: Watcher = Watcher::builder().backend(Backend::Auto).build().unwrap();
    let want = if uring_enabled() {
        Backend::Uring
    } else {
        Backend::Epoll
    };
    assert_eq!(w.backend(), want);
}

/// Blocks `io_uring_setup` with EPERM for this thread and the threads it spawns, as Docker's
/// default seccomp profile does.
fn block_io_uring_with_seccomp() {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JEQ_K: u16 = 0x15;
    const BPF_RET_K: u16 = 0x06;
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: PR_SET_NO_NEW_PRIVS takes plain integers; PR_SET_SECCOMP reads `prog`, which
    // points at `filter`, both alive for the call. The filter only affects this thread.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog
            ),
            0,
            "seccomp: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn seccomp_blocked_uring_falls_back_to_epoll() {
    // A thread of its own: the filter stays with it and the threads it spawns.
    std::thread::spawn(|| {
        block_io_uring_with_seccomp();
        let auto: Watcher = Watcher::builder().backend(Backend::Auto).build().unwrap();
        assert_eq!(auto.backend(), Backend::Epoll, "Auto must fall back");
        // The fallback watcher works.
        let (mut c, s) = util::tcp_pair();
        let conn = auto.watch(&s).unwrap();
        auto.read((), &conn, None).unwrap();
        c.write_all(b"x").unwrap();
        let r = collect(&auto, 1, Duration::from_secs(10));
        assert_eq!(r[0].data(), b"x");

        let forced: gaio::Result<Watcher> = Watcher::builder().backend(Backend::Uring).build();
        match forced {
            // Built without the io-uring feature: refused before any syscall.
            Err(Error::BackendUnavailable(why)) if !Backend::Uring.compiled_in() => {
                assert!(why.contains("cargo feature io-uring"), "{why}")
            }
            Err(Error::BackendUnavailable(why)) => {
                assert!(
                    why.contains("not permitted"),
                    "reason should say why: {why}"
                )
            }
            other => panic!("forced uring under seccomp: {other:?}"),
        }
    })
    .join()
    .unwrap();
}

#[test]
fn gaio_backend_variable() {
    // Changing the environment is safe only in a process of its own (nextest's, or the child
    // own_process starts under cargo test): parallel tests read GAIO_BACKEND.
    if !util::own_process("gaio_backend_variable") {
        return;
    }
    std::env::set_var("GAIO_BACKEND", "epoll");
    let w: Watcher = Watcher::new().unwrap();
    assert_eq!(w.backend(), Backend::Epoll);
    std::env::set_var("GAIO_BACKEND", "kqueue");
    assert!(matches!(
        Watcher::<()>::new(),
        Err(Error::InvalidArgument(_))
    ));
    // An explicit choice wins over the variable.
    let w: Watcher = Watcher::builder().backend(Backend::Epoll).build().unwrap();
    assert_eq!(w.backend(), Backend::Epoll);
    std::env::remove_var("GAIO_BACKEND");
}

/// The client ends live in a child process ([`util::ChildClients`], which runs this binary's
/// `client_process` test), so the parent's descriptor limit covers only the watcher's side.
#[test]
#[ignore = "helper process for the many-connection tests, started by them"]
fn client_process() {
    util::client_process_main();
}

/// 10 000 idle connections (or as many as the descriptor limit allows, said on stderr), each
/// with a pending swap read: no swap buffer is held. Then each gets 16 bytes: every read
/// completes, and the buffers come free when the results are dropped.
fn idle_holds_no_buffer(b: Backend) {
    let limit = util::raise_nofile().0 as usize;
    let n = 10_000.min(limit.saturating_sub(200));
    if n < 10_000 {
        eprintln!("descriptor limit {limit}: {n} idle connections instead of 10000");
    }
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = ln.local_addr().unwrap();
    let Some(w) = util::watcher_for::<usize>(b) else {
        return;
    };
    // Accept while the child connects: the backlog is far smaller than n.
    let acceptor = std::thread::spawn(move || {
        (0..n)
            .map(|_| ln.accept().unwrap().0)
            .collect::<Vec<TcpStream>>()
    });
    let mut clients = util::ChildClients::connect(addr, n, 16);
    let mut conns = Vec::with_capacity(n);
    for (i, s) in acceptor.join().unwrap().into_iter().enumerate() {
        let c = w.watch(&s).unwrap();
        drop(s);
        w.read(i, &c, None).unwrap();
        conns.push(c);
    }
    // Make sure every read reached the loop (and the kernel): a deadline-less read on a fresh
    // pair completes only after everything submitted before it on the loop.
    let (mut pc, ps) = util::tcp_pair();
    let probe = w.watch(&ps).unwrap();
    drop(ps);
    w.read(usize::MAX, &probe, None).unwrap();
    pc.write_all(b"p").unwrap();
    let r = collect(&w, 1, Duration::from_secs(20));
    assert_eq!(r[0].context, usize::MAX);
    drop(r);
    let st = w.swap_stats();
    assert_eq!(
        st.buffers_in_use, 0,
        "{b}: idle reads hold swap buffers: {st:?}"
    );
    assert_eq!(st.slices_live, 0);
    eprintln!("{b}: {n} idle connections with pending swap reads, swap {st:?}");

    clients.send();
    let mut got = vec![0usize; n];
    let mut done = 0;
    let start = Instant::now();
    while done < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{b}: {done} of {n}"
        );
        for r in w.wait_io_timeout(Duration::from_millis(100)).unwrap() {
            assert!(r.error.is_none(), "{b}: {:?}", r.error);
            assert!(r.buffer.is_swap());
            assert!(r.data().iter().all(|&x| x == 0x5a));
            got[r.context] += r.size;
            if got[r.context] == 16 {
                done += 1;
            } else {
                w.read(r.context, &r.conn, None).unwrap();
            }
        }
    }
    assert_eq!(
        w.swap_stats().buffers_in_use,
        0,
        "dropped results free the buffers"
    );
    drop(clients);
}

/// 64 connections × 200 writes: 12 800 completions pile up while nobody calls `wait_io`
/// (the peers read every byte first, so every write has completed in the loop). All of them
/// then arrive, each exactly once; none is lost to a full completion queue.
fn slow_consumer(b: Backend) {
    let Some(w) = util::watcher_for::<(usize, usize)>(b) else {
        return;
    };
    let mut readers = Vec::new();
    let mut conns = Vec::new();
    for c in 0..64 {
        let (mut cl, s) = util::tcp_pair();
        let conn = w.watch(&s).unwrap();
        for k in 0..200 {
            w.write((c, k), &conn, vec![(k % 251) as u8; 100]).unwrap();
        }
        conns.push(conn);
        readers.push(std::thread::spawn(move || {
            let mut buf = vec![0u8; 200 * 100];
            cl.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            cl.read_exact(&mut buf).unwrap();
            for k in 0..200 {
                assert!(buf[k * 100..(k + 1) * 100]
                    .iter()
                    .all(|&x| x == (k % 251) as u8));
            }
        }));
    }
    for r in readers {
        r.join().unwrap();
    }
    let res = collect(&w, 64 * 200, Duration::from_secs(30));
    let mut seen = std::collections::HashSet::new();
    for r in &res {
        assert_eq!(r.op, OpType::Write);
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.size, 100);
        assert!(seen.insert(r.context), "duplicate result {:?}", r.context);
    }
    assert!(w
        .wait_io_timeout(Duration::from_millis(50))
        .unwrap()
        .is_empty());
}

/// Requests in the kernel when their connection is freed, and when the watcher closes or is
/// dropped: each ends with exactly one `ClosedPipe` result carrying its buffer and progress;
/// descriptors and threads are gone afterwards.
fn in_flight_teardown(b: Backend) {
    let fds0 = util::fd_count();
    let Some(w) = util::watcher_for::<u32>(b) else {
        return;
    };
    // free: 50 reads (caller and swap buffers) and a 64 MiB write to a peer that never reads.
    let (_c, s) = util::tcp_pair();
    let conn = w.watch(&s).unwrap();
    drop(s);
    for i in 0..50 {
        let buf = if i % 2 == 0 { Some(vec![0; 64]) } else { None };
        w.read(i, &conn, buf).unwrap();
    }
    w.write(1000, &conn, vec![1; 64 << 20]).unwrap();
    w.write(1001, &conn, vec![2; 10]).unwrap();
    // Make sure the big write is in progress (a later op on another conn completes after it
    // was taken by the loop).
    let (mut pc, ps) = util::tcp_pair();
    let probe = w.watch(&ps).unwrap();
    drop(ps);
    w.read(7777, &probe, Some(vec![0; 1])).unwrap();
    pc.write_all(b"!").unwrap();
    collect(&w, 1, Duration::from_secs(10));
    w.free(&conn).unwrap();
    let r = collect(&w, 52, Duration::from_secs(10));
    let mut big = None;
    for x in &r {
        assert!(
            matches!(x.error, Some(Error::ClosedPipe)),
            "{b}: ctx {} {:?}",
            x.context,
            x.error
        );
        if x.context == 1000 {
            assert_eq!(
                x.buffer.as_slice().len(),
                64 << 20,
                "buffer comes back whole"
            );
            big = Some(x.size);
        }
    }
    let big = big.expect("the big write's result");
    assert!(big > 0 && big < 64 << 20, "partial progress kept: {big}");
    // Results hold `Conn` clones, which keep the watcher's wake-up descriptor alive.
    drop(r);

    // close with requests in flight
    let (_c2, s2) = util::tcp_pair();
    let conn2 = w.watch(&s2).unwrap();
    drop(s2);
    for i in 0..100 {
        w.read(i, &conn2, Some(vec![0; 8])).unwrap();
    }
    w.close().unwrap();
    let r = collect(&w, 100, Duration::from_secs(10));
    assert!(r.iter().all(|x| matches!(x.error, Some(Error::ClosedPipe))));
    assert!(matches!(w.wait_io(), Err(Error::WatcherClosed)));
    drop((r, conn, conn2, probe, pc));
    // A joined thread leaves /proc/self/task a moment later: poll for it.
    util::eventually(Duration::from_secs(5), "threads joined by close", || {
        util::gaio_threads().is_empty()
    });
    drop(w);

    // drop with requests in flight
    let Some(w) = util::watcher_for::<u32>(b) else {
        return;
    };
    let (_c3, s3) = util::tcp_pair();
    let conn3 = w.watch(&s3).unwrap();
    drop(s3);
    for i in 0..100 {
        w.read(i, &conn3, None).unwrap();
    }
    drop(w);
    drop(conn3);
    util::eventually(Duration::from_secs(5), "threads joined by drop", || {
        util::gaio_threads().is_empty()
    });
    // The three client ends still open here are `_c`, `_c2`, `_c3`.
    assert_eq!(util::fd_count(), fds0 + 3, "{b}: descriptors left behind");
}

/// A swap read that waits for swap space (every buffer held by a live slice) times out; the
/// caller-buffer read queued behind it then runs at once on data already in the socket, with
/// no new readiness edge and no buffer released.
fn starved_swap_read_then_caller_read(b: Backend) {
    let builder = Watcher::builder().swap_buffer_size(4096).swap_buffers(1);
    let Some(w) = util::build::<u32>(b, builder) else {
        return;
    };
    let (mut c, s) = util::tcp_pair();
    let conn = w.watch(&s).unwrap();
    drop(s);
    // Fill the only swap buffer and keep the slice.
    w.read(1, &conn, None).unwrap();
    c.write_all(&[1u8; 4096]).unwrap();
    let mut held = Vec::new();
    let mut got = 0;
    while got < 4096 {
        let r = collect(&w, 1, Duration::from_secs(10));
        got += r[0].size;
        held.extend(r);
        if got < 4096 {
            w.read(1, &conn, None).unwrap();
        }
    }
    assert_eq!(w.swap_stats().buffers_in_use, 1);
    // This swap read finds no space (or, on io_uring, an empty ring) and times out.
    w.read_timeout(2, &conn, None, Instant::now() + Duration::from_millis(100))
        .unwrap();
    w.read(3, &conn, Some(vec![0; 16])).unwrap();
    c.write_all(b"behind").unwrap();
    let r = collect(&w, 2, Duration::from_secs(10));
    assert_eq!(r[0].context, 2);
    assert!(
        matches!(r[0].error, Some(Error::Deadline)),
        "{b}: {:?}",
        r[0]
    );
    assert_eq!(r[1].context, 3);
    assert_eq!(r[1].data(), b"behind", "{b}");
    assert_eq!(
        w.swap_stats().buffers_in_use,
        1,
        "the held slice is still held"
    );
    drop(held);
    assert_eq!(w.swap_stats().buffers_in_use, 0);
}

/// Two queued reads with the same deadline: the front one (a swap read starved of space)
/// expires, the caller-buffer read behind it then completes on data already there, and its own
/// expiry, collected in the same pass, must be skipped, not acted on twice.
fn same_deadline_behind_starved_read(b: Backend) {
    let builder = Watcher::builder().swap_buffer_size(4096).swap_buffers(1);
    let Some(w) = util::build::<u32>(b, builder) else {
        return;
    };
    let (mut c, s) = util::tcp_pair();
    let conn = w.watch(&s).unwrap();
    drop(s);
    w.read_full(1, &conn, vec![0; 1], None).unwrap();
    // Hold the only swap buffer with a live slice.
    let (mut c2, s2) = util::tcp_pair();
    let other = w.watch(&s2).unwrap();
    drop(s2);
    w.read(9, &other, None).unwrap();
    c2.write_all(&[5u8; 4096]).unwrap();
    c.write_all(b"x").unwrap();
    let mut held = Vec::new();
    let mut got = 0;
    while got < 4096 + 1 {
        for r in collect(&w, 1, Duration::from_secs(10)) {
            got += r.size;
            if r.context == 9 && got < 4097 {
                w.read(9, &other, None).unwrap();
            }
            held.push(r);
        }
    }
    let at = Instant::now() + Duration::from_millis(100);
    w.read_timeout(2, &conn, None, at).unwrap();
    w.read_timeout(3, &conn, Some(vec![0; 16]), at).unwrap();
    c.write_all(b"behind").unwrap();
    let r = collect(&w, 2, Duration::from_secs(10));
    let ctxs: Vec<u32> = r.iter().map(|x| x.context).collect();
    assert_eq!(ctxs, [2, 3], "{b}: {r:?}");
    assert!(
        matches!(r[0].error, Some(Error::Deadline)),
        "{b}: {:?}",
        r[0]
    );
    // The read behind either got the data (served after the first expired) or expired too.
    assert!(
        r[1].error.is_none() || matches!(r[1].error, Some(Error::Deadline)),
        "{b}: {:?}",
        r[1]
    );
    assert!(w
        .wait_io_timeout(Duration::from_millis(100))
        .unwrap()
        .is_empty());
    // The loop is alive.
    w.read(4, &conn, Some(vec![0; 16])).unwrap();
    c.write_all(b"alive").unwrap();
    assert!(collect(&w, 1, Duration::from_secs(10))[0].error.is_none());
    drop(held);
}

backend_tests! {
    fn same_deadline_behind_a_starved_read(backend) {
        same_deadline_behind_starved_read(backend);
    }

    fn idle_connections_hold_no_swap_buffer(backend) {
        let _heavy = util::many_fds_guard();
        idle_holds_no_buffer(backend);
    }

    fn slow_consumer_loses_no_completion(backend) {
        slow_consumer(backend);
    }

    fn free_close_and_drop_with_requests_in_flight(backend) {
        if util::own_process("free_close_and_drop_with_requests_in_flight") {
            in_flight_teardown(backend);
        }
    }

    fn starved_swap_read_does_not_block_the_next_read(backend) {
        starved_swap_read_then_caller_read(backend);
    }
}
