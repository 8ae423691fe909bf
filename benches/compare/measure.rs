//! One measurement: a workload against a fresh server process of one implementation, and
//! what it yields. Each workload has one or two result entries (one table each in the
//! report, e.g. ping-pong's rate and its p99) and a few secondary columns (the server's CPU
//! time per unit of work, p50, Go's byte count), all listed by [`layout`] in the order
//! [`measure`] returns their values.

use std::time::{Duration, Instant};

use crate::client::Client;
use crate::common::example::workloads::{
    burst, idle_open, idle_verify, pingpong, stream, BenchResult, PingPongResult, Progress,
    BURST_MSG, PP_MSG, STREAM_CHUNK,
};
use crate::common::results::Better;
use crate::common::run_info::own_cpu_secs;
use crate::common::server_proc::{ServerProc, SETTLE};
use crate::go_echo::go_echo;
use crate::mio_client;
use crate::peers::Impl;
use crate::plan::{size_name, Plan, Workload};

/// One result entry of a workload: a table of its own.
pub struct Entry {
    pub name: String,
    pub metric: String,
    pub better: Better,
}

/// One value a measurement yields: the main value of entry `entry`, or (with `extra`) one of
/// its secondary columns.
pub struct Column {
    pub entry: usize,
    pub extra: Option<&'static str>,
}

const CPU_PER_MB: &str = "server CPU, µs per MB";
const CPU_PER_REQ: &str = "server CPU, µs per request";
const SWITCHES_PER_REQ: &str = "server context switches per request";
/// The bench process's CPU time over the client's run (connecting included) ÷ its wall time:
/// the client's threads (for the gaio client, its watcher's threads too). Near 100 with one
/// mio client thread would mean the client is the cap.
const CLIENT_CPU: &str = "client CPU, % of a core";
/// The share of the mio client threads' wall time they slept in `poll` (not on a CPU, not
/// waiting for one), from `/proc/thread-self/schedstat`: time the client waited for the
/// server. Near 0 would mean the client is the cap. A lower bound: time runnable but waiting
/// for a CPU counts as busy, and part of it is waiting for the server's thread to leave the
/// CPU the client was woken on. Not measured for the gaio client.
const CLIENT_ASLEEP: &str = "mio client asleep, %";

pub fn layout(w: Workload, client: Client, plan: &Plan) -> (Vec<Entry>, Vec<Column>) {
    let e = |name: String, metric: &str, better| Entry {
        name,
        metric: metric.into(),
        better,
    };
    let main = |entry| Column { entry, extra: None };
    let extra = |entry, label| Column {
        entry,
        extra: Some(label),
    };
    let chunk = STREAM_CHUNK / 1024;
    let by = client.label(w);
    let conns = |n: usize| {
        if n == 1 {
            "1 conn".to_string()
        } else {
            format!("{n} conns")
        }
    };
    match w {
        Workload::Stream1 | Workload::Stream8 => {
            let n = if w == Workload::Stream1 { 1 } else { 8 };
            (
                vec![e(
                    format!("stream, {} x {chunk} KiB, {by}", conns(n)),
                    "MB/s",
                    Better::Higher,
                )],
                vec![
                    main(0),
                    extra(0, CPU_PER_MB),
                    extra(0, CLIENT_CPU),
                    extra(0, CLIENT_ASLEEP),
                ],
            )
        }
        Workload::Burst => (
            vec![
                e(
                    format!(
                        "burst, {} conns x {} KiB, {by}: time",
                        plan.burst_conns,
                        BURST_MSG / 1024
                    ),
                    "seconds",
                    Better::Lower,
                ),
                e(
                    format!("burst, {} conns, {by}: server peak RSS", plan.burst_conns),
                    "MiB",
                    Better::Lower,
                ),
            ],
            vec![
                main(0),
                main(1),
                extra(0, "server CPU, ms"),
                extra(0, CLIENT_CPU),
                extra(0, CLIENT_ASLEEP),
            ],
        ),
        Workload::PingPong => (
            vec![
                e(
                    format!(
                        "ping-pong, {} conns x {PP_MSG} B, {by}: rate",
                        plan.pp_conns
                    ),
                    "k req/s",
                    Better::Higher,
                ),
                e(
                    format!("ping-pong, {} conns, {by}: p99 latency", plan.pp_conns),
                    "ms",
                    Better::Lower,
                ),
            ],
            vec![
                main(0),
                extra(1, "p50, ms"),
                main(1),
                extra(1, "p99.9, ms"),
                extra(0, CPU_PER_REQ),
                extra(0, CLIENT_CPU),
                extra(0, CLIENT_ASLEEP),
            ],
        ),
        Workload::Latency { conns: n } => (
            vec![
                e(
                    format!("latency, {} x {PP_MSG} B, {by}: p99", conns(n)),
                    "µs",
                    Better::Lower,
                ),
                e(
                    format!("latency, {}, {by}: p99.9", conns(n)),
                    "µs",
                    Better::Lower,
                ),
            ],
            vec![
                extra(0, "p50, µs"),
                main(0),
                main(1),
                extra(0, "k req/s"),
                extra(0, CPU_PER_REQ),
                extra(0, SWITCHES_PER_REQ),
                extra(0, CLIENT_CPU),
                extra(0, CLIENT_ASLEEP),
            ],
        ),
        Workload::Idle => (
            vec![e(
                format!("idle, {} conns: server RSS per conn", plan.idle_conns),
                "bytes",
                Better::Lower,
            )],
            vec![main(0)],
        ),
        Workload::Echo { size, parallel } => {
            let (suffix, n) = if parallel {
                ("Parallel", plan.echo_par_conns)
            } else {
                ("", 1)
            };
            (
                vec![e(
                    format!(
                        "Go BenchmarkEcho{}{suffix}: {}, pipelined",
                        size_name(size),
                        conns(n)
                    ),
                    "MB/s",
                    Better::Higher,
                )],
                vec![main(0), extra(0, "Go-counted MB/s"), extra(0, CPU_PER_MB)],
            )
        }
    }
}

/// Runs `f` (a client), and returns its value with this process's CPU time over it as a
/// percentage of one core.
fn client_cpu<T>(f: impl FnOnce() -> BenchResult<T>) -> BenchResult<(T, f64)> {
    let (cpu0, t0) = (own_cpu_secs(), Instant::now());
    let v = f()?;
    let wall = t0.elapsed().as_secs_f64().max(1e-9);
    let pct = match (cpu0, own_cpu_secs()) {
        (Some(a), Some(b)) => (b - a) / wall * 100.0,
        _ => f64::NAN,
    };
    Ok((v, pct))
}

/// A gaio-driven client's value, with no thread times (`NaN` in the asleep column).
fn untimed<T>(r: BenchResult<T>) -> BenchResult<(T, mio_client::ThreadTimes)> {
    r.map(|v| (v, mio_client::ThreadTimes::default()))
}

/// Requests/s of a request/response run, in thousands.
fn k_rate(r: &PingPongResult) -> f64 {
    r.requests as f64 / r.window.as_secs_f64().max(1e-9) / 1e3
}

/// Measures `w` driven by `client` against a fresh `imp` server; returns the values of
/// `layout(w, client)`'s columns.
pub fn measure(w: Workload, client: Client, imp: Impl, plan: &Plan) -> BenchResult<Vec<f64>> {
    let mut server = ServerProc::spawn(imp.name())?;
    let addr = server.addr();
    let backend = Some(plan.client_backend);
    let threads = plan.client_threads;
    let mut quiet = Progress::silent();
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let values = match w {
        Workload::Stream1 | Workload::Stream8 => {
            let n = if w == Workload::Stream1 { 1 } else { 8 };
            let ((st, times), client_pct) = client_cpu(|| match client {
                Client::Mio => mio_client::stream(addr, n, plan.stream_secs, threads),
                Client::Gaio => untimed(stream(addr, n, plan.stream_secs, &mut quiet)),
            })?;
            let echoed = server.settle(n as u64)?.bytes;
            let cpu = server.cpu_secs()?;
            vec![
                mb(st.bytes) / st.elapsed.as_secs_f64(),
                cpu * 1e6 / mb(echoed).max(1e-9),
                client_pct,
                times.asleep_pct(),
            ]
        }
        Workload::Burst => {
            let n = plan.burst_conns;
            let ((bu, times), client_pct) = client_cpu(|| match client {
                Client::Mio => mio_client::burst(addr, n, plan.burst_timeout, threads),
                Client::Gaio => untimed(burst(addr, n, plan.burst_timeout, backend, &mut quiet)),
            })?;
            server.settle(n as u64)?;
            let (_, hwm) = server.memory()?;
            let cpu = server.cpu_secs()?;
            vec![
                bu.total.as_secs_f64(),
                hwm as f64 / (1024.0 * 1024.0),
                cpu * 1e3,
                client_pct,
                times.asleep_pct(),
            ]
        }
        Workload::PingPong | Workload::Latency { .. } => {
            let (n, warmup, secs, what) = match w {
                Workload::Latency { conns } => (conns, plan.lat_warmup, plan.lat_secs, "latency"),
                _ => (plan.pp_conns, plan.pp_warmup, plan.pp_secs, "ping-pong"),
            };
            let ((pp, times), client_pct) = client_cpu(|| match client {
                Client::Mio => mio_client::request_response(addr, n, warmup, secs, threads, what),
                Client::Gaio => untimed(pingpong(addr, n, warmup, secs, backend, &mut quiet)),
            })?;
            // Every request the server echoed, warm-up and tail included.
            let echoed = server.settle(n as u64)?.bytes / PP_MSG as u64;
            let cpu_per_req = server.cpu_secs()? * 1e6 / (echoed as f64).max(1.0);
            let switches_per_req = server.switches()? as f64 / (echoed as f64).max(1.0);
            let p = |q: f64| pp.percentile(q);
            if w == Workload::PingPong {
                vec![
                    k_rate(&pp),
                    ms(p(0.50)),
                    ms(p(0.99)),
                    ms(p(0.999)),
                    cpu_per_req,
                    client_pct,
                    times.asleep_pct(),
                ]
            } else {
                vec![
                    us(p(0.50)),
                    us(p(0.99)),
                    us(p(0.999)),
                    k_rate(&pp),
                    cpu_per_req,
                    switches_per_req,
                    client_pct,
                    times.asleep_pct(),
                ]
            }
        }
        Workload::Idle => {
            let n = plan.idle_conns;
            let before = server.stable_rss()?;
            let mut socks = idle_open(addr, n, SETTLE)?;
            server.wait_accepted(n as u64)?;
            let after = server.stable_rss()?;
            // Every connection still has its read pending: one byte each comes back.
            idle_verify(&mut socks)?;
            drop(socks);
            server.settle(n as u64)?;
            vec![(after as f64 - before as f64) / n as f64]
        }
        Workload::Echo { size, parallel } => {
            let n = if parallel { plan.echo_par_conns } else { 1 };
            let r = go_echo(addr, size, n, plan.echo_secs, backend)?;
            let echoed = server.settle(n as u64)?.bytes;
            let cpu = server.cpu_secs()?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            vec![
                mb(r.bytes) / secs,
                mb(r.go_bytes) / secs,
                cpu * 1e6 / mb(echoed).max(1e-9),
            ]
        }
    };
    server.finish()?;
    Ok(values)
}
