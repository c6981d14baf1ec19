//! # faaskeeper-artifacts
//!
//! The stage components, built for `wasm32-wasip2` by this crate's build script whenever
//! their sources change, so that `cargo run` and `cargo test` never see a stale `.wasm`.
//! The host embeds the bytes; tests use the paths. Release `.wasm` for Spin and `deploy/` come
//! from `cargo build --release --target wasm32-wasip2 -p faaskeeper-writer -p
//! faaskeeper-distributor -p faaskeeper-watch` (see README).
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
