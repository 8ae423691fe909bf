//! Which client drives the workloads that have a choice (stream, burst, ping-pong, latency),
//! and how the report names it. The mio client is the default and the one the targets are
//! checked with (DESIGN.md §5: the client must not be the cap, and must not be gaio); the
//! examples' clients stay selectable for comparison with older results.

use crate::plan::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// `mio_client`: non-blocking sockets, edge-triggered `mio`, one thread by default.
    Mio,
    /// The examples' clients (`examples/common/workloads.rs`): a gaio client watcher for
    /// burst, ping-pong and latency; for stream a writer and a reader thread per connection
    /// on blocking sockets.
    Gaio,
}

impl Client {
    pub const ALL: [Client; 2] = [Client::Mio, Client::Gaio];

    /// The name `--client` takes.
    pub fn name(self) -> &'static str {
        match self {
            Client::Mio => "mio",
            Client::Gaio => "gaio",
        }
    }

    pub fn parse(s: &str) -> Option<Client> {
        Client::ALL.into_iter().find(|c| c.name() == s)
    }

    /// How the client is named in the tables of `w`: `mio client`, `gaio client`, or, for the
    /// gaio choice on stream (which is not a gaio watcher), `blocking-threads client`.
    pub fn label(self, w: Workload) -> &'static str {
        match (self, w) {
            (Client::Mio, _) => "mio client",
            (Client::Gaio, Workload::Stream1 | Workload::Stream8) => "blocking-threads client",
            (Client::Gaio, _) => "gaio client",
        }
    }

    /// What the client is, for the report's notes; `threads` is `--client-threads`, `backend`
    /// the gaio client watcher's.
    pub fn describe(self, threads: usize, backend: gaio::Backend) -> String {
        match self {
            Client::Mio => format!(
                "mio client: `benches/compare/mio_client/`, {threads} thread(s) (connections \
                 split among them), non-blocking sockets, edge-triggered `mio::Poll`, each \
                 direction driven to `EAGAIN` on every event (except the read after a \
                 complete 64 B echo, behind which nothing can be), every echoed byte compared \
                 with what was sent; latencies from an `Instant` before each request's write to \
                 one after its echo was checked, percentiles from the sorted samples"
            ),
            Client::Gaio => format!(
                "gaio client: the examples' clients (`examples/common/workloads.rs`): burst, \
                 ping-pong and latency on one gaio {backend} client watcher (`write` + \
                 `read_full` per request), stream on a writer and a reader thread per \
                 connection with blocking sockets (`blocking-threads client`)"
            ),
        }
    }
}
