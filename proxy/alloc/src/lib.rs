//! The global allocator of Warden's binaries: mimalloc.
//!
//! The `mimalloc` crate's `GlobalAlloc` asks for every block through
//! `mi_malloc_aligned`, whatever its alignment. That call takes
//! mimalloc's fast path only for blocks of at most 1 KiB whose page has a
//! free block at hand; every larger block (request bodies, Pingora's
//! buffers, the audit line) goes through its generic aligned path and
//! its over-allocation fallback, about 130 instructions more per block
//! (22 blocks of a proxied call, session 51's callgrind count). A block
//! that mimalloc's plain `mi_malloc` returns is already aligned to 16
//! bytes when it is at least 16 bytes long, and to the machine word
//! otherwise (the bins are multiples of two words above one word); so a
//! layout whose alignment is at most 16 and at most its size is served
//! by the plain calls, and only the rest (Tokio's 128-byte aligned task
//! cells, say) by the aligned ones. The same test as the standard
//! library's own `System` allocator makes before calling `malloc`.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: warden_alloc::Mimalloc = warden_alloc::Mimalloc;
//! ```

#![no_std]

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment of every mimalloc block of at least that many bytes.
const PLAIN_ALIGN: usize = 16;

/// Whether `mi_malloc(size)` is aligned enough for `align`.
#[inline(always)]
fn plain(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (see the crate's documentation).
pub struct Mimalloc;

// SAFETY: every block comes from mimalloc, aligned as its layout asks
// (`plain`: mimalloc's bins are one word, two words or multiples of 16
// bytes, each block starting 16-aligned within its page, unless its
// debug build's guarded blocks are on, which `libmimalloc-sys` never
// builds), and goes back to it through `mi_free`, which takes blocks of
// the plain and the aligned calls alike (interior pointers of aligned
// over-allocations included). A null result is passed on as null, as
// `GlobalAlloc` asks. Re-check the bins on a `libmimalloc-sys` upgrade.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let p = if plain(align, size) {
            mi::mi_malloc(size)
        } else {
            mi::mi_malloc_aligned(size, align)
        };
        p.cast()
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let p = if plain(align, size) {
            mi::mi_zalloc(size)
        } else {
            mi::mi_zalloc_aligned(size, align)
        };
        p.cast()
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size)
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
        };
        p.cast()
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const A: Mimalloc = Mimalloc;

    /// Every size class a call's blocks fall in (tiny, small, the 1 KiB
    /// edge, pages, beyond mimalloc's large objects), every alignment a
    /// Rust type may ask for up to a page.
    fn layouts() -> Vec<Layout> {
        let sizes = [
            1,
            3,
            8,
            9,
            15,
            16,
            17,
            24,
            40,
            100,
            1000,
            1024,
            1025,
            1500,
            4096,
            5000,
            65536,
            70000,
            1 << 20,
            5 << 20,
        ];
        let mut out = Vec::new();
        for &size in &sizes {
            for shift in 0..=12 {
                out.push(Layout::from_size_align(size, 1 << shift).expect("a layout"));
            }
        }
        out
    }

    #[test]
    fn blocks_are_aligned_as_asked_and_hold_their_size() {
        for l in layouts() {
            // A few of each, so that blocks after the first of a page are seen.
            let blocks: Vec<*mut u8> = (0..5).map(|_| unsafe { A.alloc(l) }).collect();
            for (i, &p) in blocks.iter().enumerate() {
                assert!(!p.is_null(), "{l:?}");
                assert_eq!(p as usize % l.align(), 0, "{l:?}");
                unsafe {
                    p.write_bytes(i as u8 + 1, l.size());
                }
            }
            for (i, &p) in blocks.iter().enumerate() {
                let s = unsafe { core::slice::from_raw_parts(p, l.size()) };
                assert!(s.iter().all(|&b| b == i as u8 + 1), "{l:?}: blocks overlap");
                unsafe { A.dealloc(p, l) };
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for l in layouts() {
            // Many blocks of the size dirtied and freed first: mimalloc
            // hands freed blocks out again once a page's free list runs
            // dry, so some of the zeroed ones below are reused ones.
            // (Few of the largest: checking megabytes of zeros is slow.)
            let n = if l.size() > 65536 { 2 } else { 64 };
            let dirty: Vec<*mut u8> = (0..n).map(|_| unsafe { A.alloc(l) }).collect();
            for &d in &dirty {
                unsafe {
                    d.write_bytes(0xAB, l.size());
                    A.dealloc(d, l);
                }
            }
            let zeroed: Vec<*mut u8> = (0..2 * n).map(|_| unsafe { A.alloc_zeroed(l) }).collect();
            for &p in &zeroed {
                assert_eq!(p as usize % l.align(), 0, "{l:?}");
                let s = unsafe { core::slice::from_raw_parts(p, l.size()) };
                assert!(s.iter().all(|&b| b == 0), "{l:?}");
            }
            for &p in &zeroed {
                unsafe { A.dealloc(p, l) };
            }
        }
    }

    #[test]
    fn realloc_keeps_the_contents_and_the_alignment() {
        for l in layouts() {
            for new_size in [1, l.size() / 2 + 1, l.size() * 2 + 3, 100_000] {
                unsafe {
                    let p = A.alloc(l);
                    for k in 0..l.size() {
                        *p.add(k) = k as u8;
                    }
                    let q = A.realloc(p, l, new_size);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % l.align(), 0, "{l:?} -> {new_size}");
                    for k in 0..l.size().min(new_size) {
                        assert_eq!(*q.add(k), k as u8, "{l:?} -> {new_size}");
                    }
                    q.write_bytes(7, new_size);
                    A.dealloc(
                        q,
                        Layout::from_size_align(new_size, l.align()).expect("a layout"),
                    );
                }
            }
        }
    }
}
