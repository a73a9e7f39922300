//! Errors returned by the bulkhead.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a bulkhead refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// Every permit was taken and the bulkhead does not wait (or was asked not to).
    Full,
    /// No permit came free within the configured `max_wait`.
    WaitTimedOut,
    /// Every permit was taken and the wait queue held its maximum of waiters.
    TooManyWaiters,
    /// A keyed bulkhead held its maximum of keys, none of them idle.
    TooManyKeys,
}

/// A call the bulkhead refused to admit.
///
/// It names the bulkhead (and the partition, if any), says why, and how loaded the bulkhead
/// was. Making one does not allocate: the names are shared `Arc<str>`s.
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadConfig, RejectReason};
///
/// let config = BulkheadConfig::builder().max_concurrent_calls(1).build()?;
/// let bulkhead = Bulkhead::new("payments", config);
/// let _permit = bulkhead.try_acquire()?;
/// let rejected = bulkhead.try_acquire().unwrap_err();
/// assert_eq!(rejected.name(), "payments");
/// assert_eq!(rejected.reason(), RejectReason::Full);
/// assert_eq!(rejected.to_string(), "bulkhead 'payments' is full (1 of 1 in flight)");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Rejected {
    name: Arc<str>,
    partition: Option<Arc<str>>,
    /// Nanoseconds waited (`WaitTimedOut`) or calls waiting (`TooManyWaiters`).
    extra: u64,
    in_flight: u32,
    limit: u32,
    reason: RejectReason,
}

/// What a [`Rejected`] adds to its reason.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Detail {
    None,
    Waited(Duration),
    Waiters(usize),
}

impl Rejected {
    pub(crate) fn new(
        name: Arc<str>,
        partition: Option<Arc<str>>,
        reason: RejectReason,
        in_flight: usize,
        limit: usize,
        detail: Detail,
    ) -> Self {
        let extra = match detail {
            Detail::None => 0,
            Detail::Waited(d) => u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Detail::Waiters(n) => n as u64,
        };
        Rejected {
            name,
            partition,
            extra,
            in_flight: u32::try_from(in_flight).unwrap_or(u32::MAX),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            reason,
        }
    }

    /// The name of the bulkhead that refused.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The partition the call asked for, if any.
    pub fn partition(&self) -> Option<&str> {
        self.partition.as_deref()
    }

    /// Why the call was refused.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// Calls in flight when the call was refused (for [`RejectReason::TooManyKeys`]: keys held).
    pub fn in_flight(&self) -> usize {
        self.in_flight as usize
    }

    /// The limit when the call was refused (for [`RejectReason::TooManyKeys`]: the key cap).
    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// How long the call waited before it was refused, if it waited.
    pub fn waited(&self) -> Option<Duration> {
        (self.reason == RejectReason::WaitTimedOut).then(|| Duration::from_nanos(self.extra))
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bulkhead '{}'", self.name)?;
        if let Some(p) = &self.partition {
            write!(f, " partition '{p}'")?;
        }
        let (n, limit) = (self.in_flight, self.limit);
        match self.reason {
            RejectReason::WaitTimedOut => write!(
                f,
                " is full: no permit within {:?} ({n} of {limit} in flight)",
                Duration::from_nanos(self.extra)
            ),
            RejectReason::TooManyWaiters => write!(
                f,
                " is full and {} calls already wait ({n} of {limit} in flight)",
                self.extra
            ),
            RejectReason::TooManyKeys => {
                write!(f, " holds its maximum of {limit} keys, none idle")
            }
            _ => write!(f, " is full ({n} of {limit} in flight)"),
        }
    }
}

impl std::error::Error for Rejected {}

/// The error of a call made through [`Bulkhead::call`](crate::Bulkhead::call): either the
/// bulkhead refused, or the call itself failed.
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, Error};
///
/// # tokio_test();
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn tokio_test() {
/// let bulkhead = Bulkhead::with_defaults("search");
/// let result = bulkhead.call(|| async { Err::<(), _>("timeout") }).await;
/// assert!(matches!(result, Err(Error::Inner("timeout"))));
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E> {
    /// The bulkhead refused the call; the function was not run.
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

    /// The rejection, if the bulkhead refused.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            Error::Rejected(r) => Some(r),
            Error::Inner(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(reason: RejectReason, detail: Detail) -> Rejected {
        Rejected::new("api".into(), Some("batch".into()), reason, 4, 4, detail)
    }

    #[test]
    fn messages_name_bulkhead_partition_and_reason() {
        assert_eq!(
            rejected(RejectReason::Full, Detail::None).to_string(),
            "bulkhead 'api' partition 'batch' is full (4 of 4 in flight)"
        );
        let r = rejected(
            RejectReason::WaitTimedOut,
            Detail::Waited(Duration::from_millis(250)),
        );
        assert_eq!(r.waited(), Some(Duration::from_millis(250)));
        assert_eq!(
            r.to_string(),
            "bulkhead 'api' partition 'batch' is full: no permit within 250ms (4 of 4 in flight)"
        );
        assert_eq!(
            rejected(RejectReason::TooManyWaiters, Detail::Waiters(9)).to_string(),
            "bulkhead 'api' partition 'batch' is full and 9 calls already wait (4 of 4 in flight)"
        );
        let keys = Rejected::new(
            "t".into(),
            None,
            RejectReason::TooManyKeys,
            3,
            3,
            Detail::None,
        );
        assert_eq!(
            keys.to_string(),
            "bulkhead 't' holds its maximum of 3 keys, none idle"
        );
        assert_eq!(keys.partition(), None);
        assert_eq!(keys.waited(), None);
    }

    #[test]
    fn error_accessors() {
        let e: Error<&str> = rejected(RejectReason::Full, Detail::None).into();
        assert_eq!(e.rejected().map(|r| r.limit()), Some(4));
        assert_eq!(e.into_inner(), None);
        let e: Error<&str> = Error::Inner("boom");
        assert!(e.rejected().is_none());
        assert_eq!(e.to_string(), "boom");
        assert_eq!(e.into_inner(), Some("boom"));
    }
}
