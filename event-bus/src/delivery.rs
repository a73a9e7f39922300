//! Deliveries and their settlement.
//!
//! Settlement is type-state: [`Delivery::ack`], [`Delivery::retry`],
//! [`Delivery::dead_letter`] and [`Delivery::term`] consume the delivery, so settling twice
//! does not compile. A delivery dropped unsettled is handed back to its backend, which
//! redelivers it: nothing is acknowledged before it is handled.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use crate::{BusError, Message, MessageId};

/// Where a delivery sits in its source, as the backend counts.
///
/// ```
/// use meshwork_event_bus::Position;
///
/// assert_eq!(Position::Sequence(42).to_string(), "#42");
/// assert_eq!(Position::Partition { partition: 3, offset: 7 }.to_string(), "3@7");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Position {
    /// A sequence number in one log (memory, NATS JetStream, a RabbitMQ delivery tag).
    Sequence(u64),
    /// An offset in one partition (Kafka).
    Partition {
        /// The partition.
        partition: i32,
        /// The offset in it.
        offset: i64,
    },
    /// A Redis stream entry id.
    StreamId {
        /// Milliseconds part.
        millis: u64,
        /// Sequence part.
        seq: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Sequence(n) => write!(f, "#{n}"),
            Position::Partition { partition, offset } => write!(f, "{partition}@{offset}"),
            Position::StreamId { millis, seq } => write!(f, "{millis}-{seq}"),
        }
    }
}

/// Facts about one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryInfo {
    /// The id of the message delivered.
    pub message_id: MessageId,
    /// The topic it came from.
    pub topic: Arc<str>,
    /// The consumer group it was delivered to.
    pub group: Arc<str>,
    /// Which delivery of this message to this group this is: 1 the first time.
    pub attempt: u32,
    /// Where it sits in its source.
    pub position: Position,
    /// The backend's own handle for settling it.
    pub token: u64,
}

impl DeliveryInfo {
    /// Facts for a backend to attach to a delivery it builds.
    pub fn new(
        message_id: MessageId,
        topic: Arc<str>,
        group: Arc<str>,
        attempt: u32,
        position: Position,
        token: u64,
    ) -> Self {
        DeliveryInfo {
            message_id,
            topic,
            group,
            attempt,
            position,
            token,
        }
    }
}

/// The future of a settlement: ready at once for in-process backends (no allocation), boxed
/// for brokers that answer over the network.
#[must_use = "a settlement does nothing until awaited"]
pub struct SettleFuture {
    inner: SettleInner,
}

enum SettleInner {
    Ready(Option<Result<(), BusError>>),
    Boxed(Pin<Box<dyn Future<Output = Result<(), BusError>> + Send>>),
}

impl SettleFuture {
    /// An already finished settlement.
    pub fn ready(result: Result<(), BusError>) -> Self {
        SettleFuture {
            inner: SettleInner::Ready(Some(result)),
        }
    }

    /// A settlement still under way.
    pub fn boxed(future: impl Future<Output = Result<(), BusError>> + Send + 'static) -> Self {
        SettleFuture {
            inner: SettleInner::Boxed(Box::pin(future)),
        }
    }
}

impl Future for SettleFuture {
    type Output = Result<(), BusError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.inner {
            SettleInner::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(
                BusError::Closed("settlement (polled after completion)"),
            ))),
            SettleInner::Boxed(future) => future.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for SettleFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            SettleInner::Ready(_) => "SettleFuture::Ready",
            SettleInner::Boxed(_) => "SettleFuture::Boxed",
        })
    }
}

/// What a backend does when a delivery is settled. Backend authors implement it; users call
/// the settlement methods of [`Delivery`].
pub trait Acknowledger: Send + Sync + 'static {
    /// Handled: never deliver it to this group again.
    fn ack(&self, info: &DeliveryInfo) -> SettleFuture;
    /// Deliver it again, after `delay` if given (without blocking other keys meanwhile).
    fn nack(&self, info: &DeliveryInfo, delay: Option<Duration>) -> SettleFuture;
    /// Give up on it without a dead letter: never deliver it to this group again.
    fn term(&self, info: &DeliveryInfo) -> SettleFuture;
    /// Publish `envelope` (built by [`dead_letter_envelope`]) to the dead-letter topic, then
    /// settle the delivery as handled.
    fn dead_letter(&self, info: &DeliveryInfo, envelope: Message) -> SettleFuture;
    /// The delivery was dropped unsettled: make it deliverable again. Must not block.
    fn release(&self, info: &DeliveryInfo);
}

/// Headers of a dead-letter envelope.
pub mod dead_letter_header {
    /// The topic the message was consumed from.
    pub const ORIGINAL_TOPIC: &str = "dead-letter-original-topic";
    /// The consumer group that gave up on it.
    pub const GROUP: &str = "dead-letter-group";
    /// Why it was dead-lettered (the last error).
    pub const REASON: &str = "dead-letter-reason";
    /// Deliveries it had.
    pub const ATTEMPTS: &str = "dead-letter-attempts";
    /// When it first failed (seconds since the Unix epoch).
    pub const FIRST_FAILURE_AT: &str = "dead-letter-first-failure-at";
    /// When it was dead-lettered (seconds since the Unix epoch).
    pub const DEAD_LETTERED_AT: &str = "dead-letter-at";
    /// The handler that gave up, when known.
    pub const HANDLER: &str = "dead-letter-handler";
    /// Set by the failure policy on a message's first failure (seconds since the Unix epoch).
    pub const FIRST_FAILURE_MARK: &str = "first-failure-at";
}

/// The default dead-letter topic of `topic`: `<topic>.dlq`.
///
/// ```
/// assert_eq!(meshwork_event_bus::dead_letter_topic("chat.messages"), "chat.messages.dlq");
/// ```
pub fn dead_letter_topic(topic: &str) -> String {
    format!("{topic}.dlq")
}

fn epoch_secs(t: SystemTime) -> String {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_else(|_| "0".into())
}

/// The standard dead-letter envelope: the original message (same id, key, payload and
/// headers) plus headers naming the original topic, group, reason, attempts, first failure
/// time and handler. Every backend dead-letters with this envelope, so one redrive tool
/// works for all.
///
/// ```
/// use meshwork_event_bus::{DeliveryInfo, Message, Position, dead_letter_envelope};
///
/// let msg = Message::new("poison");
/// let info = DeliveryInfo::new(msg.id(), "orders".into(), "billing".into(), 5, Position::Sequence(9), 0);
/// let env = dead_letter_envelope(&msg, &info, "invalid amount", Some("charge"));
/// assert_eq!(env.id(), msg.id());
/// assert_eq!(env.headers().get("dead-letter-original-topic"), Some("orders"));
/// assert_eq!(env.headers().get("dead-letter-attempts"), Some("5"));
/// ```
pub fn dead_letter_envelope(
    message: &Message,
    info: &DeliveryInfo,
    reason: &str,
    handler: Option<&str>,
) -> Message {
    use dead_letter_header as h;
    let now = SystemTime::now();
    let mut env = message.clone();
    let first = message
        .headers()
        .get(h::FIRST_FAILURE_MARK)
        .map(str::to_owned)
        .unwrap_or_else(|| epoch_secs(now));
    let headers = env.headers_mut();
    headers.insert(h::ORIGINAL_TOPIC, &*info.topic);
    headers.insert(h::GROUP, &*info.group);
    headers.insert(h::REASON, reason);
    headers.insert(h::ATTEMPTS, info.attempt.to_string());
    headers.insert(h::FIRST_FAILURE_AT, first);
    headers.insert(h::DEAD_LETTERED_AT, epoch_secs(now));
    if let Some(handler) = handler {
        headers.insert(h::HANDLER, handler);
    }
    env
}

/// One message delivered to one consumer of a group; settle it exactly once.
///
/// ```
/// use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// let mut sub = bus.subscribe("orders", "billing").await?;
/// bus.publish("orders", vec![Message::new("order 1")]).await?;
/// let delivery = sub.recv().await.expect("a delivery")?;
/// assert_eq!(delivery.info().attempt, 1);
/// delivery.ack().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "an unsettled delivery is redelivered when dropped"]
pub struct Delivery {
    message: Message,
    info: DeliveryInfo,
    acker: Option<Arc<dyn Acknowledger>>,
}

impl Delivery {
    /// A delivery settled through `acker` (for backend authors).
    pub fn new(message: Message, info: DeliveryInfo, acker: Arc<dyn Acknowledger>) -> Self {
        Delivery {
            message,
            info,
            acker: Some(acker),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, mutably (a handler may add headers before passing it on).
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }

    /// Topic, group, attempt and position.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    fn take(&mut self) -> Arc<dyn Acknowledger> {
        // Only `Drop` leaves the acker empty, and nothing runs after it.
        self.acker
            .take()
            .expect("a delivery holds its acknowledger until settled")
    }

    /// Handled: it will not be delivered to this group again.
    pub fn ack(mut self) -> SettleFuture {
        let acker = self.take();
        acker.ack(&self.info)
    }

    /// Deliver it again, at once or after `after`; the attempt count rises by one.
    pub fn retry(mut self, after: Option<Duration>) -> SettleFuture {
        let acker = self.take();
        acker.nack(&self.info, after)
    }

    /// Send it to the dead-letter topic with the standard envelope, then settle it.
    pub fn dead_letter(self, reason: &str) -> SettleFuture {
        self.dead_letter_from(reason, None)
    }

    /// Like [`dead_letter`](Self::dead_letter), naming the handler that gave up.
    pub fn dead_letter_from(mut self, reason: &str, handler: Option<&str>) -> SettleFuture {
        let acker = self.take();
        let envelope = dead_letter_envelope(&self.message, &self.info, reason, handler);
        acker.dead_letter(&self.info, envelope)
    }

    /// Give up without a dead letter: it will not be delivered to this group again.
    pub fn term(mut self) -> SettleFuture {
        let acker = self.take();
        acker.term(&self.info)
    }

    /// Splits off the message, keeping the right to settle: for handlers that consume the
    /// message but must settle afterwards.
    pub fn into_parts(mut self) -> (Message, Settlement) {
        let acker = self.take();
        let message = std::mem::replace(&mut self.message, Message::new(bytes::Bytes::new()));
        (
            message,
            Settlement {
                info: self.info.clone(),
                acker: Some(acker),
            },
        )
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.release(&self.info);
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.message.id())
            .field("info", &self.info)
            .field("settled", &self.acker.is_none())
            .finish()
    }
}

/// The right to settle a delivery whose message was taken with [`Delivery::into_parts`].
/// Dropped unsettled, the message is redelivered.
#[must_use = "an unsettled delivery is redelivered when dropped"]
pub struct Settlement {
    info: DeliveryInfo,
    acker: Option<Arc<dyn Acknowledger>>,
}

impl Settlement {
    /// Topic, group, attempt and position.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    fn take(&mut self) -> Arc<dyn Acknowledger> {
        self.acker
            .take()
            .expect("a settlement holds its acknowledger until used")
    }

    /// See [`Delivery::ack`].
    pub fn ack(mut self) -> SettleFuture {
        let acker = self.take();
        acker.ack(&self.info)
    }

    /// See [`Delivery::retry`].
    pub fn retry(mut self, after: Option<Duration>) -> SettleFuture {
        let acker = self.take();
        acker.nack(&self.info, after)
    }

    /// See [`Delivery::dead_letter_from`]; `message` is the message taken from the delivery.
    pub fn dead_letter(
        mut self,
        message: &Message,
        reason: &str,
        handler: Option<&str>,
    ) -> SettleFuture {
        let acker = self.take();
        let envelope = dead_letter_envelope(message, &self.info, reason, handler);
        acker.dead_letter(&self.info, envelope)
    }

    /// See [`Delivery::term`].
    pub fn term(mut self) -> SettleFuture {
        let acker = self.take();
        acker.term(&self.info)
    }
}

impl Drop for Settlement {
    fn drop(&mut self) {
        if let Some(acker) = self.acker.take() {
            acker.release(&self.info);
        }
    }
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("info", &self.info)
            .field("settled", &self.acker.is_none())
            .finish()
    }
}
