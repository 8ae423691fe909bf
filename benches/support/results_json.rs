//! The shared results format of the benches (`target/bench-results/<bench>.json`): one file
//! per run, one workload per table and metric, one entry per implementation with its median
//! and every round's value, so that a later tool can compare runs without parsing Markdown.
//!
//! Included by `benches/http.rs` and `benches/allocs.rs` with `#[path]`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One implementation's values for one workload.
#[derive(Debug, Clone)]
pub struct ImplResult {
    /// `gaio-epoll`, `gaio-uring`, `tokio`, ...
    pub name: String,
    pub median: f64,
    pub rounds: Vec<f64>,
}

/// One table: a workload measured with one metric on several implementations.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    /// The unit, as a table header shows it (`requests/s`).
    pub metric: String,
    pub better: Better,
    pub results: Vec<ImplResult>,
    /// Secondary columns: column name, then (implementation, value) pairs.
    pub extra: Vec<(String, Vec<(String, f64)>)>,
}

/// What the whole run was.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub bench: String,
    pub date: String,
    pub kernel: String,
    pub cores: usize,
    pub command: String,
    pub other_load: Option<String>,
}

/// The default path: `target/bench-results/<bench>.json` under the project.
pub fn default_path(bench: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-results")
        .join(format!("{bench}.json"))
}

/// The median of `v` (the mean of the two middle values for an even count; 0 when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// A finite number as JSON, anything else as `null`.
fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// The document for `info` and `workloads`.
pub fn to_json(info: &RunInfo, workloads: &[Workload]) -> Value {
    let workloads: Vec<Value> = workloads
        .iter()
        .map(|w| {
            let results: Vec<Value> = w
                .results
                .iter()
                .map(|r| {
                    json!({
                        "impl": r.name,
                        "median": num(r.median),
                        "rounds": r.rounds.iter().map(|&x| num(x)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let mut entry = json!({
                "name": w.name,
                "metric": w.metric,
                "better": match w.better { Better::Higher => "higher", Better::Lower => "lower" },
                "results": results,
            });
            if !w.extra.is_empty() {
                let mut extra = Map::new();
                for (column, values) in &w.extra {
                    let per_impl: Map<String, Value> =
                        values.iter().map(|(k, v)| (k.clone(), num(*v))).collect();
                    extra.insert(column.clone(), Value::Object(per_impl));
                }
                entry["extra"] = Value::Object(extra);
            }
            entry
        })
        .collect();
    let mut doc = json!({
        "bench": info.bench,
        "date": info.date,
        "kernel": info.kernel,
        "cores": info.cores,
        "command": info.command,
        "workloads": workloads,
    });
    if let Some(load) = &info.other_load {
        doc["other_load"] = Value::String(load.clone());
    }
    doc
}

/// Writes the document to `path`, creating its directory.
pub fn write(path: &Path, info: &RunInfo, workloads: &[Workload]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&to_json(info, workloads))
        .map_err(|e| format!("JSON: {e}"))?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}
