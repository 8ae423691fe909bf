//! Bad input, on both backends (DESIGN.md property 5): every case gets a typed error, never a
//! panic or a hang, and loses nothing (a refused submission hands its context and buffer back
//! in `SubmitError`; an accepted one yields exactly one result with its buffer).
//!
//! Zero-length buffers on every submit call; descriptors that are closed, were never open, or
//! lie beyond the descriptor limit; descriptors that are not sockets (regular file, directory,
//! `/dev/null`, a pipe, a socket that was never connected, a listening socket given to read
//! and write); 1 GiB buffers; deadlines in the past and a century ahead; invalid CPU ids;
//! invalid builder values; every call after `close`. What each backend does where the two
//! may differ is printed (run with `--no-capture`) and summed up in the test's documentation.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use gaio::{Error, OpResult, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);
const GIB: usize = 1 << 30;

/// Exactly one result within `limit`, and no second one right after.
fn one_within<C: Send + 'static>(w: &Watcher<C>, limit: Duration, what: &str) -> OpResult<C> {
    let mut got = None;
    let rest = util::wait_until(w, limit, what, |r| {
        got = Some(r);
        true
    });
    assert!(rest.is_empty(), "more than one result: {rest:?}");
    util::expect_quiet(w, Duration::from_millis(20));
    got.unwrap()
}

fn one<C: Send + 'static>(w: &Watcher<C>, what: &str) -> OpResult<C> {
    one_within(w, T10, what)
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both are fresh descriptors that nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A descriptor number that is not open in this process (and that nothing in this test opens
/// meanwhile: the kernel hands out the lowest free number, and this one is far above).
fn unused_fd_number() -> i32 {
    let n = (util::nofile().0 as i32 - 10).clamp(100, 1 << 20);
    assert!(!util::fd_is_open(n), "descriptor {n} is open");
    n
}

/// Submits a `read`, `read_full` and `write` on `conn` and returns their results (in that
/// order), each within 10 s: whatever the descriptor is, each gets exactly one.
fn one_of_each(w: &Watcher<&'static str>, conn: &gaio::Conn) -> Vec<OpResult<&'static str>> {
    let mut out = Vec::new();
    w.read("read", conn, None).unwrap();
    out.push(one(w, "the read"));
    w.read_full("read_full", conn, vec![0; 16], None).unwrap();
    let r = one(w, "the read_full");
    assert_eq!(util::user_buf_ref(&r.buffer).len(), 16);
    out.push(r);
    w.write("write", conn, vec![1; 16]).unwrap();
    let r = one(w, "the write");
    assert_eq!(util::user_buf_ref(&r.buffer).len(), 16);
    out.push(r);
    out
}

fn describe(r: &OpResult<&'static str>) -> String {
    match &r.error {
        None => format!("{}: ok, {} bytes", r.context, r.size),
        Some(e) => format!("{}: {e:?} after {} bytes", r.context, r.size),
    }
}

backend_tests! {
    /// A zero-length buffer on every submit call that takes one (the stream requests, and
    /// `read_at`/`write_at` on a file): `EmptyBuffer`, the context and the very same `Vec`
    /// (same capacity) back, and no result later.
    fn zero_length_buffers(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (_peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let file = w.watch(&exe).unwrap();
        let at = Instant::now() + T10;
        type Submitted = Result<gaio::OpId, gaio::SubmitError<&'static str>>;
        type Call<'a> = Box<dyn Fn(Vec<u8>) -> Submitted + 'a>;
        let calls: Vec<(&str, Call)> = vec![
            ("read", Box::new(|b| w.read("read", &conn, Some(b)))),
            ("read_timeout", Box::new(|b| w.read_timeout("read_timeout", &conn, Some(b), at))),
            ("read_full", Box::new(|b| w.read_full("read_full", &conn, b, None))),
            ("read_full+dl", Box::new(|b| w.read_full("read_full+dl", &conn, b, Some(at)))),
            ("write", Box::new(|b| w.write("write", &conn, b))),
            ("write_timeout", Box::new(|b| w.write_timeout("write_timeout", &conn, b, at))),
            ("read_at", Box::new(|b| w.read_at("read_at", &file, b, 0, None))),
            ("write_at", Box::new(|b| w.write_at("write_at", &file, b, 0, Some(at)))),
        ];
        for (name, call) in calls {
            let e = call(Vec::with_capacity(100)).unwrap_err();
            assert!(matches!(e.error, Error::EmptyBuffer), "{name}: {e:?}");
            assert_eq!(e.context, name);
            let back = e.buffer.and_then(gaio::Buffer::into_vec);
            assert_eq!(back.map(|v| v.capacity()), Some(100), "{name}: not the same Vec");
        }
        util::expect_quiet(&w, Duration::from_millis(50));
        // The connection is unharmed.
        w.write("after", &conn, b"x".to_vec()).unwrap();
        assert!(one(&w, "a write after the refusals").error.is_none());
    }

    /// Descriptors that are not open: a number closed just before, one that was never open,
    /// and one beyond the descriptor limit. `watch` fails with `Io(EBADF)` at once and leaves
    /// nothing open. Closing the caller's own descriptor after `watch` is fine: the watcher
    /// has its duplicate.
    fn closed_and_never_open_descriptors(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let never = unused_fd_number();
        let (c, _s) = util::tcp_pair();
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor we own creates a new one, at or above
        // `never - 5`, where nothing else in this test allocates.
        let closed = unsafe { libc::fcntl(c.as_raw_fd(), libc::F_DUPFD_CLOEXEC, never - 5) };
        assert!(closed >= never - 5, "{}", std::io::Error::last_os_error());
        // SAFETY: our own duplicate, closed once, here.
        assert_eq!(unsafe { libc::close(closed) }, 0);
        let numbers = [("closed", closed), ("never open", never), ("beyond the limit", 1 << 29)];
        for (what, n) in numbers {
            assert!(!util::fd_is_open(n));
            // SAFETY: deliberately not upheld: `n` is not an open descriptor, which is the
            // point. Nothing reads or writes through it; `watch` only duplicates it, which
            // fails with EBADF, and no descriptor can appear at that number meanwhile.
            let fd = unsafe { BorrowedFd::borrow_raw(n) };
            match w.watch(&fd) {
                Err(Error::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{what}: {e}"),
                other => panic!("{backend}: watch of a {what} descriptor: {other:?}"),
            }
            assert!(!util::fd_is_open(n), "watch opened {n}");
        }
        // The caller closes its original right after watch: the connection works.
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        drop(mine);
        w.write((), &conn, b"dup".to_vec()).unwrap();
        assert!(one(&w, "a write after the caller closed its descriptor").error.is_none());
        let mut b = [0u8; 3];
        peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"dup");
    }

    /// Descriptors that are not sockets, or not connected ones:
    /// - a directory: `watch` gives `Unsupported`; a regular file is taken over (for the file
    ///   requests), and the stream requests on it (`read` with and without a buffer,
    ///   `read_full`, `write`) are refused with `Unsupported`, context and buffer back;
    /// - a pipe works: bytes written through the watcher on the write end come out of a read
    ///   on the read end, and EOF follows once the write end is freed;
    /// - `/dev/null` (a character device): on epoll it cannot be registered (epoll_ctl says
    ///   `EPERM`), so `watch` fails with `Unsupported`; on io_uring it is accepted, reads end
    ///   with `Eof` at once and writes complete; either way nothing hangs;
    /// - a TCP socket that was never connected: reads end with `Io(ENOTCONN)`, a write with
    ///   `Io(EPIPE)`, on both backends: each request gets one result.
    fn non_socket_descriptors(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let file = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let fconn = w.watch(&file).expect("a regular file is taken over for file requests");
        let e = w.read("read", &fconn, Some(vec![1; 4])).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!((e.context, e.buffer.as_ref().map(gaio::Buffer::as_slice)), ("read", Some(&[1u8; 4][..])));
        let e = w.read("swap read", &fconn, None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported) && e.buffer.is_none(), "{e:?}");
        let e = w.read_full("read_full", &fconn, vec![2; 4], None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!(e.buffer.as_ref().map(gaio::Buffer::as_slice), Some(&[2u8; 4][..]));
        let e = w.write("write", &fconn, vec![3; 4]).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!(e.buffer.as_ref().map(gaio::Buffer::as_slice), Some(&[3u8; 4][..]));
        util::expect_quiet(&w, Duration::from_millis(20));
        let dir = std::fs::File::open("/").unwrap();
        assert!(matches!(w.watch(&dir), Err(Error::Unsupported)), "directory");

        let (rd, wr) = pipe();
        let rconn = w.watch(&rd).unwrap();
        let wconn = w.watch(&wr).unwrap();
        drop((rd, wr));
        w.write("pipe write", &wconn, b"through a pipe".to_vec()).unwrap();
        assert!(one(&w, "the pipe write").error.is_none());
        w.read_full("pipe read", &rconn, vec![0; 14], None).unwrap();
        assert_eq!(one(&w, "the pipe read").data(), b"through a pipe");
        w.free(&wconn).unwrap();
        w.read("pipe eof", &rconn, None).unwrap();
        assert!(matches!(one(&w, "EOF on the pipe").error, Some(Error::Eof)));

        let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null").unwrap();
        match w.watch(&null) {
            Err(e) => {
                println!("{backend}: watch(/dev/null): {e:?}");
                assert!(matches!(e, Error::Unsupported), "{backend}: {e:?}");
                assert_eq!(backend, gaio::Backend::Epoll, "io_uring can drive /dev/null");
            }
            Ok(conn) => {
                let r = one_of_each(&w, &conn);
                println!("{backend}: /dev/null: {:?}", r.iter().map(describe).collect::<Vec<_>>());
                assert!(matches!(r[0].error, Some(Error::Eof)), "{:?}", r[0]);
                assert!(matches!(r[1].error, Some(Error::Eof)), "{:?}", r[1]);
                assert!(r[2].error.is_none() && r[2].size == 16, "{:?}", r[2]);
            }
        }

        let fresh =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let conn = w.watch(&fresh).unwrap();
        let r = one_of_each(&w, &conn);
        let what: Vec<_> = r.iter().map(describe).collect();
        println!("{backend}: unconnected TCP socket: {what:?}");
        for x in &r[..2] {
            assert_eq!(util::errno_of(&x.error), Some(libc::ENOTCONN), "{backend}: {x:?}");
        }
        assert_eq!(util::errno_of(&r[2].error), Some(libc::EPIPE), "{backend}: {:?}", r[2]);
    }

    /// A listening socket given to `read`, `read_full` and `write` (instead of `accept`):
    /// each request ends with exactly one result carrying an error, at once. Both backends:
    /// `ENOTCONN` for the reads and `EPIPE` for the write. The listener still accepts
    /// afterwards (through an `accept` request).
    fn listening_socket_given_to_read(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = ln.local_addr().unwrap();
        let conn = w.watch(&ln).unwrap();
        drop(ln);
        let r = one_of_each(&w, &conn);
        println!("{backend}: listening socket: {:?}", r.iter().map(describe).collect::<Vec<_>>());
        for (x, op) in r[..2].iter().zip([OpType::Read, OpType::ReadFull]) {
            assert_eq!(x.op, op);
            assert_eq!(util::errno_of(&x.error), Some(libc::ENOTCONN), "{backend}: {x:?}");
        }
        assert_eq!(util::errno_of(&r[2].error), Some(libc::EPIPE), "{backend}: {:?}", r[2]);
        // With a deadline too: the error comes first, not the deadline.
        w.read_timeout("read_timeout", &conn, Some(vec![0; 4]), Instant::now() + T10).unwrap();
        let x = one(&w, "read_timeout on a listener");
        assert_eq!(util::errno_of(&x.error), Some(libc::ENOTCONN), "{backend}: {x:?}");
        // Still a listener.
        w.accept("accept", &conn).unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let a = one(&w, "the accept");
        assert!(a.error.is_none() && a.accepted.is_some(), "{backend}: {a:?}");
    }

    /// A read into a 1 GiB buffer completes with whatever arrives (10 bytes) and hands the
    /// whole 1 GiB `Vec` back.
    fn read_into_1_gib_buffer(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        w.read((), &conn, Some(vec![0; GIB])).unwrap();
        peer.write_all(b"0123456789").unwrap();
        let r = one(&w, "the read into 1 GiB");
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.data(), b"0123456789");
        assert_eq!(util::user_buf(r.buffer).len(), GIB);
    }

    /// 1 GiB through one connection, both ends on the watcher: a `write_timeout` of 1 GiB and,
    /// on the other end, a `read_full` of 1 GiB, both with a 60 s deadline. Both complete
    /// with every byte (they take about a second), and the bytes match.
    fn write_and_read_full_1_gib(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (a, b) = util::tcp_pair();
        let ca = w.watch(&a).unwrap();
        let cb = w.watch(&b).unwrap();
        drop((a, b));
        let mut data = vec![0u8; GIB];
        util::XorShift::new(42).fill(&mut data[..1 << 20]);
        for k in 1..1024 {
            data.copy_within(0..1 << 20, k << 20);
            data[k << 20] = k as u8; // each MiB differs from the first
        }
        let start = Instant::now();
        let at = start + Duration::from_secs(60);
        w.read_full("read_full", &cb, vec![0; GIB], Some(at)).unwrap();
        w.write_timeout("write", &ca, data, at).unwrap();
        let mut got = Vec::new();
        util::wait_until(&w, Duration::from_secs(90), "1 GiB written and read", |r| {
            got.push(r);
            got.len() == 2
        });
        println!("{backend}: 1 GiB written and read in {:?}", start.elapsed());
        let mut bufs = [Vec::new(), Vec::new()];
        for r in got {
            assert!(r.error.is_none(), "{backend}: {r:?}");
            assert_eq!(r.size, GIB, "{r:?}");
            let i = (r.op == OpType::ReadFull) as usize;
            bufs[i] = util::user_buf(r.buffer);
            assert_eq!(bufs[i].len(), GIB);
        }
        // The write hands its buffer back unchanged: what was written is what it holds.
        assert!(bufs[0] == bufs[1], "{backend}: the 1 GiB read differs from what was written");
        for k in 1..1024 {
            assert_eq!(bufs[1][k << 20], k as u8, "{backend}: MiB {k} out of place");
        }
    }

    /// Deadlines in the past, and one a century ahead:
    /// - a read with no data and a deadline an hour ago ends with `Deadline` at once;
    /// - with data already there it returns the data (the first attempt comes before the
    ///   deadline check, as documented);
    /// - a `read_full` with half its bytes there ends with `Deadline`, keeping them;
    /// - a small write to a peer with room completes;
    /// - an accept with no client and a past deadline ends with `Deadline`;
    /// - a deadline 100 years ahead is accepted and never fires; `free` ends the request.
    fn past_and_far_deadlines(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        let past = Instant::now().checked_sub(Duration::from_secs(3600)).unwrap();

        let start = Instant::now();
        w.read_timeout("no data", &conn, Some(vec![0; 8]), past).unwrap();
        let r = one(&w, "the past-deadline read");
        assert!(util::is_deadline(&r.error), "{backend}: {r:?}");
        assert_eq!((r.size, util::user_buf(r.buffer).len()), (0, 8));
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());

        peer.write_all(b"ready").unwrap();
        // The bytes are in the socket once the peer's write returns (loopback); a probe read
        // on a second request would consume them, so rely on that.
        w.read_timeout("data ready", &conn, None, past).unwrap();
        let r = one(&w, "the past-deadline read with data");
        println!("{backend}: past deadline, data ready: {}", describe(&r));
        assert!(r.error.is_none(), "{backend}: {r:?}");
        assert_eq!(r.data(), b"ready");

        peer.write_all(b"half").unwrap();
        w.read_full("half", &conn, vec![0; 8], Some(past)).unwrap();
        let r = one(&w, "the past-deadline read_full");
        assert!(util::is_deadline(&r.error), "{backend}: {r:?}");
        assert_eq!(r.data(), b"half", "{backend}: partial progress kept");

        w.write_timeout("write", &conn, b"room".to_vec(), past).unwrap();
        let r = one(&w, "the past-deadline write");
        println!("{backend}: past deadline, write with room: {}", describe(&r));
        assert!(r.error.is_none() && r.size == 4, "{backend}: {r:?}");

        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        let lconn = w.watch(&ln).unwrap();
        w.accept_timeout("accept", &lconn, past).unwrap();
        let r = one(&w, "the past-deadline accept");
        assert!(util::is_deadline(&r.error), "{backend}: {r:?}");

        let century = Instant::now().checked_add(Duration::from_secs(100 * 365 * 86400)).unwrap();
        w.read_timeout("century", &conn, Some(vec![0; 4]), century).unwrap();
        w.write_timeout("century write", &conn, b"w".to_vec(), century).unwrap();
        let r = one(&w, "the far-deadline write");
        assert!(r.error.is_none(), "{r:?}");
        util::expect_quiet(&w, Duration::from_millis(100));
        w.free(&conn).unwrap();
        let r = one(&w, "the far-deadline read, freed");
        assert!(util::is_closed_pipe(&r.error), "{backend}: {r:?}");
    }

    /// Invalid CPU ids on both affinity calls (`usize::MAX`, the CPU count, far beyond the
    /// largest CPU set): `CpuId` each time; the watcher works afterwards.
    fn invalid_cpu_ids(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let n = util::cpu_count();
        for cpu in [usize::MAX, n, n + 1, 1 << 20, libc::CPU_SETSIZE as usize] {
            assert!(matches!(w.set_poller_affinity(cpu), Err(Error::CpuId)), "poller {cpu}");
            assert!(matches!(w.set_loop_affinity(cpu), Err(Error::CpuId)), "loop {cpu}");
        }
        let (mut peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        w.write((), &conn, b"ok".to_vec()).unwrap();
        assert!(one(&w, "a write after the refusals").error.is_none());
        let mut b = [0u8; 2];
        peer.read_exact(&mut b).unwrap();
    }

    /// Builder values out of range: a zero swap size, one above 4 GiB, zero swap buffers:
    /// `InvalidArgument`, naming the value.
    fn invalid_builder_values(backend) {
        let cases = [
            ("swap_buffer_size(0)", Watcher::builder().swap_buffer_size(0)),
            ("swap_buffer_size(4 GiB + 1)", Watcher::builder().swap_buffer_size((4 << 30) + 1)),
            ("swap_buffers(0)", Watcher::builder().swap_buffers(0)),
        ];
        for (what, b) in cases {
            match b.backend(backend).build::<()>() {
                Err(Error::InvalidArgument(text)) => println!("{backend}: {what}: {text}"),
                other => panic!("{backend}: {what}: {other:?}"),
            }
        }
    }

    /// Every call after `close`: `watch`, `free`, `cancel`, `detach`, `wait_io` and
    /// `wait_io_timeout` give `WatcherClosed` (the last at once); every submit call
    /// (`read`, `read_timeout`, `read_full`, `write`, `write_timeout`, `accept`,
    /// `accept_timeout`, `connect`, `read_at`, `write_at`, `fsync`, `fdatasync`) is refused
    /// with `WatcherClosed`, context and buffer back;
    /// `set_poller_affinity` gives `PollerClosed`, `set_loop_affinity` `ConnClosed` (Go's
    /// choices), but an invalid CPU id is reported as `CpuId` first; `close` again is `Ok`;
    /// `gc`, `swap_stats` and `backend` still answer. A `Conn` of the closed watcher given to
    /// another watcher is `Unsupported`.
    fn every_call_after_close(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let (peer, mine) = util::tcp_pair();
        let conn = w.watch(&mine).unwrap();
        let ln = TcpListener::bind("127.0.0.1:0").unwrap();
        let lconn = w.watch(&ln).unwrap();
        let exe = std::fs::File::open(std::env::current_exe().unwrap()).unwrap();
        let file = w.watch(&exe).unwrap();
        let id = w.read("pending", &conn, None).unwrap();
        w.close().unwrap();
        let b: Vec<_> = w.wait_io_timeout(T10).expect("the pending read's result").collect();
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(util::is_closed_pipe(&b[0].error), "{b:?}");
        drop(b);
        // A refusal with `WatcherClosed`, the context and the buffer (if any) handed back.
        let refused = |r: Result<gaio::OpId, gaio::SubmitError<&'static str>>,
                       ctx: &str,
                       buf: Option<&[u8]>| {
            let e = r.unwrap_err();
            assert!(matches!(e.error, Error::WatcherClosed), "{ctx}: {e:?}");
            assert_eq!(e.context, ctx);
            assert_eq!(e.buffer.as_ref().map(gaio::Buffer::as_slice), buf, "{ctx}: the buffer comes back");
        };
        let at = Instant::now() + T10;
        let bytes = |b: u8| vec![b; 3];

        assert!(matches!(w.watch(&peer), Err(Error::WatcherClosed)));
        refused(w.read("read", &conn, Some(bytes(1))), "read", Some(&[1; 3]));
        refused(w.read("swap read", &conn, None), "swap read", None);
        refused(w.read_timeout("rt", &conn, Some(bytes(2)), at), "rt", Some(&[2; 3]));
        refused(w.read_full("rf", &conn, bytes(3), Some(at)), "rf", Some(&[3; 3]));
        refused(w.write("w", &conn, bytes(4)), "w", Some(&[4; 3]));
        refused(w.write_timeout("wt", &conn, bytes(5), at), "wt", Some(&[5; 3]));
        refused(w.accept("a", &lconn), "a", None);
        refused(w.accept_timeout("at", &lconn, at), "at", None);
        refused(w.connect("c", ln.local_addr().unwrap(), None), "c", None);
        refused(w.read_at("ra", &file, bytes(7), 0, None), "ra", Some(&[7; 3]));
        refused(w.write_at("wa", &file, bytes(8), 0, Some(at)), "wa", Some(&[8; 3]));
        refused(w.fsync("fs", &file, None), "fs", None);
        refused(w.fdatasync("fds", &file, None), "fds", None);
        assert!(matches!(w.cancel(id), Err(Error::WatcherClosed)));
        assert!(matches!(w.detach(&conn), Err(Error::WatcherClosed)));
        assert!(matches!(w.free(&conn), Err(Error::WatcherClosed)));
        assert!(matches!(w.set_poller_affinity(0), Err(Error::PollerClosed)));
        assert!(matches!(w.set_loop_affinity(0), Err(Error::ConnClosed)));
        assert!(matches!(w.set_poller_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_loop_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.wait_io(), Err(Error::WatcherClosed)));
        let start = Instant::now();
        assert!(matches!(w.wait_io_timeout(T10), Err(Error::WatcherClosed)));
        assert!(start.elapsed() < Duration::from_secs(1));
        w.close().unwrap();
        let _ = (w.gc(), w.swap_stats(), w.backend());

        let Some(other) = util::watcher_for::<&'static str>(backend) else { return };
        let e = other.read("elsewhere", &conn, Some(vec![6])).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec), Some(vec![6]));
        assert!(matches!(other.free(&conn), Err(Error::Unsupported)));
    }
}
