//! meshwork-bulkhead against tokio's `Semaphore` (the floor of the try path), tower's
//! `ConcurrencyLimit` and tower-resilience's bulkhead (the peers of the Layer), all in one run.
//! Every limit is large enough that nothing is refused: the groups measure the cost of taking
//! and returning one permit.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use meshwork_benches::{bench_config, runtime};
use meshwork_bulkhead::{AdaptiveLimit, Aimd, Bulkhead, BulkheadConfig, BulkheadLayer, Partition};
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

const LIMIT: usize = 1000;

fn meshwork(config: BulkheadConfig) -> Bulkhead {
    Bulkhead::new("bench", config)
}

fn fixed() -> Bulkhead {
    meshwork(
        BulkheadConfig::builder()
            .max_concurrent_calls(LIMIT)
            .build()
            .expect("valid config"),
    )
}

fn try_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead/try");
    let sem = Semaphore::new(LIMIT);
    g.bench_function("tokio Semaphore try_acquire+drop (floor)", |b| {
        b.iter(|| drop(black_box(sem.try_acquire())))
    });
    let m = fixed();
    g.bench_function("meshwork try_acquire+drop", |b| {
        b.iter(|| drop(black_box(m.try_acquire())))
    });
    let sem = Arc::new(Semaphore::new(LIMIT));
    g.bench_function("tokio Semaphore try_acquire_owned+drop", |b| {
        b.iter(|| drop(black_box(sem.clone().try_acquire_owned())))
    });
    g.bench_function("meshwork try_acquire_owned+drop", |b| {
        b.iter(|| drop(black_box(m.try_acquire_owned())))
    });
    let parts = meshwork(
        BulkheadConfig::builder()
            .max_concurrent_calls(LIMIT)
            .partition(Partition::new("live", 0.9))
            .partition(Partition::new("batch", 0.1))
            .build()
            .expect("valid config"),
    );
    let live = parts.partition("live").expect("partition");
    g.bench_function("meshwork partition try_acquire+drop", |b| {
        b.iter(|| drop(black_box(live.try_acquire())))
    });
    let adaptive = meshwork(
        BulkheadConfig::builder()
            .max_concurrent_calls(LIMIT)
            .adaptive(AdaptiveLimit::Aimd(Aimd::new(1, LIMIT)))
            .build()
            .expect("valid config"),
    );
    g.bench_function("meshwork AIMD try_acquire+drop", |b| {
        b.iter(|| drop(black_box(adaptive.try_acquire())))
    });
    let rt = runtime();
    let sem = Semaphore::new(LIMIT);
    g.bench_function("tokio Semaphore acquire+drop", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(sem.acquire().await)) })
    });
    g.bench_function("meshwork acquire+drop", |b| {
        b.to_async(&rt)
            .iter(|| async { drop(black_box(m.acquire().await)) })
    });
    g.finish();
}

/// A service whose future is ready at once, so the layer's own cost shows.
fn leaf() -> impl Service<u64, Response = u64, Error = std::io::Error, Future: Send> + Clone + Send
{
    service_fn(|x: u64| async move { Ok::<_, std::io::Error>(black_box(x) + 1) })
}

/// One request the way tower drives a service: `ready`, then `call`, then the response.
fn one<S: Service<u64>>(svc: &mut S) -> Option<Result<S::Response, S::Error>> {
    match svc.ready().now_or_never() {
        Some(Ok(svc)) => svc.call(1).now_or_never(),
        Some(Err(e)) => Some(Err(e)),
        None => None,
    }
}

fn layer(c: &mut Criterion) {
    // tower-resilience's bulkhead needs a runtime context even when nothing waits.
    let rt = runtime();
    let _context = rt.enter();
    let mut g = c.benchmark_group("bulkhead/layer");
    let mut bare = leaf();
    g.bench_function("bare service (floor)", |b| {
        b.iter(|| black_box(one(&mut bare)))
    });
    let mut limit = ConcurrencyLimitLayer::new(LIMIT).layer(leaf());
    g.bench_function("tower ConcurrencyLimit", |b| {
        b.iter(|| black_box(one(&mut limit)))
    });
    let mut theirs = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(LIMIT)
        .reject_when_full()
        .build()
        .expect("valid config")
        .layer(leaf());
    g.bench_function("tower-resilience bulkhead", |b| {
        b.iter(|| black_box(one(&mut theirs)))
    });
    let mut ours = BulkheadLayer::new(fixed()).layer(leaf());
    g.bench_function("meshwork BulkheadLayer", |b| {
        b.iter(|| black_box(one(&mut ours)))
    });
    g.finish();
}

/// Two threads taking and returning permits of one limit; reports the wall time per pair of
/// concurrent try_acquire+drop.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead/contended_2_threads");
    #[expect(
        clippy::disallowed_methods,
        reason = "criterion's iter_custom wants wall-clock time"
    )]
    fn run<F: Fn() + Sync>(iters: u64, f: F) -> Duration {
        let barrier = Barrier::new(2);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    f();
                }
            });
            barrier.wait();
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            worker.join().expect("worker");
            start.elapsed()
        })
    }
    let sem = Semaphore::new(LIMIT);
    g.bench_function("tokio Semaphore try_acquire+drop (floor)", |b| {
        b.iter_custom(|iters| run(iters, || drop(black_box(sem.try_acquire()))))
    });
    let m = fixed();
    g.bench_function("meshwork try_acquire+drop", |b| {
        b.iter_custom(|iters| run(iters, || drop(black_box(m.try_acquire()))))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = bench_config();
    targets = try_path, layer, contended
}
criterion_main!(benches);
