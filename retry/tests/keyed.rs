//! One policy per key: independent budgets, per-key overrides, bounded with eviction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_retry::{BudgetConfig, Decision, Error, Event, KeyedRetry, Next, RetryConfig};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// No percentage and a reserve of exactly 2 retries (2 per second over 1 s).
fn two_retries() -> RetryConfig {
    RetryConfig::builder()
        .max_attempts(10)
        .backoff(meshwork_retry::Backoff::constant(Duration::from_millis(1)))
        .budget(BudgetConfig::new(0.0, 2, secs(1)))
        .budget_error(true)
        .build()
        .unwrap()
}

async fn always_failing(keyed: &KeyedRetry<String>, key: &str) -> (u32, bool) {
    let mut attempts = 0;
    let result = keyed
        .get(key)
        .call(|| {
            attempts += 1;
            async { Err::<(), _>(std::io::Error::other("down")) }
        })
        .await;
    (attempts, matches!(result, Err(Error::BudgetExhausted(_))))
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_on_one_key_leaves_the_others_intact() {
    let keyed = KeyedRetry::<String>::builder("upstream")
        .config(two_retries())
        .build()
        .unwrap();
    // The sick upstream spends its two retries and is then refused.
    assert_eq!(always_failing(&keyed, "sick").await, (3, true));
    assert_eq!(always_failing(&keyed, "sick").await, (1, true));
    assert_eq!(keyed.get("sick").budget().unwrap().available(), 0);
    // The healthy one still has its own two.
    let healthy = keyed.get("healthy");
    assert_eq!(healthy.budget().unwrap().available(), 2);
    let mut attempts = healthy.start();
    assert!(matches!(
        attempts.next_delay_with(Decision::Retry),
        Next::Retry(_)
    ));
    assert_eq!(keyed.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_same_key_gets_the_same_policy() {
    let keyed = KeyedRetry::<String>::builder("upstream")
        .config(two_retries())
        .build()
        .unwrap();
    let a = keyed.get("a");
    assert!(a.budget().unwrap().try_withdraw());
    assert_eq!(keyed.get("a").budget().unwrap().available(), 1, "shared");
    assert_eq!(keyed.get(&"a".to_string()).name(), "upstream/a");
    assert_eq!(keyed.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn overrides_apply_to_their_key_only() {
    let keyed = KeyedRetry::<String>::builder("upstream")
        .config(two_retries())
        .override_for(
            "legacy".into(),
            RetryConfig::builder()
                .max_attempts(5)
                .no_budget()
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let legacy = keyed.get("legacy");
    assert_eq!(legacy.config().max_attempts, 5);
    assert!(legacy.budget().is_none());
    assert_eq!(legacy.name(), "upstream/legacy");
    let other = keyed.get("other");
    assert_eq!(other.config(), &two_retries());
}

#[test]
fn the_builder_validates_every_config_and_its_own_fields() {
    let bad = {
        let mut c = RetryConfig::default();
        c.max_attempts = 0;
        c
    };
    let field = |r: Result<KeyedRetry<String>, meshwork_retry::ConfigError>| r.unwrap_err().field();
    let b = KeyedRetry::<String>::builder;
    assert_eq!(field(b("k").config(bad.clone()).build()), "max_attempts");
    assert_eq!(
        field(b("k").override_for("x".into(), bad).build()),
        "max_attempts"
    );
    assert_eq!(field(b("k").max_keys(0).build()), "max_keys");
    let e = b("k").idle_timeout(Duration::ZERO).build().unwrap_err();
    assert_eq!(
        e.to_string(),
        "idle_timeout must be greater than zero (or unset), got 0s"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_first_when_full() {
    let keyed = KeyedRetry::<String>::builder("upstream")
        .max_keys(2)
        .idle_timeout(secs(10))
        .build()
        .unwrap();
    keyed.get("a");
    tokio::time::advance(secs(5)).await;
    keyed.get("b");
    tokio::time::advance(secs(4)).await;
    keyed.get("b"); // b used again; a untouched for 9 s
    tokio::time::advance(secs(2)).await; // a idle 11 s, b 2 s
    keyed.get("c");
    assert_eq!(keyed.len(), 2);
    let b_budget = keyed.get("b").budget().unwrap().available();
    assert!(b_budget > 0);
    // `b` survived: the same policy, not a fresh one.
    assert!(keyed.get("b").budget().unwrap().try_withdraw());
    assert_eq!(keyed.get("b").budget().unwrap().available(), b_budget - 1);
    assert_eq!(keyed.evict_idle(), 0, "b and c are fresh");
    tokio::time::advance(secs(10)).await;
    assert_eq!(keyed.evict_idle(), 2);
    assert!(keyed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_idle_keys_the_least_recently_used_goes() {
    let keyed = KeyedRetry::<u32>::builder("tenant")
        .max_keys(2)
        .build()
        .unwrap();
    keyed.get(&1);
    tokio::time::advance(secs(1)).await;
    assert!(keyed.get(&2).budget().unwrap().try_withdraw());
    tokio::time::advance(secs(1)).await;
    keyed.get(&1); // 2 is now the least recently used
    tokio::time::advance(secs(1)).await;
    assert!(keyed.get(&1).budget().unwrap().try_withdraw());
    keyed.get(&3);
    assert_eq!(keyed.len(), 2);
    assert_eq!(keyed.evict_idle(), 0, "no idle timeout: nothing is idle");
    // 1 is still the same policy (its withdrawal is remembered); 2 was replaced.
    let fresh = RetryConfig::default().budget.unwrap();
    let reserve = u64::from(fresh.min_per_second) * fresh.ttl.as_secs();
    assert_eq!(keyed.get(&1).budget().unwrap().available(), reserve - 1);
    assert_eq!(keyed.get(&2).budget().unwrap().available(), reserve);
    assert_eq!(keyed.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_key_retrying_right_now_is_evicted_last() {
    let keyed = KeyedRetry::<u32>::builder("tenant")
        .max_keys(2)
        .build()
        .unwrap();
    let busy = keyed.get(&1);
    let mut sequence = busy.start();
    assert!(matches!(
        sequence.next_delay_with(Decision::Retry),
        Next::Retry(_)
    ));
    tokio::time::advance(secs(1)).await;
    keyed.get(&2);
    keyed.get(&3); // 1 is the least recently used, but it is retrying: 2 goes
    assert_eq!(keyed.get(&1).budget().unwrap().concurrent_retries(), 1);
    assert_eq!(keyed.len(), 2);
    // An evicted policy keeps working for whoever holds it.
    drop(sequence);
    keyed.get(&4);
    let result = busy.call(|| async { Ok::<_, std::io::Error>(7) }).await;
    assert_eq!(result.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn listeners_reach_every_member_current_and_future() {
    let keyed = KeyedRetry::<String>::builder("upstream")
        .config(two_retries())
        .build()
        .unwrap();
    keyed.get("before");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    keyed.on_event(move |e| {
        if let Event::Retry { name, .. } = e {
            sink.lock().unwrap().push(name.to_string());
        }
    });
    for key in ["before", "after"] {
        let retry = keyed.get(key);
        let mut attempts = retry.start();
        assert!(matches!(
            attempts.next_delay_with(Decision::Retry),
            Next::Retry(_)
        ));
    }
    assert_eq!(*seen.lock().unwrap(), ["upstream/before", "upstream/after"]);
}
