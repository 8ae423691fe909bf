//! Echo round trips. Ports of Go gaio's `TestEchoTiny`, `TestEchoHuge`,
//! `TestBidirectionWatcher`, `TestReadFull` and `TestContextPassing` (research/gaio.md §3.2
//! items 1, 5, 6, 7, 17), plus the EOF fan-out case (§3.5 c, §1.10).

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gaio::{Buffer, Error, OpType};

/// Size of the random payload of `echo_huge` and `read_full` (Go: 100 MiB).
const HUGE: usize = 100 << 20;

backend_tests! {
    /// Go `TestEchoTiny`: an echo server that reads one byte at a time; a plain client writes
    /// "hello world" and reads. Go only checks that the read succeeds; here all 11 bytes must
    /// come back, in order (11 ping-pong rounds on the server).
    fn echo_tiny(backend) {
        let Some(srv) = util::echo_server(backend, 1) else { return };
        let mut c = util::dial(srv.addr);
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"hello world").unwrap();
        let mut rx = [0u8; 11];
        c.read_exact(&mut rx).expect("echo of \"hello world\"");
        assert_eq!(&rx, b"hello world");
    }

    /// Go `TestEchoHuge`: 100 MiB of random data through the echo server (64 KiB per-connection
    /// buffers, ping-pong with the caller's buffers), written by one thread and read by
    /// another, compared byte for byte.
    fn echo_huge(backend) {
        let Some(srv) = util::echo_server(backend, 65536) else { return };
        let tx = Arc::new(util::random_bytes(HUGE, 0x5eed_0001));
        let c = util::dial(srv.addr);
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        c.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        let start = Instant::now();
        let writer = {
            let (mut wc, tx) = (c.try_clone().unwrap(), tx.clone());
            std::thread::spawn(move || wc.write_all(&tx))
        };
        let mut rx = vec![0u8; HUGE];
        (&c).read_exact(&mut rx).expect("read the 100 MiB echo");
        writer.join().unwrap().expect("write 100 MiB");
        if let Some(at) = util::first_difference(&rx, &tx) {
            panic!("echo differs from what was sent at byte {at}");
        }
        println!("100 MiB echoed in {:?}", start.elapsed());
    }

    /// Go `TestBidirectionWatcher`: a client watcher writes "hello world" and queues a swap
    /// read; when the write completes it queues a read into the caller's buffer. The first read
    /// result (the swap read, reads are served in order) must carry a prefix of the echo.
    fn bidirection_watcher(backend) {
        let Some(srv) = util::echo_server(backend, 65536) else { return };
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);
        // Go submits from a goroutine; submissions from another thread are fine here too.
        std::thread::scope(|sc| {
            sc.spawn(|| {
                w.write("write", &conn, b"hello world".to_vec()).unwrap();
                w.read("swap read", &conn, None).unwrap();
            });
        });
        let mut got = Vec::new();
        util::wait_until(&w, Duration::from_secs(10), "the first read", |res| {
            assert!(res.error.is_none(), "{res:?}");
            match res.op {
                OpType::Write => {
                    assert_eq!(res.size, 11);
                    w.read("user read", &res.conn, Some(vec![0; 11])).unwrap();
                    false
                }
                OpType::Read => {
                    assert_eq!(res.context, "swap read");
                    assert!(res.buffer.is_swap(), "{res:?}");
                    got = res.data().to_vec();
                    true
                }
                other => panic!("unexpected op {other:?}"),
            }
        });
        assert!(!got.is_empty() && got.len() <= 11, "{got:?}");
        assert_eq!(&got[..], &b"hello world"[..got.len()]);
    }

    /// Go `TestReadFull`: a client watcher writes 100 MiB of random data (submitted from
    /// another thread) and reads the echo back with one `read_full` of 100 MiB without
    /// deadline: `size` must be exactly 100 MiB and the bytes equal.
    fn read_full(backend) {
        let Some(srv) = util::echo_server(backend, 65536) else { return };
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);
        let tx = util::random_bytes(HUGE, 0x5eed_0002);
        let start = Instant::now();
        std::thread::scope(|sc| {
            sc.spawn(|| w.write("write", &conn, tx).unwrap());
        });
        w.read_full("read_full", &conn, vec![0; HUGE], None).unwrap();
        let (mut sent, mut got) = (None, None);
        util::wait_until(&w, Duration::from_secs(60), "the 100 MiB write and read_full", |res| {
            assert!(res.error.is_none(), "{res:?}");
            assert_eq!(res.size, HUGE, "{res:?}");
            match res.op {
                OpType::Write => sent = Some(util::user_buf(res.buffer)),
                OpType::ReadFull => got = Some(util::user_buf(res.buffer)),
                other => panic!("unexpected op {other:?}"),
            }
            sent.is_some() && got.is_some()
        });
        let (sent, got) = (sent.unwrap(), got.unwrap());
        assert_eq!(got.len(), HUGE);
        if let Some(at) = util::first_difference(&sent, &got) {
            panic!("read_full data differs from what was written at byte {at}");
        }
        println!("100 MiB write + read_full in {:?}", start.elapsed());
    }

    /// Go `TestContextPassing`: the context given to a write comes back untouched.
    fn context_passing(backend) {
        let Some(srv) = util::echo_server(backend, 1024) else { return };
        let Some(w) = util::watcher_for::<String>(backend) else { return };
        let s = util::dial(srv.addr);
        let conn = w.watch(&s).unwrap();
        drop(s);
        let id = w.write("my-context".to_string(), &conn, b"hello".to_vec()).unwrap();
        util::wait_until(&w, Duration::from_secs(10), "the write", |res| {
            assert_eq!(res.op, OpType::Write);
            assert_eq!(res.id, id);
            assert!(res.error.is_none(), "{res:?}");
            assert_eq!(res.context, "my-context");
            true
        });
    }

    /// research §3.5 (c), §1.10: the peer writes "abc" and closes. Three reads queued on the
    /// connection (8 B, 8 B, swap) give, in order: 3 bytes; EOF; EOF (the swap one with no
    /// memory: `Buffer::None`, size 0; Go hands back a 0-length swap slice). The connection is
    /// not freed by EOF: a fourth read also gets EOF.
    fn eof_fan_out(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (mut client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);
        let ids = [
            w.read("a", &conn, Some(vec![0; 8])).unwrap(),
            w.read("b", &conn, Some(vec![0; 8])).unwrap(),
            w.read("c", &conn, None).unwrap(),
        ];
        client.write_all(b"abc").unwrap();
        client.shutdown(Shutdown::Both).unwrap();
        drop(client);
        let mut got = Vec::new();
        let rest = util::wait_until(&w, Duration::from_secs(10), "three read results", |res| {
            got.push(res);
            got.len() == 3
        });
        assert!(rest.is_empty(), "{rest:?}");
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), ids, "results out of order");
        let mut got = got.into_iter();

        let a = got.next().unwrap();
        assert_eq!((a.context, a.size), ("a", 3));
        assert!(a.error.is_none(), "{a:?}");
        assert_eq!(a.data(), b"abc");
        assert_eq!(util::user_buf(a.buffer).len(), 8);

        let b = got.next().unwrap();
        assert_eq!((b.context, b.size), ("b", 0));
        assert!(matches!(b.error, Some(Error::Eof)), "{b:?}");
        assert_eq!(util::user_buf(b.buffer).len(), 8);

        let c = got.next().unwrap();
        assert_eq!((c.context, c.size), ("c", 0));
        assert!(matches!(c.error, Some(Error::Eof)), "{c:?}");
        assert!(matches!(c.buffer, Buffer::None), "{c:?}");

        let d = w.read("d", &conn, None).unwrap();
        util::wait_until(&w, Duration::from_secs(10), "a read after EOF", |res| {
            assert_eq!(res.id, d);
            assert!(matches!(res.error, Some(Error::Eof)), "{res:?}");
            true
        });
        util::expect_quiet(&w, Duration::from_millis(200));
    }
}
