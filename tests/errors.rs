//! Bad input gets a clear, synchronous error and loses nothing (DESIGN.md property 5). Ports of
//! Go gaio's `TestEmptyBuffer`, `TestUnsupportedConn` and `TestWriteOnClosedConn`
//! (research/gaio.md §3.2 items 3, 4, 9), plus the zero-length read buffer (§3.5 a).

#[macro_use]
mod util;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use gaio::{Error, OpType};

backend_tests! {
    /// Go `TestEmptyBuffer`: `write` and `write_timeout` of an empty buffer are refused at once
    /// with `EmptyBuffer`; the context and the buffer come back in the `SubmitError`. Also
    /// `read_full` of an empty buffer (Go: `ErrEmptyBuffer` too). Nothing reaches `wait_io`.
    fn empty_buffer(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (_client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);

        let e = w.write("w", &conn, Vec::new()).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.context, "w");
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec), Some(Vec::new()));

        let at = Instant::now() + std::time::Duration::from_secs(1);
        let e = w.write_timeout("wt", &conn, Vec::with_capacity(64), at).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.context, "wt");
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec).map(|v| v.capacity()), Some(64), "the very same Vec back");

        let e = w.read_full("rf", &conn, Vec::new(), None).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.context, "rf");
        util::expect_quiet(&w, std::time::Duration::from_millis(100));
    }

    /// research §3.5 (a): Go lets a zero-length (non-nil) read buffer through and reports EOF
    /// at once. We refuse it synchronously with `EmptyBuffer` (a zero-length read can never
    /// make progress), handing the context and the buffer back. `None` (swap buffer) is not
    /// empty and is accepted.
    fn zero_length_read_is_refused(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (_client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);

        let e = w.read(7, &conn, Some(Vec::with_capacity(16))).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.context, 7);
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec).map(|v| v.capacity()), Some(16));

        let at = Instant::now() + std::time::Duration::from_secs(1);
        let e = w.read_timeout(8, &conn, Some(Vec::new()), at).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.context, 8);
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec), Some(Vec::new()));
        util::expect_quiet(&w, std::time::Duration::from_millis(100));
    }

    /// Go `TestUnsupportedConn`. Go checks `Read(nil, nil, nil)` (a nil conn; a `Conn` cannot be
    /// null in Rust) and a `net.Pipe` (an in-memory conn without a descriptor; every Rust
    /// `AsFd` has one). The Rust cases of "this watcher cannot drive that":
    /// - watching a directory gives `Unsupported`, synchronously; a regular file is taken over
    ///   for file requests, and stream requests on it give `Unsupported`;
    /// - a `Conn` of watcher A given to watcher B: submissions give a `SubmitError` with
    ///   `Unsupported` (context and buffer back), `free` gives `Unsupported`; A's connection is
    ///   unharmed and still works.
    fn unsupported_conn(backend) {
        let Some(a) = util::watcher_for::<&'static str>(backend) else { return };
        let Some(b) = util::watcher_for::<&'static str>(backend) else { return };

        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let fconn = a.watch(&file).expect("a regular file is watched for file requests");
        assert!(fconn.is_file());
        let e = a.read("file", &fconn, Some(vec![0; 4])).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "stream read on a file: {e:?}");
        let e = a.write("file", &fconn, vec![0; 4]).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "stream write on a file: {e:?}");
        let dir = std::fs::File::open("/").unwrap();
        assert!(matches!(a.watch(&dir), Err(Error::Unsupported)), "directory");

        let (mut client, server) = util::tcp_pair();
        let conn = a.watch(&server).unwrap();
        drop(server);
        let e = b.read("r", &conn, Some(vec![1; 3])).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), ("r", Some(vec![1; 3])));
        let e = b.read("swap", &conn, None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), ("swap", None));
        let e = b.write("w", &conn, vec![2; 5]).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!((e.context, e.buffer.and_then(gaio::Buffer::into_vec)), ("w", Some(vec![2; 5])));
        let e = b.read_full("rf", &conn, vec![0; 4], None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert!(matches!(b.free(&conn), Err(Error::Unsupported)));
        util::expect_quiet(&b, std::time::Duration::from_millis(100));

        // Still A's, still working.
        assert!(!conn.is_freed());
        a.write("ok", &conn, b"x".to_vec()).unwrap();
        util::wait_until(&a, std::time::Duration::from_secs(10), "A's write", |res| {
            assert_eq!(res.op, OpType::Write);
            assert!(res.error.is_none(), "{res:?}");
            true
        });
        let mut one = [0u8; 1];
        client.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        std::io::Read::read_exact(&mut client, &mut one).unwrap();
        assert_eq!(&one, b"x");
    }

    /// Go `TestWriteOnClosedConn`: Go dials, closes the conn and submits a write, which fails
    /// asynchronously when the dup hits the closed descriptor. Here registration is explicit:
    /// `watch` on a descriptor number that is closed returns `Err(Io(EBADF))` at once.
    fn write_on_closed_conn(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (client, _server) = util::tcp_pair();
        // A high number, where nothing else in this process allocates one meanwhile (the
        // kernel hands out the lowest free number), so the closed number stays closed.
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own; it creates a new one.
        let raw = unsafe { libc::fcntl(client.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000) };
        assert!(raw >= 1000, "F_DUPFD: {}", std::io::Error::last_os_error());
        drop(client);
        // SAFETY: `raw` is our own duplicate, closed exactly once, here.
        assert_eq!(unsafe { libc::close(raw) }, 0);
        assert!(!util::fd_is_open(raw));
        // SAFETY: deliberately NOT upheld: `borrow_raw` requires an open descriptor and `raw`
        // is closed, which is the point of the test. Nothing reads or writes through it; the
        // only use is `watch`'s fcntl(F_DUPFD_CLOEXEC), which fails with EBADF, and the
        // number cannot have been reused (see above).
        let closed = unsafe { BorrowedFd::borrow_raw(raw) };
        match w.watch(&closed) {
            Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}"),
            other => panic!("watch on a closed descriptor: {other:?}"),
        }
        assert!(!util::fd_is_open(raw), "watch must not leave a descriptor behind");
    }

    /// `OpResult::result()` is `Ok(size)` for a completed request and `Err(&error)` for one
    /// that ended early, with the partial progress still in `size`; the owned error converts
    /// into the `io::Error` kind std would use (a deadline is `TimedOut`, the end of the stream
    /// `UnexpectedEof`, a refused submission `InvalidInput`).
    fn result_view_and_io_conversion(backend) {
        use std::io::{ErrorKind, Write};
        use std::time::Duration;
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (mut client, server) = util::tcp_pair();
        let conn = w.watch(&server).unwrap();
        drop(server);
        let limit = Duration::from_secs(10);
        let take = |what: &'static str| {
            let mut got = None;
            let rest = util::wait_until(&w, limit, what, |r| {
                got = Some(r);
                true
            });
            assert!(rest.is_empty(), "{rest:?}");
            got.unwrap()
        };

        client.write_all(b"abc").unwrap();
        w.read("read", &conn, Some(vec![0; 8])).unwrap();
        let r = take("the read");
        assert_eq!(r.result().ok(), Some(3), "{r:?}");

        // A read_full that gets 2 of its 4 bytes before its deadline: Err(Deadline), size 2.
        client.write_all(b"de").unwrap();
        w.read_full("half", &conn, vec![0; 4], Some(Instant::now() + Duration::from_millis(200)))
            .unwrap();
        let mut r = take("the read_full deadline");
        assert!(matches!(r.result(), Err(Error::Deadline)), "{r:?}");
        assert_eq!((r.size, r.data()), (2, &b"de"[..]), "partial progress is kept beside Err");
        let io = std::io::Error::from(r.error.take().unwrap());
        assert_eq!(io.kind(), ErrorKind::TimedOut);

        drop(client);
        w.read("eof", &conn, None).unwrap();
        let mut r = take("the read at EOF");
        assert!(matches!(r.result(), Err(Error::Eof)), "{r:?}");
        let io = std::io::Error::from(r.error.take().unwrap());
        assert_eq!(io.kind(), ErrorKind::UnexpectedEof);

        // A refused submission converts too (the context and buffer are dropped).
        let io = std::io::Error::from(w.write("empty", &conn, Vec::new()).unwrap_err());
        assert_eq!(io.kind(), ErrorKind::InvalidInput);
        util::expect_quiet(&w, Duration::from_millis(50));
    }
}
