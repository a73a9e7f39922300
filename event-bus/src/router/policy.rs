//! The failure policy of one subscription: in-process retry, then delayed redelivery, then a
//! dead letter.

use std::time::Duration;

use meshwork_retry::{Backoff, RetryConfig};

use crate::BusError;

/// Default deliveries of one message (the first included) before it is dead-lettered.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Default first delay before a failed message is delivered again.
pub const DEFAULT_REDELIVERY_DELAY: Duration = Duration::from_secs(1);
/// Default growth of the redelivery delay from one delivery to the next.
pub const DEFAULT_REDELIVERY_MULTIPLIER: f64 = 2.0;
/// Default cap on a redelivery delay.
pub const DEFAULT_MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(60);
/// Default attempts of the handler within one delivery (the first included).
pub const DEFAULT_IN_PROCESS_ATTEMPTS: u32 = 3;
/// Default first delay between in-process attempts.
pub const DEFAULT_IN_PROCESS_DELAY: Duration = Duration::from_millis(20);
/// Default cap on an in-process delay.
pub const DEFAULT_IN_PROCESS_MAX_DELAY: Duration = Duration::from_millis(500);

/// What to do with a message whose failure is of a special kind (undecodable, a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailureAction {
    /// Dead-letter it at once.
    #[default]
    DeadLetter,
    /// Treat it as transient: in-process retries, delayed redeliveries, then a dead letter.
    Retry,
}

/// How the router treats a message its handler failed on.
///
/// 1. **In-process retry** ([`meshwork_retry`]): a few quick attempts within one delivery,
///    for blips. Permanent errors skip it.
/// 2. **Delayed redelivery**: while the delivery's attempt count is below `max_deliveries`,
///    the message is handed back to the broker with `retry(Some(delay))`, the delay growing
///    with the attempt count. The delay is never zero, so a failing message can't hot-loop.
/// 3. **Dead letter**: after `max_deliveries` deliveries (or at once for a permanent error,
///    and by default for an undecodable message or a panic), the message goes to the
///    dead-letter topic with the standard envelope naming the handler.
///
/// Nothing is ever dropped, and nothing loops forever. Shutdown is never a failure.
///
/// ```
/// use meshwork_event_bus::{FailureAction, FailurePolicy};
/// use meshwork_retry::Backoff;
/// use std::time::Duration;
///
/// let policy = FailurePolicy::builder()
///     .max_deliveries(10)
///     .redelivery_backoff(Backoff::exponential(Duration::from_secs(2), 2.0))
///     .max_redelivery_delay(Duration::from_secs(300))
///     .on_panic(FailureAction::Retry)
///     .build()?;
/// assert_eq!(policy.redelivery_delay(1), Duration::from_secs(2));
/// assert_eq!(policy.redelivery_delay(3), Duration::from_secs(8));
/// assert_eq!(policy.redelivery_delay(20), Duration::from_secs(300));
///
/// let err = FailurePolicy::builder().max_deliveries(0).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid max_deliveries \"0\": must be at least 1");
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FailurePolicy {
    /// In-process retries within one delivery; `None` turns them off.
    pub in_process: Option<RetryConfig>,
    /// Deliveries of one message, the first included, before it is dead-lettered.
    pub max_deliveries: u32,
    /// How the delay before a redelivery grows with the attempt count.
    pub redelivery_backoff: Backoff,
    /// Cap on a redelivery delay.
    pub max_redelivery_delay: Duration,
    /// What to do when a handler reports an undecodable message.
    pub on_decode_error: FailureAction,
    /// What to do when a handler panics.
    pub on_panic: FailureAction,
}

impl Default for FailurePolicy {
    fn default() -> Self {
        FailurePolicy {
            in_process: Some(default_in_process()),
            max_deliveries: DEFAULT_MAX_DELIVERIES,
            redelivery_backoff: Backoff::exponential(
                DEFAULT_REDELIVERY_DELAY,
                DEFAULT_REDELIVERY_MULTIPLIER,
            ),
            max_redelivery_delay: DEFAULT_MAX_REDELIVERY_DELAY,
            on_decode_error: FailureAction::DeadLetter,
            on_panic: FailureAction::DeadLetter,
        }
    }
}

fn default_in_process() -> RetryConfig {
    let mut config = RetryConfig::default();
    config.max_attempts = DEFAULT_IN_PROCESS_ATTEMPTS;
    config.backoff = Backoff::exponential(DEFAULT_IN_PROCESS_DELAY, 2.0);
    config.max_delay = DEFAULT_IN_PROCESS_MAX_DELAY;
    config
}

impl FailurePolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> FailurePolicyBuilder {
        FailurePolicyBuilder {
            policy: FailurePolicy::default(),
        }
    }

    /// The delay before the delivery after delivery number `attempt` (1-based): the backoff's
    /// `attempt`-th delay, capped at `max_redelivery_delay`.
    pub fn redelivery_delay(&self, attempt: u32) -> Duration {
        self.redelivery_backoff
            .delay(attempt.max(1))
            .min(self.max_redelivery_delay)
    }

    /// Checks every field; [`FailurePolicyBuilder::build`] calls this.
    pub fn validate(&self) -> Result<(), BusError> {
        if self.max_deliveries == 0 {
            return Err(BusError::invalid(
                "max_deliveries",
                "0",
                "must be at least 1",
            ));
        }
        if let Backoff::Exponential { multiplier, .. } = self.redelivery_backoff
            && !(multiplier.is_finite() && (1.0..=1000.0).contains(&multiplier))
        {
            return Err(BusError::invalid(
                "redelivery_backoff.multiplier",
                multiplier.to_string(),
                "must be in [1, 1000]",
            ));
        }
        if self.redelivery_backoff.delay(1).is_zero() {
            return Err(BusError::invalid(
                "redelivery_backoff",
                format!("{:?}", self.redelivery_backoff),
                "its first delay must be greater than zero (a zero delay hot-loops a failing message)",
            ));
        }
        if self.max_redelivery_delay.is_zero() {
            return Err(BusError::invalid(
                "max_redelivery_delay",
                "0s",
                "must be greater than zero",
            ));
        }
        if let Some(config) = &self.in_process {
            config.validate().map_err(|e| BusError::Invalid {
                what: e.field(),
                value: e.value().to_owned(),
                reason: e.expected(),
            })?;
        }
        Ok(())
    }
}

/// Builds a validated [`FailurePolicy`]; every setter states its default and range.
#[derive(Debug, Clone)]
#[must_use]
pub struct FailurePolicyBuilder {
    policy: FailurePolicy,
}

impl FailurePolicyBuilder {
    /// In-process retries within one delivery, as a [`meshwork_retry::RetryConfig`] (its
    /// `max_attempts` counts the first attempt). Default: [`DEFAULT_IN_PROCESS_ATTEMPTS`] (3)
    /// attempts, exponential from [`DEFAULT_IN_PROCESS_DELAY`] (20 ms), at most
    /// [`DEFAULT_IN_PROCESS_MAX_DELAY`] (500 ms) per delay, full jitter, the default budget.
    pub fn in_process(mut self, config: RetryConfig) -> Self {
        self.policy.in_process = Some(config);
        self
    }

    /// No in-process retries: each failure goes straight to redelivery or dead letter.
    pub fn no_in_process_retry(mut self) -> Self {
        self.policy.in_process = None;
        self
    }

    /// Deliveries of one message (the first included) before it is dead-lettered; at least 1,
    /// default [`DEFAULT_MAX_DELIVERIES`] (5). 1 dead-letters on the first failed delivery.
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.policy.max_deliveries = n;
        self
    }

    /// How the redelivery delay grows with the attempt count; its first delay must be greater
    /// than zero, an exponential multiplier in `[1, 1000]`. Default exponential from
    /// [`DEFAULT_REDELIVERY_DELAY`] (1 s) by [`DEFAULT_REDELIVERY_MULTIPLIER`] (2).
    pub fn redelivery_backoff(mut self, backoff: Backoff) -> Self {
        self.policy.redelivery_backoff = backoff;
        self
    }

    /// Cap on a redelivery delay; greater than zero, default
    /// [`DEFAULT_MAX_REDELIVERY_DELAY`] (60 s).
    pub fn max_redelivery_delay(mut self, max: Duration) -> Self {
        self.policy.max_redelivery_delay = max;
        self
    }

    /// What to do with an undecodable message ([`HandlerError::decode`](crate::HandlerError::decode));
    /// default [`FailureAction::DeadLetter`].
    pub fn on_decode_error(mut self, action: FailureAction) -> Self {
        self.policy.on_decode_error = action;
        self
    }

    /// What to do when the handler panics; default [`FailureAction::DeadLetter`].
    pub fn on_panic(mut self, action: FailureAction) -> Self {
        self.policy.on_panic = action;
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<FailurePolicy, BusError> {
        self.policy.validate()?;
        Ok(self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_never_zero() {
        let p = FailurePolicy::default();
        assert!(p.validate().is_ok());
        for attempt in 0..100 {
            assert!(!p.redelivery_delay(attempt).is_zero());
        }
    }

    #[test]
    fn nonsense_is_refused_with_the_field_named() {
        let cases = [
            (
                FailurePolicy::builder().redelivery_backoff(Backoff::constant(Duration::ZERO)),
                "redelivery_backoff",
            ),
            (
                FailurePolicy::builder()
                    .redelivery_backoff(Backoff::exponential(Duration::from_secs(1), 0.5)),
                "redelivery_backoff.multiplier",
            ),
            (
                FailurePolicy::builder().max_redelivery_delay(Duration::ZERO),
                "max_redelivery_delay",
            ),
            (
                FailurePolicy::builder().in_process({
                    let mut c = RetryConfig::default();
                    c.max_attempts = 0;
                    c
                }),
                "max_attempts",
            ),
        ];
        for (builder, field) in cases {
            match builder.build() {
                Err(BusError::Invalid { what, .. }) => assert_eq!(what, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
