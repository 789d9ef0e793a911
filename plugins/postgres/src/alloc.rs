//! The plugin's allocator in its WebAssembly build: sanitising allocates
//! and frees a small string for every value of every row (decoding, and the
//! rows the host hands back), tens of millions per large dump. Blocks of up
//! to 256 bytes come from per-size free lists refilled from 64 KiB slabs, so
//! allocating and freeing them is a pop and a push; everything else goes to
//! the system allocator. Freed small blocks are kept for reuse, never given
//! back: the working set is one batch of rows (about 1 MiB of values).
//!
//! Only for single-threaded WebAssembly (wasm32-wasip2 has no threads):
//! the free lists take no lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Block sizes are multiples of this (and blocks aligned to it).
const GRAIN: usize = 16;
/// Size classes: GRAIN, 2×GRAIN, … up to CLASSES×GRAIN bytes.
const CLASSES: usize = 16;
const SMALL_MAX: usize = GRAIN * CLASSES;
const SLAB: usize = 64 * 1024;

struct Pools {
    free: [*mut u8; CLASSES],
    bump: *mut u8,
    end: *mut u8,
}

pub struct SmallAlloc(UnsafeCell<Pools>);

// SAFETY: only installed on single-threaded wasm32 (see lib.rs), where no
// two calls can run at once.
unsafe impl Sync for SmallAlloc {}

impl SmallAlloc {
    pub const fn new() -> Self {
        SmallAlloc(UnsafeCell::new(Pools {
            free: [ptr::null_mut(); CLASSES],
            bump: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }
}

/// The size class of `layout`, when it is small.
fn class(layout: &Layout) -> Option<usize> {
    (layout.size() <= SMALL_MAX && layout.align() <= GRAIN && layout.size() > 0)
        .then(|| (layout.size() - 1) / GRAIN)
}

unsafe impl GlobalAlloc for SmallAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(c) = class(&layout) else {
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: single-threaded (see above); no reference outlives the call.
        let pools = unsafe { &mut *self.0.get() };
        let head = pools.free[c];
        if !head.is_null() {
            // SAFETY: a free block holds the next free block's address.
            pools.free[c] = unsafe { *(head as *mut *mut u8) };
            return head;
        }
        let size = (c + 1) * GRAIN;
        if (pools.end as usize) - (pools.bump as usize) < size {
            // SAFETY: SLAB and GRAIN make a valid, non-zero layout.
            let slab = unsafe { System.alloc(Layout::from_size_align_unchecked(SLAB, GRAIN)) };
            if slab.is_null() {
                return slab;
            }
            // The rest of the old slab is abandoned (less than 256 bytes).
            pools.bump = slab;
            pools.end = unsafe { slab.add(SLAB) };
        }
        let block = pools.bump;
        pools.bump = unsafe { block.add(size) };
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        let Some(c) = class(&layout) else {
            return unsafe { System.dealloc(block, layout) };
        };
        let pools = unsafe { &mut *self.0.get() };
        // SAFETY: the block is at least GRAIN bytes and GRAIN-aligned.
        unsafe { *(block as *mut *mut u8) = pools.free[c] };
        pools.free[c] = block;
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class(&layout);
        if old.is_none() && (new_size > SMALL_MAX || layout.align() > GRAIN) {
            return unsafe { System.realloc(block, layout, new_size) };
        }
        // SAFETY: the caller guarantees new_size and align make a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if old.is_some() && old == class(&new_layout) {
            return block;
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                ptr::copy_nonoverlapping(block, new, layout.size().min(new_size));
                self.dealloc(block, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_small_blocks_and_passes_big_ones_on() {
        let a = SmallAlloc::new();
        unsafe {
            let l = Layout::from_size_align(24, 8).unwrap();
            let p = a.alloc(l);
            assert_eq!(p as usize % GRAIN, 0);
            p.write_bytes(7, 24);
            let q = a.alloc(l);
            assert_ne!(p, q);
            a.dealloc(p, l);
            assert_eq!(a.alloc(Layout::from_size_align(30, 1).unwrap()), p);
            // Growing within a class keeps the block; across, moves it.
            let r = a.realloc(q, l, 32);
            assert_eq!(r, q);
            r.write_bytes(9, 32);
            let s = a.realloc(r, Layout::from_size_align(32, 8).unwrap(), 1000);
            assert_eq!(std::slice::from_raw_parts(s, 32), &[9u8; 32][..]);
            let t = a.realloc(s, Layout::from_size_align(1000, 8).unwrap(), 8);
            assert_eq!(std::slice::from_raw_parts(t, 8), &[9u8; 8][..]);
            a.dealloc(t, Layout::from_size_align(8, 8).unwrap());
            let big = Layout::from_size_align(4096, 64).unwrap();
            let b = a.alloc(big);
            assert_eq!(b as usize % 64, 0);
            a.dealloc(b, big);
            // Many blocks span several slabs.
            let blocks: Vec<_> = (0..10_000).map(|_| a.alloc(l)).collect();
            let mut sorted = blocks.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), blocks.len());
            for p in blocks {
                a.dealloc(p, l);
            }
        }
    }
}
