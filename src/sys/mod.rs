//! OS calls only: descriptor checks, blocking mode, and the non-blocking syscall attempts the
//! request kinds use (`crate::request`), each retrying EINTR and classifying errno in one place.

pub(crate) mod fd;
