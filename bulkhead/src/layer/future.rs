use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::BoxError;
use crate::bulkhead::outcome_of;
use crate::{Outcome, OwnedPermit, Rejected};

pin_project! {
    /// The response future of a [`BulkheadService`](super::BulkheadService): the inner
    /// future holding its permit, or a refusal ready at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Running {
            #[pin]
            future: F,
            permit: Option<OwnedPermit>,
        },
        Rejected {
            rejected: Rejected,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn running(future: F, mut permit: OwnedPermit) -> Self {
        // Until the response comes, a drop means the request was cancelled.
        permit.set_outcome(Outcome::Ignored);
        ResponseFuture {
            state: State::Running {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(rejected: Rejected) -> Self {
        ResponseFuture {
            state: State::Rejected { rejected },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Running { future, permit } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = permit.take() {
                    permit.record(outcome_of(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
            StateProj::Rejected { rejected } => Poll::Ready(Err(Box::new(rejected.clone()))),
        }
    }
}
