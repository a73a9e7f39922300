//! meshwork-retry on the success path (the first attempt succeeds), beside the floor (a bare
//! async call) and its peers: backon, and tower's `retry` middleware.
//!
//! Needs meshwork-retry's `tower` feature (for `RetryLayer`). That the direct call allocates
//! nothing is checked by `retry/tests/alloc.rs` (the workspace forbids the `unsafe` a counting
//! allocator here would need).

use std::future::{Ready, ready};
use std::hint::black_box;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use criterion::{Criterion, criterion_group, criterion_main};
use meshwork_retry::{Retry, RetryConfig, RetryLayer};
use tower::{Layer, Service, ServiceExt, service_fn};

type Error = std::io::Error;

/// The call every contender wraps: succeeds at once.
#[inline(never)]
async fn op(x: u64) -> Result<u64, Error> {
    Ok(black_box(x))
}

/// A plain tower retry policy: up to 3 attempts, clones the request.
#[derive(Clone)]
struct Attempts(u32);

impl<Req: Clone, Res, E> tower::retry::Policy<Req, Res, E> for Attempts {
    type Future = Ready<()>;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 1 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn success(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let retry = Retry::new("bench", RetryConfig::default());
    let inner = service_fn(op);
    let tower_retry = tower::retry::RetryLayer::new(Attempts(3)).layer(inner);
    let meshwork_layer = RetryLayer::new(retry.clone()).layer(inner);

    let mut group = c.benchmark_group("retry/success");
    group
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50);

    group.bench_function("bare call (floor)", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(op(black_box(1)).await) })
    });
    group.bench_function("meshwork", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(retry.call(|| op(black_box(1))).await) })
    });
    group.bench_function("backon", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(
                (|| op(black_box(1)))
                    .retry(ExponentialBuilder::default())
                    .await,
            )
        })
    });
    group.bench_function("tower::retry layer", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = tower_retry.clone();
            async move {
                let ready = service.ready().await.expect("ready");
                black_box(ready.call(black_box(1)).await)
            }
        })
    });
    group.bench_function("meshwork layer", |b| {
        b.to_async(&rt).iter(|| {
            let mut service = meshwork_layer.clone();
            async move {
                let ready = service.ready().await.expect("ready");
                black_box(ready.call(black_box(1)).await)
            }
        })
    });
    group.finish();
}

criterion_group!(benches, success);
criterion_main!(benches);
