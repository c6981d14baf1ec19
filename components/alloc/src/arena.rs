//! The allocator behind the size classes: Talc, whose first heap is an arena inside the
//! module's initial memory, and which grows memory only once that is used up.
//!
//! With Talc's `WasmDynamicTalc` (and with Rust's default dlmalloc) the first allocation of
//! every invocation grew memory by a page: a fresh instance starts at its initial size, so
//! the host made one more page accessible (`mprotect`), and the pool made it inaccessible
//! again for the next instance in the slot (`mprotect`, with a TLB shootdown on the other
//! cores). Those two calls per invocation were ≈ 4 % of the host's CPU under 32 writing
//! sessions (`perf`, docs/benchmarks.md). The arena lives in `.bss`: zero pages within the
//! initial memory, not part of the module's data image, touched only as far as it is used.
//! Memory still grows only through `memory.grow`, so the host's limit applies as before.
#![allow(unsafe_code)]

use core::alloc::Layout;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use talc::base::binning::Binning;
use talc::base::{CHUNK_UNIT, Talc};
use talc::cell::TalcSyncCell;
use talc::source::Source;
use talc::wasm::WasmBinning;

/// Bytes of the arena: what a stage typically allocates in one invocation fits (a batch of
/// small writes); a large batch grows memory as before.
const ARENA_BYTES: usize = 1 << 20;
/// WebAssembly's page size.
const PAGE: usize = 64 * 1024;

static mut ARENA: [MaybeUninit<u8>; ARENA_BYTES] = [MaybeUninit::uninit(); ARENA_BYTES];

/// Talc's source of memory: the arena once, then pages grown at the end of memory (extending
/// the last heap when they adjoin it, as `WasmGrowAndExtend` does).
#[derive(Debug)]
pub struct ArenaThenGrow {
    arena_claimed: bool,
    end: Option<NonNull<u8>>,
}

// SAFETY: `acquire` allocates nothing itself, and hands Talc only memory nothing else uses:
// the arena (private to this module, claimed once) and pages `memory.grow` has just added.
unsafe impl Source for ArenaThenGrow {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        if !talc.source.arena_claimed {
            talc.source.arena_claimed = true;
            // SAFETY: the arena is claimed here only, once; no other code names it.
            if unsafe { talc.claim((&raw mut ARENA).cast(), ARENA_BYTES) }.is_some() {
                // Talc asks again if the allocation does not fit in it.
                return Ok(());
            }
        }
        // Enough pages for the chunk, its metadata and alignment (an overestimate: too few
        // would make Talc ask again and again).
        let needed = layout.size() + 3 * CHUNK_UNIT + layout.align();
        let pages = needed.div_ceil(PAGE);
        let previous = core::arch::wasm32::memory_grow(0, pages);
        if previous == usize::MAX {
            return Err(());
        }
        let base = (previous * PAGE) as *mut u8;
        let bytes = pages * PAGE;
        if let Some(end) = talc.source.end.take()
            && end.as_ptr() == base
        {
            // SAFETY: `end` is the end of the heap Talc last claimed or extended, and the
            // pages after it were just grown.
            talc.source.end = Some(unsafe { talc.extend(end, base.wrapping_add(bytes)) });
            return Ok(());
        }
        // SAFETY: the pages were just grown and belong to no one.
        talc.source.end = unsafe { talc.claim(base, bytes) };
        Ok(())
    }
}

/// Talc over the arena, then over pages grown at the end of memory.
pub type StageTalc = TalcSyncCell<ArenaThenGrow, WasmBinning>;

/// A fresh allocator.
pub const fn new() -> StageTalc {
    TalcSyncCell::new_wasm(ArenaThenGrow {
        arena_claimed: false,
        end: None,
    })
}
