//! The provided buffer ring behind swap reads on io_uring.
//!
//! A swap read is a RECV with BUFFER_SELECT: the kernel picks a buffer only when data arrives,
//! so a connection waiting on a swap read holds no buffer. With incremental consumption
//! (`IOU_PBUF_RING_INC`, 6.12) a 64 KiB buffer is filled by many small reads in turn, like the
//! epoll backend's swap chunks; each CQE's bytes start where the previous one on that buffer
//! ended. A buffer goes back into the ring only when the kernel is done with it (a CQE without
//! `IORING_CQE_F_BUF_MORE`) and every [`SwapSlice`] cut from it has been dropped.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

use crate::swap::{Chunk, Shared, SwapSlice};

/// `IOU_PBUF_RING_INC`: the io-uring crate keeps `sys` private, so the flag is spelled here.
const IOU_PBUF_RING_INC: u16 = 2;
/// `IORING_CQE_F_BUF_MORE`: the buffer was only partly used and stays with the kernel.
const CQE_F_BUF_MORE: u32 = 1 << 4;

pub(crate) const BGID: u16 = 0;

pub(crate) struct BufRing {
    entries: NonNull<BufRingEntry>,
    map_len: usize,
    mask: u16,
    tail: u16,
    chunks: Vec<Arc<Chunk>>,
    /// Bytes of each buffer the kernel has used so far (incremental mode).
    used: Vec<usize>,
    /// Whether each buffer is in the ring (the kernel may fill it).
    in_ring: Vec<bool>,
    incremental: bool,
    buf_size: usize,
    shared: Arc<Shared>,
    /// Bumped at every publish: a request armed before the latest publish may have seen an
    /// emptier ring than the kernel has now.
    generation: u64,
}

impl BufRing {
    /// `count` buffers (rounded up to a power of two, at most 32768) of `size` bytes each.
    pub(crate) fn new(
        ring: &IoUring,
        count: usize,
        size: usize,
        shared: Arc<Shared>,
    ) -> io::Result<BufRing> {
        let n = count.clamp(1, 32768).next_power_of_two();
        let size = size.min(u32::MAX as usize);
        let map_len = n * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let entries = NonNull::new(addr.cast::<BufRingEntry>()).ok_or(io::ErrorKind::Other)?;
        let mut br = BufRing {
            entries,
            map_len,
            mask: (n - 1) as u16,
            tail: 0,
            chunks: (0..n)
                .map(|_| Arc::new(Chunk::new(size, shared.clone())))
                .collect(),
            used: vec![0; n],
            in_ring: vec![false; n],
            incremental: true,
            buf_size: size,
            shared,
            generation: 0,
        };
        let submitter = ring.submitter();
        // SAFETY: the mapping is page-aligned, `n` entries long, and stays mapped until
        // `unregister` (called by the loop before the ring and this struct are dropped).
        let reg = unsafe {
            submitter.register_buf_ring_with_flags(addr as u64, n as u16, BGID, IOU_PBUF_RING_INC)
        };
        if reg.is_err() {
            br.incremental = false;
            // SAFETY: as above.
            unsafe { submitter.register_buf_ring_with_flags(addr as u64, n as u16, BGID, 0) }?;
        }
        for bid in 0..n {
            br.push(bid as u16);
        }
        br.publish();
        Ok(br)
    }

    /// Largest read a swap RECV may ask for.
    pub(crate) fn buf_size(&self) -> usize {
        self.buf_size
    }

    fn push(&mut self, bid: u16) {
        let chunk = &self.chunks[bid as usize];
        let idx = (self.tail & self.mask) as usize;
        // SAFETY: `idx < n`, inside the mapping; the kernel reads entries only up to the tail
        // we publish, and this one is past it until `publish`.
        let e = unsafe { &mut *self.entries.as_ptr().add(idx) };
        e.set_addr(chunk.ptr() as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.in_ring[bid as usize] = true;
        self.used[bid as usize] = 0;
    }

    /// The publish count; see `generation`.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    fn publish(&mut self) {
        self.generation += 1;
        // SAFETY: the tail field lives inside the first entry of our mapping.
        let tail = unsafe { BufRingEntry::tail(self.entries.as_ptr()) } as *const AtomicU16;
        // SAFETY: the kernel reads this u16 concurrently; an atomic release store is how the
        // ABI expects it to be written (liburing's io_uring_buf_ring_advance).
        unsafe { (*tail).store(self.tail, Ordering::Release) };
    }

    /// Accounts for a CQE that selected buffer `bid` and received `len` bytes (0 for EOF or an
    /// error), and hands the bytes out.
    pub(crate) fn take(&mut self, bid: u16, len: usize, flags: u32) -> Option<SwapSlice> {
        let i = bid as usize;
        if i >= self.chunks.len() {
            return None;
        }
        let start = if self.incremental { self.used[i] } else { 0 };
        let slice = (len > 0 && start + len <= self.buf_size)
            .then(|| SwapSlice::new(&self.chunks[i], start, len));
        self.used[i] = start + len;
        if !self.incremental || flags & CQE_F_BUF_MORE == 0 {
            // The kernel is done with this buffer; it returns once its slices are dropped.
            self.in_ring[i] = false;
        }
        slice
    }

    /// Puts back every buffer the kernel is done with and no live slice uses. True if any
    /// went back.
    pub(crate) fn recycle(&mut self) -> bool {
        let mut any = false;
        for bid in 0..self.chunks.len() {
            if !self.in_ring[bid] && self.chunks[bid].is_free() {
                self.push(bid as u16);
                any = true;
            }
        }
        if any {
            self.publish();
        }
        any
    }

    /// True when some buffer waits for its slices to be dropped.
    pub(crate) fn has_held(&self) -> bool {
        self.in_ring.iter().any(|r| !r)
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Unregisters the ring from the kernel. Only once no request can select a buffer.
    pub(crate) fn unregister(&self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(BGID);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; the kernel no longer uses it (the
        // loop unregistered it, or the ring is gone).
        unsafe { libc::munmap(self.entries.as_ptr().cast(), self.map_len) };
    }
}
