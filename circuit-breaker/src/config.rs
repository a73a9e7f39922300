//! Configuration: plain data, validated once by the builder.

use std::fmt;
use std::time::Duration;

/// Default failure-rate threshold, in percent.
pub const DEFAULT_FAILURE_RATE_THRESHOLD: f64 = 50.0;
/// Default slow-call-rate threshold, in percent (used only when slow-call detection is on).
pub const DEFAULT_SLOW_CALL_RATE_THRESHOLD: f64 = 100.0;
/// Default size of the count-based sliding window, in calls.
pub const DEFAULT_WINDOW_SIZE: u32 = 100;
/// Default minimum number of calls in the window before a rate is evaluated.
pub const DEFAULT_MINIMUM_NUMBER_OF_CALLS: u32 = 100;
/// Default time the breaker stays open before it lets probes through.
pub const DEFAULT_OPEN_DURATION: Duration = Duration::from_secs(30);
/// Default number of probe calls admitted in the half-open state.
pub const DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN: u32 = 10;
/// Default share of half-open probes that must succeed to close the breaker, in percent.
pub const DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD: f64 = 50.0;
/// Default longest time the breaker may stay half-open before it opens again.
pub const DEFAULT_MAX_HALF_OPEN_DURATION: Duration = Duration::from_secs(60);
/// Largest count-based window accepted, in calls.
pub const MAX_WINDOW_SIZE: u32 = 1 << 20;
/// Largest number of buckets a time-based window may have.
pub const MAX_TIME_BUCKETS: u32 = 3600;
/// Largest number of half-open probes accepted.
pub const MAX_PERMITTED_CALLS_IN_HALF_OPEN: u32 = 1 << 16;

/// How the breaker remembers recent calls.
///
/// # Example
/// ```
/// use meshwork_circuit_breaker::SlidingWindow;
/// use std::time::Duration;
///
/// // The last 50 calls.
/// let count = SlidingWindow::Count { size: 50 };
/// // The calls of the last minute, in 60 one-second buckets.
/// let time = SlidingWindow::Time { duration: Duration::from_secs(60), buckets: 60 };
/// // Trip after 5 failures in a row, whatever came before.
/// let consecutive = SlidingWindow::ConsecutiveFailures { threshold: 5 };
/// # let _ = (count, time, consecutive);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `size` calls, kept in a ring: each new call evicts the oldest, and the
    /// running counts are adjusted by the difference (O(1) per call).
    Count {
        /// Number of calls kept, in `1..=1_048_576`.
        size: u32,
    },
    /// The calls of the last `duration`, aggregated in `buckets` equal buckets; the oldest
    /// bucket expires as time moves on (O(1) per call whatever the call rate).
    Time {
        /// Length of the window; at least one millisecond per bucket.
        duration: Duration,
        /// Number of buckets, in `1..=3600`.
        buckets: u32,
    },
    /// Trip after `threshold` failures in a row; a success resets the count.
    ConsecutiveFailures {
        /// Failures in a row that open the breaker, at least 1.
        threshold: u32,
    },
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count {
            size: DEFAULT_WINDOW_SIZE,
        }
    }
}

/// How long the breaker stays open, and how that grows when it keeps failing.
///
/// The open duration is `base * multiplier^(n-1)` for the n-th opening in a row (an opening
/// right after a failed half-open trial), capped at `max`, then spread by `jitter`: a factor
/// of `1 ± jitter` drawn at random, so a fleet of instances does not probe in step.
///
/// # Example
/// ```
/// use meshwork_circuit_breaker::OpenBackoff;
/// use std::time::Duration;
///
/// let backoff = OpenBackoff::exponential(Duration::from_secs(5), 2.0, Duration::from_secs(120))
///     .with_jitter(0.2);
/// assert_eq!(backoff.base(), Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenBackoff {
    base: Duration,
    multiplier: f64,
    max: Duration,
    jitter: f64,
}

impl OpenBackoff {
    /// The same open duration every time.
    pub fn fixed(duration: Duration) -> Self {
        OpenBackoff {
            base: duration,
            multiplier: 1.0,
            max: duration,
            jitter: 0.0,
        }
    }

    /// An open duration that grows by `multiplier` for every opening in a row, up to `max`.
    pub fn exponential(base: Duration, multiplier: f64, max: Duration) -> Self {
        OpenBackoff {
            base,
            multiplier,
            max,
            jitter: 0.0,
        }
    }

    /// Spread each open duration by a random factor in `[1 - jitter, 1 + jitter]`;
    /// `jitter` is in `[0, 1)`, default 0.
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first open duration.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The growth factor per opening in a row.
    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }

    /// The cap on the open duration (before jitter).
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The open duration for the `opens_in_row`-th opening in a row (1-based), before jitter.
    pub(crate) fn duration_for(&self, opens_in_row: u32) -> Duration {
        let exp = opens_in_row.saturating_sub(1).min(64) as i32;
        let secs = self.base.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// Applies jitter: `d * (1 + jitter * u)` with `u` uniform in `[-1, 1)`.
    pub(crate) fn jittered(&self, d: Duration, rng: &mut fastrand::Rng) -> Duration {
        if self.jitter == 0.0 {
            return d;
        }
        let u = rng.f64() * 2.0 - 1.0;
        d.mul_f64(1.0 + self.jitter * u)
    }
}

impl Default for OpenBackoff {
    fn default() -> Self {
        OpenBackoff::fixed(DEFAULT_OPEN_DURATION)
    }
}

/// A configuration value out of its valid range; the message names the field, the value and
/// what is accepted.
///
/// # Example
/// ```
/// use meshwork_circuit_breaker::CircuitBreakerConfig;
///
/// let err = CircuitBreakerConfig::builder().failure_rate_threshold(120.0).build().unwrap_err();
/// assert_eq!(err.field(), "failure_rate_threshold");
/// assert_eq!(err.to_string(), "failure_rate_threshold must be in (0, 100], got 120");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {expected}, got {value}")]
pub struct ConfigError {
    field: &'static str,
    value: String,
    expected: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        field: &'static str,
        value: impl fmt::Display,
        expected: &'static str,
    ) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            expected,
        }
    }

    /// The name of the offending field, as spelled by its builder setter.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, formatted.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field accepts.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

/// Everything that shapes one circuit breaker. Build it with [`CircuitBreakerConfig::builder`],
/// which validates every field, or start from [`CircuitBreakerConfig::default`] or a preset.
///
/// # Example
/// ```
/// use meshwork_circuit_breaker::{CircuitBreakerConfig, SlidingWindow};
/// use std::time::Duration;
///
/// let config = CircuitBreakerConfig::builder()
///     .sliding_window(SlidingWindow::Count { size: 20 })
///     .minimum_number_of_calls(10)
///     .failure_rate_threshold(50.0)
///     .slow_call_duration_threshold(Duration::from_secs(2))
///     .open_duration(Duration::from_secs(10))
///     .build()?;
/// assert_eq!(config.minimum_number_of_calls, 10);
/// # Ok::<(), meshwork_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::serde_config::RawConfig"))]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// How recent calls are remembered.
    pub sliding_window: SlidingWindow,
    /// Failure rate (percent) at or above which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Absolute number of failures in the window that opens the breaker, whatever the rate
    /// ("5 failures per minute" with a one-minute time window); `None` turns it off.
    pub failure_count_threshold: Option<u32>,
    /// Calls that must be in the window before a rate is evaluated.
    pub minimum_number_of_calls: u32,
    /// Calls that take at least this long count as slow; `None` turns slow-call detection off
    /// (and with it the clock reads it needs).
    pub slow_call_duration_threshold: Option<Duration>,
    /// Slow-call rate (percent) at or above which the breaker opens.
    pub slow_call_rate_threshold: f64,
    /// How long the breaker stays open before probing, and how that grows.
    pub open_backoff: OpenBackoff,
    /// Probe calls admitted while half-open; exactly this many, however many callers race.
    pub permitted_calls_in_half_open: u32,
    /// Share (percent) of the probes that must succeed to close the breaker.
    pub half_open_success_threshold: f64,
    /// Longest time the breaker may stay half-open (hung probes); then it opens again.
    /// `None` waits for the probes however long they take.
    pub max_half_open_duration: Option<Duration>,
    /// Seed for the jitter's random numbers; `None` seeds from the system.
    pub rng_seed: Option<u64>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            sliding_window: SlidingWindow::default(),
            failure_rate_threshold: DEFAULT_FAILURE_RATE_THRESHOLD,
            failure_count_threshold: None,
            minimum_number_of_calls: DEFAULT_MINIMUM_NUMBER_OF_CALLS,
            slow_call_duration_threshold: None,
            slow_call_rate_threshold: DEFAULT_SLOW_CALL_RATE_THRESHOLD,
            open_backoff: OpenBackoff::default(),
            permitted_calls_in_half_open: DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN,
            half_open_success_threshold: DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD,
            max_half_open_duration: Some(DEFAULT_MAX_HALF_OPEN_DURATION),
            rng_seed: None,
        }
    }
}

impl CircuitBreakerConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> CircuitBreakerConfigBuilder {
        CircuitBreakerConfigBuilder {
            config: CircuitBreakerConfig::default(),
        }
    }

    /// A preset for calls to an HTTP upstream: the last 20 calls, evaluated from 10, opens at
    /// 50% failures or 80% of calls slower than 5 s, stays open 5 s doubling up to 2 min with
    /// 20% jitter, and closes after 3 of 5 probes succeed.
    ///
    /// ```
    /// let config = meshwork_circuit_breaker::CircuitBreakerConfig::for_http();
    /// assert_eq!(config.permitted_calls_in_half_open, 5);
    /// ```
    pub fn for_http() -> Self {
        CircuitBreakerConfig {
            sliding_window: SlidingWindow::Count { size: 20 },
            minimum_number_of_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_duration_threshold: Some(Duration::from_secs(5)),
            slow_call_rate_threshold: 80.0,
            open_backoff: OpenBackoff::exponential(
                Duration::from_secs(5),
                2.0,
                Duration::from_secs(120),
            )
            .with_jitter(0.2),
            permitted_calls_in_half_open: 5,
            half_open_success_threshold: 60.0,
            ..CircuitBreakerConfig::default()
        }
    }

    /// Checks every field; [`CircuitBreakerConfigBuilder::build`] calls this.
    ///
    /// ```
    /// let mut config = meshwork_circuit_breaker::CircuitBreakerConfig::default();
    /// config.permitted_calls_in_half_open = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        percent(
            "half_open_success_threshold",
            self.half_open_success_threshold,
        )?;
        if self.minimum_number_of_calls == 0 {
            return Err(ConfigError::new("minimum_number_of_calls", 0, "at least 1"));
        }
        if self.failure_count_threshold == Some(0) {
            return Err(ConfigError::new(
                "failure_count_threshold",
                0,
                "at least 1 (or None to turn it off)",
            ));
        }
        match self.sliding_window {
            SlidingWindow::Count { size } => {
                if size == 0 || size > MAX_WINDOW_SIZE {
                    return Err(ConfigError::new(
                        "sliding_window.size",
                        size,
                        "in 1..=1048576",
                    ));
                }
                if self.minimum_number_of_calls > size {
                    return Err(ConfigError::new(
                        "minimum_number_of_calls",
                        self.minimum_number_of_calls,
                        "at most the count window's size (a larger minimum is never reached)",
                    ));
                }
                if self.failure_count_threshold.is_some_and(|t| t > size) {
                    return Err(ConfigError::new(
                        "failure_count_threshold",
                        self.failure_count_threshold.unwrap_or_default(),
                        "at most the count window's size (a larger count is never reached)",
                    ));
                }
            }
            SlidingWindow::Time { duration, buckets } => {
                if buckets == 0 || buckets > MAX_TIME_BUCKETS {
                    return Err(ConfigError::new(
                        "sliding_window.buckets",
                        buckets,
                        "in 1..=3600",
                    ));
                }
                if duration < Duration::from_millis(u64::from(buckets)) {
                    return Err(ConfigError::new(
                        "sliding_window.duration",
                        format!("{duration:?}"),
                        "at least one millisecond per bucket",
                    ));
                }
            }
            SlidingWindow::ConsecutiveFailures { threshold } => {
                if threshold == 0 {
                    return Err(ConfigError::new(
                        "sliding_window.threshold",
                        0,
                        "at least 1",
                    ));
                }
                if self.slow_call_duration_threshold.is_some() {
                    return Err(ConfigError::new(
                        "slow_call_duration_threshold",
                        format!("{:?}", self.slow_call_duration_threshold),
                        "None with a consecutive-failures window (slow-call rates need a count or time window)",
                    ));
                }
                if self.failure_count_threshold.is_some() {
                    return Err(ConfigError::new(
                        "failure_count_threshold",
                        format!("{:?}", self.failure_count_threshold),
                        "None with a consecutive-failures window (use its threshold)",
                    ));
                }
            }
        }
        if self.slow_call_duration_threshold == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "slow_call_duration_threshold",
                "0s",
                "greater than zero (or None to turn slow-call detection off)",
            ));
        }
        let b = &self.open_backoff;
        if b.base.is_zero() {
            return Err(ConfigError::new("open_duration", "0s", "greater than zero"));
        }
        if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "open_backoff.multiplier",
                b.multiplier,
                "a finite number >= 1",
            ));
        }
        if b.max < b.base {
            return Err(ConfigError::new(
                "open_backoff.max",
                format!("{:?}", b.max),
                "at least the base open duration",
            ));
        }
        if !(b.jitter.is_finite() && (0.0..1.0).contains(&b.jitter)) {
            return Err(ConfigError::new(
                "open_backoff.jitter",
                b.jitter,
                "in [0, 1)",
            ));
        }
        if self.permitted_calls_in_half_open == 0
            || self.permitted_calls_in_half_open > MAX_PERMITTED_CALLS_IN_HALF_OPEN
        {
            return Err(ConfigError::new(
                "permitted_calls_in_half_open",
                self.permitted_calls_in_half_open,
                "in 1..=65536",
            ));
        }
        if self.max_half_open_duration == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "max_half_open_duration",
                "0s",
                "greater than zero (or None to wait for the probes)",
            ));
        }
        Ok(())
    }

    /// Probes that must succeed to close: `ceil(permitted * success_threshold / 100)`, at
    /// least 1.
    pub(crate) fn successes_to_close(&self) -> u32 {
        let n =
            f64::from(self.permitted_calls_in_half_open) * self.half_open_success_threshold / 100.0;
        (n.ceil() as u32).clamp(1, self.permitted_calls_in_half_open)
    }
}

fn percent(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, value, "in (0, 100]"))
    }
}

/// Builds a validated [`CircuitBreakerConfig`]; see each setter for its default and range.
///
/// ```
/// use meshwork_circuit_breaker::CircuitBreakerConfig;
///
/// let err = CircuitBreakerConfig::builder().minimum_number_of_calls(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "minimum_number_of_calls must be at least 1, got 0");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct CircuitBreakerConfigBuilder {
    config: CircuitBreakerConfig,
}

impl CircuitBreakerConfigBuilder {
    /// How recent calls are remembered. Default: the last 100 calls.
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.config.sliding_window = window;
        self
    }

    /// Failure rate, in percent, at or above which the breaker opens. Default 50; range (0, 100].
    pub fn failure_rate_threshold(mut self, percent: f64) -> Self {
        self.config.failure_rate_threshold = percent;
        self
    }

    /// Open when the window holds this many failures, whatever the rate. Default off; at least
    /// 1, and at most the size of a count window.
    pub fn failure_count_threshold(mut self, failures: u32) -> Self {
        self.config.failure_count_threshold = Some(failures);
        self
    }

    /// Calls the window must hold before rates are evaluated. Default 100; at least 1 and at
    /// most the size of a count window.
    pub fn minimum_number_of_calls(mut self, calls: u32) -> Self {
        self.config.minimum_number_of_calls = calls;
        self
    }

    /// Calls at least this long count as slow. Default off; greater than zero.
    pub fn slow_call_duration_threshold(mut self, duration: Duration) -> Self {
        self.config.slow_call_duration_threshold = Some(duration);
        self
    }

    /// Slow-call rate, in percent, at or above which the breaker opens. Default 100; range
    /// (0, 100]. Needs [`slow_call_duration_threshold`](Self::slow_call_duration_threshold).
    pub fn slow_call_rate_threshold(mut self, percent: f64) -> Self {
        self.config.slow_call_rate_threshold = percent;
        self
    }

    /// A fixed open duration. Default 30 s; greater than zero.
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.config.open_backoff = OpenBackoff::fixed(duration);
        self
    }

    /// An open duration that grows (and jitters); see [`OpenBackoff`]. Default: fixed 30 s.
    pub fn open_backoff(mut self, backoff: OpenBackoff) -> Self {
        self.config.open_backoff = backoff;
        self
    }

    /// Probes admitted while half-open. Default 10; range 1..=65536.
    pub fn permitted_calls_in_half_open(mut self, calls: u32) -> Self {
        self.config.permitted_calls_in_half_open = calls;
        self
    }

    /// Share of probes, in percent, that must succeed to close. Default 50; range (0, 100].
    pub fn half_open_success_threshold(mut self, percent: f64) -> Self {
        self.config.half_open_success_threshold = percent;
        self
    }

    /// Longest time half-open before opening again; `None` waits for the probes. Default
    /// 60 s; greater than zero.
    pub fn max_half_open_duration(mut self, duration: Option<Duration>) -> Self {
        self.config.max_half_open_duration = duration;
        self
    }

    /// Seed for the jitter, for reproducible tests. Default: seeded from the system.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.rng_seed = Some(seed);
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<CircuitBreakerConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(b: CircuitBreakerConfigBuilder) -> &'static str {
        b.build().expect_err("config should be rejected").field()
    }

    #[test]
    fn defaults_are_valid_and_documented() {
        let c = CircuitBreakerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.sliding_window, SlidingWindow::Count { size: 100 });
        assert_eq!(c.open_backoff.base(), DEFAULT_OPEN_DURATION);
        CircuitBreakerConfig::for_http().validate().unwrap();
    }

    #[test]
    fn every_invalid_field_is_named() {
        let b = CircuitBreakerConfig::builder;
        assert_eq!(
            field_of(b().failure_rate_threshold(0.0)),
            "failure_rate_threshold"
        );
        assert_eq!(
            field_of(b().failure_rate_threshold(f64::NAN)),
            "failure_rate_threshold"
        );
        assert_eq!(
            field_of(b().slow_call_rate_threshold(101.0)),
            "slow_call_rate_threshold"
        );
        assert_eq!(
            field_of(b().half_open_success_threshold(-1.0)),
            "half_open_success_threshold"
        );
        assert_eq!(
            field_of(b().minimum_number_of_calls(0)),
            "minimum_number_of_calls"
        );
        assert_eq!(
            field_of(b().minimum_number_of_calls(101)),
            "minimum_number_of_calls"
        );
        assert_eq!(
            field_of(b().failure_count_threshold(0)),
            "failure_count_threshold"
        );
        assert_eq!(
            field_of(b().failure_count_threshold(101)),
            "failure_count_threshold"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Count { size: 0 })),
            "sliding_window.size"
        );
        assert_eq!(
            field_of(b().sliding_window(SlidingWindow::Count {
                size: MAX_WINDOW_SIZE + 1
            })),
            "sliding_window.size"
        );
        let time = |duration, buckets| SlidingWindow::Time { duration, buckets };
        assert_eq!(
            field_of(b().sliding_window(time(Duration::from_secs(1), 0))),
            "sliding_window.buckets"
        );
        assert_eq!(
            field_of(b().sliding_window(time(Duration::from_millis(5), 10))),
            "sliding_window.duration"
        );
        let consecutive = |threshold| SlidingWindow::ConsecutiveFailures { threshold };
        assert_eq!(
            field_of(b().sliding_window(consecutive(0))),
            "sliding_window.threshold"
        );
        assert_eq!(
            field_of(
                b().sliding_window(consecutive(3))
                    .slow_call_duration_threshold(Duration::from_secs(1))
            ),
            "slow_call_duration_threshold"
        );
        assert_eq!(
            field_of(b().slow_call_duration_threshold(Duration::ZERO)),
            "slow_call_duration_threshold"
        );
        assert_eq!(field_of(b().open_duration(Duration::ZERO)), "open_duration");
        let d = Duration::from_secs(1);
        assert_eq!(
            field_of(b().open_backoff(OpenBackoff::exponential(d, 0.5, d))),
            "open_backoff.multiplier"
        );
        assert_eq!(
            field_of(b().open_backoff(OpenBackoff::exponential(d * 2, 2.0, d))),
            "open_backoff.max"
        );
        assert_eq!(
            field_of(b().open_backoff(OpenBackoff::fixed(d).with_jitter(1.0))),
            "open_backoff.jitter"
        );
        assert_eq!(
            field_of(b().permitted_calls_in_half_open(0)),
            "permitted_calls_in_half_open"
        );
        assert_eq!(
            field_of(b().max_half_open_duration(Some(Duration::ZERO))),
            "max_half_open_duration"
        );
    }

    #[test]
    fn error_message_names_field_value_and_range() {
        let err = CircuitBreakerConfig::builder()
            .permitted_calls_in_half_open(0)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "permitted_calls_in_half_open must be in 1..=65536, got 0"
        );
        assert_eq!(err.value(), "0");
        assert_eq!(err.expected(), "in 1..=65536");
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = OpenBackoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(10));
        assert_eq!(b.duration_for(1), Duration::from_secs(1));
        assert_eq!(b.duration_for(2), Duration::from_secs(2));
        assert_eq!(b.duration_for(4), Duration::from_secs(8));
        assert_eq!(b.duration_for(5), Duration::from_secs(10));
        assert_eq!(b.duration_for(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let b = OpenBackoff::fixed(Duration::from_secs(10)).with_jitter(0.25);
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..10_000 {
            let d = b.jittered(Duration::from_secs(10), &mut rng);
            assert!(d >= Duration::from_millis(7500) && d <= Duration::from_millis(12500));
        }
    }

    #[test]
    fn successes_to_close_rounds_up() {
        let c = CircuitBreakerConfig::builder()
            .permitted_calls_in_half_open(3)
            .half_open_success_threshold(50.0)
            .build()
            .unwrap();
        assert_eq!(c.successes_to_close(), 2);
        let c = CircuitBreakerConfig::builder()
            .permitted_calls_in_half_open(4)
            .half_open_success_threshold(100.0)
            .build()
            .unwrap();
        assert_eq!(c.successes_to_close(), 4);
    }
}
