//! # meshwork-circuit-breaker
//!
//! A circuit breaker stops a service from calling an upstream that keeps failing or has
//! become too slow, so one sick dependency can't take its callers down with it; after a pause
//! it lets a few probe calls through and closes again once the upstream has recovered.
//!
//! What sets this one apart:
//! * **True sliding windows.** A count window is a ring of the last N calls (each call evicts
//!   the oldest), a time window a ring of buckets that expire as time moves; both O(1) per
//!   call. A consecutive-failures mode is there too.
//! * **The thresholds teams use:** failure rate, slow-call rate with a slow-call duration, an
//!   absolute failure count per window ("5 failures per minute"), a minimum number of calls.
//! * **Exact half-open probing:** exactly N probes are admitted however many callers race, a
//!   cancelled probe gives its permit back, a success ratio decides, and a maximum half-open
//!   duration keeps hung probes from leaving it stuck.
//! * **Open durations that back off** with jitter, so a fleet doesn't probe in step.
//! * **Manual states:** `Disabled`, `ForcedOpen` and `MetricsOnly` (records and reports but
//!   never rejects: the safe way to roll out thresholds).
//! * **Three ways in, one core:** [`CircuitBreaker::call`], a permit API for clients that
//!   can't be wrapped, and a tower [`CircuitBreakerLayer`].
//! * **Fast:** the closed path takes no lock and allocates nothing.
//!
//! ## Example
//! ```
//! use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, Error, SlidingWindow};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let breaker = CircuitBreaker::new(
//!     "payments",
//!     CircuitBreakerConfig::builder()
//!         .sliding_window(SlidingWindow::Count { size: 20 })
//!         .minimum_number_of_calls(5)
//!         .failure_rate_threshold(50.0)
//!         .open_duration(Duration::from_secs(10))
//!         .build()?,
//! );
//!
//! match breaker.call(|| async { charge_card().await }).await {
//!     Ok(receipt) => println!("charged: {receipt}"),
//!     Err(Error::Rejected(rejected)) => println!("not even trying: {rejected}"),
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
//! | `tower` | yes | [`CircuitBreakerLayer`] and [`CircuitBreakerService`] |
//! | `serde` | no | `Deserialize` for [`CircuitBreakerConfig`], validated like the builder |
//! | `metrics` | no | state gauge, transition and rejection counters through `metrics` |
//! | `tracing` | no | `tracing` events at state transitions and threshold crossings |
//!
//! ## Minimum supported Rust version
//! Rust 1.95.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod config;
mod error;
mod event;
mod keyed;
#[cfg(feature = "tower")]
mod layer;
mod outcome;
#[cfg(feature = "serde")]
mod serde_config;
mod state;
mod window;

pub use breaker::{CircuitBreaker, Metrics, OwnedPermit, Permit};
pub use config::{
    CircuitBreakerConfig, CircuitBreakerConfigBuilder, ConfigError, DEFAULT_FAILURE_RATE_THRESHOLD,
    DEFAULT_HALF_OPEN_SUCCESS_THRESHOLD, DEFAULT_MAX_HALF_OPEN_DURATION,
    DEFAULT_MINIMUM_NUMBER_OF_CALLS, DEFAULT_OPEN_DURATION, DEFAULT_PERMITTED_CALLS_IN_HALF_OPEN,
    DEFAULT_SLOW_CALL_RATE_THRESHOLD, DEFAULT_WINDOW_SIZE, MAX_PERMITTED_CALLS_IN_HALF_OPEN,
    MAX_TIME_BUCKETS, MAX_WINDOW_SIZE, OpenBackoff, SlidingWindow,
};
pub use error::{Error, Rejected};
pub use event::Event;
pub use keyed::{DEFAULT_MAX_KEYS, KeyedBuilder, KeyedCircuitBreaker, KeyedMetrics};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, ResponseFuture};
pub use outcome::{Classify, DefaultClassifier, Outcome};
pub use state::State;
