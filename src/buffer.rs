//! `Buffer`: the memory a request carries in (a write's bytes) and back out (every result).
//!
//! A write takes any owned buffer whose bytes stay where they are while the kernel reads them:
//! a `Vec<u8>`, a `Box<[u8]>`, an `Arc<[u8]>` shared with other writes, a `&'static [u8]`, a
//! [`SwapSlice`] a read just returned, an [`AlignedBuf`], or `bytes::Bytes` (cargo feature
//! `bytes`). None of them is copied: the syscall or the SQE points at the caller's bytes, and
//! the result hands the same buffer back.

use std::fmt;
use std::sync::Arc;

use crate::buf::{AlignedBuf, IoBuf};
use crate::swap::SwapSlice;

/// The memory of a request: what a write sends and what every result carries back.
///
/// Go's `OpResult.Buffer` plus `IsSwapBuffer`, as one enum so that the two cannot disagree,
/// widened (where Go takes only a `[]byte`) to the owned buffer types Rust servers share
/// between writes. Each type converts with `From`, so a write takes it as it is:
/// `w.write(ctx, &conn, shared.clone())` with `shared: Arc<[u8]>`; the result's `buffer` is
/// the same variant holding the same allocation (its [`as_slice`](Buffer::as_slice) points at
/// the same bytes). `#[non_exhaustive]`: a `match` needs a `_` arm.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let (peer, ours) = std::os::unix::net::UnixStream::pair()?;
/// let w: gaio::Watcher<()> = gaio::Watcher::new()?;
/// let conn = w.watch(&ours)?;
/// let shared: Arc<[u8]> = Arc::from(&b"to everyone"[..]);
/// w.write((), &conn, shared.clone())?; // no copy: the kernel reads the Arc's bytes
/// let res = w.wait_io_timeout(Duration::from_secs(5))?.next().expect("a result within 5 s");
/// assert_eq!(res.size, 11);
/// assert_eq!(res.buffer.as_slice().as_ptr(), shared.as_ptr()); // the same bytes back
/// assert!(matches!(res.buffer, gaio::Buffer::Shared(_)));
/// # drop(peer);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[non_exhaustive]
pub enum Buffer {
    /// No memory: a swap-buffer read that ended without data (EOF, an error, a deadline, a
    /// free), and requests that carry none (accept, connect, shutdown, fsync).
    None,
    /// The caller's `Vec`, returned whole (its length is the length it was submitted with;
    /// the bytes moved are `[..size]`).
    User(Vec<u8>),
    /// The caller's [`AlignedBuf`] (file requests on `O_DIRECT` files), returned whole.
    Aligned(AlignedBuf),
    /// A slice of the watcher's swap buffer: what a [`read`](crate::Watcher::read) without a
    /// buffer received (exactly `size` bytes), or a slice the caller wrote back. It stays valid
    /// and unchanged for as long as the [`SwapSlice`] lives; dropping it gives the space back.
    Swap(SwapSlice),
    /// The caller's `Box<[u8]>`, returned whole.
    Boxed(Box<[u8]>),
    /// The caller's `Arc<[u8]>` (typically shared by many writes), the same allocation back.
    Shared(Arc<[u8]>),
    /// Bytes that live for the whole program (`b"..."` literals, leaked buffers).
    Static(&'static [u8]),
    /// The caller's `bytes::Bytes`, the same handle back (cargo feature `bytes`).
    #[cfg(feature = "bytes")]
    #[cfg_attr(docsrs, doc(cfg(feature = "bytes")))]
    Bytes(bytes::Bytes),
    /// The pieces of a [`write_vectored`](crate::Watcher::write_vectored), in order, each the
    /// variant it was submitted as. A piece is never itself `Vectored`.
    Vectored(Vec<Buffer>),
}

impl Buffer {
    /// True for [`Buffer::Swap`]. Go's `IsSwapBuffer`.
    pub fn is_swap(&self) -> bool {
        matches!(self, Buffer::Swap(_))
    }

    /// The whole buffer as one slice: the caller's full `Vec` (or other owned buffer), the
    /// swap slice, or an empty slice for [`Buffer::None`]. A [`Buffer::Vectored`] has no one
    /// slice: this gives an empty slice for it, and [`pieces`](Buffer::pieces) its parts.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Buffer::None | Buffer::Vectored(_) => &[],
            Buffer::User(v) => v,
            Buffer::Aligned(b) => b,
            Buffer::Swap(s) => s,
            Buffer::Boxed(b) => b,
            Buffer::Shared(a) => a,
            Buffer::Static(s) => s,
            #[cfg(feature = "bytes")]
            Buffer::Bytes(b) => b,
        }
    }

    /// The buffers this one consists of: the pieces of a [`Buffer::Vectored`], otherwise this
    /// buffer alone (so a loop over `pieces()` sees every byte of any buffer).
    pub fn pieces(&self) -> &[Buffer] {
        match self {
            Buffer::Vectored(pieces) => pieces,
            other => std::slice::from_ref(other),
        }
    }

    /// Length in bytes: of the slice, or the sum of a vectored buffer's pieces.
    pub fn len(&self) -> usize {
        match self {
            Buffer::Vectored(pieces) => pieces.iter().map(Buffer::len).sum(),
            other => other.as_slice().len(),
        }
    }

    /// True when the buffer holds no bytes (a write of it is refused with
    /// [`Error::EmptyBuffer`](crate::Error::EmptyBuffer)).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The caller's `Vec` back, if this is [`Buffer::User`].
    pub fn into_vec(self) -> Option<Vec<u8>> {
        match self {
            Buffer::User(v) => Some(v),
            _ => None,
        }
    }

    /// The buffer as memory the kernel may write into: only a `Vec` or an [`AlignedBuf`]
    /// (the buffers a read takes; the submit calls accept no other kind for a read).
    pub(crate) fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        match self {
            Buffer::User(v) => Some(v),
            Buffer::Aligned(b) => Some(b),
            _ => None,
        }
    }
}

impl From<Vec<u8>> for Buffer {
    fn from(v: Vec<u8>) -> Buffer {
        Buffer::User(v)
    }
}

impl From<AlignedBuf> for Buffer {
    fn from(b: AlignedBuf) -> Buffer {
        Buffer::Aligned(b)
    }
}

impl From<IoBuf> for Buffer {
    fn from(b: IoBuf) -> Buffer {
        match b {
            IoBuf::Vec(v) => Buffer::User(v),
            IoBuf::Aligned(a) => Buffer::Aligned(a),
        }
    }
}

impl From<SwapSlice> for Buffer {
    fn from(s: SwapSlice) -> Buffer {
        Buffer::Swap(s)
    }
}

impl From<Box<[u8]>> for Buffer {
    fn from(b: Box<[u8]>) -> Buffer {
        Buffer::Boxed(b)
    }
}

impl From<Arc<[u8]>> for Buffer {
    fn from(a: Arc<[u8]>) -> Buffer {
        Buffer::Shared(a)
    }
}

impl From<&'static [u8]> for Buffer {
    fn from(s: &'static [u8]) -> Buffer {
        Buffer::Static(s)
    }
}

impl<const N: usize> From<&'static [u8; N]> for Buffer {
    fn from(s: &'static [u8; N]) -> Buffer {
        Buffer::Static(s)
    }
}

#[cfg(feature = "bytes")]
#[cfg_attr(docsrs, doc(cfg(feature = "bytes")))]
impl From<bytes::Bytes> for Buffer {
    fn from(b: bytes::Bytes) -> Buffer {
        Buffer::Bytes(b)
    }
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Buffer::None => return f.write_str("None"),
            Buffer::Vectored(p) => {
                return write!(f, "Vectored({} pieces, len {})", p.len(), self.len())
            }
            Buffer::User(_) => "User",
            Buffer::Aligned(_) => "Aligned",
            Buffer::Swap(_) => "Swap",
            Buffer::Boxed(_) => "Boxed",
            Buffer::Shared(_) => "Shared",
            Buffer::Static(_) => "Static",
            #[cfg(feature = "bytes")]
            Buffer::Bytes(_) => "Bytes",
        };
        write!(f, "{name}(len {})", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_keep_the_allocation() {
        let shared: Arc<[u8]> = Arc::from(vec![1u8; 100]);
        let b = Buffer::from(shared.clone());
        assert_eq!(b.as_slice().as_ptr(), shared.as_ptr());
        let boxed: Box<[u8]> = vec![2u8; 10].into_boxed_slice();
        let p = boxed.as_ptr();
        assert_eq!(Buffer::from(boxed).as_slice().as_ptr(), p);
        let lit = Buffer::from(b"abc");
        assert!(matches!(lit, Buffer::Static(s) if s == b"abc"));
        let v = Buffer::Vectored(vec![Buffer::from(b"ab"), Buffer::None, b.clone_shared()]);
        assert_eq!((v.len(), v.as_slice().len(), v.pieces().len()), (102, 0, 3));
        assert_eq!(Buffer::from(vec![0u8; 3]).pieces().len(), 1);
        assert!(Buffer::None.is_empty());
        assert_eq!(format!("{v:?}"), "Vectored(3 pieces, len 102)");
    }

    impl Buffer {
        fn clone_shared(&self) -> Buffer {
            match self {
                Buffer::Shared(a) => Buffer::Shared(a.clone()),
                _ => unreachable!(),
            }
        }
    }
}
