//! Closing or dropping the watcher with requests in flight, file requests included
//! (tokio-uring's `complete_ops_on_drop`; issue 12), on both backends. Each round submits a
//! mix that is still running when the watcher goes: many `read_at`/`write_at`/`fsync`/
//! `fdatasync` on a file in a temporary directory (on io_uring they may sit in io-wq; on epoll
//! on the file threads), reads waiting for data and a large write that cannot finish on
//! sockets, and a pending accept.
//!
//! - `close`: every accepted submission gets exactly one result, collected after close with
//!   `wait_io` until `WatcherClosed` (the real result if it finished first, else
//!   `ClosedPipe`); every caller buffer comes back whole (same pointer and length);
//! - `drop` without close: the drop does the same work (threads joined, descriptors closed);
//! - both: no descriptor and no watcher thread left behind (`/proc/self/fd` and
//!   `/proc/self/task`, compared with before the watcher; needs a process of its own, so
//!   counted only under cargo-nextest).

#[macro_use]
mod util;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gaio::{Buffer, Conn, Error, OpId, OpType, Watcher};

const T10: Duration = Duration::from_secs(10);
/// Rounds per test: the close meets the requests at different stages.
const ROUNDS: u64 = 30;
/// File requests per round.
const FILE_OPS: usize = 256;
const FILE_LEN: u64 = 4 << 20;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("close-in-flight-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a submission was, to check its result against.
struct Sent {
    op: OpType,
    /// Pointer and length of the caller buffer (None: swap read or no buffer).
    buf: Option<(usize, usize)>,
}

/// Submits the round's mix on `w`; returns what was accepted (by id) and the handles and peers
/// to keep alive until the end.
fn submit_mix(
    w: &Watcher<u64>,
    dir: &Dir,
    round: u64,
    rng: &mut util::XorShift,
) -> (HashMap<OpId, Sent>, Vec<Conn>, Vec<UnixStream>) {
    let mut sent = HashMap::new();
    let mut conns = Vec::new();
    let mut peers = Vec::new();
    let path = dir.0.join(format!("f{round}"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(FILE_LEN).unwrap();
    let fc = w.watch(&f).unwrap();
    drop(f);
    let mut ctx = 0u64;
    for i in 0..FILE_OPS {
        ctx += 1;
        let off = (rng.next_u64() % (FILE_LEN / 4096)) * 4096;
        let len = 4096 * (1 + (rng.next_u64() % 16) as usize);
        let (op, r) = match i % 8 {
            0..=3 => (OpType::ReadAt, Some(vec![0u8; len])),
            4..=6 => (OpType::WriteAt, Some(vec![i as u8; len])),
            _ if i % 16 == 7 => (OpType::Fdatasync, None),
            _ => (OpType::Fsync, None),
        };
        let shape = r.as_ref().map(|v| (v.as_ptr() as usize, v.len()));
        let id = match (op, r) {
            (OpType::ReadAt, Some(v)) => w.read_at(ctx, &fc, v, off, None),
            (OpType::WriteAt, Some(v)) => w.write_at(ctx, &fc, v, off, None),
            (OpType::Fdatasync, _) => w.fdatasync(ctx, &fc, None),
            _ => w.fsync(ctx, &fc, None),
        }
        .unwrap_or_else(|e| panic!("file request refused: {:?}", e.error));
        sent.insert(id, Sent { op, buf: shape });
    }
    conns.push(fc);
    // Sockets: reads waiting for data (swap and caller buffers), a write too large for the
    // socket buffer that the peer never reads, a pending accept.
    for i in 0..8 {
        let (mine, peer) = UnixStream::pair().unwrap();
        let c = w.watch(&mine).unwrap();
        ctx += 1;
        let buf = (i % 2 == 1).then(|| vec![0u8; 64]);
        let shape = buf.as_ref().map(|v| (v.as_ptr() as usize, v.len()));
        let id = w.read(ctx, &c, buf).unwrap();
        sent.insert(
            id,
            Sent {
                op: OpType::Read,
                buf: shape,
            },
        );
        if i == 0 {
            ctx += 1;
            let v = vec![7u8; 8 << 20];
            let shape = Some((v.as_ptr() as usize, v.len()));
            let id = w.write(ctx, &c, v).unwrap();
            sent.insert(
                id,
                Sent {
                    op: OpType::Write,
                    buf: shape,
                },
            );
        }
        conns.push(c);
        peers.push(peer);
    }
    let ln = util::listen();
    let lc = w.watch(&ln).unwrap();
    ctx += 1;
    let id = w.accept(ctx, &lc).unwrap();
    sent.insert(
        id,
        Sent {
            op: OpType::Accept,
            buf: None,
        },
    );
    conns.push(lc);
    (sent, conns, peers)
}

backend_tests! {
    /// Close with requests in flight: exactly one result for each, buffers back, then
    /// `WatcherClosed`; nothing left open or running.
    fn close_with_requests_in_flight(backend) {
        let counting = util::own_process("close_with_requests_in_flight");
        let dir = Dir::new(&format!("close-{backend}"));
        let mut rng = util::XorShift::new(0xc105e ^ backend as u64);
        let mut classes: HashMap<String, usize> = HashMap::new();
        for round in 0..ROUNDS {
            let threads0 = util::gaio_threads();
            let fds0 = util::open_fds();
            let Some(w) = util::watcher_for::<u64>(backend) else { return };
            let (mut sent, conns, peers) = submit_mix(&w, &dir, round, &mut rng);
            let n = sent.len();
            // Close at different moments: at once, or after a short wait (whose results are
            // checked like the others).
            if round % 3 == 1 {
                for r in w.wait_io_timeout(Duration::from_micros(200)).unwrap() {
                    let s = sent.remove(&r.id).expect("one result per request");
                    check_buffer(&r.buffer, s.buf, &r);
                }
            }
            let close_at = Instant::now();
            w.close().unwrap();
            let close_took = close_at.elapsed();
            assert!(close_took < T10, "{backend}: close took {close_took:?}");
            let start = Instant::now();
            loop {
                assert!(start.elapsed() < T10, "{backend}: draining after close did not end");
                match w.wait_io_timeout(T10) {
                    Ok(batch) => {
                        assert!(!batch.is_empty(), "{backend}: empty batch after close");
                        for r in batch {
                            let s = sent.remove(&r.id).unwrap_or_else(|| {
                                panic!("{backend}: a second result, or one never submitted: {r:?}")
                            });
                            assert_eq!(r.op, s.op, "{r:?}");
                            check_buffer(&r.buffer, s.buf, &r);
                            let class = match &r.error {
                                None => "ok".to_string(),
                                Some(Error::Io(e)) => format!("io {e}"),
                                Some(e) => format!("{e:?}"),
                            };
                            *classes.entry(format!("{:?} {class}", r.op)).or_default() += 1;
                        }
                    }
                    Err(Error::WatcherClosed) => break,
                    Err(e) => panic!("{backend}: wait_io after close: {e}"),
                }
            }
            assert!(sent.is_empty(), "{backend}: {} of {n} requests without a result", sent.len());
            drop((conns, peers));
            drop(w);
            if counting {
                util::eventually(T10, "the watcher threads joined", || util::gaio_threads() == threads0);
                util::assert_fds(&fds0, fds0.len(), &format!("{backend}: after close, round {round}"));
            }
        }
        let mut c: Vec<_> = classes.into_iter().collect();
        c.sort();
        println!("{backend}: results after close over {ROUNDS} rounds: {c:?}");
    }

    /// Drop (no close) with requests in flight: the drop joins the threads and closes every
    /// descriptor; handles that outlive the watcher are harmless.
    fn drop_with_requests_in_flight(backend) {
        let counting = util::own_process("drop_with_requests_in_flight");
        let dir = Dir::new(&format!("drop-{backend}"));
        let mut rng = util::XorShift::new(0xd409 ^ backend as u64);
        for round in 0..ROUNDS {
            let threads0 = util::gaio_threads();
            let fds0 = util::open_fds();
            let Some(w) = util::watcher_for::<u64>(backend) else { return };
            let (sent, conns, peers) = submit_mix(&w, &dir, round, &mut rng);
            assert!(!sent.is_empty());
            if round % 3 == 1 {
                let _ = w.wait_io_timeout(Duration::from_micros(200)).unwrap().count();
            }
            let start = Instant::now();
            drop(w);
            assert!(start.elapsed() < T10, "{backend}: drop took {:?}", start.elapsed());
            if counting {
                util::eventually(T10, "the watcher threads joined", || util::gaio_threads() == threads0);
                // The peers are the test's own; the watcher's descriptors are all closed.
                util::assert_fds(&fds0, fds0.len() + peers.len(), &format!("{backend}: after drop, round {round}"));
            }
            drop((conns, peers));
            if counting {
                util::assert_fds(&fds0, fds0.len(), &format!("{backend}: after drop and the handles, round {round}"));
            }
        }
    }
}

/// The caller's buffer comes back whole: the same allocation, the same length.
fn check_buffer(b: &Buffer, sent: Option<(usize, usize)>, r: &gaio::OpResult<u64>) {
    match (b, sent) {
        (Buffer::User(v), Some(shape)) => {
            assert_eq!(
                (v.as_ptr() as usize, v.len()),
                shape,
                "not the buffer submitted: {r:?}"
            )
        }
        (Buffer::None | Buffer::Swap(_), None) => {}
        (other, want) => panic!("buffer {other:?}, submitted {want:?}: {r:?}"),
    }
}
