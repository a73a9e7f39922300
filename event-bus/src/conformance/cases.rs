//! The cases. Each is generic over [`Backend`], uses its own random topic and group names,
//! and says in its documentation what it proves.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::{
    BusError, Delivery, Message, MessageId, Publisher, SettleFuture, Subscriber, Subscription,
    dead_letter_header, dead_letter_topic, header,
};

use super::{Backend, CaseFailure, DEFAULT_STRESS_COUNT, Outcome, STRESS_ENV, Timing};

type CaseResult = Result<Outcome, CaseFailure>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(CaseFailure::new(format!($($arg)+)));
        }
    };
}

fn fail<T>(message: impl Into<String>) -> Result<T, CaseFailure> {
    Err(CaseFailure::new(message))
}

fn outcome(skipped: Vec<String>) -> Outcome {
    if skipped.is_empty() {
        Outcome::Passed
    } else {
        Outcome::PartlySkipped(skipped)
    }
}

/// A fresh name: `mwc-<what>-<uuid>`, valid for every backend.
fn unique(what: &str) -> String {
    format!("mwc-{what}-{}", MessageId::new().as_uuid().simple())
}

fn text(m: &Message) -> String {
    String::from_utf8_lossy(m.payload()).into_owned()
}

fn describe(d: &Delivery) -> String {
    let payload = text(d.message());
    let shown: String = payload.chars().take(40).collect();
    format!(
        "message {} {:?} (attempt {})",
        d.message().id(),
        shown,
        d.info().attempt
    )
}

async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, BusError>>,
) -> Result<T, CaseFailure> {
    match timeout(limit, fut).await {
        Err(_) => fail(format!("{what}: no answer within {limit:?}")),
        Ok(Err(e)) => fail(format!("{what}: {e}")),
        Ok(Ok(v)) => Ok(v),
    }
}

async fn publisher<B: Backend>(b: &B) -> Result<B::Publisher, CaseFailure> {
    within(
        b.timing().receive_timeout,
        "creating a publisher",
        b.publisher(),
    )
    .await
}

async fn subscriber<B: Backend>(b: &B) -> Result<B::Subscriber, CaseFailure> {
    within(
        b.timing().receive_timeout,
        "creating a subscriber",
        b.subscriber(),
    )
    .await
}

async fn subscribe<S: Subscriber>(
    s: &S,
    t: &Timing,
    topic: &str,
    group: &str,
) -> Result<Subscription, CaseFailure> {
    within(
        t.receive_timeout,
        &format!("subscribing to '{topic}' as '{group}'"),
        s.subscribe(topic, group),
    )
    .await
}

async fn publish<P: Publisher>(
    p: &P,
    t: &Timing,
    topic: &str,
    messages: Vec<Message>,
) -> Result<(), CaseFailure> {
    let n = messages.len();
    within(
        t.receive_timeout,
        &format!("publishing {n} messages to '{topic}'"),
        p.publish(topic, messages),
    )
    .await
}

async fn next(sub: &mut Subscription, t: &Timing, what: &str) -> Result<Delivery, CaseFailure> {
    match timeout(t.receive_timeout, sub.recv()).await {
        Err(_) => fail(format!(
            "no delivery within {:?} while waiting for {what}",
            t.receive_timeout
        )),
        Ok(None) => fail(format!("the subscription ended while waiting for {what}")),
        Ok(Some(Err(e))) => fail(format!(
            "the subscription failed while waiting for {what}: {e}"
        )),
        Ok(Some(Ok(d))) => Ok(d),
    }
}

/// Nothing may be delivered within the quiet period.
async fn quiet(sub: &mut Subscription, t: &Timing, what: &str) -> Result<(), CaseFailure> {
    match timeout(t.quiet_period, sub.recv()).await {
        Err(_) => Ok(()),
        Ok(None) => fail(format!("the subscription ended unexpectedly ({what})")),
        Ok(Some(Err(e))) => fail(format!("the subscription failed ({what}): {e}")),
        Ok(Some(Ok(d))) => fail(format!("unexpected delivery of {} {what}", describe(&d))),
    }
}

async fn settle(f: SettleFuture, t: &Timing, what: &str) -> Result<(), CaseFailure> {
    within(t.receive_timeout, what, f).await
}

async fn join<T>(h: JoinHandle<Result<T, CaseFailure>>) -> Result<T, CaseFailure> {
    match h.await {
        Ok(r) => r,
        Err(e) => fail(format!("a task of the case panicked or was cancelled: {e}")),
    }
}

/// Checks that `got` is `want` as published: id, key, payload, headers, creation time.
fn same_message(got: &Message, want: &Message) -> Result<(), CaseFailure> {
    let id = want.id();
    ensure!(got.id() == id, "expected message {id}, got {}", got.id());
    ensure!(
        got.key() == want.key(),
        "message {id}: key {:?} delivered, {:?} published",
        got.key(),
        want.key()
    );
    ensure!(
        got.payload() == want.payload(),
        "message {id}: payload of {} bytes delivered differs from the {} bytes published (first bytes {:?} vs {:?})",
        got.payload().len(),
        want.payload().len(),
        &got.payload()[..got.payload().len().min(16)],
        &want.payload()[..want.payload().len().min(16)]
    );
    ensure!(
        got.headers() == want.headers(),
        "message {id}: headers {:?} delivered, {:?} published",
        got.headers(),
        want.headers()
    );
    let skew = got
        .created_at()
        .duration_since(want.created_at())
        .unwrap_or_else(|e| e.duration());
    ensure!(
        skew <= Duration::from_secs(1),
        "message {id}: created_at is off by {skew:?}"
    );
    Ok(())
}

/// One acknowledged delivery, as a consumer task reports it.
#[derive(Debug, Clone)]
struct Got {
    consumer: usize,
    message: Message,
    attempt: u32,
    topic: Arc<str>,
    group: Arc<str>,
}

#[derive(Debug, Clone, Copy)]
enum Decision {
    Ack,
    Retry,
}

type Decide = Arc<dyn Fn(&Delivery) -> Decision + Send + Sync>;
/// (group, message) pairs the stress consumers have retried once.
type Retried = HashSet<(Arc<str>, MessageId)>;
type Reports = mpsc::UnboundedSender<Result<Got, CaseFailure>>;

/// Aborts its tasks when dropped, so a failing case leaves nothing running.
#[derive(Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

/// A consumer task: settles every delivery as `decide` says (ack by default) and reports
/// each acknowledged one. `keep` (the subscriber client) lives as long as the task.
fn spawn_consumer<K: Send + 'static>(
    mut sub: Subscription,
    keep: K,
    consumer: usize,
    decide: Option<Decide>,
    tx: Reports,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let _keep = keep;
        loop {
            let d = match sub.recv().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    let _ = tx.send(fail(format!(
                        "consumer {consumer}: the subscription failed: {e}"
                    )));
                    return;
                }
                None => {
                    let _ = tx.send(fail(format!(
                        "consumer {consumer}: the subscription ended unexpectedly"
                    )));
                    return;
                }
            };
            let decision = decide.as_ref().map_or(Decision::Ack, |f| f(&d));
            let got = Got {
                consumer,
                message: d.message().clone(),
                attempt: d.info().attempt,
                topic: d.info().topic.clone(),
                group: d.info().group.clone(),
            };
            let shown = describe(&d);
            let settled = match decision {
                Decision::Ack => d.ack().await,
                Decision::Retry => d.retry(None).await,
            };
            match (settled, decision) {
                (Err(e), _) => {
                    let _ = tx.send(fail(format!(
                        "consumer {consumer}: settling {shown} failed: {e}"
                    )));
                    return;
                }
                (Ok(()), Decision::Ack) => {
                    if tx.send(Ok(got)).is_err() {
                        return;
                    }
                }
                (Ok(()), Decision::Retry) => {}
            }
        }
    })
}

/// Waits for `n` reports, each within the receive timeout of the previous one.
async fn collect_n(
    rx: &mut mpsc::UnboundedReceiver<Result<Got, CaseFailure>>,
    n: usize,
    t: &Timing,
    what: &str,
) -> Result<Vec<Got>, CaseFailure> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match timeout(t.receive_timeout, rx.recv()).await {
            Err(_) => {
                return fail(format!(
                    "{what}: {} of {n} acknowledged, then nothing for {:?}",
                    out.len(),
                    t.receive_timeout
                ));
            }
            Ok(None) => {
                return fail(format!(
                    "{what}: every consumer stopped after {} of {n}",
                    out.len()
                ));
            }
            Ok(Some(report)) => out.push(report?),
        }
    }
    Ok(out)
}

/// Whatever else arrives within the quiet period (which restarts at each arrival).
async fn drain_quiet(
    rx: &mut mpsc::UnboundedReceiver<Result<Got, CaseFailure>>,
    t: &Timing,
) -> Result<Vec<Got>, CaseFailure> {
    let mut out = Vec::new();
    while let Ok(Some(report)) = timeout(t.quiet_period, rx.recv()).await {
        out.push(report?);
    }
    Ok(out)
}

/// Every message of `sent` acknowledged exactly once by `group` on `topic`, with the exact
/// content published; each of `optional` at most once; nothing else.
fn exactly_once(
    got: &[Got],
    sent: &[Message],
    optional: &HashSet<MessageId>,
    topic: &str,
    group: &str,
    what: &str,
) -> Result<(), CaseFailure> {
    let by_id: HashMap<MessageId, &Message> = sent.iter().map(|m| (m.id(), m)).collect();
    let mut counts: HashMap<MessageId, usize> = HashMap::new();
    for g in got.iter().filter(|g| &*g.group == group) {
        let id = g.message.id();
        ensure!(
            &*g.topic == topic,
            "{what}: message {id} delivered with topic '{}', expected '{topic}'",
            g.topic
        );
        match by_id.get(&id) {
            Some(want) => same_message(&g.message, want)?,
            None => ensure!(
                optional.contains(&id),
                "{what}: group '{group}' got message {id} ({:?}) that was never published to '{topic}'",
                text(&g.message)
            ),
        }
        let n = counts.entry(id).or_default();
        *n += 1;
        ensure!(
            *n == 1,
            "{what}: group '{group}' acknowledged message {id} ({:?}) twice; the second time attempt {} by consumer {}",
            text(&g.message),
            g.attempt,
            g.consumer
        );
    }
    let missing: Vec<String> = sent
        .iter()
        .filter(|m| !counts.contains_key(&m.id()))
        .take(5)
        .map(|m| format!("{} {:?}", m.id(), text(m)))
        .collect();
    ensure!(
        missing.is_empty(),
        "{what}: group '{group}' never got {} of {} messages, e.g. {}",
        sent.iter()
            .filter(|m| !counts.contains_key(&m.id()))
            .count(),
        sent.len(),
        missing.join(", ")
    );
    Ok(())
}

/// Publish/subscribe with exact payloads and headers: every field of a message (id, key,
/// payload, every standard and custom header, creation time) arrives as published, with
/// the right topic, group and message id in its delivery info and attempt 1.
pub async fn publish_subscribe_exact_payloads_and_headers<B: Backend>(backend: &B) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("exact"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let sent = vec![
        Message::new("héllo, wörld")
            .with_key("room-1")
            .with_header(header::CORRELATION_ID, "corr-1")
            .with_header(header::CAUSATION_ID, "cause-1")
            .with_header(header::EVENT_TYPE, "chat.message-posted.v1")
            .with_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .with_header(
                header::TRACEPARENT,
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .with_header(header::TRACESTATE, "vendor=a,other=b")
            .with_header("x-tenant", "ünïcode ✓")
            .with_header("x-empty", ""),
        Message::new(Bytes::from_static(&[0, 1, 2, 254, 255])),
        Message::new("{\"amount\":42}")
            .with_key("room-2")
            .with_header(header::CONTENT_TYPE, "application/json"),
    ];
    publish(&p, &t, &topic, sent.clone()).await?;
    let mut seen = HashSet::new();
    for _ in 0..sent.len() {
        let d = next(&mut sub, &t, "the published messages").await?;
        let m = d.message();
        let Some(want) = sent.iter().find(|s| s.id() == m.id()) else {
            return fail(format!("unexpected {}", describe(&d)));
        };
        ensure!(seen.insert(m.id()), "{} delivered twice", describe(&d));
        same_message(m, want)?;
        let info = d.info();
        ensure!(
            info.message_id == m.id(),
            "delivery info names message {}, the message is {}",
            info.message_id,
            m.id()
        );
        ensure!(
            *info.topic == *topic && *info.group == *group,
            "delivery info says topic '{}' group '{}', expected '{topic}' '{group}'",
            info.topic,
            info.group
        );
        if caps.attempt_count {
            ensure!(
                info.attempt == 1,
                "first delivery of {} has attempt {}, expected 1",
                m.id(),
                info.attempt
            );
        }
        settle(d.ack(), &t, "acknowledging").await?;
    }
    quiet(&mut sub, &t, "after every message was acknowledged").await?;
    let mut skipped = Vec::new();
    if !caps.attempt_count {
        skipped.push("attempt == 1 on first delivery: needs `attempt_count`".to_owned());
    }
    Ok(outcome(skipped))
}

/// Concurrent publishers and competing consumers: four publisher clients publish at once
/// while three consumers of one group compete; every message is acknowledged exactly once,
/// by exactly one consumer.
pub async fn concurrent_publishers_and_competing_consumers<B: Backend>(backend: &B) -> CaseResult {
    const PUBLISHERS: usize = 4;
    const PER_PUBLISHER: usize = 50;
    const CONSUMERS: usize = 3;
    let t = backend.timing();
    let (topic, group) = (unique("compete"), unique("g"));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Tasks::default();
    for c in 0..CONSUMERS {
        let s = subscriber(backend).await?;
        let sub = subscribe(&s, &t, &topic, &group).await?;
        consumers
            .0
            .push(spawn_consumer(sub, s, c, None, tx.clone()));
    }
    let mut publishing = Vec::new();
    for p in 0..PUBLISHERS {
        let client = publisher(backend).await?;
        let topic = topic.clone();
        publishing.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for chunk in 0..PER_PUBLISHER / 5 {
                let batch: Vec<Message> = (0..5)
                    .map(|i| Message::new(format!("p{p}-{}", chunk * 5 + i)))
                    .collect();
                publish(&client, &t, &topic, batch.clone()).await?;
                sent.extend(batch);
            }
            Ok(sent)
        }));
    }
    let mut sent = Vec::new();
    for h in publishing {
        sent.extend(join(h).await?);
    }
    let mut got = collect_n(&mut rx, sent.len(), &t, "competing consumers").await?;
    got.extend(drain_quiet(&mut rx, &t).await?);
    exactly_once(
        &got,
        &sent,
        &HashSet::new(),
        &topic,
        &group,
        "competing consumers",
    )
    .map(|()| Outcome::Passed)
}

/// Many topics at once, and topic isolation: eight topics published to concurrently, one
/// subscription each (all with the same group name); each gets exactly its own messages.
pub async fn many_topics_are_isolated<B: Backend>(backend: &B) -> CaseResult {
    const TOPICS: usize = 8;
    const PER_TOPIC: usize = 10;
    let t = backend.timing();
    let group = unique("g");
    let topics: Vec<String> = (0..TOPICS).map(|i| unique(&format!("iso{i}"))).collect();
    let s = Arc::new(subscriber(backend).await?);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Tasks::default();
    for (i, topic) in topics.iter().enumerate() {
        let sub = subscribe(&*s, &t, topic, &group).await?;
        consumers
            .0
            .push(spawn_consumer(sub, s.clone(), i, None, tx.clone()));
    }
    let p = Arc::new(publisher(backend).await?);
    let mut publishing = Vec::new();
    for topic in &topics {
        let (p, topic) = (p.clone(), topic.clone());
        publishing.push(tokio::spawn(async move {
            let batch: Vec<Message> = (0..PER_TOPIC)
                .map(|i| Message::new(format!("{topic}/{i}")).with_header("mwc-topic", &topic))
                .collect();
            publish(&*p, &t, &topic, batch.clone()).await?;
            Ok(batch)
        }));
    }
    let mut sent = Vec::new();
    for h in publishing {
        sent.push(join(h).await?);
    }
    let mut got = collect_n(&mut rx, TOPICS * PER_TOPIC, &t, "many topics").await?;
    got.extend(drain_quiet(&mut rx, &t).await?);
    for g in &got {
        let from = g.message.headers().get("mwc-topic").unwrap_or("?");
        ensure!(
            from == &*topics[g.consumer] && *g.topic == *topics[g.consumer],
            "topic isolation: the subscription to '{}' got message {} published to '{from}'",
            topics[g.consumer],
            g.message.id()
        );
    }
    for (i, topic) in topics.iter().enumerate() {
        let mine: Vec<Got> = got.iter().filter(|g| g.consumer == i).cloned().collect();
        exactly_once(
            &mine,
            &sent[i],
            &HashSet::new(),
            topic,
            &group,
            "many topics",
        )?;
    }
    Ok(Outcome::Passed)
}

/// Redelivery after retry: `retry(None)` redelivers the same message (same content) with
/// the attempt count one higher each time, and once acknowledged it is not delivered again.
pub async fn retry_redelivers_with_attempt_plus_one<B: Backend>(backend: &B) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("retry"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let m = Message::new("retry me")
        .with_key("k")
        .with_header(header::EVENT_TYPE, "x.v1");
    publish(&p, &t, &topic, vec![m.clone()]).await?;
    let mut d = next(&mut sub, &t, "the first delivery").await?;
    same_message(d.message(), &m)?;
    for round in 1..=3 {
        let before = d.info().attempt;
        settle(d.retry(None), &t, "retrying").await?;
        d = next(&mut sub, &t, &format!("redelivery {round} after retry")).await?;
        same_message(d.message(), &m)?;
        if caps.attempt_count {
            ensure!(
                d.info().attempt == before + 1,
                "after retry the attempt went from {before} to {}, expected {}",
                d.info().attempt,
                before + 1
            );
        }
    }
    settle(d.ack(), &t, "acknowledging").await?;
    quiet(
        &mut sub,
        &t,
        "after the redelivered message was acknowledged",
    )
    .await?;
    if caps.attempt_count {
        Ok(Outcome::Passed)
    } else {
        Ok(Outcome::PartlySkipped(vec![
            "the attempt count rising by one: needs `attempt_count`".into(),
        ]))
    }
}

/// Retry after a delay is not delivered early, while other keys keep flowing: a message
/// retried with `Timing::retry_delay` comes back no sooner; meanwhile messages of other
/// keys are all delivered; with per-key ordering, the next message of the same key waits
/// for it.
pub async fn delayed_retry_is_not_early_and_other_keys_flow<B: Backend>(backend: &B) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    if !caps.delayed_retry {
        return Ok(Outcome::Skipped(
            "needs `delayed_retry` (retry(Some(delay)) honoured without blocking other keys)"
                .into(),
        ));
    }
    let delay = t.retry_delay;
    // Brokers keep delays in whole milliseconds.
    let tolerance = Duration::from_millis(5);
    let (topic, group) = (unique("delay"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let a1 = Message::new("a1").with_key("a");
    publish(&p, &t, &topic, vec![a1.clone()]).await?;
    let d = next(&mut sub, &t, "a1").await?;
    ensure!(
        d.message().id() == a1.id(),
        "expected a1, got {}",
        describe(&d)
    );
    let retried_at = Instant::now();
    settle(d.retry(Some(delay)), &t, "retrying a1 after a delay").await?;
    let a2 = Message::new("a2").with_key("a");
    let others: Vec<Message> = (0..5)
        .map(|i| Message::new(format!("b{i}")).with_key(format!("b{i}")))
        .collect();
    let mut batch = vec![a2.clone()];
    batch.extend(others.iter().cloned());
    publish(&p, &t, &topic, batch).await?;
    let mut a1_back: Option<Duration> = None;
    let mut a2_seen = false;
    let mut others_seen: HashMap<MessageId, Duration> = HashMap::new();
    while a1_back.is_none() || !a2_seen || others_seen.len() < others.len() {
        let d = next(&mut sub, &t, "a1's redelivery, a2 and the other keys").await?;
        let at = retried_at.elapsed();
        let id = d.message().id();
        if id == a1.id() {
            ensure!(
                a1_back.is_none(),
                "a1 redelivered twice (second time {})",
                describe(&d)
            );
            ensure!(
                at + tolerance >= delay,
                "a1 was redelivered {at:?} after retry(Some({delay:?})): early"
            );
            if caps.attempt_count {
                ensure!(
                    d.info().attempt == 2,
                    "a1 redelivered with attempt {}, expected 2",
                    d.info().attempt
                );
            }
            a1_back = Some(at);
        } else if id == a2.id() {
            ensure!(!a2_seen, "a2 delivered twice");
            if caps.per_key_ordering {
                ensure!(
                    a1_back.is_some(),
                    "a2 was delivered {at:?} after a1's retry, before a1 came back: per-key order broken"
                );
            }
            a2_seen = true;
        } else if others.iter().any(|o| o.id() == id) {
            ensure!(
                others_seen.insert(id, at).is_none(),
                "{} delivered twice",
                describe(&d)
            );
        } else {
            return fail(format!("unexpected {}", describe(&d)));
        }
        settle(d.ack(), &t, "acknowledging").await?;
    }
    let a1_back = a1_back.unwrap_or_default();
    if let Some(late) = others_seen.values().find(|at| **at >= a1_back) {
        return fail(format!(
            "another key's message arrived {late:?} after the retry, only after the delayed a1 ({a1_back:?}): other keys must keep flowing while one waits (if the broker is slow, raise Timing::retry_delay, now {delay:?})"
        ));
    }
    quiet(&mut sub, &t, "after everything was acknowledged").await?;
    let mut skipped = Vec::new();
    if !caps.per_key_ordering {
        skipped.push("a2 waiting behind a1 (same key): needs `per_key_ordering`".into());
    }
    if !caps.attempt_count {
        skipped.push("a1 coming back as attempt 2: needs `attempt_count`".into());
    }
    Ok(outcome(skipped))
}

/// Dead letter after exactly N attempts: a failure loop retries a poison message until its
/// third delivery, then dead-letters it. It is delivered exactly 3 times, never again, and
/// the dead-letter topic holds one envelope: the original id, key, payload and headers
/// plus the standard dead-letter headers (original topic, group, reason, attempts, first
/// failure and dead-letter times, handler).
pub async fn dead_letter_after_exactly_n_attempts<B: Backend>(backend: &B) -> CaseResult {
    const N: u32 = 3;
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("dl"), unique("g"));
    let dlq = dead_letter_topic(&topic);
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let mut dead = subscribe(&s, &t, &dlq, &unique("ops")).await?;
    let p = publisher(backend).await?;
    let poison = Message::new("{not json")
        .with_key("order-1")
        .with_header(header::CORRELATION_ID, "corr-dl")
        .with_header(header::EVENT_TYPE, "order.placed.v1");
    publish(&p, &t, &topic, vec![poison.clone()]).await?;
    let reason = "conformance: payload is not valid JSON";
    let mut deliveries = 0u32;
    loop {
        let d = next(
            &mut sub,
            &t,
            &format!("delivery {} of the poison message", deliveries + 1),
        )
        .await?;
        ensure!(
            d.message().id() == poison.id(),
            "unexpected {}",
            describe(&d)
        );
        deliveries += 1;
        let attempt = if caps.attempt_count {
            ensure!(
                d.info().attempt == deliveries,
                "delivery {deliveries} of the poison message has attempt {}",
                d.info().attempt
            );
            d.info().attempt
        } else {
            deliveries
        };
        if attempt < N {
            settle(d.retry(None), &t, "retrying the poison message").await?;
        } else {
            settle(
                d.dead_letter_from(reason, Some("conformance-handler")),
                &t,
                "dead-lettering the poison message",
            )
            .await?;
            break;
        }
    }
    ensure!(
        deliveries == N,
        "delivered {deliveries} times, expected {N}"
    );
    let env = next(&mut dead, &t, &format!("the envelope on '{dlq}'")).await?;
    ensure!(
        *env.info().topic == *dlq,
        "the envelope came from topic '{}', expected '{dlq}'",
        env.info().topic
    );
    let m = env.message();
    ensure!(
        m.id() == poison.id() && m.payload() == poison.payload() && m.key() == poison.key(),
        "the envelope is not the original message (id {}, payload {:?}, key {:?})",
        m.id(),
        text(m),
        m.key()
    );
    let h = m.headers();
    for (name, value) in poison.headers().iter() {
        ensure!(
            h.get(name) == Some(value),
            "the envelope lost the original header {name}={value:?}"
        );
    }
    use dead_letter_header as dl;
    let expect = [
        (dl::ORIGINAL_TOPIC, topic.as_str()),
        (dl::GROUP, group.as_str()),
        (dl::REASON, reason),
        (dl::HANDLER, "conformance-handler"),
    ];
    for (name, value) in expect {
        ensure!(
            h.get(name) == Some(value),
            "envelope header {name} is {:?}, expected {value:?}",
            h.get(name)
        );
    }
    if caps.attempt_count {
        let n = N.to_string();
        ensure!(
            h.get(dl::ATTEMPTS) == Some(n.as_str()),
            "envelope header {} is {:?}, expected {n:?}",
            dl::ATTEMPTS,
            h.get(dl::ATTEMPTS)
        );
    }
    let secs = |name: &str| -> Result<u64, CaseFailure> {
        h.get(name).and_then(|v| v.parse().ok()).ok_or_else(|| {
            CaseFailure::new(format!(
                "envelope header {name} is {:?}, expected seconds since the epoch",
                h.get(name)
            ))
        })
    };
    let (first, at) = (secs(dl::FIRST_FAILURE_AT)?, secs(dl::DEAD_LETTERED_AT)?);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ensure!(
        first <= at && at.abs_diff(now) <= 300,
        "envelope times are off: first failure {first}, dead-lettered {at}, now {now}"
    );
    settle(env.ack(), &t, "acknowledging the envelope").await?;
    quiet(
        &mut sub,
        &t,
        "of the poison message after it was dead-lettered",
    )
    .await?;
    quiet(
        &mut dead,
        &t,
        "on the dead-letter topic after the one envelope",
    )
    .await?;
    if caps.attempt_count {
        Ok(Outcome::Passed)
    } else {
        Ok(Outcome::PartlySkipped(vec![
            "broker attempt counts and the envelope's attempts header: needs `attempt_count` (the case counted deliveries itself)".into(),
        ]))
    }
}

/// Term is never redelivered: a termed message (and an acknowledged one) is not delivered
/// again, neither to the same subscription nor to a new member of the group.
pub async fn term_is_never_redelivered<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    let (topic, group) = (unique("term"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let (termed, acked) = (Message::new("term me"), Message::new("ack me"));
    publish(&p, &t, &topic, vec![termed.clone(), acked.clone()]).await?;
    for _ in 0..2 {
        let d = next(&mut sub, &t, "the two messages").await?;
        if d.message().id() == termed.id() {
            settle(d.term(), &t, "terming").await?;
        } else if d.message().id() == acked.id() {
            settle(d.ack(), &t, "acknowledging").await?;
        } else {
            return fail(format!("unexpected {}", describe(&d)));
        }
    }
    quiet(&mut sub, &t, "after term and ack").await?;
    drop(sub);
    drop(s);
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    quiet(
        &mut sub,
        &t,
        "to a new member of the group after term and ack",
    )
    .await?;
    Ok(Outcome::Passed)
}

/// An unsettled drop is redelivered: a delivery dropped without settling comes back, the
/// same message with the attempt count one higher.
pub async fn dropped_unsettled_is_redelivered<B: Backend>(backend: &B) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("drop"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let m = Message::new("dropped").with_key("k");
    publish(&p, &t, &topic, vec![m.clone()]).await?;
    let d = next(&mut sub, &t, "the message").await?;
    let first = d.info().attempt;
    drop(d);
    let d = next(
        &mut sub,
        &t,
        "the message again after it was dropped unsettled",
    )
    .await?;
    same_message(d.message(), &m)?;
    if caps.attempt_count {
        ensure!(
            d.info().attempt == first + 1,
            "redelivered after a drop with attempt {}, expected {}",
            d.info().attempt,
            first + 1
        );
    }
    settle(d.ack(), &t, "acknowledging").await?;
    quiet(&mut sub, &t, "after the redelivery was acknowledged").await?;
    if caps.attempt_count {
        Ok(Outcome::Passed)
    } else {
        Ok(Outcome::PartlySkipped(vec![
            "the attempt count after a drop: needs `attempt_count`".into(),
        ]))
    }
}

/// Out-of-order ack: with two messages in flight, the later one is acknowledged and the
/// consumer "crashes" (subscription, client and the earlier delivery dropped at once). A
/// new member of the group gets the earlier one back, and not the acknowledged one.
pub async fn out_of_order_ack_then_crash_redelivers_the_earlier<B: Backend>(
    backend: &B,
) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("ooo"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let (m1, m2) = (Message::new("earlier"), Message::new("later"));
    publish(&p, &t, &topic, vec![m1.clone(), m2.clone()]).await?;
    let x = next(&mut sub, &t, "the first of two messages").await?;
    let y = next(
        &mut sub,
        &t,
        "the second of two messages, while the first is unsettled",
    )
    .await?;
    let (earlier, later) = if x.message().id() == m1.id() {
        (x, y)
    } else {
        (y, x)
    };
    ensure!(
        earlier.message().id() == m1.id() && later.message().id() == m2.id(),
        "expected the two published messages, got {} and {}",
        describe(&earlier),
        describe(&later)
    );
    let first = earlier.info().attempt;
    settle(later.ack(), &t, "acknowledging the later message").await?;
    // The crash: everything of this consumer goes at once.
    drop((sub, s, earlier));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let d = next(&mut sub, &t, "the earlier message after the crash").await?;
    same_message(d.message(), &m1)?;
    if caps.attempt_count {
        ensure!(
            d.info().attempt == first + 1,
            "the earlier message came back with attempt {}, expected {}",
            d.info().attempt,
            first + 1
        );
    }
    settle(d.ack(), &t, "acknowledging").await?;
    quiet(
        &mut sub,
        &t,
        "(the acknowledged later message must not come back)",
    )
    .await?;
    Ok(Outcome::Passed)
}

/// Continue after the subscriber closes: three members of a group in turn each acknowledge
/// five messages, hold a sixth and close; a last member gets exactly the rest, including
/// the held ones, and none of the acknowledged ones.
pub async fn continue_after_subscriber_closes<B: Backend>(backend: &B) -> CaseResult {
    const TOTAL: usize = 20;
    let t = backend.timing();
    let (topic, group) = (unique("continue"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let sent: Vec<Message> = (0..TOTAL).map(|i| Message::new(format!("m{i}"))).collect();
    publish(&p, &t, &topic, sent.clone()).await?;
    let mut acked: HashSet<MessageId> = HashSet::new();
    let mut client = s;
    for round in 0..3 {
        for i in 0..5 {
            let d = next(&mut sub, &t, &format!("message {i} of member {round}")).await?;
            ensure!(
                acked.insert(d.message().id()),
                "an acknowledged message came back: {}",
                describe(&d)
            );
            settle(d.ack(), &t, "acknowledging").await?;
        }
        let held = next(&mut sub, &t, &format!("the held message of member {round}")).await?;
        ensure!(
            !acked.contains(&held.message().id()),
            "an acknowledged message came back: {}",
            describe(&held)
        );
        drop((sub, client, held));
        client = subscriber(backend).await?;
        sub = subscribe(&client, &t, &topic, &group).await?;
    }
    let rest: Vec<Message> = sent
        .iter()
        .filter(|m| !acked.contains(&m.id()))
        .cloned()
        .collect();
    let mut seen = HashSet::new();
    for _ in 0..rest.len() {
        let d = next(&mut sub, &t, "the rest of the messages for the last member").await?;
        let id = d.message().id();
        ensure!(
            rest.iter().any(|m| m.id() == id) && seen.insert(id),
            "the last member got {}: acknowledged before, or twice",
            describe(&d)
        );
        settle(d.ack(), &t, "acknowledging").await?;
    }
    quiet(&mut sub, &t, "after the last member acknowledged the rest").await?;
    Ok(Outcome::Passed)
}

/// Concurrent close: eight members of a group, each holding an unsettled delivery, close at
/// the same moment, and a new member gets exactly what they had not acknowledged; then four
/// tasks close one publisher at once while four others publish through it: every close
/// returns, nothing hangs, later publishes fail, and every accepted message is delivered.
pub async fn concurrent_close<B: Backend>(backend: &B) -> CaseResult {
    const TOTAL: usize = 100;
    const MEMBERS: usize = 8;
    let t = backend.timing();
    let (topic, group) = (unique("cclose"), unique("g"));
    let mut members = Vec::new();
    for _ in 0..MEMBERS {
        let s = subscriber(backend).await?;
        let sub = subscribe(&s, &t, &topic, &group).await?;
        members.push((s, sub));
    }
    let p = publisher(backend).await?;
    let sent: Vec<Message> = (0..TOTAL).map(|i| Message::new(format!("m{i}"))).collect();
    publish(&p, &t, &topic, sent.clone()).await?;
    let barrier = Arc::new(tokio::sync::Barrier::new(MEMBERS));
    let mut tasks = Vec::new();
    for (s, mut sub) in members {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut held = Vec::new();
            for i in 0..3 {
                let d = match timeout(t.quiet_period, sub.recv()).await {
                    Err(_) => break,
                    Ok(Some(Ok(d))) => d,
                    Ok(other) => {
                        return fail(format!(
                            "a member's subscription ended or failed: {other:?}"
                        ));
                    }
                };
                if i < 2 {
                    acked.push(d.message().id());
                    settle(d.ack(), &t, "acknowledging").await?;
                } else {
                    held.push(d);
                }
            }
            barrier.wait().await;
            drop((sub, s, held));
            Ok(acked)
        }));
    }
    let mut acked = HashSet::new();
    for h in tasks {
        for id in join(h).await? {
            ensure!(
                acked.insert(id),
                "message {id} was acknowledged by two members"
            );
        }
    }
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let mut seen = HashSet::new();
    for _ in 0..TOTAL - acked.len() {
        let d = next(&mut sub, &t, "the messages left after the concurrent close").await?;
        let id = d.message().id();
        ensure!(
            !acked.contains(&id) && seen.insert(id) && sent.iter().any(|m| m.id() == id),
            "after the concurrent close the new member got {}: acknowledged before, twice, or unknown",
            describe(&d)
        );
        settle(d.ack(), &t, "acknowledging").await?;
    }
    quiet(&mut sub, &t, "after the new member acknowledged the rest").await?;
    close_while_publishing(backend, 4, "cclose-pub").await?;
    Ok(Outcome::Passed)
}

/// Publishes through one publisher from four tasks until it refuses, while `closers` tasks
/// close it at once; checks that every close returns, that no publish begun after a close
/// returned is accepted, and that every accepted message is delivered exactly once.
async fn close_while_publishing<B: Backend>(
    backend: &B,
    closers: usize,
    label: &str,
) -> Result<(), CaseFailure> {
    const WORKERS: usize = 4;
    let t = backend.timing();
    let (topic, group) = (unique(label), unique("g"));
    let s = subscriber(backend).await?;
    let sub = subscribe(&s, &t, &topic, &group).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _consumer = Tasks(vec![spawn_consumer(sub, s, 0, None, tx)]);
    let p = Arc::new(publisher(backend).await?);
    let closed = Arc::new(AtomicBool::new(false));
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (p, topic, closed, started) =
            (p.clone(), topic.clone(), closed.clone(), started_tx.clone());
        workers.push(tokio::spawn(async move {
            let (mut accepted, mut refused) = (Vec::new(), Vec::new());
            for b in 0.. {
                let batch: Vec<Message> = (0..5)
                    .map(|i| Message::new(format!("w{w}-b{b}-{i}")))
                    .collect();
                let after_close = closed.load(Ordering::SeqCst);
                match timeout(t.receive_timeout, p.publish(&topic, batch.clone())).await {
                    Err(_) => {
                        return fail(format!(
                            "a publish during close did not return within {:?}",
                            t.receive_timeout
                        ));
                    }
                    Ok(Ok(())) => {
                        ensure!(
                            !after_close,
                            "a publish begun after close() returned was accepted: a closed publisher must refuse"
                        );
                        accepted.extend(batch);
                        if b == 0 {
                            let _ = started.send(());
                        }
                    }
                    Ok(Err(_)) => {
                        // A refused batch may still be partly published (at least once).
                        refused.extend(batch.iter().map(Message::id));
                        break;
                    }
                }
                tokio::task::yield_now().await;
            }
            Ok((accepted, refused))
        }));
    }
    drop(started_tx);
    for _ in 0..WORKERS {
        ensure!(
            matches!(
                timeout(t.receive_timeout, started.recv()).await,
                Ok(Some(()))
            ),
            "the publishers did not get a first batch through within {:?}",
            t.receive_timeout
        );
    }
    let mut closing = Vec::new();
    for _ in 0..closers {
        let (p, closed) = (p.clone(), closed.clone());
        closing.push(tokio::spawn(async move {
            let r = within(t.receive_timeout, "closing the publisher", p.close()).await;
            closed.store(true, Ordering::SeqCst);
            r
        }));
    }
    for h in closing {
        join(h).await?;
    }
    let (mut accepted, mut optional) = (Vec::new(), HashSet::new());
    for h in workers {
        let (a, r) = join(h).await?;
        accepted.extend(a);
        optional.extend(r);
    }
    let after = timeout(
        t.receive_timeout,
        p.publish(&topic, vec![Message::new("after close")]),
    )
    .await;
    ensure!(
        matches!(after, Ok(Err(_))),
        "publishing through a closed publisher must fail at once; it returned {after:?}"
    );
    let mut missing: HashSet<MessageId> = accepted.iter().map(Message::id).collect();
    let mut got: Vec<Got> = Vec::new();
    while !missing.is_empty() {
        let more = collect_n(&mut rx, missing.len(), &t, "messages accepted before close").await?;
        for g in &more {
            missing.remove(&g.message.id());
        }
        got.extend(more);
    }
    got.extend(drain_quiet(&mut rx, &t).await?);
    exactly_once(
        &got,
        &accepted,
        &optional,
        &topic,
        &group,
        "messages accepted before close",
    )
}

/// Per-key order under several consumers: four keys of 25 messages each, three consumers
/// of one group, some messages retried once. Every delivery of a key is the next one in
/// publish order, and no two deliveries of one key are ever in flight at once.
pub async fn per_key_order_under_several_consumers<B: Backend>(backend: &B) -> CaseResult {
    const KEYS: usize = 4;
    const PER_KEY: u32 = 25;
    const CONSUMERS: usize = 3;
    let (t, caps) = (backend.timing(), backend.capabilities());
    if !caps.per_key_ordering {
        return Ok(Outcome::Skipped("needs `per_key_ordering`".into()));
    }
    #[derive(Default)]
    struct Books {
        in_flight: HashMap<String, usize>,
        next: HashMap<String, u32>,
        retried: HashSet<MessageId>,
        violations: Vec<String>,
    }
    let (topic, group) = (unique("order"), unique("g"));
    let books = Arc::new(Mutex::new(Books::default()));
    fn lock(b: &Mutex<Books>) -> std::sync::MutexGuard<'_, Books> {
        b.lock().unwrap_or_else(|p| p.into_inner())
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Result<(), CaseFailure>>();
    let mut consumers = Tasks::default();
    for c in 0..CONSUMERS {
        let s = subscriber(backend).await?;
        let mut sub = subscribe(&s, &t, &topic, &group).await?;
        let (books, tx) = (books.clone(), tx.clone());
        consumers.0.push(tokio::spawn(async move {
            let _keep = s;
            loop {
                let d = match sub.recv().await {
                    Some(Ok(d)) => d,
                    other => {
                        let _ = tx.send(fail(format!(
                            "consumer {c}: subscription ended or failed: {other:?}"
                        )));
                        return;
                    }
                };
                let key = String::from_utf8_lossy(d.message().key().unwrap_or_default()).into_owned();
                let body = text(d.message());
                let seq: u32 = body
                    .rsplit('-')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
                let retry = {
                    let mut b = lock(&books);
                    if let Some(other) = b.in_flight.insert(key.clone(), c) {
                        b.violations.push(format!(
                            "key {key}: {body} delivered to consumer {c} while consumer {other} held another message of the key"
                        ));
                    }
                    let expect = b.next.get(&key).copied().unwrap_or(0);
                    if seq != expect {
                        b.violations.push(format!(
                            "key {key}: {body} delivered (attempt {}) when {expect} was next",
                            d.info().attempt
                        ));
                    }
                    seq % 7 == 3 && b.retried.insert(d.message().id())
                };
                if seq.is_multiple_of(3) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                // Books first: once settled, the next message of the key may go out at once.
                {
                    let mut b = lock(&books);
                    b.in_flight.remove(&key);
                    if !retry {
                        b.next.insert(key.clone(), seq + 1);
                    }
                }
                let settled = if retry { d.retry(None).await } else { d.ack().await };
                if let Err(e) = settled {
                    let _ = tx.send(fail(format!("consumer {c}: settling {body}: {e}")));
                    return;
                }
                if !retry && tx.send(Ok(())).is_err() {
                    return;
                }
            }
        }));
    }
    let p = publisher(backend).await?;
    let sent: Vec<Message> = (0..PER_KEY)
        .flat_map(|i| {
            (0..KEYS).map(move |k| Message::new(format!("k{k}-{i}")).with_key(format!("k{k}")))
        })
        .collect();
    let (first, second) = sent.split_at(sent.len() / 2);
    publish(&p, &t, &topic, first.to_vec()).await?;
    publish(&p, &t, &topic, second.to_vec()).await?;
    for n in 0..sent.len() {
        match timeout(t.receive_timeout, rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            _ => {
                return fail(format!(
                    "{n} of {} acknowledged, then nothing for {:?}",
                    sent.len(),
                    t.receive_timeout
                ));
            }
        }
    }
    ensure!(
        timeout(t.quiet_period, rx.recv()).await.is_err(),
        "more acknowledgements than messages"
    );
    let b = lock(&books);
    ensure!(
        b.violations.is_empty(),
        "per-key order broken: {}",
        b.violations.join("; ")
    );
    for k in 0..KEYS {
        let got = b.next.get(&format!("k{k}")).copied().unwrap_or(0);
        ensure!(got == PER_KEY, "key k{k}: {got} of {PER_KEY} handled");
    }
    Ok(Outcome::Passed)
}

/// Publisher close flushes: four tasks publish through one publisher while it is closed;
/// close returns, every publish returns, none begun after close returned is accepted, a
/// publish afterwards fails, and every message accepted is delivered exactly once.
pub async fn publisher_close_flushes<B: Backend>(backend: &B) -> CaseResult {
    close_while_publishing(backend, 1, "flush").await?;
    Ok(Outcome::Passed)
}

/// Consumer-group fan-out: three groups of two members each; every group gets every
/// message exactly once.
pub async fn consumer_groups_fan_out<B: Backend>(backend: &B) -> CaseResult {
    const GROUPS: usize = 3;
    const TOTAL: usize = 30;
    let t = backend.timing();
    let topic = unique("fanout");
    let groups: Vec<String> = (0..GROUPS).map(|i| unique(&format!("g{i}"))).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Tasks::default();
    for (i, group) in groups.iter().enumerate() {
        for m in 0..2 {
            let s = subscriber(backend).await?;
            let sub = subscribe(&s, &t, &topic, group).await?;
            consumers
                .0
                .push(spawn_consumer(sub, s, i * 2 + m, None, tx.clone()));
        }
    }
    let p = publisher(backend).await?;
    let sent: Vec<Message> = (0..TOTAL)
        .map(|i| {
            let m = Message::new(format!("m{i}"));
            if i % 2 == 0 {
                m.with_key(format!("k{}", i % 3))
            } else {
                m
            }
        })
        .collect();
    publish(&p, &t, &topic, sent.clone()).await?;
    let mut got = collect_n(&mut rx, GROUPS * TOTAL, &t, "fan-out").await?;
    got.extend(drain_quiet(&mut rx, &t).await?);
    for group in &groups {
        exactly_once(&got, &sent, &HashSet::new(), &topic, group, "fan-out")?;
    }
    Ok(Outcome::Passed)
}

/// A new group reads the backlog: messages published to a topic no group had joined, and
/// to a topic whose only group has not settled them, reach a group created afterwards.
pub async fn new_group_reads_the_backlog<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    if !backend.capabilities().backlog_for_new_groups {
        return Ok(Outcome::Skipped("needs `backlog_for_new_groups`".into()));
    }
    let s = subscriber(backend).await?;
    let p = publisher(backend).await?;
    // A topic no group has joined yet.
    let lonely = unique("backlog");
    let sent: Vec<Message> = (0..5).map(|i| Message::new(format!("old{i}"))).collect();
    publish(&p, &t, &lonely, sent.clone()).await?;
    let late = unique("late");
    let mut sub = subscribe(&s, &t, &lonely, &late).await?;
    drain_exact(
        &mut sub,
        &t,
        &sent,
        "a group joining a topic with a backlog",
    )
    .await?;
    // A topic whose early group holds the messages unsettled.
    let topic = unique("backlog");
    let early = unique("early");
    let mut early_sub = subscribe(&s, &t, &topic, &early).await?;
    let sent: Vec<Message> = (0..5).map(|i| Message::new(format!("old{i}"))).collect();
    publish(&p, &t, &topic, sent.clone()).await?;
    let mut late_sub = subscribe(&s, &t, &topic, &unique("late")).await?;
    drain_exact(
        &mut late_sub,
        &t,
        &sent,
        "a group created after the publishes",
    )
    .await?;
    drain_exact(&mut early_sub, &t, &sent, "the early group").await?;
    Ok(Outcome::Passed)
}

/// Receives and acknowledges exactly `sent` (any order), then nothing more.
async fn drain_exact(
    sub: &mut Subscription,
    t: &Timing,
    sent: &[Message],
    what: &str,
) -> Result<(), CaseFailure> {
    let mut seen = HashSet::new();
    for _ in 0..sent.len() {
        let d = next(sub, t, what).await?;
        let Some(want) = sent.iter().find(|m| m.id() == d.message().id()) else {
            return fail(format!("{what}: unexpected {}", describe(&d)));
        };
        same_message(d.message(), want)?;
        ensure!(seen.insert(want.id()), "{what}: {} twice", describe(&d));
        settle(d.ack(), t, "acknowledging").await?;
    }
    quiet(sub, t, what).await
}

/// Publish after shutdown is an error: after [`Backend::shutdown`], publishing through an
/// existing or a new publisher fails promptly, closing returns, and subscriptions end or
/// fail instead of hanging or delivering.
pub async fn publish_after_shutdown_is_an_error<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    let (topic, group) = (unique("shutdown"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let m = Message::new("before shutdown");
    publish(&p, &t, &topic, vec![m.clone()]).await?;
    drain_exact(&mut sub, &t, &[m], "the message published before shutdown").await?;
    within(
        t.receive_timeout,
        "shutting the backend down",
        backend.shutdown(),
    )
    .await?;
    let r = timeout(
        t.receive_timeout,
        p.publish(&topic, vec![Message::new("after shutdown")]),
    )
    .await;
    ensure!(
        matches!(r, Ok(Err(_))),
        "publishing after shutdown must fail promptly; it returned {r:?}"
    );
    if let Ok(Ok(fresh)) = timeout(t.receive_timeout, backend.publisher()).await {
        let r = timeout(
            t.receive_timeout,
            fresh.publish(&topic, vec![Message::new("after shutdown")]),
        )
        .await;
        ensure!(
            matches!(r, Ok(Err(_))),
            "publishing through a publisher made after shutdown must fail; it returned {r:?}"
        );
    }
    match timeout(t.receive_timeout, sub.recv()).await {
        Err(_) => {
            return fail(format!(
                "a subscription neither ended nor failed within {:?} of shutdown",
                t.receive_timeout
            ));
        }
        Ok(Some(Ok(d))) => return fail(format!("delivered after shutdown: {}", describe(&d))),
        Ok(None | Some(Err(_))) => {}
    }
    ensure!(
        timeout(t.receive_timeout, p.close()).await.is_ok(),
        "closing a publisher after shutdown hung"
    );
    Ok(Outcome::Passed)
}

fn pseudo_random(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// Arbitrary bytes round-trip (undecodable payloads): empty, NUL, invalid UTF-8, every
/// byte value, control characters, truncated JSON, a byte-order mark, 128 KiB of noise,
/// and a binary key all arrive byte for byte.
pub async fn arbitrary_bytes_round_trip<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    let (topic, group) = (unique("bytes"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0],
        vec![0xff, 0xfe, 0xfd, 0xc3, 0x28],
        (0..=255).collect(),
        b"a\0b\r\n\x1b[31m\t\x7f".to_vec(),
        b"{\"amount\":".to_vec(),
        vec![0xef, 0xbb, 0xbf, b'x'],
        pseudo_random(128 * 1024),
    ];
    let mut sent: Vec<Message> = payloads.into_iter().map(Message::new).collect();
    sent.push(Message::new("binary key").with_key(Bytes::from_static(&[0xff, 0x00, 0x80])));
    publish(&p, &t, &topic, sent.clone()).await?;
    drain_exact(&mut sub, &t, &sent, "arbitrary payloads").await?;
    Ok(Outcome::Passed)
}

/// Poison and undecodable payloads: a handler dead-letters a payload it cannot decode on
/// its first delivery; every other message (including the same key's later ones) is still
/// handled, in key order where the backend keeps it, and the dead-letter topic holds just
/// the poison message, byte for byte.
pub async fn poison_message_dead_lettered_does_not_block<B: Backend>(backend: &B) -> CaseResult {
    let (t, caps) = (backend.timing(), backend.capabilities());
    let (topic, group) = (unique("poison"), unique("g"));
    let dlq = dead_letter_topic(&topic);
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let mut dead = subscribe(&s, &t, &dlq, &unique("ops")).await?;
    let p = publisher(backend).await?;
    let mut poison_payload = vec![0xff, 0xfe];
    poison_payload.extend_from_slice(b"{not json");
    let poison = Message::new(poison_payload).with_key("k");
    let mut sent = vec![Message::new("good-k0").with_key("k"), poison.clone()];
    sent.extend((1..=5).map(|i| Message::new(format!("good-k{i}")).with_key("k")));
    sent.extend((0..3).map(|i| Message::new(format!("good-j{i}")).with_key("j")));
    sent.push(Message::new("good-n0"));
    publish(&p, &t, &topic, sent.clone()).await?;
    let goods = sent.len() - 1;
    let (mut handled, mut poisoned) = (Vec::new(), false);
    while handled.len() < goods || !poisoned {
        let d = next(&mut sub, &t, "the good messages and the poison one").await?;
        if d.message().payload().starts_with(b"good-") {
            let body = text(d.message());
            ensure!(!handled.contains(&body), "{} handled twice", describe(&d));
            if caps.per_key_ordering && body.starts_with("good-k") && body != "good-k0" {
                ensure!(
                    poisoned,
                    "{body} was delivered before the earlier poison message of its key was settled"
                );
            }
            handled.push(body);
            settle(d.ack(), &t, "acknowledging").await?;
        } else {
            ensure!(
                d.message().id() == poison.id() && !poisoned,
                "unexpected {}",
                describe(&d)
            );
            settle(
                d.dead_letter("conformance: undecodable payload"),
                &t,
                "dead-lettering the poison message",
            )
            .await?;
            poisoned = true;
        }
    }
    if caps.per_key_ordering {
        let k_order: Vec<&String> = handled.iter().filter(|b| b.starts_with("good-k")).collect();
        let want: Vec<String> = (0..=5).map(|i| format!("good-k{i}")).collect();
        ensure!(
            k_order
                .iter()
                .map(|s| s.as_str())
                .eq(want.iter().map(String::as_str)),
            "key k handled in the order {k_order:?}"
        );
    }
    let env = next(&mut dead, &t, "the poison message's envelope").await?;
    ensure!(
        env.message().id() == poison.id() && env.message().payload() == poison.payload(),
        "the dead-letter topic got {} instead of the poison message",
        describe(&env)
    );
    settle(env.ack(), &t, "acknowledging the envelope").await?;
    quiet(&mut sub, &t, "after everything was handled").await?;
    quiet(
        &mut dead,
        &t,
        "on the dead-letter topic after the one envelope",
    )
    .await?;
    if caps.per_key_ordering {
        Ok(Outcome::Passed)
    } else {
        Ok(Outcome::PartlySkipped(vec![
            "key order around the poison message: needs `per_key_ordering`".into(),
        ]))
    }
}

/// Two distinct messages with identical payloads are both processed: three messages with
/// the same key, payload and headers (two in one batch, one alone) arrive as three
/// deliveries with three ids.
pub async fn identical_payloads_are_distinct_messages<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    let (topic, group) = (unique("same"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let make = || {
        Message::new("ok")
            .with_key("same")
            .with_header(header::EVENT_TYPE, "ok.v1")
    };
    let sent = vec![make(), make(), make()];
    publish(&p, &t, &topic, sent[..2].to_vec()).await?;
    publish(&p, &t, &topic, sent[2..].to_vec()).await?;
    drain_exact(&mut sub, &t, &sent, "three messages with one payload").await?;
    Ok(Outcome::Passed)
}

/// Survives a broker restart (persistent backends): of ten messages, three are acknowledged
/// before [`Backend::restart`]; after it, the group gets exactly the other seven, and
/// publishing works again.
pub async fn survives_a_broker_restart<B: Backend>(backend: &B) -> CaseResult {
    let t = backend.timing();
    if !backend.capabilities().persistent {
        return Ok(Outcome::Skipped(
            "needs `persistent` (accepted messages survive a broker restart)".into(),
        ));
    }
    let (topic, group) = (unique("restart"), unique("g"));
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let p = publisher(backend).await?;
    let sent: Vec<Message> = (0..10).map(|i| Message::new(format!("m{i}"))).collect();
    publish(&p, &t, &topic, sent.clone()).await?;
    let mut acked = HashSet::new();
    for _ in 0..3 {
        let d = next(&mut sub, &t, "a message before the restart").await?;
        acked.insert(d.message().id());
        settle(d.ack(), &t, "acknowledging").await?;
    }
    drop((sub, s, p));
    let restarted = within(
        t.receive_timeout * 4,
        "restarting the broker",
        backend.restart(),
    )
    .await?;
    ensure!(
        restarted,
        "the backend declares `persistent` but its harness cannot restart the broker: implement Backend::restart"
    );
    let s = subscriber(backend).await?;
    let mut sub = subscribe(&s, &t, &topic, &group).await?;
    let rest: Vec<Message> = sent
        .into_iter()
        .filter(|m| !acked.contains(&m.id()))
        .collect();
    drain_exact(
        &mut sub,
        &t,
        &rest,
        "the unacknowledged messages after the restart",
    )
    .await?;
    let p = publisher(backend).await?;
    let m = Message::new("after restart");
    publish(&p, &t, &topic, vec![m.clone()]).await?;
    drain_exact(&mut sub, &t, &[m], "a message published after the restart").await?;
    Ok(Outcome::Passed)
}

/// The stress count: [`STRESS_ENV`] if set, else [`DEFAULT_STRESS_COUNT`].
///
/// ```
/// // With MESHWORK_CONFORMANCE_STRESS unset:
/// # if std::env::var("MESHWORK_CONFORMANCE_STRESS").is_err() {
/// assert_eq!(meshwork_event_bus::conformance::stress_count()?, 2_000);
/// # }
/// # Ok::<(), meshwork_event_bus::conformance::CaseFailure>(())
/// ```
pub fn stress_count() -> Result<usize, CaseFailure> {
    match std::env::var(STRESS_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_STRESS_COUNT),
        Err(std::env::VarError::NotUnicode(v)) => fail(format!(
            "{STRESS_ENV} must be a positive whole number, got {v:?}"
        )),
        Ok(v) => match v.trim().replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => fail(format!(
                "{STRESS_ENV} must be a positive whole number, got {v:?}"
            )),
        },
    }
}

/// Stress: [`stress_count`] messages over sixteen keys from four publishers, consumed by a
/// group of four members and a second group of one, with about one in a hundred retried
/// once. Every message is counted: acknowledged exactly once by each group.
pub async fn stress<B: Backend>(backend: &B) -> CaseResult {
    const PUBLISHERS: usize = 4;
    const BATCH: usize = 100;
    let t = backend.timing();
    let count = stress_count()?;
    let topic = unique("stress");
    let groups = [unique("workers"), unique("audit")];
    let retried: Arc<Mutex<Retried>> = Arc::default();
    let decide: Decide = {
        let retried = retried.clone();
        Arc::new(move |d: &Delivery| {
            let seq: usize = text(d.message())
                .rsplit('-')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(1);
            let mut r = retried.lock().unwrap_or_else(|p| p.into_inner());
            if seq.is_multiple_of(97) && r.insert((d.info().group.clone(), d.message().id())) {
                Decision::Retry
            } else {
                Decision::Ack
            }
        })
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut consumers = Tasks::default();
    for (g, group) in groups.iter().enumerate() {
        for m in 0..[4, 1][g] {
            let s = subscriber(backend).await?;
            let sub = subscribe(&s, &t, &topic, group).await?;
            consumers.0.push(spawn_consumer(
                sub,
                s,
                g * 10 + m,
                Some(decide.clone()),
                tx.clone(),
            ));
        }
    }
    let started = Instant::now();
    let mut publishing = Vec::new();
    for w in 0..PUBLISHERS {
        let client = publisher(backend).await?;
        let topic = topic.clone();
        let mine: Vec<usize> = (0..count).filter(|i| i % PUBLISHERS == w).collect();
        publishing.push(tokio::spawn(async move {
            let mut sent = Vec::with_capacity(mine.len());
            for chunk in mine.chunks(BATCH) {
                let batch: Vec<Message> = chunk
                    .iter()
                    .map(|i| Message::new(format!("s-{i}")).with_key(format!("k{}", i % 16)))
                    .collect();
                publish(&client, &t, &topic, batch.clone()).await?;
                sent.extend(batch);
            }
            Ok(sent)
        }));
    }
    let mut sent = Vec::with_capacity(count);
    for h in publishing {
        sent.extend(join(h).await?);
    }
    let published = started.elapsed();
    let mut got = collect_n(&mut rx, count * groups.len(), &t, "stress").await?;
    let handled = started.elapsed();
    got.extend(drain_quiet(&mut rx, &t).await?);
    for group in &groups {
        exactly_once(&got, &sent, &HashSet::new(), &topic, group, "stress")?;
    }
    println!(
        "stress on `{}`: {count} messages published in {published:?}, handled by {} groups in {handled:?} ({:.0} deliveries/s)",
        backend.name(),
        groups.len(),
        (count * groups.len()) as f64 / handled.as_secs_f64().max(1e-9)
    );
    Ok(Outcome::Passed)
}
