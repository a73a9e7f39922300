//! The tower adapter: retries through `RetryLayer`, errors as downcastable `BoxError`s.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_retry::{
    BudgetConfig, BudgetExhausted, Decision, Event, GiveUpReason, Jitter, Retry, RetryConfig,
    RetryLayer, TimedOut,
};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, thiserror::Error)]
#[error("circuit open")]
struct CircuitOpen;

fn policy() -> Retry {
    Retry::new(
        "upstream",
        RetryConfig::builder()
            .max_attempts(3)
            .jitter(Jitter::None)
            .never_retry::<CircuitOpen>()
            .build()
            .unwrap(),
    )
}

/// A service that fails its first `failures` calls with `error()`, then echoes.
fn flaky<E: Send + 'static>(
    failures: u32,
    error: fn() -> E,
) -> (
    Arc<AtomicU32>,
    impl Service<String, Response = String, Error = E, Future: Send> + Clone + Send,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let service = service_fn(move |req: String| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if n <= failures {
                Err(error())
            } else {
                Ok(format!("{req}#{n}"))
            }
        }
    });
    (calls, service)
}

fn io() -> std::io::Error {
    std::io::Error::other("reset")
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_with_backoff() {
    let (calls, inner) = flaky(2, io);
    let service = ServiceBuilder::new()
        .layer(RetryLayer::new(policy()))
        .service(inner);
    let start = Instant::now();
    let response = service.oneshot("hi".to_string()).await.unwrap();
    assert_eq!(response, "hi#3");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(start.elapsed(), ms(300));
}

#[tokio::test(start_paused = true)]
async fn the_last_error_comes_back_boxed() {
    let (calls, inner) = flaky(10, io);
    let service = RetryLayer::new(policy()).layer_service(inner);
    let err = service.oneshot("hi".to_string()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        err.downcast_ref::<std::io::Error>().unwrap().to_string(),
        "reset"
    );
}

#[tokio::test(start_paused = true)]
async fn never_retry_errors_pass_through_once() {
    let (calls, inner) = flaky(10, || CircuitOpen);
    let service = RetryLayer::new(policy()).layer_service(inner);
    let err = service.oneshot("hi".to_string()).await.unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(err.downcast_ref::<CircuitOpen>().is_some());
}

#[tokio::test(start_paused = true)]
async fn responses_can_be_retried_by_a_classifier() {
    let (calls, inner) = flaky(0, io);
    let layer = RetryLayer::new(policy()).classifier(|r: &Result<String, BoxError>| match r {
        Ok(body) if body.ends_with("#1") => Decision::Retry,
        Ok(_) => Decision::Done,
        Err(_) => Decision::Retry,
    });
    let response = layer
        .layer_service(inner)
        .oneshot("x".into())
        .await
        .unwrap();
    assert_eq!(response, "x#2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_cannot_be_cloned_is_sent_once() {
    let (calls, inner) = flaky(10, io);
    let retry = policy();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    retry.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    let layer = RetryLayer::new(retry).clone_requests_with(|_: &String| None::<String>);
    let err = layer
        .layer_service(inner)
        .oneshot("x".into())
        .await
        .unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [Event::GaveUp {
            attempts: 1,
            reason: GiveUpReason::NotReplayable,
            ..
        }]
    ));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_surface_as_timed_out() {
    let retry = Retry::new(
        "slow",
        RetryConfig::builder()
            .max_attempts(2)
            .jitter(Jitter::None)
            .attempt_timeout(ms(50))
            .build()
            .unwrap(),
    );
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |_: ()| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(ms(1_000)).await;
            Ok::<_, std::io::Error>(())
        }
    });
    let start = Instant::now();
    let err = RetryLayer::new(retry)
        .layer_service(inner)
        .oneshot(())
        .await
        .unwrap_err();
    let timed_out = err.downcast_ref::<TimedOut>().expect("a TimedOut");
    assert_eq!(timed_out.attempts(), 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(start.elapsed(), ms(50 + 100 + 50));
}

#[tokio::test(start_paused = true)]
async fn budget_errors_when_asked() {
    let retry = Retry::new(
        "strict",
        RetryConfig::builder()
            .budget(BudgetConfig::new(0.0, 0, Duration::from_secs(1)))
            .budget_error(true)
            .build()
            .unwrap(),
    );
    let (calls, inner) = flaky(10, io);
    let err = RetryLayer::new(retry)
        .layer_service(inner)
        .oneshot("x".into())
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<BudgetExhausted>().unwrap().name(),
        "strict"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_service_is_send_and_shares_one_budget() {
    let retry = Retry::new(
        "shared",
        RetryConfig::builder()
            .jitter(Jitter::None)
            .budget(BudgetConfig::new(0.0, 1, Duration::from_secs(1)))
            .build()
            .unwrap(),
    );
    let (calls, inner) = flaky(100, io);
    let service = RetryLayer::new(retry).layer_service(inner);
    let a = tokio::spawn(service.clone().oneshot("a".to_string()));
    let b = tokio::spawn(service.oneshot("b".to_string()));
    assert!(a.await.unwrap().is_err());
    assert!(b.await.unwrap().is_err());
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "one retry from the shared reserve"
    );
}

/// `RetryLayer::layer` without importing tower's `Layer` at every call site.
trait LayerExt<S> {
    type Out;
    fn layer_service(&self, inner: S) -> Self::Out;
}

impl<S, L: tower::Layer<S>> LayerExt<S> for L {
    type Out = L::Service;
    fn layer_service(&self, inner: S) -> L::Service {
        self.layer(inner)
    }
}
