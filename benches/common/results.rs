//! The results format every bench binary writes to `target/bench-results/<bench>.json`
//! (`compare`, `http`, `allocs`), which `cargo bench --bench compare -- --report-only` reads
//! back to write `BENCHMARKS.md` and the chart. One file per bench; in it one entry per
//! workload and metric, each with every implementation's median and per-round values.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the JSON files go: `target/bench-results/` of this package.
pub fn results_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results")
}

/// One bench binary's run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchFile {
    /// `compare`, `http` or `allocs`.
    pub bench: String,
    pub date: String,
    pub kernel: String,
    pub cores: usize,
    pub command: String,
    /// Free text: how much of the machine other processes took during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_load: Option<String>,
    /// One table each.
    pub workloads: Vec<Workload>,
    /// Optional (an extension of the shared format): sentences the report shows under the
    /// bench's header, such as what each implementation is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One metric of one workload, for every implementation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    pub name: String,
    /// The unit, as shown in the table header.
    pub metric: String,
    pub better: Better,
    pub results: Vec<ImplResult>,
    /// Secondary columns: column name, then implementation to value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// One implementation's figures: the median over the rounds and every round's value. An
/// implementation that was not measured has no rounds (and a median of 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImplResult {
    #[serde(rename = "impl")]
    pub imp: String,
    /// JSON has no NaN: a value that is not a number is written as `null` (serde_json does
    /// so for non-finite floats), and read back as NaN.
    #[serde(deserialize_with = "nan_if_null")]
    pub median: f64,
    #[serde(deserialize_with = "nans_if_null")]
    pub rounds: Vec<f64>,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<Option<f64>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    pub fn name(self) -> &'static str {
        match self {
            Better::Higher => "higher",
            Better::Lower => "lower",
        }
    }

    /// How much better `a` is than `b`, as a factor above 1 when `a` is better (a / b for
    /// higher-is-better metrics, b / a for lower-is-better ones).
    pub fn advantage(self, a: f64, b: f64) -> f64 {
        match self {
            Better::Higher => a / b,
            Better::Lower => b / a,
        }
    }
}

impl Workload {
    /// The median of `imp`, if it was measured.
    pub fn median(&self, imp: &str) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.imp == imp && !r.rounds.is_empty())
            .map(|r| r.median)
    }
}

impl BenchFile {
    /// Writes the file (and its directory), pretty-printed.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).map_err(|e| format!("json: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Reads one file.
    pub fn read(path: &Path) -> Result<BenchFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}
