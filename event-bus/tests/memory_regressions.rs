//! Regressions found while building the conformance suite.

use std::time::Duration;

use meshwork_event_bus::{MemoryBus, MemoryConfig, Message, Publisher, Subscriber};
use tokio::time::timeout;

fn strict_bus() -> MemoryBus {
    MemoryBus::with_config(
        MemoryConfig::builder()
            .create_topology(false)
            .build()
            .unwrap(),
    )
}

/// A dead letter that could not be published must not leave the message in flight
/// forever: it is redelivered (never lost).
#[tokio::test]
async fn a_failed_dead_letter_is_redelivered_not_stuck() {
    let bus = strict_bus();
    bus.create_group("orders", "billing").unwrap();
    let mut sub = bus.subscribe("orders", "billing").await.unwrap();
    bus.publish("orders", vec![Message::new("poison").with_key("k")])
        .await
        .unwrap();
    let d = sub.recv().await.unwrap().unwrap();
    let err = d.dead_letter("bad").await.unwrap_err();
    assert!(err.to_string().contains("orders.dlq"), "{err}");
    let again = timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("the message comes back after the failed dead letter")
        .unwrap()
        .unwrap();
    assert_eq!(again.message().payload().as_ref(), b"poison");
    assert_eq!(again.info().attempt, 2);
    bus.create_topic("orders.dlq").unwrap();
    again.dead_letter("bad").await.unwrap();
}

/// A dead-letter settlement dropped before it was awaited settles nothing: the delivery
/// is released and redelivered, as if dropped unsettled.
#[tokio::test]
async fn a_dead_letter_future_dropped_unpolled_releases_the_delivery() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("orders", "billing").await.unwrap();
    bus.publish("orders", vec![Message::new("m").with_key("k")])
        .await
        .unwrap();
    let d = sub.recv().await.unwrap().unwrap();
    drop(d.dead_letter("bad"));
    let again = timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("the message comes back")
        .unwrap()
        .unwrap();
    assert_eq!(again.info().attempt, 2);
    again.ack().await.unwrap();
}
