//! # meshwork-retry
//!
//! Retries that can't storm. A retry policy makes a failed call again after a delay, so a
//! blip in an upstream doesn't become an error for your user; done naively, it multiplies the
//! load on an upstream that is already struggling and turns a slowdown into an outage. This
//! crate retries with the guard rails that resilience4j, Polly, Finagle, Envoy and tower each
//! got part of, in one place:
//!
//! * **Backoff** constant, linear or exponential, with full, equal or decorrelated **jitter**
//!   from a seedable RNG; caps on attempts, on each delay and on the total time; an optional
//!   timeout per attempt.
//! * **Retry budgets on by default** (Finagle): retries are at most a percentage of recent
//!   calls plus a small reserve per second, exact for fractional percentages, with a cap on
//!   concurrent retries (Envoy). See [`RetryBudget`] for why a budget beats a bare attempt cap.
//! * **Retry on results, not only errors** (a `503` is an `Ok`), with sync or async
//!   classifiers, and a **delay hook** ([`Decision::RetryAfter`]): the `http` feature parses
//!   `Retry-After` (seconds and HTTP-date, capped).
//! * **"Don't retry" markers** without dependencies: register an error type with
//!   [`RetryConfigBuilder::never_retry`] (a circuit breaker's or a bulkhead's rejection) and an
//!   error holding one is returned at once and spends no budget.
//! * **Hedging** ([`Retry::hedge`]): a backup attempt after a fixed delay or after an observed
//!   percentile of recent latencies ([`HedgeDelay::Percentile`]), budgeted; the first success
//!   wins, the others are cancelled.
//! * **One policy per key** ([`KeyedRetry`]): a policy, and so a budget, per upstream host,
//!   created on first use, with per-key overrides and bounded with eviction of idle keys, so
//!   one sick upstream can't spend another's retries.
//! * **Three ways in**: [`Retry::call`], the step API ([`Retry::start`]) for code that can't be
//!   wrapped, and a tower [`RetryLayer`] that works with axum/hyper requests, replaying bodies
//!   that can't be cloned from a bounded buffer (`http` feature) or not retrying them at all,
//!   never sending them empty.
//! * **Configuration from a file** (`serde` feature): [`RetryConfig`] deserializes through the
//!   builder's validation, durations written `"250ms"`.
//! * **Events, metrics, tracing** on retries and give-ups; nothing on the success path, which
//!   reads no clock, takes no lock and allocates nothing (a relaxed load and store on a
//!   per-thread stripe of the budget's call counter).
//!
//! ## Example
//! ```
//! use meshwork_retry::{Backoff, Error, Retry, RetryConfig};
//! use std::time::Duration;
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("circuit open")]
//! struct CircuitOpen;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let retry = Retry::new(
//!     "payments",
//!     RetryConfig::builder()
//!         .max_attempts(4)
//!         .backoff(Backoff::exponential(Duration::from_millis(50), 2.0))
//!         .max_delay(Duration::from_secs(1))
//!         .never_retry::<CircuitOpen>()
//!         .build()?,
//! );
//!
//! match retry.call(|| async { charge_card().await }).await {
//!     Ok(receipt) => println!("charged: {receipt}"),
//!     Err(Error::Inner(e)) => println!("payment failed: {e}"),
//!     Err(e) => println!("{e}"),
//! }
//! # Ok(())
//! # }
//! # async fn charge_card() -> Result<String, std::io::Error> { Ok("r-1".into()) }
//! ```
//!
//! ## Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tower` | yes | [`RetryLayer`] and [`RetryService`] |
//! | `http` | no | `http` module: `Retry-After` parsing, a 429/503 classifier, a bounded replay body |
//! | `serde` | no | `Deserialize` for [`RetryConfig`], validated like the builder; durations as `"250ms"` (see [`RetryConfig`]) |
//! | `metrics` | no | retry, give-up, budget-exhaustion and hedge counters through `metrics` |
//! | `tracing` | no | `tracing` events on retries and give-ups |
//!
//! ## Minimum supported Rust version
//! Rust 1.95.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod budget;
mod classify;
mod config;
mod error;
mod event;
mod hedge;
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub mod http;
mod keyed;
#[cfg(feature = "tower")]
mod layer;
mod retry;
#[cfg(feature = "serde")]
mod serde_config;

pub use backoff::Delays;
pub use budget::RetryBudget;
pub use classify::{Classify, Decision, OnError};
pub use config::{
    Backoff, BudgetConfig, ConfigError, DEFAULT_BUDGET_MIN_PER_SECOND, DEFAULT_BUDGET_PERCENT,
    DEFAULT_BUDGET_TTL, DEFAULT_HEDGE_DELAY, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_CONCURRENT_RETRIES, DEFAULT_MAX_DELAY, DEFAULT_MULTIPLIER, ErrorType, HedgeDelay,
    Jitter, MAX_BUDGET_PERCENT, MAX_BUDGET_TTL, MAX_HEDGE_WINDOW, MAX_MULTIPLIER, MIN_BUDGET_TTL,
    RetryConfig, RetryConfigBuilder,
};
pub use error::{BudgetExhausted, Error, TimedOut};
pub use event::{Event, GiveUpReason};
pub use keyed::{DEFAULT_MAX_KEYS, KeyedBuilder, KeyedRetry};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use layer::{CloneRequest, Cloned, ResponseFuture, RetryLayer, RetryService};
pub use retry::{Attempts, Next, Retry};
