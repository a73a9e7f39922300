//! meshwork-event-bus's in-memory backend beside the floor, a bare tokio mpsc channel, in one
//! run: publish throughput, and end to end (publish, receive, ack) throughput.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use meshwork_benches::{bench_config, runtime};
use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber};

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

fn end_to_end(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("event_bus/end_to_end");
    g.throughput(Throughput::Elements(N));
    g.bench_function("tokio mpsc (floor)", |b| {
        b.to_async(&rt).iter(|| async {
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
        })
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

criterion_group! {
    name = benches;
    config = bench_config();
    targets = publish, end_to_end
}
criterion_main!(benches);
