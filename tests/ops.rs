//! Operations beyond Go's gaio: accept and connect as requests, cancellation by id, raw
//! descriptors (pipes, eventfd, timerfd, Unix sockets; gaio #15) and detach (gaio #11).

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use gaio::{Error, OpType};

const T10: Duration = Duration::from_secs(10);

use util::one;

use util::pipe;

/// A port on loopback with nothing listening (bound, then closed).
fn dead_port() -> SocketAddr {
    let ln = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = ln.local_addr().unwrap();
    drop(ln);
    a
}

backend_tests! {
    /// 1000 connections accepted through `accept` requests on one `wait_io` loop; each
    /// accepted connection works at once (its first read gets the client's bytes).
    fn accept_1000(backend) {
        let _heavy = util::many_fds_guard();
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let ln = util::listen();
        let addr = ln.local_addr().unwrap();
        let lconn = w.watch(&ln).unwrap();
        drop(ln);
        const N: u32 = 1000;
        for i in 0..8 {
            w.accept(i, &lconn).unwrap();
        }
        let clients = std::thread::spawn(move || {
            (0..N)
                .map(|i| {
                    let mut c = util::dial(addr);
                    c.write_all(&i.to_be_bytes()).unwrap();
                    c
                })
                .collect::<Vec<TcpStream>>()
        });
        let (mut accepted, mut read) = (0, 0);
        let mut seen = std::collections::HashSet::new();
        util::wait_until(&w, Duration::from_secs(30), "1000 accepts and first reads", |r| {
            assert!(r.error.is_none(), "{r:?}");
            match r.op {
                OpType::Accept => {
                    let c = r.accepted.expect("accepted connection");
                    w.read_full(0, &c, vec![0; 4], None).unwrap();
                    accepted += 1;
                    if accepted + 8 <= N {
                        w.accept(r.context, &r.conn).unwrap();
                    }
                }
                OpType::ReadFull => {
                    let v = u32::from_be_bytes(r.data().try_into().unwrap());
                    assert!(seen.insert(v), "client {v} read twice");
                    read += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
            read == N
        });
        assert_eq!(accepted, N);
        drop(clients.join().unwrap());
    }

    /// An accept on a socket that is not listening fails with an OS error, once.
    fn accept_on_unlistened_socket_fails(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let c = w.watch(&s).unwrap();
        w.accept((), &c).unwrap();
        let r = one(&w, "accept result");
        assert!(matches!(r.error, Some(Error::Io(_))), "{r:?}");
        util::expect_quiet(&w, Duration::from_millis(100));
    }

    /// `connect` gives a working connection; bytes go both ways through the watcher.
    fn connect_and_echo(backend) {
        let Some(w) = util::watcher_for::<&str>(backend) else { return };
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        w.connect("dial", ln.local_addr().unwrap(), Some(Instant::now() + T10)).unwrap();
        let (mut peer, _) = ln.accept().unwrap();
        let r = one(&w, "connect");
        assert_eq!(r.op, OpType::Connect);
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.context, "dial");
        let conn = r.conn;
        w.write("w", &conn, b"ping".to_vec()).unwrap();
        let mut buf = [0u8; 4];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        peer.write_all(b"pong").unwrap();
        let mut got = Vec::new();
        w.read_full("r", &conn, vec![0; 4], None).unwrap();
        util::wait_until(&w, T10, "write and read", |r| {
            assert!(r.error.is_none(), "{r:?}");
            if r.op == OpType::ReadFull {
                got = r.data().to_vec();
                return true;
            }
            false
        });
        assert_eq!(got, b"pong");
    }

    /// Connecting to a port nobody listens on: `ECONNREFUSED`, once.
    fn connect_refused(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        w.connect((), dead_port(), None).unwrap();
        let r = one(&w, "refused connect");
        assert_eq!(r.op, OpType::Connect);
        assert_eq!(r.error.as_ref().and_then(Error::raw_os_error), Some(libc::ECONNREFUSED), "{r:?}");
        util::expect_quiet(&w, Duration::from_millis(100));
    }

    /// A connect that cannot finish (the listener's accept queue is full, so the kernel drops
    /// the SYN) ends with `Deadline` at its deadline: the connect timeout.
    fn connect_timeout(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        s.listen(0).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap();
        // Fill the accept queue; once full, further SYNs are dropped.
        let mut fillers = Vec::new();
        for _ in 0..4 {
            if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                fillers.push(c);
            }
        }
        assert!(!fillers.is_empty());
        let start = Instant::now();
        w.connect((), addr, Some(start + Duration::from_millis(300))).unwrap();
        let r = one(&w, "timed-out connect");
        assert!(matches!(r.error, Some(Error::Deadline)), "{r:?}");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(300), "fired early: {took:?}");
        drop(s);
    }

    /// `cancel` ends a pending request with `Canceled` (not `Deadline`), exactly once, and
    /// says `false` for a request that is done or unknown.
    fn cancel_pending_and_done(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, s) = util::tcp_pair();
        let conn = w.watch(&s).unwrap();
        drop(s);
        let id = w.read_timeout(1, &conn, Some(vec![0; 8]), Instant::now() + Duration::from_secs(3600)).unwrap();
        assert!(w.cancel(id).unwrap());
        let r = one(&w, "cancelled read");
        assert_eq!(r.id, id);
        assert!(matches!(r.error, Some(Error::Canceled)), "{r:?}");
        assert_eq!(r.buffer.as_slice().len(), 8, "buffer returned");
        assert!(!w.cancel(id).unwrap(), "second cancel finds nothing");
        // A completed request: cancel says false and yields nothing.
        peer.write_all(b"x").unwrap();
        let id2 = w.read(2, &conn, None).unwrap();
        let r = one(&w, "read");
        assert!(r.error.is_none());
        assert!(!w.cancel(id2).unwrap());
        util::expect_quiet(&w, Duration::from_millis(200));
    }

    /// Cancelling a `read_full` keeps the bytes it had gathered.
    fn cancel_keeps_partial_progress(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (mut peer, s) = util::tcp_pair();
        let conn = w.watch(&s).unwrap();
        drop(s);
        let id = w.read_full((), &conn, vec![0; 100], None).unwrap();
        peer.write_all(&[7; 10]).unwrap();
        // Wait until the loop has taken the 10 bytes out of the socket (kernel state with no
        // notification: poll it, bounded).
        util::eventually(T10, "the loop to read the 10 bytes", || {
            let mut pending: libc::c_int = -1;
            // SAFETY: FIONREAD writes one int through the pointer.
            unsafe { libc::ioctl(conn.raw_fd(), libc::FIONREAD, &mut pending) };
            pending == 0
        });
        assert!(w.cancel(id).unwrap());
        let r = one(&w, "cancelled read_full");
        assert!(matches!(r.error, Some(Error::Canceled)), "{r:?}");
        assert_eq!(r.size, 10);
        assert_eq!(r.data(), &[7; 10]);
    }

    /// Cancel racing completion, many rounds: each request yields exactly one result; when
    /// `cancel` said false the result is the real one; on epoll `true` always means Canceled.
    fn cancel_races_completion(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (mut peer, s) = util::tcp_pair();
        let conn = w.watch(&s).unwrap();
        drop(s);
        // The peer's byte is sent by another thread at the moment of the cancel, so the
        // read's completion and the cancel really race.
        let (go, wait) = crossbeam_channel::bounded::<u8>(0);
        let writer = std::thread::spawn(move || {
            while let Ok(b) = wait.recv() {
                peer.write_all(&[b]).unwrap();
            }
        });
        let (mut canceled, mut completed) = (0, 0);
        for round in 0..500u32 {
            let id = w.read(round, &conn, Some(vec![0; 1])).unwrap();
            go.send(round as u8).unwrap();
            if round % 3 == 0 {
                std::hint::spin_loop();
            }
            let said = w.cancel(id).unwrap();
            let r = one(&w, "raced read");
            assert_eq!(r.id, id);
            match &r.error {
                None => {
                    completed += 1;
                    assert_eq!(r.data(), &[round as u8]);
                    if backend == gaio::Backend::Epoll {
                        assert!(!said, "epoll: cancel said true but the read completed");
                    }
                }
                Some(Error::Canceled) => {
                    canceled += 1;
                    assert!(said);
                    // The byte is in (or on its way to) the socket: read it so rounds stay
                    // in step.
                    w.read_full(round, &conn, vec![0; 1], None).unwrap();
                    let r2 = one(&w, "leftover byte");
                    assert_eq!(r2.data(), &[round as u8]);
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        drop(go);
        writer.join().unwrap();
        eprintln!("{backend}: {canceled} cancelled, {completed} completed first");
        util::expect_quiet(&w, Duration::from_millis(100));
    }

    /// Pipes work with read and write (gaio #15); freeing the write end gives the reader EOF.
    fn pipe_read_write_eof(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let (r, wr) = pipe();
        let rc = w.watch(&r).unwrap();
        let wc = w.watch(&wr).unwrap();
        drop((r, wr));
        w.read_full(1, &rc, vec![0; 5], None).unwrap();
        w.write(2, &wc, b"hello".to_vec()).unwrap();
        let mut got = Vec::new();
        util::wait_until(&w, T10, "pipe read", |r| {
            assert!(r.error.is_none(), "{r:?}");
            if r.context == 1 {
                got = r.data().to_vec();
                return true;
            }
            false
        });
        assert_eq!(got, b"hello");
        w.free(&wc).unwrap();
        w.read(3, &rc, None).unwrap();
        let r = one(&w, "EOF");
        assert!(matches!(r.error, Some(Error::Eof)), "{r:?}");
    }

    /// An eventfd: an 8-byte write adds to the counter, an 8-byte read takes it.
    fn eventfd_counter(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        // SAFETY: eventfd has no memory preconditions; checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor, owned here.
        let efd = unsafe { OwnedFd::from_raw_fd(fd) };
        let c = w.watch(&efd).unwrap();
        drop(efd);
        w.read_full(1, &c, vec![0; 8], None).unwrap();
        w.write(2, &c, 5u64.to_ne_bytes().to_vec()).unwrap();
        let mut value = None;
        util::wait_until(&w, T10, "eventfd read", |r| {
            assert!(r.error.is_none(), "{r:?}");
            if r.context == 1 {
                value = Some(u64::from_ne_bytes(r.data().try_into().unwrap()));
                return true;
            }
            false
        });
        assert_eq!(value, Some(5));
    }

    /// A timerfd: the read completes when the timer expires, with the expiration count.
    fn timerfd_expiry(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        // SAFETY: timerfd_create has no memory preconditions; checked below.
        let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: fresh descriptor, owned here.
        let tfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec { tv_sec: 0, tv_nsec: 20_000_000 },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not wanted.
        assert_eq!(unsafe { libc::timerfd_settime(tfd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) }, 0);
        let start = Instant::now();
        let c = w.watch(&tfd).unwrap();
        w.read_full((), &c, vec![0; 8], None).unwrap();
        let r = one(&w, "timer expiry");
        assert!(r.error.is_none(), "{r:?}");
        assert!(u64::from_ne_bytes(r.data().try_into().unwrap()) >= 1);
        assert!(start.elapsed() >= Duration::from_millis(15));
    }

    /// Unix stream sockets echo like TCP.
    fn unix_socket(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (a, mut b) = UnixStream::pair().unwrap();
        let c = w.watch(&a).unwrap();
        drop(a);
        w.write((), &c, b"over unix".to_vec()).unwrap();
        let mut buf = [0u8; 9];
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"over unix");
        one(&w, "write");
        b.write_all(b"back").unwrap();
        w.read_full((), &c, vec![0; 4], None).unwrap();
        assert_eq!(one(&w, "read").data(), b"back");
    }

    /// `detach` with requests pending: they end with `ClosedPipe`, the descriptor comes back
    /// open and works; the watcher refuses the connection afterwards; nothing leaks.
    fn detach_with_pending(backend) {
        // It counts the process's descriptors: a process of its own.
        if !util::own_process("detach_with_pending") { return; }
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let before = util::fd_count();
        let (mut peer, s) = util::tcp_pair();
        let conn = w.watch(&s).unwrap();
        drop(s);
        w.read(1, &conn, Some(vec![0; 8])).unwrap();
        w.read(2, &conn, None).unwrap();
        let fd = w.detach(&conn).unwrap();
        let mut got = Vec::new();
        util::wait_until(&w, T10, "two ClosedPipe results", |r| {
            assert!(matches!(r.error, Some(Error::ClosedPipe)), "{r:?}");
            got.push(r.context);
            got.len() == 2
        });
        assert_eq!(got, [1, 2], "in queue order");
        // The descriptor is ours and open; make it blocking and use it.
        let mut back = TcpStream::from(fd);
        back.set_nonblocking(false).unwrap();
        back.write_all(b"still open").unwrap();
        let mut buf = [0u8; 10];
        peer.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"still open");
        assert!(matches!(w.read(3, &conn, None).unwrap_err().error, Error::ConnClosed));
        assert!(matches!(w.detach(&conn), Err(Error::ConnClosed)));
        util::expect_quiet(&w, Duration::from_millis(100));
        drop((back, peer, conn));
        assert_eq!(util::fd_count(), before, "no descriptor leaked");
    }
}
