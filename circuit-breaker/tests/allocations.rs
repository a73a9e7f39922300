//! The closed path allocates nothing: proven with a counting allocator (allocation-counter
//! counts this thread's allocations only, so the test harness can't disturb it).

use std::time::Duration;

use futures_util::FutureExt;
use meshwork_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer, Outcome, SlidingWindow, State,
};
use tower::{Layer, Service, service_fn};

fn breaker(window: SlidingWindow) -> CircuitBreaker {
    CircuitBreaker::new(
        "alloc",
        CircuitBreakerConfig::builder()
            .sliding_window(window)
            .minimum_number_of_calls(50)
            .slow_call_duration_threshold(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
}

#[test]
fn the_counter_sees_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1u8));
    });
    assert_eq!(info.count_total, 1);
}

#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "the time window must roll in real time"
)]
fn closed_path_allocates_nothing_per_call() {
    let windows = [
        SlidingWindow::Count { size: 100 },
        SlidingWindow::Time {
            duration: Duration::from_millis(50),
            buckets: 5,
        },
    ];
    let breakers: Vec<_> = windows.into_iter().map(breaker).collect();
    let mut services: Vec<_> = breakers
        .iter()
        .map(|b| {
            CircuitBreakerLayer::new(b.clone()).layer(service_fn(|x: u64| async move {
                Ok::<_, std::io::Error>(x + 1)
            }))
        })
        .collect();
    let mut round = |n: u64| {
        for i in 0..n {
            for (b, svc) in breakers.iter().zip(services.iter_mut()) {
                let _ = b.call_sync(|| if i % 7 == 3 { Err(()) } else { Ok(i) });
                let _ = b.call(|| async { Ok::<_, ()>(i) }).now_or_never();
                b.try_acquire().unwrap().record(Outcome::Success);
                let _ = svc.call(i).now_or_never();
            }
        }
    };
    round(1_000);
    let info = allocation_counter::measure(|| {
        // Long enough (in real time) to roll the time window's buckets several times.
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            round(5_000);
        }
    });
    for b in &breakers {
        // Still closed: every call above went down the closed path being measured.
        assert_eq!(b.state(), State::Closed);
    }
    assert_eq!(info.count_total, 0, "{info:?}");
}
