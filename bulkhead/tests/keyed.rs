//! Keyed bulkheads: one per key, created on first use, bounded, idle ones evicted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_bulkhead::{BulkheadConfig, Event, KeyedBulkhead, RejectReason};

fn family(max_keys: usize, idle: Duration) -> KeyedBulkhead<String> {
    KeyedBulkhead::builder("tenant")
        .config(
            BulkheadConfig::builder()
                .max_concurrent_calls(1)
                .build()
                .unwrap(),
        )
        .max_keys(max_keys)
        .idle_timeout(idle)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn keys_are_isolated_and_share_state_per_key() {
    let f = family(10, Duration::from_secs(60));
    let a = f.get("a").unwrap();
    let _held = a.try_acquire().unwrap();
    assert!(f.get("a").unwrap().try_acquire().is_err());
    assert!(f.get("b").unwrap().try_acquire().is_ok());
    let err = f.call("a", || async { Ok::<_, ()>(()) }).await.unwrap_err();
    assert_eq!(err.rejected().unwrap().name(), "tenant/a");
    assert_eq!(f.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_but_busy_ones_are_not() {
    let f = family(10, Duration::from_secs(60));
    let evicted = Arc::new(Mutex::new(Vec::new()));
    let sink = evicted.clone();
    f.on_event(move |e| {
        if let Event::KeyEvicted { name } = e {
            sink.lock().unwrap().push(name.to_string());
        }
    });
    let busy = f.get("busy").unwrap().try_acquire_owned().unwrap();
    f.get("idle").unwrap();
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(f.evict_idle(), 0);
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(f.evict_idle(), 1);
    assert_eq!(*evicted.lock().unwrap(), vec!["tenant/idle".to_string()]);
    assert_eq!(f.len(), 1);
    // The busy key kept its state: still full.
    assert!(f.get("busy").unwrap().try_acquire().is_err());
    drop(busy);
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(f.evict_idle(), 1);
    assert!(f.is_empty());
    assert_eq!(f.evicted(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_full_family_evicts_the_least_recently_used_free_key_or_refuses() {
    let f = family(2, Duration::from_secs(3600));
    f.get("a").unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let b = f.get("b").unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    // "a" is the least recently used and nobody holds it: "c" replaces it.
    let c = f.get("c").unwrap();
    assert_eq!(f.len(), 2);
    assert_eq!(f.evicted(), 1);
    // Both keys are held (a handle, a permit): a new key is refused rather than evicting one.
    let _permit = c.try_acquire_owned().unwrap();
    drop(c);
    let refused = f.get("d").unwrap_err();
    assert_eq!(refused.reason(), RejectReason::TooManyKeys);
    assert_eq!(
        refused.to_string(),
        "bulkhead 'tenant' holds its maximum of 2 keys, none idle"
    );
    // Once "b" is let go, it makes room.
    drop(b);
    assert_eq!(f.get("d").unwrap().name(), "tenant/d");
}

#[tokio::test(start_paused = true)]
async fn a_held_handle_keeps_its_key_so_the_limit_is_not_doubled() {
    let f = family(1, Duration::from_secs(1));
    // A user keeps the handle of "a" and has nothing in flight right now.
    let a = f.get("a").unwrap();
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(f.evict_idle(), 0);
    assert!(
        f.get("b").is_err(),
        "the held key \"a\" must not be evicted"
    );
    // Had "a" been evicted, these two would be separate bulkheads, each with a limit of 1.
    let _p = a.try_acquire().unwrap();
    assert!(f.get("a").unwrap().try_acquire().is_err());
}
