//! Where a bench run's files go: its Markdown report to `benches/results/<bench>.md`, and its
//! results (the [`results`](super::results) format) to `target/bench-results/<bench>.json`.
//! A full run writes them there; `--out PATH` and `--json PATH` write them elsewhere, also
//! from a quick or partial run, which otherwise writes neither.

use std::path::{Path, PathBuf};

use super::example::workloads::BenchResult;
use super::results::{results_dir, BenchFile};

/// Writes `md` to `out`, else, when `full`, to `benches/results/<bench>.md`.
pub fn write_report(bench: &str, full: bool, out: Option<&str>, md: &str) -> BenchResult<()> {
    let default =
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("benches/results/{bench}.md"));
    let Some(path) = out.map(PathBuf::from).or_else(|| full.then(default)) else {
        eprintln!("{bench}: a quick or partial run writes no report file unless given --out PATH");
        return Ok(());
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("{bench}: report written to {}", path.display());
    Ok(())
}

/// Writes `file` to `json`, else, when `full`, to `target/bench-results/<bench>.json`.
pub fn write_results(full: bool, json: Option<&str>, file: &BenchFile) -> BenchResult<()> {
    let bench = &file.bench;
    let default = || results_dir().join(format!("{bench}.json"));
    let Some(path) = json.map(PathBuf::from).or_else(|| full.then(default)) else {
        eprintln!(
            "{bench}: a quick or partial run writes no results file unless given --json PATH"
        );
        return Ok(());
    };
    file.write(&path)?;
    eprintln!("{bench}: results written to {}", path.display());
    Ok(())
}
