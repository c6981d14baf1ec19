//! Free lists of small blocks by size class, in front of a general allocator.
//!
//! A request of at most [`MAX_CLASS_BYTES`] bytes (alignment at most [`CLASS_ALIGN`]) is
//! rounded up to a power of two from 16 bytes and served from that class's free list, or
//! from the inner allocator when the list is empty; a freed block goes back on its class's
//! list, never to the inner allocator. `dealloc` is given the layout `alloc` was, so the class
//! is found from the size alone and blocks carry no header. Larger requests go to the inner
//! allocator as they are.
//!
//! Memory on a free list is only reused by its own class. That suits a stage instance, which
//! lives for one invocation: what it holds at most is bounded by the invocation's peak use
//! per class, and the whole instance is dropped after. The host's memory limit still holds:
//! every block comes from the inner allocator, whose memory comes from `memory.grow`.
#![allow(unsafe_code)]

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;

/// Smallest class: 16 bytes.
const MIN_SHIFT: u32 = 4;
/// Largest class: 2 KiB (a 1 KiB payload with its base64 fits).
const MAX_SHIFT: u32 = 11;
/// Largest request served from a class.
pub const MAX_CLASS_BYTES: usize = 1 << MAX_SHIFT;
/// Alignment of every class block.
pub const CLASS_ALIGN: usize = 16;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;

/// Size classes in front of `A`. Single-threaded: see the `Sync` implementation.
pub struct Classes<A> {
    inner: A,
    /// The first free block of each class; each free block holds a pointer to the next.
    heads: UnsafeCell<[*mut u8; CLASSES]>,
}

// SAFETY: implemented only where the target has no threads (wasm32 without the atomics
// feature, which is how the stages are built), so the free lists are never used from two
// threads at once.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for Classes<A> {}

impl<A> Classes<A> {
    /// Size classes in front of `inner`, all lists empty.
    pub const fn new(inner: A) -> Self {
        Classes {
            inner,
            heads: UnsafeCell::new([core::ptr::null_mut(); CLASSES]),
        }
    }
}

/// The class of `layout`, if it has one.
#[inline(always)]
fn class(layout: Layout) -> Option<usize> {
    if layout.size() > MAX_CLASS_BYTES || layout.align() > CLASS_ALIGN {
        return None;
    }
    let size = layout.size().max(1 << MIN_SHIFT);
    let shift = usize::BITS - (size - 1).leading_zeros();
    Some((shift - MIN_SHIFT) as usize)
}

/// The layout of a block of class `c`.
#[inline(always)]
fn block(c: usize) -> Layout {
    // SAFETY: a power of two no larger than `MAX_CLASS_BYTES`, with a power-of-two alignment.
    unsafe { Layout::from_size_align_unchecked(1 << (c as u32 + MIN_SHIFT), CLASS_ALIGN) }
}

// SAFETY: class blocks are at least as large as the request and aligned to `CLASS_ALIGN`,
// which is at least the request's alignment; a block is on at most one list and never handed
// out twice; blocks of other sizes are the inner allocator's own.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Classes<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(layout) else {
            // SAFETY: the caller's layout, passed on.
            return unsafe { self.inner.alloc(layout) };
        };
        // SAFETY: single-threaded (see `Sync`), and no reference to the lists outlives a call.
        let heads = unsafe { &mut *self.heads.get() };
        let head = heads[c];
        if head.is_null() {
            // SAFETY: a non-zero size.
            unsafe { self.inner.alloc(block(c)) }
        } else {
            // SAFETY: a free block of this class holds the next free block's address.
            heads[c] = unsafe { head.cast::<*mut u8>().read() };
            head
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(c) = class(layout) else {
            // SAFETY: allocated by the inner allocator with this layout.
            return unsafe { self.inner.dealloc(ptr, layout) };
        };
        // SAFETY: as in `alloc`; `ptr` is a block of class `c` (the caller's layout is the
        // one it was allocated with), at least 16 bytes and aligned for a pointer.
        unsafe {
            let heads = &mut *self.heads.get();
            ptr.cast::<*mut u8>().write(heads[c]);
            heads[c] = ptr;
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, fits `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            // The block already has room.
            (Some(a), Some(b)) if a == b => ptr,
            // SAFETY: the inner allocator's block, with the caller's guarantees.
            (None, None) => unsafe { self.inner.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY: `new` is a valid layout; both blocks are live and distinct.
                unsafe {
                    let out = self.alloc(new);
                    if !out.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    out
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).expect("layout")
    }

    #[test]
    fn classes_are_powers_of_two_from_16_bytes() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 8)), Some(1));
        assert_eq!(class(layout(1024, 1)), Some(6));
        assert_eq!(class(layout(MAX_CLASS_BYTES, 16)), Some(CLASSES - 1));
        assert_eq!(class(layout(MAX_CLASS_BYTES + 1, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn freed_blocks_are_reused_by_their_class_only() {
        let a = Classes::new(System);
        unsafe {
            let small = a.alloc(layout(24, 8));
            a.dealloc(small, layout(24, 8));
            // Same class (32 bytes): the freed block comes back.
            let again = a.alloc(layout(30, 4));
            assert_eq!(again, small);
            // Another class: a new block.
            let other = a.alloc(layout(40, 8));
            assert_ne!(other, small);
            assert_eq!(other as usize % CLASS_ALIGN, 0);
            a.dealloc(again, layout(30, 4));
            a.dealloc(other, layout(40, 8));
            // Larger than any class: straight to the inner allocator and back.
            let big = a.alloc(layout(10_000, 8));
            assert!(!big.is_null());
            a.dealloc(big, layout(10_000, 8));
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_sizes() {
        let a = Classes::new(System);
        unsafe {
            let mut size = 5;
            let mut p = a.alloc(layout(size, 1));
            for i in 0..size {
                p.add(i).write(i as u8);
            }
            // Within the class, across classes, and past the largest class.
            for new_size in [9, 16, 17, 300, 2048, 2049, 70_000, 100, 3] {
                p = a.realloc(p, layout(size, 1), new_size);
                assert!(!p.is_null());
                for i in 0..size.min(new_size) {
                    assert_eq!(
                        p.add(i).read(),
                        i as u8,
                        "byte {i} after {size} → {new_size}"
                    );
                }
                for i in size.min(new_size)..new_size {
                    p.add(i).write(i as u8);
                }
                size = new_size;
            }
            a.dealloc(p, layout(size, 1));
        }
    }

    #[test]
    fn many_blocks_stay_distinct() {
        let a = Classes::new(System);
        let mut live = Vec::new();
        unsafe {
            for round in 0..3 {
                for i in 0..500usize {
                    let l = layout(1 + (i * 37) % 2100, 8);
                    let p = a.alloc(l);
                    p.write_bytes((i % 251) as u8, l.size());
                    live.push((p, l, (i % 251) as u8));
                }
                // Free every other block, then check the rest kept their bytes.
                let mut kept = Vec::new();
                for (n, (p, l, v)) in live.drain(..).enumerate() {
                    if (n + round) % 2 == 0 {
                        a.dealloc(p, l);
                    } else {
                        kept.push((p, l, v));
                    }
                }
                for &(p, l, v) in &kept {
                    assert!((0..l.size()).all(|i| p.add(i).read() == v));
                }
                live = kept;
            }
            for (p, l, _) in live {
                a.dealloc(p, l);
            }
        }
    }
}
