//! [`prefetch`] and [`prefetch_all`]: ask the processor to start loading
//! the cache lines a loop will read a few iterations later.
//!
//! A lookup in a table of a million ids misses the cache on nearly every
//! id (the table is several times the last-level cache), and waiting for
//! each miss in turn leaves the processor idle for most of a lookup. A
//! prefetch issued a few events ahead overlaps those misses with the work
//! of the events in between. It is a hint: it retires at once, never
//! faults and changes nothing the program can observe but timing.

// `prefetcht0` instructions on addresses inside live values: hints that read
// nothing into the program and cannot fault (whatever the address).
#![allow(unsafe_code)]

/// Starts loading the cache line that holds the start of `value` into
/// every cache level, without waiting for it. Does nothing on processors
/// other than x86-64. Changes no result, only how soon memory is read.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast::<u8>());
}

/// Cache lines a [`prefetch_all`] loads at most: a value's first 512 bytes.
const MAX_LINES: usize = 8;

/// [`prefetch`] of every 64-byte cache line `value` spans (its first
/// [`MAX_LINES`]), for a value whose fields are read all over.
#[inline(always)]
pub(crate) fn prefetch_all<T>(value: &T) {
    let start = (value as *const T).cast::<u8>();
    let lines = std::mem::size_of::<T>().div_ceil(64).clamp(1, MAX_LINES);
    for line in 0..lines {
        // `wrapping_add` computes an address without reading it; with
        // `line * 64 < size_of::<T>()` (or 0 for a zero-sized `T`) the
        // address lies inside `value`.
        prefetch_address(start.wrapping_add(line * 64));
    }
}

/// [`prefetch`] of a raw address: a hint, never a read.
#[inline(always)]
fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: `prefetcht0` is a hint: it never faults (whatever the
        // address), writes nothing and returns nothing; every caller passes
        // an address inside a live value besides. SSE, which it needs, is
        // part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}
