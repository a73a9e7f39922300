//! Configuration: plain data, validated once by the builder.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Default number of calls allowed in flight at once.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 25;
/// Default longest wait for a permit: zero, so a full bulkhead rejects at once.
pub const DEFAULT_MAX_WAIT: Duration = Duration::ZERO;
/// Default order in which waiting calls are served.
pub const DEFAULT_QUEUE_ORDER: QueueOrder = QueueOrder::Fifo;
/// Default cap on the number of calls waiting for a permit.
pub const DEFAULT_MAX_WAITERS: usize = 1024;
/// Largest concurrency limit accepted (also the largest adaptive bound and waiter cap).
pub const MAX_LIMIT: usize = 1 << 30;
/// Largest number of partitions a bulkhead may have.
pub const MAX_PARTITIONS: usize = 64;

/// Default lower bound of an adaptive limit.
pub const DEFAULT_MIN_LIMIT: usize = 1;
/// Default upper bound of an adaptive limit.
pub const DEFAULT_MAX_LIMIT: usize = 1000;
/// Default factor [`Aimd`] multiplies the limit by after a drop.
pub const DEFAULT_BACKOFF_RATIO: f64 = 0.9;
/// Default latency above which [`Aimd`] counts a call as a drop.
pub const DEFAULT_LATENCY_THRESHOLD: Duration = Duration::from_secs(5);
/// Default latency [`Gradient`] tolerates, as a multiple of the minimum RTT.
pub const DEFAULT_TOLERANCE: f64 = 1.5;
/// Default weight [`Gradient`] gives a new estimate against the current limit.
pub const DEFAULT_SMOOTHING: f64 = 0.2;
/// Default number of samples [`Gradient`] averages before each update.
pub const DEFAULT_SAMPLE_WINDOW: u32 = 20;
/// Default interval between minimum-RTT probes of [`Gradient`].
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(60);
/// Longest interval between minimum-RTT probes accepted (365 days).
pub const MAX_PROBE_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default jitter of the probe interval, as a fraction added at random (Envoy's 15%).
pub const DEFAULT_PROBE_JITTER: f64 = 0.15;
/// Default number of samples a minimum-RTT probe collects (Envoy's `request_count`).
pub const DEFAULT_PROBE_SAMPLES: u32 = 50;
/// Default concurrency a minimum-RTT probe pins the limit to (Envoy's `min_concurrency`).
pub const DEFAULT_PROBE_LIMIT: usize = 3;

/// The order in which calls waiting for a permit are served.
///
/// FIFO is fair. LIFO serves the newest waiter first: under overload the oldest waiters (whose
/// callers have likely given up) time out while fresh calls keep a low latency, the "LIFO
/// backlog" of Netflix concurrency-limits and Facebook's adaptive LIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum QueueOrder {
    /// First in, first out.
    #[default]
    Fifo,
    /// Last in, first out.
    Lifo,
}

/// A named share of a bulkhead's limit with a guaranteed minimum.
///
/// A partition with share `s` owns `floor(limit * s)` permits that no other partition may
/// take; the rest of the limit (what no partition owns) is a common pool any partition may
/// borrow from. So a flood in one partition can use all unused capacity but never another
/// partition's minimum.
///
/// ```
/// use meshwork_bulkhead::Partition;
///
/// let live = Partition::new("live", 0.9);
/// assert_eq!(live.name(), "live");
/// assert_eq!(live.share(), 0.9);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    name: Arc<str>,
    share: f64,
}

impl Partition {
    /// A partition named `name` guaranteed `share` of the limit, in `(0, 1]`; the shares of a
    /// bulkhead's partitions add up to at most 1.
    pub fn new(name: impl Into<Arc<str>>, share: f64) -> Self {
        Partition {
            name: name.into(),
            share,
        }
    }

    /// The partition's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_arc(&self) -> &Arc<str> {
        &self.name
    }

    /// The guaranteed share of the limit.
    pub fn share(&self) -> f64 {
        self.share
    }
}

/// Additive increase, multiplicative decrease (Netflix `AIMDLimit`, TCP Reno): each call
/// that succeeds while at least half the limit is in use raises the limit by one; a drop, or a
/// call slower than `latency_threshold`, multiplies it by `backoff_ratio`.
///
/// ```
/// use meshwork_bulkhead::{AdaptiveLimit, Aimd, BulkheadConfig};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::new(5, 200);
/// aimd.latency_threshold = Duration::from_millis(500);
/// let config = BulkheadConfig::builder()
///     .max_concurrent_calls(20) // the initial limit
///     .adaptive(AdaptiveLimit::Aimd(aimd))
///     .build()?;
/// # let _ = config;
/// # Ok::<(), meshwork_bulkhead::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Aimd {
    /// Lowest limit, at least 1; default [`DEFAULT_MIN_LIMIT`].
    pub min_limit: usize,
    /// Highest limit, in `min_limit..=MAX_LIMIT`; default [`DEFAULT_MAX_LIMIT`].
    pub max_limit: usize,
    /// Factor applied on a drop, in `[0.5, 1)`; default [`DEFAULT_BACKOFF_RATIO`].
    pub backoff_ratio: f64,
    /// A call slower than this counts as a drop; above zero; default
    /// [`DEFAULT_LATENCY_THRESHOLD`].
    pub latency_threshold: Duration,
}

impl Aimd {
    /// AIMD between `min_limit` and `max_limit`, other fields at their defaults.
    pub fn new(min_limit: usize, max_limit: usize) -> Self {
        Aimd {
            min_limit,
            max_limit,
            ..Aimd::default()
        }
    }
}

impl Default for Aimd {
    fn default() -> Self {
        Aimd {
            min_limit: DEFAULT_MIN_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            backoff_ratio: DEFAULT_BACKOFF_RATIO,
            latency_threshold: DEFAULT_LATENCY_THRESHOLD,
        }
    }
}

/// A latency-gradient limit: Netflix `Gradient2`'s update rule with the baseline measured the
/// way Envoy's adaptive concurrency filter does it.
///
/// Every `sample_window` calls, the mean latency of the window (`rtt`) is compared with the
/// minimum RTT: `gradient = clamp(tolerance * min_rtt / rtt, 0.5, 1)`, the new estimate is
/// `limit * gradient + sqrt(limit)` (headroom to grow), smoothed as
/// `limit * (1 - smoothing) + estimate * smoothing`, and bounded by `min_limit..=max_limit`.
/// The limit does not grow while less than half of it is used. A window that saw a drop
/// uses the lowest gradient, 0.5.
///
/// The minimum RTT is measured by a **probe**: the limit is pinned to `probe_limit` until
/// `probe_samples` calls that started during the probe complete, and their mean latency is
/// the new minimum RTT. The first probe runs at start; the next every `probe_interval`
/// plus a random `[0, probe_jitter)` fraction of it, so a fleet does not probe in step (a
/// seedable RNG keeps tests deterministic).
///
/// ```
/// use meshwork_bulkhead::{AdaptiveLimit, Bulkhead, BulkheadConfig, Gradient};
/// use std::time::Duration;
///
/// let mut gradient = Gradient::new(10, 500);
/// gradient.tolerance = 2.0; // tolerate twice the minimum RTT before falling
/// gradient.probe_interval = Duration::from_secs(30);
/// gradient.seed = Some(7);
/// let config = BulkheadConfig::builder()
///     .max_concurrent_calls(50) // the limit after the first probe
///     .adaptive(AdaptiveLimit::Gradient(gradient))
///     .build()?;
/// let bulkhead = Bulkhead::new("search", config);
/// assert_eq!(bulkhead.limit(), 10); // pinned to the probe limit while the first probe runs
/// # Ok::<(), meshwork_bulkhead::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Gradient {
    /// Lowest limit, at least 1; default [`DEFAULT_MIN_LIMIT`].
    pub min_limit: usize,
    /// Highest limit, in `min_limit..=MAX_LIMIT`; default [`DEFAULT_MAX_LIMIT`].
    pub max_limit: usize,
    /// Latency tolerated before the limit falls, as a multiple of the minimum RTT, in
    /// `[1, 100]`; default [`DEFAULT_TOLERANCE`].
    pub tolerance: f64,
    /// Weight of each new estimate, in `(0, 1]`; default [`DEFAULT_SMOOTHING`].
    pub smoothing: f64,
    /// Samples averaged per update, at least 1; default [`DEFAULT_SAMPLE_WINDOW`].
    pub sample_window: u32,
    /// Time between minimum-RTT probes, above zero and at most [`MAX_PROBE_INTERVAL`];
    /// default [`DEFAULT_PROBE_INTERVAL`].
    pub probe_interval: Duration,
    /// Random extra fraction of `probe_interval`, in `[0, 1]`; default
    /// [`DEFAULT_PROBE_JITTER`].
    pub probe_jitter: f64,
    /// Samples a probe collects, at least 1; default [`DEFAULT_PROBE_SAMPLES`].
    pub probe_samples: u32,
    /// Limit during a probe, in `min_limit..=max_limit`; default [`DEFAULT_PROBE_LIMIT`]
    /// (with [`Gradient::new`], brought within `min_limit..=max_limit`).
    pub probe_limit: usize,
    /// Seed of the jitter RNG; `None` seeds from the OS. Default `None`.
    pub seed: Option<u64>,
}

impl Gradient {
    /// A gradient limit between `min_limit` and `max_limit`, other fields at their defaults.
    pub fn new(min_limit: usize, max_limit: usize) -> Self {
        Gradient {
            min_limit,
            max_limit,
            // Not `clamp`: it panics when min_limit > max_limit, which `build` reports instead.
            probe_limit: DEFAULT_PROBE_LIMIT.max(min_limit).min(max_limit),
            ..Gradient::default()
        }
    }
}

impl Default for Gradient {
    fn default() -> Self {
        Gradient {
            min_limit: DEFAULT_MIN_LIMIT,
            max_limit: DEFAULT_MAX_LIMIT,
            tolerance: DEFAULT_TOLERANCE,
            smoothing: DEFAULT_SMOOTHING,
            sample_window: DEFAULT_SAMPLE_WINDOW,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            probe_jitter: DEFAULT_PROBE_JITTER,
            probe_samples: DEFAULT_PROBE_SAMPLES,
            probe_limit: DEFAULT_PROBE_LIMIT,
            seed: None,
        }
    }
}

/// An algorithm that moves the limit from observed latency and drops.
///
/// With one set, [`BulkheadConfig::max_concurrent_calls`] is the initial limit, and each
/// permit reads the clock when taken and when released (the only clock reads of the crate).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum AdaptiveLimit {
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
    /// Latency gradient against a probed minimum RTT.
    Gradient(Gradient),
}

impl AdaptiveLimit {
    pub(crate) fn bounds(&self) -> (usize, usize) {
        match self {
            AdaptiveLimit::Aimd(a) => (a.min_limit, a.max_limit),
            AdaptiveLimit::Gradient(g) => (g.min_limit, g.max_limit),
        }
    }
}

/// A configuration value out of its valid range; the message names the field, the value and
/// what is accepted.
///
/// ```
/// use meshwork_bulkhead::BulkheadConfig;
///
/// let err = BulkheadConfig::builder().max_concurrent_calls(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_concurrent_calls");
/// assert_eq!(err.to_string(), "max_concurrent_calls must be at least 1, got 0");
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

/// Everything that shapes one bulkhead. Build it with [`BulkheadConfig::builder`], which
/// validates every field, or start from [`BulkheadConfig::default`].
///
/// ```
/// use meshwork_bulkhead::{BulkheadConfig, QueueOrder};
/// use std::time::Duration;
///
/// let config = BulkheadConfig::builder()
///     .max_concurrent_calls(10)
///     .max_wait(Duration::from_millis(50))
///     .queue_order(QueueOrder::Lifo)
///     .max_waiters(100)
///     .build()?;
/// assert_eq!(config.max_concurrent_calls, 10);
/// # Ok::<(), meshwork_bulkhead::ConfigError>(())
/// ```
///
/// With the `serde` feature it deserializes through the same validation: durations are
/// strings like `"250ms"` or `"2m"`, unknown fields are errors, missing fields take their
/// defaults, and the adaptive limit is tagged by `type` (`"aimd"` or `"gradient"`).
///
#[cfg_attr(feature = "serde", doc = "```")]
#[cfg_attr(not(feature = "serde"), doc = "```ignore")]
/// use meshwork_bulkhead::{BulkheadConfig, QueueOrder};
/// use std::time::Duration;
///
/// let config: BulkheadConfig = serde_json::from_str(r#"{
///     "max_concurrent_calls": 50,
///     "max_wait": "20ms",
///     "queue_order": "lifo",
///     "partitions": [{ "name": "live", "share": 0.9 }, { "name": "batch", "share": 0.1 }],
///     "adaptive": { "type": "gradient", "min_limit": 10, "max_limit": 500 }
/// }"#)?;
/// assert_eq!(config.max_wait, Duration::from_millis(20));
/// assert_eq!(config.queue_order, QueueOrder::Lifo);
///
/// let err = serde_json::from_str::<BulkheadConfig>(r#"{ "max_wait": "1s", "max_waiters": 0 }"#)
///     .unwrap_err();
/// assert!(err.to_string().contains("max_waiters must be at least 1 when max_wait is set, got 0"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::serde_config::RawConfig"))]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls allowed in flight at once (the initial limit when adaptive).
    pub max_concurrent_calls: usize,
    /// Longest time [`acquire`](crate::Bulkhead::acquire) and
    /// [`call`](crate::Bulkhead::call) wait for a permit; zero rejects at once.
    pub max_wait: Duration,
    /// The order in which waiting calls are served.
    pub queue_order: QueueOrder,
    /// Most calls that may wait at once; one more is rejected without waiting.
    pub max_waiters: usize,
    /// Named shares of the limit with guaranteed minimums; empty for none.
    pub partitions: Vec<Partition>,
    /// An algorithm moving the limit, or `None` for a fixed limit.
    pub adaptive: Option<AdaptiveLimit>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        BulkheadConfig {
            max_concurrent_calls: DEFAULT_MAX_CONCURRENT_CALLS,
            max_wait: DEFAULT_MAX_WAIT,
            queue_order: DEFAULT_QUEUE_ORDER,
            max_waiters: DEFAULT_MAX_WAITERS,
            partitions: Vec::new(),
            adaptive: None,
        }
    }
}

impl BulkheadConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> BulkheadConfigBuilder {
        BulkheadConfigBuilder {
            config: BulkheadConfig::default(),
        }
    }

    /// Checks every field, as [`BulkheadConfigBuilder::build`] does; useful after changing a
    /// built config by hand.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_LIMIT).contains(&self.max_concurrent_calls) {
            let expected = if self.max_concurrent_calls == 0 {
                "at least 1"
            } else {
                "at most 1073741824"
            };
            return Err(ConfigError::new(
                "max_concurrent_calls",
                self.max_concurrent_calls,
                expected,
            ));
        }
        if self.max_waiters > MAX_LIMIT {
            return Err(ConfigError::new(
                "max_waiters",
                self.max_waiters,
                "at most 1073741824",
            ));
        }
        if !self.max_wait.is_zero() && self.max_waiters == 0 {
            return Err(ConfigError::new(
                "max_waiters",
                0,
                "at least 1 when max_wait is set",
            ));
        }
        validate_partitions(&self.partitions)?;
        if let Some(adaptive) = &self.adaptive {
            validate_adaptive(adaptive, self.max_concurrent_calls)?;
        }
        Ok(())
    }

    /// This config with every out-of-range field brought into range (used by
    /// [`Bulkhead::new`](crate::Bulkhead::new), which must not fail).
    pub(crate) fn sanitized(mut self) -> Self {
        self.max_concurrent_calls = self.max_concurrent_calls.clamp(1, MAX_LIMIT);
        self.max_waiters = self.max_waiters.min(MAX_LIMIT);
        if !self.max_wait.is_zero() && self.max_waiters == 0 {
            self.max_wait = Duration::ZERO;
        }
        if validate_partitions(&self.partitions).is_err() {
            self.partitions.clear();
        }
        if let Some(adaptive) = &self.adaptive
            && validate_adaptive(adaptive, self.max_concurrent_calls).is_err()
        {
            self.adaptive = None;
        }
        self
    }
}

fn validate_partitions(partitions: &[Partition]) -> Result<(), ConfigError> {
    if partitions.len() > MAX_PARTITIONS {
        return Err(ConfigError::new(
            "partitions",
            format!("{} partitions", partitions.len()),
            "at most 64 partitions",
        ));
    }
    let mut names = HashSet::new();
    let mut total = 0.0;
    for p in partitions {
        if !(p.share > 0.0 && p.share <= 1.0) {
            return Err(ConfigError::new(
                "partitions",
                format!("share {} for '{}'", p.share, p.name),
                "shares in (0, 1]",
            ));
        }
        if p.name.is_empty() || !names.insert(p.name.clone()) {
            return Err(ConfigError::new(
                "partitions",
                format!("name '{}'", p.name),
                "unique non-empty names",
            ));
        }
        total += p.share;
    }
    // A little slack for shares like 0.7 + 0.2 + 0.1 that do not add up exactly in binary.
    if total > 1.0 + 1e-9 {
        return Err(ConfigError::new(
            "partitions",
            format!("shares adding up to {total}"),
            "shares adding up to at most 1",
        ));
    }
    Ok(())
}

fn validate_adaptive(adaptive: &AdaptiveLimit, initial: usize) -> Result<(), ConfigError> {
    let (min, max) = adaptive.bounds();
    if min == 0 {
        return Err(ConfigError::new("min_limit", 0, "at least 1"));
    }
    if max < min || max > MAX_LIMIT {
        return Err(ConfigError::new(
            "max_limit",
            max,
            "in min_limit..=1073741824",
        ));
    }
    if !(min..=max).contains(&initial) {
        return Err(ConfigError::new(
            "max_concurrent_calls",
            initial,
            "within the adaptive bounds min_limit..=max_limit",
        ));
    }
    match adaptive {
        AdaptiveLimit::Aimd(a) => {
            if !(0.5..1.0).contains(&a.backoff_ratio) {
                return Err(ConfigError::new(
                    "backoff_ratio",
                    a.backoff_ratio,
                    "in [0.5, 1)",
                ));
            }
            if a.latency_threshold.is_zero() {
                return Err(ConfigError::new("latency_threshold", "0ns", "above zero"));
            }
        }
        AdaptiveLimit::Gradient(g) => {
            if !(1.0..=100.0).contains(&g.tolerance) {
                return Err(ConfigError::new("tolerance", g.tolerance, "in [1, 100]"));
            }
            if !(g.smoothing > 0.0 && g.smoothing <= 1.0) {
                return Err(ConfigError::new("smoothing", g.smoothing, "in (0, 1]"));
            }
            if g.sample_window == 0 {
                return Err(ConfigError::new("sample_window", 0, "at least 1"));
            }
            if g.probe_interval.is_zero() || g.probe_interval > MAX_PROBE_INTERVAL {
                return Err(ConfigError::new(
                    "probe_interval",
                    format!("{:?}", g.probe_interval),
                    "above zero and at most 365 days",
                ));
            }
            if !(0.0..=1.0).contains(&g.probe_jitter) {
                return Err(ConfigError::new(
                    "probe_jitter",
                    g.probe_jitter,
                    "in [0, 1]",
                ));
            }
            if g.probe_samples == 0 {
                return Err(ConfigError::new("probe_samples", 0, "at least 1"));
            }
            if !(min..=max).contains(&g.probe_limit) {
                return Err(ConfigError::new(
                    "probe_limit",
                    g.probe_limit,
                    "in min_limit..=max_limit",
                ));
            }
        }
    }
    Ok(())
}

/// A consuming builder for [`BulkheadConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
#[must_use]
pub struct BulkheadConfigBuilder {
    config: BulkheadConfig,
}

impl BulkheadConfigBuilder {
    /// Calls allowed in flight at once, in `1..=1_073_741_824`; default
    /// [`DEFAULT_MAX_CONCURRENT_CALLS`]. With an adaptive limit, the initial limit, within its
    /// bounds.
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.config.max_concurrent_calls = n;
        self
    }

    /// Longest wait for a permit, any duration; default [`DEFAULT_MAX_WAIT`] (zero: reject
    /// at once when full).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// Order in which waiters are served; default [`DEFAULT_QUEUE_ORDER`] (FIFO).
    pub fn queue_order(mut self, order: QueueOrder) -> Self {
        self.config.queue_order = order;
        self
    }

    /// Most calls waiting at once, in `0..=1_073_741_824` (at least 1 when `max_wait` is
    /// set); default [`DEFAULT_MAX_WAITERS`].
    pub fn max_waiters(mut self, n: usize) -> Self {
        self.config.max_waiters = n;
        self
    }

    /// Adds a partition; shares in `(0, 1]` adding up to at most 1, unique names, at most
    /// [`MAX_PARTITIONS`]; default none.
    pub fn partition(mut self, partition: Partition) -> Self {
        self.config.partitions.push(partition);
        self
    }

    /// An adaptive limit, whose bounds must contain `max_concurrent_calls`; default none
    /// (a fixed limit).
    pub fn adaptive(mut self, adaptive: AdaptiveLimit) -> Self {
        self.config.adaptive = Some(adaptive);
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<BulkheadConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_constants() {
        let c = BulkheadConfig::default();
        assert_eq!(c.max_concurrent_calls, DEFAULT_MAX_CONCURRENT_CALLS);
        assert_eq!(c.max_wait, DEFAULT_MAX_WAIT);
        assert_eq!(c.queue_order, DEFAULT_QUEUE_ORDER);
        assert_eq!(c.max_waiters, DEFAULT_MAX_WAITERS);
        assert!(c.partitions.is_empty() && c.adaptive.is_none());
        assert_eq!(BulkheadConfig::builder().build(), Ok(c));
    }

    #[test]
    fn messages_name_field_value_and_range() {
        let err = BulkheadConfig::builder()
            .max_wait(Duration::from_millis(1))
            .max_waiters(0)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "max_waiters must be at least 1 when max_wait is set, got 0"
        );
        let err = BulkheadConfig::builder()
            .partition(Partition::new("a", 0.6))
            .partition(Partition::new("b", 0.6))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "partitions");
        assert_eq!(err.value(), "shares adding up to 1.2");
        let err = BulkheadConfig::builder()
            .partition(Partition::new("a", 0.5))
            .partition(Partition::new("a", 0.1))
            .build()
            .unwrap_err();
        assert_eq!(err.expected(), "unique non-empty names");
        let mut aimd = Aimd::new(1, 10);
        aimd.backoff_ratio = 1.0;
        let err = BulkheadConfig::builder()
            .max_concurrent_calls(5)
            .adaptive(AdaptiveLimit::Aimd(aimd))
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "backoff_ratio must be in [0.5, 1), got 1");
        let err = BulkheadConfig::builder()
            .max_concurrent_calls(50)
            .adaptive(AdaptiveLimit::Gradient(Gradient::new(1, 10)))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_concurrent_calls");
        let mut g = Gradient::new(1, 10);
        g.probe_interval = Duration::MAX;
        let err = BulkheadConfig::builder()
            .max_concurrent_calls(5)
            .adaptive(AdaptiveLimit::Gradient(g))
            .build()
            .unwrap_err();
        assert_eq!(err.expected(), "above zero and at most 365 days");
    }

    #[test]
    fn gradient_new_fits_its_probe_limit_in_any_bounds() {
        // The default probe limit (3) is above max_limit: brought down, so this builds.
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(2)
            .adaptive(AdaptiveLimit::Gradient(Gradient::new(1, 2)))
            .build()
            .unwrap();
        let Some(AdaptiveLimit::Gradient(g)) = config.adaptive else {
            unreachable!()
        };
        assert_eq!(g.probe_limit, 2);
        assert_eq!(Gradient::new(5, 100).probe_limit, 5);
        // Inverted bounds: no panic in `new`, an error from `build`.
        let err = BulkheadConfig::builder()
            .adaptive(AdaptiveLimit::Gradient(Gradient::new(10, 5)))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_limit");
    }

    #[test]
    fn shares_adding_to_one_in_floating_point_are_accepted() {
        let config = BulkheadConfig::builder()
            .partition(Partition::new("a", 0.7))
            .partition(Partition::new("b", 0.2))
            .partition(Partition::new("c", 0.1))
            .build();
        assert!(config.is_ok());
    }

    #[test]
    fn sanitized_repairs_hand_edits() {
        let c = BulkheadConfig {
            max_concurrent_calls: 0,
            partitions: vec![Partition::new("x", 2.0)],
            ..BulkheadConfig::default()
        };
        let s = c.sanitized();
        assert_eq!(s.max_concurrent_calls, 1);
        assert!(s.partitions.is_empty());
        assert_eq!(s.validate(), Ok(()));
    }
}
