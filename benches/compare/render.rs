//! Markdown from the shared results format: a header of facts, the notes, and one table per
//! workload (every implementation's median and rounds, the ratio of each gaio backend to it,
//! and the secondary columns). Used for `benches/results/compare.md` and, for every bench's
//! file, in `BENCHMARKS.md`.

use std::fmt::Write as _;

use crate::common::results::{BenchFile, Workload};
use crate::common::stats::thousands;

pub const GAIO: [&str; 2] = ["gaio-epoll", "gaio-uring"];

/// A value with as many decimals as its size needs: `12 345`, `123`, `12.3`, `1.23`, `0.123`.
pub fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "–".into()
    } else if a >= 1000.0 {
        thousands(x)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// A bench's file as a report of its own (`benches/results/compare.md`).
pub fn bench_report(file: &BenchFile) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# gaio against its peers, side by side");
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Written by `benches/compare`; regenerate with `cargo bench --bench {}` (see \
         `benches/README.md`; `bash benches/compare.sh` also writes `BENCHMARKS.md`).",
        file.bench
    );
    let _ = writeln!(r);
    r.push_str(&header(file));
    r.push_str(&ratios_note());
    r.push_str(&tables(file, "##"));
    r
}

/// The facts of the run and its notes, as a list.
pub fn header(file: &BenchFile) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "- command: `{}`", file.command);
    let _ = writeln!(r, "- date: {}", file.date);
    let _ = writeln!(r, "- kernel: {}", file.kernel);
    let _ = writeln!(r, "- cores: {}", file.cores);
    if let Some(load) = &file.other_load {
        let _ = writeln!(r, "- other load: {load}");
    }
    for n in &file.notes {
        let _ = writeln!(r, "- {n}");
    }
    let _ = writeln!(r);
    r
}

pub fn ratios_note() -> String {
    "In each table, `gaio-epoll ÷` and `gaio-uring ÷` divide that gaio backend's median by the \
     row's: above 1 favours gaio where higher is better, below 1 where lower is better. \
     Medians over the rounds; `rounds` lists every round's value.\n\n"
        .into()
}

/// One table per workload, each under a heading of `level`.
pub fn tables(file: &BenchFile, level: &str) -> String {
    let mut r = String::new();
    for w in &file.workloads {
        r.push_str(&table(w, level));
    }
    r
}

fn table(w: &Workload, level: &str) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "{level} {}\n\n{}, {} is better.\n",
        w.name,
        w.metric,
        w.better.name()
    );
    let gaio: Vec<(&str, f64)> = GAIO
        .iter()
        .filter_map(|g| w.median(g).map(|m| (*g, m)))
        .collect();
    let mut head = format!("| implementation | {} |", w.metric);
    let mut rule = String::from("|---|--:|");
    for (g, _) in &gaio {
        let _ = write!(head, " {g} ÷ |");
        rule.push_str("--:|");
    }
    for col in w.extra.keys() {
        let _ = write!(head, " {col} |");
        rule.push_str("--:|");
    }
    head.push_str(" rounds |");
    rule.push_str("---|");
    let _ = writeln!(r, "{head}\n{rule}");
    for res in &w.results {
        if res.rounds.is_empty() {
            let _ = writeln!(r, "| {} | not measured |", res.imp);
            continue;
        }
        let mut row = format!("| {} | {} |", res.imp, fmt_value(res.median));
        for (_, g) in &gaio {
            let _ = write!(row, " {:.2} |", g / res.median);
        }
        for per_impl in w.extra.values() {
            let v = per_impl.get(&res.imp);
            let cell = match v {
                Some(serde_json::Value::Number(n)) => n.as_f64().map_or("–".into(), fmt_value),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => "–".into(),
            };
            let _ = write!(row, " {cell} |");
        }
        let rounds: Vec<String> = res.rounds.iter().map(|v| fmt_value(*v)).collect();
        let _ = writeln!(row, " {} |", rounds.join(", "));
        r.push_str(&row);
    }
    r.push('\n');
    r
}
