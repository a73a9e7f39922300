//! Events a retry policy reports, and the listeners that receive them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why a policy stopped retrying a call that it would otherwise have retried.
///
/// ```
/// use meshwork_retry::{GiveUpReason, Next, Retry, RetryConfig};
///
/// let retry = Retry::new("once", RetryConfig::builder().max_attempts(1).build()?);
/// let mut attempts = retry.start();
/// let next = attempts.next_delay(&Err::<(), _>(std::fmt::Error));
/// assert_eq!(next, Next::GiveUp(GiveUpReason::MaxAttempts));
/// assert_eq!(GiveUpReason::MaxAttempts.as_str(), "max_attempts");
/// assert!(GiveUpReason::Concurrency.is_budget());
/// # Ok::<(), meshwork_retry::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// `max_attempts` attempts were made.
    MaxAttempts,
    /// The next delay would have crossed `max_elapsed`.
    MaxElapsed,
    /// The budget had no retry left.
    Budget,
    /// Too many call sequences were retrying already (`max_concurrent_retries`).
    Concurrency,
    /// The request could not be cloned or replayed (tower adapter only).
    NotReplayable,
}

impl GiveUpReason {
    /// A short snake_case name, as used in metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            GiveUpReason::MaxAttempts => "max_attempts",
            GiveUpReason::MaxElapsed => "max_elapsed",
            GiveUpReason::Budget => "budget",
            GiveUpReason::Concurrency => "concurrency",
            GiveUpReason::NotReplayable => "not_replayable",
        }
    }

    /// Whether the budget (its tokens or its concurrency cap) refused.
    pub fn is_budget(&self) -> bool {
        matches!(self, GiveUpReason::Budget | GiveUpReason::Concurrency)
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something worth knowing that happened in a retry policy. Successful calls report nothing.
///
/// Events are delivered synchronously to listeners added with
/// [`Retry::on_event`](crate::Retry::on_event); when nobody listens, no event is built.
///
/// ```
/// use meshwork_retry::{Event, Retry, RetryConfig, Jitter};
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let retry = Retry::new("mail", RetryConfig::builder().jitter(Jitter::None).build().unwrap());
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = seen.clone();
/// retry.on_event(move |event| sink.lock().unwrap().push(event.clone()));
/// let _ = retry.call(|| async { Err::<(), _>(std::fmt::Error) }).await;
/// let seen = seen.lock().unwrap();
/// assert!(matches!(seen[0], Event::Retry { attempt: 1, delay, .. } if delay == Duration::from_millis(100)));
/// assert!(matches!(seen[2], Event::GaveUp { attempts: 3, .. }));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// Attempt `attempt` failed in a retryable way; the next starts after `delay`.
    Retry {
        /// The policy's name.
        name: Arc<str>,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// The delay before the next attempt.
        delay: Duration,
    },
    /// [`Retry::hedge`](crate::Retry::hedge) started another attempt: after `hedge_delay`
    /// while earlier ones still run, or at once after a retryable failure.
    Hedge {
        /// The policy's name.
        name: Arc<str>,
        /// The number of the attempt started (2 for the first hedge).
        attempt: u32,
    },
    /// A retryable failure was not retried, for a reason other than the budget.
    GaveUp {
        /// The policy's name.
        name: Arc<str>,
        /// Attempts made.
        attempts: u32,
        /// Why retrying stopped.
        reason: GiveUpReason,
    },
    /// The budget refused a retry: its tokens ran out, or too many calls were retrying.
    BudgetExhausted {
        /// The policy's name.
        name: Arc<str>,
        /// Attempts made.
        attempts: u32,
        /// `true` when the cap on concurrent retries refused, `false` for the tokens.
        concurrency: bool,
    },
}

pub(crate) type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The listeners of one policy. Emitting checks one relaxed flag when nobody listens.
pub(crate) struct Listeners {
    any: AtomicBool,
    list: RwLock<Arc<[Listener]>>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            any: AtomicBool::new(false),
            list: RwLock::new(Arc::from(Vec::new())),
        }
    }
}

impl Listeners {
    pub(crate) fn add(&self, listener: Listener) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut grown = list.to_vec();
        grown.push(listener);
        *list = grown.into();
        self.any.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Calls every listener with `event`.
    pub(crate) fn deliver(&self, event: &Event) {
        // Take the shared list out of the lock, so a listener may add listeners.
        let list = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        for listener in list.iter() {
            listener(event);
        }
    }
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.read().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("Listeners").field("count", &n).finish()
    }
}

/// Listeners, metrics and tracing of one policy, all on the retry path only.
#[derive(Debug)]
pub(crate) struct Telemetry {
    name: Arc<str>,
    listeners: Listeners,
    #[cfg(feature = "metrics")]
    metrics: Metrics,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Metrics {
    retries: metrics::Counter,
    hedges: metrics::Counter,
    budget_exhausted: metrics::Counter,
    give_ups: [metrics::Counter; 5],
}

#[cfg(feature = "metrics")]
const REASONS: [GiveUpReason; 5] = [
    GiveUpReason::MaxAttempts,
    GiveUpReason::MaxElapsed,
    GiveUpReason::Budget,
    GiveUpReason::Concurrency,
    GiveUpReason::NotReplayable,
];

impl Telemetry {
    pub(crate) fn new(name: Arc<str>) -> Self {
        #[cfg(feature = "metrics")]
        let metrics = {
            let label = name.to_string();
            Metrics {
                retries: metrics::counter!("meshwork_retry_retries_total", "name" => label.clone()),
                hedges: metrics::counter!("meshwork_retry_hedges_total", "name" => label.clone()),
                budget_exhausted: metrics::counter!(
                    "meshwork_retry_budget_exhausted_total",
                    "name" => label.clone()
                ),
                give_ups: REASONS.map(|r| {
                    metrics::counter!(
                        "meshwork_retry_give_ups_total",
                        "name" => label.clone(),
                        "reason" => r.as_str()
                    )
                }),
            }
        };
        Telemetry {
            name,
            listeners: Listeners::default(),
            #[cfg(feature = "metrics")]
            metrics,
        }
    }

    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn add(&self, listener: Listener) {
        self.listeners.add(listener);
    }

    fn deliver(&self, make: impl FnOnce() -> Event) {
        if self.listeners.active() {
            self.listeners.deliver(&make());
        }
    }

    pub(crate) fn retry(&self, attempt: u32, delay: Duration) {
        #[cfg(feature = "metrics")]
        self.metrics.retries.increment(1);
        #[cfg(feature = "tracing")]
        tracing::debug!(
            retry = %self.name,
            attempt,
            delay_ms = delay.as_secs_f64() * 1e3,
            "attempt failed; retrying"
        );
        self.deliver(|| Event::Retry {
            name: self.name.clone(),
            attempt,
            delay,
        });
    }

    pub(crate) fn hedge(&self, attempt: u32) {
        #[cfg(feature = "metrics")]
        self.metrics.hedges.increment(1);
        #[cfg(feature = "tracing")]
        tracing::debug!(retry = %self.name, attempt, "starting a hedged attempt");
        self.deliver(|| Event::Hedge {
            name: self.name.clone(),
            attempt,
        });
    }

    pub(crate) fn gave_up(&self, attempts: u32, reason: GiveUpReason) {
        #[cfg(feature = "metrics")]
        {
            if let Some(i) = REASONS.iter().position(|r| *r == reason) {
                self.metrics.give_ups[i].increment(1);
            }
            if reason.is_budget() {
                self.metrics.budget_exhausted.increment(1);
            }
        }
        #[cfg(feature = "tracing")]
        tracing::warn!(retry = %self.name, attempts, %reason, "giving up");
        self.deliver(|| {
            let name = self.name.clone();
            if reason.is_budget() {
                Event::BudgetExhausted {
                    name,
                    attempts,
                    concurrency: reason == GiveUpReason::Concurrency,
                }
            } else {
                Event::GaveUp {
                    name,
                    attempts,
                    reason,
                }
            }
        });
    }
}
