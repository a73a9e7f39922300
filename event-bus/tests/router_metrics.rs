//! The router's `metrics` feature: handled, duplicates, failures by kind and outcome.
#![cfg(feature = "metrics")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meshwork_event_bus::{
    BoxError, FailurePolicy, HandlerError, MemoryBus, MemoryIdempotencyStore, Message, Outputs,
    Publisher, Route, Router,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn handled_duplicates_and_failures_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Handles are registered when the router is built: build it under the recorder.
    let (bus, router) = metrics::with_local_recorder(&recorder, || {
        let bus = MemoryBus::new();
        let calls = Arc::new(AtomicU32::new(0));
        let router = Router::builder(bus.clone(), bus.clone())
            .idempotency(MemoryIdempotencyStore::new())
            .route(
                Route::new("count", "t", "g", move |m: Message| {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if m.payload().as_ref() == b"bad" {
                            return Err::<Outputs, BoxError>(HandlerError::permanent("no").into());
                        }
                        Ok(Outputs::none())
                    }
                })
                .policy(FailurePolicy::builder().build().unwrap()),
            )
            .build()
            .unwrap();
        (bus, router)
    });
    rt.block_on(async {
        let running = router.start();
        let ok = Message::new("ok");
        bus.publish("t", vec![ok.clone(), ok, Message::new("bad")])
            .await
            .unwrap();
        let mut dlq = meshwork_event_bus::Subscriber::subscribe(&bus, "t.dlq", "check")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), dlq.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .ack()
            .await
            .unwrap();
        running.shutdown(Duration::from_secs(1)).await;
    });
    let rows: Vec<_> = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        rows.iter()
            .find(|(k, _, _, _)| {
                k.key().name() == name
                    && labels.iter().all(|(lk, lv)| {
                        k.key().labels().any(|l| l.key() == *lk && l.value() == *lv)
                    })
            })
            .map(|(_, _, _, v)| v)
    };
    let handler = [("handler", "count")];
    assert!(matches!(
        find("meshwork_event_bus_handled_total", &handler),
        Some(DebugValue::Counter(1))
    ));
    assert!(matches!(
        find("meshwork_event_bus_duplicates_total", &handler),
        Some(DebugValue::Counter(1))
    ));
    assert!(matches!(
        find(
            "meshwork_event_bus_failures_total",
            &[
                ("handler", "count"),
                ("kind", "permanent"),
                ("outcome", "dead_lettered")
            ]
        ),
        Some(DebugValue::Counter(1))
    ));
    assert!(matches!(
        find("meshwork_event_bus_handling_seconds", &handler),
        Some(DebugValue::Histogram(h)) if h.len() == 1
    ));
}
