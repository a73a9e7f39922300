//! Metrics through the `metrics` facade (feature `metrics`).

use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use meshwork_bulkhead::{Bulkhead, BulkheadConfig};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// A recorder whose values can be read without resetting them.
#[derive(Clone)]
struct Store(Arc<Registry<Key, AtomicStorage>>);

impl Recorder for Store {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.0
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.0
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

fn labels_match(key: &Key, reason: Option<&str>) -> bool {
    key.labels()
        .any(|l| l.key() == "bulkhead" && l.value() == "m")
        && reason.is_none_or(|r| key.labels().any(|l| l.key() == "reason" && l.value() == r))
}

fn value(store: &Store, name: &str, reason: Option<&str>) -> Option<f64> {
    let gauge = store
        .0
        .get_gauge_handles()
        .into_iter()
        .find(|(k, _)| k.name() == name && labels_match(k, reason))
        .map(|(_, g)| f64::from_bits(g.load(Ordering::SeqCst)));
    gauge.or_else(|| {
        store
            .0
            .get_counter_handles()
            .into_iter()
            .find(|(k, _)| k.name() == name && labels_match(k, reason))
            .map(|(_, c)| c.load(Ordering::SeqCst) as f64)
    })
}

#[tokio::test(start_paused = true)]
async fn gauges_and_counters_follow_the_bulkhead() {
    let store = Store(Arc::new(Registry::atomic()));
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(2)
        .max_wait(Duration::from_millis(5))
        .build()
        .unwrap();
    let b = metrics::with_local_recorder(&store, || Bulkhead::new("m", config));
    assert_eq!(value(&store, "meshwork_bulkhead_limit", None), Some(2.0));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire_owned().unwrap();
    assert_eq!(
        value(&store, "meshwork_bulkhead_in_flight", None),
        Some(2.0)
    );
    assert!(b.try_acquire().is_err());
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire_owned().await.map(drop) })
    };
    tokio::task::yield_now().await;
    assert_eq!(value(&store, "meshwork_bulkhead_waiting", None), Some(1.0));
    assert!(waiter.await.unwrap().is_err());
    assert_eq!(value(&store, "meshwork_bulkhead_waiting", None), Some(0.0));
    let full = value(&store, "meshwork_bulkhead_rejected_total", Some("full"));
    assert_eq!(full, Some(1.0));
    let timed_out = value(
        &store,
        "meshwork_bulkhead_rejected_total",
        Some("wait_timed_out"),
    );
    assert_eq!(timed_out, Some(1.0));
    drop((p1, p2));
    assert_eq!(
        value(&store, "meshwork_bulkhead_in_flight", None),
        Some(0.0)
    );
    b.set_limit(7);
    assert_eq!(value(&store, "meshwork_bulkhead_limit", None), Some(7.0));
}
