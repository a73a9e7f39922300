//! The hot paths allocate nothing per call: the try path (admitted and refused), the acquire
//! path when a permit is free, `call`, `call_sync`, an adaptive limit's sample, a keyed lookup
//! and the tower layer. Proven with a counting allocator (allocation-counter counts this
//! thread's allocations only, so the test harness can't disturb it).

use std::time::Duration;

use futures_util::FutureExt;
use meshwork_bulkhead::{
    AdaptiveLimit, Aimd, Bulkhead, BulkheadConfig, BulkheadLayer, KeyedBulkhead, Outcome,
    Partition, QueueOrder,
};
use tower::{Layer, Service, service_fn};

#[test]
fn the_counter_sees_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1u8));
    });
    assert_eq!(info.count_total, 1);
}

fn bulkheads() -> Vec<Bulkhead> {
    let waiting = BulkheadConfig::builder()
        .max_concurrent_calls(4)
        .max_wait(Duration::from_secs(1))
        .queue_order(QueueOrder::Lifo)
        .build()
        .unwrap();
    let partitioned = BulkheadConfig::builder()
        .max_concurrent_calls(4)
        .partition(Partition::new("live", 0.5))
        .partition(Partition::new("batch", 0.25))
        .build()
        .unwrap();
    let adaptive = BulkheadConfig::builder()
        .max_concurrent_calls(4)
        .adaptive(AdaptiveLimit::Aimd(Aimd::new(4, 4)))
        .build()
        .unwrap();
    let parts = Bulkhead::new("partitioned", partitioned);
    vec![
        Bulkhead::with_defaults("plain"),
        Bulkhead::new("waiting", waiting),
        parts.partition("live").unwrap(),
        parts.partition("batch").unwrap(),
        parts,
        Bulkhead::new("adaptive", adaptive),
    ]
}

#[test]
fn the_permit_paths_allocate_nothing_per_call() {
    let bulkheads = bulkheads();
    let round = |n: u64| {
        for i in 0..n {
            for b in &bulkheads {
                b.try_acquire().unwrap().record(Outcome::Success);
                drop(b.try_acquire_owned().unwrap());
                drop(b.acquire().now_or_never().unwrap().unwrap());
                drop(b.acquire_owned().now_or_never().unwrap().unwrap());
                let r = b.call(|| async move { Ok::<_, ()>(i) }).now_or_never();
                assert_eq!(r.unwrap().unwrap(), i);
                let r = b.call_sync(|| if i % 3 == 0 { Err(i) } else { Ok(i) });
                assert_eq!(r.is_ok(), i % 3 != 0);
            }
        }
    };
    round(100);
    let info = allocation_counter::measure(|| round(10_000));
    for b in &bulkheads {
        assert_eq!((b.in_flight(), b.waiting()), (0, 0));
    }
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn a_refusal_on_the_try_path_allocates_nothing() {
    let bulkheads = bulkheads();
    let held: Vec<_> = bulkheads
        .iter()
        .flat_map(|b| std::iter::from_fn(|| b.try_acquire_owned().ok()))
        .collect();
    let refuse = |n: usize| {
        for _ in 0..n {
            for b in &bulkheads {
                assert!(b.try_acquire().is_err());
                assert!(b.call_sync(|| Ok::<_, ()>(())).is_err());
            }
        }
    };
    refuse(10);
    let info = allocation_counter::measure(|| refuse(10_000));
    assert_eq!(info.count_total, 0, "{info:?}");
    drop(held);
}

#[test]
fn the_layer_allocates_nothing_per_call() {
    let bulkheads = bulkheads();
    let mut services: Vec<_> = bulkheads
        .iter()
        .map(|b| {
            BulkheadLayer::new(b.clone()).layer(service_fn(|x: u64| async move {
                Ok::<_, std::io::Error>(x + 1)
            }))
        })
        .collect();
    let mut round = |n: u64| {
        for i in 0..n {
            for svc in services.iter_mut() {
                let ready = std::future::poll_fn(|cx| svc.poll_ready(cx)).now_or_never();
                assert!(matches!(ready, Some(Ok(()))));
                assert_eq!(svc.call(i).now_or_never().unwrap().unwrap(), i + 1);
            }
        }
    };
    round(100);
    let info = allocation_counter::measure(|| round(10_000));
    assert_eq!(info.count_total, 0, "{info:?}");
    for b in &bulkheads {
        assert_eq!(b.in_flight(), 0);
    }
}

#[test]
fn a_keyed_lookup_of_a_known_key_allocates_nothing() {
    let keyed = KeyedBulkhead::<String>::builder("tenant").build().unwrap();
    let keys = ["acme", "globex", "initech"];
    let round = |n: usize| {
        for _ in 0..n {
            for key in keys {
                drop(keyed.get(key).unwrap().try_acquire().unwrap());
            }
        }
    };
    round(1);
    let info = allocation_counter::measure(|| round(10_000));
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(keyed.len(), 3);
}
