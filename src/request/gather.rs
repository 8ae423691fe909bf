//! A vectored write's progress through its pieces: where the next step starts (a cursor, so a
//! step costs what it sends, not what was sent before it), the total length, and the iovec
//! array (and, for io_uring's SENDMSG, the message header) the next syscall or SQE reads.
//! Boxed in the request: the kernel reads the array until the CQE, while the request's slot may
//! move.

use super::MAX_STEP;
use crate::buffer::Buffer;

/// Pieces of a vectored write one step sends at most (the kernel's own limit, `UIO_MAXIOV`, is
/// 1024): a write of more pieces takes more steps, each a syscall or an SQE.
pub(crate) const IOV_STEP: usize = 64;

/// An iovec that describes nothing (array initialiser).
pub(crate) const EMPTY_IOV: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

pub(crate) struct Gather {
    /// The piece the next step starts in, and the bytes of it already sent.
    piece: usize,
    offset: usize,
    /// Bytes of all pieces together.
    pub(crate) total: usize,
    pub(crate) iov: [libc::iovec; IOV_STEP],
    #[cfg_attr(not(all(target_os = "linux", feature = "io-uring")), allow(dead_code))]
    pub(crate) msg: libc::msghdr,
}

// SAFETY: the raw pointers in a `Gather` point into the pieces of the request that owns it (and
// `msg` into its own `iov`), never at thread-local memory; they are written only by the thread
// that holds the request, to build the next step, and read by the kernel. Moving the box to
// another thread with its request moves nothing the pointers refer to.
unsafe impl Send for Gather {}

impl Gather {
    pub(crate) fn new(pieces: &[Buffer]) -> Box<Gather> {
        Box::new(Gather {
            piece: 0,
            offset: 0,
            total: pieces.iter().map(Buffer::len).sum(),
            iov: [EMPTY_IOV; IOV_STEP],
            // SAFETY: all-zero is a valid `msghdr` (no name, no control data, no iovecs).
            msg: unsafe { std::mem::zeroed() },
        })
    }

    /// Fills `iov` with the unsent parts of `pieces` from the cursor on: [`fill`] from it.
    pub(crate) fn fill(&mut self, pieces: &[Buffer], budget: usize) -> usize {
        fill(pieces, self.piece, self.offset, budget, &mut self.iov)
    }

    /// The next step's iovecs: [`fill`](Gather::fill) with [`MAX_STEP`] bytes at most (a CQE's
    /// result is an `i32`).
    pub(crate) fn next(&mut self, pieces: &[Buffer]) -> &[libc::iovec] {
        let n = self.fill(pieces, MAX_STEP);
        &self.iov[..n]
    }

    /// Moves the cursor past `sent` more bytes.
    pub(crate) fn advance(&mut self, pieces: &[Buffer], mut sent: usize) {
        while sent > 0 && self.piece < pieces.len() {
            let left = pieces[self.piece].len() - self.offset;
            if sent < left {
                self.offset += sent;
                return;
            }
            sent -= left;
            self.piece += 1;
            self.offset = 0;
        }
    }
}

/// Fills `iov` with the parts of `pieces` from byte `offset` of piece `piece` on, in order: as
/// many as fit, skipping empty ones, at most `budget` bytes in all. Returns how many entries it
/// filled. The pointers are `*mut` only because `iovec`'s are: the kernel reads through them.
pub(crate) fn fill(
    pieces: &[Buffer],
    piece: usize,
    offset: usize,
    budget: usize,
    iov: &mut [libc::iovec],
) -> usize {
    let (mut n, mut budget, mut skip) = (0, budget, offset);
    for p in pieces.iter().skip(piece) {
        if n == iov.len() || budget == 0 {
            break;
        }
        let part = &p.as_slice()[skip.min(p.len())..];
        skip = 0;
        if part.is_empty() {
            continue;
        }
        let len = part.len().min(budget);
        budget -= len;
        iov[n] = libc::iovec {
            iov_base: part.as_ptr().cast_mut().cast(),
            iov_len: len,
        };
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(lens: &[usize]) -> Vec<Buffer> {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| Buffer::from(vec![i as u8; n]))
            .collect()
    }

    /// What `fill` describes, as (piece byte, length) per entry.
    fn described(g: &mut Gather, p: &[Buffer], budget: usize) -> Vec<(u8, usize)> {
        let n = g.fill(p, budget);
        g.iov[..n]
            .iter()
            // SAFETY: each entry describes `iov_len` readable bytes of a piece in `p`.
            .map(|v| (unsafe { *(v.iov_base as *const u8) }, v.iov_len))
            .collect()
    }

    #[test]
    fn fill_skips_empty_pieces_and_respects_the_budget() {
        let p = pieces(&[3, 0, 5, 0, 0, 2]);
        let mut g = Gather::new(&p);
        assert_eq!(g.total, 10);
        assert_eq!(described(&mut g, &p, usize::MAX), [(0, 3), (2, 5), (5, 2)]);
        assert_eq!(described(&mut g, &p, 4), [(0, 3), (2, 1)]);
        assert_eq!(described(&mut g, &p, 3), [(0, 3)]);
    }

    #[test]
    fn advance_crosses_pieces_and_boundaries() {
        let p = pieces(&[3, 0, 5, 2]);
        let mut g = Gather::new(&p);
        g.advance(&p, 2);
        assert_eq!(described(&mut g, &p, usize::MAX), [(0, 1), (2, 5), (3, 2)]);
        g.advance(&p, 1); // exactly to the end of piece 0: the empty piece 1 is passed too
        assert_eq!(described(&mut g, &p, usize::MAX), [(2, 5), (3, 2)]);
        g.advance(&p, 6);
        assert_eq!(described(&mut g, &p, usize::MAX), [(3, 1)]);
        g.advance(&p, 1);
        assert!(described(&mut g, &p, usize::MAX).is_empty());
    }

    #[test]
    fn a_step_takes_at_most_iov_step_pieces() {
        let p = pieces(&[1; IOV_STEP + 10]);
        let mut g = Gather::new(&p);
        assert_eq!(g.fill(&p, usize::MAX), IOV_STEP);
        g.advance(&p, IOV_STEP);
        assert_eq!(g.fill(&p, usize::MAX), 10);
    }
}
