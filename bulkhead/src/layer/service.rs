use std::task::{Context, Poll};

use tower_service::Service;

use super::{BoxError, ResponseFuture};
use crate::Bulkhead;

/// A service guarded by a [`Bulkhead`]: each request takes a permit in `call` (never
/// waiting) and holds it until its response future completes or is dropped; a request that
/// finds the bulkhead full fails at once with a [`Rejected`](crate::Rejected).
///
/// Usually made by [`BulkheadLayer`](crate::BulkheadLayer); built directly:
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadService};
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let bulkhead = Bulkhead::with_defaults("echo");
/// let svc = BulkheadService::new(
///     service_fn(|s: &'static str| async move { Ok::<_, std::io::Error>(s) }),
///     bulkhead,
/// );
/// assert_eq!(svc.bulkhead().name(), "echo");
/// assert_eq!(svc.oneshot("hi").await?, "hi");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
}

impl<S> BulkheadService<S> {
    /// Wraps `inner` with `bulkhead`.
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        BulkheadService { inner, bulkhead }
    }

    /// The bulkhead guarding the service.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.bulkhead.try_acquire_owned() {
            Ok(permit) => ResponseFuture::running(self.inner.call(req), permit),
            Err(rejected) => ResponseFuture::rejected(rejected),
        }
    }
}
