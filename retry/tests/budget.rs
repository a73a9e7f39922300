//! The retry budget seen through the policy: exact fractions, the reserve, the concurrency
//! cap, and what a refused retry returns.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_retry::{BudgetConfig, Error, Event, Jitter, Retry, RetryConfig};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy(budget: BudgetConfig, max_attempts: u32) -> Retry {
    Retry::new(
        "budgeted",
        RetryConfig::builder()
            .max_attempts(max_attempts)
            .jitter(Jitter::None)
            .backoff(meshwork_retry::Backoff::constant(ms(1)))
            .budget(budget)
            .build()
            .unwrap(),
    )
}

fn io() -> std::io::Error {
    std::io::Error::other("down")
}

#[tokio::test(start_paused = true)]
async fn thirty_percent_means_thirty_percent() {
    let retry = policy(BudgetConfig::new(30.0, 0, Duration::from_secs(10)), 2);
    for _ in 0..100 {
        retry
            .call(|| async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
    }
    let retries = Arc::new(AtomicU32::new(0));
    let counter = retries.clone();
    retry.on_event(move |e| {
        if matches!(e, Event::Retry { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // Each failing call counts as a call too: 160 calls in all buy floor(0.3 * 160) = 48
    // retries. tower's TpsBudget (one retry per 3 calls at 30%) would grant 53.
    for _ in 0..60 {
        let _ = retry.call(|| async { Err::<(), _>(io()) }).await;
    }
    assert_eq!(retries.load(Ordering::Relaxed), 48);
}

#[tokio::test(start_paused = true)]
async fn twelve_and_a_half_percent_of_eighty_calls_is_ten() {
    let retry = policy(BudgetConfig::new(12.5, 0, Duration::from_secs(10)), 2);
    for _ in 0..80 {
        retry
            .call(|| async { Ok::<_, std::io::Error>(()) })
            .await
            .unwrap();
    }
    let budget = retry.budget().unwrap();
    assert_eq!(budget.available(), 10);
    let mut granted = 0;
    while budget.try_withdraw() {
        granted += 1;
    }
    assert_eq!(granted, 10);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_refills_after_the_ttl() {
    let retry = policy(BudgetConfig::new(0.0, 2, Duration::from_secs(1)), 2);
    let mut attempts = 0;
    for _ in 0..4 {
        let _ = retry
            .call(|| {
                attempts += 1;
                async { Err::<(), _>(io()) }
            })
            .await;
    }
    assert_eq!(attempts, 4 + 2, "two retries from the reserve, then none");
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert_eq!(retry.budget().unwrap().available(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_refused_retry_returns_the_last_real_error_unless_asked() {
    let retry = policy(BudgetConfig::new(0.0, 0, Duration::from_secs(1)), 3);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    retry.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    let result = retry.call(|| async { Err::<(), _>(io()) }).await;
    assert!(matches!(result, Err(Error::Inner(e)) if e.to_string() == "down"));
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [Event::BudgetExhausted {
            attempts: 1,
            concurrency: false,
            ..
        }]
    ));

    let asked = Retry::new(
        "strict",
        RetryConfig::builder()
            .budget(BudgetConfig::new(0.0, 0, Duration::from_secs(1)))
            .budget_error(true)
            .build()
            .unwrap(),
    );
    match asked.call(|| async { Err::<(), _>(io()) }).await {
        Err(Error::BudgetExhausted(b)) => {
            assert_eq!(b.name(), "strict");
            assert_eq!(b.attempts(), 1);
            assert!(!b.is_concurrency_cap());
            assert_eq!(
                b.to_string(),
                "retry 'strict': retry budget exhausted after 1 attempt"
            );
        }
        other => panic!("expected a budget error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn no_more_than_max_concurrent_retries_at_once() {
    let budget =
        BudgetConfig::new(1000.0, 1000, Duration::from_secs(10)).with_max_concurrent_retries(2);
    let retry = policy(budget, 3);
    let refused = Arc::new(AtomicU32::new(0));
    let counter = refused.clone();
    retry.on_event(move |e| {
        if matches!(
            e,
            Event::BudgetExhausted {
                concurrency: true,
                ..
            }
        ) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let retry = retry.clone();
        let peak = peak.clone();
        tasks.push(tokio::spawn(async move {
            retry
                .call(|| {
                    let now = retry.budget().unwrap().concurrent_retries();
                    peak.fetch_max(now, Ordering::Relaxed);
                    async {
                        tokio::time::sleep(ms(5)).await;
                        Err::<(), _>(io())
                    }
                })
                .await
        }));
    }
    for task in tasks {
        assert!(matches!(task.await.unwrap(), Err(Error::Inner(_))));
    }
    assert_eq!(peak.load(Ordering::Relaxed), 2);
    assert_eq!(refused.load(Ordering::Relaxed), 8);
    assert_eq!(retry.budget().unwrap().concurrent_retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_budget_every_failure_is_retried() {
    let retry = Retry::new(
        "unbudgeted",
        RetryConfig::builder()
            .max_attempts(3)
            .no_budget()
            .build()
            .unwrap(),
    );
    assert!(retry.budget().is_none());
    let mut attempts = 0;
    for _ in 0..20 {
        let _ = retry
            .call(|| {
                attempts += 1;
                async { Err::<(), _>(io()) }
            })
            .await;
    }
    assert_eq!(attempts, 60);
}
