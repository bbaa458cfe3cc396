//! Exponential backoff with jitter.

use std::time::Duration;

use crate::config::RetryConfig;

/// Backoff state for one operation.
pub struct Backoff {
    next_ms: u64,
    max_ms: u64,
    /// Attempts made so far.
    pub attempts: u32,
    seed: u64,
}

impl Backoff {
    /// Starts at `initial_backoff_ms`.
    pub fn new(config: &RetryConfig) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(7);
        Backoff {
            next_ms: config.initial_backoff_ms.max(1),
            max_ms: config.max_backoff_ms.max(1),
            attempts: 0,
            seed,
        }
    }

    /// The next delay: the current step with +-50% jitter, then the step doubles (capped).
    pub fn next_delay(&mut self) -> Duration {
        self.attempts += 1;
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let jitter = self.seed % (self.next_ms + 1);
        let delay = self.next_ms / 2 + jitter;
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
        Duration::from_millis(delay.min(self.max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_bounded() {
        let config = RetryConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            max_attempts: 5,
        };
        let mut b = Backoff::new(&config);
        for i in 0..10u32 {
            let step = (100u64 << i).min(1000);
            let d = b.next_delay().as_millis() as u64;
            assert!(
                d >= step / 2 && d <= (step * 3 / 2).min(1000),
                "attempt {i}: {d} ms for step {step} ms"
            );
        }
        assert_eq!(b.attempts, 10);
    }
}
