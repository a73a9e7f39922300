//! Adaptive limits under paused time: the limit falls when latency rises and recovers after;
//! the gradient limit re-probes its minimum RTT with jitter.

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_bulkhead::{AdaptiveLimit, Aimd, Bulkhead, BulkheadConfig, Event, Gradient, Outcome};
use tokio::time::Instant;

/// `workers` tasks calling through the bulkhead in a loop for `run_for`; each call takes the
/// current `latency_ms`.
async fn drive(b: &Bulkhead, latency_ms: &Arc<AtomicU64>, workers: usize, run_for: Duration) {
    let until = Instant::now() + run_for;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (b, latency) = (b.clone(), latency_ms.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let r = b
                        .call(|| async {
                            let ms = latency.load(SeqCst);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok::<_, ()>(())
                        })
                        .await;
                    if r.is_err() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

fn adaptive(initial: usize, limit: AdaptiveLimit) -> Bulkhead {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(initial)
        .max_wait(Duration::from_secs(10))
        .max_waiters(1000)
        .adaptive(limit)
        .build()
        .unwrap();
    Bulkhead::new("adaptive", config)
}

#[tokio::test(start_paused = true)]
async fn gradient_falls_when_latency_rises_and_recovers_after() {
    let mut g = Gradient::new(2, 200);
    g.probe_interval = Duration::from_secs(3600);
    g.probe_samples = 10;
    g.sample_window = 10;
    g.seed = Some(1);
    let b = adaptive(40, AdaptiveLimit::Gradient(g));
    let min_rtt = Arc::new(Mutex::new(None));
    let sink = min_rtt.clone();
    b.on_event(move |e| {
        if let Event::MinRttMeasured { min_rtt, .. } = e {
            *sink.lock().unwrap() = Some(*min_rtt);
        }
    });
    // The first probe pins the limit.
    assert_eq!(b.limit(), 3);
    let latency = Arc::new(AtomicU64::new(10));
    drive(&b, &latency, 60, Duration::from_secs(5)).await;
    assert_eq!(*min_rtt.lock().unwrap(), Some(Duration::from_millis(10)));
    let healthy = b.limit();
    assert!(healthy >= 40, "healthy limit {healthy}");

    latency.store(40, SeqCst);
    drive(&b, &latency, 60, Duration::from_secs(5)).await;
    let degraded = b.limit();
    assert!(degraded * 2 < healthy, "limit {healthy} -> {degraded}");

    latency.store(10, SeqCst);
    drive(&b, &latency, 60, Duration::from_secs(5)).await;
    let recovered = b.limit();
    assert!(
        recovered >= healthy.min(40),
        "limit {degraded} -> {recovered}"
    );
    assert_eq!((b.in_flight(), b.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn aimd_backs_off_on_slow_calls_and_climbs_back() {
    let mut a = Aimd::new(2, 100);
    a.latency_threshold = Duration::from_millis(30);
    let b = adaptive(20, AdaptiveLimit::Aimd(a));
    let latency = Arc::new(AtomicU64::new(10));
    drive(&b, &latency, 100, Duration::from_secs(2)).await;
    let healthy = b.limit();
    assert!(healthy > 20, "limit {healthy}");

    latency.store(50, SeqCst);
    drive(&b, &latency, 100, Duration::from_secs(2)).await;
    let degraded = b.limit();
    assert!(degraded <= 5, "limit {healthy} -> {degraded}");

    latency.store(10, SeqCst);
    drive(&b, &latency, 100, Duration::from_secs(2)).await;
    assert!(
        b.limit() > degraded * 4,
        "limit {degraded} -> {}",
        b.limit()
    );
}

#[tokio::test(start_paused = true)]
async fn drops_recorded_on_permits_lower_the_limit_and_ignored_ones_do_not() {
    let b = adaptive(10, AdaptiveLimit::Aimd(Aimd::new(1, 20)));
    let changes = Arc::new(Mutex::new(Vec::new()));
    let sink = changes.clone();
    b.on_event(move |e| {
        if let Event::LimitChanged { from, to, .. } = e {
            sink.lock().unwrap().push((*from, *to));
        }
    });
    b.try_acquire().unwrap().record(Outcome::Ignored);
    assert_eq!(b.limit(), 10);
    b.try_acquire().unwrap().record(Outcome::Dropped);
    assert_eq!(b.limit(), 9);
    let err = b.call(|| async { Err::<(), _>("overloaded") }).await;
    assert!(err.is_err());
    assert_eq!(b.limit(), 8);
    assert_eq!(*changes.lock().unwrap(), vec![(10, 9), (9, 8)]);
}

/// The times, from now, at which minimum-RTT probes of `b` finish.
fn probe_times(b: &Bulkhead) -> Arc<Mutex<Vec<Duration>>> {
    let probes = Arc::new(Mutex::new(Vec::new()));
    let sink = probes.clone();
    let start = Instant::now();
    b.on_event(move |e| {
        if let Event::MinRttMeasured { .. } = e {
            sink.lock().unwrap().push(start.elapsed());
        }
    });
    probes
}

#[tokio::test(start_paused = true)]
async fn the_minimum_rtt_is_reprobed_periodically_with_jitter() {
    let mut g = Gradient::new(1, 50);
    g.probe_interval = Duration::from_secs(10);
    g.probe_jitter = 0.5;
    g.probe_samples = 5;
    g.sample_window = 5;
    g.seed = Some(42);
    let b = adaptive(10, AdaptiveLimit::Gradient(g));
    let probes = probe_times(&b);
    let latency = Arc::new(AtomicU64::new(5));
    drive(&b, &latency, 5, Duration::from_secs(60)).await;
    let probes = probes.lock().unwrap().clone();
    assert!(probes.len() >= 4, "probes at {probes:?}");
    let gaps: Vec<_> = probes.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        // interval * [1, 1.5) plus the time the probe takes to collect its samples.
        assert!(
            *gap >= Duration::from_secs(10) && *gap < Duration::from_millis(15_100),
            "gaps {gaps:?}"
        );
    }
    assert!(gaps.iter().any(|g| *g != gaps[0]), "no jitter: {gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_probe_schedule() {
    async fn schedule(seed: u64) -> Vec<Duration> {
        let mut g = Gradient::new(1, 50);
        g.probe_interval = Duration::from_secs(10);
        g.probe_samples = 3;
        g.seed = Some(seed);
        let b = adaptive(10, AdaptiveLimit::Gradient(g));
        let probes = probe_times(&b);
        drive(&b, &Arc::new(AtomicU64::new(5)), 1, Duration::from_secs(45)).await;
        probes.lock().unwrap().clone()
    }
    let a = schedule(7).await;
    assert!(a.len() >= 3);
    assert_eq!(a, schedule(7).await);
    assert_ne!(a, schedule(8).await);
}
