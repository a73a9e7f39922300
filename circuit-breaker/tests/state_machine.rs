//! Every state transition, on paused time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, Error, Event, OpenBackoff, Outcome, SlidingWindow, State,
};
use tokio::time::{advance, sleep};

fn count_breaker(size: u32, min: u32) -> CircuitBreaker {
    CircuitBreaker::new(
        "t",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::Count { size })
            .minimum_number_of_calls(min)
            .failure_rate_threshold(50.0)
            .open_duration(Duration::from_secs(10))
            .permitted_calls_in_half_open(3)
            .half_open_success_threshold(100.0)
            .build()
            .unwrap(),
    )
}

/// A config builder for half-open tests: one failure opens it for one second.
fn trips_at_once() -> meshwork_circuit_breaker::CircuitBreakerConfigBuilder {
    CircuitBreakerConfig::builder()
        .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 1 })
        .open_duration(Duration::from_secs(1))
}

fn succeed(b: &CircuitBreaker) {
    b.try_acquire().unwrap().record(Outcome::Success);
}

fn fail(b: &CircuitBreaker) {
    b.try_acquire().unwrap().record(Outcome::Failure);
}

fn transitions(b: &CircuitBreaker) -> Arc<Mutex<Vec<(State, State)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_event(move |e| {
        if let Event::StateTransition { from, to, .. } = e {
            sink.lock().unwrap().push((*from, *to));
        }
    });
    seen
}

#[tokio::test(start_paused = true)]
async fn count_window_after_10000_successes_opens_after_exactly_50_failures() {
    let b = count_breaker(100, 100);
    for _ in 0..10_000 {
        succeed(&b);
    }
    for i in 1..=49 {
        fail(&b);
        assert_eq!(b.state(), State::Closed, "opened early, after {i} failures");
    }
    fail(&b);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn minimum_number_of_calls_is_respected_and_reaching_it_evaluates() {
    let b = count_breaker(10, 5);
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "4 calls are below the minimum of 5"
    );
    // The fifth call is a success, but 4 of 5 failed: reaching the minimum evaluates.
    succeed(&b);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn full_cycle_closed_open_half_open_closed() {
    let b = count_breaker(4, 4);
    let seen = transitions(&b);
    for _ in 0..2 {
        succeed(&b);
        fail(&b);
    }
    assert_eq!(b.state(), State::Open);
    let rejected = b.try_acquire().unwrap_err();
    assert_eq!(rejected.state(), State::Open);
    assert_eq!(rejected.retry_after(), Some(Duration::from_secs(10)));
    assert_eq!(
        rejected.to_string(),
        "circuit 't' is open; retry after 10.0s"
    );

    advance(Duration::from_millis(9_999)).await;
    assert!(b.try_acquire().is_err(), "probing must not start early");
    advance(Duration::from_millis(1)).await;
    let probes: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert_eq!(b.state(), State::HalfOpen);
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    for p in probes {
        p.record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0, "closing starts a fresh window");
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_growing_open_duration() {
    let b = CircuitBreaker::new(
        "grow",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 1 })
            .open_backoff(OpenBackoff::exponential(
                Duration::from_secs(1),
                2.0,
                Duration::from_secs(5),
            ))
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    );
    fail(&b);
    for expected in [2, 4, 5, 5] {
        advance(Duration::from_secs(5)).await;
        fail(&b); // the single probe fails
        assert_eq!(b.state(), State::Open);
        let after = b.try_acquire().unwrap_err().retry_after().unwrap();
        assert_eq!(after, Duration::from_secs(expected));
    }
    advance(Duration::from_secs(5)).await;
    succeed(&b);
    assert_eq!(b.state(), State::Closed);
    // After closing, the next opening starts from the base again.
    fail(&b);
    assert_eq!(
        b.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_open_durations_vary_within_bounds_and_repeat_with_a_seed() {
    let durations = |seed| {
        let b = CircuitBreaker::new(
            "j",
            CircuitBreakerConfig::builder()
                .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 1 })
                .open_backoff(OpenBackoff::fixed(Duration::from_secs(10)).with_jitter(0.5))
                .rng_seed(seed)
                .build()
                .unwrap(),
        );
        (0..20)
            .map(|_| {
                b.reset();
                fail(&b);
                b.try_acquire().unwrap_err().retry_after().unwrap()
            })
            .collect::<Vec<_>>()
    };
    let a = durations(1);
    assert_eq!(a, durations(1));
    assert!(
        a.iter()
            .all(|d| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(15))
    );
    assert!(
        a.iter().any(|d| *d != a[0]),
        "jitter must spread the durations"
    );
}

#[tokio::test(start_paused = true)]
async fn half_open_success_ratio_decides_early() {
    let b = CircuitBreaker::new(
        "ratio",
        trips_at_once()
            .permitted_calls_in_half_open(4)
            .half_open_success_threshold(50.0)
            .build()
            .unwrap(),
    );
    fail(&b);
    advance(Duration::from_secs(1)).await;
    let p: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    let mut p = p.into_iter();
    p.next().unwrap().record(Outcome::Failure);
    p.next().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::HalfOpen);
    p.next().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed, "2 of 4 reach 50%");
    // The last probe reports after the decision: it must not disturb the new window.
    p.next().unwrap().record(Outcome::Failure);
    assert_eq!(b.metrics().failed_calls, 0);

    // Three failures out of four can no longer reach 50%: reopen at once.
    fail(&b);
    advance(Duration::from_secs(1)).await;
    let p: Vec<_> = (0..4).map(|_| b.try_acquire().unwrap()).collect();
    let mut p = p.into_iter();
    p.next().unwrap().record(Outcome::Failure);
    p.next().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), State::HalfOpen);
    p.next().unwrap().record(Outcome::Failure);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn exactly_n_probes_admitted_among_100_concurrent_callers() {
    let b = CircuitBreaker::new(
        "probe",
        trips_at_once()
            .permitted_calls_in_half_open(3)
            .build()
            .unwrap(),
    );
    fail(&b);
    advance(Duration::from_secs(1)).await;
    let admitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let b = b.clone();
            let admitted = admitted.clone();
            tokio::spawn(async move {
                b.call(|| async {
                    admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    sleep(Duration::from_millis(100)).await;
                    Ok::<_, ()>(())
                })
                .await
            })
        })
        .collect();
    let mut rejected = 0;
    for t in tasks {
        if let Err(Error::Rejected(r)) = t.await.unwrap() {
            assert_eq!(r.state(), State::HalfOpen);
            rejected += 1;
        }
    }
    assert_eq!(admitted.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(rejected, 97);
}

#[tokio::test(start_paused = true)]
async fn exactly_n_probes_admitted_among_threads() {
    let b = CircuitBreaker::new(
        "threads",
        trips_at_once()
            .permitted_calls_in_half_open(5)
            .build()
            .unwrap(),
    );
    fail(&b);
    advance(Duration::from_secs(1)).await;
    // Threads enter the runtime so they read its paused clock.
    let runtime = tokio::runtime::Handle::current();
    let permits = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(|| {
                    let _clock = runtime.enter();
                    (0..50)
                        .filter_map(|_| b.try_acquire_owned().ok())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(permits.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn cancelled_probe_gives_its_permit_back() {
    let b = CircuitBreaker::new(
        "cancel",
        trips_at_once()
            .permitted_calls_in_half_open(1)
            .build()
            .unwrap(),
    );
    fail(&b);
    advance(Duration::from_secs(1)).await;
    let hung = {
        let b = b.clone();
        tokio::spawn(async move {
            b.call(|| async {
                sleep(Duration::from_secs(3600)).await;
                Ok::<_, ()>(())
            })
            .await
        })
    };
    tokio::task::yield_now().await;
    assert!(b.try_acquire().is_err(), "the only probe is taken");
    hung.abort();
    let _ = hung.await;
    // The aborted call dropped its permit: another probe may go.
    let probe = b.try_acquire().expect("permit was given back");
    probe.record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);

    // An ignored outcome gives the permit back too.
    fail(&b);
    advance(Duration::from_secs(1)).await;
    b.try_acquire().unwrap().record(Outcome::Ignored);
    assert_eq!(b.state(), State::HalfOpen);
    b.try_acquire().unwrap().record(Outcome::Success);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn hung_probes_cannot_leave_it_half_open_past_the_maximum() {
    let b = CircuitBreaker::new(
        "hung",
        trips_at_once()
            .permitted_calls_in_half_open(2)
            .max_half_open_duration(Some(Duration::from_secs(30)))
            .build()
            .unwrap(),
    );
    fail(&b);
    advance(Duration::from_secs(1)).await;
    let hung: Vec<_> = (0..2).map(|_| b.try_acquire_owned().unwrap()).collect();
    advance(Duration::from_secs(29)).await;
    assert_eq!(b.try_acquire().unwrap_err().state(), State::HalfOpen);
    advance(Duration::from_secs(1)).await;
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.state(), State::Open);
    assert_eq!(b.state(), State::Open);
    // The hung probes finally answer: they belong to a trial that is over.
    for p in hung {
        p.record(Outcome::Success);
    }
    assert_eq!(b.state(), State::Open);
    advance(Duration::from_secs(2)).await;
    assert!(
        b.try_acquire().is_ok(),
        "a fresh trial starts with fresh permits"
    );
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker() {
    let b = CircuitBreaker::new(
        "slow",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::Count { size: 10 })
            .minimum_number_of_calls(4)
            .slow_call_duration_threshold(Duration::from_millis(500))
            .slow_call_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    let call = |ms| {
        let b = b.clone();
        async move {
            b.call(|| async {
                sleep(Duration::from_millis(ms)).await;
                Ok::<_, ()>(())
            })
            .await
        }
    };
    call(100).await.unwrap();
    call(499).await.unwrap();
    call(500).await.unwrap();
    assert_eq!(b.metrics().slow_calls, 1);
    assert_eq!(b.state(), State::Closed);
    call(900).await.unwrap();
    assert_eq!(b.state(), State::Open, "2 of 4 calls were slow");
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_failures_older_than_the_window() {
    let b = CircuitBreaker::new(
        "time",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::Time {
                duration: Duration::from_secs(10),
                buckets: 10,
            })
            .minimum_number_of_calls(4)
            .failure_rate_threshold(50.0)
            .build()
            .unwrap(),
    );
    fail(&b);
    fail(&b);
    succeed(&b);
    advance(Duration::from_secs(10)).await;
    // The two failures expired: 1 failure of 4 calls is 25%.
    fail(&b);
    succeed(&b);
    succeed(&b);
    succeed(&b);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 4);
    fail(&b);
    assert_eq!(b.state(), State::Closed, "2 of 5 is 40%");
    fail(&b);
    assert_eq!(b.state(), State::Open, "3 of 6 is 50%");
}

#[tokio::test(start_paused = true)]
async fn failure_count_threshold_opens_whatever_the_rate() {
    let b = CircuitBreaker::new(
        "per-minute",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::Time {
                duration: Duration::from_secs(60),
                buckets: 60,
            })
            .failure_count_threshold(5)
            .build()
            .unwrap(),
    );
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_event(move |e| {
        if let Event::FailureCountExceeded { failures, .. } = e {
            sink.lock().unwrap().push(*failures);
        }
    });
    for _ in 0..1000 {
        succeed(&b);
    }
    for _ in 0..4 {
        fail(&b);
        advance(Duration::from_secs(10)).await;
    }
    assert_eq!(b.state(), State::Closed);
    fail(&b);
    assert_eq!(b.state(), State::Open, "5 failures within a minute");
    assert_eq!(*seen.lock().unwrap(), vec![5]);
}

#[tokio::test(start_paused = true)]
async fn classification_counts_ok_as_failure_and_ignores_errors() {
    let b = count_breaker(4, 4);
    let classify = |r: &Result<u16, u16>| match r {
        Ok(s) if *s >= 500 => Outcome::Failure,
        Err(404) => Outcome::Ignored,
        _ => Outcome::Success,
    };
    for _ in 0..10 {
        let _ = b
            .call_with(&classify, || async { Err::<u16, u16>(404) })
            .await;
    }
    assert_eq!(b.metrics().calls, 0, "ignored calls are not recorded");
    for _ in 0..4 {
        b.call_with(&classify, || async { Ok::<u16, u16>(503) })
            .await
            .unwrap();
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn forced_open_disabled_and_metrics_only() {
    let b = count_breaker(4, 4);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    b.on_event(move |e| sink.lock().unwrap().push(e.clone()));

    b.force_open();
    let r = b.try_acquire().unwrap_err();
    assert_eq!((r.state(), r.retry_after()), (State::ForcedOpen, None));
    advance(Duration::from_secs(3600)).await;
    assert!(
        b.try_acquire().is_err(),
        "forced open never probes by itself"
    );

    b.transition_to(State::Disabled);
    for _ in 0..100 {
        fail(&b);
    }
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.metrics().calls, 0, "disabled records nothing");

    b.transition_to(State::MetricsOnly);
    for _ in 0..100 {
        fail(&b);
    }
    assert_eq!(b.state(), State::MetricsOnly, "metrics-only never rejects");
    assert_eq!(b.metrics().failed_calls, 4);
    let rate_events = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, Event::FailureRateExceeded { .. }))
        .count();
    assert_eq!(rate_events, 1, "a crossing is reported once, not per call");
    assert_eq!(b.metrics().not_permitted_calls, 2);

    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn permits_from_before_a_transition_do_not_count_after_it() {
    let b = count_breaker(4, 4);
    let stale: Vec<_> = (0..4).map(|_| b.try_acquire_owned().unwrap()).collect();
    b.reset();
    for p in stale {
        p.record(Outcome::Failure);
    }
    assert_eq!(b.state(), State::Closed);
    assert_eq!(b.metrics().calls, 0);
}

#[tokio::test(start_paused = true)]
async fn listeners_may_call_back_into_the_breaker() {
    let b = count_breaker(2, 2);
    let inner = b.clone();
    let states = Arc::new(Mutex::new(Vec::new()));
    let sink = states.clone();
    b.on_event(move |e| {
        if matches!(e, Event::StateTransition { .. }) {
            // Would deadlock if events were delivered under the control lock.
            let _ = inner.try_acquire();
            sink.lock().unwrap().push(inner.state());
        }
    });
    fail(&b);
    fail(&b);
    advance(Duration::from_secs(10)).await;
    b.try_acquire().unwrap().record(Outcome::Failure);
    assert_eq!(
        *states.lock().unwrap(),
        vec![State::Open, State::HalfOpen, State::Open]
    );
}
