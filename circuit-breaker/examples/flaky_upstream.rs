//! A client calling an upstream that goes down for a while and comes back, through a circuit
//! breaker: watch it open, probe, and close again.
//!
//! Run with `cargo run -p meshwork-circuit-breaker --example flaky_upstream`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use meshwork_circuit_breaker::{
    CircuitBreaker, CircuitBreakerConfig, Error, Event, OpenBackoff, SlidingWindow,
};
use tokio::time::{Instant, sleep};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let breaker = CircuitBreaker::new(
        "inventory",
        CircuitBreakerConfig::builder()
            .sliding_window(SlidingWindow::Count { size: 20 })
            .minimum_number_of_calls(10)
            .failure_rate_threshold(50.0)
            .open_backoff(
                OpenBackoff::exponential(Duration::from_millis(500), 2.0, Duration::from_secs(2))
                    .with_jitter(0.1),
            )
            .permitted_calls_in_half_open(3)
            .build()?,
    );
    let started = Instant::now();
    breaker.on_event(move |event| {
        if let Event::StateTransition { name, from, to } = event {
            println!(
                "{:>6.2}s  circuit '{name}': {from} -> {to}",
                started.elapsed().as_secs_f64()
            );
        }
    });

    // The upstream is healthy, then down from 1 s to 4 s, then healthy again.
    let healthy = Arc::new(AtomicBool::new(true));
    let upstream_calls = Arc::new(AtomicU32::new(0));
    let flip = healthy.clone();
    tokio::spawn(async move {
        sleep(Duration::from_secs(1)).await;
        println!(
            "{:>6.2}s  upstream goes down",
            started.elapsed().as_secs_f64()
        );
        flip.store(false, Ordering::SeqCst);
        sleep(Duration::from_secs(3)).await;
        println!(
            "{:>6.2}s  upstream recovers",
            started.elapsed().as_secs_f64()
        );
        flip.store(true, Ordering::SeqCst);
    });

    let (mut ok, mut failed, mut rejected) = (0, 0, 0);
    while started.elapsed() < Duration::from_secs(7) {
        let result = breaker
            .call(|| async {
                upstream_calls.fetch_add(1, Ordering::SeqCst);
                sleep(Duration::from_millis(5)).await;
                if healthy.load(Ordering::SeqCst) {
                    Ok("in stock")
                } else {
                    Err("503 Service Unavailable")
                }
            })
            .await;
        match result {
            Ok(_) => ok += 1,
            Err(Error::Inner(_)) => failed += 1,
            Err(_) => rejected += 1,
        }
        sleep(Duration::from_millis(20)).await;
    }
    println!(
        "calls: {ok} ok, {failed} failed, {rejected} refused without touching the upstream \
         (upstream saw {})",
        upstream_calls.load(Ordering::SeqCst)
    );
    Ok(())
}
