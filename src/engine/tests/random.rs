//! The random interleaving and its invariants, and the descriptor count in a child process.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::buffer::Buffer;
use crate::conn::ConnId;
use crate::engine::LoopMsg;
use crate::lane::Lane;
use crate::op::OpId;
use crate::request::{Kind, Outcome};
use crate::swap::SwapSlice;

use super::fake::*;
use super::harness::*;

both!(randomized,);

/// A random interleaving of submits, outcomes, completions, cancels, frees, detaches,
/// expiries, readiness and swap retries, checked after every step: one result per request,
/// none for a request in flight (checked by `take`), FIFO per direction, the engine's count
/// of requests in flight equal to the driver's, descriptors forgotten once, while open and
/// with nothing in flight (checked by the fake), and closed only after that.
///
/// `GAIO_ENGINE_SEEDS=n` runs n seeds instead of 300.
fn randomized<const R: bool>() {
    let seeds = std::env::var("GAIO_ENGINE_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    for seed in 1..=seeds {
        run_random::<R>(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1, 120, false);
    }
}

/// One random run; with `count`, also checks that the descriptors open at the end are exactly
/// the test's own (meaningful only where no other thread opens any: see
/// `descriptors_closed_once`).
fn run_random<const R: bool>(seed: u64, steps: usize, count: bool) {
    let base = count.then(open_fds);
    let mut h = H::<R>::new();
    let mut rng = Rng(seed);
    h.fake().rng = Some(Rng(seed ^ 0x5555));
    h.fake().swap = Some(swap_pool());
    let mut socks: Vec<Sock> = (0..3).map(|_| h.sock()).collect();
    // Connections released (freed, detached) or whose handles were dropped, and detached
    // descriptors kept open.
    let mut gone: Vec<Gone> = Vec::new();
    let mut detached: Vec<(u64, crossbeam_channel::Receiver<Option<OwnedFd>>)> = Vec::new();
    let mut swaps: Vec<SwapSlice> = Vec::new();
    let ctx = |seed: u64, step: usize| format!("seed {seed:#x}, step {step}");
    for step in 0..steps {
        let what = rng.below(100);
        let n_socks = socks.len() as u64;
        match what {
            0..=39 if n_socks > 0 => {
                let s = &socks[rng.below(n_socks) as usize];
                let kind = match rng.below(10) {
                    0 | 1 => Kind::Read,
                    2 => Kind::ReadFull,
                    3 | 4 => Kind::Write,
                    5 => Kind::ReadAt,
                    6 => Kind::WriteAt,
                    7 => Kind::Fsync,
                    8 => Kind::Accept,
                    _ => Kind::Read,
                };
                let buf = match kind {
                    Kind::Fsync | Kind::Accept => None,
                    Kind::Read if rng.chance(50) => None,
                    _ => Some(vec![0; 1 + rng.below(16) as usize]),
                };
                let deadline = match rng.below(4) {
                    0 => Some(past()),
                    1 => Some(Instant::now() + Duration::from_secs(3600)),
                    _ => None,
                };
                let poll_first = rng.chance(20);
                h.sub(kind, s, buf, deadline, poll_first, vec![]);
            }
            40..=64 => {
                // The driver reports one request it holds.
                let mut held: Vec<u64> = h.fake().held.keys().copied().collect();
                held.sort_unstable();
                if !held.is_empty() {
                    let q = held[rng.below(held.len() as u64) as usize];
                    let key = h.fake().held[&q].0;
                    let req = h.e.in_flight_request(key).expect("held means in flight");
                    assert_eq!(req.id.seq, q);
                    let shape = Shape::of(req);
                    let d = &mut h.e.driver;
                    let o = random_outcome(&mut rng, shape, d.swap.as_mut(), &mut d.peers);
                    let o = match o {
                        Outcome::Moved(..) | Outcome::Failed(_) | Outcome::Finished => o,
                        _ if rng.chance(30) => Outcome::Canceled,
                        o => o,
                    };
                    h.complete(q, o);
                }
            }
            65..=71 => {
                let mut all: Vec<u64> = h.subs.keys().copied().collect();
                all.sort_unstable();
                if let Some(&q) = all.get(rng.below(all.len() as u64 + 1) as usize) {
                    let id = OpId {
                        watcher: 0,
                        seq: q,
                        conn: h.subs[&q].conn,
                    };
                    let pending = h.e.ops.iter().any(|(_, r)| r.id == id);
                    assert_eq!(h.e.cancel(id), pending, "{}", ctx(seed, step));
                }
            }
            72..=77 => {
                h.e.expire();
                // Nothing pending is past its deadline without an ending on its way.
                let now = Instant::now();
                for (_, r) in h.e.ops.iter() {
                    if r.deadline.is_some_and(|d| d <= now) {
                        assert!(r.in_flight && r.cancel.is_some(), "{}", ctx(seed, step));
                    }
                }
            }
            78..=84 if n_socks > 0 => {
                let s = &socks[rng.below(n_socks) as usize];
                h.e.ready(s.id(), rng.chance(60), rng.chance(60));
            }
            85..=88 => {
                if rng.chance(50) {
                    swaps.clear();
                }
                h.e.retry_starved();
            }
            89 | 90 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                h.free(&s);
                gone.push(Gone::of(s, false));
            }
            91 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                let (tx, rx) = crossbeam_channel::bounded(1);
                s.conn.0.freed.store(true, Ordering::Release);
                h.e.detach(s.id(), tx);
                // The reply comes when the last request in flight on it completes.
                detached.push((s.ino, rx));
                gone.push(Gone::of(s, false));
            }
            92..=94 if n_socks < 6 => socks.push(h.sock()),
            // The last handle goes once no request or result holds a clone.
            95 | 96 if n_socks > 1 => {
                let s = socks.swap_remove(rng.below(n_socks) as usize);
                gone.push(Gone::of(s, true));
            }
            _ => {}
        }
        take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
        assert_eq!(
            h.e.in_flight(),
            h.e.driver.held.len(),
            "{}",
            ctx(seed, step)
        );
        check_not_stranded(&h, &ctx(seed, step));
        // A released connection is closed (or detached) once nothing of it is in flight; one
        // whose handles are gone, once it is idle too and its last clone went.
        for g in &gone {
            let busy = h.e.driver.held.values().any(|v| v.1 == g.id);
            let forgotten = h.e.driver.forgets(g.ino);
            assert!(forgotten <= 1, "{}", ctx(seed, step));
            if g.dropped {
                assert!(forgotten == 0 || !busy, "{}", ctx(seed, step));
            } else {
                assert_eq!(forgotten == 1, !busy, "{}", ctx(seed, step));
            }
        }
    }
    // Shut down: every request in flight comes back (as the kernel's cancel would, or done).
    h.e.close();
    let mut rounds = 0;
    while !h.e.driver.held.is_empty() {
        rounds += 1;
        assert!(rounds < 10_000, "{}: not winding down", ctx(seed, steps));
        let q = *h.e.driver.held.keys().min().unwrap();
        // Cancelled, or done before the cancel reached it (an accept: a new descriptor).
        let o = if rng.chance(50) {
            Outcome::Canceled
        } else {
            let key = h.e.driver.held[&q].0;
            let shape = Shape::of(h.e.in_flight_request(key).expect("in flight"));
            let d = &mut h.e.driver;
            random_outcome(&mut rng, shape, d.swap.as_mut(), &mut d.peers)
        };
        h.complete(q, o);
        take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
    }
    take_random(&mut h, &mut rng, &mut socks, &mut gone, &mut swaps);
    h.all_done();
    let detached: HashMap<u64, OwnedFd> = detached
        .into_iter()
        .map(|(ino, rx)| {
            let fd = rx.try_recv().expect("detach answered").expect("descriptor");
            assert_eq!(self::ino(fd.as_raw_fd()), Some(ino));
            (ino, fd)
        })
        .collect();
    let all: Vec<(u64, &OwnedFd)> = socks
        .iter()
        .map(|s| (s.ino, &s.peer))
        .chain(gone.iter().map(|g| (g.ino, &g.peer)))
        .collect();
    for &(ino, peer) in &all {
        assert_eq!(h.e.driver.forgets(ino), 1, "{}", ctx(seed, steps));
        let closed = peer_closed(peer);
        assert_eq!(closed, !detached.contains_key(&ino), "{}", ctx(seed, steps));
    }
    drop(all);
    // Accepted descriptors never taken over (refused, or after close): closed, not forgotten.
    for (ino, peer) in &h.e.driver.peers {
        assert!(peer_closed(peer), "{}", ctx(seed, steps));
        assert_eq!(h.e.driver.forgets(*ino), 0, "{}", ctx(seed, steps));
    }
    if let Some(base) = base {
        // The test holds the peers and the detached descriptors; the engine holds none.
        let ours = socks.len() + gone.len() + h.e.driver.peers.len() + detached.len();
        assert_eq!(open_fds(), base + ours, "{}", ctx(seed, steps));
        drop((socks, gone, detached, h));
        assert_eq!(open_fds(), base, "{}", ctx(seed, steps));
    }
}

/// No request is stranded: each pending one is in flight, or waits for something that will
/// come (the next edge after an EAGAIN, swap space, an earlier write before an fsync), or is
/// behind the front of its direction.
fn check_not_stranded<const R: bool>(h: &H<R>, ctx: &str) {
    let e = &h.e;
    for i in 0..e.table.len() {
        let Some(s) = e.table.get(i) else { continue };
        if s.starved {
            assert!(e.starved.contains(&s.id), "{ctx}: starved but not listed");
        }
        for lane in [Lane::Read, Lane::Write] {
            let Some(&key) = s.queues[lane as usize].front() else {
                continue;
            };
            let r = &e.ops[key];
            assert_eq!(r.in_flight, s.in_flight[lane as usize], "{ctx}");
            // (A released connection keeps only a request in flight at each front.)
            let waits = r.in_flight
                || (s.starved && r.buffer.is_none())
                // Readiness: it met EAGAIN (here or on the submitting thread).
                || (R && r.poll_first);
            assert!(waits, "{ctx}: front request {} stranded", r.id.seq);
            for &k in s.queues[lane as usize].iter().skip(1) {
                assert!(!e.ops[k].in_flight, "{ctx}: behind the front, in flight");
            }
        }
        let Some(f) = s.file.as_ref() else { continue };
        for &k in &f.pending {
            let r = &e.ops[k];
            let barrier = matches!(r.kind, Kind::Fsync | Kind::Fdatasync)
                && f.pending
                    .iter()
                    .any(|&w| e.ops[w].kind == Kind::WriteAt && e.ops[w].id.seq < r.id.seq);
            assert!(
                r.in_flight || barrier,
                "{ctx}: file request {} stranded",
                r.id.seq
            );
        }
    }
}

/// A connection the random test let go of: freed or detached, or its handle dropped.
struct Gone {
    id: ConnId,
    peer: OwnedFd,
    ino: u64,
    /// Handle dropped (released only once no request or result holds a clone).
    dropped: bool,
}

impl Gone {
    fn of(s: Sock, dropped: bool) -> Gone {
        Gone {
            id: s.id(),
            peer: s.peer,
            ino: s.ino,
            dropped,
        }
    }
}

/// Takes the results of the random test: keeps some swap slices (so swap reads starve), keeps
/// some accepted connections for later requests and drops the others, and hands the engine
/// the handles dropped since (`LoopMsg::Dropped`, as the real owner does).
fn take_random<const R: bool>(
    h: &mut H<R>,
    rng: &mut Rng,
    socks: &mut Vec<Sock>,
    gone: &mut Vec<Gone>,
    swaps: &mut Vec<SwapSlice>,
) {
    loop {
        for mut r in h.take() {
            if let Some(c) = r.accepted.take() {
                let ino = ino(c.raw_fd()).expect("an accepted descriptor is open");
                let peer = h.e.driver.peers.remove(&ino).expect("its peer");
                let s = Sock { conn: c, peer, ino };
                if socks.len() < 6 && rng.chance(50) {
                    socks.push(s);
                } else {
                    gone.push(Gone::of(s, true));
                }
            }
            if let Buffer::Swap(s) = r.buffer {
                if rng.chance(50) {
                    swaps.push(s);
                }
            }
        }
        let dropped = std::mem::take(&mut *h.owner.0.lock().unwrap());
        if dropped.is_empty() {
            return;
        }
        for id in dropped {
            h.e.handle(LoopMsg::Dropped(id));
        }
    }
}

/// Descriptors open in this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Counts `/proc/self/fd` around random runs in both modes: the engine closes every
/// descriptor it took over (and every one it refused), exactly once each (the count comes back
/// to the test's own, and each closed pair reads EOF). Other tests open descriptors
/// concurrently, so the count runs in a child process that runs this test alone.
#[test]
fn descriptors_closed_once() {
    const CHILD: &str = "GAIO_ENGINE_FD_CHILD";
    if std::env::var_os(CHILD).is_some() {
        for seed in 1..=60u64 {
            let seed = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
            run_random::<true>(seed, 150, true);
            run_random::<false>(seed, 150, true);
        }
        return;
    }
    // Between its fork and its exec the child holds a copy of every descriptor of this
    // process, so no other test may look for a closed pair meanwhile (`fake::SPAWNING`).
    // `spawn` returns when the exec has replaced the child's memory, which the kernel does
    // just before it closes the close-on-exec descriptors; so the guard is held until the
    // child's first output, by when the new program runs and the copies are gone.
    let (mut child, first) = {
        let _spawning = super::fake::SPAWNING
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "engine::tests::random::descriptors_closed_once",
                "--exact",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the child");
        let mut first = [0u8; 1];
        let n = std::io::Read::read(child.stdout.as_mut().expect("piped"), &mut first)
            .expect("the child's first output");
        (child, first[..n].to_vec())
    };
    let mut stdout = first;
    std::io::Read::read_to_end(child.stdout.as_mut().expect("piped"), &mut stdout)
        .expect("the child's output");
    let out = child.wait_with_output().expect("wait for the child");
    let text =
        String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}
