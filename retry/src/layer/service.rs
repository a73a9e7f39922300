use std::task::{Context, Poll};

use tower_service::Service;

use super::{BoxError, CloneRequest, Cloned, ResponseFuture};
use crate::{Classify, OnError, Retry};

/// A service retried by a [`Retry`] policy; made by [`RetryLayer`](crate::RetryLayer).
///
/// The inner service must be `Clone`: each call keeps a clone to make its retries with, as
/// tower's own `Retry` does.
///
/// ```
/// use meshwork_retry::{Cloned, OnError, Retry, RetryService};
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let echo = service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) });
/// let service = RetryService::new(echo, Retry::with_defaults("echo"), OnError, Cloned);
/// assert_eq!(service.oneshot(7).await.unwrap(), 7);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryService<S, C = OnError, K = Cloned> {
    inner: S,
    retry: Retry,
    classifier: C,
    cloner: K,
}

impl<S, C, K> RetryService<S, C, K> {
    /// Wraps `inner`.
    pub fn new(inner: S, retry: Retry, classifier: C, cloner: K) -> Self {
        RetryService {
            inner,
            retry,
            classifier,
            cloner,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The policy.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }
}

impl<S, Req, C, K> Service<Req> for RetryService<S, C, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
    K: CloneRequest<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, C, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        self.retry.inner().deposit();
        let retained = if self.retry.config().max_attempts > 1 {
            self.cloner.clone_request(&request)
        } else {
            None
        };
        // The service that was polled ready makes this call; a fresh clone takes its place.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let future = service.call(request);
        ResponseFuture::new(
            future,
            service,
            retained,
            self.retry.clone(),
            self.classifier.clone(),
            self.cloner.clone(),
        )
    }
}
