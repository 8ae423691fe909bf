//! `Watcher::shutdown` (in the write direction's order), `peer_addr`/`local_addr`, and the
//! peer address an accept result carries (`OpResult::addr`), on both backends.

#[macro_use]
mod util;

use std::io::Read;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use gaio::{Error, OpType};

const T10: Duration = Duration::from_secs(10);

use util::one;

/// A loopback listener on IPv6 `::1`, or `None` (with a note) where there is none.
fn listen_v6() -> Option<TcpListener> {
    match TcpListener::bind("[::1]:0") {
        Ok(l) => Some(l),
        Err(e) => {
            eprintln!("skipping the IPv6 case: no ::1 ({e})");
            None
        }
    }
}

fn pair_on(ln: &TcpListener) -> (TcpStream, TcpStream) {
    let c = util::dial(ln.local_addr().unwrap());
    let (s, _) = ln.accept().expect("accept");
    (c, s)
}

backend_tests! {
    /// A shutdown(Write) queued behind writes larger than the socket buffers starts only after
    /// they completed: the peer gets every byte, then the end of the stream, and the results
    /// come in submission order.
    fn shutdown_write_follows_queued_writes(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (mut peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        drop(ours);
        peer.set_read_timeout(Some(T10)).unwrap();
        const N: usize = 4;
        const LEN: usize = 4 << 20; // each more than the socket buffers hold
        let mut sent = Vec::new();
        for i in 0..N {
            let buf = util::random_bytes(LEN, i as u64 + 1);
            sent.extend_from_slice(&buf);
            w.write(i, &conn, buf).unwrap();
        }
        w.shutdown(N, &conn, Shutdown::Write).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = vec![0; 1 << 16];
            loop {
                match peer.read(&mut chunk) {
                    Ok(0) => return Ok(got),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => return Err(format!("read after {} bytes: {e}", got.len())),
                }
            }
        });
        let mut order = Vec::new();
        util::wait_until(&w, T10, "the writes and the shutdown", |r| {
            assert!(r.error.is_none(), "{:?}: {:?}", r.op, r.error);
            let want = if r.context < N { (OpType::Write, LEN) } else { (OpType::Shutdown, 0) };
            assert_eq!((r.op, r.size), want, "result {}", r.context);
            order.push(r.context);
            order.len() == N + 1
        });
        assert_eq!(order, (0..=N).collect::<Vec<_>>(), "results out of order");
        let got = reader.join().unwrap().expect("the peer reads to the end of the stream");
        assert_eq!(got.len(), sent.len(), "bytes before EOF");
        assert_eq!(util::first_difference(&got, &sent), None);
    }

    /// shutdown(Read), then a read: the end of the stream.
    fn shutdown_read_then_read_is_eof(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (_peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        w.shutdown((), &conn, Shutdown::Read).unwrap();
        let r = one(&w, "the shutdown");
        assert_eq!(r.op, OpType::Shutdown);
        assert!(r.error.is_none(), "{:?}", r.error);
        w.read((), &conn, Some(vec![0; 16])).unwrap();
        let r = one(&w, "the read");
        assert_eq!(r.op, OpType::Read);
        assert!(matches!(r.error, Some(Error::Eof)), "{:?}", r.error);
    }

    /// Both directions: the peer sees EOF; a socket that is not connected gives ENOTCONN.
    fn shutdown_both_and_not_connected(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (mut peer, ours) = util::tcp_pair();
        peer.set_read_timeout(Some(T10)).unwrap();
        let conn = w.watch(&ours).unwrap();
        w.shutdown((), &conn, Shutdown::Both).unwrap();
        assert!(one(&w, "the shutdown").error.is_none());
        assert_eq!(peer.read(&mut [0; 8]).unwrap(), 0, "EOF at the peer");

        let fresh = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .unwrap();
        let fconn = w.watch(&fresh).unwrap();
        w.shutdown((), &fconn, Shutdown::Write).unwrap();
        let r = one(&w, "the unconnected socket's shutdown");
        assert_eq!(util::errno_of(&r.error), Some(libc::ENOTCONN), "{:?}", r.error);
    }

    /// Refused at submission: a freed connection (ConnClosed), a pipe (Unsupported), another
    /// watcher's connection (Unsupported).
    fn shutdown_refusals(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let (_peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        w.free(&conn).unwrap();
        let e = w.shutdown(1, &conn, Shutdown::Write).unwrap_err();
        assert!(matches!(e.error, Error::ConnClosed), "{:?}", e.error);
        assert_eq!(e.context, 1);

        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: pipe2 returned two new descriptors nothing else owns.
        let (r, _wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let pconn = w.watch(&r).unwrap();
        let e = w.shutdown(2, &pconn, Shutdown::Read).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{:?}", e.error);

        let Some(other) = util::watcher_for::<u8>(backend) else { return };
        let (_p2, s2) = util::tcp_pair();
        let oconn = other.watch(&s2).unwrap();
        let e = w.shutdown(3, &oconn, Shutdown::Write).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{:?}", e.error);
        util::expect_quiet(&w, Duration::from_millis(50));
    }

    /// `peer_addr`/`local_addr` equal std's for the same socket, IPv4 and IPv6, for both
    /// ends and a listener.
    fn addresses_match_std(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let mut listeners = vec![TcpListener::bind("127.0.0.1:0").unwrap()];
        listeners.extend(listen_v6());
        for ln in &listeners {
            let (client, server) = pair_on(ln);
            for s in [&client, &server] {
                let conn = w.watch(s).unwrap();
                assert_eq!(w.peer_addr(&conn).unwrap(), s.peer_addr().unwrap());
                assert_eq!(w.local_addr(&conn).unwrap(), s.local_addr().unwrap());
                w.free(&conn).unwrap();
            }
            let lconn = w.watch(ln).unwrap();
            assert_eq!(w.local_addr(&lconn).unwrap(), ln.local_addr().unwrap());
            assert!(
                matches!(w.peer_addr(&lconn), Err(Error::Io(ref e)) if e.raw_os_error() == Some(libc::ENOTCONN)),
                "a listener has no peer"
            );
            w.free(&lconn).unwrap();
        }
    }

    /// Unsupported for a Unix socket and another watcher's connection; ConnClosed after free
    /// (also with requests pending when it was freed).
    fn addresses_refusals(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (a, _b) = UnixStream::pair().unwrap();
        let unix = w.watch(&a).unwrap();
        assert!(matches!(w.peer_addr(&unix), Err(Error::Unsupported)));
        assert!(matches!(w.local_addr(&unix), Err(Error::Unsupported)));

        let (_peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        w.read((), &conn, None).unwrap(); // pending: free ends it
        assert!(w.peer_addr(&conn).is_ok(), "with a read pending");
        w.free(&conn).unwrap();
        assert!(matches!(w.peer_addr(&conn), Err(Error::ConnClosed)));
        assert!(matches!(w.local_addr(&conn), Err(Error::ConnClosed)));
        assert!(util::is_closed_pipe(&one(&w, "the freed read").error));

        let Some(other) = util::watcher_for::<()>(backend) else { return };
        let (_p2, s2) = util::tcp_pair();
        let oconn = other.watch(&s2).unwrap();
        assert!(matches!(w.peer_addr(&oconn), Err(Error::Unsupported)));
        assert_eq!(other.peer_addr(&oconn).unwrap(), s2.peer_addr().unwrap());
    }

    /// `peer_addr` racing `free` (and new sockets taking the freed descriptor numbers): each
    /// answer is the connection's own address or `ConnClosed`, never another socket's.
    fn peer_addr_races_free(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let w = std::sync::Arc::new(w);
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        for _ in 0..50 {
            let (client, server) = pair_on(&ln);
            let conn = w.watch(&client).unwrap();
            drop(client);
            let want = ln.local_addr().unwrap();
            let (w2, c2) = (w.clone(), conn.clone());
            let asker = std::thread::spawn(move || {
                let mut answers = 0u32;
                loop {
                    match w2.peer_addr(&c2) {
                        Ok(a) => assert_eq!(a, want, "another socket's address"),
                        Err(Error::ConnClosed) => return answers,
                        Err(e) => panic!("peer_addr: {e:?}"),
                    }
                    answers += 1;
                    assert!(answers < 10_000_000, "never saw the free");
                }
            });
            w.free(&conn).unwrap();
            // New descriptors, connected elsewhere, likely take the freed number.
            let _reuse: Vec<_> = (0..4).map(|_| pair_on(&other)).collect();
            asker.join().unwrap();
            drop(server);
        }
    }

    /// An accept result carries the peer's address: the client's local address, IPv4 and
    /// IPv6; other results carry none.
    fn accept_result_has_peer_addr(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let mut listeners = vec![TcpListener::bind("127.0.0.1:0").unwrap()];
        listeners.extend(listen_v6());
        for ln in listeners {
            let addr: SocketAddr = ln.local_addr().unwrap();
            let listener = w.watch(&ln).unwrap();
            for _ in 0..2 {
                w.accept((), &listener).unwrap();
                let client = util::dial(addr);
                let r = one(&w, "the accept");
                assert_eq!(r.op, OpType::Accept);
                assert!(r.error.is_none(), "{:?}", r.error);
                assert_eq!(r.addr, Some(client.local_addr().unwrap()), "{addr}");
                let conn = r.accepted.expect("the accepted connection");
                assert_eq!(w.peer_addr(&conn).unwrap(), client.local_addr().unwrap());
                w.write((), &conn, b"x".to_vec()).unwrap();
                let r = one(&w, "the write");
                assert_eq!((r.op, r.addr), (OpType::Write, None));
            }
            // A failed accept (deadline) has no address.
            w.accept_timeout((), &listener, std::time::Instant::now() + Duration::from_millis(20))
                .unwrap();
            let r = one(&w, "the accept that times out");
            assert!(util::is_deadline(&r.error));
            assert_eq!(r.addr, None);
        }
    }
}
