//! `Deserialize` for [`CircuitBreakerConfig`], through the same validation as the builder.
//!
//! Durations are human-readable strings ("250ms", "30s", "2m"); unknown fields are errors, and
//! missing fields take their defaults.
//!
//! ```
//! use meshwork_circuit_breaker::{CircuitBreakerConfig, SlidingWindow};
//! use std::time::Duration;
//!
//! let config: CircuitBreakerConfig = serde_json::from_str(r#"{
//!     "sliding_window": { "type": "time", "duration": "1m", "buckets": 60 },
//!     "failure_count_threshold": 5,
//!     "open_duration": "10s",
//!     "open_backoff_multiplier": 2.0,
//!     "open_backoff_max": "5m"
//! }"#)?;
//! assert_eq!(
//!     config.sliding_window,
//!     SlidingWindow::Time { duration: Duration::from_secs(60), buckets: 60 }
//! );
//!
//! let err = serde_json::from_str::<CircuitBreakerConfig>(r#"{ "failure_rate_threshold": 120 }"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("failure_rate_threshold must be in (0, 100], got 120"));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{CircuitBreakerConfig, ConfigError, OpenBackoff, SlidingWindow};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e} (write it like \"500ms\", \"30s\" or \"2m\")"
        ))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "duration")] Duration);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawWindow {
    Count {
        size: u32,
    },
    Time {
        #[serde(deserialize_with = "duration")]
        duration: Duration,
        buckets: u32,
    },
    ConsecutiveFailures {
        threshold: u32,
    },
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    sliding_window: Option<RawWindow>,
    failure_rate_threshold: f64,
    failure_count_threshold: Option<u32>,
    minimum_number_of_calls: u32,
    #[serde(deserialize_with = "optional_duration")]
    slow_call_duration_threshold: Option<Duration>,
    slow_call_rate_threshold: f64,
    #[serde(deserialize_with = "duration")]
    open_duration: Duration,
    open_backoff_multiplier: f64,
    #[serde(deserialize_with = "optional_duration")]
    open_backoff_max: Option<Duration>,
    open_jitter: f64,
    permitted_calls_in_half_open: u32,
    half_open_success_threshold: f64,
    #[serde(deserialize_with = "optional_duration")]
    max_half_open_duration: Option<Duration>,
    rng_seed: Option<u64>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = CircuitBreakerConfig::default();
        RawConfig {
            sliding_window: None,
            failure_rate_threshold: d.failure_rate_threshold,
            failure_count_threshold: d.failure_count_threshold,
            minimum_number_of_calls: d.minimum_number_of_calls,
            slow_call_duration_threshold: d.slow_call_duration_threshold,
            slow_call_rate_threshold: d.slow_call_rate_threshold,
            open_duration: d.open_backoff.base(),
            open_backoff_multiplier: d.open_backoff.multiplier(),
            open_backoff_max: None,
            open_jitter: d.open_backoff.jitter(),
            permitted_calls_in_half_open: d.permitted_calls_in_half_open,
            half_open_success_threshold: d.half_open_success_threshold,
            max_half_open_duration: d.max_half_open_duration,
            rng_seed: d.rng_seed,
        }
    }
}

impl TryFrom<RawConfig> for CircuitBreakerConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let sliding_window = match raw.sliding_window {
            None => SlidingWindow::default(),
            Some(RawWindow::Count { size }) => SlidingWindow::Count { size },
            Some(RawWindow::Time { duration, buckets }) => {
                SlidingWindow::Time { duration, buckets }
            }
            Some(RawWindow::ConsecutiveFailures { threshold }) => {
                SlidingWindow::ConsecutiveFailures { threshold }
            }
        };
        let config = CircuitBreakerConfig {
            sliding_window,
            failure_rate_threshold: raw.failure_rate_threshold,
            failure_count_threshold: raw.failure_count_threshold,
            minimum_number_of_calls: raw.minimum_number_of_calls,
            slow_call_duration_threshold: raw.slow_call_duration_threshold,
            slow_call_rate_threshold: raw.slow_call_rate_threshold,
            open_backoff: OpenBackoff::exponential(
                raw.open_duration,
                raw.open_backoff_multiplier,
                raw.open_backoff_max.unwrap_or(raw.open_duration),
            )
            .with_jitter(raw.open_jitter),
            permitted_calls_in_half_open: raw.permitted_calls_in_half_open,
            half_open_success_threshold: raw.half_open_success_threshold,
            max_half_open_duration: raw.max_half_open_duration,
            rng_seed: raw.rng_seed,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_the_default() {
        let c: CircuitBreakerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CircuitBreakerConfig::default());
    }

    #[test]
    fn rejects_unknown_fields_bad_durations_and_bad_values() {
        let e = serde_json::from_str::<CircuitBreakerConfig>(r#"{"failure_rate": 5}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `failure_rate`"), "{e}");
        let e = serde_json::from_str::<CircuitBreakerConfig>(r#"{"open_duration": "soon"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        let e = serde_json::from_str::<CircuitBreakerConfig>(
            r#"{"sliding_window": {"type": "count", "size": 0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("sliding_window.size must be in 1..=1048576, got 0"),
            "{e}"
        );
    }

    #[test]
    fn reads_every_window_kind_and_backoff() {
        let c: CircuitBreakerConfig = serde_json::from_str(
            r#"{"sliding_window": {"type": "consecutive_failures", "threshold": 3},
                "open_duration": "1s", "open_backoff_multiplier": 2, "open_backoff_max": "8s",
                "open_jitter": 0.1, "max_half_open_duration": null}"#,
        )
        .unwrap();
        assert_eq!(
            c.sliding_window,
            SlidingWindow::ConsecutiveFailures { threshold: 3 }
        );
        assert_eq!(c.open_backoff.max(), Duration::from_secs(8));
        assert_eq!(c.open_backoff.jitter(), 0.1);
        assert_eq!(c.max_half_open_duration, None);
    }
}
