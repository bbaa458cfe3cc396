//! The allocator's settings for the engine: [`configure`].
//!
//! mimalloc returns memory that stayed free for its purge delay to the
//! operating system (v3's default: 1 s). The engine frees and allocates its
//! per-timestamp buffers (stage outputs, batches, arrangement merges) every
//! few tens of milliseconds, some of them megabytes; with the default, a
//! run of `book` over 1M lines took 13,000-27,000 page faults whose fresh
//! pages the kernel zeroed (15% of the profile), against ~750 with a 10 s
//! delay, for ~5% more peak RSS. Memory that stays free for 10 s is still
//! returned (`docs/decisions/2026-11-30-allocator-purge-delay.md`).

#![allow(unsafe_code)] // two calls into mimalloc's C API, no pointers involved

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

#[cfg(test)]
mod tests {
    use super::*;

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
        let child = std::process::Command::new(std::env::current_exe().unwrap_or_default())
            .args(["--exact", name, "--test-threads=1"])
            .env(CHILD, "1")
            .env("MIMALLOC_PURGE_DELAY", CHILD_DELAY_MS.to_string())
            .output();
        let child = match child {
            Ok(child) => child,
            Err(e) => panic!("could not run the test binary again: {e}"),
        };
        let stdout = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success() && stdout.contains("1 passed"),
            "the child failed: {stdout}"
        );
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            assert_eq!(configure(), PurgeDelay::FromEnvironment);
            return;
        }
        assert_eq!(configure(), PurgeDelay::Set);
        assert_eq!(read(), PURGE_DELAY_MS);
    }
}
