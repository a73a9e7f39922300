//! The `metrics` feature: state gauge, transition and rejection counters.
#![cfg(feature = "metrics")]

use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, Outcome, SlidingWindow};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// One exported metric: name, labels, value.
type Row = (String, Vec<(String, String)>, DebugValue);

fn value<'a>(snapshot: &'a [Row], name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    snapshot
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

#[test]
fn state_transitions_and_rejections_are_exported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let b = CircuitBreaker::new(
            "payments",
            CircuitBreakerConfig::builder()
                .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 1 })
                .build()
                .unwrap(),
        );
        b.try_acquire().unwrap().record(Outcome::Failure);
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
    });
    let snapshot: Vec<Row> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, v)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            (key.key().name().to_string(), labels, v)
        })
        .collect();
    let name = [("name", "payments")];
    assert_eq!(
        value(&snapshot, "meshwork_circuit_breaker_state", &name),
        Some(&DebugValue::Gauge(1.0.into())),
        "the gauge reads 1 (open)"
    );
    assert_eq!(
        value(
            &snapshot,
            "meshwork_circuit_breaker_rejected_calls_total",
            &name
        ),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        value(
            &snapshot,
            "meshwork_circuit_breaker_transitions_total",
            &[("name", "payments"), ("from", "closed"), ("to", "open")]
        ),
        Some(&DebugValue::Counter(1))
    );
}
