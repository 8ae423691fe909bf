//! The `push-server` example's bench mode ([`bench`]): the server run twice in child
//! processes, shared buffer against a `Vec` per connection, measured side by side.
//!
//! `examples/push-server.rs` includes this directory with `mod push;` (Cargo builds only
//! `examples/*.rs` and `examples/*/main.rs` as examples, so this is not one of its own).

pub mod bench;
