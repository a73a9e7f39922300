//! Events: what is reported, to whom, and that listeners may call back into the bulkhead.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Event, Partition, RejectReason};

fn recorder(b: &Bulkhead) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    seen
}

#[tokio::test(start_paused = true)]
async fn every_rejection_is_reported_with_its_reason_and_partition() {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(1)
        .max_wait(Duration::from_millis(10))
        .max_waiters(1)
        .partition(Partition::new("p", 1.0))
        .build()
        .unwrap();
    let b = Bulkhead::new("ev", config);
    let p = b.partition("p").unwrap();
    let seen = recorder(&b);
    let _held = p.try_acquire().unwrap();
    assert!(p.try_acquire().is_err());
    let waiter = {
        let p = p.clone();
        tokio::spawn(async move { p.acquire_owned().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert!(p.acquire().await.is_err());
    assert!(waiter.await.unwrap().is_err());
    let reasons: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| match e {
            Event::Rejected {
                name,
                partition,
                reason,
            } => {
                assert_eq!(&**name, "ev");
                assert_eq!(partition.as_deref(), Some("p"));
                *reason
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            RejectReason::Full,
            RejectReason::TooManyWaiters,
            RejectReason::WaitTimedOut
        ]
    );
    assert_eq!(b.metrics().rejected, 3);
}

#[test]
fn a_listener_may_call_back_into_the_bulkhead() {
    let b = Bulkhead::new(
        "reentrant",
        BulkheadConfig::builder()
            .max_concurrent_calls(1)
            .build()
            .unwrap(),
    );
    let inner = b.clone();
    let calls = Arc::new(Mutex::new(0));
    let sink = calls.clone();
    b.on_event(move |_| {
        *sink.lock().unwrap() += 1;
        // Reads state and even adds a listener from inside a listener.
        let _ = inner.metrics();
        if *sink.lock().unwrap() == 1 {
            inner.on_event(|_| {});
        }
    });
    let _held = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    b.set_limit(2);
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[test]
fn nothing_is_reported_before_a_listener_is_added() {
    let b = Bulkhead::new(
        "late",
        BulkheadConfig::builder()
            .max_concurrent_calls(1)
            .build()
            .unwrap(),
    );
    let _held = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    let seen = recorder(&b);
    assert!(seen.lock().unwrap().is_empty());
    assert!(b.try_acquire().is_err());
    assert_eq!(seen.lock().unwrap().len(), 1);
}
