//! Backend choice: the `Backend` enum and the `GAIO_BACKEND` environment variable.

use crate::{Error, Result};

/// Which kernel interface a [`Watcher`](crate::Watcher) drives.
///
/// `#[non_exhaustive]`: other backends may come (kqueue, …), so a `match` needs a `_` arm;
/// naming a variant is unaffected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// io_uring where the kernel allows it, epoll otherwise. The default.
    Auto,
    /// Readiness through `mio` (epoll on Linux), with a poller thread and a loop thread as in
    /// Go's gaio; on Linux a thread in `wait_io` with nothing to take waits for readiness and
    /// serves it itself (see [`Watcher`](crate::Watcher)).
    Epoll,
    /// io_uring (Linux only): one thread owns the ring, submits and reaps (SINGLE_ISSUER and
    /// DEFER_TASKRUN where the kernel has them); swap reads use a provided buffer ring.
    Uring,
}

/// The reason [`Backend::Uring`] is refused when the crate was built without its cargo
/// feature (`Error::BackendUnavailable`'s text).
#[cfg(all(target_os = "linux", not(feature = "io-uring")))]
pub(crate) const NOT_COMPILED_IN: &str =
    "io_uring support not compiled in (cargo feature io-uring)";

impl Backend {
    /// Whether this build of the crate contains `self`'s backend: `false` for
    /// [`Backend::Uring`] when the `io-uring` cargo feature (on by default) is off or the
    /// target is not Linux, `true` otherwise ([`Backend::Auto`] always, as it falls back to
    /// epoll). Compiled in does not mean usable: the kernel may still refuse io_uring, which
    /// [`Builder::build`](crate::Builder::build) reports as [`Error::BackendUnavailable`].
    ///
    /// ```
    /// use gaio::Backend;
    /// assert!(Backend::Epoll.compiled_in() && Backend::Auto.compiled_in());
    /// if !Backend::Uring.compiled_in() {
    ///     // Built without the `io-uring` feature (or not on Linux): asking for it is refused.
    ///     let r = gaio::Watcher::builder().backend(Backend::Uring).build::<()>();
    ///     assert!(matches!(r, Err(gaio::Error::BackendUnavailable(_))));
    /// }
    /// ```
    pub const fn compiled_in(self) -> bool {
        match self {
            Backend::Uring => cfg!(all(target_os = "linux", feature = "io-uring")),
            Backend::Auto | Backend::Epoll => true,
        }
    }

    /// The backend named by the `GAIO_BACKEND` environment variable: `epoll`, `uring` or
    /// `auto` (any case); unset or empty means [`Backend::Auto`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for any other value.
    pub fn from_env() -> Result<Backend> {
        match std::env::var("GAIO_BACKEND") {
            Ok(v) => v.parse(),
            Err(_) => Ok(Backend::Auto),
        }
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Backend::Auto),
            "epoll" => Ok(Backend::Epoll),
            "uring" | "io_uring" | "io-uring" => Ok(Backend::Uring),
            other => Err(Error::InvalidArgument(format!(
                "GAIO_BACKEND={other:?} (expected epoll, uring or auto)"
            ))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Epoll => "epoll",
            Backend::Uring => "uring",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!("EPOLL".parse::<Backend>().unwrap(), Backend::Epoll);
        assert_eq!("uring".parse::<Backend>().unwrap(), Backend::Uring);
        assert_eq!("".parse::<Backend>().unwrap(), Backend::Auto);
        assert!(matches!(
            "kqueue".parse::<Backend>(),
            Err(Error::InvalidArgument(_))
        ));
    }
}
