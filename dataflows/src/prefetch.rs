//! [`prefetch`]: asks the processor to start loading a cache line that a
//! loop will read a few iterations later.
//!
//! A lookup in a table of a million ids misses the cache on nearly every
//! id (the table is several times the last-level cache), and waiting for
//! each miss in turn leaves the processor idle for most of a lookup. A
//! prefetch issued a few events ahead overlaps those misses with the work
//! of the events in between. It is a hint: it retires at once, never
//! faults and changes nothing the program can observe but timing.

// One `prefetcht0` instruction on a reference's address: a hint that reads
// nothing into the program, cannot fault, and is given a valid address anyway.
#![allow(unsafe_code)]

/// Starts loading the cache line that holds the start of `value` into
/// every cache level, without waiting for it. Does nothing on processors
/// other than x86-64. Never changes a result: only when memory is read.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let address = (value as *const T).cast::<i8>();
        // SAFETY: `prefetcht0` is a hint. It never faults (whatever the
        // address), writes nothing and returns nothing; `address` comes from a
        // live reference besides. SSE, which it needs, is part of x86-64.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(address) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}
