//! The engine's allocator, [`EngineAlloc`] (mimalloc, asked for alignment
//! only where its plain allocation does not already give it), and its
//! settings: [`configure`] (every command), and [`disable_huge_pages`] for
//! batch jobs.
//!
//! mimalloc returns memory that stayed free for its purge delay to the
//! operating system (v3's default: 1 s). The engine frees and allocates its
//! per-timestamp buffers (stage outputs, batches, arrangement merges) every
//! few tens of milliseconds, some of them megabytes; with the default, a
//! run of `book` over 1M lines took 13,000-27,000 page faults whose fresh
//! pages the kernel zeroed (15% of the profile), against ~750 with a 10 s
//! delay, for ~5% more peak RSS. Memory that stays free for 10 s is still
//! returned (`docs/decisions/2026-11-30-allocator-purge-delay.md`).

#![allow(unsafe_code)] // a GlobalAlloc, mimalloc's C API and prctl(2)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// The largest alignment a plain mimalloc allocation (`mi_malloc`,
/// `mi_zalloc`, `mi_realloc`) gives every size that is a multiple of it:
/// mimalloc v3 starts the first block of a page at a multiple of 16 bytes
/// (`MI_MAX_ALIGN_SIZE`; `mi_page_info_size` is rounded up to it), and
/// its size classes are whole words (8 bytes) up to 8 words, then even
/// numbers of words (`init.c`), so a block for a multiple of 16 bytes is a
/// multiple of 16 bytes and every block of its page stays aligned. A
/// size of 24 bytes is not: its blocks are 24 bytes apart.
const PLAIN_ALIGN: usize = 16;

/// mimalloc as the global allocator, calling its plain functions where
/// they already give the alignment asked for (alignment at most 16 bytes
/// and dividing the size: every type of this program but a few) and its
/// aligned ones elsewhere, as Rust's own `System` allocator does with
/// `malloc`. The `mimalloc` crate's `MiMalloc` calls the aligned ones for
/// every allocation, and mimalloc v3 serves an aligned request from its
/// fast path only while the size's page has a free block that happens to
/// be aligned, and only up to 1 KiB: past that, or when the page is full,
/// a size that is not a power of two is over-allocated (the size plus the
/// alignment, in a larger size class), about 16% of the allocations of
/// `book` on the 100k-position stream. Same blocks otherwise; frees are
/// `mi_free` either way.
pub struct EngineAlloc;

/// True when a plain mimalloc call for `size` bytes returns memory
/// aligned to `align` (see [`PLAIN_ALIGN`]).
#[inline(always)]
fn plain_is_aligned(align: usize, size: usize) -> bool {
    align <= PLAIN_ALIGN && size.is_multiple_of(align)
}

/// A block for `layout` from `plain(size)` where [`plain_is_aligned`], else
/// from `aligned(size, align)`.
///
/// # Safety
/// `plain` and `aligned` are mimalloc's allocation functions of one kind
/// (`mi_malloc` / `mi_malloc_aligned`, or the zeroing pair).
#[inline(always)]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: the caller passes mimalloc's functions, which take any size.
    unsafe {
        if plain_is_aligned(layout.align(), layout.size()) {
            plain(layout.size()).cast()
        } else {
            aligned(layout.size(), layout.align()).cast()
        }
    }
}

// SAFETY: every block comes from mimalloc and goes back to `mi_free`; the
// plain calls are made only where their alignment is at least the layout's.
unsafe impl GlobalAlloc for EngineAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size.
        unsafe {
            allocate(
                layout,
                libmimalloc_sys::mi_malloc,
                libmimalloc_sys::mi_malloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe {
            allocate(
                layout,
                libmimalloc_sys::mi_zalloc,
                libmimalloc_sys::mi_zalloc_aligned,
            )
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { libmimalloc_sys::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the block
        // it returns keeps the layout's alignment at the new size.
        unsafe {
            if plain_is_aligned(layout.align(), new_size) {
                libmimalloc_sys::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                libmimalloc_sys::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align())
                    .cast()
            }
        }
    }
}

/// mimalloc v3's index of `mi_option_purge_delay` (the Rust bindings name
/// only v2's indices). [`configure`] checks the option's value before it
/// changes it, so a different mimalloc leaves the setting alone.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// v3's default purge delay, ms.
const PURGE_DELAY_DEFAULT_MS: std::ffi::c_long = 1_000;

/// The purge delay the engine runs with, ms.
pub const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// What [`configure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PurgeDelay {
    /// The delay is now [`PURGE_DELAY_MS`].
    Set,
    /// `MIMALLOC_PURGE_DELAY` is set in the environment: the operator's value stays.
    FromEnvironment,
    /// The option at [`PURGE_DELAY`] does not hold v3's default purge delay
    /// (another mimalloc): nothing changed.
    Unrecognised(std::ffi::c_long),
}

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], unless the operator set
/// `MIMALLOC_PURGE_DELAY` or the linked mimalloc is not the expected v3.
/// Call it at the start of `main` (and of benchmarks that measure the engine);
/// it changes only when free memory goes back to the OS, never what is
/// allocated.
pub fn configure() -> PurgeDelay {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return PurgeDelay::FromEnvironment;
    }
    // SAFETY: reading and setting a mimalloc option takes plain integers.
    let current = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
    if current != PURGE_DELAY_DEFAULT_MS {
        return PurgeDelay::Unrecognised(current);
    }
    // SAFETY: as above.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    PurgeDelay::Set
}

/// What [`disable_huge_pages`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugePages {
    /// Transparent huge pages are off for this process (and the processes
    /// it starts, unless started through [`with_system_huge_pages`]).
    Disabled,
    /// `MIMALLOC_ALLOW_THP` is set in the environment: the operator's value
    /// stays (mimalloc applies it when it starts).
    FromEnvironment,
    /// `prctl(PR_SET_THP_DISABLE)` failed with this errno: nothing changed.
    Failed(i32),
}

/// Turns transparent huge pages off for this process, unless the operator
/// set `MIMALLOC_ALLOW_THP`. For batch jobs (`book`, the benchmarks): all
/// of their heap is fresh memory, and mimalloc asks for huge pages on its
/// arenas, so each first touch of a 2 MiB region has the kernel zero all of
/// it. On the 1M-line bench stream that faulted in 50-75 MB that was never
/// used and spent more in zeroing than the TLB saved
/// (`docs/decisions/2026-12-02-batch-jobs-without-huge-pages.md`). Not for
/// the long-running service, whose heap is faulted in once. Call it before
/// the job allocates its state; memory faulted in before keeps its pages.
pub fn disable_huge_pages() -> HugePages {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return HugePages::FromEnvironment;
    }
    // SAFETY: prctl with integer arguments only.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done == 0 {
        HugePages::Disabled
    } else {
        HugePages::Failed(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// Undoes [`disable_huge_pages`]: memory faulted in from now on may use
/// huge pages again (for a benchmark that runs a batch suite, then others).
pub fn enable_huge_pages() {
    // SAFETY: prctl with integer arguments only. It fails only on kernels
    // without the flag, where nothing was disabled.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
}

/// Starts `command`'s process with the system's huge-page setting rather
/// than this process's (which a child inherits): for peers a benchmark runs
/// beside the engine, so that they are measured as they run anywhere.
pub fn with_system_huge_pages(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls prctl, which is async-signal-safe, in
    // the child between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block [`EngineAlloc`] hands out, fresh, zeroed, grown or
    /// shrunk, is aligned as its layout asks, for every alignment up to 64
    /// and sizes from 1 byte to 1 MiB, with thousands of blocks of a size
    /// live at once (so full pages and fresh ones both serve them), and
    /// holds its bytes through a reallocation.
    #[test]
    fn every_block_is_aligned_as_its_layout_asks() {
        let mut sizes: Vec<usize> = (1..=160).collect();
        sizes.extend([
            200,
            240,
            320,
            1000,
            1024,
            1040,
            1344,
            4096,
            10_000,
            70_000,
            1 << 20,
        ]);
        for align in [1, 2, 4, 8, 16, 32, 64] {
            for &size in &sizes {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    panic!("layout {size} {align}");
                };
                let count = if size <= 1024 { 2_000 } else { 20 };
                let mut blocks = Vec::with_capacity(count);
                for i in 0..count {
                    // SAFETY: a layout of non-zero size; freed below with it.
                    let block = unsafe {
                        if i % 2 == 0 {
                            EngineAlloc.alloc(layout)
                        } else {
                            EngineAlloc.alloc_zeroed(layout)
                        }
                    };
                    assert!(!block.is_null(), "{size} {align}");
                    assert_eq!(block as usize % align, 0, "{size} {align}");
                    if i % 2 == 1 {
                        // SAFETY: `size` bytes were just allocated zeroed.
                        let bytes = unsafe { std::slice::from_raw_parts(block, size) };
                        assert!(bytes.iter().all(|b| *b == 0), "{size} {align} zeroed");
                    }
                    // SAFETY: the block holds `size` bytes.
                    unsafe { block.write_bytes(0xA5, size) };
                    blocks.push(block);
                }
                for (i, block) in blocks.into_iter().enumerate() {
                    // Half grow (by half and an alignment), a quarter shrink
                    // (to half, at least a byte: `shrink_to_fit`'s call),
                    // a quarter go.
                    if i % 4 != 3 {
                        let resized = if i % 2 == 0 {
                            size + size / 2 + align
                        } else {
                            (size / 2).max(1)
                        };
                        // SAFETY: `block` came from `layout`; `resized` is non-zero.
                        let moved = unsafe { EngineAlloc.realloc(block, layout, resized) };
                        assert!(!moved.is_null());
                        assert_eq!(moved as usize % align, 0, "{size} -> {resized} {align}");
                        // SAFETY: the first `size.min(resized)` bytes were kept.
                        let kept = unsafe { std::slice::from_raw_parts(moved, size.min(resized)) };
                        assert!(kept.iter().all(|b| *b == 0xA5), "{size} {align} kept");
                        let Ok(resized_layout) = Layout::from_size_align(resized, align) else {
                            panic!("layout {resized} {align}");
                        };
                        // SAFETY: `moved` holds `resized_layout`.
                        unsafe { EngineAlloc.dealloc(moved, resized_layout) };
                    } else {
                        // SAFETY: `block` came from `layout`.
                        unsafe { EngineAlloc.dealloc(block, layout) };
                    }
                }
            }
        }
    }

    /// Whether transparent huge pages are off for this process.
    fn huge_pages_disabled() -> bool {
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) == 1 }
    }

    /// The `THP_enabled` flag of a `cat /proc/self/status` started by `command`.
    fn child_thp_enabled(command: &mut std::process::Command) -> String {
        let output = command.output().unwrap_or_else(|e| panic!("cat: {e}"));
        let status = String::from_utf8_lossy(&output.stdout);
        let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
        line.unwrap_or_else(|| panic!("no THP_enabled in {status}"))
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// Runs the test `name` of this test binary again in a child process
    /// whose environment `set_up` adjusts, and asserts that it passed.
    fn rerun_in_child(name: &str, set_up: impl FnOnce(&mut std::process::Command)) {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap_or_default());
        command.args(["--exact", name, "--test-threads=1"]);
        set_up(&mut command);
        let child = match command.output() {
            Ok(child) => child,
            Err(e) => panic!("could not run the test binary again: {e}"),
        };
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "the child failed: {stdout}"
        );
    }

    #[test]
    fn disabled_huge_pages_hold_for_this_process_and_plain_children_not_peers() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            // The operator's choice is left alone; the rest is checked in
            // a copy of this test started without it.
            assert_eq!(disable_huge_pages(), HugePages::FromEnvironment);
            rerun_in_child(
                "allocator::tests::disabled_huge_pages_hold_for_this_process_and_plain_children_not_peers",
                |child| {
                    child.env_remove("MIMALLOC_ALLOW_THP");
                },
            );
            return;
        }
        let cat = || {
            let mut cat = std::process::Command::new("cat");
            cat.arg("/proc/self/status");
            cat
        };
        assert_eq!(disable_huge_pages(), HugePages::Disabled);
        assert!(huge_pages_disabled());
        assert_eq!(
            child_thp_enabled(&mut cat()),
            "0",
            "a child inherits the setting"
        );
        let mut peer = cat();
        assert_eq!(child_thp_enabled(with_system_huge_pages(&mut peer)), "1");
        assert!(huge_pages_disabled(), "the parent keeps its setting");
        enable_huge_pages();
        assert!(!huge_pages_disabled());
        assert_eq!(child_thp_enabled(&mut cat()), "1");
    }

    /// Set by the test below in the copy of the test binary it runs.
    const CHILD: &str = "DELTABOOK_ALLOCATOR_TEST_CHILD";
    const CHILD_DELAY_MS: std::ffi::c_long = 1_234;

    #[test]
    fn the_purge_delay_is_set_where_mimalloc_keeps_it() {
        // SAFETY: reading an option.
        let read = || unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        if std::env::var_os(CHILD).is_some() {
            // The copy started below: mimalloc read MIMALLOC_PURGE_DELAY
            // into the option at PURGE_DELAY, and configure leaves it.
            assert_eq!(read(), CHILD_DELAY_MS);
            assert_eq!(configure(), PurgeDelay::FromEnvironment);
            assert_eq!(read(), CHILD_DELAY_MS);
            return;
        }
        // PURGE_DELAY is the option mimalloc fills from MIMALLOC_PURGE_DELAY:
        // this test again, in a process started with it set.
        let name = "allocator::tests::the_purge_delay_is_set_where_mimalloc_keeps_it";
        rerun_in_child(name, |child| {
            child
                .env(CHILD, "1")
                .env("MIMALLOC_PURGE_DELAY", CHILD_DELAY_MS.to_string());
        });
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            // The operator's value is left alone; the default is checked
            // in a copy of this test started without it.
            assert_eq!(configure(), PurgeDelay::FromEnvironment);
            rerun_in_child(name, |child| {
                child.env_remove("MIMALLOC_PURGE_DELAY");
            });
            return;
        }
        assert_eq!(configure(), PurgeDelay::Set);
        assert_eq!(read(), PURGE_DELAY_MS);
    }
}
