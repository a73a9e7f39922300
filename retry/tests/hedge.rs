//! Hedging: backup attempts after a delay, budgeted; the first success wins and the others
//! are cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use meshwork_retry::{BudgetConfig, Error, Event, HedgeDelay, Retry, RetryConfig};
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

/// A policy hedging at the 95th percentile of the last 20 calls, between 1 ms and 200 ms.
fn p95(budget: Option<BudgetConfig>) -> Retry {
    let builder = RetryConfig::builder()
        .max_attempts(2)
        .hedge_delay(HedgeDelay::percentile(95.0, ms(1), ms(200), 20));
    let builder = match budget {
        Some(b) => builder.budget(b),
        None => builder.no_budget(),
    };
    Retry::new("p95", builder.build().unwrap())
}

/// A hedged call whose attempts take `took[i]` ms each (the last entry for any further
/// attempt); returns the winner's number, when each attempt started (from the call's start)
/// and how long the call took.
async fn timed_call(retry: &Retry, took: &[u64]) -> (u32, Vec<Duration>, Duration) {
    let start = Instant::now();
    let mut launched = Vec::new();
    let result = retry
        .hedge(|| {
            launched.push(start.elapsed());
            let me = launched.len();
            let took = took[(me - 1).min(took.len() - 1)];
            async move {
                tokio::time::sleep(ms(took)).await;
                Ok::<_, std::io::Error>(me as u32)
            }
        })
        .await;
    (result.unwrap(), launched, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn the_hedge_fires_after_the_measured_p95_not_before() {
    let retry = p95(None);
    // 20 calls of 1..=20 ms, none slow enough to be hedged: the p95 is the 19th, 19 ms.
    for n in 1..=20 {
        let (winner, launched, took) = timed_call(&retry, &[n]).await;
        assert_eq!((winner, launched.len(), took), (1, 1, ms(n)));
    }
    // An 18 ms call finishes before the delay: no hedge (its sample keeps the p95 at 19 ms).
    let (_, launched, _) = timed_call(&retry, &[18]).await;
    assert_eq!(launched, [ms(0)]);
    // A call stuck for a second: the backup starts at 19 ms exactly and wins 5 ms later.
    let (winner, launched, took) = timed_call(&retry, &[1_000, 5]).await;
    assert_eq!(launched, [ms(0), ms(19)]);
    assert_eq!((winner, took), (2, ms(24)));
}

#[tokio::test(start_paused = true)]
async fn the_delay_follows_the_latencies_as_they_change() {
    let retry = p95(None);
    for _ in 0..20 {
        timed_call(&retry, &[10]).await;
    }
    let (_, launched, _) = timed_call(&retry, &[1_000, 1]).await;
    assert_eq!(launched[1], ms(10));
    // The upstream slows down to 50 ms: once those fill the window, the delay follows
    // instead of hedging every call at 10 ms.
    for _ in 0..20 {
        timed_call(&retry, &[50]).await;
    }
    let (_, launched, _) = timed_call(&retry, &[1_000, 1]).await;
    assert_eq!(launched[1], ms(50));
    // It stays within `[min, max]`: calls of 250 ms (each outrunning its slower backup) put
    // the p95 at 250 ms, and the delay stops at 200.
    for _ in 0..20 {
        let (winner, _, took) = timed_call(&retry, &[250, 1_000]).await;
        assert_eq!((winner, took), (1, ms(250)));
    }
    let (_, launched, _) = timed_call(&retry, &[5_000, 1]).await;
    assert_eq!(launched[1], ms(200));
}

#[tokio::test(start_paused = true)]
async fn too_few_samples_use_the_fallback_max() {
    let retry = p95(None);
    // 19 fast calls: one short of the window.
    for _ in 0..19 {
        timed_call(&retry, &[1]).await;
    }
    let (winner, launched, took) = timed_call(&retry, &[1_000, 5]).await;
    assert_eq!(launched, [ms(0), ms(200)], "hedged at max, not at ~1 ms");
    assert_eq!((winner, took), (2, ms(205)));
    // That slow call was the 20th sample: now the window is full.
    let (_, launched, _) = timed_call(&retry, &[1_000, 5]).await;
    assert_eq!(
        launched,
        [ms(0), ms(1)],
        "the p95 of 19 x 1 ms and one 205 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_calls_and_plain_calls_record_no_latency() {
    let retry = p95(None);
    for _ in 0..20 {
        let failed = retry
            .hedge(|| async { Err::<(), _>(std::io::Error::other("down")) })
            .await;
        assert!(failed.is_err());
        let plain = retry.call(|| async { Ok::<_, std::io::Error>(()) }).await;
        assert!(plain.is_ok());
    }
    let (_, launched, _) = timed_call(&retry, &[1_000, 5]).await;
    assert_eq!(launched[1], ms(200), "still the fallback");
}

#[tokio::test(start_paused = true)]
async fn percentile_hedges_are_budgeted() {
    // No reserve, no percentage: the warm-up calls earn nothing, no hedge may be sent.
    let retry = p95(Some(BudgetConfig::new(0.0, 0, Duration::from_secs(1))));
    for _ in 0..20 {
        timed_call(&retry, &[2]).await;
    }
    let (winner, launched, took) = timed_call(&retry, &[300, 1]).await;
    assert_eq!(launched, [ms(0)], "the budget refused the hedge at 2 ms");
    assert_eq!((winner, took), (1, ms(300)));
}
