//! The bulkhead never lets more calls in than its limit, however many race for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Partition, QueueOrder, RejectReason};

/// Tracks calls inside the guarded section and the most ever seen at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    async fn section(&self) {
        let n = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(n, SeqCst);
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        self.now.fetch_sub(1, SeqCst);
    }
}

async fn flood(bulkhead: Bulkhead, gauge: Arc<Gauge>, tasks: usize) -> (usize, usize) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (b, g) = (bulkhead.clone(), gauge.clone());
            tokio::spawn(async move {
                let permit = b.acquire_owned().await;
                if permit.is_ok() {
                    g.section().await;
                }
                permit.map(drop)
            })
        })
        .collect();
    let (mut ok, mut rejected) = (0, 0);
    for h in handles {
        match h.await.expect("task") {
            Ok(()) => ok += 1,
            Err(r) => {
                assert_eq!(r.reason(), RejectReason::Full);
                rejected += 1
            }
        }
    }
    (ok, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_waiting_tasks_never_exceed_the_limit() {
    for order in [QueueOrder::Fifo, QueueOrder::Lifo] {
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(8)
            .max_wait(Duration::from_secs(60))
            .max_waiters(1000)
            .queue_order(order)
            .build()
            .unwrap();
        let bulkhead = Bulkhead::new("limits", config);
        let gauge = Arc::new(Gauge::default());
        let (ok, rejected) = flood(bulkhead.clone(), gauge.clone(), 1000).await;
        assert_eq!((ok, rejected), (1000, 0));
        let max = gauge.max.load(SeqCst);
        assert!(max <= 8, "{max} calls in flight with a limit of 8");
        assert!(max >= 2, "the test never ran calls concurrently");
        assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_rejecting_tasks_never_exceed_the_limit() {
    let bulkhead = Bulkhead::new(
        "shed",
        BulkheadConfig::builder()
            .max_concurrent_calls(8)
            .build()
            .unwrap(),
    );
    let gauge = Arc::new(Gauge::default());
    let (ok, rejected) = flood(bulkhead.clone(), gauge.clone(), 1000).await;
    assert_eq!(ok + rejected, 1000);
    assert!(ok >= 8);
    assert!(gauge.max.load(SeqCst) <= 8);
    assert_eq!(bulkhead.metrics().rejected, rejected as u64);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_never_exceed_the_total_or_their_caps() {
    let config = BulkheadConfig::builder()
        .max_concurrent_calls(10)
        .max_wait(Duration::from_secs(60))
        .max_waiters(1000)
        .partition(Partition::new("a", 0.5))
        .partition(Partition::new("b", 0.3))
        .build()
        .unwrap();
    let bulkhead = Bulkhead::new("parts", config);
    let gauge = Arc::new(Gauge::default());
    let mut runs = Vec::new();
    for handle in [
        bulkhead.partition("a").unwrap(),
        bulkhead.partition("b").unwrap(),
        bulkhead.clone(),
    ] {
        runs.push(tokio::spawn(flood(handle, gauge.clone(), 333)));
    }
    for run in runs {
        assert_eq!(run.await.unwrap(), (333, 0));
    }
    let max = gauge.max.load(SeqCst);
    assert!((2..=10).contains(&max), "max in flight {max}");
    assert_eq!((bulkhead.in_flight(), bulkhead.waiting()), (0, 0));
}

#[test]
fn threads_racing_on_try_acquire_never_exceed_the_limit() {
    let bulkhead = Bulkhead::new(
        "threads",
        BulkheadConfig::builder()
            .max_concurrent_calls(3)
            .build()
            .unwrap(),
    );
    let gauge = Arc::new(Gauge::default());
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    if let Ok(_permit) = bulkhead.try_acquire() {
                        let n = gauge.now.fetch_add(1, SeqCst) + 1;
                        gauge.max.fetch_max(n, SeqCst);
                        std::hint::spin_loop();
                        gauge.now.fetch_sub(1, SeqCst);
                    }
                }
            });
        }
    });
    assert!(gauge.max.load(SeqCst) <= 3);
    assert_eq!(bulkhead.in_flight(), 0);
}
