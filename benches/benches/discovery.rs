//! meshwork-discovery's hot paths: the balancer's pick (power of two choices over peak-EWMA
//! cost, weights and ejection checks) over 2, 10 and 100 endpoints against the floor (a
//! uniform random index into a slice), resolving from the watched snapshot against a static
//! resolve, and the tower Layer against a bare call.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use meshwork_benches::{bench_config, runtime};
use meshwork_discovery::balance::{BalanceConfig, BalanceLayer, EndpointSet, Picked};
use meshwork_discovery::{Discover, Instance, StaticDiscovery, Weights};
use tower::{Layer, Service, service_fn};

fn instances(n: usize, weighted: bool) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            let instance = Instance::new(
                format!("web-{i}"),
                "web",
                format!("10.0.{}.{}", i / 250, i % 250),
                8080,
            );
            if weighted {
                instance.with_weights(Weights {
                    passing: 1 + (i as u32 % 5),
                    warning: 1,
                })
            } else {
                instance
            }
        })
        .collect()
}

fn set(n: usize, weighted: bool) -> EndpointSet {
    let set = EndpointSet::new("web", BalanceConfig::default());
    set.update(instances(n, weighted));
    set
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("discovery/pick");
    for n in [2usize, 10, 100] {
        let endpoints = instances(n, false);
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        g.bench_with_input(BenchmarkId::new("random index (floor)", n), &n, |b, _| {
            b.iter(|| {
                // xorshift64: the cheapest random draw, the floor of any random pick.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                black_box(&endpoints[(state % endpoints.len() as u64) as usize])
            })
        });
        let mut picker = set(n, false).picker();
        g.bench_with_input(BenchmarkId::new("meshwork p2c pick", n), &n, |b, _| {
            b.iter(|| drop(black_box(picker.pick())))
        });
        g.bench_with_input(
            BenchmarkId::new("meshwork p2c pick+record", n),
            &n,
            |b, _| b.iter(|| picker.pick().map(|p| p.success())),
        );
        let mut weighted = set(n, true).picker();
        g.bench_with_input(
            BenchmarkId::new("meshwork p2c weighted pick+record", n),
            &n,
            |b, _| b.iter(|| weighted.pick().map(|p| p.success())),
        );
    }
    g.finish();
}

fn resolve(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("discovery/resolve");
    let watched = set(10, false);
    g.bench_function("EndpointSet::instances (watched snapshot), 10", |b| {
        b.iter(|| black_box(watched.instances()))
    });
    let discovery = StaticDiscovery::new(instances(10, false));
    g.bench_function("StaticDiscovery::resolve, 10", |b| {
        b.iter(|| rt.block_on(async { black_box(discovery.resolve("web").await) }))
    });
    g.finish();
}

fn layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("discovery/layer");
    let mut bare = service_fn(|n: u32| async move { Ok::<_, std::io::Error>(n) });
    g.bench_function("bare service_fn call (floor)", |b| {
        b.iter(|| bare.call(black_box(1)).now_or_never())
    });
    let inner = service_fn(|p: Picked<u32>| async move { Ok::<_, std::io::Error>(*p.request()) });
    let mut balanced = BalanceLayer::new(set(10, false)).layer(inner);
    g.bench_function("BalanceService call, 10 endpoints", |b| {
        b.iter(|| balanced.call(black_box(1)).now_or_never())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = bench_config();
    targets = pick, resolve, layer
}
criterion_main!(benches);
