//! Counters through the `metrics` facade (feature `metrics`).

use std::time::Duration;

use meshwork_retry::{BudgetConfig, Jitter, Retry, RetryConfig};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn counter(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    reason: Option<&str>,
) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && key
                    .labels()
                    .any(|l| l.key() == "name" && l.value() == "metered")
                && reason
                    .is_none_or(|r| key.labels().any(|l| l.key() == "reason" && l.value() == r))
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[tokio::test(start_paused = true)]
async fn retries_give_ups_and_budget_exhaustion_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let config = RetryConfig::builder()
        .max_attempts(3)
        .jitter(Jitter::None)
        .budget(BudgetConfig::new(0.0, 2, Duration::from_secs(1)))
        .build()
        .unwrap();
    // Handles are registered when the policy is made; they keep recording afterwards.
    let retry = metrics::with_local_recorder(&recorder, || Retry::new("metered", config));

    for _ in 0..3 {
        retry
            .call(|| async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
    }
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(&snapshot, "meshwork_retry_retries_total", None),
        0,
        "successes record nothing"
    );

    // Two retries from the reserve, then the attempts run out; then the budget refuses.
    let _ = retry
        .call(|| async { Err::<(), _>(std::io::Error::other("x")) })
        .await;
    let _ = retry
        .call(|| async { Err::<(), _>(std::io::Error::other("x")) })
        .await;

    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(counter(&snapshot, "meshwork_retry_retries_total", None), 2);
    assert_eq!(
        counter(
            &snapshot,
            "meshwork_retry_give_ups_total",
            Some("max_attempts")
        ),
        1
    );
    assert_eq!(
        counter(&snapshot, "meshwork_retry_give_ups_total", Some("budget")),
        1
    );
    assert_eq!(
        counter(&snapshot, "meshwork_retry_budget_exhausted_total", None),
        1
    );
}
