//! The tower adapter: composition, classification, rejection and cancellation.

use std::time::Duration;

use meshwork_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, Outcome, Rejected, SlidingWindow,
    State,
};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

fn breaker(threshold: u32) -> CircuitBreaker {
    CircuitBreaker::new(
        "svc",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::ConsecutiveFailures { threshold })
            .open_duration(Duration::from_secs(5))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    )
}

#[tokio::test(start_paused = true)]
async fn errors_open_the_breaker_and_rejections_downcast() {
    let b = breaker(2);
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("upstream down".into())
            } else {
                Ok(())
            }
        }));
    svc.ready().await.unwrap().call(false).await.unwrap();
    for _ in 0..2 {
        let e = svc.ready().await.unwrap().call(true).await.unwrap_err();
        assert_eq!(e.to_string(), "upstream down");
    }
    assert_eq!(b.state(), State::Open);
    let e = svc.ready().await.unwrap().call(false).await.unwrap_err();
    let rejected = e.downcast_ref::<Rejected>().expect("a Rejected");
    assert_eq!(rejected.name(), "svc");
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(5)));
}

#[tokio::test(start_paused = true)]
async fn classifier_sees_responses() {
    let b = breaker(1);
    let mut svc =
        ServiceBuilder::new()
            .layer(CircuitBreakerLayer::new(b.clone()).with_classifier(
                |r: &Result<u16, BoxError>| match r {
                    Ok(s) if *s >= 500 => Outcome::Failure,
                    _ => Outcome::Success,
                },
            ))
            .service(service_fn(|status: u16| async move {
                Ok::<_, BoxError>(status)
            }));
    assert_eq!(svc.ready().await.unwrap().call(404).await.unwrap(), 404);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(svc.ready().await.unwrap().call(503).await.unwrap(), 503);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn dropped_response_future_gives_the_probe_back() {
    let b = breaker(1);
    let mut svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .service(service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, BoxError>(())
        }));
    b.try_acquire().unwrap().record(Outcome::Failure);
    tokio::time::advance(Duration::from_secs(5)).await;
    let hung = svc.ready().await.unwrap().call(1_000_000);
    assert!(b.try_acquire().is_err(), "the single probe is in flight");
    drop(hung);
    svc.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn composes_in_a_boxed_stack_and_the_handle_sees_its_state() {
    let b = breaker(1);
    let svc = ServiceBuilder::new()
        .boxed_clone()
        .layer(CircuitBreakerLayer::new(b.clone()))
        .timeout(Duration::from_secs(1))
        .service(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(())
        }));
    let e = svc.clone().oneshot(()).await.unwrap_err();
    assert!(e.is::<tower::timeout::error::Elapsed>());
    assert_eq!(b.state(), State::Open, "a timeout counts as a failure");
    let e = svc.oneshot(()).await.unwrap_err();
    assert!(e.is::<Rejected>());
}
