//! Issue 5's performance targets, and issue 15's for the latency workload, checked against the
//! results files: each is met, not met, or not measured (its bench or workload is missing
//! from `target/bench-results/`). The `compare` workloads count only as driven by the mio
//! client (their names end with `mio client`): a table measured with the gaio client, or a
//! results file from before the mio client, is "not measured".

use crate::common::results::{BenchFile, Better, Workload};
use crate::render::GAIO;

/// Go gaio's ping-pong rate on this machine, upper end of the measured 112-130 k req/s
/// (DESIGN.md §5), times the required 1.5.
pub const PINGPONG_FLOOR: f64 = 130.0 * 1.5;
/// Peak RSS of the server through the 8192-connection burst, MiB.
pub const BURST_RSS_MIB: f64 = 8.0;
/// RSS per idle connection, bytes (strictly below).
pub const IDLE_BYTES: f64 = 512.0;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Met,
    NotMet,
    NotMeasured,
}

impl Status {
    pub fn text(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "**not met**",
            Status::NotMeasured => "not measured",
        }
    }
}

pub struct Target {
    pub goal: String,
    pub status: Status,
    /// The figures behind the status.
    pub detail: String,
}

fn find<'a>(files: &'a [BenchFile], bench: &str, name: &str) -> Option<&'a Workload> {
    files
        .iter()
        .filter(|f| f.bench == bench)
        .flat_map(|f| &f.workloads)
        .find(|w| w.name == name)
}

/// Checks `ok(gaio median, peer median)` for both backends on each of `names`; the detail
/// lists `gaio ÷ peer` for each.
fn versus(
    files: &[BenchFile],
    bench: &str,
    names: &[&str],
    peer: &str,
    ok: impl Fn(f64, f64) -> bool,
) -> (Status, String) {
    let mut status = Status::Met;
    let mut parts = Vec::new();
    for name in names {
        let Some(w) = find(files, bench, name) else {
            return (Status::NotMeasured, format!("no `{name}` in {bench}.json"));
        };
        let Some(p) = w.median(peer) else {
            return (
                Status::NotMeasured,
                format!("{peer} not measured in `{name}`"),
            );
        };
        let mut cells = Vec::new();
        for g in GAIO {
            match w.median(g) {
                Some(m) => {
                    if !ok(m, p) {
                        status = Status::NotMet;
                    }
                    cells.push(format!("{g} {:.2}", m / p));
                }
                None => return (Status::NotMeasured, format!("{g} not measured in `{name}`")),
            }
        }
        parts.push(format!("{name}: {} (÷ {peer})", cells.join(", ")));
    }
    (status, parts.join("; "))
}

/// Checks `ok(gaio median)` for both backends on `name`.
fn absolute(
    files: &[BenchFile],
    name: &str,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) -> (Status, String) {
    let Some(w) = find(files, "compare", name) else {
        return (Status::NotMeasured, format!("no `{name}` in compare.json"));
    };
    let mut status = Status::Met;
    let mut cells = Vec::new();
    for g in GAIO {
        match w.median(g) {
            Some(m) => {
                if !ok(m) {
                    status = Status::NotMet;
                }
                cells.push(format!("{g} {} {unit}", crate::render::fmt_value(m)));
            }
            None => return (Status::NotMeasured, format!("{g} not measured in `{name}`")),
        }
    }
    (status, format!("{name}: {}", cells.join(", ")))
}

fn both(a: (Status, String), b: (Status, String)) -> (Status, String) {
    let status = match (a.0, b.0) {
        (Status::NotMeasured, _) | (_, Status::NotMeasured) => Status::NotMeasured,
        (Status::Met, Status::Met) => Status::Met,
        _ => Status::NotMet,
    };
    (status, format!("{}; {}", a.1, b.1))
}

pub fn evaluate(files: &[BenchFile]) -> Vec<Target> {
    let mut out = Vec::new();
    let mut push = |goal: String, (status, detail): (Status, String)| {
        out.push(Target {
            goal,
            status,
            detail,
        })
    };
    push(
        "stream: at least 1.0x the `mio` loop's MB/s, on both backends (mio client)".into(),
        versus(
            files,
            "compare",
            &[
                "stream, 1 conn x 64 KiB, mio client",
                "stream, 8 conns x 64 KiB, mio client",
            ],
            "mio",
            |g, p| g >= p,
        ),
    );
    push(
        "ping-pong: at least 1.0x the `mio` loop's requests/s, with a p99 no worse, on both \
         backends (mio client)"
            .into(),
        both(
            versus(
                files,
                "compare",
                &["ping-pong, 1000 conns x 64 B, mio client: rate"],
                "mio",
                |g, p| g >= p,
            ),
            versus(
                files,
                "compare",
                &["ping-pong, 1000 conns, mio client: p99 latency"],
                "mio",
                |g, p| g <= p,
            ),
        ),
    );
    push(
        "latency (issue 15): p99 and p99.9 no worse than the `mio` loop's at 1 and 16 \
         connections, on both backends (mio client)"
            .into(),
        versus(
            files,
            "compare",
            &[
                "latency, 1 conn x 64 B, mio client: p99",
                "latency, 1 conn, mio client: p99.9",
                "latency, 16 conns x 64 B, mio client: p99",
                "latency, 16 conns, mio client: p99.9",
            ],
            "mio",
            |g, p| g <= p,
        ),
    );
    push(
        format!(
            "ping-pong: at least 1.5x Go gaio's rate, taken as {PINGPONG_FLOOR:.0} k req/s \
             (1.5 x 130 k, the upper end of Go gaio's 112-130 k req/s on this machine, \
             DESIGN.md §5; an absolute figure, so other load on the machine counts against it)"
        ),
        absolute(
            files,
            "ping-pong, 1000 conns x 64 B, mio client: rate",
            "k req/s",
            |m| m >= PINGPONG_FLOOR,
        ),
    );
    push(
        format!(
            "burst: server peak RSS at most {BURST_RSS_MIB:.0} MiB at 8192 connections, on both \
             backends (mio client)"
        ),
        absolute(
            files,
            "burst, 8192 conns, mio client: server peak RSS",
            "MiB",
            |m| m <= BURST_RSS_MIB,
        ),
    );
    push(
        format!("idle: under {IDLE_BYTES:.0} B of server RSS per connection, on both backends"),
        absolute(files, "idle, 10000 conns: server RSS per conn", "B", |m| {
            m < IDLE_BYTES
        }),
    );
    push(
        "wrk (`http` bench): at least 1.0x `tokio`'s requests/s, on both backends".into(),
        wrk(files),
    );
    out
}

/// Every higher-is-better workload of `http.json` that has a tokio result.
fn wrk(files: &[BenchFile]) -> (Status, String) {
    let Some(http) = files.iter().find(|f| f.bench == "http") else {
        return (
            Status::NotMeasured,
            "target/bench-results/http.json is missing".into(),
        );
    };
    let names: Vec<&str> = http
        .workloads
        .iter()
        .filter(|w| w.better == Better::Higher && w.median("tokio").is_some())
        .map(|w| w.name.as_str())
        .collect();
    if names.is_empty() {
        return (
            Status::NotMeasured,
            "http.json has no workload with a tokio result".into(),
        );
    }
    versus(files, "http", &names, "tokio", |g, p| g >= p)
}
