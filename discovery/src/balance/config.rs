use std::time::Duration;

use crate::ConfigError;

/// Default decay time of the peak-EWMA latency estimate.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
/// Default latency assumed for an endpoint that has not answered yet.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// Default latency charged for a failed call (so a fast 503 doesn't look fast).
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Default number of consecutive failures that ejects an endpoint.
pub const DEFAULT_EJECT_AFTER: u32 = 5;
/// Default first ejection time (the n-th ejection in a row lasts n times this, up to 10x).
pub const DEFAULT_BASE_EJECTION_TIME: Duration = Duration::from_secs(30);
/// Default largest share of endpoints ejected at once, in percent.
pub const DEFAULT_MAX_EJECTION_PERCENT: f64 = 50.0;
/// Default panic threshold: below this share of usable endpoints, in percent, every
/// endpoint is used.
pub const DEFAULT_PANIC_THRESHOLD: f64 = 50.0;

/// How the balancer scores and ejects endpoints.
///
/// ```
/// use meshwork_discovery::balance::BalanceConfig;
/// use std::time::Duration;
///
/// let config = BalanceConfig::builder()
///     .decay(Duration::from_secs(5))
///     .failure_penalty(Duration::from_millis(500))
///     .eject_after(3)
///     .panic_threshold(30.0)
///     .build()?;
/// assert_eq!(config.eject_after, 3);
/// let err = BalanceConfig::builder().panic_threshold(120.0).build().unwrap_err();
/// assert_eq!(err.to_string(), "panic_threshold must be in [0, 100], got 120");
/// # Ok::<(), meshwork_discovery::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BalanceConfig {
    /// Time constant of the latency estimate's decay (older samples weigh `e^(-age/decay)`).
    pub decay: Duration,
    /// Latency assumed for a new endpoint.
    pub default_rtt: Duration,
    /// Latency recorded for a failed call when it was faster than this.
    pub failure_penalty: Duration,
    /// Consecutive failures that eject an endpoint; 0 turns ejection off.
    pub eject_after: u32,
    /// First ejection time; the n-th ejection in a row lasts `n` times this (at most 10x).
    pub base_ejection_time: Duration,
    /// Largest share of endpoints ejected at once, in percent.
    pub max_ejection_percent: f64,
    /// When the usable (not ejected, non-zero weight) share of endpoints falls below this
    /// percentage, the balancer ignores ejections and uses every endpoint.
    pub panic_threshold: f64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        BalanceConfig {
            decay: DEFAULT_DECAY,
            default_rtt: DEFAULT_RTT,
            failure_penalty: DEFAULT_FAILURE_PENALTY,
            eject_after: DEFAULT_EJECT_AFTER,
            base_ejection_time: DEFAULT_BASE_EJECTION_TIME,
            max_ejection_percent: DEFAULT_MAX_EJECTION_PERCENT,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
        }
    }
}

impl BalanceConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> BalanceConfigBuilder {
        BalanceConfigBuilder {
            config: BalanceConfig::default(),
        }
    }
}

/// Builder of a [`BalanceConfig`]; `build()` validates every field.
#[derive(Debug, Clone)]
#[must_use]
pub struct BalanceConfigBuilder {
    config: BalanceConfig,
}

impl BalanceConfigBuilder {
    /// Decay time of the latency estimate; default [`DEFAULT_DECAY`], at least 1 ms.
    pub fn decay(mut self, decay: Duration) -> Self {
        self.config.decay = decay;
        self
    }

    /// Latency assumed for new endpoints; default [`DEFAULT_RTT`], at least 1 µs.
    pub fn default_rtt(mut self, rtt: Duration) -> Self {
        self.config.default_rtt = rtt;
        self
    }

    /// Latency charged for a failure; default [`DEFAULT_FAILURE_PENALTY`].
    pub fn failure_penalty(mut self, penalty: Duration) -> Self {
        self.config.failure_penalty = penalty;
        self
    }

    /// Consecutive failures that eject an endpoint; default [`DEFAULT_EJECT_AFTER`], 0 = never.
    pub fn eject_after(mut self, failures: u32) -> Self {
        self.config.eject_after = failures;
        self
    }

    /// First ejection time; default [`DEFAULT_BASE_EJECTION_TIME`], at least 1 ms.
    pub fn base_ejection_time(mut self, time: Duration) -> Self {
        self.config.base_ejection_time = time;
        self
    }

    /// Largest share ejected at once; default [`DEFAULT_MAX_EJECTION_PERCENT`], in [0, 100].
    pub fn max_ejection_percent(mut self, percent: f64) -> Self {
        self.config.max_ejection_percent = percent;
        self
    }

    /// Panic threshold; default [`DEFAULT_PANIC_THRESHOLD`], in [0, 100].
    pub fn panic_threshold(mut self, percent: f64) -> Self {
        self.config.panic_threshold = percent;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<BalanceConfig, ConfigError> {
        let c = self.config;
        if c.decay < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "decay",
                format!("{:?}", c.decay),
                "at least 1ms",
            ));
        }
        if c.default_rtt < Duration::from_micros(1) {
            return Err(ConfigError::new(
                "default_rtt",
                format!("{:?}", c.default_rtt),
                "at least 1µs",
            ));
        }
        if c.base_ejection_time < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "base_ejection_time",
                format!("{:?}", c.base_ejection_time),
                "at least 1ms",
            ));
        }
        if !(0.0..=100.0).contains(&c.max_ejection_percent) {
            return Err(ConfigError::new(
                "max_ejection_percent",
                c.max_ejection_percent,
                "in [0, 100]",
            ));
        }
        if !(0.0..=100.0).contains(&c.panic_threshold) {
            return Err(ConfigError::new(
                "panic_threshold",
                c.panic_threshold,
                "in [0, 100]",
            ));
        }
        Ok(c)
    }
}
