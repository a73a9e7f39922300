//! The in-memory backend's semantics: groups, settlement, ordering, delays, backpressure.

use std::collections::HashSet;
use std::time::Duration;

use meshwork_event_bus::{
    BusError, MemoryBus, MemoryConfig, Message, Publisher, Subscriber, Subscription,
    dead_letter_header,
};
use tokio::time::timeout;

async fn next(sub: &mut Subscription) -> meshwork_event_bus::Delivery {
    timeout(Duration::from_secs(60), sub.recv())
        .await
        .expect("a delivery within 60 s")
        .expect("subscription open")
        .expect("no error")
}

async fn nothing_within(sub: &mut Subscription, d: Duration) {
    if let Ok(got) = timeout(d, sub.recv()).await {
        panic!("expected nothing, got {got:?}");
    }
}

fn text(d: &meshwork_event_bus::Delivery) -> String {
    String::from_utf8(d.message().payload().to_vec()).unwrap()
}

#[tokio::test]
async fn delivers_exact_payload_key_headers_and_id() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    let sent = Message::new(vec![0u8, 159, 146, 150])
        .with_key("k")
        .with_header("event-type", "x.v1");
    bus.publish("t", vec![sent.clone()]).await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(d.message(), &sent);
    assert_eq!(d.info().attempt, 1);
    assert_eq!(&*d.info().topic, "t");
    assert_eq!(&*d.info().group, "g");
    assert_eq!(d.info().message_id, sent.id());
    d.ack().await.unwrap();
    assert_eq!(bus.backlog("t"), 0, "acked by the only group: trimmed");
}

#[tokio::test]
async fn competing_consumers_share_and_groups_fan_out() {
    let bus = MemoryBus::new();
    let mut a = bus.subscribe("t", "workers").await.unwrap();
    let mut b = bus.subscribe("t", "workers").await.unwrap();
    let mut audit = bus.subscribe("t", "audit").await.unwrap();
    let msgs: Vec<_> = (0..100).map(|i| Message::new(format!("{i}"))).collect();
    bus.publish("t", msgs).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..50 {
        let d = next(&mut a).await;
        seen.push(text(&d));
        d.ack().await.unwrap();
        let d = next(&mut b).await;
        seen.push(text(&d));
        d.ack().await.unwrap();
    }
    nothing_within(&mut a, Duration::from_millis(50)).await;
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 100, "each message to exactly one worker");
    for i in 0..100 {
        let d = next(&mut audit).await;
        assert_eq!(
            text(&d),
            i.to_string(),
            "the other group gets all, in order"
        );
        d.ack().await.unwrap();
    }
}

#[tokio::test]
async fn retry_redelivers_with_a_rising_attempt_count() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("m")]).await.unwrap();
    for attempt in 1..=3 {
        let d = next(&mut sub).await;
        assert_eq!(d.info().attempt, attempt);
        d.retry(None).await.unwrap();
    }
    let d = next(&mut sub).await;
    assert_eq!(d.info().attempt, 4);
    d.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(50)).await;
}

#[tokio::test(start_paused = true)]
async fn delayed_retry_is_not_early_and_other_keys_keep_flowing() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish(
        "t",
        vec![
            Message::new("a1").with_key("a"),
            Message::new("a2").with_key("a"),
            Message::new("b1").with_key("b"),
        ],
    )
    .await
    .unwrap();
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "a1");
    let start = tokio::time::Instant::now();
    d.retry(Some(Duration::from_secs(10))).await.unwrap();
    // a2 waits behind a1 (same key); b1 flows.
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "b1");
    d.ack().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "a1");
    assert!(start.elapsed() >= Duration::from_secs(10), "not early");
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "a2");
    d.ack().await.unwrap();
}

#[tokio::test]
async fn per_key_order_holds_across_consumers() {
    let bus = MemoryBus::new();
    let mut a = bus.subscribe("t", "g").await.unwrap();
    let mut b = bus.subscribe("t", "g").await.unwrap();
    let msgs = (0..20)
        .map(|i| Message::new(format!("{i}")).with_key(["x", "y"][i % 2]))
        .collect();
    bus.publish("t", msgs).await.unwrap();
    // Two consumers each hold one delivery: they must have different keys.
    let d1 = next(&mut a).await;
    let d2 = next(&mut b).await;
    assert_ne!(d1.message().key(), d2.message().key());
    // Nothing else is deliverable until one is settled.
    nothing_within(&mut a, Duration::from_millis(50)).await;
    let mut got: Vec<(Vec<u8>, u32)> = Vec::new();
    for d in [d1, d2] {
        got.push((
            d.message().key().unwrap().to_vec(),
            text(&d).parse().unwrap(),
        ));
        d.ack().await.unwrap();
    }
    for _ in 0..18 {
        let d = next(&mut a).await;
        got.push((
            d.message().key().unwrap().to_vec(),
            text(&d).parse().unwrap(),
        ));
        d.ack().await.unwrap();
    }
    for key in [b"x".to_vec(), b"y".to_vec()] {
        let seq: Vec<u32> = got
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            .collect();
        let mut sorted = seq.clone();
        sorted.sort();
        assert_eq!(seq, sorted, "key {key:?} out of order");
        assert_eq!(seq.len(), 10);
    }
}

#[tokio::test]
async fn dropped_unsettled_is_redelivered_and_term_is_not() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("m1"), Message::new("m2")])
        .await
        .unwrap();
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "m1");
    drop(d);
    let d = next(&mut sub).await;
    assert_eq!((text(&d).as_str(), d.info().attempt), ("m1", 2));
    d.term().await.unwrap();
    let d = next(&mut sub).await;
    assert_eq!(text(&d), "m2");
    d.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn out_of_order_ack_then_crash_brings_the_earlier_one_back() {
    let bus = MemoryBus::new();
    let mut first = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("m1"), Message::new("m2")])
        .await
        .unwrap();
    let d1 = next(&mut first).await;
    let d2 = next(&mut first).await;
    d2.ack().await.unwrap();
    // The consumer "crashes" holding m1.
    drop(first);
    drop(d1);
    let mut second = bus.subscribe("t", "g").await.unwrap();
    let d = next(&mut second).await;
    assert_eq!(text(&d), "m1");
    d.ack().await.unwrap();
    nothing_within(&mut second, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn dead_letter_publishes_the_standard_envelope() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("orders", "billing").await.unwrap();
    let mut dlq = bus.subscribe("orders.dlq", "ops").await.unwrap();
    let poison = Message::new("{bad json").with_key("o-1");
    bus.publish("orders", vec![poison.clone()]).await.unwrap();
    let d = next(&mut sub).await;
    d.dead_letter_from("expected value at line 1", Some("charge"))
        .await
        .unwrap();
    let env = next(&mut dlq).await;
    let m = env.message();
    assert_eq!(m.id(), poison.id());
    assert_eq!(m.payload(), poison.payload());
    assert_eq!(m.key(), poison.key());
    let h = m.headers();
    assert_eq!(h.get(dead_letter_header::ORIGINAL_TOPIC), Some("orders"));
    assert_eq!(h.get(dead_letter_header::GROUP), Some("billing"));
    assert_eq!(
        h.get(dead_letter_header::REASON),
        Some("expected value at line 1")
    );
    assert_eq!(h.get(dead_letter_header::ATTEMPTS), Some("1"));
    assert_eq!(h.get(dead_letter_header::HANDLER), Some("charge"));
    assert!(h.get(dead_letter_header::FIRST_FAILURE_AT).is_some());
    env.ack().await.unwrap();
    nothing_within(&mut sub, Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_new_group_reads_the_backlog() {
    let bus = MemoryBus::new();
    let _early = bus.subscribe("t", "early").await.unwrap();
    bus.publish("t", vec![Message::new("m1")]).await.unwrap();
    let mut late = bus.subscribe("t", "late").await.unwrap();
    assert_eq!(text(&next(&mut late).await), "m1");
}

#[tokio::test(start_paused = true)]
async fn full_topic_applies_backpressure_and_never_drops() {
    let bus = MemoryBus::with_config(
        MemoryConfig::builder()
            .capacity(2)
            .publish_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("1"), Message::new("2")])
        .await
        .unwrap();
    let err = bus.publish("t", vec![Message::new("3")]).await.unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("consumers are behind"), "{err}");
    // Room is made by settling, and a waiting publisher gets through.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish("t", vec![Message::new("3")]).await })
    };
    tokio::task::yield_now().await;
    next(&mut sub).await.ack().await.unwrap();
    publisher.await.unwrap().unwrap();
    for want in ["2", "3"] {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), want);
        d.ack().await.unwrap();
    }
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_publishes() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    let waiting = tokio::spawn(async move { sub.recv().await.is_none() });
    tokio::task::yield_now().await;
    bus.close().await.unwrap();
    assert!(waiting.await.unwrap(), "the subscription ends");
    let err = bus.publish("t", vec![Message::new("x")]).await.unwrap_err();
    assert_eq!(err.to_string(), "memory bus is closed");
}

#[tokio::test]
async fn topology_creation_can_be_turned_off() {
    let bus = MemoryBus::with_config(
        MemoryConfig::builder()
            .create_topology(false)
            .build()
            .unwrap(),
    );
    let err = bus.publish("t", vec![Message::new("x")]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "topic 't' does not exist and topology creation is turned off: create it, or turn create_topology on"
    );
    bus.create_topic("t").unwrap();
    assert!(matches!(
        bus.subscribe("t", "g").await.unwrap_err(),
        BusError::MissingTopology { what: "group", .. }
    ));
    bus.create_group("t", "g").unwrap();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("x")]).await.unwrap();
    next(&mut sub).await.ack().await.unwrap();
}

#[tokio::test]
async fn bad_names_and_config_are_rejected_clearly() {
    let bus = MemoryBus::new();
    let err = bus.publish("a topic", vec![]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid topic \"a topic\": may hold only ASCII letters, digits, '.', '_' and '-'"
    );
    let err = bus.subscribe("t", "").await.unwrap_err();
    assert_eq!(err.to_string(), "invalid group \"\": must not be empty");
    let err = MemoryConfig::builder().capacity(0).build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid capacity \"0\": must be at least 1"
    );
}

#[tokio::test]
async fn identical_payloads_are_distinct_messages() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    bus.publish("t", vec![Message::new("ok"), Message::new("ok")])
        .await
        .unwrap();
    let a = next(&mut sub).await;
    let b = next(&mut sub).await;
    assert_ne!(a.message().id(), b.message().id());
    a.ack().await.unwrap();
    b.ack().await.unwrap();
}

#[tokio::test]
async fn redrive_moves_chosen_dead_letters_home_and_leaves_the_rest() {
    use meshwork_event_bus::redrive;
    let bus = MemoryBus::new();
    let mut orders = bus.subscribe("orders", "billing").await.unwrap();
    bus.publish(
        "orders",
        vec![Message::new("a"), Message::new("b"), Message::new("c")],
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for reason in ["billing down", "bad amount", "billing down"] {
        let d = next(&mut orders).await;
        ids.push(d.message().id());
        d.dead_letter(reason).await.unwrap();
    }
    let only_outages =
        |m: &Message| m.headers().get(dead_letter_header::REASON) == Some("billing down");
    let report = redrive(
        &bus,
        &bus,
        "orders.dlq",
        "redrive",
        10,
        Duration::from_millis(100),
        only_outages,
    )
    .await
    .unwrap();
    assert_eq!((report.redriven, report.skipped), (2, 1));
    let mut back = Vec::new();
    for _ in 0..2 {
        let d = next(&mut orders).await;
        assert_eq!(d.message().headers().get(dead_letter_header::REASON), None);
        back.push(d.message().id());
        d.ack().await.unwrap();
    }
    assert_eq!(back, vec![ids[0], ids[2]], "same ids, original order");
    nothing_within(&mut orders, Duration::from_millis(50)).await;
    // The refused one is still there for a later run.
    let report = redrive(
        &bus,
        &bus,
        "orders.dlq",
        "redrive",
        10,
        Duration::from_millis(100),
        |_| true,
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    assert_eq!(next(&mut orders).await.message().id(), ids[1]);
}

#[tokio::test(start_paused = true)]
async fn a_topic_nobody_reads_says_so_when_full() {
    let bus = MemoryBus::with_config(
        MemoryConfig::builder()
            .capacity(1)
            .publish_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    bus.publish("t", vec![Message::new("1")]).await.unwrap();
    let err = bus.publish("t", vec![Message::new("2")]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("no consumer group has joined it yet"),
        "{err}"
    );
    // The first message is kept for the first group to join.
    let mut sub = bus.subscribe("t", "late").await.unwrap();
    assert_eq!(text(&next(&mut sub).await), "1");
}

#[tokio::test(start_paused = true)]
async fn a_partly_accepted_batch_names_the_messages_not_published() {
    let bus = MemoryBus::with_config(
        MemoryConfig::builder()
            .capacity(2)
            .publish_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    let mut sub = bus.subscribe("t", "g").await.unwrap();
    let batch: Vec<_> = (0..3).map(|i| Message::new(format!("{i}"))).collect();
    let last = batch[2].id();
    let err = bus.publish("t", batch).await.unwrap_err();
    match &err {
        BusError::Partial {
            topic,
            total,
            failed,
        } => {
            assert_eq!((topic.as_str(), *total), ("t", 3));
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, last, "the one that did not fit");
            assert!(
                failed[0].1.contains("consumers are behind"),
                "{}",
                failed[0].1
            );
        }
        other => panic!("expected Partial, got {other}"),
    }
    // The two accepted ones are there, in order.
    for want in ["0", "1"] {
        let d = next(&mut sub).await;
        assert_eq!(text(&d), want);
        d.ack().await.unwrap();
    }
    nothing_within(&mut sub, Duration::from_millis(50)).await;
}
