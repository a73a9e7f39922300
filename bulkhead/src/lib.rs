//! A bulkhead for Rust services: caps how many calls run at once, so one slow dependency or
//! one noisy tenant cannot take every task, connection or thread of a service, and sheds
//! the excess load at once instead of letting it queue without bound.
//!
//! Why another one: tokio's `Semaphore` and tower's `ConcurrencyLimit` cap concurrency but
//! always wait, in FIFO order, forever; resilience4j-style bulkheads add bounded waits but
//! cost several times a semaphore. This crate keeps the semaphore's price on the try path
//! (one compare-and-swap to take a permit, one atomic subtraction to return it, no lock, no
//! allocation, no clock read) and adds what production services ask for:
//!
//! - **reject fast or wait a bounded time**, FIFO or **LIFO** (under overload LIFO serves
//!   fresh calls while stale ones time out), behind a cap on waiters;
//! - **owned permits** that move into spawned tasks;
//! - **partitions**: named shares of one limit with guaranteed minimums (live 90%, batch 10%):
//!   a partition borrows unused capacity, but a flood never takes another's minimum;
//! - **keyed bulkheads** (per tenant, per upstream), created on first use, bounded, evicted
//!   when idle;
//! - **adaptive limits**: [AIMD](Aimd) and a latency [gradient](Gradient) with bounds and
//!   Envoy-style periodic minimum-RTT probes with jitter;
//! - **events**, **metrics** and **tracing** at limit changes and rejections;
//! - a load-shedding **tower layer** whose refusal is a typed error naming the bulkhead.
//!
//! # Example
//! ```
//! use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Error, QueueOrder, RejectReason};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = BulkheadConfig::builder()
//!     .max_concurrent_calls(10)
//!     .max_wait(Duration::from_millis(20))
//!     .queue_order(QueueOrder::Lifo)
//!     .max_waiters(50)
//!     .build()?;
//! let payments = Bulkhead::new("payments", config);
//!
//! // The direct API: waits up to 20ms for a permit, then refuses.
//! let receipt = payments.call(|| async { Ok::<_, std::io::Error>("paid") }).await?;
//! assert_eq!(receipt, "paid");
//!
//! // The permit API, for clients that can't be wrapped: never waits.
//! let held: Vec<_> = (0..10).map(|_| payments.try_acquire()).collect::<Result<_, _>>()?;
//! let rejected = payments.try_acquire().unwrap_err();
//! assert_eq!(rejected.reason(), RejectReason::Full);
//! assert_eq!(rejected.to_string(), "bulkhead 'payments' is full (10 of 10 in flight)");
//! drop(held);
//!
//! // Errors say which of the two failed.
//! let err = payments.call(|| async { Err::<(), _>("declined") }).await.unwrap_err();
//! assert!(matches!(err, Error::Inner("declined")));
//! # Ok(())
//! # }
//! ```
//!
//! # Three ways in
//! 1. [`Bulkhead::call`] runs an async closure under a permit.
//! 2. Permits: [`Bulkhead::try_acquire`] (never waits), [`Bulkhead::acquire`] (waits up to
//!    `max_wait`), and their `_owned` forms; [`Permit::record`] tells an adaptive limit how
//!    the call went.
//! 3. [`BulkheadLayer`] (feature `tower`), a load-shedding tower middleware.
//!
//! # Feature flags
//! | feature   | default | what it adds |
//! |-----------|---------|--------------|
//! | `tower`   | yes     | [`BulkheadLayer`] / [`BulkheadService`] |
//! | `serde`   | no      | `Deserialize` for [`BulkheadConfig`], validated like the builder (durations as `"250ms"`, unknown fields refused, missing fields at their defaults) |
//! | `metrics` | no      | gauges `meshwork_bulkhead_limit`, `meshwork_bulkhead_in_flight`, `meshwork_bulkhead_waiting` and the counter `meshwork_bulkhead_rejected_total` (labels `bulkhead`, `reason`) through the `metrics` facade |
//! | `tracing` | no      | `tracing` debug events at limit changes and rejections, never per admitted call |
//!
//! # Minimum supported Rust version
//! Rust 1.95 (edition 2024).

#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod bulkhead;
mod config;
mod error;
mod event;
mod keyed;
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod layer;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
mod serde_config;

pub use crate::bulkhead::{Bulkhead, Metrics, Outcome, OwnedPermit, Permit};
pub use crate::config::{
    AdaptiveLimit, Aimd, BulkheadConfig, BulkheadConfigBuilder, ConfigError, DEFAULT_BACKOFF_RATIO,
    DEFAULT_LATENCY_THRESHOLD, DEFAULT_MAX_CONCURRENT_CALLS, DEFAULT_MAX_LIMIT, DEFAULT_MAX_WAIT,
    DEFAULT_MAX_WAITERS, DEFAULT_MIN_LIMIT, DEFAULT_PROBE_INTERVAL, DEFAULT_PROBE_JITTER,
    DEFAULT_PROBE_LIMIT, DEFAULT_PROBE_SAMPLES, DEFAULT_QUEUE_ORDER, DEFAULT_SAMPLE_WINDOW,
    DEFAULT_SMOOTHING, DEFAULT_TOLERANCE, Gradient, MAX_LIMIT, MAX_PARTITIONS, MAX_PROBE_INTERVAL,
    Partition, QueueOrder,
};
pub use crate::error::{Error, RejectReason, Rejected};
pub use crate::event::Event;
pub use crate::keyed::{DEFAULT_MAX_KEYS, KeyedBuilder, KeyedBulkhead};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use crate::layer::{BulkheadLayer, BulkheadService};
