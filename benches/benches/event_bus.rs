//! meshwork-event-bus's in-memory backend beside the floor, a bare tokio mpsc channel, in one
//! run: publish throughput, end to end (publish, receive, ack) throughput, and end to end
//! through the Router. After the criterion groups, a latency probe publishes at a fixed rate
//! through the Router and prints (and saves, for `benches/report.py`) p50/p99/max latency.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use meshwork_benches::{bench_config, runtime};
use meshwork_event_bus::{
    BoxError, MemoryBus, Message, Outputs, Publisher, Route, Router, Subscriber,
};
use tokio::sync::Notify;

const N: u64 = 10_000;

fn payload() -> bytes::Bytes {
    bytes::Bytes::from_static(b"{\"room\":7,\"text\":\"hello\"}")
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("event_bus/publish");
    g.throughput(Throughput::Elements(N));
    g.bench_function("tokio mpsc send (floor)", |b| {
        b.to_async(&rt).iter(|| async {
            let (tx, mut rx) = tokio::sync::mpsc::channel(N as usize);
            for _ in 0..N {
                tx.send(Message::new(payload())).await.expect("open");
            }
            drop(tx);
            while rx.recv().await.is_some() {}
        })
    });
    for batch in [1u64, 100] {
        g.bench_with_input(
            BenchmarkId::new("meshwork memory", batch),
            &batch,
            |b, &batch| {
                b.to_async(&rt).iter(|| async move {
                    let bus = MemoryBus::new();
                    // A group, so published messages are kept for it (and trimmed as it acks).
                    let mut sub = bus.subscribe("bench", "g").await.expect("subscribe");
                    for _ in 0..N / batch {
                        let msgs = (0..batch).map(|_| Message::new(payload())).collect();
                        bus.publish("bench", msgs).await.expect("publish");
                    }
                    black_box(&mut sub);
                })
            },
        );
    }
    g.finish();
}

/// The floor of the end-to-end groups: N messages through a bounded tokio channel, from a
/// producer task to this one.
async fn mpsc_end_to_end() {
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    let producer = tokio::spawn(async move {
        for _ in 0..N {
            tx.send(Message::new(payload())).await.expect("open");
        }
    });
    for _ in 0..N {
        black_box(rx.recv().await.expect("message"));
    }
    producer.await.expect("producer");
}

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("event_bus/end_to_end");
    g.throughput(Throughput::Elements(N));
    g.bench_function("tokio mpsc (floor)", |b| {
        b.to_async(&rt).iter(mpsc_end_to_end)
    });
    g.bench_function("meshwork memory publish, recv, ack", |b| {
        b.to_async(&rt).iter(|| async {
            let bus = MemoryBus::new();
            let mut sub = bus.subscribe("bench", "g").await.expect("subscribe");
            let publisher = bus.clone();
            let producer = tokio::spawn(async move {
                for _ in 0..N / 100 {
                    let msgs = (0..100).map(|_| Message::new(payload())).collect();
                    publisher.publish("bench", msgs).await.expect("publish");
                }
            });
            for _ in 0..N {
                let d = sub.recv().await.expect("open").expect("delivery");
                d.ack().await.expect("ack");
            }
            producer.await.expect("producer");
        })
    });
    g.finish();
}

/// Starts a router on `bus` whose handler counts messages and wakes `done` at `n`.
fn counting_router(bus: &MemoryBus, n: u64) -> (meshwork_event_bus::RunningRouter, Arc<Notify>) {
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (h, d) = (handled.clone(), done.clone());
    let running = Router::builder(bus.clone(), bus.clone())
        .route(
            Route::new("count", "bench", "router", move |m: Message| {
                let (h, d) = (h.clone(), d.clone());
                async move {
                    black_box(m);
                    if h.fetch_add(1, Ordering::Relaxed) + 1 == n {
                        d.notify_one();
                    }
                    Ok::<_, BoxError>(Outputs::none())
                }
            })
            .max_in_flight(256),
        )
        .build()
        .expect("valid router")
        .start();
    (running, done)
}

fn router(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("event_bus/router");
    g.throughput(Throughput::Elements(N));
    g.bench_function("tokio mpsc (floor)", |b| {
        b.to_async(&rt).iter(mpsc_end_to_end)
    });
    g.bench_function("meshwork Router on memory", |b| {
        b.to_async(&rt).iter(|| async {
            let bus = MemoryBus::new();
            let (running, done) = counting_router(&bus, N);
            let finished = done.notified();
            for _ in 0..N / 100 {
                let msgs = (0..100).map(|_| Message::new(payload())).collect();
                bus.publish("bench", msgs).await.expect("publish");
            }
            finished.await;
            running.shutdown(Duration::from_secs(5)).await;
        })
    });
    g.finish();
}

/// Publishes `rate` messages per second for `secs` seconds through the Router and reports
/// the latency from publish to handler, on a multi-threaded runtime.
fn latency_probe(rate: u64, secs: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let total = rate * secs;
    let latencies = rt.block_on(async move {
        let bus = MemoryBus::new();
        let samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
        let done = Arc::new(Notify::new());
        let (s, d) = (samples.clone(), done.clone());
        let running = Router::builder(bus.clone(), bus.clone())
            .route(
                Route::new("latency", "probe", "router", move |m: Message| {
                    let (s, d) = (s.clone(), d.clone());
                    async move {
                        let sent: u64 = std::str::from_utf8(m.payload())
                            .ok()
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(0);
                        let now = std::time::UNIX_EPOCH
                            .elapsed()
                            .unwrap_or_default()
                            .as_nanos() as u64;
                        let mut s = s.lock().expect("samples");
                        s.push(now.saturating_sub(sent));
                        if s.len() as u64 == total {
                            d.notify_one();
                        }
                        Ok::<_, BoxError>(Outputs::none())
                    }
                })
                .max_in_flight(256),
            )
            .build()
            .expect("valid router")
            .start();
        let finished = done.notified();
        // Publish in 1 ms ticks of rate/1000 messages.
        let per_tick = (rate / 1000).max(1);
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut sent = 0;
        while sent < total {
            tick.tick().await;
            let now = std::time::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_nanos() as u64;
            let n = per_tick.min(total - sent);
            let msgs = (0..n).map(|_| Message::new(now.to_string())).collect();
            bus.publish("probe", msgs).await.expect("publish");
            sent += n;
        }
        finished.await;
        running.shutdown(Duration::from_secs(5)).await;
        let mut v = std::mem::take(&mut *samples.lock().expect("samples"));
        v.sort_unstable();
        v
    });
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let line = format!(
        "{{\"group\":\"event_bus/router_latency\",\"rate\":{rate},\"messages\":{},\"p50_ns\":{},\"p99_ns\":{},\"max_ns\":{}}}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    println!("router latency at {rate} msg/s: {line}");
    let dir = std::path::Path::new(
        &std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into()),
    )
    .join("meshwork-probes");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("event_bus_router_latency.json"), line);
    }
}

criterion_group! {
    name = benches;
    config = bench_config();
    targets = publish, end_to_end, router
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    latency_probe(100_000, 2);
}
