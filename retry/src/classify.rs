//! Deciding whether an outcome is retried.

use std::time::Duration;

/// What to do after an attempt.
///
/// ```
/// use meshwork_retry::Decision;
/// use std::time::Duration;
///
/// // A server that said "Retry-After: 2".
/// let decision = Decision::RetryAfter(Duration::from_secs(2));
/// assert!(decision.is_retry());
/// assert!(!Decision::Done.is_retry());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Return this outcome: a success, or an error not worth retrying.
    Done,
    /// Retry after the backoff's delay.
    Retry,
    /// Retry after this delay (a server's Retry-After, say) instead of the backoff's; capped
    /// at `max_delay`.
    RetryAfter(Duration),
}

impl Decision {
    /// Whether this decision asks for another attempt.
    pub fn is_retry(&self) -> bool {
        !matches!(self, Decision::Done)
    }
}

/// Decides, from an attempt's outcome, whether to retry. Both errors and successes can be
/// retried: a `503` is an `Ok` for most HTTP clients.
///
/// Any `Fn(&Result<T, E>) -> Decision` is a classifier:
/// ```
/// use meshwork_retry::{Classify, Decision};
///
/// let not_found_is_final = |r: &Result<u16, String>| match r {
///     Ok(503) => Decision::Retry,
///     Ok(_) => Decision::Done,
///     Err(e) if e == "not found" => Decision::Done,
///     Err(_) => Decision::Retry,
/// };
/// assert_eq!(not_found_is_final.classify(&Ok(503)), Decision::Retry);
/// assert_eq!(not_found_is_final.classify(&Err("not found".into())), Decision::Done);
/// ```
pub trait Classify<T, E> {
    /// The decision for this outcome.
    fn classify(&self, outcome: &Result<T, E>) -> Decision;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Decision,
{
    #[inline]
    fn classify(&self, outcome: &Result<T, E>) -> Decision {
        self(outcome)
    }
}

/// The default classifier: retry every error, never a success.
///
/// ```
/// use meshwork_retry::{Classify, Decision, OnError};
///
/// assert_eq!(Classify::<u8, ()>::classify(&OnError, &Err(())), Decision::Retry);
/// assert_eq!(Classify::<u8, ()>::classify(&OnError, &Ok(1)), Decision::Done);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OnError;

impl<T, E> Classify<T, E> for OnError {
    #[inline]
    fn classify(&self, outcome: &Result<T, E>) -> Decision {
        match outcome {
            Ok(_) => Decision::Done,
            Err(_) => Decision::Retry,
        }
    }
}
