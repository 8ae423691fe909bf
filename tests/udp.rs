//! UDP on both backends: `recv_from` (caller buffer and swap buffer) with the source in
//! `OpResult::addr`, truncation reported, `send_to` of any buffer type, corked batches of
//! sends (one `sendmmsg` on epoll), `read`/`write` on a connected socket, ECONNREFUSED, bad
//! input refused with the buffer handed back, deadline and free of a pending receive. Every
//! wait is bounded (`util::wait_until`, socket read timeouts); nothing sleeps to synchronise.

#[macro_use]
mod util;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gaio::{Buffer, Error, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);

fn udp(addr: &str) -> Option<UdpSocket> {
    match UdpSocket::bind(addr) {
        Ok(s) => {
            s.set_read_timeout(Some(T10)).unwrap();
            Some(s)
        }
        Err(e) => {
            eprintln!("skipped: cannot bind {addr}: {e}");
            None
        }
    }
}

fn one<C: Send + 'static>(w: &Watcher<C>, what: &str) -> gaio::OpResult<C> {
    let mut got = None;
    util::wait_until(w, T10, what, |r| {
        got = Some(r);
        true
    });
    got.unwrap()
}

/// Echoes `rounds` windows of `window` datagrams from a std client through a gaio echo loop
/// (32 receives pending with their own buffers, each batch of echoes corked) on `bind`; every
/// byte and the source address checked.
fn echo(backend: gaio::Backend, bind: &str, rounds: usize, window: usize, len: usize) {
    let Some(w) = util::watcher_for::<usize>(backend) else {
        return;
    };
    let (Some(server), Some(client)) = (udp(bind), udp(bind)) else {
        return;
    };
    let server_addr = server.local_addr().unwrap();
    let client_addr = client.local_addr().unwrap();
    let conn = w.watch(&server).unwrap();
    drop(server);
    for i in 0..32 {
        w.recv_from(i, &conn, Some(vec![0; 2048])).unwrap();
    }
    let total = rounds * window;
    let client_thread = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        for r in 0..rounds {
            for k in 0..window {
                let i = r * window + k;
                client.send_to(&util::message(i, len), server_addr).unwrap();
            }
            let mut seen = vec![false; window];
            for _ in 0..window {
                let (n, from) = client.recv_from(&mut buf).expect("an echo within 10 s");
                assert_eq!(from, server_addr);
                assert_eq!(n, len);
                // Which datagram: its first byte's pattern (`util::message` starts at i).
                let i = (0..window)
                    .map(|k| r * window + k)
                    .find(|&i| buf[..n] == util::message(i, len)[..])
                    .expect("an echo of a datagram of this round");
                assert!(!seen[i - r * window], "datagram {i} echoed twice");
                seen[i - r * window] = true;
            }
        }
    });
    let mut echoed = 0;
    let mut sent = 0;
    let start = Instant::now();
    while sent < total {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "echo stalled: {sent} of {total}"
        );
        let batch: Vec<_> = w
            .wait_io_timeout(Duration::from_millis(100))
            .unwrap()
            .collect();
        let cork = w.cork(&conn).unwrap();
        for res in batch {
            assert!(res.error.is_none(), "{:?} {:?}", res.op, res.error);
            match res.op {
                OpType::RecvFrom => {
                    assert_eq!(res.addr, Some(client_addr));
                    assert_eq!(res.truncated, None);
                    let data = res.data().to_vec();
                    echoed += 1;
                    w.send_to(res.context, &conn, data, client_addr).unwrap();
                    w.recv_from(res.context, &conn, Some(user(res.buffer)))
                        .unwrap();
                }
                OpType::SendTo => {
                    assert_eq!(res.size, len);
                    sent += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        drop(cork);
    }
    assert_eq!(echoed, total);
    client_thread.join().unwrap();
}

fn user(b: Buffer) -> Vec<u8> {
    util::user_buf(b)
}

backend_tests! {
    /// 1 024 datagrams of 100 B echoed over IPv4, 16 in flight.
    fn echo_many_v4(backend) {
        echo(backend, "127.0.0.1:0", 64, 16, 100);
    }

    /// The same over IPv6 (::1), with 1 200-byte datagrams.
    fn echo_many_v6(backend) {
        echo(backend, "[::1]:0", 32, 16, 1200);
    }

    /// Each datagram's source comes back in `addr`: two senders, v4 and v6, swap and own
    /// buffers.
    fn sources_are_reported(backend) {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Some(w) = util::watcher_for::<u8>(backend) else {
                return;
            };
            let (Some(ours), Some(a), Some(b)) = (udp(bind), udp(bind), udp(bind)) else {
                continue;
            };
            let conn = w.watch(&ours).unwrap();
            assert!(conn.is_datagram());
            a.send_to(b"from a", ours.local_addr().unwrap()).unwrap();
            b.send_to(b"from b", ours.local_addr().unwrap()).unwrap();
            w.recv_from(0, &conn, Some(vec![0; 64])).unwrap();
            w.recv_from(1, &conn, None).unwrap();
            let mut got = Vec::new();
            util::wait_until(&w, T10, "two datagrams", |r| {
                assert!(r.error.is_none(), "{:?}", r.error);
                got.push((r.context, r.data().to_vec(), r.addr, r.buffer.is_swap()));
                got.len() == 2
            });
            assert_eq!(got[0], (0, b"from a".to_vec(), Some(a.local_addr().unwrap()), false));
            assert_eq!(got[1], (1, b"from b".to_vec(), Some(b.local_addr().unwrap()), true));
        }
    }

    /// A datagram longer than the buffer keeps what fit and says how long it was, into the
    /// caller's buffer and into a swap buffer smaller than the datagram; the next datagram is
    /// whole (nothing of the cut one leaks into it).
    fn truncation_is_reported(backend) {
        let Some(w) = util::build::<()>(backend, Watcher::builder().swap_buffer_size(1024))
        else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = ours.local_addr().unwrap();
        let conn = w.watch(&ours).unwrap();
        peer.send_to(&util::message(1, 100), to).unwrap();
        w.recv_from((), &conn, Some(vec![0; 4])).unwrap();
        let r = one(&w, "the cut datagram");
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!((r.size, r.truncated), (4, Some(100)));
        assert_eq!(r.data(), &util::message(1, 100)[..4]);

        peer.send_to(&util::message(2, 3000), to).unwrap();
        w.recv_from((), &conn, None).unwrap();
        let r = one(&w, "the cut swap datagram");
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!(r.buffer.is_swap());
        assert_eq!((r.size, r.truncated), (1024, Some(3000)));
        assert_eq!(r.data(), &util::message(2, 3000)[..1024]);
        // Released: on io_uring swap receives share the submit side's one swap buffer.
        drop(r);

        peer.send_to(b"whole", to).unwrap();
        w.recv_from((), &conn, Some(vec![0; 64])).unwrap();
        let r = one(&w, "the whole datagram");
        assert_eq!((r.data(), r.truncated), (&b"whole"[..], None));

        // The same with the receives waiting first (served at readiness on epoll, by the
        // RECVMSG SQE and the ring thread's poll on io_uring), and the source with it.
        w.recv_from((), &conn, Some(vec![0; 4])).unwrap();
        w.recv_from((), &conn, None).unwrap();
        w.recv_from((), &conn, Some(vec![0; 64])).unwrap();
        peer.send_to(&util::message(3, 100), to).unwrap();
        peer.send_to(&util::message(4, 2000), to).unwrap();
        peer.send_to(b"whole", to).unwrap();
        let mut got = Vec::new();
        util::wait_until(&w, T10, "three waiting receives", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!(r.addr, Some(peer.local_addr().unwrap()));
            got.push((r.data().to_vec(), r.truncated));
            got.len() == 3
        });
        assert_eq!(got[0], (util::message(3, 100)[..4].to_vec(), Some(100)));
        assert_eq!(got[1], (util::message(4, 2000)[..1024].to_vec(), Some(2000)));
        assert_eq!(got[2], (b"whole".to_vec(), None));
    }

    /// Swap-buffer receives: many datagrams, each its own slice of exactly `size` bytes, all
    /// alive at once; a receive waiting for data holds no swap space.
    fn swap_buffer_receive(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = ours.local_addr().unwrap();
        let conn = w.watch(&ours).unwrap();
        for i in 0..8 {
            w.recv_from(i, &conn, None).unwrap();
        }
        assert_eq!(w.swap_stats().slices_live, 0);
        for i in 0..8 {
            peer.send_to(&util::message(i, 500 + i), to).unwrap();
        }
        let mut kept = Vec::new();
        util::wait_until(&w, T10, "8 swap datagrams", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            assert!(r.buffer.is_swap());
            assert_eq!(r.data(), &util::message(r.context, 500 + r.context)[..]);
            assert_eq!(r.buffer.as_slice().len(), r.size);
            kept.push(r);
            kept.len() == 8
        });
        let order: Vec<_> = kept.iter().map(|r| r.context).collect();
        assert_eq!(order, (0..8).collect::<Vec<_>>(), "receives complete in order");
        // Still intact with every slice alive.
        for r in &kept {
            assert_eq!(r.data(), &util::message(r.context, 500 + r.context)[..]);
        }
    }

    /// 64 sends queued under a cork all arrive, in order, and on epoll went out in far fewer
    /// syscalls than 64 (`sendmmsg`; on io_uring a cork holds nothing and each goes out at
    /// once). Every buffer type a write takes is accepted.
    fn corked_batch_of_64_sends(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = peer.local_addr().unwrap();
        let conn = w.watch(&ours).unwrap();
        let shared: Arc<[u8]> = Arc::from(&util::message(5, 60)[..]);
        let before = w.datagram_stats();
        {
            let _cork = w.cork(&conn).unwrap();
            for i in 0..64 {
                let r = match i % 4 {
                    0 => w.send_to(i, &conn, util::message(i, 60), to),
                    1 => w.send_to(i, &conn, util::message(i, 60).into_boxed_slice(), to),
                    2 if i == 6 => w.send_to(i, &conn, shared.clone(), to),
                    2 => w.send_to(i, &conn, util::message(i, 60), to),
                    _ => w.send_to(
                        i,
                        &conn,
                        Buffer::Vectored(vec![
                            util::message(i, 60)[..20].to_vec().into(),
                            util::message(i, 60)[20..].to_vec().into(),
                        ]),
                        to,
                    ),
                };
                r.unwrap();
            }
            // Held on epoll: nothing has gone out (on io_uring a cork holds nothing).
            if backend == gaio::Backend::Epoll {
                peer.set_nonblocking(true).unwrap();
                let mut b = [0u8; 8];
                assert!(peer.recv_from(&mut b).is_err(), "a corked send went out");
                peer.set_nonblocking(false).unwrap();
            }
        }
        let mut order = Vec::new();
        util::wait_until(&w, T10, "64 send results", |r| {
            assert_eq!(r.op, OpType::SendTo);
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!((r.size, r.addr), (60, Some(to)));
            order.push(r.context);
            order.len() == 64
        });
        assert_eq!(order, (0..64).collect::<Vec<_>>());
        let mut buf = [0u8; 128];
        for i in 0..64 {
            let (n, from) = peer.recv_from(&mut buf).expect("datagram within 10 s");
            assert_eq!(from, ours.local_addr().unwrap());
            let want = if i == 6 { util::message(5, 60) } else { util::message(i, 60) };
            assert_eq!(&buf[..n], &want[..], "datagram {i}");
        }
        let after = w.datagram_stats();
        let (calls, moved) = (
            after.batch_calls - before.batch_calls,
            after.batch_datagrams - before.batch_datagrams,
        );
        eprintln!("{backend}: 64 corked sends: {calls} batched calls moved {moved} datagrams");
        // The vectored ones (every fourth) go alone; the runs between them in one call.
        if backend == gaio::Backend::Epoll {
            assert!((1..32).contains(&calls), "{calls} batched calls");
            assert!(moved >= 32, "{moved} datagrams batched");
        }
    }

    /// Receives queued with their own buffers are served in order (by `recvmmsg` when several
    /// datagrams are there at once).
    fn queued_receives_batch(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = ours.local_addr().unwrap();
        let conn = w.watch(&ours).unwrap();
        for i in 0..64 {
            w.recv_from(i, &conn, Some(vec![0; 256])).unwrap();
        }
        for i in 0..64 {
            peer.send_to(&util::message(i, 100), to).unwrap();
        }
        let mut n = 0;
        util::wait_until(&w, T10, "64 datagrams", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!(r.context, n, "in submission order");
            assert_eq!(r.data(), &util::message(n, 100)[..]);
            n += 1;
            n == 64
        });
        let s = w.datagram_stats();
        eprintln!("{backend}: 64 queued receives: {} batched calls, {} datagrams", s.batch_calls, s.batch_datagrams);
    }

    /// A connected UDP socket: `write` sends to the peer, `read` receives from it, `send_to`
    /// to the peer works, `send_to` elsewhere is refused at submission.
    fn connected_socket_read_write(backend) {
        let Some(w) = util::watcher_for::<&str>(backend) else {
            return;
        };
        let (Some(ours), Some(peer), Some(other)) =
            (udp("127.0.0.1:0"), udp("127.0.0.1:0"), udp("127.0.0.1:0"))
        else {
            return;
        };
        ours.connect(peer.local_addr().unwrap()).unwrap();
        let conn = w.watch(&ours).unwrap();
        w.write("write", &conn, b"via write".to_vec()).unwrap();
        let r = one(&w, "the write");
        assert!(r.error.is_none(), "{:?}", r.error);
        let mut buf = [0u8; 64];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"via write"[..], ours.local_addr().unwrap()));

        w.read("read", &conn, Some(vec![0; 64])).unwrap();
        peer.send_to(b"via read", ours.local_addr().unwrap()).unwrap();
        let r = one(&w, "the read");
        assert_eq!((r.op, r.data()), (OpType::Read, &b"via read"[..]));

        w.send_to("to peer", &conn, b"send_to peer".to_vec(), peer.local_addr().unwrap())
            .unwrap();
        let r = one(&w, "the send_to");
        assert!(r.error.is_none(), "{:?}", r.error);
        let (n, _) = peer.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"send_to peer");

        let err = w
            .send_to("elsewhere", &conn, b"no".to_vec(), other.local_addr().unwrap())
            .unwrap_err();
        assert!(matches!(&err.error, Error::InvalidArgument(m) if m.contains("connected")), "{:?}", err.error);
        assert_eq!((err.context, err.buffer.map(|b| b.len())), ("elsewhere", Some(2)));
    }

    /// A connected socket whose peer port is closed: the ICMP port unreachable makes the
    /// pending receive fail with ECONNREFUSED.
    fn connection_refused(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else {
            return;
        };
        let Some(ours) = udp("127.0.0.1:0") else {
            return;
        };
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let gone = closed.local_addr().unwrap();
        drop(closed);
        ours.connect(gone).unwrap();
        let conn = w.watch(&ours).unwrap();
        w.recv_from((), &conn, Some(vec![0; 64])).unwrap();
        w.write((), &conn, b"anyone?".to_vec()).unwrap();
        let mut refused = false;
        util::wait_until(&w, T10, "ECONNREFUSED", |r| {
            if r.op == OpType::RecvFrom {
                assert_eq!(util::errno_of(&r.error), Some(libc::ECONNREFUSED), "{:?}", r.error);
                refused = true;
            }
            refused
        });
    }

    /// Bad input is refused at submission with a typed error, context and buffer back.
    fn bad_input(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = peer.local_addr().unwrap();
        let conn = w.watch(&ours).unwrap();
        // Over the largest datagram (65 507 bytes, also for IPv6).
        let err = w.send_to(1, &conn, vec![0; gaio::MAX_DATAGRAM + 1], to).unwrap_err();
        assert!(matches!(&err.error, Error::InvalidArgument(m) if m.contains("65508")), "{:?}", err.error);
        assert_eq!((err.context, err.buffer.map(|b| b.len())), (1, Some(65_508)));
        // Exactly the largest is fine.
        w.send_to(2, &conn, vec![7; gaio::MAX_DATAGRAM], to).unwrap();
        let r = one(&w, "the largest datagram");
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.size, gaio::MAX_DATAGRAM);
        let mut big = vec![0u8; 70_000];
        let (n, _) = peer.recv_from(&mut big).unwrap();
        assert_eq!(n, gaio::MAX_DATAGRAM);
        // An empty buffer for a receive.
        let err = w.recv_from(3, &conn, Some(Vec::new())).unwrap_err();
        assert!(matches!(err.error, Error::EmptyBuffer), "{:?}", err.error);
        assert_eq!(err.context, 3);
        // An empty datagram is a datagram.
        w.send_to(4, &conn, Vec::new(), to).unwrap();
        let r = one(&w, "the empty datagram");
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.size, 0);
        let (n, _) = peer.recv_from(&mut big).unwrap();
        assert_eq!(n, 0);
        peer.send_to(b"", ours.local_addr().unwrap()).unwrap();
        w.recv_from(5, &conn, Some(vec![0; 8])).unwrap();
        let r = one(&w, "an empty datagram received");
        assert!(r.error.is_none(), "an empty datagram is no EOF: {:?}", r.error);
        assert_eq!((r.size, r.addr), (0, Some(peer.local_addr().unwrap())));
        // Not a datagram socket: TCP, and a pipe.
        let (tcp, _other) = util::tcp_pair();
        let tconn = w.watch(&tcp).unwrap();
        assert!(!tconn.is_datagram());
        let err = w.recv_from(6, &tconn, Some(vec![0; 8])).unwrap_err();
        assert!(matches!(err.error, Error::Unsupported), "{:?}", err.error);
        assert_eq!(err.buffer.map(|b| b.len()), Some(8));
        let err = w.send_to(7, &tconn, b"x".to_vec(), to).unwrap_err();
        assert!(matches!(err.error, Error::Unsupported), "{:?}", err.error);
        let (rd, _wr) = util::pipe();
        let pconn = w.watch(&rd).unwrap();
        let err = w.recv_from(8, &pconn, None).unwrap_err();
        assert!(matches!(err.error, Error::Unsupported), "{:?}", err.error);
        // After free.
        w.free(&conn).unwrap();
        let err = w.send_to(9, &conn, b"x".to_vec(), to).unwrap_err();
        assert!(matches!(err.error, Error::ConnClosed), "{:?}", err.error);
        assert!(matches!(w.cork(&conn).unwrap_err(), Error::ConnClosed));
    }

    /// A receive with a deadline that passes completes with `Deadline`, `size` 0 and its
    /// buffer back; a datagram that comes later goes to the next receive.
    fn deadline_passes(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let conn = w.watch(&ours).unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        w.recv_from_timeout((), &conn, Some(vec![0; 32]), deadline).unwrap();
        let r = one(&w, "the deadline");
        assert!(util::is_deadline(&r.error), "{:?}", r.error);
        assert!(Instant::now() >= deadline);
        assert!(Instant::now() < deadline + Duration::from_secs(2), "late deadline");
        assert_eq!((r.size, r.addr, r.buffer.len()), (0, None, 32));
        // Swap receive too.
        w.recv_from_timeout((), &conn, None, Instant::now() + Duration::from_millis(20))
            .unwrap();
        let r = one(&w, "the swap deadline");
        assert!(util::is_deadline(&r.error), "{:?}", r.error);
        peer.send_to(b"late", ours.local_addr().unwrap()).unwrap();
        w.recv_from((), &conn, None).unwrap();
        let r = one(&w, "the late datagram");
        assert_eq!(r.data(), b"late");
    }

    /// Free with receives pending (own buffer and swap) and a send held by a cork (epoll;
    /// on io_uring a cork holds nothing and the send completes): each ends with `ClosedPipe`,
    /// buffers back.
    fn free_with_pending_receive(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let conn = w.watch(&ours).unwrap();
        w.recv_from(0, &conn, Some(vec![0; 16])).unwrap();
        w.recv_from(1, &conn, None).unwrap();
        let cork = w.cork(&conn).unwrap();
        w.send_to(2, &conn, b"held".to_vec(), peer.local_addr().unwrap()).unwrap();
        w.free(&conn).unwrap();
        let mut ended = Vec::new();
        util::wait_until(&w, T10, "three results", |r| {
            if r.context == 2 && backend == gaio::Backend::Uring {
                // A cork holds nothing on io_uring: the send went out at once.
                assert!(r.error.is_none(), "{:?}", r.error);
            } else {
                assert!(util::is_closed_pipe(&r.error), "{:?}", r.error);
            }
            ended.push((r.context, r.buffer.len()));
            ended.len() == 3
        });
        drop(cork);
        ended.sort();
        assert_eq!(ended, [(0, 16), (1, 0), (2, 4)]);
        util::expect_quiet(&w, Duration::from_millis(50));
    }

    /// Cancel of a pending receive: `Canceled`, and the next datagram goes to the receive
    /// behind it.
    fn cancel_pending_receive(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else {
            return;
        };
        let (Some(ours), Some(peer)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let conn = w.watch(&ours).unwrap();
        let id = w.recv_from(0, &conn, Some(vec![0; 16])).unwrap();
        w.recv_from(1, &conn, Some(vec![0; 16])).unwrap();
        assert!(w.cancel(id).unwrap());
        let r = one(&w, "the cancel");
        assert!(matches!(r.error, Some(Error::Canceled)), "{:?}", r.error);
        peer.send_to(b"next", ours.local_addr().unwrap()).unwrap();
        let r = one(&w, "the second receive");
        assert_eq!((r.context, r.data()), (1, &b"next"[..]));
    }

    /// UDP GSO: one `send_to_gso` arrives as datagrams of the segment size (v4 and v6), and
    /// queued ones batch; bad segment sizes are refused with the buffer back.
    fn gso_send(backend) {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let Some(w) = util::watcher_for::<u32>(backend) else {
                return;
            };
            let (Some(ours), Some(peer)) = (udp(bind), udp(bind)) else {
                continue;
            };
            let to = peer.local_addr().unwrap();
            let conn = w.watch(&ours).unwrap();
            let data = util::message(9, 2500);
            {
                let _cork = w.cork(&conn).unwrap();
                w.send_to_gso(0, &conn, data.clone(), to, 1000).unwrap();
                w.send_to_gso(1, &conn, Arc::<[u8]>::from(&data[..]), to, 1200).unwrap();
            }
            let mut n = 0;
            util::wait_until(&w, T10, "two segmented sends", |r| {
                assert!(r.error.is_none(), "{:?}", r.error);
                assert_eq!((r.context, r.size), (n, 2500));
                n += 1;
                n == 2
            });
            let mut buf = vec![0u8; 4096];
            let mut at = 0;
            for want in [1000, 1000, 500, 1200, 1200, 100] {
                let (len, from) = peer.recv_from(&mut buf).unwrap();
                assert_eq!((len, from), (want, ours.local_addr().unwrap()));
                if at == 2500 {
                    at = 0;
                }
                assert_eq!(&buf[..len], &data[at..at + len]);
                at += len;
            }
            let err = w.send_to_gso(2, &conn, vec![0; 100], to, 0).unwrap_err();
            assert!(matches!(err.error, Error::InvalidArgument(_)), "{:?}", err.error);
            assert_eq!(err.buffer.map(|b| b.len()), Some(100));
            let err = w.send_to_gso(3, &conn, vec![0; 6500], to, 100).unwrap_err();
            assert!(matches!(&err.error, Error::InvalidArgument(m) if m.contains("65 datagrams")), "{:?}", err.error);
            let err = w.send_to_gso(4, &conn, Vec::new(), to, 100).unwrap_err();
            assert!(matches!(err.error, Error::EmptyBuffer), "{:?}", err.error);
        }
    }

    /// UDP GRO: a segmented send over loopback reaches a GRO socket as one receive with its
    /// segment size, into the caller's buffer (waiting and ready) and into a swap buffer;
    /// without GRO the same send arrives as separate datagrams.
    fn gro_receive(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else {
            return;
        };
        let (Some(a), Some(b)) = (udp("127.0.0.1:0"), udp("127.0.0.1:0")) else {
            return;
        };
        let to = b.local_addr().unwrap();
        let (ca, cb) = (w.watch(&a).unwrap(), w.watch(&b).unwrap());
        // Off: three datagrams, three receives, no segment size.
        for i in 0..3 {
            w.recv_from(i, &cb, Some(vec![0; 4096])).unwrap();
        }
        w.send_to_gso(9, &ca, util::message(1, 2500), to, 1000).unwrap();
        let mut sizes = Vec::new();
        util::wait_until(&w, T10, "three separate datagrams", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            if r.op == OpType::RecvFrom {
                assert_eq!(r.segment_size, None);
                sizes.push(r.size);
            }
            sizes.len() == 3
        });
        assert_eq!(sizes, [1000, 1000, 500]);
        // On: one receive each, waiting first, then ready before the receive, then swap.
        w.set_udp_gro(&cb, true).unwrap();
        w.recv_from(10, &cb, Some(vec![0; gaio::MAX_DATAGRAM])).unwrap();
        w.send_to_gso(11, &ca, util::message(2, 2500), to, 1000).unwrap();
        let mut got = Vec::new();
        util::wait_until(&w, T10, "a coalesced receive", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            if r.op == OpType::RecvFrom {
                got.push((r.size, r.segment_size, r.addr, r.data() == &util::message(2, 2500)[..]));
            }
            !got.is_empty()
        });
        assert_eq!(got, [(2500, Some(1000), Some(a.local_addr().unwrap()), true)]);
        w.send_to_gso(12, &ca, util::message(3, 3000), to, 1500).unwrap();
        let _ = one(&w, "the send");
        for (ctx, buf) in [(13, Some(vec![0; 8192])), (14, None)] {
            if ctx == 14 {
                w.send_to_gso(15, &ca, util::message(3, 3000), to, 1500).unwrap();
                let _ = one(&w, "the send");
            }
            w.recv_from(ctx, &cb, buf).unwrap();
            let r = one(&w, "a ready coalesced receive");
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!((r.context, r.size, r.segment_size), (ctx, 3000, Some(1500)));
            assert_eq!(r.data(), &util::message(3, 3000)[..]);
        }
        // A plain datagram on a GRO socket: no segment size.
        a.send_to(b"single", to).unwrap();
        w.recv_from(16, &cb, Some(vec![0; 64])).unwrap();
        let r = one(&w, "a single datagram");
        assert_eq!((r.data(), r.segment_size), (&b"single"[..], None));
        // Turned on while a receive waits: that receive still reports the split.
        w.set_udp_gro(&cb, false).unwrap();
        w.recv_from(17, &cb, Some(vec![0; 8192])).unwrap();
        w.set_udp_gro(&cb, true).unwrap();
        w.send_to_gso(18, &ca, util::message(4, 2000), to, 500).unwrap();
        let mut got = None;
        util::wait_until(&w, T10, "the receive pending across set_udp_gro", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            if r.op == OpType::RecvFrom {
                got = Some((r.size, r.segment_size));
            }
            got.is_some()
        });
        assert_eq!(got, Some((2000, Some(500))));
        // Not a datagram socket.
        let (tcp, _other) = util::tcp_pair();
        let t = w.watch(&tcp).unwrap();
        assert!(matches!(w.set_udp_gro(&t, true), Err(Error::Unsupported)));
    }
}
