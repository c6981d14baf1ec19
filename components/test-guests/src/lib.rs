//! # faaskeeper-test-guests
//!
//! Guest components that exist only for tests, built for `wasm32-wasip2` by this crate's build
//! script whenever their sources change (no manual step, never a stale `.wasm`):
//!
//! - [`ROGUE_COMPONENT`] / [`ROGUE_BYTES`]: `rogue/`, a stage that loops forever, sleeps
//!   forever, allocates without bound, opens other tenants' bucket names and calls stages
//!   recursively, for the sandbox tests (`host/tests/sandbox.rs`).
#![deny(missing_docs)]

include!(concat!(env!("OUT_DIR"), "/gen.rs"));
