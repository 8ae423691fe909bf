//! The `log` cargo feature: a watcher's start, its backend threads' start and stop, and
//! `Backend::Auto`'s fallback reason reach the `log` crate's logger. Compiled only with the
//! feature (`cargo test --release --features log --test log`).
#![cfg(feature = "log")]

use std::sync::Mutex;

use gaio::{Backend, Watcher};

/// Every record, as "LEVEL target: message".
static RECORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Collect;

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &log::Record<'_>) {
        let line = format!("{} {}: {}", r.level(), r.target(), r.args());
        RECORDS.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

fn records_with(what: &str) -> Vec<String> {
    let all = RECORDS.lock().unwrap();
    all.iter().filter(|l| l.contains(what)).cloned().collect()
}

/// One test, as the logger is the process's: a forced epoll watcher, then `Auto`.
#[test]
fn backend_choice_and_threads_are_logged() {
    log::set_logger(&Collect).unwrap();
    log::set_max_level(log::LevelFilter::Debug);

    let w: Watcher = Watcher::builder().backend(Backend::Epoll).build().unwrap();
    w.close().unwrap();
    drop(w);
    let started = records_with("watcher started on epoll (asked for epoll");
    assert_eq!(started.len(), 1, "{:#?}", RECORDS.lock().unwrap());
    assert!(
        started[0].starts_with("DEBUG gaio::builder:"),
        "{started:?}"
    );
    for t in ["loop", "poller"] {
        for what in ["started", "stopped"] {
            let line = format!(": epoll {t} thread {what}");
            assert_eq!(records_with(&line).len(), 1, "no {line:?} in the records");
        }
    }

    let auto: Watcher = Watcher::builder().backend(Backend::Auto).build().unwrap();
    let b = auto.backend();
    assert_eq!(
        records_with(&format!("watcher started on {b} (asked for auto")).len(),
        1
    );
    if b == Backend::Epoll {
        // Auto fell back: the reason is an info record.
        let why = records_with("backend auto: io_uring unavailable");
        assert_eq!(why.len(), 1, "{:#?}", RECORDS.lock().unwrap());
        assert!(why[0].starts_with("INFO gaio::builder:"), "{why:?}");
        if !Backend::Uring.compiled_in() {
            assert!(why[0].contains("cargo feature io-uring"), "{why:?}");
        }
    } else {
        assert_eq!(records_with("io_uring ring thread started").len(), 1);
    }
}
