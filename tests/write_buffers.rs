//! Writes of every buffer type a write takes (`Vec`, `Box<[u8]>`, `Arc<[u8]>`, `&'static [u8]`,
//! a `SwapSlice`, an `AlignedBuf`, `bytes::Bytes`), and `write_vectored`, on both backends: the
//! peer gets every byte in order, the result hands the same buffer back (pointer identity), and
//! nothing was copied (no allocation of the buffer's size while it is written).

#[macro_use]
mod util;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gaio::{Buffer, Error, OpType};

const T10: Duration = Duration::from_secs(10);

/// A length no other test allocates: a copy of a buffer of this length would allocate it.
const ODD_LEN: usize = 3_000_017;

/// Counts allocations of exactly [`ODD_LEN`] bytes, on any thread.
struct Counting;

static ODD_ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if l.size() == ODD_LEN {
            ODD_ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System.alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n == ODD_LEN {
            ODD_ALLOCS.fetch_add(1, Ordering::SeqCst);
        }
        // SAFETY: as for `alloc`.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads `n` bytes from `peer` on a thread of its own (into a buffer allocated before it
/// starts, so its allocations are not counted as copies), then hands them back.
fn read_n(mut peer: TcpStream, n: usize) -> JoinHandle<Vec<u8>> {
    peer.set_read_timeout(Some(T10)).unwrap();
    let mut got = Vec::with_capacity(n + 1);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 1 << 16];
        while got.len() < n {
            match peer.read(&mut chunk) {
                Ok(0) => panic!("EOF after {} of {n} bytes", got.len()),
                Ok(k) => got.extend_from_slice(&chunk[..k]),
                Err(e) => panic!("read after {} of {n} bytes: {e}", got.len()),
            }
        }
        got
    })
}

use util::one;

/// The buffer types a write takes, each holding `data`, with the address of its bytes.
fn every_type(data: &[u8]) -> Vec<(&'static str, Buffer, usize)> {
    let leaked: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
    let mut aligned = gaio::AlignedBuf::new(data.len(), 4096).unwrap();
    aligned.copy_from_slice(data);
    #[allow(unused_mut)]
    let mut all: Vec<(&'static str, Buffer)> = vec![
        ("Vec", data.to_vec().into()),
        ("Box", data.to_vec().into_boxed_slice().into()),
        ("Arc", Arc::<[u8]>::from(data).into()),
        ("static", leaked.into()),
        ("AlignedBuf", aligned.into()),
    ];
    #[cfg(feature = "bytes")]
    all.push(("Bytes", bytes::Bytes::copy_from_slice(data).into()));
    all.into_iter()
        .map(|(name, b)| {
            let at = b.as_slice().as_ptr() as usize;
            (name, b, at)
        })
        .collect()
}

fn same_type(name: &str, b: &Buffer) -> bool {
    match (name, b) {
        ("Vec", Buffer::User(_))
        | ("Box", Buffer::Boxed(_))
        | ("Arc", Buffer::Shared(_))
        | ("static", Buffer::Static(_))
        | ("AlignedBuf", Buffer::Aligned(_))
        | ("Swap", Buffer::Swap(_)) => true,
        #[cfg(feature = "bytes")]
        ("Bytes", Buffer::Bytes(_)) => true,
        _ => false,
    }
}

backend_tests! {
    /// Each buffer type, larger than the socket buffers hold (so the write takes many steps
    /// and waits for room on the backend's own path), reaches the peer byte-exact; the result
    /// is the same variant holding the same bytes at the same address, and no allocation of
    /// the buffer's size happened while it was written (no copy).
    fn every_buffer_type_written_without_a_copy(backend) {
        let Some(w) = util::watcher_for::<&'static str>(backend) else { return };
        let data = util::random_bytes(ODD_LEN, 7);
        for (name, buf, at) in every_type(&data) {
            let (peer, ours) = util::tcp_pair();
            let conn = w.watch(&ours).unwrap();
            drop(ours);
            let reader = read_n(peer, ODD_LEN);
            let before = ODD_ALLOCS.load(Ordering::SeqCst);
            w.write(name, &conn, buf).unwrap();
            let res = one(&w, name);
            let copies = ODD_ALLOCS.load(Ordering::SeqCst) - before;
            assert!(res.error.is_none(), "{name}: {:?}", res.error);
            assert_eq!((res.op, res.context, res.size), (OpType::Write, name, ODD_LEN));
            assert!(same_type(name, &res.buffer), "{name}: came back as {:?}", res.buffer);
            assert_eq!(res.buffer.as_slice().as_ptr() as usize, at, "{name}: the same bytes back");
            assert_eq!(copies, 0, "{name}: {copies} allocations of the buffer's size while written");
            let got = reader.join().expect("reader");
            assert!(got == data, "{name}: the peer got other bytes");
            w.free(&conn).unwrap();
        }
    }

    /// One `Arc<[u8]>` written to 40 connections at once: every peer gets it whole, each
    /// result holds the same allocation, and once the results are dropped the watcher holds
    /// no reference to it.
    fn one_arc_shared_by_many_writes(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        const N: usize = 40;
        let data = util::random_bytes(256 << 10, 3);
        let shared: Arc<[u8]> = Arc::from(&data[..]);
        let mut readers = Vec::new();
        let mut conns = Vec::new();
        for i in 0..N {
            let (peer, ours) = util::tcp_pair();
            conns.push(w.watch(&ours).unwrap());
            readers.push(read_n(peer, data.len()));
            w.write(i, &conns[i], shared.clone()).unwrap();
        }
        let mut done = [false; N];
        let mut n = 0;
        util::wait_until(&w, T10, "every write", |r| {
            assert!(r.error.is_none(), "{}: {:?}", r.context, r.error);
            assert_eq!(r.size, data.len());
            match &r.buffer {
                Buffer::Shared(a) => assert!(Arc::ptr_eq(a, &shared), "{}: another Arc", r.context),
                other => panic!("{}: came back as {other:?}", r.context),
            }
            assert!(!std::mem::replace(&mut done[r.context], true), "two results");
            n += 1;
            n == N
        });
        for (i, r) in readers.into_iter().enumerate() {
            assert!(r.join().expect("reader") == data, "peer {i} got other bytes");
        }
        assert_eq!(Arc::strong_count(&shared), 1, "the watcher keeps a reference");
        drop(conns);
    }

    /// An echo writes the swap slice a read returned straight back: the peer gets its bytes,
    /// and the write's result holds that very slice (the same address).
    fn swap_slice_written_back(backend) {
        let Some(w) = util::watcher_for::<&str>(backend) else { return };
        let (mut peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        drop(ours);
        peer.set_read_timeout(Some(T10)).unwrap();
        peer.write_all(b"echo me").unwrap();
        w.read("read", &conn, None).unwrap();
        let res = one(&w, "the swap read");
        assert_eq!(res.data(), b"echo me");
        let Buffer::Swap(slice) = res.buffer else { panic!("not a swap read: {:?}", res.buffer) };
        let at = slice.as_ptr();
        w.write("write", &conn, slice).unwrap();
        let res = one(&w, "the write back");
        assert!(res.error.is_none(), "{:?}", res.error);
        assert!(res.buffer.is_swap() && res.buffer.as_slice().as_ptr() == at, "{:?}", res.buffer);
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"echo me");
    }

    /// A vectored write of 300 pieces (more than one step sends) of mixed sizes, empty ones
    /// among them, 5 MiB in all, between two plain writes: the peer sees the first write, the
    /// pieces in order, then the last write; the results come in order and the vectored one
    /// hands back every piece at its address.
    fn vectored_write_in_order_between_writes(backend) {
        let Some(w) = util::watcher_for::<usize>(backend) else { return };
        let (peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        drop(ours);
        let mut rng = util::XorShift::new(11);
        let pieces: Vec<Vec<u8>> = (0..300)
            .map(|i| {
                let len = if i % 7 == 0 { 0 } else { (rng.next_u64() % 35_000) as usize + 1 };
                util::random_bytes(len, i as u64 + 100)
            })
            .collect();
        let addrs: Vec<usize> = pieces.iter().map(|p| p.as_ptr() as usize).collect();
        let first = util::random_bytes(100_000, 1);
        let last = util::random_bytes(100_000, 2);
        let mut want = first.clone();
        pieces.iter().for_each(|p| want.extend_from_slice(p));
        want.extend_from_slice(&last);
        let total_v = want.len() - first.len() - last.len();
        let reader = read_n(peer, want.len());
        w.write(0, &conn, first).unwrap();
        w.write_vectored(1, &conn, pieces).unwrap();
        w.write(2, &conn, last).unwrap();
        let mut order = Vec::new();
        util::wait_until(&w, T10, "the three writes", |r| {
            assert!(r.error.is_none(), "{}: {:?}", r.context, r.error);
            if r.context == 1 {
                assert_eq!(r.size, total_v);
                let back = r.buffer.pieces();
                assert_eq!(back.len(), 300);
                for (i, (p, at)) in back.iter().zip(&addrs).enumerate() {
                    assert!(matches!(p, Buffer::User(_)), "piece {i}: {p:?}");
                    if !p.is_empty() {
                        assert_eq!(p.as_slice().as_ptr() as usize, *at, "piece {i} moved");
                    }
                }
            }
            order.push(r.context);
            order.len() == 3
        });
        assert_eq!(order, [0, 1, 2]);
        assert!(reader.join().expect("reader") == want, "the peer got other bytes");
    }

    /// A vectored write of shared pieces over a pipe (`writev`, not `sendmsg`), larger than
    /// the pipe holds.
    fn vectored_write_to_a_pipe(backend) {
        let Some(w) = util::watcher_for::<()>(backend) else { return };
        let (r, wr) = util::pipe();
        let conn = w.watch(&wr).unwrap();
        drop(wr);
        let a: Arc<[u8]> = Arc::from(&util::random_bytes(300_000, 5)[..]);
        let b: Arc<[u8]> = Arc::from(&util::random_bytes(200_001, 6)[..]);
        let mut want = a.to_vec();
        want.extend_from_slice(&b);
        let n = want.len();
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(r);
            let mut got = vec![0u8; n];
            f.read_exact(&mut got).map(|()| got)
        });
        w.write_vectored((), &conn, vec![a.clone(), b.clone()]).unwrap();
        let res = one(&w, "the vectored write");
        assert!(res.error.is_none(), "{:?}", res.error);
        assert_eq!(res.size, n);
        let back = res.buffer.pieces();
        assert!(matches!(&back[0], Buffer::Shared(x) if Arc::ptr_eq(x, &a)));
        assert!(matches!(&back[1], Buffer::Shared(x) if Arc::ptr_eq(x, &b)));
        assert!(reader.join().expect("reader").expect("read") == want);
    }

    /// A vectored write to a peer that never reads ends at its deadline with the bytes it
    /// wrote in `size` and every piece back; `write_timeout` takes any buffer type too.
    fn vectored_and_shared_writes_keep_deadlines(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let (_peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        drop(ours);
        let big: Arc<[u8]> = Arc::from(vec![1u8; 16 << 20]);
        w.write_timeout(1, &conn, big.clone(), Instant::now() + Duration::from_millis(200))
            .unwrap();
        let res = one(&w, "the shared write's deadline");
        assert!(util::is_deadline(&res.error), "{:?}", res.error);
        assert!(res.size < big.len());
        assert!(matches!(&res.buffer, Buffer::Shared(x) if Arc::ptr_eq(x, &big)));
        drop(res);
        assert_eq!(Arc::strong_count(&big), 1);
        // A vectored write (`write_timeout` takes a `Buffer::Vectored` as `write_vectored`
        // writes it) into the same full socket: in flight (on io_uring a SENDMSG that waits for
        // room) when its deadline passes, it ends with what it wrote and every piece back.
        let pieces: Vec<Buffer> = (0..8).map(|_| Buffer::Shared(big.clone())).collect();
        let deadline = Instant::now() + Duration::from_millis(200);
        w.write_timeout(2, &conn, Buffer::Vectored(pieces), deadline).unwrap();
        let res = one(&w, "the vectored write's deadline");
        assert!(util::is_deadline(&res.error), "{:?}", res.error);
        assert!(res.size < 8 * big.len());
        assert_eq!(res.buffer.pieces().len(), 8);
        assert!(res.buffer.pieces().iter().all(|p| matches!(p, Buffer::Shared(x) if Arc::ptr_eq(x, &big))));
        drop(res);
        assert_eq!(Arc::strong_count(&big), 1);
    }

    /// Bad input to the write calls gets a typed error and the buffer back whole: no pieces,
    /// only empty pieces, a vectored piece, `Buffer::None`, a vectored `write_at`.
    fn vectored_bad_input(backend) {
        let Some(w) = util::watcher_for::<&str>(backend) else { return };
        let (_peer, ours) = util::tcp_pair();
        let conn = w.watch(&ours).unwrap();
        let e = w.write_vectored("none", &conn, Vec::<Vec<u8>>::new()).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert!(matches!(&e.buffer, Some(Buffer::Vectored(p)) if p.is_empty()));
        let e = w.write_vectored("empty", &conn, vec![Vec::new(), Vec::new()]).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        assert_eq!(e.buffer.map(|b| b.pieces().len()), Some(2));
        let nested = Buffer::Vectored(vec![Buffer::from(b"ab")]);
        let e = w.write_vectored("nested", &conn, vec![nested]).unwrap_err();
        assert!(matches!(e.error, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(e.context, "nested");
        let e = w.write("nothing", &conn, Buffer::None).unwrap_err();
        assert!(matches!(e.error, Error::EmptyBuffer), "{e:?}");
        let path = std::env::temp_dir().join(format!("gaio-vec-at-{}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let f = w.watch(&file).unwrap();
        let v = Buffer::Vectored(vec![Buffer::from(b"ab")]);
        let e = w.write_at("at", &f, v, 0, None).unwrap_err();
        assert!(matches!(e.error, Error::InvalidArgument(_)), "{e:?}");
        assert_eq!(e.buffer.map(|b| b.len()), Some(2));
        // Nothing was accepted, so nothing comes back.
        util::expect_quiet(&w, Duration::from_millis(50));
    }

    /// `write_at` takes shared and static buffers: the file holds their bytes.
    fn write_at_with_shared_buffers(backend) {
        let Some(w) = util::watcher_for::<u8>(backend) else { return };
        let path = std::env::temp_dir().join(format!("gaio-shared-at-{}-{backend:?}", std::process::id()));
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let f = w.watch(&file).unwrap();
        let shared: Arc<[u8]> = Arc::from(&b"shared "[..]);
        w.write_at(1, &f, shared.clone(), 0, None).unwrap();
        w.write_at(2, &f, b"static", 7, None).unwrap();
        let mut n = 0;
        util::wait_until(&w, T10, "both write_at", |r| {
            assert!(r.error.is_none(), "{:?}", r.error);
            if r.context == 1 {
                assert!(matches!(&r.buffer, Buffer::Shared(x) if Arc::ptr_eq(x, &shared)));
            } else {
                assert!(matches!(r.buffer, Buffer::Static(b"static")));
            }
            n += 1;
            n == 2
        });
        assert_eq!(std::fs::read(&path).unwrap(), b"shared static");
        std::fs::remove_file(&path).unwrap();
    }
}
