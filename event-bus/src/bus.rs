//! The traits every backend implements.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::{BusError, Delivery, Message};

/// Sends messages to a topic.
///
/// `publish` returns only when the backend has durably accepted every message (a Kafka
/// delivery report with `acks=all`, a RabbitMQ publisher confirm, a Redis `XADD` reply, a
/// JetStream `PubAck`; for the memory backend, a place in every group's queue). If some
/// messages of a batch are not accepted, the error is [`BusError::Partial`] naming them; the
/// others were accepted. Dropping the future before it finishes may leave some messages
/// published: publish is at-least-once, and consumers dedupe by [`Message::id`].
///
/// ```
/// use meshwork_event_bus::{MemoryBus, Message, Publisher};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// bus.publish("audit", vec![Message::new("user 7 logged in")]).await?;
/// # Ok(())
/// # }
/// ```
pub trait Publisher: Send + Sync {
    /// Publishes `messages` to `topic`, in order.
    fn publish(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> impl Future<Output = Result<(), BusError>> + Send;

    /// Flushes what is in flight and refuses further publishes.
    fn close(&self) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// Receives messages of a topic as a member of a consumer group.
///
/// Members of one group share the work (each message goes to one of them); distinct groups
/// each get every message. The topic and group are created when missing, unless the backend
/// was told not to.
///
/// ```
/// use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// let mut billing = bus.subscribe("orders", "billing").await?;
/// let mut shipping = bus.subscribe("orders", "shipping").await?;
/// bus.publish("orders", vec![Message::new("order 1")]).await?;
/// billing.recv().await.unwrap()?.ack().await?;
/// shipping.recv().await.unwrap()?.ack().await?;
/// # Ok(())
/// # }
/// ```
pub trait Subscriber: Send + Sync {
    /// Joins `group` on `topic`.
    fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> impl Future<Output = Result<Subscription, BusError>> + Send;
}

/// A stream of deliveries for one member of a consumer group.
///
/// Dropping it stops fetching; deliveries already handed out stay valid and must still be
/// settled (or are redelivered when dropped).
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Result<Delivery, BusError>> + Send>>,
}

impl Subscription {
    /// Wraps a backend's stream of deliveries (for backend authors).
    pub fn new(stream: impl Stream<Item = Result<Delivery, BusError>> + Send + 'static) -> Self {
        Subscription {
            inner: Box::pin(stream),
        }
    }

    /// The next delivery; `None` once the subscription has ended (the bus closed).
    pub async fn recv(&mut self) -> Option<Result<Delivery, BusError>> {
        std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, BusError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// A boxed future, as the object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe twin of [`Publisher`], for backends chosen at run time
/// (`Arc<dyn DynPublisher>`); every `Publisher` is one.
///
/// ```
/// use meshwork_event_bus::{DynPublisher, MemoryBus, Message};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let publisher: Arc<dyn DynPublisher> = Arc::new(MemoryBus::new());
/// publisher.publish_dyn("audit", vec![Message::new("x")]).await?;
/// # Ok(())
/// # }
/// ```
pub trait DynPublisher: Send + Sync {
    /// See [`Publisher::publish`].
    fn publish_dyn<'a>(
        &'a self,
        topic: &'a str,
        messages: Vec<Message>,
    ) -> BoxFuture<'a, Result<(), BusError>>;

    /// See [`Publisher::close`].
    fn close_dyn(&self) -> BoxFuture<'_, Result<(), BusError>>;
}

impl<P: Publisher> DynPublisher for P {
    fn publish_dyn<'a>(
        &'a self,
        topic: &'a str,
        messages: Vec<Message>,
    ) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.publish(topic, messages))
    }

    fn close_dyn(&self) -> BoxFuture<'_, Result<(), BusError>> {
        Box::pin(self.close())
    }
}

/// The object-safe twin of [`Subscriber`]; every `Subscriber` is one.
pub trait DynSubscriber: Send + Sync {
    /// See [`Subscriber::subscribe`].
    fn subscribe_dyn<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, BusError>>;
}

impl<S: Subscriber> DynSubscriber for S {
    fn subscribe_dyn<'a>(
        &'a self,
        topic: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Subscription, BusError>> {
        Box::pin(self.subscribe(topic, group))
    }
}

/// What a backend guarantees; the conformance suite tests each declared capability, and a
/// checked-in list keeps a backend from passing by declaring less.
///
/// ```
/// let caps = meshwork_event_bus::MemoryBus::capabilities();
/// assert!(caps.per_key_ordering && caps.delayed_retry);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Messages with one key reach a group's handlers one at a time, in publish order.
    pub per_key_ordering: bool,
    /// Accepted messages survive a broker restart.
    pub persistent: bool,
    /// A group created after messages were published still receives them.
    pub backlog_for_new_groups: bool,
    /// `retry(Some(delay))` is honoured without blocking other keys.
    pub delayed_retry: bool,
    /// Delivery attempts are counted by the broker.
    pub attempt_count: bool,
}
