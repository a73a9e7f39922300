//! What gets retried: errors, results, never-retry markers, and the delay hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_retry::{
    BudgetConfig, Decision, Error, Event, GiveUpReason, Jitter, Next, Retry, RetryConfig,
};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Stands in for a circuit breaker's rejection.
#[derive(Debug, thiserror::Error)]
#[error("circuit 'payments' is open")]
struct CircuitOpen;

/// Stands in for a bulkhead's rejection.
#[derive(Debug, thiserror::Error)]
#[error("bulkhead 'payments' is full")]
struct BulkheadFull;

/// An application error that wraps whatever went wrong.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("upstream refused")]
    Refused(#[source] CircuitOpen),
    #[error("upstream failed")]
    Io(#[from] std::io::Error),
}

fn guarded(budget: BudgetConfig) -> Retry {
    Retry::new(
        "guarded",
        RetryConfig::builder()
            .max_attempts(5)
            .jitter(Jitter::None)
            .budget(budget)
            .never_retry::<CircuitOpen>()
            .never_retry::<BulkheadFull>()
            .build()
            .unwrap(),
    )
}

fn recorder(retry: &Retry) -> Arc<Mutex<Vec<Event>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    retry.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    events
}

#[tokio::test(start_paused = true)]
async fn never_retry_types_are_not_retried_and_spend_no_budget() {
    // A reserve of exactly one retry: if a marker spent it, the last call couldn't retry.
    let retry = guarded(BudgetConfig::new(0.0, 1, Duration::from_secs(1)));
    let events = recorder(&retry);

    let mut attempts = 0;
    let r = retry
        .call(|| {
            attempts += 1;
            async { Err::<(), _>(CircuitOpen) }
        })
        .await;
    assert!(matches!(r, Err(Error::Inner(CircuitOpen))));
    assert_eq!(attempts, 1, "the marker itself");

    let mut attempts = 0;
    let r = retry
        .call(|| {
            attempts += 1;
            async { Err::<(), _>(AppError::Refused(CircuitOpen)) }
        })
        .await;
    assert!(matches!(r, Err(Error::Inner(AppError::Refused(_)))));
    assert_eq!(attempts, 1, "the marker in the source chain");

    let mut attempts = 0;
    let r = retry
        .call_with(
            |r: &Result<(), Box<dyn std::error::Error + Send + Sync>>| {
                if r.is_err() {
                    Decision::Retry
                } else {
                    Decision::Done
                }
            },
            || {
                attempts += 1;
                async { Err::<(), _>(Box::new(BulkheadFull).into()) }
            },
        )
        .await;
    assert!(r.is_err());
    assert_eq!(attempts, 1, "a boxed marker through call_with");
    assert!(events.lock().unwrap().is_empty(), "no retry, no give-up");
    assert_eq!(retry.budget().unwrap().available(), 1, "budget untouched");

    let mut attempts = 0;
    let r = retry
        .call(|| {
            attempts += 1;
            let n = attempts;
            async move {
                if n == 1 {
                    Err(AppError::Io(std::io::Error::other("reset")))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
    assert_eq!(r.unwrap(), 2, "other errors still retry, on the reserve");
}

#[tokio::test(start_paused = true)]
async fn results_can_be_retried_and_the_last_one_is_returned() {
    let retry = guarded(BudgetConfig::default());
    let mut statuses = vec![503, 503, 503, 503, 503].into_iter();
    let status = retry
        .call_with(
            |r: &Result<u16, std::io::Error>| match r {
                Ok(503) | Err(_) => Decision::Retry,
                Ok(_) => Decision::Done,
            },
            || {
                let s = statuses.next();
                async move { s.ok_or_else(|| std::io::Error::other("no more")) }
            },
        )
        .await;
    assert_eq!(
        status.unwrap(),
        503,
        "attempts ran out: the last Ok comes back"
    );
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_classifier_replaces_the_backoff_and_is_capped() {
    let retry = Retry::new(
        "hinted",
        RetryConfig::builder()
            .max_attempts(3)
            .jitter(Jitter::None)
            .max_delay(ms(5_000))
            .build()
            .unwrap(),
    );
    let start = Instant::now();
    let mut hints = vec![ms(1_500), ms(60_000)].into_iter();
    let mut seen = Vec::new();
    let _ = retry
        .call_with(
            |r: &Result<Duration, ()>| match r {
                Ok(hint) => Decision::RetryAfter(*hint),
                Err(()) => Decision::Done,
            },
            || {
                seen.push(start.elapsed());
                let hint = hints.next();
                async move { hint.ok_or(()) }
            },
        )
        .await;
    // 1.5 s as asked, then 60 s capped at 5 s.
    assert_eq!(seen, [ms(0), ms(1_500), ms(6_500)]);
}

#[tokio::test(start_paused = true)]
async fn async_classifiers_work_in_spawned_tasks() {
    let retry = guarded(BudgetConfig::default());
    let task = tokio::spawn(async move {
        let mut n = 0;
        retry
            .call_with_async(
                async |r: &Result<u32, std::io::Error>| {
                    tokio::time::sleep(ms(1)).await;
                    match r {
                        Ok(n) if *n < 3 => Decision::Retry,
                        _ => Decision::Done,
                    }
                },
                || {
                    n += 1;
                    let v = n;
                    async move { Ok(v) }
                },
            )
            .await
    });
    assert_eq!(task.await.unwrap().unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn events_report_each_retry_and_the_give_up() {
    let retry = guarded(BudgetConfig::default());
    let events = recorder(&retry);
    let _ = retry
        .call(|| async { Err::<(), _>(std::io::Error::other("x")) })
        .await;
    let events = events.lock().unwrap();
    let delays: Vec<(u32, Duration)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Retry {
                attempt,
                delay,
                name,
            } => {
                assert_eq!(&**name, "guarded");
                Some((*attempt, *delay))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        delays,
        [(1, ms(100)), (2, ms(200)), (3, ms(400)), (4, ms(800))]
    );
    assert!(matches!(
        events.last(),
        Some(Event::GaveUp {
            attempts: 5,
            reason: GiveUpReason::MaxAttempts,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn step_api_drives_a_loop_that_cannot_be_wrapped() {
    let retry = guarded(BudgetConfig::default());
    let mut attempts = retry.start();
    let mut delays = Vec::new();
    let outcome = loop {
        let outcome: Result<(), std::io::Error> = Err(std::io::Error::other("nack"));
        match attempts.next_delay(&outcome) {
            Next::Retry(d) => delays.push(d),
            Next::GiveUp(reason) => break reason,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(outcome, GiveUpReason::MaxAttempts);
    assert_eq!(delays, [ms(100), ms(200), ms(400), ms(800)]);
    let mut again = retry.start();
    assert_eq!(again.next_delay(&Err::<(), _>(BulkheadFull)), Next::Done);
    assert!(retry.is_never_retry(&AppError::Refused(CircuitOpen)));
    assert!(!retry.is_never_retry(&std::io::Error::other("x")));
}
