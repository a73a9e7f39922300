use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::{BoxError, CloneRequest};
use crate::retry::{AttemptState, Next};
use crate::{Classify, Decision, Retry, TimedOut};

pin_project! {
    /// The future of a [`RetryService`](crate::RetryService) call: attempts, sleeps between
    /// them, and resolves to the last outcome.
    pub struct ResponseFuture<S, Req, C, K>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        // The copy kept for retries; `None` when the request can't be cloned.
        retained: Option<Req>,
        // The request of the next attempt, once a retry is decided.
        next: Option<Req>,
        retry: Retry,
        classifier: C,
        cloner: K,
        attempts: AttemptState,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling {
            #[pin]
            future: F,
            #[pin]
            deadline: Option<Sleep>,
        },
        Sleeping {
            #[pin]
            sleep: Sleep,
        },
        Waiting,
    }
}

impl<S, Req, C, K> ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        retained: Option<Req>,
        retry: Retry,
        classifier: C,
        cloner: K,
    ) -> Self {
        let deadline = retry.config().attempt_timeout.map(tokio::time::sleep);
        ResponseFuture {
            state: State::Calling { future, deadline },
            service,
            retained,
            next: None,
            retry,
            classifier,
            cloner,
            attempts: AttemptState::default(),
        }
    }
}

impl<S, Req, C, K> Future for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError>,
    K: CloneRequest<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future, deadline } => {
                    let outcome: Result<Result<S::Response, BoxError>, Duration> =
                        match future.poll(cx) {
                            Poll::Ready(result) => Ok(result.map_err(Into::into)),
                            Poll::Pending => {
                                let expired =
                                    deadline.as_pin_mut().is_some_and(|s| s.poll(cx).is_ready());
                                if !expired {
                                    return Poll::Pending;
                                }
                                Err(this.retry.config().attempt_timeout.unwrap_or_default())
                            }
                        };
                    let inner = this.retry.inner();
                    let decision = match &outcome {
                        Ok(result) => inner.guard(this.classifier.classify(result), result),
                        Err(_) => Decision::Retry,
                    };
                    let next = if decision.is_retry()
                        && this.attempts.attempts().saturating_add(1) < inner.config.max_attempts
                    {
                        *this.next = this
                            .retained
                            .as_ref()
                            .and_then(|r| this.cloner.clone_request(r));
                        if this.next.is_some() {
                            this.attempts.next(inner, decision)
                        } else {
                            this.attempts.next_not_replayable(inner)
                        }
                    } else {
                        this.attempts.next(inner, decision)
                    };
                    match next {
                        Next::Retry(delay) => this.state.set(State::Sleeping {
                            sleep: tokio::time::sleep(delay),
                        }),
                        next => {
                            if let Some(refusal) =
                                inner.budget_refusal(this.attempts.attempts(), next)
                            {
                                return Poll::Ready(Err(refusal.into()));
                            }
                            return Poll::Ready(match outcome {
                                Ok(result) => result,
                                Err(timeout) => Err(TimedOut::new(
                                    inner.name().clone(),
                                    this.attempts.attempts(),
                                    timeout,
                                )
                                .into()),
                            });
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Waiting);
                }
                StateProj::Waiting => {
                    if let Err(e) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(request) = this.next.take() else {
                        // Unreachable: a retry is only scheduled with its request in hand.
                        return Poll::Ready(Err("meshwork-retry: no request to retry".into()));
                    };
                    let future = this.service.call(request);
                    let deadline = this.retry.config().attempt_timeout.map(tokio::time::sleep);
                    this.state.set(State::Calling { future, deadline });
                }
            }
        }
    }
}

impl<S, Req, C, K> fmt::Debug for ResponseFuture<S, Req, C, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("retry", &self.retry.name())
            .field("attempts", &self.attempts.attempts())
            .finish_non_exhaustive()
    }
}
