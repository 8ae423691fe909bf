//! Swap buffers: the watcher's own memory for reads submitted without a buffer.
//!
//! Whoever holds the pool carves consecutive regions out of a chunk and hands each out as a
//! [`SwapSlice`]. A chunk is written again only once every slice cut from it has been dropped
//! (an explicit release, counted per chunk), never on a guess about how many `wait_io` calls
//! have passed, which is where Go's triple-buffer scheme can race. When every chunk is held, a
//! read waits in its queue for space instead of falling back to 16-byte reads as Go does.

use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::sync::{AtomicBool, AtomicUsize};

/// Where a dropped slice reports that space came free while reads were waiting for it.
pub(crate) trait SwapOwner: Send + Sync {
    fn swap_released(&self);
}

/// State shared by every chunk of one watcher.
pub(crate) struct Shared {
    /// Set when a read found no space; cleared when the engine retries the starved reads.
    starving: AtomicBool,
    owner: Arc<dyn SwapOwner>,
    /// Live `SwapSlice`s.
    slices: AtomicUsize,
    /// Chunks with at least one live slice.
    chunks_in_use: AtomicUsize,
}

impl Shared {
    pub(crate) fn new(owner: Arc<dyn SwapOwner>) -> Arc<Shared> {
        Arc::new(Shared {
            starving: AtomicBool::new(false),
            owner,
            slices: AtomicUsize::new(0),
            chunks_in_use: AtomicUsize::new(0),
        })
    }

    /// A snapshot of what live slices hold.
    pub(crate) fn stats(&self) -> (usize, usize) {
        (
            self.slices.load(Ordering::Relaxed),
            self.chunks_in_use.load(Ordering::Relaxed),
        )
    }

    /// Announces that reads wait for space; a slice dropped from now on wakes the engine.
    pub(crate) fn set_starving(&self) {
        self.starving.store(true, Ordering::SeqCst);
    }

    pub(crate) fn clear_starving(&self) {
        self.starving.store(false, Ordering::SeqCst);
    }
}

/// One block of swap memory; slices cut from it count as `outstanding`.
pub(crate) struct Chunk {
    ptr: NonNull<u8>,
    cap: usize,
    /// Live slices cut from this chunk.
    outstanding: AtomicUsize,
    shared: Arc<Shared>,
}

// SAFETY: the chunk's memory is written only in regions no live `SwapSlice` covers: by the
// thread that holds the `SwapPool`'s lock between `space` and `commit` (a submitter on the fast
// path, or the thread that holds the epoll engine: a consumer leading in `wait_io`, the poller,
// the loop thread), or, for a buffer-ring chunk, by the kernel while the buffer is in the ring
// (no slice covers a buffer the ring owns: `BufRing::take` cuts slices only from what a CQE
// returned). It is read only through `SwapSlice`s, whose regions are never written while they
// live, and the handover from writer to slice goes through the pool's lock or the CQE. The
// counters are atomics. So sharing and sending the chunk between threads cannot create a data
// race.
unsafe impl Send for Chunk {}
// SAFETY: as for `Send` above.
unsafe impl Sync for Chunk {}

impl Chunk {
    pub(crate) fn new(cap: usize, shared: Arc<Shared>) -> Chunk {
        let boxed: Box<[u8]> = vec![0u8; cap].into_boxed_slice();
        let raw = Box::into_raw(boxed) as *mut u8;
        Chunk {
            // Box::into_raw never returns null.
            ptr: NonNull::new(raw).unwrap_or(NonNull::dangling()),
            cap,
            outstanding: AtomicUsize::new(0),
            shared,
        }
    }
}

impl Chunk {
    /// Start of the chunk's memory (io_uring's buffer ring).
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// True when no slice cut from the chunk is alive, so it may be written again.
    pub(crate) fn is_free(&self) -> bool {
        self.outstanding.load(Ordering::SeqCst) == 0
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.cap);
        // SAFETY: `ptr`/`cap` came from `Box::into_raw` of a `Box<[u8]>` of exactly `cap` bytes
        // in `Chunk::new`, and this is the only place that frees it (the chunk is dropped once,
        // after the pool and every slice let go of their `Arc`).
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// Bytes a read received into the watcher's swap buffer (a read submitted with no buffer).
///
/// Dereferences to exactly the bytes received (`len() == size`). The memory stays valid and
/// unchanged while the slice lives, across later `wait_io` calls and even after the watcher is
/// closed; dropping it gives the space back to the watcher. Holding many slices for long keeps
/// the swap buffers full: later swap reads then wait (they are not failed or shortened) until
/// slices are dropped.
pub struct SwapSlice {
    chunk: Arc<Chunk>,
    offset: usize,
    len: usize,
}

impl SwapSlice {
    /// Hands out `chunk[offset..offset + len]`, which the caller has just filled and will not
    /// write again while the slice lives.
    pub(crate) fn new(chunk: &Arc<Chunk>, offset: usize, len: usize) -> SwapSlice {
        debug_assert!(offset + len <= chunk.cap);
        if chunk.outstanding.fetch_add(1, Ordering::SeqCst) == 0 {
            chunk.shared.chunks_in_use.fetch_add(1, Ordering::Relaxed);
        }
        chunk.shared.slices.fetch_add(1, Ordering::Relaxed);
        SwapSlice {
            chunk: chunk.clone(),
            offset,
            len,
        }
    }
}

impl Deref for SwapSlice {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `offset + len <= cap` (checked in `SwapPool::commit`), the region was written
        // before the slice was created and handed over through the pool's lock (or a CQE), and
        // no one writes a region while a slice over it lives (`outstanding > 0` keeps the
        // chunk's write offset past it).
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.offset), self.len) }
    }
}

impl AsRef<[u8]> for SwapSlice {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for SwapSlice {
    fn drop(&mut self) {
        let before = self.chunk.outstanding.fetch_sub(1, Ordering::SeqCst);
        let shared = &self.chunk.shared;
        shared.slices.fetch_sub(1, Ordering::Relaxed);
        if before == 1 {
            shared.chunks_in_use.fetch_sub(1, Ordering::Relaxed);
        }
        // Pairs with the SeqCst store of `starving` in `SwapPool::space`: either the pool sees
        // this chunk free, or we see it starving and wake it.
        if before == 1 && self.chunk.shared.starving.load(Ordering::SeqCst) {
            self.chunk.shared.owner.swap_released();
        }
    }
}

impl fmt::Debug for SwapSlice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwapSlice(len {})", self.len)
    }
}

/// The swap buffers reads without a buffer land in, behind a lock (`space` then `commit`).
pub(crate) struct SwapPool {
    chunks: Vec<Arc<Chunk>>,
    current: usize,
    offset: usize,
    /// A read is only given a region of at least this many bytes; a smaller tail of a chunk is
    /// skipped, so reads are not cut short by a nearly full chunk.
    min_read: usize,
    shared: Arc<Shared>,
}

impl SwapPool {
    /// `count` chunks of `size` bytes each. Both must be non-zero (the builder checks).
    pub(crate) fn new(size: usize, count: usize, shared: Arc<Shared>) -> SwapPool {
        SwapPool {
            chunks: (0..count)
                .map(|_| Arc::new(Chunk::new(size, shared.clone())))
                .collect(),
            current: 0,
            offset: 0,
            min_read: size.min(4096),
            shared,
        }
    }

    /// A writable region for the next swap read, or `None` if every chunk is held by live
    /// slices. After `None` a dropped slice calls `swap_released` on the owner.
    pub(crate) fn space(&mut self) -> Option<(*mut u8, usize)> {
        if let Some(r) = self.find_space() {
            return Some(r);
        }
        self.shared.set_starving();
        // Re-check after announcing: a slice dropped just before the store saw no starving flag.
        // The flag stays set even when the re-check finds space: another reader (io_uring's
        // buffer ring shares it) may still wait, and clearing it here could lose that reader's
        // wake-up. The engine clears it when it retries the starved reads; at worst a release
        // wakes it once for nothing.
        self.find_space()
    }

    /// As [`space`](SwapPool::space), but a region of at least `want` bytes (or a whole
    /// buffer, when the buffers are smaller): a datagram receive, which a shorter region would
    /// cut. `None` (and the pool starving) when no such region is free.
    pub(crate) fn space_for(&mut self, want: usize) -> Option<(*mut u8, usize)> {
        let want = want.min(self.chunks[self.current].cap);
        let fits = |p: &mut SwapPool| {
            let cur = &p.chunks[p.current];
            cur.is_free() || cur.cap - p.offset >= want
        };
        if !fits(self) {
            let free = self.chunks.iter().position(|c| c.is_free());
            match free {
                Some(f) => {
                    self.current = f;
                    self.offset = 0;
                }
                None => {
                    self.shared.set_starving();
                    // Re-check after announcing, as `space` does.
                    let free = self.chunks.iter().position(|c| c.is_free())?;
                    self.current = free;
                    self.offset = 0;
                }
            }
        }
        let r = self.find_space()?;
        if r.1 >= want {
            Some(r)
        } else {
            self.shared.set_starving();
            None
        }
    }

    /// Bytes the next region would have without moving to another buffer: a free current
    /// buffer counts whole.
    pub(crate) fn room(&self) -> usize {
        let cur = &self.chunks[self.current];
        if cur.is_free() {
            cur.cap
        } else {
            cur.cap - self.offset
        }
    }

    /// Bytes per swap buffer.
    pub(crate) fn buffer_size(&self) -> usize {
        self.chunks[self.current].cap
    }

    fn find_space(&mut self) -> Option<(*mut u8, usize)> {
        let cur = &self.chunks[self.current];
        if cur.is_free() {
            self.offset = 0;
        }
        let left = cur.cap - self.offset;
        // Less than half a chunk left: a whole free chunk, if there is one, lets the read take
        // as much as a full buffer (a stream read capped at a leftover costs another round
        // trip per chunk); small reads still pack into one chunk.
        if left < self.min_read.max(cur.cap / 2) {
            match self.chunks.iter().position(|c| c.is_free()) {
                Some(free) => {
                    self.current = free;
                    self.offset = 0;
                }
                None if left < self.min_read => return None,
                None => {}
            }
        }
        let cur = &self.chunks[self.current];
        // SAFETY: `offset <= cap`, so the pointer stays inside (or one past) the allocation.
        let ptr = unsafe { cur.ptr.as_ptr().add(self.offset) };
        Some((ptr, cur.cap - self.offset))
    }

    /// Records that the last region from `space` received `n` bytes (`0 < n <= len`) and hands
    /// them out.
    pub(crate) fn commit(&mut self, n: usize) -> SwapSlice {
        let slice = SwapSlice::new(&self.chunks[self.current], self.offset, n);
        self.offset += n;
        slice
    }

    /// Called when the engine retries starved reads.
    pub(crate) fn clear_starving(&self) {
        self.shared.clear_starving();
    }

    /// Swap bytes currently held by live slices, counted in whole chunks (for tests and stats).
    #[cfg(test)]
    fn chunks_in_use(&self) -> usize {
        self.chunks.iter().filter(|c| !c.is_free()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl SwapOwner for Count {
        fn swap_released(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn fill(pool: &mut SwapPool, byte: u8, n: usize) -> Option<SwapSlice> {
        let (ptr, len) = pool.space()?;
        assert!(len >= n);
        // SAFETY: `space` returned a writable region of `len >= n` bytes that no slice covers.
        unsafe { std::ptr::write_bytes(ptr, byte, n) };
        Some(pool.commit(n))
    }

    #[test]
    fn slices_keep_their_bytes_until_dropped() {
        let owner = Arc::new(Count::default());
        let mut pool = SwapPool::new(8192, 2, Shared::new(owner.clone()));
        let a = fill(&mut pool, 1, 4096).unwrap();
        let b = fill(&mut pool, 2, 4096).unwrap();
        let c = fill(&mut pool, 3, 4096).unwrap();
        let d = fill(&mut pool, 4, 4096).unwrap();
        assert!(pool.space().is_none(), "both chunks are held");
        assert!(a.iter().all(|&x| x == 1) && b.iter().all(|&x| x == 2));
        assert!(c.iter().all(|&x| x == 3) && d.iter().all(|&x| x == 4));
        drop(a);
        assert_eq!(owner.0.load(Ordering::SeqCst), 0, "chunk 0 still holds b");
        drop(b);
        assert_eq!(
            owner.0.load(Ordering::SeqCst),
            1,
            "a starving pool is woken"
        );
        pool.clear_starving();
        let e = fill(&mut pool, 5, 4096).unwrap();
        assert!(
            c.iter().all(|&x| x == 3),
            "live slices are never overwritten"
        );
        assert_eq!(pool.chunks_in_use(), 2);
        drop((c, d, e));
        assert_eq!(pool.chunks_in_use(), 0);
    }

    #[test]
    fn slice_outlives_pool() {
        let mut pool = SwapPool::new(4096, 1, Shared::new(Arc::new(Count::default())));
        let s = fill(&mut pool, 9, 100).unwrap();
        drop(pool);
        assert_eq!(s.len(), 100);
        assert!(s.iter().all(|&x| x == 9));
    }
}

/// `loom` models of the release and starvation wake-up (`RUSTFLAGS="--cfg gaio_loom" cargo
/// test --release --lib loom`). The owner's wake-up is a token count a "loop" thread sleeps
/// on (the loop's `SwapReleased` message); a lost wake-up leaves it asleep, which loom
/// reports as a deadlock.
#[cfg(all(test, gaio_loom))]
mod loom_model {
    use super::*;
    use crate::sync::{lock, Condvar, Mutex};
    use loom::thread;

    /// The loop's inbox: `swap_released` calls not yet taken.
    #[derive(Default)]
    struct Inbox {
        tokens: Mutex<usize>,
        cv: Condvar,
    }

    impl SwapOwner for Inbox {
        fn swap_released(&self) {
            *lock(&self.tokens) += 1;
            self.cv.notify_one();
        }
    }

    impl Inbox {
        /// Sleeps until a `swap_released` comes, and takes it.
        fn wait(&self) {
            let mut g = lock(&self.tokens);
            while *g == 0 {
                g = self.cv.wait(g).unwrap();
            }
            *g -= 1;
        }
    }

    /// A shared state as the watcher makes it, with `starving` written once with `SeqCst` as
    /// every later access to it is: loom regards `SeqCst` accesses as `AcqRel` except that a
    /// `SeqCst` load never returns a `SeqCst` store older than the newest one, and an atomic's
    /// initial value is no `SeqCst` store, so without this loom could let a load see the
    /// initial `false` after the pool's `set_starving` (a false alarm C11 rules out: the
    /// initial value happens before both threads).
    fn shared(owner: &std::sync::Arc<Inbox>) -> std::sync::Arc<Shared> {
        let shared = Shared::new(owner.clone());
        shared.clear_starving();
        shared
    }

    /// A slice over the whole of `pool`'s only chunk.
    fn fill(pool: &mut SwapPool) -> SwapSlice {
        let (_, len) = pool.space().expect("an empty pool has space");
        pool.commit(len)
    }

    /// The loop finds no space while a consumer drops the last slice: either the re-check in
    /// `space` finds the chunk free, or the drop sees `starving` and wakes the loop, which
    /// then finds it.
    #[test]
    fn loom_starving_pool_is_woken_by_the_last_release() {
        loom::model(|| {
            let owner = std::sync::Arc::new(Inbox::default());
            let mut pool = SwapPool::new(8, 1, shared(&owner));
            let slice = fill(&mut pool);
            let consumer = thread::spawn(move || drop(slice));
            // The loop: a starved read, retried on each wake-up as `retry_starved` does.
            while pool.space().is_none() {
                owner.wait();
                pool.clear_starving();
            }
            consumer.join().unwrap();
        });
    }

    /// Two slices of one chunk dropped on two threads: only the last one frees the chunk,
    /// and the loop is still woken.
    #[test]
    fn loom_two_slices_dropped_concurrently() {
        loom::model(|| {
            let owner = std::sync::Arc::new(Inbox::default());
            // Reads take at least 4096 bytes: two fit one 8192-byte chunk.
            let mut pool = SwapPool::new(8192, 1, shared(&owner));
            let (_, _) = pool.space().unwrap();
            let a = pool.commit(4096);
            let (_, left) = pool.space().unwrap();
            assert_eq!(left, 4096);
            let b = pool.commit(4096);
            let ta = thread::spawn(move || drop(a));
            let tb = thread::spawn(move || drop(b));
            while pool.space().is_none() {
                owner.wait();
                pool.clear_starving();
            }
            ta.join().unwrap();
            tb.join().unwrap();
        });
    }

    /// io_uring (issue 12, class 6): the submit side's pool (one chunk) and the ring's buffer
    /// ring share one `starving` flag. The ring thread's read found no buffer (ENOBUFS) and
    /// set the flag; a submitter's inline swap read finds its chunk held, sets the flag, and
    /// its re-check finds the chunk freed meanwhile. That re-check used to clear the flag: the
    /// ring's buffer was then released with the flag clear, no `swap_released` came, and the
    /// ring's read waited for an unrelated wake-up (for ever here, which loom reported as a
    /// deadlock). The re-check no longer clears it; this model is the regression test.
    ///
    /// The ring side is what `complete` (`Next::Starve`) and the loop's wake-up do, at the
    /// level of `Shared` and `Chunk`: `set_starving`, then `recycle` (the buffer back if no
    /// slice holds it) and `retry_starved` (`clear_starving`); on each `SwapReleased`,
    /// `recycle` again.
    #[test]
    fn loom_uring_ring_and_pool_share_the_starving_flag() {
        loom::model(|| {
            let owner = std::sync::Arc::new(Inbox::default());
            let shared = shared(&owner);
            // The submit side: one chunk, held by an inline swap read's slice.
            let mut pool = SwapPool::new(8, 1, shared.clone());
            let inline_slice = fill(&mut pool);
            // The ring: one buffer, taken by a CQE (`BufRing::take`), its slice held.
            let ring_buf = std::sync::Arc::new(Chunk::new(8, shared.clone()));
            let ring_slice = SwapSlice::new(&ring_buf, 0, 8);

            let ring = {
                let (shared, owner, ring_buf) = (shared.clone(), owner.clone(), ring_buf.clone());
                thread::spawn(move || {
                    // ENOBUFS: the read waits for a buffer.
                    shared.set_starving();
                    // `recycle` until the buffer is back, sleeping between wake-ups.
                    while !ring_buf.is_free() {
                        owner.wait();
                    }
                    shared.clear_starving();
                })
            };
            let submitter = thread::spawn(move || {
                // An inline swap read: a region if its chunk is free, else off to the ring.
                let _ = pool.space();
            });
            // The consumer drops its slices: the inline one, then the ring's.
            drop(inline_slice);
            drop(ring_slice);
            submitter.join().unwrap();
            ring.join().unwrap();
        });
    }
}
