//! Configuration: plain data, validated once by the builder.

use std::any::{Any, TypeId};
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// Default number of attempts, the first one included.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default first delay of the default (exponential) backoff.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(100);
/// Default growth factor of the default (exponential) backoff.
pub const DEFAULT_MULTIPLIER: f64 = 2.0;
/// Default cap on each delay (after a server's Retry-After too).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default delay before a hedged attempt is sent.
pub const DEFAULT_HEDGE_DELAY: Duration = Duration::from_millis(100);
/// Default share of recent calls that may be retried, in percent.
pub const DEFAULT_BUDGET_PERCENT: f64 = 20.0;
/// Default number of retries per second allowed whatever the traffic.
pub const DEFAULT_BUDGET_MIN_PER_SECOND: u32 = 10;
/// Default time a call counts towards the budget.
pub const DEFAULT_BUDGET_TTL: Duration = Duration::from_secs(10);
/// Default cap on call sequences retrying at the same time.
pub const DEFAULT_MAX_CONCURRENT_RETRIES: u32 = 100;
/// Largest budget percentage accepted.
pub const MAX_BUDGET_PERCENT: f64 = 1000.0;
/// Shortest budget TTL accepted.
pub const MIN_BUDGET_TTL: Duration = Duration::from_secs(1);
/// Longest budget TTL accepted.
pub const MAX_BUDGET_TTL: Duration = Duration::from_secs(60);
/// Largest exponential multiplier accepted.
pub const MAX_MULTIPLIER: f64 = 1000.0;
/// Largest latency window of a [`HedgeDelay::Percentile`], in samples.
pub const MAX_HEDGE_WINDOW: usize = 1024;

/// How the delay before each retry grows, before jitter and the `max_delay` cap.
///
/// `n` is the number of the retry (1 for the first retry).
///
/// # Example
/// ```
/// use meshwork_retry::Backoff;
/// use std::time::Duration;
///
/// let ms = Duration::from_millis;
/// assert_eq!(Backoff::constant(ms(50)).delay(3), ms(50));
/// assert_eq!(Backoff::linear(ms(100), ms(50)).delay(3), ms(200));
/// assert_eq!(Backoff::exponential(ms(100), 2.0).delay(3), ms(400));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Constant {
        /// The delay.
        delay: Duration,
    },
    /// `initial + step * (n - 1)`.
    Linear {
        /// The first delay.
        initial: Duration,
        /// Added for each further retry.
        step: Duration,
    },
    /// `initial * multiplier^(n - 1)`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth factor, a finite number in `[1, 1000]`.
        multiplier: f64,
    },
}

impl Backoff {
    /// The same delay before every retry.
    pub fn constant(delay: Duration) -> Self {
        Backoff::Constant { delay }
    }

    /// A delay that grows by `step` for every retry.
    pub fn linear(initial: Duration, step: Duration) -> Self {
        Backoff::Linear { initial, step }
    }

    /// A delay that grows by `multiplier` for every retry.
    pub fn exponential(initial: Duration, multiplier: f64) -> Self {
        Backoff::Exponential {
            initial,
            multiplier,
        }
    }

    /// The delay before the `n`-th retry (1-based), before jitter and cap; saturates at
    /// [`Duration::MAX`] instead of overflowing.
    pub fn delay(&self, n: u32) -> Duration {
        let k = n.saturating_sub(1);
        match *self {
            Backoff::Constant { delay } => delay,
            Backoff::Linear { initial, step } => initial.saturating_add(step.saturating_mul(k)),
            Backoff::Exponential {
                initial,
                multiplier,
            } => {
                if initial.is_zero() {
                    // 0 * inf would be NaN, and NaN would saturate to `Duration::MAX`.
                    return Duration::ZERO;
                }
                let exp = i32::try_from(k).unwrap_or(i32::MAX);
                let secs = initial.as_secs_f64() * multiplier.powi(exp);
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
            }
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(DEFAULT_INITIAL_DELAY, DEFAULT_MULTIPLIER)
    }
}

/// How long [`Retry::hedge`](crate::Retry::hedge) waits for an attempt before it sends the
/// next one while the first keeps running.
///
/// * `Fixed(d)`: always `d`.
/// * `Percentile { p, min, max, window }`: the `p`-th percentile (nearest rank) of the latencies
///   of the last `window` successful hedged calls of the policy, kept within `[min, max]`;
///   `max` until `window` calls have succeeded. Slow calls are the ones worth hedging, and what
///   counts as slow is learned from the upstream instead of guessed: with `p: 95.0`, about one
///   call in twenty sends a backup (Dean and Barroso, "The Tail at Scale"; Finagle's backup
///   requests), and the budget bounds that extra load.
///
/// A latency sample is the time from the start of a `hedge` call to its success, the time its
/// caller waited, so a hedged call counts with at least the delay it waited: measuring only the
/// winning attempt would feed the fast backups back into the percentile and drag the delay
/// down until most calls were hedged. Until the window is full the delay is `max`: a cold
/// policy doesn't yet know what slow is, and hedging at `min` would double the load of a cold
/// start. Only [`Retry::hedge`](crate::Retry::hedge) and
/// [`Retry::hedge_with`](crate::Retry::hedge_with) record samples ([`Retry::call`](crate::Retry::call)
/// reads no clock); a sample that arrives while another is being recorded is dropped rather
/// than waited for.
///
/// # Example
/// ```
/// use meshwork_retry::{HedgeDelay, RetryConfig};
/// use std::time::Duration;
///
/// let config = RetryConfig::builder()
///     .hedge_delay(HedgeDelay::Percentile {
///         p: 95.0,
///         min: Duration::from_millis(5),
///         max: Duration::from_millis(500),
///         window: 200,
///     })
///     .build()?;
/// assert!(matches!(config.hedge_delay, HedgeDelay::Percentile { window: 200, .. }));
///
/// // A plain duration is a fixed delay.
/// let fixed = RetryConfig::builder().hedge_delay(Duration::from_millis(50)).build()?;
/// assert_eq!(fixed.hedge_delay, HedgeDelay::Fixed(Duration::from_millis(50)));
/// # Ok::<(), meshwork_retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum HedgeDelay {
    /// The same delay for every call; any duration.
    Fixed(Duration),
    /// A percentile of recent successful call latencies, within bounds.
    Percentile {
        /// The percentile, in `(0, 100]`.
        p: f64,
        /// The shortest delay, whatever the latencies.
        min: Duration,
        /// The longest delay, whatever the latencies, and the delay until `window` samples
        /// have been recorded; at least `min`.
        max: Duration,
        /// The number of recent latencies kept, in `[1, 1024]`.
        window: usize,
    },
}

impl HedgeDelay {
    /// The `p`-th percentile of the last `window` successful call latencies, within
    /// `[min, max]`; see [`HedgeDelay::Percentile`].
    pub fn percentile(p: f64, min: Duration, max: Duration, window: usize) -> Self {
        HedgeDelay::Percentile {
            p,
            min,
            max,
            window,
        }
    }

    /// Checks every field; [`RetryConfig::validate`] calls this.
    ///
    /// ```
    /// use meshwork_retry::HedgeDelay;
    /// use std::time::Duration;
    ///
    /// let ms = Duration::from_millis;
    /// let err = HedgeDelay::percentile(120.0, ms(1), ms(100), 50).validate().unwrap_err();
    /// assert_eq!(err.to_string(), "hedge_delay.p must be in (0, 100], got 120");
    /// assert!(HedgeDelay::percentile(99.9, ms(1), ms(100), 50).validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let HedgeDelay::Percentile {
            p,
            min,
            max,
            window,
        } = *self
        else {
            return Ok(());
        };
        if !(p.is_finite() && p > 0.0 && p <= 100.0) {
            return Err(ConfigError::new("hedge_delay.p", p, "in (0, 100]"));
        }
        if max < min {
            return Err(ConfigError::new(
                "hedge_delay.max",
                format_args!("{max:?} (min {min:?})"),
                "at least hedge_delay.min",
            ));
        }
        if !(1..=MAX_HEDGE_WINDOW).contains(&window) {
            return Err(ConfigError::new(
                "hedge_delay.window",
                window,
                "in [1, 1024]",
            ));
        }
        Ok(())
    }
}

impl Default for HedgeDelay {
    fn default() -> Self {
        HedgeDelay::Fixed(DEFAULT_HEDGE_DELAY)
    }
}

impl From<Duration> for HedgeDelay {
    fn from(delay: Duration) -> Self {
        HedgeDelay::Fixed(delay)
    }
}

/// How each delay is spread at random, so that callers that failed together don't retry in
/// step (see the AWS architecture blog's "Exponential Backoff And Jitter").
///
/// With `d` the backoff delay capped at `max_delay`:
/// * `None`: `d`.
/// * `Full`: uniform in `[0, d]`.
/// * `Equal`: `d/2` plus uniform in `[0, d/2]`.
/// * `Decorrelated`: uniform in `[base, 3 * previous]`, capped at `max_delay`, where `base` is
///   the backoff's first delay and `previous` the previous delay (starting at `base`); the
///   backoff's growth is ignored.
///
/// ```
/// use meshwork_retry::{Backoff, Jitter, RetryConfig};
/// use std::time::Duration;
///
/// let config = RetryConfig::builder()
///     .backoff(Backoff::constant(Duration::from_millis(100)))
///     .jitter(Jitter::Equal)
///     .rng_seed(1)
///     .build()?;
/// for delay in config.delays().take(10) {
///     assert!(delay >= Duration::from_millis(50) && delay <= Duration::from_millis(100));
/// }
/// # Ok::<(), meshwork_retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// No jitter: the delays are exactly the backoff's.
    None,
    /// Uniform in `[0, d]`.
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]`.
    Equal,
    /// Uniform in `[base, 3 * previous]`, capped.
    Decorrelated,
}

/// A Finagle-style retry budget: retries may be at most `percent` of the calls of the last
/// `ttl`, plus `min_per_second * ttl` retries whatever the traffic, and at most
/// `max_concurrent_retries` call sequences may be retrying at once (Envoy).
///
/// # Example
/// ```
/// use meshwork_retry::BudgetConfig;
/// use std::time::Duration;
///
/// let budget = BudgetConfig::new(12.5, 5, Duration::from_secs(10)).with_max_concurrent_retries(20);
/// assert_eq!(budget.percent, 12.5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Retries allowed per call over the TTL, in percent, in `[0, 1000]`; fractions are
    /// honoured exactly (to a millionth of a retry).
    pub percent: f64,
    /// Retries per second allowed whatever the traffic (a reserve of `min_per_second * ttl`).
    pub min_per_second: u32,
    /// How long a call counts towards the budget, in `[1s, 60s]`.
    pub ttl: Duration,
    /// Call sequences that may be retrying at the same time, at least 1.
    pub max_concurrent_retries: u32,
}

impl BudgetConfig {
    /// A budget of `percent` of recent calls plus `min_per_second`, over `ttl`, with the
    /// default concurrency cap.
    pub fn new(percent: f64, min_per_second: u32, ttl: Duration) -> Self {
        BudgetConfig {
            percent,
            min_per_second,
            ttl,
            max_concurrent_retries: DEFAULT_MAX_CONCURRENT_RETRIES,
        }
    }

    /// The cap on call sequences retrying at once; at least 1, default
    /// [`DEFAULT_MAX_CONCURRENT_RETRIES`].
    #[must_use]
    pub fn with_max_concurrent_retries(mut self, max: u32) -> Self {
        self.max_concurrent_retries = max;
        self
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.percent.is_finite() && (0.0..=MAX_BUDGET_PERCENT).contains(&self.percent)) {
            return Err(ConfigError::new(
                "budget.percent",
                self.percent,
                "in [0, 1000]",
            ));
        }
        if !(MIN_BUDGET_TTL..=MAX_BUDGET_TTL).contains(&self.ttl) {
            return Err(ConfigError::new(
                "budget.ttl",
                format_args!("{:?}", self.ttl),
                "in [1s, 60s]",
            ));
        }
        if self.max_concurrent_retries == 0 {
            return Err(ConfigError::new(
                "budget.max_concurrent_retries",
                0,
                "at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig::new(
            DEFAULT_BUDGET_PERCENT,
            DEFAULT_BUDGET_MIN_PER_SECOND,
            DEFAULT_BUDGET_TTL,
        )
    }
}

/// An error type that is never retried, registered with
/// [`RetryConfigBuilder::never_retry`]: an error whose source chain holds one is returned at
/// once and spends no budget.
///
/// This is how a retry policy learns about a circuit breaker's or a bulkhead's rejection
/// without depending on those crates.
///
/// ```
/// use meshwork_retry::ErrorType;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("bulkhead full")]
/// struct BulkheadFull;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("call refused")]
/// struct Refused(#[source] BulkheadFull);
///
/// let full = ErrorType::of::<BulkheadFull>();
/// assert!(full.matches(&Refused(BulkheadFull)), "found in the source chain");
/// assert!(!full.matches(&std::fmt::Error));
/// ```
#[derive(Clone, Copy)]
pub struct ErrorType {
    id: TypeId,
    name: &'static str,
    is_error: fn(&(dyn StdError + 'static)) -> bool,
    is_any: fn(&dyn Any) -> bool,
}

impl ErrorType {
    /// The error type `T`.
    pub fn of<T: StdError + 'static>() -> Self {
        // A `Box<T>` boxed again into a `dyn Error` hides `T` from `is`: look for both.
        fn is_error<T: StdError + 'static>(e: &(dyn StdError + 'static)) -> bool {
            e.is::<T>() || e.is::<Box<T>>()
        }
        fn is_any<T: 'static>(e: &dyn Any) -> bool {
            e.is::<T>()
        }
        ErrorType {
            id: TypeId::of::<T>(),
            name: std::any::type_name::<T>(),
            is_error: is_error::<T>,
            is_any: is_any::<T>,
        }
    }

    /// The type's name, as `std::any::type_name` spells it.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether `error` or anything in its source chain is of this type.
    pub fn matches(&self, error: &(dyn StdError + 'static)) -> bool {
        let mut next = Some(error);
        while let Some(e) = next {
            if (self.is_error)(e) {
                return true;
            }
            next = e.source();
        }
        false
    }

    pub(crate) fn is_any(&self, value: &dyn Any) -> bool {
        (self.is_any)(value)
    }
}

impl fmt::Debug for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

// By `TypeId`: two types may share a `type_name` (two versions of one crate, say).
impl PartialEq for ErrorType {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// A configuration value out of its valid range; the message names the field, the value and
/// what is accepted.
///
/// # Example
/// ```
/// use meshwork_retry::RetryConfig;
///
/// let err = RetryConfig::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// assert_eq!(err.to_string(), "max_attempts must be at least 1, got 0");
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

/// Everything that shapes one retry policy. Build it with [`RetryConfig::builder`], which
/// validates every field, or start from [`RetryConfig::default`] or [`RetryConfig::for_http`].
///
/// # Reading from a file (feature `serde`)
/// `RetryConfig` implements `Deserialize` through the same [`validate`](RetryConfig::validate)
/// as the builder, so a bad file fails with the builder's message. Durations are strings
/// ("250ms", "30s", "2m"); unknown fields are refused; missing ones take their defaults, so an
/// empty document is [`RetryConfig::default`].
///
/// | field | form | default |
/// |---|---|---|
/// | `max_attempts` | integer, at least 1 | `3` |
/// | `backoff` | `{ "type": "constant", "delay": "100ms" }`, `{ "type": "linear", "initial": "100ms", "step": "50ms" }` or `{ "type": "exponential", "initial": "100ms", "multiplier": 2.0 }` | exponential from 100 ms by 2 |
/// | `jitter` | `"none"`, `"full"`, `"equal"` or `"decorrelated"` | `"full"` |
/// | `max_delay` | duration | `"10s"` |
/// | `max_elapsed`, `attempt_timeout` | duration or `null` | none |
/// | `budget` | `{ "enabled": true, "percent": 20.0, "min_per_second": 10, "ttl": "10s", "max_concurrent_retries": 100 }`, each field optional; `"enabled": false` turns budgeting off | on, these values |
/// | `budget_error` | boolean | `false` |
/// | `hedge_delay` | a duration (fixed), `{ "type": "fixed", "delay": "50ms" }` or `{ "type": "percentile", "p": 95.0, "min": "5ms", "max": "500ms", "window": 200 }` | `"100ms"` |
/// | `rng_seed` | integer or `null` | none |
///
/// [`never_retry`](RetryConfigBuilder::never_retry) types can't come from a file (it can't
/// name a Rust type): a `never_retry` field is refused, with a message saying to add them in
/// code with [`into_builder`](RetryConfig::into_builder)`().never_retry::<T>()`.
///
/// # Example
/// ```
/// use meshwork_retry::{Backoff, Jitter, RetryConfig};
/// use std::time::Duration;
///
/// let config = RetryConfig::builder()
///     .max_attempts(4)
///     .backoff(Backoff::exponential(Duration::from_millis(50), 2.0))
///     .jitter(Jitter::Equal)
///     .max_delay(Duration::from_secs(2))
///     .max_elapsed(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.max_attempts, 4);
/// # Ok::<(), meshwork_retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "crate::serde_config::RawConfig"))]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first one included; at least 1.
    pub max_attempts: u32,
    /// How the delay grows from one retry to the next.
    pub backoff: Backoff,
    /// How each delay is spread at random.
    pub jitter: Jitter,
    /// Cap on each delay, a server's Retry-After included.
    pub max_delay: Duration,
    /// Cap on the time spent retrying, counted from the end of the first attempt (the success
    /// path reads no clock); a retry whose delay would cross it is not made. `None`: no cap.
    pub max_elapsed: Option<Duration>,
    /// Timeout of each attempt; a timed-out attempt is retried like a failure. `None`: none.
    pub attempt_timeout: Option<Duration>,
    /// The retry budget; `None` turns budgeting off (not recommended: retries can storm).
    pub budget: Option<BudgetConfig>,
    /// When the budget refuses a retry, return [`Error::BudgetExhausted`](crate::Error) instead
    /// of the last real outcome.
    pub budget_error: bool,
    /// Delay between hedged attempts (see [`Retry::hedge`](crate::Retry::hedge)): fixed, or
    /// a percentile of recent latencies.
    pub hedge_delay: HedgeDelay,
    /// Error types that are never retried and spend no budget. Added in code only (a file
    /// can't name a Rust type): see [`RetryConfig::into_builder`].
    pub never_retry: Vec<ErrorType>,
    /// Seed for the jitter's random numbers; `None` seeds from the system.
    pub rng_seed: Option<u64>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            backoff: Backoff::default(),
            jitter: Jitter::default(),
            max_delay: DEFAULT_MAX_DELAY,
            max_elapsed: None,
            attempt_timeout: None,
            budget: Some(BudgetConfig::default()),
            budget_error: false,
            hedge_delay: HedgeDelay::default(),
            never_retry: Vec::new(),
            rng_seed: None,
        }
    }
}

impl RetryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RetryConfigBuilder {
        RetryConfigBuilder {
            config: RetryConfig::default(),
        }
    }

    /// A builder starting from this configuration: to change a preset, or to add
    /// [`never_retry`](RetryConfigBuilder::never_retry) types to a configuration read from a
    /// file. [`build`](RetryConfigBuilder::build) validates again.
    ///
    /// ```
    /// use meshwork_retry::RetryConfig;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("bulkhead full")]
    /// struct BulkheadFull;
    ///
    /// let config = RetryConfig::for_http()
    ///     .into_builder()
    ///     .max_attempts(2)
    ///     .never_retry::<BulkheadFull>()
    ///     .build()?;
    /// assert_eq!(config.max_delay, RetryConfig::for_http().max_delay);
    /// assert_eq!((config.max_attempts, config.never_retry.len()), (2, 1));
    /// # Ok::<(), meshwork_retry::ConfigError>(())
    /// ```
    pub fn into_builder(self) -> RetryConfigBuilder {
        RetryConfigBuilder { config: self }
    }

    /// A preset for calls to an HTTP upstream: 3 attempts, exponential backoff from 200 ms
    /// with full jitter, at most 5 s per delay (a longer Retry-After is cut to 5 s) and 15 s
    /// in all, the default budget.
    ///
    /// ```
    /// let config = meshwork_retry::RetryConfig::for_http();
    /// assert_eq!(config.max_delay, std::time::Duration::from_secs(5));
    /// ```
    pub fn for_http() -> Self {
        RetryConfig {
            backoff: Backoff::exponential(Duration::from_millis(200), 2.0),
            max_delay: Duration::from_secs(5),
            max_elapsed: Some(Duration::from_secs(15)),
            ..RetryConfig::default()
        }
    }

    /// Checks every field; [`RetryConfigBuilder::build`] calls this.
    ///
    /// ```
    /// let mut config = meshwork_retry::RetryConfig::default();
    /// config.max_attempts = 0;
    /// assert!(config.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", 0, "at least 1"));
        }
        if let Backoff::Exponential { multiplier, .. } = self.backoff
            && !(multiplier.is_finite() && (1.0..=MAX_MULTIPLIER).contains(&multiplier))
        {
            return Err(ConfigError::new(
                "backoff.multiplier",
                multiplier,
                "in [1, 1000]",
            ));
        }
        if self.max_delay.is_zero() {
            return Err(ConfigError::new("max_delay", "0s", "greater than zero"));
        }
        if self.max_elapsed.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("max_elapsed", "0s", "greater than zero"));
        }
        if self.attempt_timeout.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                "attempt_timeout",
                "0s",
                "greater than zero",
            ));
        }
        if let Some(budget) = &self.budget {
            budget.validate()?;
        }
        self.hedge_delay.validate()
    }

    /// The delays this configuration produces for consecutive retries (jittered, capped at
    /// `max_delay`, ignoring attempts, elapsed time and budget), seeded from `rng_seed`: with a
    /// seed, the first call that a new [`Retry`](crate::Retry) retries waits exactly these.
    ///
    /// ```
    /// use meshwork_retry::{Backoff, Jitter, RetryConfig};
    /// use std::time::Duration;
    ///
    /// let config = RetryConfig::builder()
    ///     .backoff(Backoff::exponential(Duration::from_millis(100), 2.0))
    ///     .jitter(Jitter::None)
    ///     .max_delay(Duration::from_millis(300))
    ///     .build()?;
    /// let ms: Vec<u128> = config.delays().take(4).map(|d| d.as_millis()).collect();
    /// assert_eq!(ms, [100, 200, 300, 300]);
    /// # Ok::<(), meshwork_retry::ConfigError>(())
    /// ```
    pub fn delays(&self) -> crate::Delays {
        crate::backoff::Delays::new(self.clone())
    }

    pub(crate) fn is_never_retry(&self, error: &(dyn StdError + 'static)) -> bool {
        self.never_retry.iter().any(|t| t.matches(error))
    }
}

/// Builds a validated [`RetryConfig`]; every setter states its default and range.
#[derive(Debug, Clone)]
#[must_use]
pub struct RetryConfigBuilder {
    config: RetryConfig,
}

impl RetryConfigBuilder {
    /// Attempts in all, the first one included; at least 1, default
    /// [`DEFAULT_MAX_ATTEMPTS`] (3). 1 turns retrying off.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// How delays grow; default exponential from [`DEFAULT_INITIAL_DELAY`] (100 ms) by
    /// [`DEFAULT_MULTIPLIER`] (2); an exponential multiplier must be in `[1, 1000]`.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.config.backoff = backoff;
        self
    }

    /// How delays are spread at random; default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Cap on each delay, Retry-After included; greater than zero, default
    /// [`DEFAULT_MAX_DELAY`] (10 s).
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.config.max_delay = max;
        self
    }

    /// Cap on the time spent retrying, counted from the end of the first attempt; greater
    /// than zero, default none.
    pub fn max_elapsed(mut self, max: Duration) -> Self {
        self.config.max_elapsed = Some(max);
        self
    }

    /// Timeout of each attempt (a timed-out attempt is retried); greater than zero, default
    /// none.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.config.attempt_timeout = Some(timeout);
        self
    }

    /// The retry budget; default [`BudgetConfig::default`]: 20% of the calls of the last 10 s
    /// plus 10 retries per second, at most 100 sequences retrying at once. Percent in
    /// `[0, 1000]`, TTL in `[1s, 60s]`, concurrency at least 1.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = Some(budget);
        self
    }

    /// Turns the retry budget off; default on.
    pub fn no_budget(mut self) -> Self {
        self.config.budget = None;
        self
    }

    /// When the budget refuses a retry, return `Error::BudgetExhausted` instead of the last
    /// real outcome; default `false`.
    pub fn budget_error(mut self, yes: bool) -> Self {
        self.config.budget_error = yes;
        self
    }

    /// Delay between hedged attempts: a [`Duration`] (any) for a fixed delay, or a
    /// [`HedgeDelay::Percentile`] of recent latencies (percentile in `(0, 100]`, `min <= max`,
    /// window in `[1, 1024]`); default fixed [`DEFAULT_HEDGE_DELAY`] (100 ms).
    pub fn hedge_delay(mut self, delay: impl Into<HedgeDelay>) -> Self {
        self.config.hedge_delay = delay.into();
        self
    }

    /// Never retry an error whose source chain holds a `T` (such an error spends no budget);
    /// default: no such type. Register a circuit breaker's or a bulkhead's rejection here.
    ///
    /// ```
    /// use meshwork_retry::RetryConfig;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("circuit open")]
    /// struct CircuitOpen;
    ///
    /// let config = RetryConfig::builder().never_retry::<CircuitOpen>().build()?;
    /// assert_eq!(config.never_retry.len(), 1);
    /// # Ok::<(), meshwork_retry::ConfigError>(())
    /// ```
    pub fn never_retry<T: StdError + 'static>(mut self) -> Self {
        let t = ErrorType::of::<T>();
        if !self.config.never_retry.contains(&t) {
            self.config.never_retry.push(t);
        }
        self
    }

    /// Seed for the jitter's random numbers, for reproducible delays; default: seeded from
    /// the system.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.config.rng_seed = Some(seed);
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<RetryConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_constants() {
        let c = RetryConfig::default();
        assert_eq!(c.max_attempts, DEFAULT_MAX_ATTEMPTS);
        assert_eq!(
            c.backoff,
            Backoff::exponential(DEFAULT_INITIAL_DELAY, DEFAULT_MULTIPLIER)
        );
        assert_eq!(c.jitter, Jitter::Full);
        assert_eq!(c.max_delay, DEFAULT_MAX_DELAY);
        assert_eq!(c.budget, Some(BudgetConfig::default()));
        assert_eq!(c.hedge_delay, HedgeDelay::Fixed(DEFAULT_HEDGE_DELAY));
        assert!(c.validate().is_ok());
        assert!(RetryConfig::for_http().validate().is_ok());
    }

    #[test]
    fn every_range_is_checked() {
        let b = RetryConfig::builder;
        let field = |r: Result<RetryConfig, ConfigError>| r.unwrap_err().field();
        assert_eq!(field(b().max_attempts(0).build()), "max_attempts");
        assert_eq!(
            field(
                b().backoff(Backoff::exponential(Duration::ZERO, 0.5))
                    .build()
            ),
            "backoff.multiplier"
        );
        assert_eq!(
            field(
                b().backoff(Backoff::exponential(Duration::ZERO, f64::NAN))
                    .build()
            ),
            "backoff.multiplier"
        );
        assert_eq!(field(b().max_delay(Duration::ZERO).build()), "max_delay");
        assert_eq!(
            field(b().max_elapsed(Duration::ZERO).build()),
            "max_elapsed"
        );
        assert_eq!(
            field(b().attempt_timeout(Duration::ZERO).build()),
            "attempt_timeout"
        );
        let ttl = Duration::from_secs(10);
        assert_eq!(
            field(b().budget(BudgetConfig::new(-1.0, 0, ttl)).build()),
            "budget.percent"
        );
        assert_eq!(
            field(b().budget(BudgetConfig::new(1000.5, 0, ttl)).build()),
            "budget.percent"
        );
        assert_eq!(
            field(
                b().budget(BudgetConfig::new(10.0, 0, Duration::from_millis(999)))
                    .build()
            ),
            "budget.ttl"
        );
        assert_eq!(
            field(
                b().budget(BudgetConfig::new(10.0, 0, ttl).with_max_concurrent_retries(0))
                    .build()
            ),
            "budget.max_concurrent_retries"
        );
        let ms = Duration::from_millis;
        let hedge = |p, min, max, window| {
            field(
                b().hedge_delay(HedgeDelay::percentile(p, ms(min), ms(max), window))
                    .build(),
            )
        };
        assert_eq!(hedge(0.0, 1, 10, 10), "hedge_delay.p");
        assert_eq!(hedge(100.5, 1, 10, 10), "hedge_delay.p");
        assert_eq!(hedge(f64::NAN, 1, 10, 10), "hedge_delay.p");
        assert_eq!(hedge(50.0, 10, 1, 10), "hedge_delay.max");
        assert_eq!(hedge(50.0, 1, 10, 0), "hedge_delay.window");
        assert_eq!(
            hedge(50.0, 1, 10, MAX_HEDGE_WINDOW + 1),
            "hedge_delay.window"
        );
        let err = b()
            .hedge_delay(HedgeDelay::percentile(50.0, ms(10), ms(5), 10))
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "hedge_delay.max must be at least hedge_delay.min, got 5ms (min 10ms)"
        );
        assert!(
            b().hedge_delay(HedgeDelay::percentile(100.0, ms(5), ms(5), 1))
                .build()
                .is_ok()
        );
        let err = b()
            .budget(BudgetConfig::new(1200.0, 0, ttl))
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "budget.percent must be in [0, 1000], got 1200"
        );
        assert_eq!(err.value(), "1200");
        assert_eq!(err.expected(), "in [0, 1000]");
    }

    #[test]
    fn backoff_saturates() {
        let b = Backoff::exponential(Duration::from_secs(1), 1000.0);
        assert_eq!(b.delay(u32::MAX), Duration::MAX);
        let l = Backoff::linear(Duration::MAX, Duration::MAX);
        assert_eq!(l.delay(5), Duration::MAX);
        assert_eq!(
            Backoff::exponential(Duration::from_millis(10), 3.0).delay(1),
            Duration::from_millis(10)
        );
        assert_eq!(
            Backoff::exponential(Duration::ZERO, 2.0).delay(5_000),
            Duration::ZERO,
            "zero grows to zero, not to the cap"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("marker")]
    struct Marker;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Marker);

    #[test]
    fn error_type_walks_the_source_chain() {
        let t = ErrorType::of::<Marker>();
        assert!(t.matches(&Marker));
        assert!(t.matches(&Wrapper(Marker)));
        assert!(!t.matches(&std::fmt::Error));
        let boxed_twice: Box<dyn StdError + Send + Sync> = Box::new(Box::new(Marker));
        assert!(t.matches(&*boxed_twice), "a Box<Marker> boxed again");
        assert!(t.name().ends_with("Marker"));
        let c = RetryConfig::builder()
            .never_retry::<Marker>()
            .never_retry::<Marker>()
            .build()
            .unwrap();
        assert_eq!(c.never_retry.len(), 1, "registered twice, kept once");
    }
}
