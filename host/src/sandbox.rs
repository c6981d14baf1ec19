//! Sandboxing of guest invocations for multi-tenant hosting (`docs/reliability.md`,
//! "Sandboxing and multi-tenancy").
//!
//! Every invocation runs in a fresh `Store` with
//! - a **time limit**: the engine is built with epoch interruption and an [`EpochTicker`]
//!   bumps its epoch every [`TICK`]; each store yields to the executor at every tick (so a
//!   busy guest never holds a worker thread for longer than a tick) and traps with
//!   [`LimitHit::Time`] once its wall-clock deadline has passed. A guest blocked in a host call
//!   (a clock it waits on, a nested stage) is stopped by the same deadline from outside;
//! - a **memory limit**: [`GuestLimiter`] wraps wasmtime's [`StoreLimits`] and turns a denied
//!   `memory.grow` into a trap carrying [`LimitHit::Memory`], instead of the `-1` that Rust's
//!   allocator would turn into an anonymous `unreachable`;
//! - a **call-depth bound** and **bounded concurrency** ([`Slots`]): a tenant has a fixed
//!   number of instance slots, split into one pool per call depth. A stage calling a stage in
//!   process keeps its own instance alive while it waits for the callee's; because an
//!   invocation at depth `d` only ever waits for a slot of depth `d + 1`, and the deepest level
//!   calls nothing, no set of waiting invocations can wait on each other: reaching the bound
//!   makes callers wait, never deadlock.
//!
//! [`InvocationError`] is what the host reports when one of these stops a guest.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// How often the epoch advances: the granularity of time limits and of a busy guest's yields.
pub const TICK: Duration = Duration::from_millis(10);

/// Why the host stopped an invocation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvocationError {
    /// The invocation ran (or waited) past its deadline.
    #[error("the {stage} stage of tenant {tenant} exceeded its time limit of {limit_ms} ms")]
    TimeLimit {
        /// The stage.
        stage: &'static str,
        /// The tenant.
        tenant: String,
        /// The limit.
        limit_ms: u64,
    },
    /// The guest tried to grow a linear memory beyond its limit.
    #[error(
        "the {stage} stage of tenant {tenant} exceeded its memory limit of {limit_bytes} bytes \
         (it asked for {requested_bytes})"
    )]
    MemoryLimit {
        /// The stage.
        stage: &'static str,
        /// The tenant.
        tenant: String,
        /// The limit.
        limit_bytes: usize,
        /// The size the guest asked to grow to.
        requested_bytes: usize,
    },
    /// A chain of stages calling stages went deeper than the host allows.
    #[error(
        "the {stage} stage of tenant {tenant} was called at depth {depth}, beyond the call \
         depth limit of {limit} (stages calling stages)"
    )]
    CallDepth {
        /// The stage that would have been invoked.
        stage: &'static str,
        /// The tenant.
        tenant: String,
        /// Its depth (0: invoked by the host itself).
        depth: u32,
        /// Most nested levels allowed.
        limit: u32,
    },
}

/// The trap payload of a limit, raised inside wasmtime and turned into an
/// [`InvocationError`] by the invocation that knows the stage and tenant.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LimitHit {
    /// The epoch callback found the deadline passed.
    #[error("time limit reached")]
    Time,
    /// A memory grew past the limit.
    #[error("memory limit reached: asked for {requested} bytes")]
    Memory {
        /// The size asked for.
        requested: usize,
    },
}

/// Bumps an engine's epoch every [`TICK`] on a thread of its own, until the engine is gone.
pub(crate) fn start_epoch_ticker(engine: &wasmtime::Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("faaskeeper-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        })
        .map(|_| ())
}

/// The resource limiter of one invocation's store.
pub(crate) struct GuestLimiter {
    inner: StoreLimits,
    memory_bytes: usize,
    /// Set when the guest asked for more memory than allowed.
    pub(crate) memory_hit: Option<usize>,
}

impl GuestLimiter {
    /// Linear memories of at most `memory_bytes` each; a handful of instances, tables and
    /// memories (a Rust `wasm32-wasip2` component has one memory and a few core instances).
    pub(crate) fn new(memory_bytes: usize) -> GuestLimiter {
        GuestLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            memory_bytes,
            memory_hit: None,
        }
    }
}

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.memory_hit = Some(desired);
            return Err(wasmtime::Error::new(LimitHit::Memory {
                requested: desired,
            }));
        }
        // Within our limit: a memory's own declared maximum still answers -1, as wasm says.
        self.inner.memory_growing(current, desired, maximum)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// A tenant's instance slots: one semaphore per call depth.
pub(crate) struct Slots {
    levels: Vec<Arc<Semaphore>>,
    sizes: Vec<u32>,
    in_use: Arc<AtomicU32>,
}

/// An instance slot, given back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    in_use: Arc<AtomicU32>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Slots {
    /// `total` slots over `depth` levels: an equal share each, the remainder to depth 0
    /// (where the host's own invocations run). Needs `total >= depth >= 1`.
    pub(crate) fn new(total: u32, depth: u32) -> Slots {
        let depth = depth.max(1);
        let share = total / depth;
        let sizes: Vec<u32> = (0..depth)
            .map(|d| {
                if d == 0 {
                    total - share * (depth - 1)
                } else {
                    share
                }
            })
            .collect();
        Slots {
            levels: sizes
                .iter()
                .map(|&n| Arc::new(Semaphore::new(n as usize)))
                .collect(),
            sizes,
            in_use: Arc::new(AtomicU32::new(0)),
        }
    }

    /// Levels of nesting allowed (depth 0 is the host's own call).
    pub(crate) fn depth_limit(&self) -> u32 {
        self.levels.len() as u32
    }

    /// Slots per level.
    pub(crate) fn sizes(&self) -> &[u32] {
        &self.sizes
    }

    /// Instances running now.
    pub(crate) fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Wait for a slot at `depth`; `None` if `depth` is beyond the limit.
    pub(crate) async fn acquire(&self, depth: u32) -> Option<Slot> {
        let level = self.levels.get(depth as usize)?.clone();
        // The semaphores are never closed.
        let permit = level.acquire_owned().await.ok()?;
        self.in_use.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            _permit: permit,
            in_use: self.in_use.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_over_levels_and_sum_to_total() {
        let s = Slots::new(10, 4);
        assert_eq!(s.sizes(), &[4, 2, 2, 2]);
        assert_eq!(s.sizes().iter().sum::<u32>(), 10);
        assert_eq!(Slots::new(64, 4).sizes(), &[16, 16, 16, 16]);
        assert_eq!(Slots::new(3, 1).sizes(), &[3]);
    }

    #[tokio::test]
    async fn a_full_level_has_no_slot_and_depth_beyond_the_limit_is_refused() {
        let s = Slots::new(2, 2);
        let a = s.acquire(0).await.expect("level 0");
        assert!(s.acquire(2).await.is_none(), "depth 2 is beyond 2 levels");
        assert!(s.levels[0].try_acquire().is_err(), "level 0 is full");
        // Level 1 is independent of level 0.
        let b = s.acquire(1).await.expect("level 1");
        assert_eq!(s.in_use(), 2);
        drop(a);
        assert!(s.levels[0].try_acquire().is_ok(), "given back on drop");
        drop(b);
        assert_eq!(s.in_use(), 0);
    }
}
