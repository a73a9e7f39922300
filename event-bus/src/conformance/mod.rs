//! The conformance suite: one set of generic tests that every backend runs against its real
//! broker, so that "never loses a message" means the same thing everywhere.
//!
//! A backend author implements [`Backend`] for a small test harness (how to make publishers
//! and subscribers on one broker, which [`Capabilities`] the backend declares, how to shut
//! it down and, for persistent backends, restart it), then expands [`conformance_tests!`](crate::conformance_tests) in
//! an integration test. Every case becomes its own `#[tokio::test]`, so each shows up (and
//! fails) separately in `cargo nextest`. Cases use random topic and group names, so they run
//! in parallel against one broker.
//!
//! ```no_run
//! // tests/conformance_memory.rs (needs tokio with `macros` and `rt-multi-thread`)
//! meshwork_event_bus::conformance_tests!(
//!     meshwork_event_bus::conformance::MemoryBackend::new(),
//!     capabilities = include_str!("capabilities.toml"),
//! );
//! # fn main() {}
//! ```
//!
//! ## Why skips are loud, and capabilities are checked against a list
//! A case that needs a capability the backend does not declare still runs as a test, and
//! reports `SKIPPED by capability` with the reason (set `MESHWORK_CONFORMANCE_FAIL_ON_SKIP=1`
//! to turn every skip into a failure). A suite driven by declared capabilities is only as
//! honest as the declarations, so [`check_capabilities`] compares what a backend declares
//! with a checked-in list (`event-bus/tests/capabilities.toml` for the backends of this
//! crate): a backend cannot pass by declaring less, and a changed guarantee is a reviewed
//! change to that list.
//!
//! ## What is checked
//! See [`CASES`]; each case's documentation says what it proves. Two behaviours belong to
//! the router and are tested with it, not here: graceful shutdown draining and settling
//! in-flight work, and forced duplicates producing one side effect with an idempotency
//! store.
//!
//! ## Stress mode
//! [`stress`] publishes `MESHWORK_CONFORMANCE_STRESS` messages (default
//! [`DEFAULT_STRESS_COUNT`]) through several publishers and consumers and counts every one.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::{BusError, Capabilities, Publisher, Subscriber};

mod capabilities;
mod cases;
mod memory;

pub use capabilities::{check_capabilities, expected_capabilities, skipped_cases};
pub use cases::*;
pub use memory::{MemoryBackend, PublisherClient};

/// The environment variable setting the message count of [`stress`].
pub const STRESS_ENV: &str = "MESHWORK_CONFORMANCE_STRESS";
/// Messages [`stress`] publishes when [`STRESS_ENV`] is not set.
pub const DEFAULT_STRESS_COUNT: usize = 2_000;
/// The environment variable that, set to `1`, turns every skip into a failure.
pub const FAIL_ON_SKIP_ENV: &str = "MESHWORK_CONFORMANCE_FAIL_ON_SKIP";

/// Every case of the suite, in the order [`conformance_tests!`](crate::conformance_tests) expands them. Each name is a
/// public `async fn name(backend: &impl Backend) -> Result<Outcome, CaseFailure>` of this
/// module.
pub const CASES: &[&str] = &[
    "publish_subscribe_exact_payloads_and_headers",
    "concurrent_publishers_and_competing_consumers",
    "many_topics_are_isolated",
    "retry_redelivers_with_attempt_plus_one",
    "delayed_retry_is_not_early_and_other_keys_flow",
    "dead_letter_after_exactly_n_attempts",
    "term_is_never_redelivered",
    "dropped_unsettled_is_redelivered",
    "out_of_order_ack_then_crash_redelivers_the_earlier",
    "continue_after_subscriber_closes",
    "concurrent_close",
    "per_key_order_under_several_consumers",
    "publisher_close_flushes",
    "consumer_groups_fan_out",
    "new_group_reads_the_backlog",
    "publish_after_shutdown_is_an_error",
    "arbitrary_bytes_round_trip",
    "poison_message_dead_lettered_does_not_block",
    "identical_payloads_are_distinct_messages",
    "survives_a_broker_restart",
    "stress",
];

/// A backend under test: how to reach one broker, and what the backend promises.
///
/// The suite makes a fresh `Backend` for every case (the `conformance_tests!` factory runs
/// once per test), and only ever uses names it made up, so one broker can serve every case
/// at once.
///
/// Contract the cases rely on:
/// * [`publisher`](Self::publisher) and [`subscriber`](Self::subscriber) return a new
///   *client* of the broker each time (a connection, a producer, a consumer). Closing a
///   publisher client flushes it and refuses its later publishes; it does not stop other
///   clients. (An in-process bus, whose `close` shuts the whole bus, wraps its publisher in
///   [`PublisherClient`], as [`MemoryBackend`] does.)
/// * A `Subscription` that `subscribe` has returned receives every message published to its
///   topic afterwards.
/// * [`shutdown`](Self::shutdown) shuts this backend instance down: afterwards publishing
///   through any of its clients fails, and its subscriptions end or fail; nothing hangs.
///
/// ```
/// use meshwork_event_bus::conformance::{Backend, MemoryBackend};
///
/// let backend = MemoryBackend::new();
/// assert_eq!(backend.name(), "memory");
/// assert!(backend.capabilities().per_key_ordering);
/// ```
pub trait Backend: Send + Sync {
    /// The publisher client type.
    type Publisher: Publisher + 'static;
    /// The subscriber client type.
    type Subscriber: Subscriber + 'static;

    /// The backend's name, as in the checked-in capability list (`memory`, `kafka`, ...).
    fn name(&self) -> &str;

    /// What the backend declares it guarantees.
    fn capabilities(&self) -> Capabilities;

    /// A new publisher client of the broker.
    fn publisher(&self) -> impl Future<Output = Result<Self::Publisher, BusError>> + Send;

    /// A new subscriber client of the broker.
    fn subscriber(&self) -> impl Future<Output = Result<Self::Subscriber, BusError>> + Send;

    /// Shuts this backend instance down (see the trait docs).
    fn shutdown(&self) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Restarts the broker, for [`survives_a_broker_restart`]: clients made before may stop
    /// working; the suite makes new ones. Returns `Ok(false)` (the default) when the harness
    /// cannot restart its broker, which fails that case for a backend declaring
    /// `persistent`. Put cases that restart a shared broker in a serial nextest group.
    fn restart(&self) -> impl Future<Output = Result<bool, BusError>> + Send {
        async { Ok(false) }
    }

    /// How long the cases wait; see [`Timing`].
    fn timing(&self) -> Timing {
        Timing::default()
    }
}

/// How long the cases wait for things to happen, and for things not to.
///
/// ```
/// use meshwork_event_bus::conformance::Timing;
/// use std::time::Duration;
///
/// let t = Timing::default().quiet_period(Duration::from_millis(200));
/// assert_eq!(t.quiet_period, Duration::from_millis(200));
/// assert_eq!(t.receive_timeout, Timing::DEFAULT_RECEIVE_TIMEOUT);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// Longest wait for an expected delivery (or publish, or close) before a case fails.
    pub receive_timeout: Duration,
    /// How long a case watches to be sure that something is *not* delivered.
    pub quiet_period: Duration,
    /// The delay the delayed-retry case asks for. Other keys must flow within it, so it
    /// should comfortably exceed a round trip to the broker.
    pub retry_delay: Duration,
}

impl Timing {
    /// Default [`receive_timeout`](Self::receive_timeout): 30 s.
    pub const DEFAULT_RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default [`quiet_period`](Self::quiet_period): 500 ms.
    pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_millis(500);
    /// Default [`retry_delay`](Self::retry_delay): 2 s.
    pub const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(2);

    /// Sets [`receive_timeout`](Self::receive_timeout).
    #[must_use]
    pub fn receive_timeout(mut self, timeout: Duration) -> Self {
        self.receive_timeout = timeout;
        self
    }

    /// Sets [`quiet_period`](Self::quiet_period).
    #[must_use]
    pub fn quiet_period(mut self, period: Duration) -> Self {
        self.quiet_period = period;
        self
    }

    /// Sets [`retry_delay`](Self::retry_delay).
    #[must_use]
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            receive_timeout: Self::DEFAULT_RECEIVE_TIMEOUT,
            quiet_period: Self::DEFAULT_QUIET_PERIOD,
            retry_delay: Self::DEFAULT_RETRY_DELAY,
        }
    }
}

/// How a case ended when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Everything the case checks was checked and held.
    Passed,
    /// The case ran, but some of its checks need a capability the backend does not declare;
    /// each entry says which check and why.
    PartlySkipped(Vec<String>),
    /// The case needs a capability the backend does not declare; nothing was checked.
    Skipped(String),
}

/// Why a case failed: what was expected and what happened.
///
/// ```
/// use meshwork_event_bus::conformance::CaseFailure;
///
/// let f = CaseFailure::new("expected 3 deliveries, got 2");
/// assert_eq!(f.to_string(), "expected 3 deliveries, got 2");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseFailure {
    message: String,
}

impl CaseFailure {
    /// A failure saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        CaseFailure {
            message: message.into(),
        }
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CaseFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CaseFailure {}

/// Reports a case's result the way a test should: panics on failure, prints every skip (to
/// stderr, prefixed `SKIPPED by capability`), and panics on a skip too when
/// [`FAIL_ON_SKIP_ENV`] is `1`. Used by [`conformance_tests!`](crate::conformance_tests).
///
/// ```
/// use meshwork_event_bus::conformance::{MemoryBackend, Outcome, report};
///
/// report(&MemoryBackend::new(), "some_case", Ok(Outcome::Passed));
/// ```
#[track_caller]
pub fn report<B: Backend>(backend: &B, case: &str, result: Result<Outcome, CaseFailure>) {
    let name = backend.name();
    let strict = std::env::var(FAIL_ON_SKIP_ENV).is_ok_and(|v| v == "1");
    let skipped = match result {
        Ok(Outcome::Passed) => return,
        Ok(Outcome::Skipped(why)) => vec![format!("the whole case: {why}")],
        Ok(Outcome::PartlySkipped(parts)) => parts,
        Err(failure) => {
            panic!("conformance case `{case}` failed on backend `{name}`: {failure}")
        }
    };
    for why in &skipped {
        let line = format!("SKIPPED by capability: case `{case}` on backend `{name}`: {why}");
        eprintln!("{line}");
    }
    if strict {
        panic!(
            "conformance case `{case}` on backend `{name}` skipped checks and {FAIL_ON_SKIP_ENV}=1: {}",
            skipped.join("; ")
        );
    }
}

/// Expands to one `#[tokio::test]` per conformance case (named as in [`CASES`]), each
/// running the case against a fresh backend from `factory`, plus a test that the list of
/// cases is complete. With `capabilities = <list text>`, it also expands
/// `declared_capabilities_match_checked_in_list`, which runs [`check_capabilities`].
///
/// `factory` is an expression evaluated inside each async test, so it may `.await`. The
/// calling crate needs `tokio` (features `macros`, `rt-multi-thread`) as a dev-dependency.
///
/// ```no_run
/// // One module per backend keeps the test names apart: `memory::stress`, ...
/// mod memory {
///     meshwork_event_bus::conformance_tests!(
///         meshwork_event_bus::conformance::MemoryBackend::new()
///     );
/// }
/// # fn main() {}
/// ```
#[macro_export]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
macro_rules! conformance_tests {
    (@cases ($factory:expr) $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let backend = $factory;
                let result = $crate::conformance::$case(&backend).await;
                $crate::conformance::report(&backend, stringify!($case), result);
            }
        )+

        #[test]
        fn conformance_case_list_is_complete() {
            let expanded: &[&str] = &[$(stringify!($case)),+];
            assert_eq!(
                expanded,
                $crate::conformance::CASES,
                "conformance_tests! and conformance::CASES disagree"
            );
        }
    };
    ($factory:expr, capabilities = $list:expr $(,)?) => {
        $crate::conformance_tests!($factory);

        #[::tokio::test]
        async fn declared_capabilities_match_checked_in_list() {
            let backend = $factory;
            if let Err(failure) = $crate::conformance::check_capabilities(&backend, $list) {
                panic!("{failure}");
            }
        }
    };
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@cases ($factory)
            publish_subscribe_exact_payloads_and_headers,
            concurrent_publishers_and_competing_consumers,
            many_topics_are_isolated,
            retry_redelivers_with_attempt_plus_one,
            delayed_retry_is_not_early_and_other_keys_flow,
            dead_letter_after_exactly_n_attempts,
            term_is_never_redelivered,
            dropped_unsettled_is_redelivered,
            out_of_order_ack_then_crash_redelivers_the_earlier,
            continue_after_subscriber_closes,
            concurrent_close,
            per_key_order_under_several_consumers,
            publisher_close_flushes,
            consumer_groups_fan_out,
            new_group_reads_the_backlog,
            publish_after_shutdown_is_an_error,
            arbitrary_bytes_round_trip,
            poison_message_dead_lettered_does_not_block,
            identical_payloads_are_distinct_messages,
            survives_a_broker_restart,
            stress,
        );
    };
}
