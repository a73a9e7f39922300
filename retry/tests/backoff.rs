//! Backoff sequences, jitter bounds, caps on elapsed time and per-attempt timeouts, all on
//! paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_retry::{Backoff, Error, Event, GiveUpReason, Jitter, Retry, RetryConfig};
use proptest::prelude::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs a call that always fails; returns the delays between its attempts.
async fn gaps(retry: &Retry) -> (Vec<Duration>, Result<(), Error<std::io::Error>>) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let result = retry
        .call(|| {
            starts.lock().unwrap().push(Instant::now());
            async { Err::<(), _>(std::io::Error::other("down")) }
        })
        .await;
    let starts = starts.lock().unwrap();
    (starts.windows(2).map(|w| w[1] - w[0]).collect(), result)
}

#[tokio::test(start_paused = true)]
async fn exponential_without_jitter_is_exact_and_capped() {
    let config = RetryConfig::builder()
        .max_attempts(6)
        .backoff(Backoff::exponential(ms(100), 2.0))
        .jitter(Jitter::None)
        .max_delay(ms(1000))
        .no_budget()
        .build()
        .unwrap();
    let (gaps, result) = gaps(&Retry::new("exp", config)).await;
    assert_eq!(gaps, [ms(100), ms(200), ms(400), ms(800), ms(1000)]);
    assert!(matches!(result, Err(Error::Inner(_))));
}

#[tokio::test(start_paused = true)]
async fn linear_and_constant_sequences() {
    let linear = RetryConfig::builder()
        .max_attempts(4)
        .backoff(Backoff::linear(ms(50), ms(25)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(
        gaps(&Retry::new("lin", linear)).await.0,
        [ms(50), ms(75), ms(100)]
    );
    let constant = RetryConfig::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(ms(30)))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    assert_eq!(gaps(&Retry::new("c", constant)).await.0, [ms(30), ms(30)]);
}

#[tokio::test(start_paused = true)]
async fn fixed_seed_gives_the_exact_jittered_sequence() {
    for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
        let config = RetryConfig::builder()
            .max_attempts(5)
            .jitter(jitter)
            .rng_seed(42)
            .no_budget()
            .build()
            .unwrap();
        let expected: Vec<Duration> = config.delays().take(4).collect();
        let (a, _) = gaps(&Retry::new("seeded", config.clone())).await;
        let (b, _) = gaps(&Retry::new("seeded", config)).await;
        // Paused time rounds sleeps up to the millisecond.
        let rounded: Vec<Duration> = expected
            .iter()
            .map(|d| ms(d.as_nanos().div_ceil(1_000_000) as u64))
            .collect();
        assert_eq!(a, rounded, "{jitter:?}");
        assert_eq!(a, b, "{jitter:?}: same seed, same delays");
    }
    // Pinned values, so a change in the jitter arithmetic shows up here.
    let config = RetryConfig::builder()
        .jitter(Jitter::Full)
        .rng_seed(42)
        .build()
        .unwrap();
    let first: Vec<u128> = config.delays().take(3).map(|d| d.as_micros()).collect();
    assert_eq!(first, PINNED_FULL_JITTER_SEED_42);
}

const PINNED_FULL_JITTER_SEED_42: [u128; 3] = [53_741, 163_718, 140_107];

#[tokio::test(start_paused = true)]
async fn max_elapsed_stops_before_the_delay_that_would_cross_it() {
    let config = RetryConfig::builder()
        .max_attempts(10)
        .backoff(Backoff::constant(ms(400)))
        .jitter(Jitter::None)
        .max_elapsed(ms(1000))
        .no_budget()
        .build()
        .unwrap();
    let retry = Retry::new("elapsed", config);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    retry.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    let start = Instant::now();
    let (gaps, _) = gaps(&retry).await;
    // Retries at 400 and 800 ms; a third would end at 1200 ms > 1000 ms.
    assert_eq!(gaps, [ms(400), ms(400)]);
    assert_eq!(start.elapsed(), ms(800));
    let events = events.lock().unwrap();
    assert!(matches!(
        events.last(),
        Some(Event::GaveUp {
            attempts: 3,
            reason: GiveUpReason::MaxElapsed,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_retries_and_reports_the_last_timeout() {
    let config = RetryConfig::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(ms(10)))
        .jitter(Jitter::None)
        .attempt_timeout(ms(100))
        .build()
        .unwrap();
    let retry = Retry::new("slow", config);
    let start = Instant::now();
    let mut n = 0;
    let result = retry
        .call(|| {
            n += 1;
            let wait = if n < 3 { ms(1000) } else { ms(50) };
            async move {
                tokio::time::sleep(wait).await;
                Ok::<_, std::io::Error>(n)
            }
        })
        .await;
    assert_eq!(result.unwrap(), 3, "the third attempt beat the timeout");
    assert_eq!(start.elapsed(), ms(100 + 10 + 100 + 10 + 50));

    let start = Instant::now();
    let result = retry
        .call(|| async {
            tokio::time::sleep(ms(1000)).await;
            Ok::<_, std::io::Error>(())
        })
        .await;
    match result {
        Err(Error::TimedOut(t)) => {
            assert_eq!(t.attempts(), 3);
            assert_eq!(t.timeout(), ms(100));
            assert_eq!(t.name(), "slow");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(start.elapsed(), ms(320));
}

#[tokio::test(start_paused = true)]
async fn success_is_not_delayed_and_not_retried() {
    let retry = Retry::with_defaults("ok");
    let start = Instant::now();
    let mut n = 0;
    let result = retry
        .call(|| {
            n += 1;
            async { Ok::<_, std::io::Error>(7) }
        })
        .await;
    assert_eq!(result.unwrap(), 7);
    assert_eq!(n, 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

fn backoff() -> impl Strategy<Value = Backoff> {
    prop_oneof![
        (0u64..10_000).prop_map(|d| Backoff::constant(ms(d))),
        (0u64..10_000, 0u64..10_000).prop_map(|(i, s)| Backoff::linear(ms(i), ms(s))),
        (0u64..10_000, 1.0f64..10.0).prop_map(|(i, m)| Backoff::exponential(ms(i), m)),
    ]
}

proptest! {
    /// Every delay is within its jitter's bounds and never above `max_delay`.
    #[test]
    fn delays_stay_within_bounds(
        backoff in backoff(),
        jitter in jitter(),
        max_ms in 1u64..60_000,
        seed in any::<u64>(),
    ) {
        let config = RetryConfig::builder()
            .backoff(backoff)
            .jitter(jitter)
            .max_delay(ms(max_ms))
            .rng_seed(seed)
            .build()
            .unwrap();
        let cap = config.max_delay;
        let base = backoff.delay(1).min(cap);
        let mut previous = base;
        for (i, d) in config.delays().take(40).enumerate() {
            let full = backoff.delay(i as u32 + 1).min(cap);
            prop_assert!(d <= cap);
            match jitter {
                Jitter::None => prop_assert_eq!(d, full),
                Jitter::Full => prop_assert!(d <= full),
                Jitter::Equal => prop_assert!(d >= full / 2 && d <= full),
                Jitter::Decorrelated => {
                    prop_assert!(d >= base && d <= (previous * 3).min(cap).max(base));
                }
                _ => prop_assert!(false, "unknown jitter"),
            }
            previous = d;
        }
    }
}
