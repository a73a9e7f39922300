//! Partitions: guaranteed minimums that floods cannot take, and borrowing of unused capacity.

use std::time::Duration;

use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Partition, RejectReason};
use proptest::prelude::*;

fn live_and_batch(limit: usize) -> Bulkhead {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(limit)
        .max_wait(Duration::from_secs(1))
        .partition(Partition::new("live", 0.9))
        .partition(Partition::new("batch", 0.1))
        .build()
        .unwrap();
    Bulkhead::new("api", config)
}

#[tokio::test(start_paused = true)]
async fn batch_keeps_its_minimum_under_a_flood_of_live_traffic() {
    let b = live_and_batch(20);
    let live = b.partition("live").unwrap();
    let batch = b.partition("batch").unwrap();
    // 1,000 live calls, each holding its permit for a while.
    let flood: Vec<_> = (0..1000)
        .map(|_| {
            let live = live.clone();
            tokio::spawn(async move {
                if let Ok(p) = live.acquire_owned().await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    drop(p);
                }
            })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(b.in_flight(), 18);
    // Batch's two guaranteed permits are there, at once, however long the flood lasts.
    for _ in 0..3 {
        let p1 = batch.try_acquire().unwrap();
        let p2 = batch.try_acquire().unwrap();
        let third = batch.try_acquire().unwrap_err();
        assert_eq!(third.reason(), RejectReason::Full);
        assert_eq!(third.partition(), Some("batch"));
        assert_eq!(
            third.to_string(),
            "bulkhead 'api' partition 'batch' is full (20 of 20 in flight)"
        );
        drop((p1, p2));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for f in flood {
        f.await.unwrap();
    }
    assert_eq!((b.in_flight(), b.waiting()), (0, 0));
}

#[test]
fn a_partition_borrows_unused_capacity() {
    let b = live_and_batch(20);
    let batch = b.partition("batch").unwrap();
    let held: Vec<_> = std::iter::from_fn(|| batch.try_acquire().ok()).collect();
    // Its own 2 plus the 0 nobody owns; live's 18 are not borrowable.
    assert_eq!(held.len(), 2);
    drop(held);

    let config = BulkheadConfig::builder()
        .max_concurrent_calls(10)
        .partition(Partition::new("live", 0.5))
        .partition(Partition::new("batch", 0.2))
        .build()
        .unwrap();
    let b = Bulkhead::new("api", config);
    let batch = b.partition("batch").unwrap();
    let live = b.partition("live").unwrap();
    // batch: its own 2 plus the 3 nobody owns.
    let held: Vec<_> = std::iter::from_fn(|| batch.try_acquire().ok()).collect();
    assert_eq!(held.len(), 5);
    // live still has its 5, and nothing more.
    let live_held: Vec<_> = std::iter::from_fn(|| live.try_acquire().ok()).collect();
    assert_eq!(live_held.len(), 5);
    // Calls without a partition only use what nobody owns.
    drop(held);
    let root: Vec<_> = std::iter::from_fn(|| b.try_acquire().ok()).collect();
    assert_eq!(root.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_partition_is_served_by_its_own_releases() {
    let b = live_and_batch(10);
    let live = b.partition("live").unwrap();
    let batch = b.partition("batch").unwrap();
    let live_held: Vec<_> = std::iter::from_fn(|| live.try_acquire().ok()).collect();
    assert_eq!(live_held.len(), 9);
    let batch_held = batch.try_acquire().unwrap();
    // A live waiter queued ahead of a batch waiter: a batch release goes to batch.
    let lw = {
        let live = live.clone();
        tokio::spawn(async move { live.acquire_owned().await.map(drop) })
    };
    tokio::task::yield_now().await;
    let bw = {
        let batch = batch.clone();
        tokio::spawn(async move { batch.acquire_owned().await.map(|_| "batch") })
    };
    tokio::task::yield_now().await;
    assert_eq!(b.waiting(), 2);
    drop(batch_held);
    assert_eq!(b.waiting(), 1);
    assert_eq!(bw.await.unwrap().unwrap(), "batch");
    drop(live_held);
    lw.await.unwrap().unwrap();
}

#[derive(Debug, Clone)]
enum Op {
    Acquire(usize),
    Release(usize),
}

proptest! {
    /// Whatever the shares and the sequence of calls: the total never exceeds the limit, and
    /// a partition holding less than its minimum always gets a permit.
    #[test]
    fn minimums_hold_and_the_total_is_bounded(
        limit in 1usize..60,
        shares in prop::collection::vec(1u32..100, 1..5),
        ops in prop::collection::vec(
            prop_oneof![
                (0usize..6).prop_map(Op::Acquire),
                (0usize..6).prop_map(Op::Release),
            ],
            0..300,
        ),
    ) {
        let total: u32 = shares.iter().sum::<u32>().max(100);
        let mut builder = BulkheadConfig::builder().max_concurrent_calls(limit);
        for (i, s) in shares.iter().enumerate() {
            builder = builder.partition(Partition::new(format!("p{i}"), f64::from(*s) / f64::from(total)));
        }
        let b = Bulkhead::new("prop", builder.build().unwrap());
        let handles: Vec<Bulkhead> = std::iter::once(b.clone())
            .chain((0..shares.len()).map(|i| b.partition(&format!("p{i}")).unwrap()))
            .collect();
        let mins: Vec<usize> = std::iter::once(0)
            .chain(shares.iter().map(|s| (limit as f64 * f64::from(*s) / f64::from(total)).floor() as usize))
            .collect();
        let mut held: Vec<Vec<_>> = handles.iter().map(|_| Vec::new()).collect();
        for op in ops {
            match op {
                Op::Acquire(h) if h < handles.len() => {
                    let below_minimum = held[h].len() < mins[h];
                    match handles[h].try_acquire() {
                        Ok(p) => held[h].push(p),
                        Err(r) => prop_assert!(!below_minimum, "partition {h} refused below its minimum: {r}"),
                    }
                }
                Op::Release(h) if h < handles.len() => { held[h].pop(); }
                _ => {}
            }
            let n: usize = held.iter().map(Vec::len).sum();
            prop_assert!(n <= limit);
            prop_assert_eq!(b.in_flight(), n);
        }
    }
}
