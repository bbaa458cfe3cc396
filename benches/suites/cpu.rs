//! The process's CPU time and page faults, read from `/proc/self/stat`,
//! so a run can be reported as the cores it used and the CPU it spent a
//! line: on two cores, `N` lines/s needs at most `2 / N` CPU-seconds a
//! line whatever the threads do, and this VM's wall time moves with
//! faults (kernel time) that its user time does not show.

use std::time::Instant;

use anyhow::{Context, Result};

/// Clock ticks per second of `/proc`'s times: `USER_HZ`, which Linux
/// fixes at 100 for user space on x86 and arm64 (proc(5), `sysconf(_SC_CLK_TCK)`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time and minor page faults of a process so far (every thread,
/// exited ones included). Times come in 10 ms ticks: a run of 1M lines
/// (over a second) reads to ~1%; a run of 0.1 s can show 1.08 cores on
/// one thread.
#[derive(Clone, Copy, Debug)]
pub struct CpuUse {
    /// User seconds.
    pub user_seconds: f64,
    /// System (kernel) seconds.
    pub system_seconds: f64,
    /// Minor page faults (first touches of memory, no I/O).
    pub minor_faults: u64,
}

impl CpuUse {
    /// This process's use so far.
    pub fn of_this_process() -> Result<CpuUse> {
        let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
        CpuUse::from_stat(&stat)
    }

    /// Parses a `/proc/<pid>/stat` line: the fields after the command
    /// name's closing parenthesis (the name may hold spaces), where
    /// `minflt` is field 10, `utime` 14 and `stime` 15 (proc(5), 1-based).
    pub fn from_stat(stat: &str) -> Result<CpuUse> {
        let after_name = stat
            .rfind(')')
            .and_then(|end| stat.get(end + 1..))
            .context("no command name in /proc/self/stat")?;
        // Field 3 (state) is the first after the name.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |number: usize| -> Result<u64> {
            fields
                .get(number - 3)
                .context("/proc/self/stat is short")?
                .parse::<u64>()
                .with_context(|| format!("field {number} of /proc/self/stat"))
        };
        Ok(CpuUse {
            minor_faults: field(10)?,
            user_seconds: field(14)? as f64 / TICKS_PER_SECOND,
            system_seconds: field(15)? as f64 / TICKS_PER_SECOND,
        })
    }

    /// What was used since `earlier`.
    pub fn since(self, earlier: CpuUse) -> CpuUse {
        CpuUse {
            user_seconds: self.user_seconds - earlier.user_seconds,
            system_seconds: self.system_seconds - earlier.system_seconds,
            minor_faults: self.minor_faults.saturating_sub(earlier.minor_faults),
        }
    }

    /// User plus system seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.user_seconds + self.system_seconds
    }
}

/// A run's wall clock and CPU, started together and read together.
pub struct RunClock {
    started: Instant,
    cpu: CpuUse,
}

impl RunClock {
    /// Starts measuring now.
    pub fn start() -> Result<RunClock> {
        let cpu = CpuUse::of_this_process()?;
        Ok(RunClock {
            started: Instant::now(),
            cpu,
        })
    }

    /// Wall seconds and the process's CPU use since [`RunClock::start`].
    pub fn read(&self) -> Result<(f64, CpuUse)> {
        let seconds = self.started.elapsed().as_secs_f64();
        Ok((seconds, CpuUse::of_this_process()?.since(self.cpu)))
    }
}
