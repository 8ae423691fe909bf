//! An io_uring ring far smaller than the load (`Builder::ring_entries`): the submission queue
//! fills on every burst and the completion queue overflows, and nothing may be lost or hang
//! (the tests the io_uring peers run, peer-demands §3). The epoll half runs the same load with
//! the setting ignored.
#[macro_use]
mod util;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use gaio::{Builder, Error, OpType};
use util::*;

/// Connections, each with a read and a write in flight at once: 4 x more requests than the
/// ring's completion queue holds, 16 x its submission queue.
const CONNS: usize = 256;
const ENTRIES: u32 = 8;

/// The tests of this file one at a time: the echo test counts the process's descriptors
/// before and after, which a test running alongside (64 pairs, 256 connections) would change.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

backend_tests! {
    /// Every connection echoes 4 KiB through the watcher with a ring of 8 entries.
    fn echo_through_a_tiny_ring(backend) {
        let _serial = serial();
        let before = open_fds();
        let Some(w) = build::<usize>(backend, Builder::default().ring_entries(ENTRIES)) else {
            return;
        };
        let ln = listen();
        let addr = ln.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut conns = Vec::new();
        for i in 0..CONNS {
            let c = dial(addr);
            let (s, _) = ln.accept().unwrap();
            conns.push(w.watch(&s).unwrap());
            // Every client sends first, so every read completes at once.
            let mut c = c;
            c.write_all(&[i as u8; 4096]).unwrap();
            clients.push(c);
        }
        for (i, c) in conns.iter().enumerate() {
            w.read_full(i, c, vec![0; 4096], None).unwrap();
        }
        let mut echoed = 0;
        let mut written = 0;
        let mut seen: HashMap<u64, usize> = HashMap::new();
        let limit = Instant::now() + Duration::from_secs(30);
        while written < CONNS {
            assert!(Instant::now() < limit, "stalled: {echoed} echoed, {written} written");
            for r in w.wait_io_timeout(Duration::from_millis(100)).unwrap() {
                *seen.entry(r.id.as_u64()).or_default() += 1;
                assert!(r.error.is_none(), "{:?}: {:?}", r.op, r.error);
                match r.op {
                    OpType::ReadFull => {
                        echoed += 1;
                        assert_eq!(r.size, 4096);
                        let data = r.data().to_vec();
                        assert!(data.iter().all(|&b| b == r.context as u8));
                        w.write(r.context, &r.conn, data).unwrap();
                    }
                    OpType::Write => written += 1,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert!(seen.values().all(|&n| n == 1), "a request had two results");
        for (i, c) in clients.iter_mut().enumerate() {
            let mut back = [0u8; 4096];
            c.read_exact(&mut back).unwrap();
            assert!(back.iter().all(|&b| b == i as u8));
        }
        drop(conns);
        w.close().unwrap();
        drop(clients);
        drop(ln);
        assert_fds(&before, before.len(), "after close");
    }

    /// Thousands of requests with deadlines on idle connections, through a ring of 8 entries:
    /// each ends exactly once, with `Deadline`, and closing afterwards leaves nothing behind.
    fn deadlines_through_a_tiny_ring(backend) {
        let _serial = serial();
        let Some(w) = build::<usize>(backend, Builder::default().ring_entries(ENTRIES)) else {
            return;
        };
        let pairs: Vec<_> = (0..64).map(|_| tcp_pair()).collect();
        let conns: Vec<_> = pairs.iter().map(|(_, s)| w.watch(s).unwrap()).collect();
        let soon = Instant::now() + Duration::from_millis(50);
        let mut submitted = 0;
        for round in 0..16 {
            for (i, c) in conns.iter().enumerate() {
                // One pending read per connection at a time would be served FIFO; many queue.
                w.read_timeout(round * 64 + i, c, Some(vec![0; 64]), soon).unwrap();
                submitted += 1;
            }
        }
        let mut got: HashMap<usize, Option<Error>> = HashMap::new();
        let limit = Instant::now() + Duration::from_secs(30);
        while got.len() < submitted {
            assert!(Instant::now() < limit, "stalled at {} of {submitted}", got.len());
            for r in w.wait_io_timeout(Duration::from_millis(100)).unwrap() {
                assert!(got.insert(r.context, r.error).is_none(), "two results for one request");
            }
        }
        assert!(got.values().all(|e| matches!(e, Some(Error::Deadline))));
        w.close().unwrap();
    }
}

/// Every value of the setting gives a watcher or `InvalidArgument`, the same on both backends.
#[test]
fn ring_entries_extremes() {
    for backend in [gaio::Backend::Epoll, gaio::Backend::Uring] {
        for n in [0u32, gaio::MAX_RING_ENTRIES + 1, u32::MAX] {
            match Builder::default()
                .ring_entries(n)
                .backend(backend)
                .build::<()>()
            {
                Err(Error::InvalidArgument(_)) => {}
                other => panic!("{backend}: ring_entries({n}) gave {other:?}"),
            }
        }
        for n in [1u32, 3, gaio::MAX_RING_ENTRIES] {
            match build::<()>(backend, Builder::default().ring_entries(n)) {
                Some(w) => drop(w),
                None => continue,
            }
        }
    }
}
