//! One breaker per key: creation on first use, overrides, bounds and eviction.

use std::time::Duration;

use meshwork_circuit_breaker::{
    CircuitBreakerConfig, Event, KeyedCircuitBreaker, Outcome, SlidingWindow, State,
};
use tokio::time::advance;

fn small() -> CircuitBreakerConfig {
    CircuitBreakerConfig::builder()
        .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 2 })
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn keys_are_independent_and_share_state_across_gets() {
    let family = KeyedCircuitBreaker::<String>::builder("hosts")
        .config(small())
        .build()
        .unwrap();
    for _ in 0..2 {
        family
            .get("a")
            .try_acquire()
            .unwrap()
            .record(Outcome::Failure);
    }
    assert_eq!(family.get("a").state(), State::Open);
    assert_eq!(family.get("b").state(), State::Closed);
    let totals = family.metrics();
    assert_eq!((totals.breakers, totals.open), (2, 1));
    let mut by_key = family.metrics_by_key();
    by_key.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(by_key[0].1.state, State::Open);
    assert_eq!(by_key[1].1.state, State::Closed);
}

#[tokio::test(start_paused = true)]
async fn overrides_apply_to_their_key() {
    let strict = CircuitBreakerConfig::builder()
        .sliding_window(SlidingWindow::ConsecutiveFailures { threshold: 1 })
        .build()
        .unwrap();
    let family = KeyedCircuitBreaker::<String>::builder("hosts")
        .config(small())
        .override_for("fragile".to_string(), strict)
        .build()
        .unwrap();
    family
        .get("fragile")
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure);
    family
        .get("sturdy")
        .try_acquire()
        .unwrap()
        .record(Outcome::Failure);
    assert_eq!(family.get("fragile").state(), State::Open);
    assert_eq!(family.get("sturdy").state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn bounded_family_evicts_idle_then_least_recently_used_closed_breakers() {
    let family = KeyedCircuitBreaker::<u32>::builder("tenants")
        .config(small())
        .max_keys(3)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    family.get(&1).force_open(); // protecting: evicted last
    advance(Duration::from_secs(1)).await;
    family.get(&2);
    advance(Duration::from_secs(1)).await;
    family.get(&3);
    advance(Duration::from_secs(1)).await;
    family.get(&4); // full: 2 is the least recently used closed breaker
    assert_eq!(family.len(), 3);
    assert_eq!(
        family.get(&1).state(),
        State::ForcedOpen,
        "open breakers survive"
    );
    let keys: Vec<u32> = {
        let mut k: Vec<_> = family
            .metrics_by_key()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys, vec![1, 3, 4]);
    assert_eq!(family.metrics().evicted, 1);

    advance(Duration::from_secs(61)).await;
    family.get(&4);
    assert_eq!(family.evict_idle(), 2, "1 and 3 idled out; 4 was just used");
    assert_eq!(family.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn family_listeners_see_current_and_future_breakers() {
    let family = KeyedCircuitBreaker::<String>::builder("hosts")
        .config(small())
        .build()
        .unwrap();
    let early = family.get("early");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    family.on_event(move |e| {
        if let Event::StateTransition { name, to, .. } = e {
            sink.lock().unwrap().push((name.to_string(), *to));
        }
    });
    early.force_open();
    family.get("late").force_open();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            ("hosts/early".to_string(), State::ForcedOpen),
            ("hosts/late".to_string(), State::ForcedOpen)
        ]
    );
}

#[test]
fn invalid_family_config_is_rejected() {
    let err = KeyedCircuitBreaker::<String>::builder("x")
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "max_keys must be at least 1, got 0");
    let mut bad = CircuitBreakerConfig::default();
    bad.minimum_number_of_calls = 0;
    let err = KeyedCircuitBreaker::<String>::builder("x")
        .override_for("k".into(), bad)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "minimum_number_of_calls");
}
