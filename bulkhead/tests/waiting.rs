//! Bounded waits: timeouts, FIFO and LIFO order, the waiter cap, and cancellation.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Error, QueueOrder, RejectReason, Rejected};
use tokio::task::JoinHandle;
use tokio::time::Instant;

fn waiting(limit: usize, wait_ms: u64, order: QueueOrder, max_waiters: usize) -> Bulkhead {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(limit)
        .max_wait(Duration::from_millis(wait_ms))
        .queue_order(order)
        .max_waiters(max_waiters)
        .build()
        .unwrap();
    Bulkhead::new("wait", config)
}

/// A task waiting for a permit of `b` and returning it at once.
fn spawn_waiter(b: &Bulkhead) -> JoinHandle<Result<(), Rejected>> {
    let b = b.clone();
    tokio::spawn(async move { b.acquire_owned().await.map(drop) })
}

/// Lets spawned tasks run until they park.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_times_out_after_max_wait() {
    let b = waiting(1, 250, QueueOrder::Fifo, 10);
    let _held = b.try_acquire().unwrap();
    let start = Instant::now();
    let rejected = b.acquire().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(rejected.reason(), RejectReason::WaitTimedOut);
    assert_eq!(rejected.waited(), Some(Duration::from_millis(250)));
    assert_eq!(
        rejected.to_string(),
        "bulkhead 'wait' is full: no permit within 250ms (1 of 1 in flight)"
    );
    assert_eq!(b.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_permit_freed_within_max_wait_is_taken() {
    let b = waiting(1, 250, QueueOrder::Fifo, 10);
    let held = b.try_acquire_owned().unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let start = Instant::now();
    let permit = b.acquire().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    drop(permit);
    assert_eq!(b.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_max_wait_a_full_bulkhead_rejects_at_once() {
    let b = Bulkhead::new(
        "fast",
        BulkheadConfig::builder()
            .max_concurrent_calls(1)
            .build()
            .unwrap(),
    );
    let _held = b.try_acquire().unwrap();
    let start = Instant::now();
    let err = b.call(|| async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert!(matches!(&err, Error::Rejected(r) if r.reason() == RejectReason::Full));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

async fn serving_order(order: QueueOrder) -> Vec<usize> {
    let b = waiting(1, 10_000, order, 10);
    let held = b.try_acquire().unwrap();
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (b, served) = (b.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            let permit = b.acquire().await.unwrap();
            served.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
        }));
        // Enqueue in a known order.
        settle().await;
    }
    assert_eq!(b.waiting(), 5);
    drop(held);
    for t in tasks {
        t.await.unwrap();
    }
    served.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn fifo_serves_the_oldest_waiter_first() {
    assert_eq!(serving_order(QueueOrder::Fifo).await, vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn lifo_serves_the_newest_waiter_first() {
    assert_eq!(serving_order(QueueOrder::Lifo).await, vec![4, 3, 2, 1, 0]);
}

#[tokio::test(start_paused = true)]
async fn the_waiter_cap_rejects_one_more() {
    let b = waiting(1, 1_000, QueueOrder::Fifo, 2);
    let _held = b.try_acquire().unwrap();
    let w: Vec<_> = (0..2).map(|_| spawn_waiter(&b)).collect();
    settle().await;
    let rejected = b.acquire().await.unwrap_err();
    assert_eq!(rejected.reason(), RejectReason::TooManyWaiters);
    assert_eq!(
        rejected.to_string(),
        "bulkhead 'wait' is full and 2 calls already wait (1 of 1 in flight)"
    );
    for t in w {
        assert_eq!(
            t.await.unwrap().unwrap_err().reason(),
            RejectReason::WaitTimedOut
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_leaves_no_waiter_and_no_permit() {
    let b = waiting(1, 10_000, QueueOrder::Fifo, 10);
    let held = b.try_acquire().unwrap();
    // Cancelled by a timeout around it, while queued.
    let r = tokio::time::timeout(Duration::from_millis(5), b.acquire()).await;
    assert!(r.is_err());
    assert_eq!(b.waiting(), 0);
    // Cancelled by abort.
    let task = spawn_waiter(&b);
    settle().await;
    assert_eq!(b.waiting(), 1);
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(b.waiting(), 0);
    drop(held);
    assert_eq!(b.in_flight(), 0);
    // Nothing leaked: the whole limit is free.
    let _p = b.try_acquire().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_permit_granted_to_a_cancelled_waiter_goes_to_the_next() {
    let b = waiting(1, 10_000, QueueOrder::Fifo, 10);
    let held = b.try_acquire().unwrap();
    let first = spawn_waiter(&b);
    settle().await;
    let second = spawn_waiter(&b);
    settle().await;
    assert_eq!(b.waiting(), 2);
    // The release grants `first` synchronously; abort it before it runs to take it.
    drop(held);
    assert_eq!(b.waiting(), 1);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    second
        .await
        .unwrap()
        .expect("the next waiter got the permit");
    assert_eq!((b.in_flight(), b.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_raised_limit_serves_waiters_at_once() {
    let b = waiting(1, 10_000, QueueOrder::Fifo, 10);
    let _held = b.try_acquire().unwrap();
    let waiter = spawn_waiter(&b);
    settle().await;
    let start = Instant::now();
    b.set_limit(2);
    waiter.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}
