//! gaio against its peers, side by side in one run (DESIGN.md §5, issue 5).
//!
//! ```text
//! bash benches/compare.sh                          # everything: this, http, allocs, BENCHMARKS.md
//! cargo bench --bench compare                      # 3 rounds, about 5 minutes
//! cargo bench --bench compare -- --quick           # smoke check, about 20 s
//! cargo bench --bench compare -- --only pingpong,idle --impls gaio-epoll,mio --rounds 5
//! cargo bench --bench compare -- --report-only     # target/bench-results/*.json -> BENCHMARKS.md
//! ```
//!
//! Servers (`benches/peers/`), each in a process of its own, a fresh one per measurement
//! (`common::server_proc`): `gaio-epoll` and `gaio-uring` (the examples' `EchoServer`), `mio`
//! (a hand-written edge-triggered loop: the readiness floor), `tokio` (one task per
//! connection), `monoio` (io_uring, one thread). The same verifying clients run in this
//! process against every one of them:
//!
//! - **stream1, stream8**: 1 and 8 connections, 64 KiB writes, MB/s of verified echo;
//! - **burst**: 8192 connections x 1 KiB echoed once: seconds, and the server's peak RSS;
//! - **pingpong**: 1000 connections x 64 B request/response: requests/s, p50, p99, p99.9;
//! - **latency1, latency16**: 1 and 16 connections x 64 B request/response: p50, p99, p99.9
//!   in µs, requests/s;
//! - **idle**: 10 000 connections each with a pending read: the server's RSS per connection;
//! - **echo-SIZE, echo-SIZE-par**: Go gaio's `BenchmarkEcho{128B,1K,4K,64K,128K}` and
//!   `...Parallel` (1 and 128 connections, one write and one read always outstanding on
//!   each, pipelined; `go_echo`), MB/s of true bytes echoed and verified.
//!
//! Stream, burst, ping-pong and latency are driven by the mio client (`mio_client`: one
//! thread by default, edge-triggered, every byte checked; `--client-threads N`), or with
//! `--client gaio` by the examples' clients (`example::workloads`: a gaio watcher, and for
//! stream a writer and a reader thread per connection), or by both (`--client mio,gaio`);
//! each table's title names its client ([`client::Client`]). The echo shapes use a gaio
//! client watcher (`--client-backend`, epoll by default), idle plain sockets. Also the
//! server's CPU time per unit of work (`/proc/PID/task/*/schedstat`), which other load
//! disturbs much less than throughput, and the client's CPU and (mio client) the share of its
//! time it slept waiting for the server.
//!
//! Each workload is measured on every implementation back to back; the order of the
//! implementations rotates from round to round. The report gives every median, the ratio of
//! gaio-epoll and gaio-uring to each implementation, the date, kernel, cores, command and
//! other load; it goes to stdout, `benches/results/compare.md` and
//! `target/bench-results/compare.json` (a full run only; `--out PATH`, `--json PATH` to write
//! elsewhere, or from a partial or `--quick` run). Any mismatch, error or timeout fails the
//! run with a non-zero exit; a watchdog ends it with exit code 3 if it overruns.
//!
//! `--report-only` measures nothing: it reads every `target/bench-results/*.json` (this
//! bench's, `http`'s, `allocs`'s) and writes `BENCHMARKS.md` (`--out`) with the targets of
//! issues 5 and 15 and `docs/benchmarks.svg` (`--chart`).
//!
//! Run with no argument at all (as `cargo test --benches` or `--all-targets` runs it), it is
//! a `--quick` smoke test that writes nothing.

#[path = "../common/mod.rs"]
mod common;
#[path = "../peers/mod.rs"]
mod peers;

mod chart;
mod client;
mod go_echo;
mod measure;
mod mio_client;
mod plan;
mod render;
mod summary;
mod targets;

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

use common::example::workloads::{set_phase, spawn_watchdog, BenchResult};
use common::outputs;
use common::results::{self, BenchFile, ImplResult};
use common::run_info::{self, CpuSnapshot};
use common::server_proc::SERVER_ENV;
use common::stats::median;
use gaio::{Backend, Watcher};
use measure::{layout, measure, Column, Entry};
use plan::{Client, Options, Plan, Workload};

/// One workload's measurements with one client.
struct Table {
    workload: Workload,
    client: Client,
    entries: Vec<Entry>,
    columns: Vec<Column>,
    /// values[implementation index in `Options::impls`][column][round]
    values: Vec<Vec<Vec<f64>>>,
}

fn run(o: Options) -> BenchResult<()> {
    let fd_limit =
        common::example::raise_nofile_limit().map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let plan = Plan::new(&o, fd_limit);
    spawn_watchdog(
        "compare",
        plan.budget(&o.only, o.impls.len(), o.clients.len()),
    );
    // Both gaio backends must run here: a side by side with one side missing is a failure.
    for b in [Backend::Epoll, Backend::Uring] {
        Watcher::builder()
            .backend(b)
            .build::<()>()
            .map_err(|e| format!("gaio backend {b} cannot run here: {e}"))?;
    }

    // A workload with a client choice gets a table per client, the first client's first;
    // the others (idle, the BenchmarkEcho shapes) have one driver of their own.
    let mut tables: Vec<Table> = Vec::new();
    for &w in &o.only {
        let clients = if w.has_client_choice() {
            &o.clients[..]
        } else {
            &o.clients[..1]
        };
        for &client in clients {
            let (entries, columns) = layout(w, client, &plan);
            let values = o
                .impls
                .iter()
                .map(|_| columns.iter().map(|_| vec![]).collect())
                .collect();
            tables.push(Table {
                workload: w,
                client,
                entries,
                columns,
                values,
            });
        }
    }
    let start = Instant::now();
    let run_cpu = CpuSnapshot::take();
    let mut other_rounds = Vec::with_capacity(plan.rounds);
    eprintln!(
        "compare: {} rounds of {} workloads on {}, {}; progress on stderr, report on stdout",
        plan.rounds,
        o.only.len(),
        o.impls
            .iter()
            .map(|i| i.name())
            .collect::<Vec<_>>()
            .join(", "),
        o.clients
            .iter()
            .map(|c| format!("{} client", c.name()))
            .collect::<Vec<_>>()
            .join(" and ")
    );
    for round in 0..plan.rounds {
        let round_cpu = CpuSnapshot::take();
        for t in &mut tables {
            set_phase(t.workload.phase());
            for k in 0..o.impls.len() {
                // Rotate which implementation goes first.
                let ii = (round + k) % o.impls.len();
                let imp = o.impls[ii];
                let got = measure(t.workload, t.client, imp, &plan).map_err(|e| {
                    format!(
                        "round {}, {} ({}) on {}: {e}",
                        round + 1,
                        t.workload.name(),
                        t.client.label(t.workload),
                        imp.name()
                    )
                })?;
                assert_eq!(got.len(), t.columns.len(), "one value per column");
                let shown: Vec<String> = got
                    .iter()
                    .zip(&t.columns)
                    .map(|(v, c)| {
                        let label = c.extra.unwrap_or(&t.entries[c.entry].metric);
                        format!("{} {}", render::fmt_value(*v), label)
                    })
                    .collect();
                for (ci, v) in got.into_iter().enumerate() {
                    t.values[ii][ci].push(v);
                }
                let name = if t.workload.has_client_choice() {
                    format!("{} ({})", t.workload.name(), t.client.name())
                } else {
                    t.workload.name()
                };
                eprintln!(
                    "[{:6.1}s] round {}/{} {:<16} {:<10} {}",
                    start.elapsed().as_secs_f64(),
                    round + 1,
                    plan.rounds,
                    name,
                    imp.name(),
                    shown.join(", ")
                );
            }
        }
        other_rounds.push(run_info::round_load(round_cpu, round));
    }
    set_phase("report");
    let other_load = run_info::other_load_text(CpuSnapshot::other_since(run_cpu), &other_rounds);
    let file = bench_file(
        &o,
        &plan,
        &tables,
        other_load,
        start.elapsed().as_secs_f64(),
    );
    let md = render::bench_report(&file);
    print!("{md}");

    let complete = o.complete() && !o.quick;
    outputs::write_report("compare", complete, o.out.as_deref(), &md)?;
    outputs::write_results(complete, o.json.as_deref(), &file)
}

/// The run in the shared results format.
fn bench_file(
    o: &Options,
    plan: &Plan,
    tables: &[Table],
    other_load: Option<String>,
    took: f64,
) -> BenchFile {
    let mut workloads = Vec::new();
    for t in tables {
        for (ei, e) in t.entries.iter().enumerate() {
            let main = t
                .columns
                .iter()
                .position(|c| c.entry == ei && c.extra.is_none())
                .expect("every entry has a main column");
            let results = o
                .impls
                .iter()
                .enumerate()
                .map(|(ii, imp)| ImplResult {
                    imp: imp.name().into(),
                    median: median(&t.values[ii][main]),
                    rounds: t.values[ii][main].clone(),
                })
                .collect();
            let mut extra = BTreeMap::new();
            for (ci, c) in t.columns.iter().enumerate() {
                let Some(label) = c.extra.filter(|_| c.entry == ei) else {
                    continue;
                };
                let per_impl: BTreeMap<String, serde_json::Value> = o
                    .impls
                    .iter()
                    .enumerate()
                    .map(|(ii, imp)| (imp.name().to_string(), median(&t.values[ii][ci]).into()))
                    .collect();
                extra.insert(label.to_string(), per_impl);
            }
            workloads.push(results::Workload {
                name: e.name.clone(),
                metric: e.metric.clone(),
                better: e.better,
                results,
                extra,
            });
        }
    }
    let with_choice: Vec<String> = o
        .only
        .iter()
        .filter(|w| w.has_client_choice())
        .map(|w| w.name())
        .collect();
    let mut notes = vec![
        format!("plan: {}; run took {took:.0} s", plan.describe()),
        "order: each workload on every implementation back to back, the first one rotating \
         from round to round; medians over the rounds; every echoed byte verified"
            .to_string(),
        format!(
            "clients, in the bench process, named in each table's title: {} driven by the {} \
             (`--client`); idle on plain blocking sockets; the Go BenchmarkEcho shapes on a \
             gaio {} client watcher, as Go's benchmark uses its own library",
            if with_choice.is_empty() {
                "no workload".to_string()
            } else {
                with_choice.join(", ")
            },
            o.clients
                .iter()
                .map(|c| format!("{} client", c.name()))
                .collect::<Vec<_>>()
                .join(" and the "),
            plan.client_backend
        ),
    ];
    for c in &o.clients {
        notes.push(c.describe(plan.client_threads, plan.client_backend));
    }
    notes.extend(plan.notes.iter().cloned());
    for imp in &o.impls {
        notes.push(format!("{}: {}", imp.name(), imp.describe()));
    }
    for imp in &o.impls {
        notes.push(format!(
            "{} while idle holds, per connection: {}",
            imp.name(),
            imp.idle_holds()
        ));
    }
    BenchFile {
        bench: "compare".into(),
        date: run_info::utc_now(),
        kernel: run_info::kernel_release(),
        cores: run_info::cores(),
        command: run_info::command("compare"),
        other_load,
        workloads,
        notes,
    }
}

fn main() -> ExitCode {
    if let Ok(kind) = std::env::var(SERVER_ENV) {
        return peers::child_main(&kind);
    }
    let outcome = plan::parse_args().and_then(|o| {
        if o.report_only {
            summary::write(&o)
        } else {
            run(o)
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = io::stdout().flush();
            eprintln!("compare: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
