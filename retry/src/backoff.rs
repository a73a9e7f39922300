//! Delay computation: backoff, cap, then jitter.

use std::time::Duration;

use crate::config::{Jitter, RetryConfig};

/// The jitter state of one call sequence: its random numbers and the previous delay (for
/// decorrelated jitter).
#[derive(Debug, Clone)]
pub(crate) struct DelayState {
    rng: fastrand::Rng,
    previous: Duration,
}

impl DelayState {
    pub(crate) fn new(rng: fastrand::Rng) -> Self {
        DelayState {
            rng,
            previous: Duration::ZERO,
        }
    }

    /// The delay before the `n`-th retry (1-based), always within `[0, max_delay]`.
    pub(crate) fn delay(&mut self, config: &RetryConfig, n: u32) -> Duration {
        let max = config.max_delay;
        let d = config.backoff.delay(n).min(max);
        let out = match config.jitter {
            Jitter::None => d,
            Jitter::Full => uniform(&mut self.rng, Duration::ZERO, d),
            Jitter::Equal => {
                let half = d / 2;
                half + uniform(&mut self.rng, Duration::ZERO, d - half)
            }
            Jitter::Decorrelated => {
                let base = config.backoff.delay(1).min(max);
                let previous = if self.previous.is_zero() {
                    base
                } else {
                    self.previous
                };
                let high = previous.saturating_mul(3).min(max).max(base);
                uniform(&mut self.rng, base, high)
            }
        };
        self.previous = out;
        out
    }
}

/// Uniform in `[low, high]` at nanosecond resolution (`low <= high`).
fn uniform(rng: &mut fastrand::Rng, low: Duration, high: Duration) -> Duration {
    let lo = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
    let hi = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX);
    if hi <= lo {
        return low;
    }
    Duration::from_nanos(rng.u64(lo..=hi))
}

pub(crate) fn seeded_rng(seed: Option<u64>) -> fastrand::Rng {
    match seed {
        Some(seed) => fastrand::Rng::with_seed(seed),
        None => fastrand::Rng::new(),
    }
}

/// The delays a [`RetryConfig`] produces for consecutive retries; see
/// [`RetryConfig::delays`]. An endless iterator: take what you need.
#[derive(Debug, Clone)]
pub struct Delays {
    config: RetryConfig,
    state: DelayState,
    n: u32,
}

impl Delays {
    pub(crate) fn new(config: RetryConfig) -> Self {
        // Forked like a policy's first call sequence, so both draw the same delays.
        let state = DelayState::new(seeded_rng(config.rng_seed).fork());
        Delays {
            config,
            state,
            n: 0,
        }
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.n = self.n.saturating_add(1);
        Some(self.state.delay(&self.config, self.n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backoff;

    fn config(backoff: Backoff, jitter: Jitter, max_ms: u64) -> RetryConfig {
        RetryConfig::builder()
            .backoff(backoff)
            .jitter(jitter)
            .max_delay(Duration::from_millis(max_ms))
            .rng_seed(7)
            .build()
            .unwrap()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_jitter_sequences_are_exact() {
        let take = |c: RetryConfig| c.delays().take(5).collect::<Vec<_>>();
        assert_eq!(
            take(config(Backoff::constant(ms(30)), Jitter::None, 1000)),
            [ms(30); 5]
        );
        assert_eq!(
            take(config(Backoff::linear(ms(10), ms(20)), Jitter::None, 60)),
            [ms(10), ms(30), ms(50), ms(60), ms(60)]
        );
        assert_eq!(
            take(config(
                Backoff::exponential(ms(10), 3.0),
                Jitter::None,
                1000
            )),
            [ms(10), ms(30), ms(90), ms(270), ms(810)]
        );
    }

    #[test]
    fn same_seed_same_delays_other_seed_other_delays() {
        let c = config(Backoff::exponential(ms(100), 2.0), Jitter::Full, 10_000);
        let a: Vec<_> = c.delays().take(6).collect();
        let b: Vec<_> = c.delays().take(6).collect();
        assert_eq!(a, b);
        let mut other = c.clone();
        other.rng_seed = Some(8);
        let d: Vec<_> = other.delays().take(6).collect();
        assert_ne!(a, d);
    }
}
