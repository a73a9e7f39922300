//! The balancer on paused time: latency, failures, ejection, panic threshold, weights.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_discovery::balance::{
    BalanceConfig, BalanceLayer, EndpointSet, Picked, ServiceDiscover,
};
use meshwork_discovery::{Discover, Health, Instance, StaticDiscovery, Weights};
use tokio::time::{advance, sleep};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

#[derive(Clone, Copy)]
struct Behaviour {
    latency: Duration,
    fail: bool,
}

type Behaviours = Arc<Mutex<HashMap<String, Behaviour>>>;

fn set_behaviour(b: &Behaviours, id: &str, latency_ms: u64, fail: bool) {
    b.lock().unwrap().insert(
        id.to_string(),
        Behaviour {
            latency: Duration::from_millis(latency_ms),
            fail,
        },
    );
}

type Counts = Arc<Mutex<HashMap<String, u64>>>;

fn upstream(
    behaviours: Behaviours,
    counts: Counts,
) -> impl Service<Picked<()>, Response = String, Error = BoxError, Future: Send> + Clone {
    service_fn(move |picked: Picked<()>| {
        let id = picked.instance().id.clone();
        *counts.lock().unwrap().entry(id.clone()).or_default() += 1;
        let b = behaviours.lock().unwrap()[&id];
        async move {
            sleep(b.latency).await;
            if b.fail {
                Err::<String, BoxError>("503 service unavailable".into())
            } else {
                Ok(id)
            }
        }
    })
}

fn endpoints(ids: &[&str], config: BalanceConfig) -> (EndpointSet, Behaviours) {
    let set = EndpointSet::new("web", config);
    set.update(
        ids.iter()
            .map(|id| Instance::new(*id, "web", "127.0.0.1", 80)),
    );
    let behaviours = Behaviours::default();
    for id in ids {
        set_behaviour(&behaviours, id, 10, false);
    }
    (set, behaviours)
}

/// Sends `n` requests one after another; returns how many each endpoint got (failed calls
/// included).
async fn run(set: &EndpointSet, behaviours: &Behaviours, n: usize) -> HashMap<String, u64> {
    let counts = Counts::default();
    let mut svc =
        BalanceLayer::new(set.clone()).layer(upstream(behaviours.clone(), counts.clone()));
    for _ in 0..n {
        let _ = svc.ready().await.unwrap().call(()).await;
    }
    let mut counts = counts.lock().unwrap().clone();
    for id in set.instances().iter() {
        counts.entry(id.id.clone()).or_default();
    }
    counts
}

fn share(counts: &HashMap<String, u64>, id: &str) -> f64 {
    let total: u64 = counts.values().sum();
    counts.get(id).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

fn no_ejection() -> BalanceConfig {
    BalanceConfig::builder()
        .decay(Duration::from_secs(1))
        .eject_after(0)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn traffic_shifts_away_from_a_slow_endpoint_and_comes_back() {
    let (set, behaviours) = endpoints(&["a", "b", "c"], no_ejection());
    set_behaviour(&behaviours, "b", 200, false);
    run(&set, &behaviours, 100).await;
    let slow = run(&set, &behaviours, 300).await;
    assert!(
        share(&slow, "b") < 0.05,
        "slow endpoint kept {:.3} of traffic",
        share(&slow, "b")
    );

    set_behaviour(&behaviours, "b", 10, false);
    run(&set, &behaviours, 1500).await;
    let recovered = run(&set, &behaviours, 600).await;
    assert!(
        share(&recovered, "b") > 0.2,
        "recovered endpoint got only {:.3} of traffic",
        share(&recovered, "b")
    );
}

#[tokio::test(start_paused = true)]
async fn a_fast_failing_endpoint_does_not_look_fast() {
    let (set, behaviours) = endpoints(&["a", "b", "c"], no_ejection());
    set_behaviour(&behaviours, "a", 20, false);
    set_behaviour(&behaviours, "b", 20, false);
    set_behaviour(&behaviours, "c", 0, true);
    run(&set, &behaviours, 50).await;
    let counts = run(&set, &behaviours, 400).await;
    assert!(
        share(&counts, "c") < 0.1,
        "instant 503s took {:.3}",
        share(&counts, "c")
    );
}

#[tokio::test(start_paused = true)]
async fn failing_endpoints_are_ejected_and_come_back() {
    let config = BalanceConfig::builder()
        .decay(Duration::from_secs(1))
        .eject_after(3)
        // No latency penalty: only ejection keeps traffic off the failing endpoint here.
        .failure_penalty(Duration::ZERO)
        .base_ejection_time(Duration::from_secs(5))
        .panic_threshold(0.0)
        .build()
        .unwrap();
    let (set, behaviours) = endpoints(&["a", "b", "c"], config);
    set_behaviour(&behaviours, "c", 10, true);
    run(&set, &behaviours, 60).await;
    assert_eq!(set.ejected(), 1);
    // While ejected (5 s), not a single request goes to it: 200 x 10 ms = 2 s.
    let during = run(&set, &behaviours, 200).await;
    assert_eq!(during.get("c").copied(), Some(0));

    set_behaviour(&behaviours, "c", 10, false);
    advance(Duration::from_secs(4)).await;
    run(&set, &behaviours, 800).await;
    assert_eq!(set.ejected(), 0);
    let after = run(&set, &behaviours, 600).await;
    assert!(
        share(&after, "c") > 0.15,
        "back after ejection: {:.3}",
        share(&after, "c")
    );
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_caps_ejections() {
    let config = BalanceConfig::builder()
        .eject_after(2)
        .failure_penalty(Duration::ZERO)
        .max_ejection_percent(50.0)
        .panic_threshold(0.0)
        .build()
        .unwrap();
    let (set, behaviours) = endpoints(&["a", "b", "c", "d"], config);
    for id in ["a", "b", "c", "d"] {
        set_behaviour(&behaviours, id, 10, true);
    }
    run(&set, &behaviours, 200).await;
    assert_eq!(set.ejected(), 2);
}

async fn failing_share_with_panic_threshold(panic_threshold: f64) -> (usize, f64) {
    let config = BalanceConfig::builder()
        .eject_after(2)
        .failure_penalty(Duration::ZERO)
        .base_ejection_time(Duration::from_secs(600))
        .max_ejection_percent(100.0)
        .panic_threshold(panic_threshold)
        .build()
        .unwrap();
    let (set, behaviours) = endpoints(&["a", "b", "c", "d"], config);
    for id in ["b", "c", "d"] {
        set_behaviour(&behaviours, id, 10, true);
    }
    run(&set, &behaviours, 200).await;
    let counts = run(&set, &behaviours, 400).await;
    (set.ejected(), 1.0 - share(&counts, "a"))
}

#[tokio::test(start_paused = true)]
async fn panic_threshold_uses_every_endpoint_when_too_few_are_healthy() {
    // Without a panic threshold, the one survivor takes everything.
    let (ejected, failing) = failing_share_with_panic_threshold(0.0).await;
    assert_eq!(ejected, 3);
    assert_eq!(failing, 0.0);
    // With 50%: 1 of 4 usable is below it, so ejections are ignored.
    let (ejected, failing) = failing_share_with_panic_threshold(50.0).await;
    assert_eq!(ejected, 3);
    assert!(
        failing > 0.3,
        "panic mode spread only {failing:.3} to ejected endpoints"
    );
}

#[tokio::test(start_paused = true)]
async fn weights_are_honoured_within_tolerance() {
    let set = EndpointSet::new("web", BalanceConfig::default());
    set.update([
        Instance::new("heavy", "web", "10.0.0.1", 80).with_weights(Weights {
            passing: 3,
            warning: 1,
        }),
        Instance::new("light", "web", "10.0.0.2", 80),
        Instance::new("warned", "web", "10.0.0.3", 80)
            .with_weights(Weights {
                passing: 5,
                warning: 0,
            })
            .with_health(Health::Warning),
    ]);
    let mut picker = set.picker();
    picker.seed(7);
    let mut heavy = 0;
    let n = 20_000;
    for _ in 0..n {
        let pick = picker.pick().unwrap();
        assert_ne!(
            pick.instance().id,
            "warned",
            "a zero weight gets no traffic"
        );
        if pick.instance().id == "heavy" {
            heavy += 1;
        }
        pick.success();
    }
    let ratio = heavy as f64 / n as f64;
    assert!((ratio - 0.75).abs() < 0.02, "weight 3:1 gave {ratio:.3}");
}

#[tokio::test(start_paused = true)]
async fn in_flight_requests_count_as_load() {
    let set = EndpointSet::new("web", BalanceConfig::default());
    set.update([
        Instance::new("a", "web", "10.0.0.1", 80),
        Instance::new("b", "web", "10.0.0.2", 80),
    ]);
    let mut picker = set.picker();
    let held: Vec<_> = (0..20).filter_map(|_| picker.pick()).collect();
    let on_a = held.iter().filter(|p| p.instance().id == "a").count();
    // Two endpoints, always both drawn as candidates or the same one: the load stays even.
    assert!(
        (8..=12).contains(&on_a),
        "{on_a} of 20 in-flight picks on a"
    );
}

#[tokio::test(start_paused = true)]
async fn follows_a_watch_and_keeps_statistics_across_updates() {
    let discovery = StaticDiscovery::new([
        Instance::new("a", "web", "10.0.0.1", 80),
        Instance::new("b", "web", "10.0.0.2", 80),
    ]);
    let config = BalanceConfig::builder()
        .eject_after(1)
        .panic_threshold(0.0)
        .build()
        .unwrap();
    let set = EndpointSet::new("web", config);
    let task = set.follow(discovery.watch("web"));
    while set.len() != 2 {
        tokio::task::yield_now().await;
    }
    let mut picker = set.picker();
    loop {
        let p = picker.pick().unwrap();
        if p.instance().id == "a" {
            p.failure();
            break;
        }
        p.success();
    }
    assert_eq!(set.ejected(), 1);
    discovery.set(
        "web",
        [
            Instance::new("a", "web", "10.0.0.1", 80),
            Instance::new("b", "web", "10.0.0.2", 80),
            Instance::new("c", "web", "10.0.0.3", 80),
        ],
    );
    while set.len() != 3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(set.ejected(), 1, "a stays ejected across the update");
    assert_eq!(set.instances().len(), 3);
    for _ in 0..100 {
        assert_ne!(picker.pick().unwrap().instance().id, "a");
    }
    task.abort();
}

#[tokio::test]
async fn tower_balance_follows_discovery() {
    let discovery = StaticDiscovery::new([Instance::new("a", "web", "10.0.0.1", 80)]);
    let services = ServiceDiscover::new(discovery.watch("web"), |i: &Instance| {
        let id = i.id.clone();
        service_fn(move |_: ()| {
            let id = id.clone();
            async move { Ok::<_, BoxError>(id) }
        })
    });
    let loaded = tower::load::PeakEwmaDiscover::new(
        services,
        Duration::from_millis(30),
        Duration::from_secs(10),
        tower::load::CompleteOnResponse::default(),
    );
    let mut balance = tower::balance::p2c::Balance::new(loaded);
    assert_eq!(balance.ready().await.unwrap().call(()).await.unwrap(), "a");
    discovery.set("web", [Instance::new("b", "web", "10.0.0.2", 80)]);
    let mut seen_b = false;
    for _ in 0..50 {
        let id = balance.ready().await.unwrap().call(()).await.unwrap();
        if id == "b" {
            seen_b = true;
        } else if seen_b {
            panic!("removed endpoint {id} still served after b appeared");
        }
        tokio::task::yield_now().await;
    }
    assert!(seen_b);
}
