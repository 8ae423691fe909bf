//! Inputs at the edges of the kernel interfaces (issue 12), on both backends: every one either
//! works or is refused before submission with a typed error that hands the context and buffer
//! back (DESIGN.md properties 1, 5 and 6).
//!
//! - file offsets (class 1): `read_at`/`write_at` at `u64::MAX`, `u64::MAX - 1`, `2^63`,
//!   `i64::MAX`, `i64::MAX - len + 1` (all refused, `InvalidArgument`, nothing submitted, the
//!   file and the caller's file position untouched) and `i64::MAX - len`, the last range the
//!   kernel takes (accepted: one result, `Eof` for a read);
//! - a foreign `OpId` (class 3): `cancel` with another watcher's id is `Unsupported` and ends
//!   nothing (two watchers hand out equal counters and slot numbers, so the id used to cancel
//!   an unrelated request);
//! - builder extremes (class 4): every swap size and count at and around the limits, on both
//!   backends, give a working watcher (checked with a swap read and a write) or
//!   `InvalidArgument`, the same on both; `Backend::Auto` gives a working watcher;
//! - lengths (class 2): a `write` of `i32::MAX + 1` bytes (2 GiB) and a `read_full` into a
//!   buffer of that size, over a Unix socketpair with a thread at the other end, complete with
//!   every byte; a `read` into an `i32::MAX + 1` buffer completes with the bytes that arrive.
//!   io_uring's SEND/RECV refuse lengths above `i32::MAX` (EINVAL) until the engine caps each
//!   call: those io_uring cases are ignored pending the lead's engine work.

#[macro_use]
mod util;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gaio::{Backend, Error, OpResult, OpType, SubmitError, Watcher};

const T10: Duration = Duration::from_secs(10);
/// Longer than the 2 GiB transfers' own 30 s deadline, so a slow one fails with `Deadline`
/// (naming the progress) rather than with a bare timeout here.
const BIG_WAIT: Duration = Duration::from_secs(45);
/// `i32::MAX + 1`: the first length io_uring's SEND and RECV refuse.
const BIG: usize = i32::MAX as usize + 1;

/// A fresh file under cargo's per-test temporary directory.
fn temp_file(name: &str) -> (PathBuf, File) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("edges-{name}-{}", std::process::id()));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    (p, f)
}

/// Exactly one result within `limit`, and no second one right after.
fn one<C: Send + 'static>(w: &Watcher<C>, what: &str) -> OpResult<C> {
    one_within(w, T10, what)
}

/// [`one`] with a wait of `limit`: the 2 GiB transfers below have a 30 s deadline of their own,
/// and on a loaded 2-core machine (six of them at once under plain `cargo test`) take longer
/// than 10 s.
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

/// What identifies a `Vec`'s allocation: pointer, length, capacity.
fn shape(v: &[u8], cap: usize) -> (usize, usize, usize) {
    (v.as_ptr() as usize, v.len(), cap)
}

/// The refusal carries `InvalidArgument`, the context, and the very buffer submitted.
fn assert_refused(
    r: Result<gaio::OpId, SubmitError<u32>>,
    ctx: u32,
    want: (usize, usize, usize),
    what: &str,
) {
    let e = match r {
        Ok(id) => panic!("{what}: accepted ({id:?}), expected InvalidArgument"),
        Err(e) => e,
    };
    assert!(
        matches!(&e.error, Error::InvalidArgument(t) if !t.is_empty()),
        "{what}: {:?}",
        e.error
    );
    assert_eq!(e.context, ctx, "{what}: context");
    let v = e
        .buffer
        .and_then(gaio::Buffer::into_vec)
        .expect("the buffer back");
    let cap = v.capacity();
    assert_eq!(shape(&v, cap), want, "{what}: not the same buffer");
}

/// The caller's own file position (the watcher's descriptor is a dup sharing it).
fn file_position(f: &File) -> i64 {
    // SAFETY: lseek on a descriptor we own; no memory involved.
    unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_CUR) }
}

backend_tests! {
    /// Class 1: every offset and offset + length above `i64::MAX` (the largest `off_t`) is
    /// refused before submission, for `read_at` and `write_at`, buffer lengths 1 and 100:
    /// `InvalidArgument` with context and buffer back, no result, the file and the caller's
    /// file position unchanged (an offset of `u64::MAX` used to reach the kernel as -1, "the
    /// file position", and its next step's `offset + size` overflowed). The edge that still
    /// fits (`offset + len == i64::MAX`) is accepted: one result, a read ends with `Eof`.
    fn file_offsets_beyond_off_t_are_refused(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let (path, f) = temp_file("offsets");
        let content: Vec<u8> = (0..100u8).collect();
        f.write_all_at(&content, 0).unwrap();
        let fc = w.watch(&f).unwrap();
        let max = i64::MAX as u64;
        assert_eq!(gaio::MAX_FILE_OFFSET, max);
        let mut ctx = 0u32;
        for len in [1usize, 100] {
            let refused = [
                u64::MAX,
                u64::MAX - 1,
                u64::MAX - len as u64 + 1,
                max + 1,
                max,
                max - len as u64 + 1,
            ];
            for off in refused {
                for write in [false, true] {
                    ctx += 1;
                    let v = vec![0xa5u8; len];
                    let want = shape(&v, v.capacity());
                    let r = if write {
                        w.write_at(ctx, &fc, v, off, None)
                    } else {
                        w.read_at(ctx, &fc, v, off, None)
                    };
                    let what = format!("{backend}: {} len {len} at {off}", if write { "write_at" } else { "read_at" });
                    assert_refused(r, ctx, want, &what);
                }
            }
        }
        util::expect_quiet(&w, Duration::from_millis(50));
        assert_eq!(file_position(&f), 0, "{backend}: the shared file position moved");
        assert_eq!(std::fs::read(&path).unwrap(), content, "{backend}: the file changed");

        // The last range the kernel takes: accepted, one result each.
        let len = 100usize;
        let off = max - len as u64;
        w.read_at(1000, &fc, vec![0u8; len], off, None).unwrap();
        let r = one(&w, "read_at at i64::MAX - len");
        println!("{backend}: read_at at i64::MAX - 100: size {} error {:?}", r.size, r.error);
        assert!(matches!(r.error, Some(Error::Eof)) && r.size == 0, "{backend}: {r:?}");
        assert_eq!(util::user_buf(r.buffer).len(), len);
        // A write there is accepted too; its result is the file system's: EFBIG beyond the
        // largest file it holds (ext4, both backends), or the bytes written (tmpfs).
        w.write_at(1001, &fc, vec![1u8; len], off, None).unwrap();
        let r = one(&w, "write_at at i64::MAX - len");
        println!("{backend}: write_at at i64::MAX - 100: size {} error {:?}", r.size, r.error);
        let efbig = util::errno_of(&r.error) == Some(libc::EFBIG) && r.size == 0;
        assert!(efbig || (r.error.is_none() && r.size == len), "{backend}: {r:?}");
        assert_eq!(util::user_buf(r.buffer).len(), len);
        assert_eq!(file_position(&f), 0, "{backend}: the shared file position moved");

        // Ordinary offsets still work: a short read at 50, Eof at 100.
        w.read_at(1002, &fc, vec![0u8; 100], 50, None).unwrap();
        let r = one(&w, "read_at 50");
        assert!(r.error.is_none() && r.size == 50, "{backend}: {r:?}");
        assert_eq!(r.data(), &content[50..]);
        w.read_at(1003, &fc, vec![0u8; 1], 100, None).unwrap();
        let r = one(&w, "read_at 100");
        assert!(matches!(r.error, Some(Error::Eof)), "{backend}: {r:?}");
        drop(fc);
        let _ = std::fs::remove_file(&path);
    }

    /// Class 3: an `OpId` of another watcher is refused by `cancel` with `Unsupported`, and
    /// the request of this watcher it resembles (same counter, same slot) is not touched. Two
    /// watchers' first requests on their first connections have the same counter and slot;
    /// the ids must still differ. The owner can cancel its own id; an id of a closed watcher
    /// is refused too.
    fn foreign_op_id_is_refused(backend) {
        let Some(w1) = util::watcher_for::<&'static str>(backend) else { return };
        let Some(w2) = util::watcher_for::<&'static str>(backend) else { return };
        let (a1, _p1) = UnixStream::pair().unwrap();
        let (a2, mut p2) = UnixStream::pair().unwrap();
        let c1 = w1.watch(&a1).unwrap();
        let c2 = w2.watch(&a2).unwrap();
        let id1 = w1.read("w1 read", &c1, Some(vec![0; 8])).unwrap();
        let id2 = w2.read("w2 read", &c2, Some(vec![0; 8])).unwrap();
        assert_eq!(id1.as_u64(), id2.as_u64(), "both watchers' first counter value");
        let r = w2.cancel(id1);
        assert!(matches!(r, Err(Error::Unsupported)), "{backend}: w2.cancel(w1's id): {r:?}");
        assert_ne!(id1, id2, "{backend}: two watchers' ids compare equal");
        assert!(matches!(w1.cancel(id2), Err(Error::Unsupported)), "{backend}: w1.cancel(w2's id)");
        // w2's read is still pending: it completes with data, not Canceled.
        util::expect_quiet(&w2, Duration::from_millis(30));
        p2.write_all(b"hi").unwrap();
        let r = one(&w2, "w2's read");
        assert_eq!(r.id, id2);
        assert!(r.error.is_none(), "{backend}: {r:?}");
        assert_eq!(r.data(), b"hi");
        // The owner cancels its own.
        assert!(w1.cancel(id1).unwrap(), "{backend}: w1's read was not pending");
        let r = one(&w1, "w1's read, cancelled");
        assert!(matches!(r.error, Some(Error::Canceled)), "{backend}: {r:?}");
        // An id of a watcher that is closed, given to a live one: still foreign.
        let id_old = w1.read("again", &c1, None).unwrap();
        w1.close().unwrap();
        assert!(matches!(w2.cancel(id_old), Err(Error::Unsupported)), "{backend}");
        // And the closed watcher reports its own state for its own id.
        assert!(matches!(w1.cancel(id_old), Err(Error::WatcherClosed)), "{backend}");
    }

    /// Class 4: builder extremes. Every combination of swap sizes {0, 1, 2, 3, 4 KiB, 64 KiB,
    /// i32::MAX - 1, i32::MAX, i32::MAX + 1, u32::MAX, u32::MAX + 1, usize::MAX} and counts
    /// {0, 1, 2, 3, 512, 513, 32767, 32768, 32769, i32::MAX, usize::MAX} gives exactly what the
    /// documented limits say: a working watcher (a swap read and a write go through) when
    /// 1 <= size <= MAX_SWAP_BUFFER_SIZE, 1 <= count <= MAX_SWAP_BUFFERS and size x count <=
    /// MAX_SWAP_TOTAL, else `InvalidArgument`; never a panic. Both backends run the same
    /// table, so their outcome classes agree. `swap_buffers(usize::MAX)` used to panic with
    /// "capacity overflow" on epoll and clamp on io_uring.
    fn builder_extremes(backend) {
        if util::build::<()>(backend, Watcher::builder()).is_none() {
            return;
        }
        let sizes = [
            0usize, 1, 2, 3, 4096, 65536, i32::MAX as usize - 1, i32::MAX as usize, BIG,
            u32::MAX as usize, u32::MAX as usize + 1, usize::MAX,
        ];
        let counts = [0usize, 1, 2, 3, 512, 513, 32767, 32768, 32769, i32::MAX as usize, usize::MAX];
        let (mut n, mut wrong) = (0, Vec::new());
        for &size in &sizes {
            for &count in &counts {
                let got = std::panic::catch_unwind(|| builder_outcome(backend, size, count))
                    .unwrap_or_else(|p| {
                        let why = p
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
                        format!("PANIC: {}", why.unwrap_or_default())
                    });
                let want = expected(size, count);
                if got != want {
                    wrong.push(format!("swap_buffer_size({size}).swap_buffers({count}): {got}, want {want}"));
                }
                n += 1;
            }
        }
        assert!(wrong.is_empty(), "{backend}: {} of {n} not as documented:\n{}", wrong.len(), wrong.join("\n"));
        println!("{backend}: {n} combinations as documented");
    }

    /// Class 4, the backend setting: `Auto` picks a backend that works; the forced ones are
    /// covered by every other test.
    fn builder_backend_auto(backend) {
        if backend != Backend::Epoll {
            return; // one run is enough: Auto is not per backend
        }
        let w: Watcher<()> = match Watcher::builder().backend(Backend::Auto).build() {
            Ok(w) => w,
            Err(e) => panic!("Backend::Auto: {e}"),
        };
        assert!(matches!(w.backend(), Backend::Epoll | Backend::Uring));
        check_working(&w, 4096);
    }
}

/// Class 4, randomized: swap sizes and counts drawn around every limit (and anywhere in
/// `usize`), each built on both backends: no panic, the documented outcome, the same class on
/// both. 24 cases (`PROPTEST_CASES` overrides).
#[test]
fn builder_random_values_both_backends() {
    use proptest::prelude::*;
    let size = prop_oneof![
        0usize..=4,
        4090usize..=70_000,
        (i32::MAX as usize - 2)..=(i32::MAX as usize + 2),
        (u32::MAX as usize - 1)..=(u32::MAX as usize + 1),
        any::<usize>(),
    ];
    let count = prop_oneof![
        0usize..=4,
        500usize..=520,
        32_760usize..=32_780,
        any::<usize>()
    ];
    let mut cfg = proptest::test_runner::Config::default();
    if std::env::var("PROPTEST_CASES").is_err() {
        cfg.cases = 24;
    }
    cfg.failure_persistence = None;
    let mut runner = proptest::test_runner::TestRunner::new(cfg);
    let uring = util::build::<()>(Backend::Uring, Watcher::builder()).is_some();
    let epoll = util::build::<()>(Backend::Epoll, Watcher::builder()).is_some();
    runner
        .run(&(size, count), |(size, count)| {
            let want = expected(size, count);
            for (backend, runs) in [(Backend::Epoll, epoll), (Backend::Uring, uring)] {
                if runs {
                    let got = std::panic::catch_unwind(|| builder_outcome(backend, size, count))
                        .unwrap_or_else(|_| "PANIC".into());
                    prop_assert_eq!(&got, &want, "{} size {} count {}", backend, size, count);
                }
            }
            Ok(())
        })
        .unwrap();
}

/// The outcome the documented limits give.
fn expected(size: usize, count: usize) -> String {
    let ok = (1..=gaio::MAX_SWAP_BUFFER_SIZE).contains(&size)
        && (1..=gaio::MAX_SWAP_BUFFERS).contains(&count)
        && size
            .checked_mul(count)
            .is_some_and(|t| t <= gaio::MAX_SWAP_TOTAL);
    if ok { "working" } else { "InvalidArgument" }.to_string()
}

/// Builds with `size` and `count` and classifies the outcome; a built watcher must work.
fn builder_outcome(backend: Backend, size: usize, count: usize) -> String {
    let b = Watcher::builder()
        .swap_buffer_size(size)
        .swap_buffers(count);
    match b.backend(backend).build::<()>() {
        Ok(w) => {
            let stats = w.swap_stats();
            assert_eq!(stats.buffer_size, size);
            let want = match backend {
                Backend::Uring => count.next_power_of_two() + 1,
                _ => count,
            };
            assert_eq!(stats.buffers, want, "{backend}: swap buffers for {count}");
            check_working(&w, size);
            "working".into()
        }
        Err(Error::InvalidArgument(text)) => {
            assert!(!text.is_empty());
            "InvalidArgument".into()
        }
        Err(e) => format!("other error: {e}"),
    }
}

/// A swap read (10 bytes, or `size` if smaller) and a write go through `w`.
fn check_working(w: &Watcher<()>, size: usize) {
    let (mine, mut peer) = UnixStream::pair().unwrap();
    let c = w.watch(&mine).unwrap();
    drop(mine);
    // The read waits at the backend (no data yet), so it takes the backend's own swap path.
    w.read((), &c, None).unwrap();
    util::expect_quiet(w, Duration::from_millis(5));
    peer.write_all(b"0123456789").unwrap();
    let r = one(w, "swap read");
    assert!(r.error.is_none(), "{} swap {size}: {r:?}", w.backend());
    let n = size.min(10);
    assert_eq!(r.data(), &b"0123456789"[..n], "{} swap {size}", w.backend());
    drop(r);
    w.write((), &c, b"ok".to_vec()).unwrap();
    let r = one(w, "write");
    assert!(r.error.is_none() && r.size == 2, "{r:?}");
    let mut got = [0u8; 2];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ok");
}

// ---------------------------------------------------------------------------------------------
// Lengths (class 2): each body runs on both backends; the io_uring halves that the engine
// work will fix are ignored by name.
// ---------------------------------------------------------------------------------------------

/// Fills `s`'s send buffer (non-blocking writes until EAGAIN), so that the next write on it
/// cannot complete on the submitting thread and goes to the backend whole; returns the bytes
/// written.
fn fill_send_buffer(s: &UnixStream) -> usize {
    s.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 1 << 16];
    let mut n = 0;
    let mut w = s;
    loop {
        match w.write(&chunk) {
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the send buffer: {e}"),
        }
    }
    n
}

/// Sets a byte pattern on every 64 MiB boundary of `v` (touching only those pages).
fn mark(v: &mut [u8]) {
    for (k, i) in (0..v.len()).step_by(64 << 20).enumerate() {
        v[i] = (k as u8) | 1;
    }
    let last = v.len() - 1;
    v[last] = 0xee;
}

/// The value [`mark`] put at position `pos` of a buffer of `len` bytes, if any.
fn mark_at(pos: usize, len: usize) -> Option<u8> {
    if pos == len - 1 {
        Some(0xee)
    } else if pos % (64 << 20) == 0 {
        Some(((pos / (64 << 20)) as u8) | 1)
    } else {
        None
    }
}

/// The number of marks [`mark`] puts in a buffer of `len` bytes.
fn marks_in(len: usize) -> usize {
    (0..len).step_by(64 << 20).count() + 1
}

/// A `write` of i32::MAX + 1 bytes (2 GiB) on a Unix socket whose send buffer is already full (so the
/// whole length reaches the backend, not the submitting thread's first attempt), with a thread
/// at the other end reading and counting: it completes with every byte (`size` i32::MAX + 1, the
/// same buffer back), and the reader gets them all, each marked byte in its place.
fn write_i32_max_plus_1(backend: Backend) {
    let Some(w) = util::watcher_for::<()>(backend) else {
        return;
    };
    let (mine, peer) = UnixStream::pair().unwrap();
    let prefill = fill_send_buffer(&mine);
    let c = w.watch(&mine).unwrap();
    drop(mine);
    let mut data = vec![0u8; BIG];
    mark(&mut data);
    let ptr = data.as_ptr() as usize;
    let start = Instant::now();
    w.write_timeout((), &c, data, start + Duration::from_secs(30))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut peer = peer;
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let (mut total, mut marks) = (0usize, 0usize);
        while total < prefill + BIG {
            let n = match peer.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(format!("reader after {total} bytes: {e}")),
            };
            // Only marked bytes are non-zero (the prefill is zeros too).
            for (i, &b) in buf[..n].iter().enumerate().filter(|(_, &b)| b != 0) {
                let pos = (total + i).checked_sub(prefill);
                match pos.and_then(|p| mark_at(p, BIG)) {
                    Some(m) if m == b => marks += 1,
                    _ => return Err(format!("byte {b:#x} out of place at {pos:?}")),
                }
            }
            total += n;
        }
        Ok((total - prefill, marks))
    });
    let r = one_within(&w, BIG_WAIT, "the i32::MAX + 1 write");
    // Closing the watcher closes its end: the reader then stops at EOF even if the write
    // failed (it has read everything before that if the write completed).
    drop(c);
    w.close().unwrap();
    let got = reader.join().unwrap();
    println!(
        "{backend}: i32::MAX + 1 written in {:?}: {r:?}",
        start.elapsed()
    );
    assert!(r.error.is_none(), "{backend}: {r:?}");
    assert_eq!((r.op, r.size), (OpType::Write, BIG), "{backend}");
    let v = util::user_buf(r.buffer);
    assert_eq!(
        (v.as_ptr() as usize, v.len()),
        (ptr, BIG),
        "{backend}: not the same buffer"
    );
    assert_eq!(
        got,
        Ok((BIG, marks_in(BIG))),
        "{backend}: what the reader got"
    );
}

/// A `read` into a buffer of i32::MAX + 1 bytes (2 GiB), submitted before any data is there (so it waits
/// at the backend with the whole length): completes with the 10 bytes that arrive and hands
/// the whole buffer back.
fn read_into_i32_max_plus_1(backend: Backend) {
    let Some(w) = util::watcher_for::<()>(backend) else {
        return;
    };
    let (mine, mut peer) = UnixStream::pair().unwrap();
    let c = w.watch(&mine).unwrap();
    drop(mine);
    let v = vec![0u8; BIG];
    let ptr = v.as_ptr() as usize;
    w.read((), &c, Some(v)).unwrap();
    util::expect_quiet(&w, Duration::from_millis(20));
    peer.write_all(b"0123456789").unwrap();
    let r = one_within(&w, BIG_WAIT, "the read into i32::MAX + 1");
    println!(
        "{backend}: read into i32::MAX + 1: size {} error {:?}",
        r.size, r.error
    );
    assert!(r.error.is_none(), "{backend}: {r:?}");
    assert_eq!(r.data(), b"0123456789");
    let v = util::user_buf(r.buffer);
    assert_eq!((v.as_ptr() as usize, v.len()), (ptr, BIG));
}

/// A `read_full` of i32::MAX + 1 bytes (2 GiB), a thread at the other end writing them: completes full.
fn read_full_i32_max_plus_1(backend: Backend) {
    let Some(w) = util::watcher_for::<()>(backend) else {
        return;
    };
    let (mine, peer) = UnixStream::pair().unwrap();
    let c = w.watch(&mine).unwrap();
    drop(mine);
    let start = Instant::now();
    w.read_full(
        (),
        &c,
        vec![0u8; BIG],
        Some(start + Duration::from_secs(30)),
    )
    .unwrap();
    util::expect_quiet(&w, Duration::from_millis(20));
    let writer = std::thread::spawn(move || {
        let mut peer = peer;
        let mut data = vec![0u8; BIG];
        mark(&mut data);
        peer.set_write_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        peer.write_all(&data).map_err(|e| e.to_string())
    });
    let r = one_within(&w, BIG_WAIT, "the i32::MAX + 1 read_full");
    println!(
        "{backend}: read_full i32::MAX + 1 in {:?}: size {} error {:?}",
        start.elapsed(),
        r.size,
        r.error
    );
    assert!(r.error.is_none(), "{backend}: {r:?}");
    assert_eq!(r.size, BIG);
    let v = util::user_buf(r.buffer);
    for (k, i) in (0..BIG).step_by(64 << 20).enumerate() {
        assert_eq!(v[i], (k as u8) | 1, "{backend}: byte {i}");
    }
    assert_eq!(v[BIG - 1], 0xee);
    writer.join().unwrap().expect("the writer");
}

mod epoll_len {
    use gaio::Backend::Epoll;

    #[test]
    fn write_i32_max_plus_1() {
        super::write_i32_max_plus_1(Epoll)
    }
    #[test]
    fn read_into_i32_max_plus_1() {
        super::read_into_i32_max_plus_1(Epoll)
    }
    #[test]
    fn read_full_i32_max_plus_1() {
        super::read_full_i32_max_plus_1(Epoll)
    }
}

mod uring_len {
    use gaio::Backend::Uring;

    #[test]
    fn write_i32_max_plus_1() {
        super::write_i32_max_plus_1(Uring)
    }
    #[test]
    fn read_into_i32_max_plus_1() {
        super::read_into_i32_max_plus_1(Uring)
    }
    #[test]
    fn read_full_i32_max_plus_1() {
        super::read_full_i32_max_plus_1(Uring)
    }
}
