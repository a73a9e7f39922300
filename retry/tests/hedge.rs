//! Hedging: backup attempts after a delay, budgeted; the first success wins and the others
//! are cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use meshwork_retry::{BudgetConfig, Error, Event, Retry, RetryConfig};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn hedging(max_attempts: u32, budget: Option<BudgetConfig>) -> Retry {
    let builder = RetryConfig::builder()
        .max_attempts(max_attempts)
        .hedge_delay(ms(50));
    let builder = match budget {
        Some(b) => builder.budget(b),
        None => builder.no_budget(),
    };
    Retry::new("hedged", builder.build().unwrap())
}

/// Sets its flag when dropped: tells whether an attempt was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_success_wins_and_the_loser_is_cancelled() {
    let retry = hedging(2, None);
    let slow_dropped = Arc::new(AtomicBool::new(false));
    let slow_finished = Arc::new(AtomicBool::new(false));
    let mut n = 0;
    let start = Instant::now();
    let result = retry
        .hedge(|| {
            n += 1;
            let me = n;
            // Only the slow first attempt carries the flag: the winner is dropped too, once
            // it has finished, and must not set it.
            let flag = (me == 1).then(|| DropFlag(slow_dropped.clone()));
            let finished = slow_finished.clone();
            async move {
                let _flag = flag;
                tokio::time::sleep(ms(if me == 1 { 1_000 } else { 20 })).await;
                if me == 1 {
                    finished.store(true, Ordering::SeqCst);
                }
                Ok::<_, std::io::Error>(me)
            }
        })
        .await;
    assert_eq!(result.unwrap(), 2);
    assert_eq!(start.elapsed(), ms(70));
    assert!(
        slow_dropped.load(Ordering::SeqCst),
        "the slow attempt was dropped as soon as the hedge won"
    );
    // Had it been left running somewhere (a spawned task), it would finish by now.
    tokio::time::sleep(ms(2_000)).await;
    assert!(!slow_finished.load(Ordering::SeqCst), "and never finished");
}

#[tokio::test(start_paused = true)]
async fn a_fast_first_attempt_sends_no_hedge() {
    let retry = hedging(3, None);
    let hedges = Arc::new(AtomicU32::new(0));
    let counter = hedges.clone();
    retry.on_event(move |e| {
        if matches!(e, Event::Hedge { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut n = 0;
    let result = retry
        .hedge(|| {
            n += 1;
            async {
                tokio::time::sleep(ms(10)).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .await;
    assert!(result.is_ok());
    assert_eq!(n, 1);
    assert_eq!(hedges.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failure_starts_the_next_attempt_at_once() {
    // `Duration::MAX`: the timer is re-armed after the failure without overflowing.
    for hedge_delay in [ms(50), Duration::MAX] {
        let config = RetryConfig::builder()
            .max_attempts(3)
            .hedge_delay(hedge_delay)
            .no_budget()
            .build()
            .unwrap();
        let retry = Retry::new("hedged", config);
        let start = Instant::now();
        let mut n = 0;
        let result = retry
            .hedge(|| {
                n += 1;
                let me = n;
                async move {
                    tokio::time::sleep(ms(10)).await;
                    if me == 1 {
                        Err(std::io::Error::other("reset"))
                    } else {
                        Ok(me)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 2, "{hedge_delay:?}");
        assert_eq!(start.elapsed(), ms(20), "no wait for the hedge delay");
    }
}

#[tokio::test(start_paused = true)]
async fn all_failing_returns_the_last_error() {
    let retry = hedging(3, None);
    let mut n = 0;
    let result = retry
        .hedge(|| {
            n += 1;
            let me = n;
            async move {
                tokio::time::sleep(ms(100)).await;
                Err::<(), _>(std::io::Error::other(format!("attempt {me}")))
            }
        })
        .await;
    match result {
        Err(Error::Inner(e)) => assert_eq!(e.to_string(), "attempt 3"),
        other => panic!("{other:?}"),
    }
    assert_eq!(n, 3);
}

#[tokio::test(start_paused = true)]
async fn hedges_are_budgeted() {
    // No reserve and no calls to earn from: no hedge may be sent.
    let retry = hedging(3, Some(BudgetConfig::new(0.0, 0, Duration::from_secs(1))));
    let refused = Arc::new(AtomicU32::new(0));
    let counter = refused.clone();
    retry.on_event(move |e| {
        if matches!(e, Event::BudgetExhausted { .. }) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    let mut n = 0;
    let start = Instant::now();
    let result = retry
        .hedge(|| {
            n += 1;
            async {
                tokio::time::sleep(ms(200)).await;
                Ok::<_, std::io::Error>(())
            }
        })
        .await;
    assert!(result.is_ok());
    assert_eq!(n, 1);
    assert_eq!(start.elapsed(), ms(200));
    assert_eq!(refused.load(Ordering::Relaxed), 1);
}
