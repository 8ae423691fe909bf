//! CPU affinity of the watcher's threads. Ports of Go gaio's `TestSetPollerAffinityError`,
//! `TestSetLoopAffinityError` (aio_test.go), `TestSetAffinityInvalidCPU` and
//! `TestSetLoopAffinityAfterClose` (affinity_test.go), research/gaio.md §3.2 items 18-19 and
//! §3.3 items 21-22, plus pinning checked through `/proc/self/task/<tid>/status`.
//!
//! Go's CPU ids are `int` and its tests pass -1; ours are `usize`, so `usize::MAX` stands for
//! -1 (an id that cannot exist). Go's `runtime.NumCPU()` is `util::cpu_count()` here.
//!
//! On epoll the poller (`gaio-poller`) and the loop (`gaio-loop`) are two threads; on io_uring
//! one thread (`gaio-uring`) is both, and each call pins it.

#[macro_use]
mod util;

use std::io::{Read, Write};
use std::time::Duration;

use gaio::{Backend, Error, OpType, Watcher};

/// The tid of this process's only thread called `name`.
fn tid_of(name: &str) -> i32 {
    let found: Vec<i32> = util::threads()
        .into_iter()
        .filter(|(_, n)| n == name)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(found.len(), 1, "threads named {name}: {found:?}");
    found[0]
}

/// A write and a read through `w`, to show the pinned threads still work.
fn round_trip(w: &Watcher<()>) {
    let (mut peer, mine) = util::tcp_pair();
    let conn = w.watch(&mine).unwrap();
    drop(mine);
    w.write((), &conn, b"ping".to_vec()).unwrap();
    w.read((), &conn, None).unwrap();
    let mut buf = [0u8; 4];
    peer.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    peer.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    peer.write_all(b"pong").unwrap();
    let mut got = Vec::new();
    util::wait_until(w, Duration::from_secs(10), "the round trip", |res| {
        assert!(res.error.is_none(), "{res:?}");
        if res.op == OpType::Read {
            got.extend_from_slice(res.data());
            if got.len() < 4 {
                w.read((), &res.conn, None).unwrap();
            }
        }
        got.len() == 4
    });
    assert_eq!(got, b"pong");
}

backend_tests! {
    /// Go `TestSetPollerAffinityError`: ids -1 and NumCPU()+100 give `CpuId`.
    fn set_poller_affinity_error(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        assert!(matches!(w.set_poller_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_poller_affinity(util::cpu_count() + 100), Err(Error::CpuId)));
    }

    /// Go `TestSetLoopAffinityError`: ids -1 and NumCPU()+100 give `CpuId`.
    fn set_loop_affinity_error(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        assert!(matches!(w.set_loop_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_loop_affinity(util::cpu_count() + 100), Err(Error::CpuId)));
    }

    /// Go `TestSetAffinityInvalidCPU`: ids -1 and NumCPU() (one past the last) give `CpuId`
    /// on both calls.
    fn set_affinity_invalid_cpu(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let n = util::cpu_count();
        assert!(matches!(w.set_poller_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_loop_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_poller_affinity(n), Err(Error::CpuId)));
        assert!(matches!(w.set_loop_affinity(n), Err(Error::CpuId)));
    }

    /// Go `TestSetLoopAffinityAfterClose`: after close, `set_loop_affinity` gives `ConnClosed`
    /// (Go's choice, kept) and `set_poller_affinity` gives `PollerClosed`. An invalid id is
    /// still `CpuId` (checked first, as in Go).
    fn set_loop_affinity_after_close(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        w.close().unwrap();
        assert!(matches!(w.set_loop_affinity(0), Err(Error::ConnClosed)));
        assert!(matches!(w.set_poller_affinity(0), Err(Error::PollerClosed)));
        assert!(matches!(w.set_loop_affinity(usize::MAX), Err(Error::CpuId)));
        assert!(matches!(w.set_poller_affinity(usize::MAX), Err(Error::CpuId)));
    }

    /// Pinning takes effect on the named threads: poller on CPU 0 and loop on CPU 1, then the
    /// other way round, each checked in the thread's `Cpus_allowed_list`; on epoll pinning one
    /// thread leaves the other alone. The watcher still works afterwards.
    fn pin_threads(backend) {
        if !util::own_process("pin_threads") { return; }
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let allowed = util::allowed_cpus();
        if !(allowed.contains(&0) && allowed.contains(&1)) {
            eprintln!("skipped: this process may not run on CPUs 0 and 1 (allowed: {allowed:?})");
            return;
        }
        let (poller_name, loop_name) = util::thread_names(backend);
        let (poller, lp) = (tid_of(poller_name), tid_of(loop_name));
        let separate = backend != Backend::Uring;
        assert_eq!(poller != lp, separate, "{poller_name} {poller}, {loop_name} {lp}");

        for (p, l) in [(0, 1), (1, 0)] {
            let loop_before = util::cpus_allowed_list(lp);
            w.set_poller_affinity(p).unwrap();
            assert_eq!(util::cpus_allowed_list(poller), p.to_string(), "{poller_name}");
            if separate {
                assert_eq!(util::cpus_allowed_list(lp), loop_before, "the loop moved too");
            }
            w.set_loop_affinity(l).unwrap();
            assert_eq!(util::cpus_allowed_list(lp), l.to_string(), "{loop_name}");
            if separate {
                assert_eq!(util::cpus_allowed_list(poller), p.to_string(), "the poller moved");
            }
            round_trip(&w);
        }
        // Only the watcher's threads were pinned, not the caller.
        assert_eq!(util::allowed_cpus(), allowed, "the calling thread was pinned");
    }
}
