//! Buffers for file requests: the caller's `Vec<u8>`, or an [`AlignedBuf`] for `O_DIRECT`.

use std::alloc::Layout;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::os::fd::AsFd;
use std::ptr::NonNull;

use crate::{Error, Result};

/// A heap buffer whose start address is a multiple of `align` bytes, for `O_DIRECT` files
/// (whose reads and writes need aligned memory, lengths and offsets).
///
/// Get the alignment a file needs with [`dio_alignment`], or let
/// [`AlignedBuf::for_file`] do it. Zero-filled on creation; dereferences to `[u8]` of
/// exactly `len` bytes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    align: usize,
}

// SAFETY: an AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`, like a Box<[u8]>.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// `len` zero bytes starting at a multiple of `align` (a power of two).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `len` is zero, `align` is not a power of two, or the size
    /// overflows.
    pub fn new(len: usize, align: usize) -> Result<AlignedBuf> {
        if len == 0 {
            return Err(Error::InvalidArgument("AlignedBuf of length 0".into()));
        }
        let layout = Layout::from_size_align(len, align.max(1))
            .map_err(|_| Error::InvalidArgument(format!("alignment {align} for {len} bytes")))?;
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| Error::Io(std::io::Error::from(std::io::ErrorKind::OutOfMemory)))?;
        Ok(AlignedBuf {
            ptr,
            len,
            align: layout.align(),
        })
    }

    /// A buffer of `len` bytes aligned as `file` needs for direct I/O ([`dio_alignment`]).
    ///
    /// # Errors
    /// As [`AlignedBuf::new`], and [`Error::Io`] if the file cannot be queried.
    pub fn for_file<F: AsFd>(file: &F, len: usize) -> Result<AlignedBuf> {
        let a = dio_alignment(file)?;
        AlignedBuf::new(len, a.memory)
    }

    /// The alignment of the start address, in bytes.
    pub fn align(&self) -> usize {
        self.align
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised (zeroed) bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` gives exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this size and alignment.
        unsafe {
            std::alloc::dealloc(
                self.ptr.as_ptr(),
                Layout::from_size_align_unchecked(self.len, self.align),
            )
        };
    }
}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf(len {}, align {})", self.len, self.align)
    }
}

/// The buffer of a file request: the caller's `Vec<u8>` or an [`AlignedBuf`]. Both convert
/// with `From`, so `read_at(ctx, &f, vec![0; 4096], …)` and `read_at(ctx, &f, aligned, …)`
/// both work.
#[derive(Debug)]
pub enum IoBuf {
    /// An ordinary vector.
    Vec(Vec<u8>),
    /// Aligned memory for `O_DIRECT`.
    Aligned(AlignedBuf),
}

impl IoBuf {
    /// The `Vec`, if this is one.
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            IoBuf::Vec(v) => Some(v),
            IoBuf::Aligned(_) => None,
        }
    }
}

impl From<Vec<u8>> for IoBuf {
    fn from(v: Vec<u8>) -> IoBuf {
        IoBuf::Vec(v)
    }
}

impl From<AlignedBuf> for IoBuf {
    fn from(b: AlignedBuf) -> IoBuf {
        IoBuf::Aligned(b)
    }
}

impl Deref for IoBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            IoBuf::Vec(v) => v,
            IoBuf::Aligned(b) => b,
        }
    }
}

impl DerefMut for IoBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            IoBuf::Vec(v) => v,
            IoBuf::Aligned(b) => b,
        }
    }
}

pub use crate::sys::fd::DioAlignment;

/// The alignment `file` needs for `O_DIRECT` reads and writes, from
/// `statx(STATX_DIOALIGN)` (512 on this project's machine), or 512 bytes where the kernel does
/// not report it.
///
/// # Errors
/// [`Error::Io`] if `statx` fails on the descriptor.
pub fn dio_alignment<F: AsFd>(file: &F) -> Result<DioAlignment> {
    crate::sys::fd::dio_alignment(file.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let b = AlignedBuf::new(4096 + 3, 512).unwrap();
        assert_eq!(b.as_ptr() as usize % 512, 0);
        assert_eq!(b.len(), 4099);
        assert!(b.iter().all(|&x| x == 0));
        assert!(AlignedBuf::new(0, 512).is_err());
        assert!(AlignedBuf::new(10, 3).is_err());
    }
}
