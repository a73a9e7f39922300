//! Errors returned by the retry policy.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The last attempt timed out (see `RetryConfig::attempt_timeout`), so there is no error of
/// the call's own to return.
///
/// ```
/// use meshwork_retry::{Error, Retry, RetryConfig};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let config = RetryConfig::builder()
///     .max_attempts(2)
///     .attempt_timeout(Duration::from_millis(10))
///     .build()
///     .unwrap();
/// let retry = Retry::new("slow", config);
/// let result = retry
///     .call(|| async {
///         tokio::time::sleep(Duration::from_secs(1)).await;
///         Ok::<(), std::io::Error>(())
///     })
///     .await;
/// let Err(Error::TimedOut(timed_out)) = result else { panic!() };
/// assert_eq!(timed_out.to_string(), "retry 'slow': attempt 2 timed out after 10ms");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    name: Arc<str>,
    attempts: u32,
    timeout: Duration,
}

impl TimedOut {
    pub(crate) fn new(name: Arc<str>, attempts: u32, timeout: Duration) -> Self {
        TimedOut {
            name,
            attempts,
            timeout,
        }
    }

    /// The name of the retry policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attempts made, the timed-out one included.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The per-attempt timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retry '{}': attempt {} timed out after {:?}",
            self.name, self.attempts, self.timeout
        )
    }
}

impl std::error::Error for TimedOut {}

/// The budget refused a retry, and the policy was asked to say so
/// (`RetryConfig::budget_error`) rather than return the last real outcome.
///
/// ```
/// use meshwork_retry::{BudgetConfig, Error, Retry, RetryConfig};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork_retry::ConfigError> {
/// let config = RetryConfig::builder()
///     .budget(BudgetConfig::new(0.0, 0, Duration::from_secs(1))) // no retry at all
///     .budget_error(true)
///     .build()?;
/// let retry = Retry::new("tight", config);
/// let result = retry.call(|| async { Err::<(), _>(std::fmt::Error) }).await;
/// let Err(Error::BudgetExhausted(refused)) = result else { panic!() };
/// assert!(!refused.is_concurrency_cap());
/// assert_eq!(refused.to_string(), "retry 'tight': retry budget exhausted after 1 attempt");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetExhausted {
    name: Arc<str>,
    attempts: u32,
    concurrency: bool,
}

impl BudgetExhausted {
    pub(crate) fn new(name: Arc<str>, attempts: u32, concurrency: bool) -> Self {
        BudgetExhausted {
            name,
            attempts,
            concurrency,
        }
    }

    /// The name of the retry policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Attempts made before the budget refused.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the cap on concurrent retries refused, rather than the budget's tokens.
    pub fn is_concurrency_cap(&self) -> bool {
        self.concurrency
    }
}

impl fmt::Display for BudgetExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.concurrency {
            "too many concurrent retries"
        } else {
            "retry budget exhausted"
        };
        write!(
            f,
            "retry '{}': {what} after {} attempt{}",
            self.name,
            self.attempts,
            if self.attempts == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for BudgetExhausted {}

/// The error of a call made through [`Retry::call`](crate::Retry::call) and friends.
///
/// When retrying stops (attempts used up, time up, budget refused, error not retryable) the
/// last real error comes back as [`Error::Inner`]; the other variants exist only where there is
/// no such error.
///
/// ```
/// use meshwork_retry::{Error, Retry, RetryConfig};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let retry = Retry::new("search", RetryConfig::default());
/// let result = retry
///     .call(|| async { Err::<(), _>(std::io::Error::other("down")) })
///     .await;
/// assert!(matches!(result, Err(Error::Inner(e)) if e.to_string() == "down"));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The call's own error, from the last attempt made.
    #[error("{0}")]
    Inner(E),
    /// The last attempt timed out.
    #[error(transparent)]
    TimedOut(TimedOut),
    /// The budget refused a retry and `budget_error` was set.
    #[error(transparent)]
    BudgetExhausted(BudgetExhausted),
}

impl<E> Error<E> {
    /// The call's own error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }

    /// The call's own error, by reference.
    pub fn inner(&self) -> Option<&E> {
        match self {
            Error::Inner(e) => Some(e),
            _ => None,
        }
    }
}
