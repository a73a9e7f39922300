//! `Deserialize` for [`RetryConfig`], through the same validation as the builder.
//!
//! Durations are human-readable strings ("250ms", "30s", "2m"); unknown fields are errors, and
//! missing fields take their defaults, so an empty document is [`RetryConfig::default`].
//!
//! The fields and their forms are listed on [`RetryConfig`]. `never_retry` names Rust types,
//! which a file can't: a document with that field is refused, and the types are added in code
//! through [`RetryConfig::into_builder`], which validates again:
//!
//! ```
//! use meshwork_retry::{Backoff, RetryConfig};
//! use std::time::Duration;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("circuit open")]
//! struct CircuitOpen;
//!
//! let from_file: RetryConfig = serde_json::from_str(r#"{
//!     "max_attempts": 4,
//!     "backoff": { "type": "exponential", "initial": "50ms", "multiplier": 2.0 },
//!     "jitter": "equal",
//!     "max_delay": "1s",
//!     "budget": { "percent": 12.5, "ttl": "30s" }
//! }"#)?;
//! assert_eq!(from_file.backoff, Backoff::exponential(Duration::from_millis(50), 2.0));
//! assert_eq!(from_file.budget.map(|b| b.percent), Some(12.5));
//!
//! let config = from_file.into_builder().never_retry::<CircuitOpen>().build()?;
//! assert_eq!(config.never_retry.len(), 1);
//!
//! let err = serde_json::from_str::<RetryConfig>(r#"{ "max_attempts": 0 }"#).unwrap_err();
//! assert!(err.to_string().contains("max_attempts must be at least 1, got 0"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::{IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{Backoff, BudgetConfig, ConfigError, HedgeDelay, Jitter, RetryConfig};

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
enum RawHedge {
    Fixed {
        #[serde(deserialize_with = "duration")]
        delay: Duration,
    },
    Percentile {
        p: f64,
        #[serde(deserialize_with = "duration")]
        min: Duration,
        #[serde(deserialize_with = "duration")]
        max: Duration,
        window: usize,
    },
}

/// A duration string (a fixed delay), or a tagged `fixed` or `percentile` table.
fn hedge_delay<'de, D: Deserializer<'de>>(d: D) -> Result<HedgeDelay, D::Error> {
    struct HedgeVisitor;

    impl<'de> Visitor<'de> for HedgeVisitor {
        type Value = HedgeDelay;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a duration like \"50ms\", or a table with \"type\": \"fixed\" or \"percentile\"",
            )
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<HedgeDelay, E> {
            duration(text.into_deserializer()).map(HedgeDelay::Fixed)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HedgeDelay, A::Error> {
            Ok(
                match RawHedge::deserialize(MapAccessDeserializer::new(map))? {
                    RawHedge::Fixed { delay } => HedgeDelay::Fixed(delay),
                    RawHedge::Percentile {
                        p,
                        min,
                        max,
                        window,
                    } => HedgeDelay::percentile(p, min, max, window),
                },
            )
        }
    }

    d.deserialize_any(HedgeVisitor)
}

/// Refuses any `never_retry` value with a message that says what to do instead.
fn no_never_retry<'de, D: Deserializer<'de>>(_: D) -> Result<(), D::Error> {
    Err(serde::de::Error::custom(
        "never_retry can't be read from a file: it names Rust error types; add them in code \
         with RetryConfig::into_builder().never_retry::<T>()",
    ))
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum RawBackoff {
    Constant {
        #[serde(deserialize_with = "duration")]
        delay: Duration,
    },
    Linear {
        #[serde(deserialize_with = "duration")]
        initial: Duration,
        #[serde(deserialize_with = "duration")]
        step: Duration,
    },
    Exponential {
        #[serde(deserialize_with = "duration")]
        initial: Duration,
        multiplier: f64,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawJitter {
    None,
    Full,
    Equal,
    Decorrelated,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawBudget {
    enabled: bool,
    percent: f64,
    min_per_second: u32,
    #[serde(deserialize_with = "duration")]
    ttl: Duration,
    max_concurrent_retries: u32,
}

impl Default for RawBudget {
    fn default() -> Self {
        let d = BudgetConfig::default();
        RawBudget {
            enabled: true,
            percent: d.percent,
            min_per_second: d.min_per_second,
            ttl: d.ttl,
            max_concurrent_retries: d.max_concurrent_retries,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    max_attempts: u32,
    backoff: Option<RawBackoff>,
    jitter: Option<RawJitter>,
    #[serde(deserialize_with = "duration")]
    max_delay: Duration,
    #[serde(deserialize_with = "optional_duration")]
    max_elapsed: Option<Duration>,
    #[serde(deserialize_with = "optional_duration")]
    attempt_timeout: Option<Duration>,
    budget: RawBudget,
    budget_error: bool,
    #[serde(deserialize_with = "hedge_delay")]
    hedge_delay: HedgeDelay,
    #[serde(deserialize_with = "no_never_retry")]
    never_retry: (),
    rng_seed: Option<u64>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = RetryConfig::default();
        RawConfig {
            max_attempts: d.max_attempts,
            backoff: None,
            jitter: None,
            max_delay: d.max_delay,
            max_elapsed: d.max_elapsed,
            attempt_timeout: d.attempt_timeout,
            budget: RawBudget::default(),
            budget_error: d.budget_error,
            hedge_delay: d.hedge_delay,
            never_retry: (),
            rng_seed: d.rng_seed,
        }
    }
}

impl TryFrom<RawConfig> for RetryConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let backoff = match raw.backoff {
            None => Backoff::default(),
            Some(RawBackoff::Constant { delay }) => Backoff::constant(delay),
            Some(RawBackoff::Linear { initial, step }) => Backoff::linear(initial, step),
            Some(RawBackoff::Exponential {
                initial,
                multiplier,
            }) => Backoff::exponential(initial, multiplier),
        };
        let jitter = match raw.jitter {
            None => Jitter::default(),
            Some(RawJitter::None) => Jitter::None,
            Some(RawJitter::Full) => Jitter::Full,
            Some(RawJitter::Equal) => Jitter::Equal,
            Some(RawJitter::Decorrelated) => Jitter::Decorrelated,
        };
        let b = raw.budget;
        let budget = b.enabled.then(|| {
            BudgetConfig::new(b.percent, b.min_per_second, b.ttl)
                .with_max_concurrent_retries(b.max_concurrent_retries)
        });
        let config = RetryConfig {
            max_attempts: raw.max_attempts,
            backoff,
            jitter,
            max_delay: raw.max_delay,
            max_elapsed: raw.max_elapsed,
            attempt_timeout: raw.attempt_timeout,
            budget,
            budget_error: raw.budget_error,
            hedge_delay: raw.hedge_delay,
            never_retry: Vec::new(),
            rng_seed: raw.rng_seed,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<RetryConfig, String> {
        serde_json::from_str::<RetryConfig>(json).map_err(|e| e.to_string())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(read("{}").unwrap(), RetryConfig::default());
        let c = read(r#"{"budget": {}}"#).unwrap();
        assert_eq!(c.budget, Some(BudgetConfig::default()));
    }

    #[test]
    fn unknown_fields_are_refused_at_every_level() {
        let e = read(r#"{"max_retries": 5}"#).unwrap_err();
        assert!(e.contains("unknown field `max_retries`"), "{e}");
        let e = read(r#"{"budget": {"percentage": 5}}"#).unwrap_err();
        assert!(e.contains("unknown field `percentage`"), "{e}");
        let e =
            read(r#"{"backoff": {"type": "constant", "delay": "1s", "step": "1s"}}"#).unwrap_err();
        assert!(e.contains("unknown field `step`"), "{e}");
        let e = read(r#"{"backoff": {"type": "fibonacci"}}"#).unwrap_err();
        assert!(e.contains("unknown variant `fibonacci`"), "{e}");
        let e = read(r#"{"jitter": "some"}"#).unwrap_err();
        assert!(e.contains("unknown variant `some`"), "{e}");
    }

    #[test]
    fn bad_durations_are_refused_with_a_clear_message() {
        let e = read(r#"{"max_delay": "soon"}"#).unwrap_err();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        assert!(e.contains("write it like \"500ms\""), "{e}");
        let e = read(r#"{"budget": {"ttl": "10"}}"#).unwrap_err();
        assert!(e.contains("invalid duration \"10\""), "{e}");
        let e = read(r#"{"max_delay": 5}"#).unwrap_err();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_builders_message() {
        let builder = RetryConfig::builder().max_attempts(0).build().unwrap_err();
        let e = read(r#"{"max_attempts": 0}"#).unwrap_err();
        assert!(e.contains(&builder.to_string()), "{e}");
        for (json, message) in [
            (
                r#"{"backoff": {"type": "exponential", "initial": "1s", "multiplier": 0.5}}"#,
                "backoff.multiplier must be in [1, 1000], got 0.5",
            ),
            (
                r#"{"max_delay": "0s"}"#,
                "max_delay must be greater than zero",
            ),
            (
                r#"{"attempt_timeout": "0ms"}"#,
                "attempt_timeout must be greater than zero",
            ),
            (
                r#"{"budget": {"percent": 1200}}"#,
                "budget.percent must be in [0, 1000], got 1200",
            ),
            (
                r#"{"budget": {"ttl": "500ms"}}"#,
                "budget.ttl must be in [1s, 60s], got 500ms",
            ),
        ] {
            let e = read(json).unwrap_err();
            assert!(e.contains(message), "{json}: {e}");
        }
    }

    #[test]
    fn never_retry_is_refused_with_what_to_do_instead() {
        let e = read(r#"{"never_retry": ["CircuitOpen"]}"#).unwrap_err();
        assert!(e.contains("never_retry can't be read from a file"), "{e}");
        assert!(e.contains("into_builder().never_retry::<T>()"), "{e}");
    }

    #[test]
    fn reads_every_backoff_and_jitter_kind() {
        for (json, backoff) in [
            (
                r#"{"type": "constant", "delay": "250ms"}"#,
                Backoff::constant(ms(250)),
            ),
            (
                r#"{"type": "linear", "initial": "100ms", "step": "50ms"}"#,
                Backoff::linear(ms(100), ms(50)),
            ),
            (
                r#"{"type": "exponential", "initial": "1s", "multiplier": 1.5}"#,
                Backoff::exponential(ms(1000), 1.5),
            ),
        ] {
            let c = read(&format!(r#"{{"backoff": {json}}}"#)).unwrap();
            assert_eq!(c.backoff, backoff, "{json}");
        }
        for (name, jitter) in [
            ("none", Jitter::None),
            ("full", Jitter::Full),
            ("equal", Jitter::Equal),
            ("decorrelated", Jitter::Decorrelated),
        ] {
            let c = read(&format!(r#"{{"jitter": "{name}"}}"#)).unwrap();
            assert_eq!(c.jitter, jitter, "{name}");
        }
    }

    #[test]
    fn reads_every_hedge_delay_kind() {
        let c = read(r#"{"hedge_delay": "40ms"}"#).unwrap();
        assert_eq!(c.hedge_delay, HedgeDelay::Fixed(ms(40)));
        let c = read(r#"{"hedge_delay": {"type": "fixed", "delay": "1s"}}"#).unwrap();
        assert_eq!(c.hedge_delay, HedgeDelay::Fixed(ms(1000)));
        let c = read(
            r#"{"hedge_delay": {"type": "percentile", "p": 95, "min": "5ms", "max": "2s",
                                "window": 200}}"#,
        )
        .unwrap();
        assert_eq!(
            c.hedge_delay,
            HedgeDelay::percentile(95.0, ms(5), ms(2000), 200)
        );
        for (json, message) in [
            (r#""fast""#, "invalid duration \"fast\""),
            (
                r#"{"type": "fixed", "delay": "1 fortnight"}"#,
                "invalid duration",
            ),
            (r#"{"type": "adaptive"}"#, "unknown variant `adaptive`"),
            (
                r#"{"type": "percentile", "p": 95, "min": "5ms", "max": "2s", "window": 9, "n": 1}"#,
                "unknown field `n`",
            ),
            (
                r#"{"type": "percentile", "p": 95, "min": "5ms", "max": "2s"}"#,
                "missing field `window`",
            ),
            (
                "50",
                r#"expected a duration like "50ms", or a table with "type": "fixed" or "percentile""#,
            ),
            (
                r#"{"type": "percentile", "p": 0, "min": "5ms", "max": "2s", "window": 9}"#,
                "hedge_delay.p must be in (0, 100], got 0",
            ),
            (
                r#"{"type": "percentile", "p": 99, "min": "5ms", "max": "2s", "window": 5000}"#,
                "hedge_delay.window must be in [1, 1024], got 5000",
            ),
        ] {
            let e = read(&format!(r#"{{"hedge_delay": {json}}}"#)).unwrap_err();
            assert!(e.contains(message), "{json}: {e}");
        }
    }

    #[test]
    fn reads_every_other_field() {
        let c = read(
            r#"{"max_attempts": 5, "max_delay": "2s", "max_elapsed": "1m",
                "attempt_timeout": "300ms", "budget_error": true, "hedge_delay": "40ms",
                "rng_seed": 7,
                "budget": {"percent": 0.5, "min_per_second": 2, "ttl": "20s",
                           "max_concurrent_retries": 8}}"#,
        )
        .unwrap();
        let expected = RetryConfig::builder()
            .max_attempts(5)
            .max_delay(ms(2000))
            .max_elapsed(Duration::from_secs(60))
            .attempt_timeout(ms(300))
            .budget_error(true)
            .hedge_delay(ms(40))
            .rng_seed(7)
            .budget(
                BudgetConfig::new(0.5, 2, Duration::from_secs(20)).with_max_concurrent_retries(8),
            )
            .build()
            .unwrap();
        assert_eq!(c, expected);
        let c = read(r#"{"budget": {"enabled": false}, "max_elapsed": null}"#).unwrap();
        assert_eq!(c.budget, None);
        assert_eq!(c.max_elapsed, None);
    }
}
