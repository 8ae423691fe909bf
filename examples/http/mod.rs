//! The HTTP/1.1 "Hello, World!" responder of the `http-server` example, in three parts:
//! [`parse`] (an incremental request parser), [`response`] (the bytes sent back) and
//! [`server`] (the gaio `wait_io` loop).
//!
//! `examples/http-server.rs` includes this directory with `mod http;` (Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs` as examples, so this is not one of its own);
//! `tests/http_server.rs` and `benches/http.rs` include it with `#[path]`, the bench's tokio
//! peer uses its parser and responses so that both servers answer byte for byte alike. Each
//! user needs part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod parse;
pub mod response;
pub mod server;
