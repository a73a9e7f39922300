//! `Deserialize` for [`BulkheadConfig`], through the same validation as the builder.
//!
//! Durations are human-readable strings ("250ms", "30s", "2m"); unknown fields are errors, and
//! missing fields take their defaults. The adaptive limit is tagged by `type` (`"aimd"` or
//! `"gradient"`) and its own missing fields take their defaults too.
//!
//! ```
//! use meshwork_bulkhead::{AdaptiveLimit, BulkheadConfig, QueueOrder};
//! use std::time::Duration;
//!
//! let config: BulkheadConfig = serde_json::from_str(r#"{
//!     "max_concurrent_calls": 50,
//!     "max_wait": "20ms",
//!     "queue_order": "lifo",
//!     "partitions": [
//!         { "name": "live", "share": 0.9 },
//!         { "name": "batch", "share": 0.1 }
//!     ],
//!     "adaptive": { "type": "aimd", "min_limit": 5, "max_limit": 200, "latency_threshold": "500ms" }
//! }"#)?;
//! assert_eq!(config.max_wait, Duration::from_millis(20));
//! assert_eq!(config.queue_order, QueueOrder::Lifo);
//! assert_eq!(config.partitions[1].name(), "batch");
//! let Some(AdaptiveLimit::Aimd(aimd)) = config.adaptive else { unreachable!() };
//! assert_eq!((aimd.min_limit, aimd.max_limit), (5, 200));
//!
//! let err = serde_json::from_str::<BulkheadConfig>(r#"{ "max_concurrent_calls": 0 }"#)
//!     .unwrap_err();
//! assert!(err.to_string().contains("max_concurrent_calls must be at least 1, got 0"));
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::{AdaptiveLimit, Aimd, BulkheadConfig, ConfigError, Gradient, Partition, QueueOrder};

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?}: {e} (write it like \"500ms\", \"30s\" or \"2m\")"
        ))
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawOrder {
    Fifo,
    Lifo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    name: String,
    share: f64,
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawAimd {
    min_limit: usize,
    max_limit: usize,
    backoff_ratio: f64,
    #[serde(deserialize_with = "duration")]
    latency_threshold: Duration,
}

impl Default for RawAimd {
    fn default() -> Self {
        let d = Aimd::default();
        RawAimd {
            min_limit: d.min_limit,
            max_limit: d.max_limit,
            backoff_ratio: d.backoff_ratio,
            latency_threshold: d.latency_threshold,
        }
    }
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawGradient {
    min_limit: usize,
    max_limit: usize,
    tolerance: f64,
    smoothing: f64,
    sample_window: u32,
    #[serde(deserialize_with = "duration")]
    probe_interval: Duration,
    probe_jitter: f64,
    probe_samples: u32,
    /// `None`: the default of [`Gradient::new`], within the bounds.
    probe_limit: Option<usize>,
    seed: Option<u64>,
}

impl Default for RawGradient {
    fn default() -> Self {
        let d = Gradient::default();
        RawGradient {
            min_limit: d.min_limit,
            max_limit: d.max_limit,
            tolerance: d.tolerance,
            smoothing: d.smoothing,
            sample_window: d.sample_window,
            probe_interval: d.probe_interval,
            probe_jitter: d.probe_jitter,
            probe_samples: d.probe_samples,
            probe_limit: None,
            seed: d.seed,
        }
    }
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RawAdaptive {
    Aimd(RawAimd),
    Gradient(RawGradient),
}

#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct RawConfig {
    max_concurrent_calls: usize,
    #[serde(deserialize_with = "duration")]
    max_wait: Duration,
    queue_order: Option<RawOrder>,
    max_waiters: usize,
    partitions: Vec<RawPartition>,
    adaptive: Option<RawAdaptive>,
}

impl Default for RawConfig {
    fn default() -> Self {
        let d = BulkheadConfig::default();
        RawConfig {
            max_concurrent_calls: d.max_concurrent_calls,
            max_wait: d.max_wait,
            queue_order: None,
            max_waiters: d.max_waiters,
            partitions: Vec::new(),
            adaptive: None,
        }
    }
}

impl TryFrom<RawConfig> for BulkheadConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let adaptive = raw.adaptive.map(|a| match a {
            RawAdaptive::Aimd(a) => {
                let mut aimd = Aimd::new(a.min_limit, a.max_limit);
                aimd.backoff_ratio = a.backoff_ratio;
                aimd.latency_threshold = a.latency_threshold;
                AdaptiveLimit::Aimd(aimd)
            }
            RawAdaptive::Gradient(g) => {
                let mut gradient = Gradient::new(g.min_limit, g.max_limit);
                gradient.tolerance = g.tolerance;
                gradient.smoothing = g.smoothing;
                gradient.sample_window = g.sample_window;
                gradient.probe_interval = g.probe_interval;
                gradient.probe_jitter = g.probe_jitter;
                gradient.probe_samples = g.probe_samples;
                if let Some(probe_limit) = g.probe_limit {
                    gradient.probe_limit = probe_limit;
                }
                gradient.seed = g.seed;
                AdaptiveLimit::Gradient(gradient)
            }
        });
        let config = BulkheadConfig {
            max_concurrent_calls: raw.max_concurrent_calls,
            max_wait: raw.max_wait,
            queue_order: match raw.queue_order {
                None => QueueOrder::default(),
                Some(RawOrder::Fifo) => QueueOrder::Fifo,
                Some(RawOrder::Lifo) => QueueOrder::Lifo,
            },
            max_waiters: raw.max_waiters,
            partitions: raw
                .partitions
                .into_iter()
                .map(|p| Partition::new(p.name, p.share))
                .collect(),
            adaptive,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_PROBE_LIMIT, DEFAULT_SAMPLE_WINDOW};

    fn parse(json: &str) -> Result<BulkheadConfig, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_document_is_the_default() {
        assert_eq!(parse("{}"), Ok(BulkheadConfig::default()));
    }

    #[test]
    fn reads_every_field() {
        let c = parse(
            r#"{"max_concurrent_calls": 40, "max_wait": "1s 500ms", "queue_order": "fifo",
                "max_waiters": 7, "partitions": [{"name": "a", "share": 0.25}],
                "adaptive": {"type": "gradient", "min_limit": 4, "max_limit": 80,
                  "tolerance": 2, "smoothing": 0.5, "sample_window": 10,
                  "probe_interval": "5m", "probe_jitter": 0, "probe_samples": 9,
                  "probe_limit": 6, "seed": 11}}"#,
        )
        .unwrap();
        let mut g = Gradient::new(4, 80);
        g.tolerance = 2.0;
        g.smoothing = 0.5;
        g.sample_window = 10;
        g.probe_interval = Duration::from_secs(300);
        g.probe_jitter = 0.0;
        g.probe_samples = 9;
        g.probe_limit = 6;
        g.seed = Some(11);
        let expected = BulkheadConfig::builder()
            .max_concurrent_calls(40)
            .max_wait(Duration::from_millis(1500))
            .queue_order(QueueOrder::Fifo)
            .max_waiters(7)
            .partition(Partition::new("a", 0.25))
            .adaptive(AdaptiveLimit::Gradient(g))
            .build()
            .unwrap();
        assert_eq!(c, expected);
    }

    #[test]
    fn missing_adaptive_fields_take_their_defaults() {
        let c = parse(
            r#"{"max_concurrent_calls": 5, "adaptive": {"type": "gradient", "min_limit": 5}}"#,
        )
        .unwrap();
        let Some(AdaptiveLimit::Gradient(g)) = c.adaptive else {
            panic!("{c:?}")
        };
        // Like `Gradient::new`: the probe limit is raised to the minimum.
        assert_eq!(
            (g.min_limit, g.probe_limit),
            (5, 5.max(DEFAULT_PROBE_LIMIT))
        );
        assert_eq!(g.sample_window, DEFAULT_SAMPLE_WINDOW);
        let c = parse(r#"{"adaptive": {"type": "aimd"}}"#).unwrap();
        assert_eq!(c.adaptive, Some(AdaptiveLimit::Aimd(Aimd::default())));
    }

    #[test]
    fn rejects_unknown_fields_bad_durations_and_bad_values() {
        let e = parse(r#"{"max_concurrent": 5}"#).unwrap_err();
        assert!(e.contains("unknown field `max_concurrent`"), "{e}");
        let e = parse(r#"{"partitions": [{"name": "a", "share": 0.5, "weight": 1}]}"#).unwrap_err();
        assert!(e.contains("unknown field `weight`"), "{e}");
        let e = parse(r#"{"adaptive": {"type": "aimd", "backoff": 0.5}}"#).unwrap_err();
        assert!(e.contains("unknown field `backoff`"), "{e}");
        let e = parse(r#"{"adaptive": {"type": "vegas"}}"#).unwrap_err();
        assert!(e.contains("unknown variant `vegas`"), "{e}");
        let e = parse(r#"{"queue_order": "random"}"#).unwrap_err();
        assert!(e.contains("unknown variant `random`"), "{e}");
        let e = parse(r#"{"max_wait": "soon"}"#).unwrap_err();
        assert!(e.contains("invalid duration \"soon\""), "{e}");
        let e = parse(r#"{"max_wait": "1s", "max_waiters": 0}"#).unwrap_err();
        assert!(
            e.contains("max_waiters must be at least 1 when max_wait is set, got 0"),
            "{e}"
        );
        let e =
            parse(r#"{"partitions": [{"name": "a", "share": 0.6}, {"name": "b", "share": 0.6}]}"#)
                .unwrap_err();
        assert!(e.contains("shares adding up to at most 1"), "{e}");
        let e = parse(
            r#"{"max_concurrent_calls": 5, "adaptive": {"type": "aimd", "backoff_ratio": 1.5}}"#,
        )
        .unwrap_err();
        assert!(
            e.contains("backoff_ratio must be in [0.5, 1), got 1.5"),
            "{e}"
        );
        let e = parse(r#"{"adaptive": {"type": "gradient", "probe_interval": "0s"}}"#).unwrap_err();
        assert!(e.contains("probe_interval must be above zero"), "{e}");
    }
}
