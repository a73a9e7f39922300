use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::{BoxError, ClassifyResponse, Pick};

pin_project! {
    /// The response future of [`BalanceService`](super::BalanceService): it records the
    /// latency and outcome on completion; dropped early, it records nothing.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Running {
            #[pin]
            future: F,
            pick: Option<Pick>,
            classifier: C,
        },
        Failed {
            error: Option<BoxError>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn running(future: F, pick: Pick, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Running {
                future,
                pick: Some(pick),
                classifier,
            },
        }
    }

    pub(crate) fn failed(error: impl Into<BoxError>) -> Self {
        ResponseFuture {
            kind: Kind::Failed {
                error: Some(error.into()),
            },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyResponse<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Running {
                future,
                pick,
                classifier,
            } => {
                let result = ready!(future.poll(cx));
                if let Some(pick) = pick.take() {
                    let failure = match &result {
                        Ok(response) => classifier.is_failure(response),
                        Err(_) => true,
                    };
                    pick.record(failure);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "balance response future polled after completion".into()))),
        }
    }
}
