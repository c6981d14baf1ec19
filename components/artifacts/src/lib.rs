//! # faaskeeper-artifacts
//!
//! The stage components, built for `wasm32-wasip2` by this crate's build script whenever
//! their sources change, so that `cargo run` and `cargo test` never see a stale `.wasm`.
//! The host embeds the bytes; tests use the paths. Release `.wasm` for Spin and `deploy/` come
//! from `cargo build --release --target wasm32-wasip2 -p faaskeeper-writer -p
//! faaskeeper-distributor -p faaskeeper-watch` (see README).
//!
//! For wasmCloud 2.x, which links `wasi:keyvalue@0.2.0-draft` instead of the stages'
//! `@0.2.0-draft2`, the build script also builds `components/wasmcloud-adapter` and composes
//! each stage with it: [`WASMCLOUD_STAGES`] (the stage file is nested unchanged; see
//! `wit/wasmcloud/world.wit`), and [`ADAPTER_COMPONENT`]/[`ADAPTER_BYTES`].
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
