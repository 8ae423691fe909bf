//! `Builder::busy_poll` (the low-latency mode) on both backends: results still arrive (echo
//! round trips), a wait never spins past its timeout, a waker ends a spin, an over-long spin is
//! refused, and watched and accepted sockets get `SO_BUSY_POLL`.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use gaio::{Backend, Error, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);

fn spinning<C: Send + 'static>(backend: Backend, spin: Duration) -> Option<Watcher<C>> {
    util::build(backend, Watcher::builder().busy_poll(spin))
}

/// `SO_BUSY_POLL` of a socket, in µs.
fn busy_poll_of(fd: &impl AsRawFd) -> i32 {
    let mut val: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid for writes; the descriptor is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt: {}", std::io::Error::last_os_error());
    val
}

/// Whether this process may raise `SO_BUSY_POLL` above `net.core.busy_read` (CAP_NET_ADMIN).
fn may_set_busy_poll() -> bool {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let val: libc::c_int = 1234;
    // SAFETY: `val` is a valid c_int for the call.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BUSY_POLL,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    rc == 0
}

backend_tests! {
    /// 200 request/response round trips through a spinning watcher, byte-exact.
    fn round_trips_while_spinning(backend) {
        let Some(w) = spinning::<u32>(backend, Duration::from_millis(2)) else { return };
        let (mut peer, ours) = util::tcp_pair();
        peer.set_read_timeout(Some(T10)).unwrap();
        let conn = w.watch(&ours).unwrap();
        for i in 0..200u32 {
            peer.write_all(&i.to_le_bytes()).unwrap();
            w.read_full(i, &conn, vec![0; 4], Some(Instant::now() + T10)).unwrap();
            let mut got = None;
            util::wait_until(&w, T10, "the read", |r| {
                got = Some(r);
                true
            });
            let r = got.unwrap();
            assert!(r.error.is_none(), "{:?}", r.error);
            assert_eq!((r.op, r.data()), (OpType::ReadFull, &i.to_le_bytes()[..]));
            w.write(i, &conn, r.buffer).unwrap();
            util::wait_until(&w, T10, "the write", |r| {
                assert!(r.error.is_none(), "{:?}", r.error);
                true
            });
            let mut back = [0u8; 4];
            peer.read_exact(&mut back).unwrap();
            assert_eq!(back, i.to_le_bytes());
        }
    }

    /// A spin of a whole second never holds a `wait_io_timeout` of 20 ms past its timeout
    /// (by far: the bound checked is half the spin).
    fn spin_stops_at_the_timeout(backend) {
        let Some(w) = spinning::<()>(backend, gaio::MAX_BUSY_POLL) else { return };
        for _ in 0..5 {
            let t = Instant::now();
            let batch = w.wait_io_timeout(Duration::from_millis(20)).unwrap();
            assert!(batch.is_empty());
            drop(batch);
            assert!(t.elapsed() < Duration::from_millis(500), "spun for {:?}", t.elapsed());
        }
    }

    /// A waker from another thread ends a `wait_io` that spins: the wake comes 50 ms into a
    /// 1 s spin, and the wait returns long before the spin would have ended. (Were the wake
    /// early, before the wait began, the wait would return at once: the test still holds.)
    fn waker_ends_a_spin(backend) {
        let Some(w) = spinning::<()>(backend, gaio::MAX_BUSY_POLL) else { return };
        let waker = w.waker();
        let t = Instant::now();
        let wake = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            waker.wake()
        });
        let batch = w.wait_io().unwrap();
        let waited = t.elapsed();
        assert!(batch.is_empty());
        drop(batch);
        wake.join().unwrap().unwrap();
        assert!(waited < Duration::from_millis(700), "the spin ignored the wake: {waited:?}");
    }

    /// Watched sockets and the sockets an accept produces get `SO_BUSY_POLL` of the spin's
    /// microseconds where this process may set it; a pipe is watched as before.
    fn sockets_get_so_busy_poll(backend) {
        let Some(w) = spinning::<()>(backend, Duration::from_micros(1234)) else { return };
        let (_peer, ours) = util::tcp_pair();
        let _conn = w.watch(&ours).unwrap();
        let ln = util::listen();
        let lconn = w.watch(&ln).unwrap();
        w.accept((), &lconn).unwrap();
        let client = util::dial(ln.local_addr().unwrap());
        let mut accepted = None;
        util::wait_until(&w, T10, "the accept", |r| {
            accepted = r.accepted;
            true
        });
        let (r, _wr) = util::pipe();
        w.watch(&r).unwrap();
        if !may_set_busy_poll() {
            eprintln!("skipping the SO_BUSY_POLL check: this process may not set it (no CAP_NET_ADMIN)");
            return;
        }
        assert_eq!(busy_poll_of(&ours), 1234, "the watched socket");
        let accepted = accepted.expect("an accepted connection");
        // The accepted socket is the watcher's own: look at the peer's side of it through the
        // watcher's descriptor number (valid while the connection is held).
        let fd = accepted.raw_fd();
        assert_eq!(busy_poll_of(&fd), 1234, "the accepted socket");
        drop(client);
    }

    /// A spin longer than `MAX_BUSY_POLL` is refused, naming the value.
    fn over_long_spin_refused(backend) {
        let r = Watcher::<()>::builder()
            .backend(backend)
            .busy_poll(gaio::MAX_BUSY_POLL + Duration::from_nanos(1))
            .build::<()>();
        match r {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("busy_poll"), "{why}"),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("an over-long busy_poll was accepted"),
        }
    }
}
