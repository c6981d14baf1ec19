//! # faaskeeper-guest-alloc
//!
//! The global allocator of every stage component (and of the runtime benchmark's guest, so
//! that `benches/benches/runtime.rs` measures the apply logic as the stages run it):
//! [`Classes`], free lists of small blocks by size class, in front of Talc, whose first heap
//! is an arena in the module's initial memory ([`arena`]).
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: faaskeeper_guest_alloc::StageAlloc = faaskeeper_guest_alloc::new();
//! ```
//!
//! Why: a stage is instantiated for one invocation and dropped after it, and most of what it
//! allocates is small and short-lived (strings, record fields, events). Rust's default wasm
//! allocator (dlmalloc) and Talc both search bins and split and merge chunks on every call,
//! which in wasm, behind Cranelift's code and the sandbox's epoch checks, was a large part of
//! the apply logic's time: with the size classes the wasm ÷ native ratio of the apply logic
//! went from 1.81× to 1.34–1.38× (docs/benchmarks.md).
#![deny(missing_docs)]

pub mod classes;
pub use classes::Classes;

#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub mod arena;

/// The stages' allocator: size classes over Talc over the arena, then `memory.grow`.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub type StageAlloc = Classes<arena::StageTalc>;

/// A fresh [`StageAlloc`], for a `#[global_allocator]` static.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
pub const fn new() -> StageAlloc {
    Classes::new(arena::new())
}
