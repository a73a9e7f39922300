//! Errors returned by the breaker.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::State;

/// A call the breaker refused to make.
///
/// It names the breaker, the state that refused, and when the breaker will next let a call
/// through (when that is known). Making one does not allocate.
///
/// ```
/// use meshwork_circuit_breaker::CircuitBreaker;
///
/// let breaker = CircuitBreaker::with_defaults("payments");
/// breaker.force_open();
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.name(), "payments");
/// assert_eq!(rejected.to_string(), "circuit 'payments' is forced open");
/// ```
#[derive(Debug, Clone)]
pub struct Rejected {
    name: Arc<str>,
    state: State,
    retry_after: Option<Duration>,
}

impl Rejected {
    pub(crate) fn new(name: Arc<str>, state: State, retry_after: Option<Duration>) -> Self {
        Rejected {
            name,
            state,
            retry_after,
        }
    }

    /// The name of the breaker that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state the breaker was in.
    pub fn state(&self) -> State {
        self.state
    }

    /// How long until the breaker lets a probe through, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.state, self.retry_after) {
            (State::Open, Some(after)) => write!(
                f,
                "circuit '{}' is open; retry after {:.1}s",
                self.name,
                after.as_secs_f64()
            ),
            (State::HalfOpen, _) => write!(
                f,
                "circuit '{}' is half-open and all its probe permits are taken",
                self.name
            ),
            (State::ForcedOpen, _) => write!(f, "circuit '{}' is forced open", self.name),
            (state, _) => write!(f, "circuit '{}' is {state}", self.name),
        }
    }
}

impl std::error::Error for Rejected {}

/// The error of a call made through [`CircuitBreaker::call`](crate::CircuitBreaker::call):
/// either the breaker refused, or the call itself failed.
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, Error};
///
/// # tokio_test();
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn tokio_test() {
/// let breaker = CircuitBreaker::with_defaults("search");
/// let result = breaker.call(|| async { Err::<(), _>("timeout") }).await;
/// assert!(matches!(result, Err(Error::Inner("timeout"))));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The breaker refused the call; the function was not run.
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// The call ran and returned this error.
    #[error("{0}")]
    Inner(E),
}

impl<E> Error<E> {
    /// The inner error, if the call ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Error::Inner(e) => Some(e),
            Error::Rejected(_) => None,
        }
    }

    /// The rejection, if the breaker refused.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::Inner(_) => None,
        }
    }
}
