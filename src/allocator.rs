//! The allocator's settings for the engine: [`configure`] (every command),
//! and [`disable_huge_pages`] for batch jobs.
//!
//! mimalloc returns memory that stayed free for its purge delay to the
//! operating system (v3's default: 1 s). The engine frees and allocates its
//! per-timestamp buffers (stage outputs, batches, arrangement merges) every
//! few tens of milliseconds, some of them megabytes; with the default, a
//! run of `book` over 1M lines took 13,000-27,000 page faults whose fresh
//! pages the kernel zeroed (15% of the profile), against ~750 with a 10 s
//! delay, for ~5% more peak RSS. Memory that stays free for 10 s is still
//! returned (`docs/decisions/2026-11-30-allocator-purge-delay.md`).

#![allow(unsafe_code)] // calls into mimalloc's C API and prctl(2), no pointers involved

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
