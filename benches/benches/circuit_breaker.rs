//! meshwork-circuit-breaker against recloser, failsafe and tower-resilience, with a bare call as
//! the floor, all in one run. Every breaker is in its closed state with a count window of 100
//! calls and a 50% threshold unless the group says otherwise.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use meshwork_benches::{bench_config, runtime};
use meshwork_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, SlidingWindow,
};
use tower::{Layer, Service, ServiceExt, service_fn};

fn work(x: u64) -> Result<u64, ()> {
    Ok(black_box(x).wrapping_add(1))
}

fn meshwork(window: SlidingWindow) -> CircuitBreaker {
    CircuitBreaker::new(
        "bench",
        CircuitBreakerConfig::builder()
            .sliding_window(window)
            .minimum_number_of_calls(1)
            .build()
            .expect("valid config"),
    )
}

fn count100() -> SlidingWindow {
    SlidingWindow::Count { size: 100 }
}

fn recloser() -> recloser::Recloser {
    recloser::Recloser::custom()
        .error_rate(0.5)
        .closed_len(100)
        .build()
}

fn sync_call(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker/closed_sync");
    g.bench_function("bare call (floor)", |b| b.iter(|| work(1)));
    let m = meshwork(count100());
    g.bench_function("meshwork", |b| b.iter(|| m.call_sync(|| work(1))));
    let m = meshwork(SlidingWindow::ConsecutiveFailures { threshold: 5 });
    g.bench_function("meshwork consecutive-failures", |b| {
        b.iter(|| m.call_sync(|| work(1)))
    });
    let r = recloser();
    g.bench_function("recloser", |b| b.iter(|| r.call(|| work(1))));
    {
        use failsafe::CircuitBreaker as _;
        let f = failsafe::Config::new().build();
        g.bench_function("failsafe", |b| b.iter(|| f.call(|| work(1))));
        let backoff = failsafe::backoff::constant(Duration::from_secs(30));
        let f = failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(5, backoff))
            .build();
        g.bench_function("failsafe consecutive-failures", |b| {
            b.iter(|| f.call(|| work(1)))
        });
    }
    g.finish();
}

fn async_call(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("circuit_breaker/closed_async");
    g.bench_function("bare call (floor)", |b| {
        b.to_async(&rt).iter(|| async { work(1) })
    });
    let m = meshwork(count100());
    g.bench_function("meshwork", |b| {
        b.to_async(&rt).iter(|| m.call(|| async { work(1) }))
    });
    let r = recloser::AsyncRecloser::from(recloser());
    g.bench_function("recloser", |b| {
        b.to_async(&rt).iter(|| r.call(async { work(1) }))
    });
    {
        use failsafe::futures::CircuitBreaker as _;
        let f = failsafe::Config::new().build();
        g.bench_function("failsafe", |b| {
            b.to_async(&rt).iter(|| f.call(async { work(1) }))
        });
    }
    g.finish();
}

/// A service whose future is ready at once, so the layer's own cost shows.
fn leaf() -> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send> + Clone {
    service_fn(|x: u64| async move { Ok::<_, std::io::Error>(black_box(x) + 1) })
}

fn layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker/layer");
    let mut bare = leaf();
    g.bench_function("bare service (floor)", |b| {
        b.iter(|| bare.call(1).now_or_never())
    });
    let mut ours = CircuitBreakerLayer::new(meshwork(count100())).layer(leaf());
    g.bench_function("meshwork", |b| b.iter(|| ours.call(1).now_or_never()));
    let mut theirs = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid config")
        .layer(leaf());
    // tower-resilience takes its permit in poll_ready; drive it the way tower does.
    g.bench_function("tower-resilience", |b| {
        b.iter(|| {
            let svc = theirs.ready().now_or_never().expect("ready").expect("ok");
            svc.call(1).now_or_never()
        })
    });
    g.finish();
}

/// Two threads hammering one breaker; reports the wall time per pair of concurrent calls.
/// Layers: each thread calls its own clone of the service, as tower stacks do per connection.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker/contended_2_threads");
    /// Runs `iters` calls on each of two threads; `make` builds each thread's call.
    #[expect(
        clippy::disallowed_methods,
        reason = "criterion's iter_custom wants wall-clock time"
    )]
    fn run<G, F>(iters: u64, make: G) -> Duration
    where
        G: Fn() -> F + Sync,
        F: FnMut(),
    {
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                let mut f = make();
                barrier.wait();
                for _ in 0..iters {
                    f();
                }
            });
            let mut f = make();
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            worker.join().expect("worker");
            start.elapsed()
        })
    }
    g.bench_function("bare call (floor)", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                || {
                    let _ = black_box(work(1));
                }
            })
        })
    });
    let m = meshwork(count100());
    g.bench_function("meshwork", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                || {
                    let _ = black_box(m.call_sync(|| work(1)));
                }
            })
        })
    });
    let m = meshwork(SlidingWindow::Time {
        duration: Duration::from_secs(60),
        buckets: 60,
    });
    g.bench_function("meshwork time-window", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                || {
                    let _ = black_box(m.call_sync(|| work(1)));
                }
            })
        })
    });
    let r = recloser();
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                || {
                    let _ = black_box(r.call(|| work(1)));
                }
            })
        })
    });
    {
        use failsafe::CircuitBreaker as _;
        let f = failsafe::Config::new().build();
        g.bench_function("failsafe", |b| {
            b.iter_custom(|iters| {
                run(iters, || {
                    || {
                        let _ = black_box(f.call(|| work(1)));
                    }
                })
            })
        });
    }
    let ours = CircuitBreakerLayer::new(meshwork(count100())).layer(leaf());
    g.bench_function("meshwork layer", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                let mut svc = ours.clone();
                move || {
                    let _ = black_box(svc.call(1).now_or_never());
                }
            })
        })
    });
    let theirs = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .build()
        .expect("valid config")
        .layer(leaf());
    g.bench_function("tower-resilience layer", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                let mut svc = theirs.clone();
                move || {
                    let ready = svc.ready().now_or_never().expect("ready").expect("ok");
                    let _ = black_box(ready.call(1).now_or_never());
                }
            })
        })
    });
    // For scale: what tower's own ConcurrencyLimit pays for its shared permit under contention.
    let limit = tower::limit::ConcurrencyLimitLayer::new(1_000).layer(leaf());
    g.bench_function("tower ConcurrencyLimit layer (reference)", |b| {
        b.iter_custom(|iters| {
            run(iters, || {
                let mut svc = limit.clone();
                move || {
                    let ready = svc.ready().now_or_never().expect("ready").expect("ok");
                    let _ = black_box(ready.call(1).now_or_never());
                }
            })
        })
    });
    g.finish();
}

/// Cost of recording one call in a time-based window: it must stay flat however many calls the
/// window holds. meshwork is measured with 100 to 1,000,000 calls already in a one-hour window;
/// both crates are measured in a one-second window at the bench's full call rate (its steady
/// state holds every call of the last second).
fn time_window(c: &mut Criterion) {
    let mut g = c.benchmark_group("circuit_breaker/time_window");
    for n in [100u64, 10_000, 1_000_000] {
        let m = meshwork(SlidingWindow::Time {
            duration: Duration::from_secs(3600),
            buckets: 60,
        });
        for _ in 0..n {
            let _ = m.call_sync(|| work(1));
        }
        g.bench_with_input(BenchmarkId::new("meshwork prefilled", n), &n, |b, _| {
            b.iter(|| m.call_sync(|| work(1)))
        });
    }
    let mut ours = CircuitBreakerLayer::new(meshwork(SlidingWindow::Time {
        duration: Duration::from_secs(1),
        buckets: 10,
    }))
    .layer(leaf());
    g.bench_function("meshwork layer 1s window", |b| {
        b.iter(|| ours.call(1).now_or_never())
    });
    let mut theirs = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_type(tower_resilience::circuitbreaker::SlidingWindowType::TimeBased)
        .sliding_window_duration(Duration::from_secs(1))
        .minimum_number_of_calls(1)
        .build()
        .expect("valid config")
        .layer(leaf());
    g.bench_function("tower-resilience layer 1s window", |b| {
        b.iter(|| {
            let svc = theirs.ready().now_or_never().expect("ready").expect("ok");
            svc.call(1).now_or_never()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = bench_config();
    targets = sync_call, async_call, layer, contended, time_window
}
criterion_main!(benches);
