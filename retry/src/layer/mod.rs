//! A tower middleware that retries a service with a [`Retry`](crate::Retry) policy.
//!
//! Laid out like tower's own middleware: [`RetryLayer`] only carries the policy,
//! [`RetryService`] clones the request it may need again before the first attempt, and
//! [`ResponseFuture`] is a hand-written future that sleeps, waits for readiness and calls
//! again.
//!
//! Errors are [`tower::BoxError`]s, as in tower: the inner service's own error after the last
//! attempt, or a [`TimedOut`](crate::TimedOut) / [`BudgetExhausted`](crate::BudgetExhausted)
//! that callers find with `downcast_ref`, whatever layers sit around this one.
//!
//! # Requests that can't be cloned
//! A retry needs the request again. [`CloneRequest`] says how to get it: [`Cloned`] (the
//! default) for `Clone` requests, [`http::ReplayRequest`](crate::http::ReplayRequest) for HTTP
//! requests whose body is a [`ReplayBody`](crate::http::ReplayBody) (a bounded replay buffer),
//! or any `Fn(&Req) -> Option<Req>`. When it returns `None` the request is not retried (the
//! give-up reason is [`NotReplayable`](crate::GiveUpReason::NotReplayable)): a request is
//! never sent again with a body it no longer has.
//!
//! [`tower::BoxError`]: https://docs.rs/tower/latest/tower/type.BoxError.html

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RetryLayer;
pub use service::RetryService;

/// The error type of the tower adapter, as in tower itself.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the tower adapter gets a request again for a retry; `None` means it can't, and the
/// request is not retried.
///
/// Any `Fn(&Req) -> Option<Req>` is one:
/// ```
/// use meshwork_retry::CloneRequest;
///
/// let only_small = |req: &Vec<u8>| (req.len() <= 4).then(|| req.clone());
/// assert_eq!(only_small.clone_request(&vec![1, 2]), Some(vec![1, 2]));
/// assert_eq!(only_small.clone_request(&vec![0; 10]), None);
/// ```
pub trait CloneRequest<Req> {
    /// A copy of `request` to send again, if there can be one.
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// Clones the request with `Clone` (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cloned;

impl<Req: Clone> CloneRequest<Req> for Cloned {
    #[inline]
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}
