use std::task::{Context, Poll};

use tower_service::Service;

use super::{BoxError, ClassifyResponse, NoEndpoints, Picked, Picker, ResponseFuture};

/// A service balanced by a [`BalanceLayer`](super::BalanceLayer).
#[derive(Debug, Clone)]
pub struct BalanceService<S, C> {
    inner: S,
    picker: Picker,
    classifier: C,
}

impl<S, C> BalanceService<S, C> {
    /// Balances `inner` with `picker`, classifying responses with `classifier`.
    pub fn new(inner: S, picker: Picker, classifier: C) -> Self {
        BalanceService {
            inner,
            picker,
            classifier,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming the wrapper.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for BalanceService<S, C>
where
    S: Service<Picked<Req>>,
    S::Error: Into<BoxError>,
    C: ClassifyResponse<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        match self.picker.pick() {
            Some(pick) => {
                let picked = Picked {
                    instance: pick.instance().clone(),
                    request,
                };
                ResponseFuture::running(self.inner.call(picked), pick, self.classifier.clone())
            }
            None => ResponseFuture::failed(NoEndpoints::new(self.picker.service())),
        }
    }
}
