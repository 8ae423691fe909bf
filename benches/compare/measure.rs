//! One measurement: a workload against a fresh server process of one implementation, and
//! what it yields. Each workload has one or two result entries (one table each in the
//! report, e.g. ping-pong's rate and its p99) and a few secondary columns (the server's CPU
//! time per unit of work, p50, Go's byte count), all listed by [`layout`] in the order
//! [`measure`] returns their values.

use std::time::Duration;

use crate::common::example::workloads::{
    burst, idle_open, idle_verify, pingpong, stream, BenchResult, Progress, BURST_MSG, PP_MSG,
    STREAM_CHUNK,
};
use crate::common::results::Better;
use crate::common::server_proc::{ServerProc, SETTLE};
use crate::go_echo::go_echo;
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

pub fn layout(w: Workload, plan: &Plan) -> (Vec<Entry>, Vec<Column>) {
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
    match w {
        Workload::Stream1 | Workload::Stream8 => {
            let n = if w == Workload::Stream1 { 1 } else { 8 };
            let conns = if n == 1 { "conn" } else { "conns" };
            (
                vec![e(
                    format!("stream, {n} {conns} x {chunk} KiB"),
                    "MB/s",
                    Better::Higher,
                )],
                vec![main(0), extra(0, CPU_PER_MB)],
            )
        }
        Workload::Burst => (
            vec![
                e(
                    format!(
                        "burst, {} conns x {} KiB: time",
                        plan.burst_conns,
                        BURST_MSG / 1024
                    ),
                    "seconds",
                    Better::Lower,
                ),
                e(
                    format!("burst, {} conns: server peak RSS", plan.burst_conns),
                    "MiB",
                    Better::Lower,
                ),
            ],
            vec![main(0), main(1), extra(0, "server CPU, ms")],
        ),
        Workload::PingPong => (
            vec![
                e(
                    format!("ping-pong, {} conns x {PP_MSG} B: rate", plan.pp_conns),
                    "k req/s",
                    Better::Higher,
                ),
                e(
                    format!("ping-pong, {} conns: p99 latency", plan.pp_conns),
                    "ms",
                    Better::Lower,
                ),
            ],
            vec![
                main(0),
                extra(1, "p50, ms"),
                main(1),
                extra(0, "server CPU, µs per request"),
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
            let (suffix, conns) = if parallel {
                ("Parallel", plan.echo_par_conns)
            } else {
                ("", 1)
            };
            let conns = if conns == 1 {
                "1 conn".to_string()
            } else {
                format!("{conns} conns")
            };
            (
                vec![e(
                    format!(
                        "Go BenchmarkEcho{}{suffix}: {conns}, pipelined",
                        size_name(size)
                    ),
                    "MB/s",
                    Better::Higher,
                )],
                vec![main(0), extra(0, "Go-counted MB/s"), extra(0, CPU_PER_MB)],
            )
        }
    }
}

/// Measures `w` against a fresh `imp` server; returns the values of `layout(w)`'s columns.
pub fn measure(w: Workload, imp: Impl, plan: &Plan) -> BenchResult<Vec<f64>> {
    let mut server = ServerProc::spawn(imp.name())?;
    let addr = server.addr();
    let client = Some(plan.client_backend);
    let mut quiet = Progress::silent();
    let mb = |bytes: u64| bytes as f64 / 1e6;
    let values = match w {
        Workload::Stream1 | Workload::Stream8 => {
            let n = if w == Workload::Stream1 { 1 } else { 8 };
            let st = stream(addr, n, plan.stream_secs, &mut quiet)?;
            let echoed = server.settle(n as u64)?.bytes;
            let cpu = server.cpu_secs()?;
            vec![
                mb(st.bytes) / st.elapsed.as_secs_f64(),
                cpu * 1e6 / mb(echoed).max(1e-9),
            ]
        }
        Workload::Burst => {
            let n = plan.burst_conns;
            let bu = burst(addr, n, plan.burst_timeout, client, &mut quiet)?;
            server.settle(n as u64)?;
            let (_, hwm) = server.memory()?;
            let cpu = server.cpu_secs()?;
            vec![
                bu.total.as_secs_f64(),
                hwm as f64 / (1024.0 * 1024.0),
                cpu * 1e3,
            ]
        }
        Workload::PingPong => {
            let n = plan.pp_conns;
            let pp = pingpong(addr, n, plan.pp_warmup, plan.pp_secs, client, &mut quiet)?;
            // Every request the server echoed, warm-up and tail included.
            let echoed = server.settle(n as u64)?.bytes / PP_MSG as u64;
            let cpu = server.cpu_secs()?;
            let rate = pp.requests as f64 / pp.window.as_secs_f64().max(1e-9);
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            vec![
                rate / 1e3,
                ms(pp.percentile(0.50)),
                ms(pp.percentile(0.99)),
                cpu * 1e6 / (echoed as f64).max(1.0),
            ]
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
            let r = go_echo(addr, size, n, plan.echo_secs, client)?;
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
