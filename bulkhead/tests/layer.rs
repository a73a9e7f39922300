//! The tower layer: load shedding, typed refusals through `BoxError`, permits held for the
//! whole response, and composition with axum.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use axum::{BoxError, Router};
use http::{Request, StatusCode};
use meshwork_bulkhead::{
    AdaptiveLimit, Aimd, Bulkhead, BulkheadConfig, BulkheadLayer, Partition, Rejected,
};
use tokio::sync::Notify;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

fn bulkhead(limit: usize) -> Bulkhead {
    Bulkhead::new(
        "upstream",
        BulkheadConfig::builder()
            .max_concurrent_calls(limit)
            .build()
            .unwrap(),
    )
}

#[tokio::test]
async fn sheds_load_while_full_and_recovers() {
    let b = bulkhead(2);
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let svc = ServiceBuilder::new()
        .layer(BulkheadLayer::new(b.clone()))
        .service(service_fn(move |n: u32| {
            let g = g.clone();
            async move {
                g.notified().await;
                Ok::<_, Infallible>(n)
            }
        }));
    let first = tokio::spawn(svc.clone().oneshot(1));
    let second = tokio::spawn(svc.clone().oneshot(2));
    while b.in_flight() < 2 {
        tokio::task::yield_now().await;
    }
    let err = svc.clone().oneshot(3).await.unwrap_err();
    let rejected = err.downcast_ref::<Rejected>().expect("a Rejected");
    assert_eq!(rejected.name(), "upstream");
    assert_eq!(
        err.to_string(),
        "bulkhead 'upstream' is full (2 of 2 in flight)"
    );
    gate.notify_waiters();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert_eq!(second.await.unwrap().unwrap(), 2);
    assert_eq!(b.in_flight(), 0);
    gate.notify_one();
    assert_eq!(svc.oneshot(4).await.unwrap(), 4);
}

#[tokio::test]
async fn a_dropped_response_future_returns_its_permit() {
    let b = bulkhead(1);
    let mut svc = BulkheadLayer::new(b.clone()).layer(service_fn(|_: ()| async {
        std::future::pending::<Result<(), Infallible>>().await
    }));
    svc.ready().await.unwrap();
    let fut = svc.call(());
    assert_eq!(b.in_flight(), 1);
    drop(fut);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test]
async fn inner_errors_pass_through_and_count_as_drops() {
    let b = Bulkhead::new(
        "aimd",
        BulkheadConfig::builder()
            .max_concurrent_calls(10)
            .adaptive(AdaptiveLimit::Aimd(Aimd::new(1, 20)))
            .build()
            .unwrap(),
    );
    let svc = BulkheadLayer::new(b.clone()).layer(service_fn(|fail: bool| async move {
        if fail {
            Err(std::io::Error::other("reset"))
        } else {
            Ok(())
        }
    }));
    let err = svc.clone().oneshot(true).await.unwrap_err();
    assert!(err.downcast_ref::<std::io::Error>().is_some());
    assert!(err.downcast_ref::<Rejected>().is_none());
    assert_eq!(b.limit(), 9);
    svc.oneshot(false).await.unwrap();
    assert_eq!(
        b.limit(),
        9,
        "one call in flight of 9 is not busy enough to grow"
    );
}

#[tokio::test]
async fn the_rejection_stays_downcastable_under_other_layers() {
    let b = bulkhead(1);
    let _held = b.try_acquire().unwrap();
    let svc = ServiceBuilder::new()
        .map_err(|e: BoxError| e) // a layer around it that keeps the box
        .map_response(|r: u8| r + 1)
        .layer(BulkheadLayer::new(b.clone()))
        .service(service_fn(|r: u8| async move { Ok::<_, Infallible>(r) }));
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(err.is::<Rejected>());
}

#[tokio::test]
async fn a_partition_handle_guards_a_layer() {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(10)
        .partition(Partition::new("live", 0.9))
        .partition(Partition::new("batch", 0.1))
        .build()
        .unwrap();
    let b = Bulkhead::new("api", config);
    let _flood: Vec<_> =
        std::iter::from_fn(|| b.partition("live").unwrap().try_acquire_owned().ok()).collect();
    let batch = BulkheadLayer::new(b.partition("batch").unwrap())
        .layer(service_fn(|()| async { Ok::<_, Infallible>("ran") }));
    assert_eq!(batch.oneshot(()).await.unwrap(), "ran");
}

async fn handler() -> &'static str {
    tokio::time::sleep(Duration::from_millis(200)).await;
    "hello"
}

#[tokio::test]
async fn composes_with_axum_and_turns_refusals_into_503() {
    let b = bulkhead(1);
    let app = Router::new().route("/", get(handler)).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(|err: BoxError| async move {
                if err.is::<Rejected>() {
                    (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
                } else {
                    (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
                }
            }))
            .layer(BulkheadLayer::new(b.clone())),
    );
    let request = || {
        Request::builder()
            .uri("/")
            .body(axum::body::Body::empty())
            .unwrap()
    };
    let slow = tokio::spawn(app.clone().oneshot(request()));
    while b.in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    let shed = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ok = slow.await.unwrap().unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        app.oneshot(request()).await.unwrap().status(),
        StatusCode::OK
    );
}
