//! What a `compare` run measures: the workloads, the options, and the sizes and durations
//! that follow from them (and from the descriptor limit).

use std::time::Duration;

use gaio::Backend;

pub use crate::client::Client;
use crate::common::cli::{self, parse_list};
use crate::common::example::workloads::{BenchResult, BURST_MSG, PP_MSG, STREAM_CHUNK};
use crate::common::example::Args;
use crate::common::run_info;
use crate::peers::Impl;

pub const USAGE: &str = "\
usage: cargo bench --bench compare [-- OPTIONS]
       cargo bench --bench compare -- --report-only [--out PATH] [--chart PATH]

gaio's echo server on both backends against mio, tokio and monoio, with the same verifying
clients, side by side; then BENCHMARKS.md and its chart.

options:
  --quick                  1 round, 0.3 s phases
  --rounds N               rounds (1 to 100; default 3)
  --secs S                 seconds per phase (0.1 to 60; default 1.5)
  --only LIST              comma-separated workloads (default all; see below)
  --impls LIST             comma-separated implementations: gaio-epoll, gaio-uring, mio,
                           tokio, monoio (the default), and the opt-in gaio-epoll-spin,
                           gaio-uring-spin (Builder::busy_poll of 200 us)
  --client LIST            the client of stream, burst, ping-pong and latency: mio (one
                           thread, edge-triggered; default), gaio (the examples' clients: a
                           gaio watcher, and for stream a writer and a reader thread per
                           connection), or mio,gaio (both, the gaio one as extra tables)
  --client-threads N       the mio client's threads, connections split among them (1 to 64;
                           default 1)
  --client-backend B       the gaio client watcher's backend (the gaio client, and the
                           BenchmarkEcho shapes): epoll or uring (default epoll)
  --report-only            write the report and chart from the results files, run nothing
  --out PATH               write the report here (default BENCHMARKS.md)
  --json PATH              write the results file here (default
                           target/bench-results/compare.json)
  --chart PATH             write the chart here (default docs/benchmarks.svg)
  -h, --help               print this help

workloads for --only (comma-separated): stream1, stream8, burst, pingpong, latency1,
  latency16 (1 and 16 connections x 64 B request/response: p50, p99, p99.9), idle,
  echo-128B, echo-1K, echo-4K, echo-64K, echo-128K (Go gaio's BenchmarkEcho*, one
  connection), the same with -par (BenchmarkEcho*Parallel, 128 connections), and the groups
  echo, echo-par";

/// Message sizes of Go gaio's `BenchmarkEcho128B` ... `BenchmarkEcho128K`.
pub const ECHO_SIZES: [usize; 5] = [128, 1024, 4096, 64 * 1024, 128 * 1024];
/// Connections of Go gaio's `BenchmarkEcho*Parallel` (`benchmarkEcho(size, 128)`).
pub const ECHO_PAR_CONNS: usize = 128;

/// Connections of the latency workloads (`latency1`, `latency16`).
pub const LATENCY_CONNS: [usize; 2] = [1, 16];

/// Descriptors kept aside for everything that is not a connection.
const FD_RESERVE: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Stream1,
    Stream8,
    Burst,
    PingPong,
    /// `conns` connections x 64 B request/response, one request outstanding on each: the
    /// latency percentiles (the HFT case).
    Latency {
        conns: usize,
    },
    Idle,
    /// Go gaio's `benchmarkEcho(size, conns)`: per connection one write of `size` bytes
    /// and one read of up to `size` bytes always outstanding, pipelined.
    Echo {
        size: usize,
        parallel: bool,
    },
}

impl Workload {
    pub fn all() -> Vec<Workload> {
        let mut v = vec![
            Workload::Stream1,
            Workload::Stream8,
            Workload::Burst,
            Workload::PingPong,
        ];
        v.extend(LATENCY_CONNS.map(|conns| Workload::Latency { conns }));
        v.push(Workload::Idle);
        for parallel in [false, true] {
            for size in ECHO_SIZES {
                v.push(Workload::Echo { size, parallel });
            }
        }
        v
    }

    pub fn name(self) -> String {
        match self {
            Workload::Stream1 => "stream1".into(),
            Workload::Stream8 => "stream8".into(),
            Workload::Burst => "burst".into(),
            Workload::PingPong => "pingpong".into(),
            Workload::Latency { conns } => format!("latency{conns}"),
            Workload::Idle => "idle".into(),
            Workload::Echo { size, parallel } => {
                format!(
                    "echo-{}{}",
                    size_name(size),
                    if parallel { "-par" } else { "" }
                )
            }
        }
    }

    /// For the watchdog's message.
    pub fn phase(self) -> &'static str {
        match self {
            Workload::Stream1 => "stream1",
            Workload::Stream8 => "stream8",
            Workload::Burst => "burst",
            Workload::PingPong => "pingpong",
            Workload::Latency { .. } => "latency",
            Workload::Idle => "idle",
            Workload::Echo { .. } => "BenchmarkEcho shapes",
        }
    }

    /// Whether `--client` chooses what drives it (idle always uses plain sockets, the
    /// BenchmarkEcho shapes a gaio watcher, as Go's benchmark does).
    pub fn has_client_choice(self) -> bool {
        !matches!(self, Workload::Idle | Workload::Echo { .. })
    }
}

/// `128B`, `1K`, `64K`: as Go gaio names its benchmarks.
pub fn size_name(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{}K", size / 1024)
    } else {
        format!("{size}B")
    }
}

pub struct Options {
    pub quick: bool,
    pub report_only: bool,
    pub rounds: Option<usize>,
    pub secs: Option<f64>,
    pub only: Vec<Workload>,
    pub impls: Vec<Impl>,
    /// Drivers of the workloads with a client choice, the first one's tables first.
    pub clients: Vec<Client>,
    pub client_threads: usize,
    pub client_backend: Backend,
    pub out: Option<String>,
    pub json: Option<String>,
    pub chart: Option<String>,
}

impl Options {
    /// Every workload on every implementation, with the mio client: the run whose results are
    /// the reference ones.
    pub fn complete(&self) -> bool {
        self.only.len() == Workload::all().len()
            && self.impls.len() == Impl::ALL.len()
            && self.clients.contains(&Client::Mio)
    }
}

pub fn parse_args() -> BenchResult<Options> {
    let mut o = Options {
        // Run with no argument at all (cargo test --benches, --all-targets): a smoke test.
        quick: run_info::no_arguments(),
        report_only: false,
        rounds: None,
        secs: None,
        only: Workload::all(),
        impls: Impl::ALL.to_vec(),
        clients: vec![Client::Mio],
        client_threads: 1,
        client_backend: Backend::Epoll,
        out: None,
        json: None,
        chart: None,
    };
    let mut args = Args::from_env();
    while let Some(flag) = args.next_flag()? {
        match flag.name.as_str() {
            "--quick" => {
                o.quick = true;
            }
            "--report-only" => {
                o.report_only = true;
            }
            "--rounds" => {
                let n: usize = args.parse_within(&flag, 1..=100)?;
                o.rounds = Some(n);
            }
            "--secs" => {
                let s: f64 = args.parse_within(&flag, 0.1..=60.0)?;
                o.secs = Some(s);
            }
            "--only" => {
                let list = args.value(&flag)?;
                let all = Workload::all();
                let chosen = parse_list(&list, "--only", USAGE, |name| match name {
                    "echo" | "echo-par" => Some(
                        all.iter()
                            .copied()
                            .filter(|w| {
                                matches!(w, Workload::Echo { parallel, .. }
                                    if *parallel == (name == "echo-par"))
                            })
                            .collect(),
                    ),
                    _ => all
                        .iter()
                        .copied()
                        .find(|w| w.name() == name)
                        .map(|w| vec![w]),
                })?;
                // In the usual order, once each.
                o.only = all.into_iter().filter(|w| chosen.contains(w)).collect();
            }
            "--impls" => {
                let list = args.value(&flag)?;
                let chosen = parse_list(&list, "--impls", USAGE, |name| {
                    Impl::parse(name).map(|i| vec![i])
                })?;
                o.impls = Impl::KNOWN
                    .into_iter()
                    .filter(|i| chosen.contains(i))
                    .collect();
            }
            "--client" => {
                let list = args.value(&flag)?;
                let chosen = parse_list(&list, "--client", USAGE, |name| {
                    Client::parse(name).map(|c| vec![c])
                })?;
                o.clients = Client::ALL
                    .into_iter()
                    .filter(|c| chosen.contains(c))
                    .collect();
            }
            "--client-threads" => {
                o.client_threads = args.parse_within(&flag, 1..=64)?;
            }
            "--client-backend" => {
                o.client_backend = match args.parse(&flag)? {
                    Backend::Auto => return Err("--client-backend: epoll or uring".into()),
                    b => b,
                }
            }
            "--out" => o.out = Some(args.value(&flag)?),
            "--json" => o.json = Some(args.value(&flag)?),
            "--chart" => o.chart = Some(args.value(&flag)?),
            other => cli::other_flag(other, USAGE)?,
        }
    }
    Ok(o)
}

/// What the run does, after options and the descriptor limit.
pub struct Plan {
    pub rounds: usize,
    pub stream_secs: Duration,
    pub burst_conns: usize,
    pub burst_timeout: Duration,
    pub pp_conns: usize,
    pub pp_warmup: Duration,
    pub pp_secs: Duration,
    /// Warm-up and measured time of each latency workload.
    pub lat_warmup: Duration,
    pub lat_secs: Duration,
    pub idle_conns: usize,
    pub echo_secs: Duration,
    pub echo_par_conns: usize,
    pub client_threads: usize,
    pub client_backend: Backend,
    pub fd_limit: u64,
    pub notes: Vec<String>,
}

impl Plan {
    pub fn new(o: &Options, fd_limit: u64) -> Plan {
        let q = o.quick;
        let secs = o.secs.unwrap_or(if q { 0.3 } else { 1.5 });
        let mut plan = Plan {
            rounds: o.rounds.unwrap_or(if q { 1 } else { 3 }),
            stream_secs: Duration::from_secs_f64(secs),
            burst_conns: if q { 1024 } else { 8192 },
            burst_timeout: Duration::from_secs(10),
            pp_conns: if q { 100 } else { 1000 },
            pp_warmup: Duration::from_millis(if q { 100 } else { 500 }),
            pp_secs: Duration::from_secs_f64(secs),
            lat_warmup: Duration::from_millis(if q { 100 } else { 500 }),
            lat_secs: Duration::from_secs_f64(secs),
            idle_conns: if q { 1000 } else { 10_000 },
            // Ten shapes: each gets half the stream time.
            echo_secs: Duration::from_secs_f64(secs / 2.0),
            echo_par_conns: ECHO_PAR_CONNS,
            client_threads: o.client_threads,
            client_backend: o.client_backend,
            fd_limit,
            notes: Vec::new(),
        };
        // Client and server are separate processes: one descriptor per connection in each.
        let fit = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
        for (name, n) in [
            ("burst", &mut plan.burst_conns),
            ("ping-pong", &mut plan.pp_conns),
            ("idle", &mut plan.idle_conns),
        ] {
            if *n > fit {
                plan.notes.push(format!(
                    "RLIMIT_NOFILE is {fd_limit}, too low for {} {name} connections; using {fit}",
                    *n
                ));
                *n = fit.max(1);
            }
        }
        plan
    }

    /// The timed part of one measurement.
    pub fn timed(&self, w: Workload) -> Duration {
        match w {
            Workload::Stream1 | Workload::Stream8 => self.stream_secs,
            Workload::PingPong => self.pp_warmup + self.pp_secs,
            Workload::Latency { .. } => self.lat_warmup + self.lat_secs,
            Workload::Echo { .. } => self.echo_secs,
            Workload::Burst | Workload::Idle => Duration::ZERO,
        }
    }

    /// Upper bound on the whole run, for the watchdog: per measurement its timed part plus
    /// 15 s for dialling, settling and process start-up (each of which has its own timeout).
    /// Workloads with a client choice run once per client (`clients` of them).
    pub fn budget(&self, only: &[Workload], impls: usize, clients: usize) -> Duration {
        let per_round: Duration = only
            .iter()
            .map(|&w| {
                let runs = if w.has_client_choice() { clients } else { 1 };
                (self.timed(w) + Duration::from_secs(15)) * (impls * runs) as u32
            })
            .sum();
        per_round * self.rounds as u32 + Duration::from_secs(30)
    }

    /// One line on the sizes and durations, for the report.
    pub fn describe(&self) -> String {
        format!(
            "{} rounds; stream {:.1} s with {} KiB writes; burst {} conns x {} KiB; ping-pong {} \
             conns x {PP_MSG} B, {:.1} s warm-up + {:.1} s; latency {} conns x {PP_MSG} B, \
             {:.1} s warm-up + {:.1} s; idle {} conns; BenchmarkEcho shapes {:.2} s each, 1 and \
             {} conns; mio client threads {}; fd limit {}",
            self.rounds,
            self.stream_secs.as_secs_f64(),
            STREAM_CHUNK / 1024,
            self.burst_conns,
            BURST_MSG / 1024,
            self.pp_conns,
            self.pp_warmup.as_secs_f64(),
            self.pp_secs.as_secs_f64(),
            LATENCY_CONNS.map(|n| n.to_string()).join(" and "),
            self.lat_warmup.as_secs_f64(),
            self.lat_secs.as_secs_f64(),
            self.idle_conns,
            self.echo_secs.as_secs_f64(),
            self.echo_par_conns,
            self.client_threads,
            self.fd_limit
        )
    }
}
