//! The router against the in-memory bus: outputs before acks, the failure policy, panics and
//! decode errors, shutdown, idempotency, correlation, concurrency, configuration.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use meshwork_event_bus::{
    BoxError, BusError, FailureKind, FailureOutcome, FailurePolicy, HandlerError, IdempotencyKey,
    IdempotencyStore, MemoryBus, MemoryIdempotencyStore, Message, Outputs, Publisher, Route,
    Router, RouterBuilder, RouterEvent, Subscriber, Subscription, dead_letter_header,
};
use meshwork_retry::{Backoff, Jitter, RetryConfig};
use tokio::time::{Instant, timeout};

// ---------------------------------------------------------------- helpers

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

/// Waits (up to 60 s of tokio time) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn text(m: &Message) -> String {
    String::from_utf8(m.payload().to_vec()).unwrap()
}

/// An owned summary of the events a router reported.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Failed(FailureKind, FailureOutcome, u32),
    Duplicate,
    SubscribeFailed,
    Other,
}

fn recorder() -> (
    Arc<Mutex<Vec<Seen>>>,
    impl Fn(&RouterEvent<'_>) + Send + Sync + 'static,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (seen, move |e: &RouterEvent<'_>| {
        let item = match e {
            RouterEvent::Failed {
                kind,
                outcome,
                attempt,
                ..
            } => Seen::Failed(*kind, *outcome, *attempt),
            RouterEvent::Duplicate { .. } => Seen::Duplicate,
            RouterEvent::SubscribeFailed { .. } => Seen::SubscribeFailed,
            _ => Seen::Other,
        };
        s.lock().unwrap().push(item);
    })
}

fn quick_in_process(attempts: u32) -> RetryConfig {
    RetryConfig::builder()
        .max_attempts(attempts)
        .backoff(Backoff::constant(Duration::from_millis(10)))
        .jitter(Jitter::None)
        .no_budget()
        .build()
        .unwrap()
}

fn builder(bus: &MemoryBus) -> RouterBuilder {
    Router::builder(bus.clone(), bus.clone())
}

/// A publisher that delegates to a bus, failing the first `fail_first` publishes to
/// `fail_topic`, and recording the input topic's backlog at each output publish.
#[derive(Clone)]
struct Flaky {
    bus: MemoryBus,
    fail_topic: &'static str,
    fail_first: Arc<AtomicUsize>,
    input_topic: &'static str,
    backlog_at_publish: Arc<Mutex<Vec<usize>>>,
}

impl Publisher for Flaky {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), BusError> {
        if topic == self.fail_topic {
            self.backlog_at_publish
                .lock()
                .unwrap()
                .push(self.bus.backlog(self.input_topic));
            let left = self.fail_first.load(Ordering::SeqCst);
            if left > 0 {
                self.fail_first.store(left - 1, Ordering::SeqCst);
                return Err(BusError::backend(
                    "broker said no",
                    std::io::Error::other("nope"),
                ));
            }
        }
        self.bus.publish(topic, messages).await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.bus.close().await
    }
}

// ---------------------------------------------------------------- outputs and acks

#[tokio::test]
async fn outputs_are_published_and_confirmed_before_the_input_is_acked() {
    let bus = MemoryBus::new();
    let mut out = bus.subscribe("out", "check").await.unwrap();
    let flaky = Flaky {
        bus: bus.clone(),
        fail_topic: "out",
        fail_first: Arc::new(AtomicUsize::new(0)),
        input_topic: "in",
        backlog_at_publish: Arc::default(),
    };
    let running = Router::builder(flaky.clone(), bus.clone())
        .handler("relay", "in", "relay", |m: Message| async move {
            Ok::<_, BoxError>(
                Outputs::none()
                    .with("out", m.caused("first"))
                    .with("out", m.caused("second")),
            )
        })
        .build()
        .unwrap()
        .start();
    bus.publish("in", vec![Message::new("x")]).await.unwrap();
    let a = next(&mut out).await;
    let b = next(&mut out).await;
    assert_eq!(
        (text(a.message()), text(b.message())),
        ("first".into(), "second".into())
    );
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    eventually("the input acked", || bus.backlog("in") == 0).await;
    assert_eq!(
        *flaky.backlog_at_publish.lock().unwrap(),
        [1],
        "one batch per topic run, published while the input was still unacked"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_output_publish_leaves_the_input_unacked_and_redelivers_it() {
    let bus = MemoryBus::new();
    let mut out = bus.subscribe("out", "check").await.unwrap();
    let flaky = Flaky {
        bus: bus.clone(),
        fail_topic: "out",
        fail_first: Arc::new(AtomicUsize::new(1)),
        input_topic: "in",
        backlog_at_publish: Arc::default(),
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let (seen, listener) = recorder();
    let running = Router::builder(flaky, bus.clone())
        .policy(
            FailurePolicy::builder()
                .no_in_process_retry()
                .redelivery_backoff(Backoff::constant(Duration::from_secs(2)))
                .build()
                .unwrap(),
        )
        .on_event(listener)
        .handler("relay", "in", "relay", move |m: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, BoxError>(Outputs::one("out", m.caused("o"))) }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("in", vec![Message::new("x")]).await.unwrap();
    eventually("the first attempt", || calls.load(Ordering::SeqCst) == 1).await;
    assert_eq!(
        bus.backlog("in"),
        1,
        "not acked after the output publish failed"
    );
    let d = next(&mut out).await;
    d.ack().await.unwrap();
    eventually("the input acked", || bus.backlog("in") == 0).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "handled again on redelivery"
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [Seen::Failed(
            FailureKind::Transient,
            FailureOutcome::Redelivered {
                after: Duration::from_secs(2)
            },
            1
        )]
    );
    nothing_within(&mut out, Duration::from_millis(100)).await;
    running.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- the failure policy

#[tokio::test(start_paused = true)]
async fn retries_in_process_then_redelivers_then_dead_letters_after_exactly_n_deliveries() {
    let bus = MemoryBus::new();
    let mut dlq = bus.subscribe("jobs.dlq", "ops").await.unwrap();
    let calls = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let c = calls.clone();
    let (seen, listener) = recorder();
    let running = builder(&bus)
        .on_event(listener)
        .route(
            Route::new("do-job", "jobs", "workers", move |_m: Message| {
                c.lock().unwrap().push(Instant::now());
                async { Err::<Outputs, _>(std::io::Error::other("database busy")) }
            })
            .policy(
                FailurePolicy::builder()
                    .in_process(quick_in_process(3))
                    .max_deliveries(3)
                    .redelivery_backoff(Backoff::constant(Duration::from_secs(5)))
                    .build()
                    .unwrap(),
            ),
        )
        .build()
        .unwrap()
        .start();
    let sent = Message::new("job-1");
    bus.publish("jobs", vec![sent.clone()]).await.unwrap();

    let dead = next(&mut dlq).await;
    let h = dead.message().headers();
    assert_eq!(dead.message().id(), sent.id());
    assert_eq!(h.get(dead_letter_header::ATTEMPTS), Some("3"));
    assert_eq!(h.get(dead_letter_header::HANDLER), Some("do-job"));
    assert_eq!(h.get(dead_letter_header::GROUP), Some("workers"));
    assert_eq!(h.get(dead_letter_header::ORIGINAL_TOPIC), Some("jobs"));
    assert_eq!(h.get(dead_letter_header::REASON), Some("database busy"));
    dead.ack().await.unwrap();

    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 9, "3 deliveries x 3 in-process attempts");
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        if i == 2 || i == 5 {
            assert!(
                gap >= Duration::from_secs(5),
                "redelivery came early: {gap:?}"
            );
        } else {
            assert!(
                gap >= Duration::from_millis(10) && gap < Duration::from_secs(1),
                "in-process gap {gap:?}"
            );
        }
    }
    let outcomes: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|s| match s {
            Seen::Failed(_, o, a) => Some((*o, *a)),
            _ => None,
        })
        .collect();
    let in_process = FailureOutcome::RetriedInProcess {
        after: Duration::from_millis(10),
    };
    let redelivered = FailureOutcome::Redelivered {
        after: Duration::from_secs(5),
    };
    assert_eq!(
        outcomes,
        [
            (in_process, 1),
            (in_process, 1),
            (redelivered, 1),
            (in_process, 2),
            (in_process, 2),
            (redelivered, 2),
            (in_process, 3),
            (in_process, 3),
            (FailureOutcome::DeadLettered, 3),
        ]
    );
    assert_eq!(bus.backlog("jobs"), 0, "settled by the dead letter");
    nothing_within(&mut dlq, Duration::from_secs(60)).await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_transient_failure_that_recovers_in_process_is_acked_without_redelivery() {
    let bus = MemoryBus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let (seen, listener) = recorder();
    let running = builder(&bus)
        .policy(
            FailurePolicy::builder()
                .in_process(quick_in_process(3))
                .build()
                .unwrap(),
        )
        .on_event(listener)
        .handler("flaky", "t", "g", move |_m: Message| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(HandlerError::transient("blip").into())
                } else {
                    Ok::<_, BoxError>(Outputs::none())
                }
            }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("t", vec![Message::new("m")]).await.unwrap();
    eventually("acked", || bus.backlog("t") == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(matches!(
        seen.lock().unwrap().as_slice(),
        [Seen::Failed(
            FailureKind::Transient,
            FailureOutcome::RetriedInProcess { .. },
            1
        )]
    ));
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_dead_letters_at_once() {
    let bus = MemoryBus::new();
    let mut dlq = bus.subscribe("orders.dlq", "ops").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let running = builder(&bus)
        .policy(
            FailurePolicy::builder()
                .in_process(quick_in_process(5))
                .max_deliveries(10)
                .build()
                .unwrap(),
        )
        .handler("bill", "orders", "billing", move |_m: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err::<Outputs, _>(HandlerError::permanent("amount must be positive")) }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("orders", vec![Message::new("-5")])
        .await
        .unwrap();
    let dead = next(&mut dlq).await;
    assert_eq!(
        dead.message().headers().get(dead_letter_header::REASON),
        Some("amount must be positive")
    );
    assert_eq!(
        dead.message().headers().get(dead_letter_header::ATTEMPTS),
        Some("1")
    );
    dead.ack().await.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry of a permanent error"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_handler_is_dead_lettered_once_and_the_router_keeps_going() {
    let bus = MemoryBus::new();
    let mut dlq = bus.subscribe("t.dlq", "ops").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let (c, h) = (calls.clone(), handled.clone());
    let running = builder(&bus)
        .handler("fragile", "t", "g", move |m: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            let h = h.clone();
            async move {
                if m.payload().as_ref() == b"poison" {
                    panic!("boom");
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("t", vec![Message::new("poison")])
        .await
        .unwrap();
    let dead = next(&mut dlq).await;
    assert_eq!(
        dead.message().headers().get(dead_letter_header::REASON),
        Some("handler panicked: boom")
    );
    assert_eq!(
        dead.message().headers().get(dead_letter_header::HANDLER),
        Some("fragile")
    );
    dead.ack().await.unwrap();
    bus.publish("t", vec![Message::new("fine")]).await.unwrap();
    eventually("the next message handled", || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the poison ran once");
    nothing_within(&mut dlq, Duration::from_secs(60)).await;
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn an_undecodable_message_is_dead_lettered_at_once_never_looping() {
    let bus = MemoryBus::new();
    let mut dlq = bus.subscribe("t.dlq", "ops").await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let running = builder(&bus)
        .policy(
            FailurePolicy::builder()
                .in_process(quick_in_process(3))
                .build()
                .unwrap(),
        )
        .handler("parse", "t", "g", move |m: Message| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                let text = std::str::from_utf8(m.payload()).map_err(HandlerError::decode)?;
                let _n: u64 = text.parse().map_err(HandlerError::decode)?;
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("t", vec![Message::new(vec![0xff, 0xfe])])
        .await
        .unwrap();
    let dead = next(&mut dlq).await;
    let reason = dead
        .message()
        .headers()
        .get(dead_letter_header::REASON)
        .unwrap();
    assert!(
        reason.starts_with("cannot decode message: invalid utf-8"),
        "{reason}"
    );
    dead.ack().await.unwrap();
    nothing_within(&mut dlq, Duration::from_secs(60)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(bus.backlog("t"), 0);
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_handler_timeout_is_a_transient_failure() {
    let bus = MemoryBus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let running = builder(&bus)
        .policy(
            FailurePolicy::builder()
                .in_process(quick_in_process(2))
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_millis(100))
        .handler("slow-once", "t", "g", move |_m: Message| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();
    let start = Instant::now();
    bus.publish("t", vec![Message::new("m")]).await.unwrap();
    eventually("acked", || bus.backlog("t") == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    running.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- shutdown and start

#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_flight_work_and_acks_it() {
    let bus = MemoryBus::new();
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (s, d) = (started.clone(), done.clone());
    let running = builder(&bus)
        .handler("slow", "t", "g", move |_m: Message| {
            s.fetch_add(1, Ordering::SeqCst);
            let d = d.clone();
            async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                d.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();
    bus.publish("t", (0..3).map(|i| Message::new(format!("{i}"))).collect())
        .await
        .unwrap();
    eventually("all three started", || started.load(Ordering::SeqCst) == 3).await;
    let report = running.shutdown(Duration::from_secs(10)).await;
    assert_eq!((report.drained, report.abandoned), (3, 0));
    assert_eq!(done.load(Ordering::SeqCst), 3);
    assert_eq!(bus.backlog("t"), 0, "all three acked");
    // Fetching stopped: a new message waits for the next consumer.
    bus.publish("t", vec![Message::new("later")]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(started.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_handler_still_running_at_the_deadline_is_redelivered_and_not_failed() {
    let bus = MemoryBus::new();
    let mut dlq = bus.subscribe("t.dlq", "ops").await.unwrap();
    let started = Arc::new(AtomicBool::new(false));
    let s = started.clone();
    let (seen, listener) = recorder();
    let running = builder(&bus)
        .policy(
            FailurePolicy::builder()
                .max_deliveries(1)
                .redelivery_backoff(Backoff::constant(Duration::from_secs(3600)))
                .build()
                .unwrap(),
        )
        .timeout(Duration::from_secs(3600))
        .on_event(listener)
        .handler("stuck", "t", "g", move |_m: Message| {
            s.store(true, Ordering::SeqCst);
            std::future::pending::<Result<Outputs, BoxError>>()
        })
        .build()
        .unwrap()
        .start();
    let sent = Message::new("m");
    bus.publish("t", vec![sent.clone()]).await.unwrap();
    eventually("the handler started", || started.load(Ordering::SeqCst)).await;
    let before = Instant::now();
    let report = running.shutdown(Duration::from_millis(100)).await;
    assert!(before.elapsed() < Duration::from_secs(1));
    assert_eq!((report.drained, report.abandoned), (0, 1));
    assert!(
        seen.lock().unwrap().is_empty(),
        "no failure recorded: {seen:?}"
    );

    // Redelivered at once (no retry delay spent), to the same group, not dead-lettered even
    // though max_deliveries is 1.
    let mut again = bus.subscribe("t", "g").await.unwrap();
    let d = timeout(Duration::from_secs(1), again.recv())
        .await
        .expect("redelivered without delay")
        .unwrap()
        .unwrap();
    assert_eq!(d.message().id(), sent.id());
    assert_eq!(d.info().attempt, 2);
    d.ack().await.unwrap();
    nothing_within(&mut dlq, Duration::from_secs(60)).await;
}

/// A subscriber that fails `fail_first` times, then hangs (`hang`) or subscribes to a bus.
#[derive(Clone)]
struct Reluctant {
    bus: MemoryBus,
    fail_first: Arc<AtomicUsize>,
    hang: bool,
}

impl Subscriber for Reluctant {
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription, BusError> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        let left = self.fail_first.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_first.store(left - 1, Ordering::SeqCst);
            return Err(BusError::backend(
                "connecting",
                std::io::Error::other("connection refused"),
            ));
        }
        self.bus.subscribe(topic, group).await
    }
}

#[tokio::test(start_paused = true)]
async fn starting_never_blocks_even_when_the_broker_hangs() {
    let bus = MemoryBus::new();
    let hanging = Reluctant {
        bus: bus.clone(),
        fail_first: Arc::default(),
        hang: true,
    };
    let before = Instant::now();
    let running = Router::builder(bus.clone(), hanging)
        .handler("h", "t", "g", |_m: Message| async {
            Ok::<_, BoxError>(Outputs::none())
        })
        .build()
        .unwrap()
        .start();
    assert_eq!(before.elapsed(), Duration::ZERO, "start returned at once");
    assert!(!running.is_finished());
    assert_eq!(running.handlers().collect::<Vec<_>>(), ["h"]);
    let report = timeout(
        Duration::from_secs(5),
        running.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("shutdown is not stuck behind the hanging subscribe");
    assert_eq!(report.crashed, 0);
}

#[tokio::test(start_paused = true)]
async fn subscription_errors_are_retried_with_backoff() {
    let bus = MemoryBus::new();
    let reluctant = Reluctant {
        bus: bus.clone(),
        fail_first: Arc::new(AtomicUsize::new(3)),
        hang: false,
    };
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let (seen, listener) = recorder();
    let running = Router::builder(bus.clone(), reluctant)
        .on_event(listener)
        .handler("h", "t", "g", move |_m: Message| {
            h.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Outputs::none()) }
        })
        .build()
        .unwrap()
        .start();
    let start = Instant::now();
    bus.create_group("t", "g").unwrap();
    bus.publish("t", vec![Message::new("m")]).await.unwrap();
    eventually("handled after the broker came back", || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    // 100 ms + 200 ms + 400 ms of backoff before the 4th try.
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            Seen::SubscribeFailed,
            Seen::SubscribeFailed,
            Seen::SubscribeFailed
        ]
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_closed_bus_stops_the_consumers_and_wait_returns() {
    let bus = MemoryBus::new();
    let running = builder(&bus)
        .handler("h", "t", "g", |_m: Message| async {
            Ok::<_, BoxError>(Outputs::none())
        })
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(10)).await;
    bus.close().await.unwrap();
    let report = timeout(Duration::from_secs(60), running.wait())
        .await
        .expect("consumers stop once the bus is closed");
    assert_eq!(report.crashed, 0);
}

// ---------------------------------------------------------------- idempotency

#[tokio::test(start_paused = true)]
async fn forced_duplicates_produce_exactly_one_side_effect() {
    let bus = MemoryBus::new();
    let effects = Arc::new(AtomicUsize::new(0));
    let e = effects.clone();
    let (seen, listener) = recorder();
    let store = MemoryIdempotencyStore::new();
    let running = builder(&bus)
        .idempotency(store.clone())
        .max_in_flight(8)
        .on_event(listener)
        .handler("charge", "payments", "billing", move |_m: Message| {
            let e = e.clone();
            async move {
                // Slow, so both copies are in flight together.
                tokio::time::sleep(Duration::from_millis(50)).await;
                e.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(Outputs::none())
            }
        })
        .build()
        .unwrap()
        .start();
    let m = Message::new("charge 10");
    bus.publish("payments", vec![m.clone()]).await.unwrap();
    bus.publish("payments", vec![m.clone()]).await.unwrap();
    // Two different messages with the same payload are both handled.
    bus.publish("payments", vec![Message::new("charge 10")])
        .await
        .unwrap();
    eventually("all settled", || bus.backlog("payments") == 0).await;
    assert_eq!(effects.load(Ordering::SeqCst), 2);
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| **s == Seen::Duplicate)
            .count(),
        1
    );
    assert!(
        store
            .is_handled(&IdempotencyKey::new("billing", m.id()))
            .await
            .unwrap()
    );
    running.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_message_whose_first_handling_failed_is_handled_on_redelivery() {
    let bus = MemoryBus::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let effects = Arc::new(AtomicUsize::new(0));
    let (c, e) = (calls.clone(), effects.clone());
    let store = MemoryIdempotencyStore::new();
    let running = builder(&bus)
        .idempotency(store.clone())
        .policy(
            FailurePolicy::builder()
                .no_in_process_retry()
                .redelivery_backoff(Backoff::constant(Duration::from_secs(1)))
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
    eventually("the first attempt", || calls.load(Ordering::SeqCst) == 1).await;
    assert!(
        !store.is_handled(&key).await.unwrap(),
        "not recorded on failure"
    );
    eventually("handled on redelivery", || {
        effects.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("acked", || bus.backlog("payments") == 0).await;
    assert!(store.is_handled(&key).await.unwrap());
    // A later duplicate is skipped.
    bus.publish("payments", vec![m]).await.unwrap();
    eventually("acked", || bus.backlog("payments") == 0).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    running.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- correlation

#[tokio::test]
async fn outputs_inherit_the_correlation_id_and_name_the_input_as_cause() {
    let bus = MemoryBus::new();
    let mut out = bus.subscribe("out", "check").await.unwrap();
    let running = builder(&bus)
        .handler("fan", "in", "fan", |m: Message| async move {
            Ok::<_, BoxError>(
                Outputs::none()
                    .with("out", Message::new("plain"))
                    .with("out", m.caused("caused")),
            )
        })
        .build()
        .unwrap()
        .start();
    let with_corr = Message::new("a").with_header("correlation-id", "req-42");
    let without = Message::new("b");
    bus.publish("in", vec![with_corr.clone()]).await.unwrap();
    for _ in 0..2 {
        let d = next(&mut out).await;
        let h = d.message().headers();
        assert_eq!(h.correlation_id(), Some("req-42"), "{}", text(d.message()));
        assert_eq!(h.causation_id(), Some(with_corr.id().to_string().as_str()));
        d.ack().await.unwrap();
    }
    bus.publish("in", vec![without.clone()]).await.unwrap();
    let id = without.id().to_string();
    for _ in 0..2 {
        let d = next(&mut out).await;
        let h = d.message().headers();
        assert_eq!(
            h.correlation_id(),
            Some(id.as_str()),
            "the input's id starts the flow"
        );
        assert_eq!(h.causation_id(), Some(id.as_str()));
        d.ack().await.unwrap();
    }
    running.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- concurrency and layers

#[tokio::test(start_paused = true)]
async fn deliveries_in_flight_never_exceed_the_bound() {
    let bus = MemoryBus::new();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let (n, m, d) = (now.clone(), max.clone(), done.clone());
    let running = builder(&bus)
        .route(
            Route::new("bounded", "t", "g", move |_msg: Message| {
                let (n, m, d) = (n.clone(), m.clone(), d.clone());
                async move {
                    let current = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(current, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    d.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, BoxError>(Outputs::none())
                }
            })
            .max_in_flight(3),
        )
        .build()
        .unwrap()
        .start();
    bus.publish("t", (0..30).map(|i| Message::new(format!("{i}"))).collect())
        .await
        .unwrap();
    eventually("all handled", || done.load(Ordering::SeqCst) == 30).await;
    assert_eq!(
        max.load(Ordering::SeqCst),
        3,
        "the bound is reached, never passed"
    );
    running.shutdown(Duration::from_secs(5)).await;
}

/// A layer counting the calls that pass through it.
#[derive(Clone)]
struct Count(Arc<AtomicUsize>);

impl<S> tower_layer::Layer<S> for Count {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner, self.0.clone())
    }
}

#[derive(Clone)]
struct Counted<S>(S, Arc<AtomicUsize>);

impl<S: tower_service::Service<Message>> tower_service::Service<Message> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, m: Message) -> S::Future {
        self.1.fetch_add(1, Ordering::SeqCst);
        self.0.call(m)
    }
}

#[tokio::test]
async fn router_and_route_layers_wrap_every_handler() {
    let bus = MemoryBus::new();
    let router_wide = Arc::new(AtomicUsize::new(0));
    let route_only = Arc::new(AtomicUsize::new(0));
    let ok = |_m: Message| async { Ok::<_, BoxError>(Outputs::none()) };
    let running = builder(&bus)
        .layer(Count(router_wide.clone()))
        .route(Route::new("a", "ta", "g", ok).layer(Count(route_only.clone())))
        .handler("b", "tb", "g", ok)
        .build()
        .unwrap()
        .start();
    bus.publish("ta", vec![Message::new("1")]).await.unwrap();
    bus.publish("tb", vec![Message::new("2"), Message::new("3")])
        .await
        .unwrap();
    eventually("all handled", || {
        bus.backlog("ta") == 0 && bus.backlog("tb") == 0
    })
    .await;
    assert_eq!(router_wide.load(Ordering::SeqCst), 3);
    assert_eq!(route_only.load(Ordering::SeqCst), 1);
    running.shutdown(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------- configuration

#[test]
fn nonsense_configuration_is_refused_with_the_field_named() {
    let bus = MemoryBus::new();
    let ok = |_m: Message| async { Ok::<_, BoxError>(Outputs::none()) };
    let what = |b: RouterBuilder| match b.build() {
        Err(BusError::Invalid { what, .. }) => what,
        other => panic!("expected Invalid, got {other:?}"),
    };
    assert_eq!(what(builder(&bus)), "routes");
    assert_eq!(
        what(builder(&bus).max_in_flight(0).handler("h", "t", "g", ok)),
        "max_in_flight"
    );
    assert_eq!(
        what(builder(&bus).route(Route::new("h", "t", "g", ok).timeout(Duration::ZERO))),
        "timeout"
    );
    assert_eq!(
        what(builder(&bus).handler("h", "bad topic", "g", ok)),
        "topic"
    );
    assert_eq!(
        what(builder(&bus).handler("", "t", "g", ok)),
        "handler name"
    );
    assert_eq!(
        what(
            builder(&bus)
                .handler("h", "t", "g", ok)
                .handler("h", "u", "g", ok)
        ),
        "handler name"
    );
    assert_eq!(
        what(
            builder(&bus)
                .handler("h1", "t", "g", ok)
                .handler("h2", "t", "g", ok)
        ),
        "route"
    );
    let mut policy = FailurePolicy::default();
    policy.max_deliveries = 0;
    assert_eq!(
        what(builder(&bus).policy(policy).handler("h", "t", "g", ok)),
        "max_deliveries"
    );
    assert!(builder(&bus).handler("h", "t", "g", ok).build().is_ok());
    let err = builder(&bus)
        .max_in_flight(0)
        .handler("h", "t", "g", ok)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid max_in_flight \"0\": must be in [1, 1048576]"
    );
}
