//! A backend thread that fails (issue 12, class 5): injected with the test hook
//! `Watcher::inject_failure`, on every thread of both backends. The watcher must fail closed:
//! every pending request gets its one result and its buffer back, `wait_io` then reports
//! `Error::WatcherFailed` naming the thread, no later request reaches a descriptor (not even
//! one that reused a freed descriptor's number), and closing leaves no descriptor or thread.
#[macro_use]
mod util;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use gaio::{Backend, Builder, Error, OpType};
use util::*;

/// The tests of this file one at a time: each counts the process's descriptors and gaio
/// threads before and after, which a watcher of a test running alongside would change.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Injects a failure of `thread` with requests pending, then checks everything above.
fn fails_closed(backend: Backend, thread: &str) {
    let _serial = serial();
    let before = open_fds();
    let Some(w) = build::<u32>(backend, Builder::default()) else {
        return;
    };
    let (mut client, server) = tcp_pair();
    let conn = w.watch(&server).unwrap();
    drop(server);
    let old_fd = conn.raw_fd();
    // Pending when the thread fails: a swap read, a read into a buffer behind it, and a
    // write that cannot finish (the peer never reads 64 MiB).
    let mut pending: HashMap<u64, &str> = HashMap::new();
    pending.insert(w.read(1, &conn, None).unwrap().as_u64(), "swap read");
    pending.insert(
        w.read(2, &conn, Some(vec![0; 64])).unwrap().as_u64(),
        "read",
    );
    let big = vec![7u8; 64 << 20];
    pending.insert(w.write(3, &conn, big).unwrap().as_u64(), "write");
    let dir = std::env::temp_dir().join(format!("gaio-failure-{}-{thread}", std::process::id()));
    let file = std::fs::File::create(&dir).unwrap();
    let fconn = w.watch(&file).unwrap();
    drop(file);

    w.inject_failure(thread).unwrap();
    if thread == "gaio-file" {
        // The file thread fails at its next job: an fsync always goes to one.
        pending.insert(w.fsync(4, &fconn, None).unwrap().as_u64(), "fsync");
    }

    let limit = Instant::now() + Duration::from_secs(20);
    let failure = loop {
        assert!(
            Instant::now() < limit,
            "{thread}: the watcher never reported the failure"
        );
        match w.wait_io_timeout(Duration::from_millis(100)) {
            Ok(batch) => {
                for r in batch {
                    let what = pending
                        .remove(&r.id.as_u64())
                        .unwrap_or_else(|| panic!("{thread}: a second or unknown result {r:?}"));
                    assert!(r.error.is_some(), "{thread}: {what} completed: {r:?}");
                    if r.op == OpType::Write {
                        assert_eq!(r.buffer.as_slice().len(), 64 << 20, "the write's buffer");
                    }
                }
            }
            Err(e) => break e,
        }
    };
    match &failure {
        Error::WatcherFailed(why) => assert!(why.contains(thread), "{thread}: {why}"),
        other => panic!("{thread}: wait_io ended with {other:?}, not WatcherFailed"),
    }
    assert!(pending.is_empty(), "{thread}: no result for {pending:?}");

    // The connection's descriptor is closed; a new socket may get its number. A request on the
    // old handle must never reach it.
    let (mut peer, fresh) = tcp_pair();
    let reused = {
        use std::os::fd::AsRawFd;
        fresh.as_raw_fd() == old_fd
    };
    if w.write(5, &conn, b"stale".to_vec()).is_ok() {
        // Accepted: it must end without reaching a descriptor.
        let limit = Instant::now() + Duration::from_secs(5);
        'wait: while Instant::now() < limit {
            match w.wait_io_timeout(Duration::from_millis(100)) {
                Ok(mut batch) => {
                    if let Some(r) = batch.next() {
                        assert_eq!(r.context, 5);
                        assert!(r.error.is_some(), "{thread}: the stale write completed");
                        break 'wait;
                    }
                }
                Err(_) => break 'wait,
            }
        }
    }
    peer.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    match peer.read(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => {
            panic!("{thread}: a stale write reached a new socket (reused {reused}): {other:?}")
        }
    }
    let _ = client.write_all(b"x");
    drop((conn, fconn, fresh, peer, client));
    w.close().unwrap();
    drop(w);
    let _ = std::fs::remove_file(&dir);
    assert_fds(&before, before.len(), &format!("{thread}: after close"));
    assert!(
        gaio_threads().is_empty(),
        "{thread}: threads left: {:?}",
        gaio_threads()
    );
}

#[test]
fn epoll_loop_thread_fails_closed() {
    fails_closed(Backend::Epoll, "gaio-loop");
}

#[test]
fn epoll_poller_thread_fails_closed() {
    fails_closed(Backend::Epoll, "gaio-poller");
}

#[test]
fn epoll_file_thread_fails_closed() {
    fails_closed(Backend::Epoll, "gaio-file");
}

#[test]
fn uring_ring_thread_fails_closed() {
    fails_closed(Backend::Uring, "gaio-uring");
}

/// The hook refuses a thread the backend does not have, on both backends.
#[test]
fn inject_failure_refuses_unknown_threads() {
    let _serial = serial();
    for backend in [Backend::Epoll, Backend::Uring] {
        let Some(w) = watcher_for::<()>(backend) else {
            continue;
        };
        let other = if backend == Backend::Uring {
            "gaio-loop"
        } else {
            "gaio-uring"
        };
        for name in ["nope", other] {
            assert!(matches!(
                w.inject_failure(name),
                Err(Error::InvalidArgument(_))
            ));
        }
        w.close().unwrap();
        assert!(w.inject_failure("gaio-loop").is_err());
    }
}
