//! File requests (Go's asyncfs, on both backends): `read_at`/`write_at` at offsets and sizes,
//! short reads at the end of a file, `O_DIRECT` alignment errors, fsync ordering, deadlines
//! and cancellation on file requests, and no descriptor left behind.

#[macro_use]
mod util;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::Duration;

use gaio::{AlignedBuf, Buffer, Error, OpType};

const T10: Duration = Duration::from_secs(10);

/// A fresh file under cargo's per-test temporary directory (on the project's disk, which
/// supports `O_DIRECT`, unlike a tmpfs `/tmp` on older kernels).
fn temp_file(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn rw(path: &PathBuf) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

use util::one;

backend_tests! {
    /// Writes at offsets 0, 1, 4 KiB and 1 MiB with sizes 1, 4 KiB and 1 MiB, then reads each
    /// back with `read_at`; compares with what `pread` sees.
    fn offsets_and_sizes(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let path = temp_file("offsets");
        let f = rw(&path);
        let fc = w.watch(&f).unwrap();
        let cases = [(0u64, 1usize), (1, 4096), (4096, 1 << 20), (1 << 20, 4096), (3 << 20, 1)];
        for (n, &(off, len)) in cases.iter().enumerate() {
            let data = util::random_bytes(len, n as u64 + 1);
            w.write_at(n, &fc, data, off, None).unwrap();
            let r = one(&w, "write_at");
            assert_eq!(r.op, OpType::WriteAt);
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.size, len);
        }
        for (n, &(off, len)) in cases.iter().enumerate() {
            w.read_at(n, &fc, vec![0; len], off, None).unwrap();
            let r = one(&w, "read_at");
            assert_eq!(r.op, OpType::ReadAt);
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.size, len);
            let mut direct = vec![0; len];
            f.read_exact_at(&mut direct, off).unwrap();
            assert_eq!(r.data(), &direct[..], "case {n}");
        }
        drop(fc);
        let _ = std::fs::remove_file(&path);
    }

    /// A read that crosses the end of the file is short; one at or past the end gives `Eof`
    /// with size 0.
    fn short_read_at_end_of_file(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let path = temp_file("short");
        let f = rw(&path);
        f.write_all_at(&[9u8; 1000], 0).unwrap();
        let fc = w.watch(&f).unwrap();
        w.read_at((), &fc, vec![0; 4096], 600, None).unwrap();
        let r = one(&w, "short read");
        assert!(r.error.is_none(), "{r:?}");
        assert_eq!(r.size, 400);
        assert!(r.data().iter().all(|&b| b == 9));
        w.read_at((), &fc, vec![0; 16], 1000, None).unwrap();
        let r = one(&w, "read at EOF");
        assert!(matches!(r.error, Some(Error::Eof)), "{r:?}");
        assert_eq!(r.size, 0);
        w.read_at((), &fc, vec![0; 16], 1 << 30, None).unwrap();
        let r = one(&w, "read past EOF");
        assert!(matches!(r.error, Some(Error::Eof)), "{r:?}");
        let _ = std::fs::remove_file(&path);
    }

    /// Zero-length buffers, stream requests on files and file requests on sockets are refused
    /// with their buffer handed back.
    fn file_request_refusals(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let path = temp_file("refuse");
        let f = rw(&path);
        let fc = w.watch(&f).unwrap();
        let e = w.read_at(1, &fc, Vec::new(), 0, None).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer));
        let (_peer, s) = util::tcp_pair();
        let sc = w.watch(&s).unwrap();
        let e = w.write_at(2, &sc, vec![1; 3], 0, None).unwrap_err();
        assert!(matches!(e.error, Error::Unsupported), "{e:?}");
        assert_eq!(e.buffer.and_then(gaio::Buffer::into_vec), Some(vec![1; 3]));
        assert!(matches!(w.fsync(3, &sc, None).unwrap_err().error, Error::Unsupported));
        util::expect_quiet(&w, Duration::from_millis(50));
        let _ = std::fs::remove_file(&path);
    }

    /// `O_DIRECT`: misaligned address, length or offset is refused before submission with
    /// `Misaligned`; an `AlignedBuf` of the file's alignment works both ways.
    fn o_direct_alignment(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let path = temp_file("direct");
        let f = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipped: this filesystem refuses O_DIRECT ({e})");
                return;
            }
        };
        let a = gaio::dio_alignment(&f).unwrap();
        eprintln!("{backend}: O_DIRECT alignment {a:?}");
        let fc = w.watch(&f).unwrap();
        // Length not a multiple.
        let e = w.write_at((), &fc, AlignedBuf::new(a.offset + 1, a.memory).unwrap(), 0, None).unwrap_err();
        assert!(matches!(e.error, Error::Misaligned(_)), "{e:?}");
        assert_eq!(e.buffer.map(|b| b.len()), Some(a.offset + 1), "buffer handed back");
        // Offset not a multiple.
        let e = w.write_at((), &fc, AlignedBuf::new(a.offset, a.memory).unwrap(), 1, None).unwrap_err();
        assert!(matches!(e.error, Error::Misaligned(_)), "{e:?}");
        // Address not aligned: a Vec whose data starts one byte past an aligned address.
        let mut v = AlignedBuf::new(a.offset * 2, a.memory).unwrap().to_vec();
        if v.as_ptr() as usize % a.memory == 0 {
            v.remove(0);
            v.push(0);
            v.shrink_to(0);
        }
        if v.as_ptr() as usize % a.memory != 0 {
            let e = w.read_at((), &fc, v, 0, None).unwrap_err();
            assert!(matches!(e.error, Error::Misaligned(_)), "{e:?}");
        }
        util::expect_quiet(&w, Duration::from_millis(50));
        // Aligned: works.
        let mut buf = AlignedBuf::for_file(&f, 64 * 1024).unwrap();
        buf.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        w.write_at((), &fc, buf, 8192, None).unwrap();
        let r = one(&w, "direct write");
        assert!(r.error.is_none(), "{r:?}");
        assert!(matches!(r.buffer, Buffer::Aligned(_)));
        w.read_at((), &fc, AlignedBuf::for_file(&f, 64 * 1024).unwrap(), 8192, None).unwrap();
        let r = one(&w, "direct read");
        assert!(r.error.is_none(), "{r:?}");
        assert!(r.data().iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        let _ = std::fs::remove_file(&path);
    }

    /// An fsync submitted after writes completes after every one of them, and the data is on
    /// the file when it does; fdatasync likewise. Many rounds, writes of varied sizes.
    fn fsync_after_writes(backend) {
        let Some(w) = util::watcher_for::<(u32, u32)>(backend) else { return };
        let path = temp_file("fsync");
        let f = rw(&path);
        let fc = w.watch(&f).unwrap();
        for round in 0..20u32 {
            let n = 8;
            for k in 0..n {
                let len = 4096 * (1 + (k as usize % 3) * 16);
                let off = ((round * n + k) as u64) << 20;
                w.write_at((round, k), &fc, vec![(k + round) as u8; len], off, None).unwrap();
            }
            if round % 2 == 0 {
                w.fsync((round, u32::MAX), &fc, None).unwrap();
            } else {
                w.fdatasync((round, u32::MAX), &fc, None).unwrap();
            }
            let mut writes_done = 0;
            util::wait_until(&w, T10, "writes then fsync", |r| {
                assert!(r.error.is_none(), "{r:?}");
                if r.op == OpType::Fsync || r.op == OpType::Fdatasync {
                    let want = if round % 2 == 0 { OpType::Fsync } else { OpType::Fdatasync };
                    assert_eq!(r.op, want, "round {round}: the sync's own type");
                    assert_eq!(writes_done, n, "round {round}: fsync before its writes");
                    true
                } else {
                    writes_done += 1;
                    false
                }
            });
            let mut b = [0u8; 1];
            f.read_exact_at(&mut b, ((round * n) as u64) << 20).unwrap();
            assert_eq!(b[0], round as u8);
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Many reads in flight at once on one file (queue depth 32), each verified.
    fn queue_depth_32(backend) {
        let Some(w) = util::watcher_for::<u64>(backend) else { return };
        let path = temp_file("qd");
        let f = rw(&path);
        let data = util::random_bytes(8 << 20, 7);
        f.write_all_at(&data, 0).unwrap();
        let fc = w.watch(&f).unwrap();
        let mut next = 0u64;
        let total = 2048u64;
        let mut done = 0;
        while next < 32 {
            w.read_at(next, &fc, vec![0; 4096], (next * 7919 % 2048) * 4096, None).unwrap();
            next += 1;
        }
        util::wait_until(&w, Duration::from_secs(30), "2048 random reads", |r| {
            assert!(r.error.is_none(), "{r:?}");
            let off = ((r.context * 7919 % 2048) * 4096) as usize;
            assert_eq!(r.data(), &data[off..off + 4096]);
            done += 1;
            if next < total {
                w.read_at(next, &r.conn, r.buffer.into_vec().unwrap(), (next * 7919 % 2048) * 4096, None).unwrap();
                next += 1;
            }
            done == total
        });
        let _ = std::fs::remove_file(&path);
    }

    /// Cancelling a waiting fsync ends it with `Canceled`; a file request's deadline ends it
    /// with `Deadline` or its real result (a request already in the kernel or on a file thread
    /// finishes first), exactly once either way.
    fn cancel_and_deadline_on_files(backend) {
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let path = temp_file("cancel");
        let f = rw(&path);
        let fc = w.watch(&f).unwrap();
        // Many writes then an fsync that must wait: cancel it, or see it complete first.
        for k in 0..16 {
            w.write_at(k, &fc, vec![1; 1 << 20], (k as u64) << 20, None).unwrap();
        }
        let id = w.fsync(100, &fc, None).unwrap();
        let said = w.cancel(id).unwrap();
        let mut fsync_result = None;
        let mut writes = 0;
        util::wait_until(&w, T10, "16 writes and the fsync", |r| {
            if r.context == 100 {
                fsync_result = Some(r.error);
            } else {
                assert!(r.error.is_none(), "{r:?}");
                writes += 1;
            }
            writes == 16 && fsync_result.is_some()
        });
        match fsync_result.unwrap() {
            Some(Error::Canceled) => assert!(said),
            None => {}
            other => panic!("fsync: {other:?}"),
        }
        // A read with a deadline already past: Deadline or done, once.
        w.read_at(200, &fc, vec![0; 4096], 0, Some(std::time::Instant::now())).unwrap();
        let r = one(&w, "read with a past deadline");
        assert!(matches!(r.error, None | Some(Error::Deadline)), "{r:?}");
        util::expect_quiet(&w, Duration::from_millis(100));
        let _ = std::fs::remove_file(&path);
    }

    /// No descriptor leaks after freeing and dropping file connections, with requests in
    /// flight at the time.
    fn no_fd_leak_with_files(backend) {
        if !util::own_process("no_fd_leak_with_files") { return; }
        let before = util::fd_count();
        let Some(w) = util::watcher_for::<u32>(backend) else { return };
        let path = temp_file("leak");
        let f = rw(&path);
        let fc = w.watch(&f).unwrap();
        drop(f);
        for k in 0..32 {
            w.write_at(k, &fc, vec![3; 256 << 10], (k as u64) << 18, None).unwrap();
        }
        w.fsync(99, &fc, None).unwrap();
        w.free(&fc).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        util::wait_until(&w, T10, "33 results", |r| {
            assert!(matches!(r.error, None | Some(Error::ClosedPipe)), "{r:?}");
            assert!(seen.insert(r.context), "twice: {r:?}");
            seen.len() == 33
        });
        drop(fc);
        w.close().unwrap();
        drop(w);
        util::eventually(Duration::from_secs(5), "threads gone", || util::gaio_threads().is_empty());
        assert_eq!(util::fd_count(), before, "descriptors left behind");
        let _ = std::fs::remove_file(&path);
    }
}
