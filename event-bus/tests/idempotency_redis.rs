//! The Redis idempotency store against a real Redis server over loopback
//! (`MESHWORK_REDIS_URL`, default `redis://127.0.0.1:6379`; `bash scripts/services.sh` starts
//! it). Every test uses its own random key prefix, so the tests run in parallel.

use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshwork_event_bus::{
    BoxError, BusError, FailurePolicy, IdempotencyKey, IdempotencyStore, MemoryBus, Message,
    MessageId, Outputs, Publisher, RedisIdempotencyConfig, RedisIdempotencyStore, Router,
    RouterEvent,
};
use meshwork_retry::Backoff;
use redis::AsyncCommands;
use tokio::time::{Instant, sleep};

// ---------------------------------------------------------------- helpers

fn redis_url() -> String {
    std::env::var("MESHWORK_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unreachable(url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "Redis is not reachable at {url} (MESHWORK_REDIS_URL): {error}.\n\
         These tests need a real Redis server. Start it with `bash scripts/services.sh`, or with \
         `redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" --appendonly no \
         --dir /var/lib/redis --logfile /var/log/redis/ci.log`, or point MESHWORK_REDIS_URL at one."
    )
}

/// A fresh key prefix, so parallel tests never see each other's keys.
fn prefix() -> String {
    format!("meshwork-test:{}", MessageId::new())
}

fn config(prefix: &str, ttl: Duration) -> RedisIdempotencyConfig {
    RedisIdempotencyConfig::builder()
        .prefix(prefix)
        .ttl(ttl)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn store_with(prefix: &str, ttl: Duration) -> RedisIdempotencyStore {
    let url = redis_url();
    match RedisIdempotencyStore::connect(&url, config(prefix, ttl)).await {
        Ok(store) => store,
        Err(e) => unreachable(&url, &error_chain(&e)),
    }
}

async fn store() -> RedisIdempotencyStore {
    store_with(&prefix(), Duration::from_secs(60)).await
}

/// A plain connection, to look at the keys the store wrote.
async fn raw() -> redis::aio::MultiplexedConnection {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| unreachable(&url, &e));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| unreachable(&url, &e))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Waits (up to 30 s) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------- the store

#[tokio::test]
async fn a_recorded_key_is_handled_and_recording_twice_is_fine() {
    let store = store().await;
    let key = IdempotencyKey::new("billing", MessageId::new());
    assert!(!store.is_handled(&key).await.unwrap());
    store.record(&key).await.unwrap();
    store.record(&key).await.unwrap();
    assert!(store.is_handled(&key).await.unwrap());
    // Another message, or the same message in another group, is not handled.
    let other = IdempotencyKey::new("billing", MessageId::new());
    assert!(!store.is_handled(&other).await.unwrap());
    let other_group = IdempotencyKey::new("shipping", key.message_id());
    assert!(!store.is_handled(&other_group).await.unwrap());
}

#[tokio::test]
async fn keys_are_prefix_group_id_with_the_ttl_set_once() {
    let prefix = prefix();
    let store = store_with(&prefix, Duration::from_secs(60)).await;
    let key = IdempotencyKey::new("billing", MessageId::new());
    let redis_key = format!("{prefix}:billing:{}", key.message_id());
    assert_eq!(store.redis_key(&key), redis_key);
    store.record(&key).await.unwrap();

    let mut raw = raw().await;
    let value: String = raw.get(&redis_key).await.unwrap();
    assert_eq!(value, "1");
    let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
    assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");
    // NX: recording again neither fails nor extends the key's life.
    raw.pexpire::<_, ()>(&redis_key, 30_000).await.unwrap();
    store.record(&key).await.unwrap();
    let ttl: i64 = raw.pttl(&redis_key).await.unwrap();
    assert!(
        (1..=30_000).contains(&ttl),
        "PTTL after a second record {ttl}"
    );
}

#[tokio::test]
async fn keys_expire_after_the_ttl() {
    let store = store_with(&prefix(), Duration::from_millis(300)).await;
    let key = IdempotencyKey::new("billing", MessageId::new());
    store.record(&key).await.unwrap();
    assert!(store.is_handled(&key).await.unwrap());
    let start = Instant::now();
    while store.is_handled(&key).await.unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the key outlived its 300 ms TTL by far"
        );
        sleep(Duration::from_millis(50)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn stores_sharing_a_prefix_share_their_keys() {
    // Two replicas of one service.
    let prefix = prefix();
    let a = store_with(&prefix, Duration::from_secs(60)).await;
    let b = store_with(&prefix, Duration::from_secs(60)).await;
    let key = IdempotencyKey::new("billing", MessageId::new());
    a.record(&key).await.unwrap();
    assert!(b.is_handled(&key).await.unwrap());
    // A store with another prefix does not see them.
    let c = store().await;
    assert!(!c.is_handled(&key).await.unwrap());
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error_with_the_redis_error_as_source() {
    let config = config(&prefix(), Duration::from_secs(60));
    let err = RedisIdempotencyStore::connect("redis://127.0.0.1:1", config)
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Backend { .. }), "{err:?}");
    assert!(err.to_string().contains("Redis"), "{err}");
    let source = err.source().expect("a source");
    assert!(
        source.downcast_ref::<redis::RedisError>().is_some(),
        "{source:?}"
    );
}

#[tokio::test]
async fn bad_urls_and_configs_are_rejected_before_connecting() {
    let err = RedisIdempotencyStore::connect("http://:secret@cache", Default::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Invalid { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(
        RedisIdempotencyConfig::builder()
            .prefix("")
            .build()
            .is_err()
    );
    assert!(
        RedisIdempotencyConfig::builder()
            .ttl(Duration::ZERO)
            .build()
            .is_err()
    );
}

// ---------------------------------------------------------------- with the router

#[tokio::test]
async fn a_message_published_twice_has_one_side_effect() {
    let bus = MemoryBus::new();
    let store = store().await;
    let effects = Arc::new(AtomicUsize::new(0));
    let duplicates = Arc::new(AtomicUsize::new(0));
    let (e, d) = (effects.clone(), duplicates.clone());
    let running = Router::builder(bus.clone(), bus.clone())
        .idempotency(store.clone())
        .on_event(move |event: &RouterEvent<'_>| {
            if let RouterEvent::Duplicate { .. } = event {
                d.fetch_add(1, Ordering::SeqCst);
            }
        })
        .handler("charge", "payments", "billing", move |_m: Message| {
            let e = e.clone();
            async move {
                e.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();

    let m = Message::new("charge 10");
    bus.publish("payments", vec![m.clone()]).await.unwrap();
    eventually("the first copy handled", || bus.backlog("payments") == 0).await;
    bus.publish("payments", vec![m.clone()]).await.unwrap();
    // Another message with the same payload is a different message.
    bus.publish("payments", vec![Message::new("charge 10")])
        .await
        .unwrap();
    eventually("all settled", || bus.backlog("payments") == 0).await;

    assert_eq!(effects.load(Ordering::SeqCst), 2);
    assert_eq!(duplicates.load(Ordering::SeqCst), 1);
    assert!(
        store
            .is_handled(&IdempotencyKey::new("billing", m.id()))
            .await
            .unwrap()
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_failed_first_handling_is_handled_again_on_redelivery() {
    let bus = MemoryBus::new();
    let store = store().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let effects = Arc::new(AtomicUsize::new(0));
    let (c, e) = (calls.clone(), effects.clone());
    let running = Router::builder(bus.clone(), bus.clone())
        .idempotency(store.clone())
        .policy(
            FailurePolicy::builder()
                .no_in_process_retry()
                .redelivery_backoff(Backoff::constant(Duration::from_millis(100)))
                .build()
                .unwrap(),
        )
        .handler("charge", "payments", "billing", move |_m: Message| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            let e = e.clone();
            async move {
                if n == 0 {
                    return Err::<Outputs, BoxError>("card service down".into());
                }
                e.fetch_add(1, Ordering::SeqCst);
                Ok(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();

    let m = Message::new("charge 10");
    let key = IdempotencyKey::new("billing", m.id());
    bus.publish("payments", vec![m.clone()]).await.unwrap();
    eventually("the failed first attempt", || {
        calls.load(Ordering::SeqCst) >= 1
    })
    .await;
    if effects.load(Ordering::SeqCst) == 0 {
        assert!(
            !store.is_handled(&key).await.unwrap(),
            "recorded although the handler failed"
        );
    }
    eventually("handled on redelivery", || {
        effects.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("acked", || bus.backlog("payments") == 0).await;
    assert!(store.is_handled(&key).await.unwrap());

    // A later duplicate is skipped.
    bus.publish("payments", vec![m]).await.unwrap();
    eventually("the duplicate acked", || bus.backlog("payments") == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(effects.load(Ordering::SeqCst), 1);
    running.shutdown(Duration::from_secs(5)).await;
}
