//! `--report-only`: reads every `target/bench-results/*.json` and writes `BENCHMARKS.md` (the
//! issue-5 targets, the chart, and each bench's tables) and the chart `docs/benchmarks.svg`.
//! A bench whose file is missing or unreadable is reported as such; the rest still appear.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::chart::{self, Row};
use crate::common::example::workloads::BenchResult;
use crate::common::results::{self, BenchFile};
use crate::common::run_info;
use crate::plan::Options;
use crate::render::{self, GAIO};
use crate::targets;

/// The benches `benches/compare.sh` runs, in the report's order, with what each measures.
const EXPECTED: [(&str, &str); 3] = [
    (
        "compare",
        "echo servers: gaio against `mio`, `tokio` and `monoio`",
    ),
    ("http", "an HTTP server under `wrk`"),
    ("allocs", "heap allocations"),
];

/// Set by `benches/compare.sh`, so that the report names the command that regenerates it.
const COMMAND_ENV: &str = "GAIO_BENCH_COMMAND";

pub fn write(o: &Options) -> BenchResult<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let md_path = o
        .out
        .clone()
        .map_or_else(|| root.join("BENCHMARKS.md"), PathBuf::from);
    let chart_path = o
        .chart
        .clone()
        .map_or_else(|| root.join("docs/benchmarks.svg"), PathBuf::from);
    let dir = results::results_dir();

    // (bench, the file or why there is none)
    let mut loaded: Vec<(String, Result<BenchFile, String>)> = EXPECTED
        .iter()
        .map(|(b, _)| {
            let p = dir.join(format!("{b}.json"));
            let f = if p.exists() {
                BenchFile::read(&p)
            } else {
                Err(format!("`target/bench-results/{b}.json` is missing"))
            };
            (b.to_string(), f)
        })
        .collect();
    // Any other bench's file too.
    let mut others: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    others.sort();
    for p in others {
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        if p.extension().is_some_and(|e| e == "json") && !EXPECTED.iter().any(|(b, _)| *b == stem) {
            loaded.push((stem, BenchFile::read(&p)));
        }
    }
    let files: Vec<BenchFile> = loaded
        .iter()
        .filter_map(|(_, f)| f.as_ref().ok().cloned())
        .collect();

    let rows = chart_rows(&files);
    let when = files
        .iter()
        .find(|f| f.bench == "compare")
        .map_or_else(run_info::utc_now, |f| f.date.clone());
    let title = format!(
        "gaio against the best peer, per workload ({}, {} cores, Linux {})",
        when.get(..10).unwrap_or(&when),
        run_info::cores(),
        run_info::kernel_release()
    );
    chart::draw(&chart_path, &title, &rows)?;
    let md = markdown(&loaded, &files, &md_path, &chart_path);
    std::fs::write(&md_path, &md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    eprintln!(
        "compare: wrote {} and {} from {} results file(s) in {}",
        md_path.display(),
        chart_path.display(),
        files.len(),
        dir.display()
    );
    Ok(())
}

/// For each workload with at least one peer: each gaio backend's advantage over the best.
fn chart_rows(files: &[BenchFile]) -> Vec<Row> {
    let mut rows = Vec::new();
    for f in files {
        for w in &f.workloads {
            let best = w
                .results
                .iter()
                .filter(|r| !GAIO.contains(&r.imp.as_str()) && !r.rounds.is_empty())
                .max_by(|a, b| w.better.advantage(a.median, b.median).total_cmp(&1.0));
            let Some(best) = best else { continue };
            let values = GAIO.map(|g| w.median(g).map(|m| w.better.advantage(m, best.median)));
            if values.iter().all(Option::is_none) {
                continue;
            }
            let prefix = if f.bench == "compare" {
                String::new()
            } else {
                format!("{}: ", f.bench)
            };
            rows.push(Row {
                label: format!("{prefix}{} (vs {})", w.name, best.imp),
                values,
            });
        }
    }
    rows
}

/// A path relative to the repository root, for links.
fn rel(p: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn markdown(
    loaded: &[(String, Result<BenchFile, String>)],
    files: &[BenchFile],
    md_path: &Path,
    chart_path: &Path,
) -> String {
    let mut r = String::new();
    let command = std::env::var(COMMAND_ENV)
        .unwrap_or_else(|_| "cargo bench --bench compare -- --report-only".into());
    let _ = writeln!(r, "# Benchmarks");
    let _ = writeln!(r);
    let _ = writeln!(
        r,
        "Generated from `target/bench-results/*.json` by `cargo bench --bench compare -- \
         --report-only`, the last step of `bash benches/compare.sh`, which runs every bench and \
         regenerates this file and the chart in one command. How each bench measures: \
         [`benches/README.md`](benches/README.md). On this 2-core machine absolute figures \
         drift by about 30% from run to run; the ratios, taken side by side in one run, are \
         the result."
    );
    let _ = writeln!(r);
    let _ = writeln!(r, "- command: `{command}`");
    let _ = writeln!(r, "- report written: {}", run_info::utc_now());
    let _ = writeln!(r, "- kernel: {}", run_info::kernel_release());
    let _ = writeln!(r, "- cores: {}", run_info::cores());
    for (bench, f) in loaded {
        match f {
            Ok(f) => {
                let load = f.other_load.as_deref().map_or(String::new(), |l| {
                    format!(
                        "; other load: {}",
                        l.split(" of the CPUs").next().unwrap_or(l)
                    )
                });
                let _ = writeln!(r, "- {bench}: measured {} by `{}`{load}", f.date, f.command);
            }
            Err(e) => {
                let _ = writeln!(r, "- {bench}: no results ({e})");
            }
        }
    }
    let _ = writeln!(r);

    let _ = writeln!(r, "## Targets (issues 5 and 15)");
    let _ = writeln!(r);
    let _ = writeln!(r, "| target | status | figures (medians) |");
    let _ = writeln!(r, "|---|---|---|");
    for t in targets::evaluate(files) {
        let _ = writeln!(r, "| {} | {} | {} |", t.goal, t.status.text(), t.detail);
    }
    let _ = writeln!(r);

    let _ = writeln!(r, "## Chart");
    let _ = writeln!(r);
    let chart_link = match md_path.parent() {
        Some(dir) => chart_path.strip_prefix(dir).map_or_else(
            |_| chart_path.display().to_string(),
            |p| p.display().to_string(),
        ),
        None => rel(chart_path),
    };
    let _ = writeln!(
        r,
        "![gaio against the best peer per workload]({chart_link})\n\nEach bar: how many times \
         better that gaio backend did than the best peer of that workload (named in the label): \
         its median ÷ the peer's where higher is better, the peer's ÷ its where lower is \
         better. Log scale; 1 is parity.\n"
    );

    for (bench, f) in loaded {
        let what = EXPECTED
            .iter()
            .find(|(b, _)| b == bench)
            .map_or(String::new(), |(_, w)| format!(": {w}"));
        let _ = writeln!(r, "## {bench}{what}");
        let _ = writeln!(r);
        match f {
            Ok(f) => {
                r.push_str(&render::header(f));
                r.push_str(&render::ratios_note());
                r.push_str(&render::tables(f, "###"));
            }
            Err(e) => {
                let _ = writeln!(r, "No results: {e}.\n");
            }
        }
    }
    r
}
