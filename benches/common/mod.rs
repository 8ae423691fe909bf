//! Code shared by the bench binaries (`compare`, `files`, `http`, `allocs`): the run's header
//! facts (command, date, kernel, cores, other load), medians, the JSON results format and
//! where a run's files go, the shared command-line pieces, and a server running in a child
//! process of its own. Each bench includes it with `mod common;` (or `#[path]`); each uses
//! part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

/// The examples' shared code (echo server, verifying client workloads, argument parser),
/// which the benches drive.
#[path = "../../examples/common/mod.rs"]
pub mod example;

pub mod cli;
pub mod outputs;
pub mod results;
pub mod run_info;
pub mod server_proc;
pub mod stats;
