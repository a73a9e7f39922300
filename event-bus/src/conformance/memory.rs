//! The harness for the in-memory backend, and a publisher client for in-process buses.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

use crate::{BusError, Capabilities, MemoryBus, Message, Publisher};

use super::{Backend, Timing};

/// A publisher *client* over a shared publisher: [`close`](Publisher::close) waits for this
/// client's publishes in flight, then refuses its later ones, and leaves the shared
/// publisher open.
///
/// An in-process bus such as [`MemoryBus`] is its own broker, so its `close` shuts the
/// whole bus; a conformance harness gives out `PublisherClient`s so that closing one
/// publisher behaves as closing one connection of a networked backend.
///
/// ```
/// use meshwork_event_bus::conformance::PublisherClient;
/// use meshwork_event_bus::{MemoryBus, Message, Publisher};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// let client = PublisherClient::new(bus.clone());
/// client.close().await?;
/// assert!(client.publish("t", vec![Message::new("x")]).await.is_err());
/// bus.publish("t", vec![Message::new("x")]).await?; // the bus is still open
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PublisherClient<P> {
    inner: P,
    state: Arc<ClientState>,
}

#[derive(Debug, Default)]
struct ClientState {
    in_flight: AtomicUsize,
    closed: AtomicBool,
    idle: Notify,
}

struct InFlight<'a>(&'a ClientState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl<P: Publisher> PublisherClient<P> {
    /// A client publishing through `inner`.
    pub fn new(inner: P) -> Self {
        PublisherClient {
            inner,
            state: Arc::default(),
        }
    }

    /// The shared publisher.
    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: Publisher> Publisher for PublisherClient<P> {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), BusError> {
        // Counted before the closed check, and close sets the flag before it waits, so a
        // publish either sees the flag or is waited for (both use SeqCst).
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let _in_flight = InFlight(&self.state);
        if self.state.closed.load(Ordering::SeqCst) {
            return Err(BusError::Closed("publisher client"));
        }
        self.inner.publish(topic, messages).await
    }

    async fn close(&self) -> Result<(), BusError> {
        self.state.closed.store(true, Ordering::SeqCst);
        loop {
            let idle = self.state.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.state.in_flight.load(Ordering::SeqCst) == 0 {
                return Ok(());
            }
            idle.await;
        }
    }
}

/// The conformance harness of [`MemoryBus`]: one bus per case, publisher clients over it
/// ([`PublisherClient`]), the bus itself as subscriber, [`MemoryBus::close`] as shutdown,
/// and short timings (everything is in process).
///
/// ```
/// use meshwork_event_bus::conformance::{Backend, MemoryBackend};
///
/// let backend = MemoryBackend::new();
/// assert_eq!(backend.capabilities(), meshwork_event_bus::MemoryBus::capabilities());
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    bus: MemoryBus,
}

impl MemoryBackend {
    /// A harness over a new default bus.
    pub fn new() -> Self {
        MemoryBackend::default()
    }

    /// A harness over `bus` (to run the suite with a non-default config).
    pub fn with_bus(bus: MemoryBus) -> Self {
        MemoryBackend { bus }
    }

    /// The bus under test.
    pub fn bus(&self) -> &MemoryBus {
        &self.bus
    }
}

impl Backend for MemoryBackend {
    type Publisher = PublisherClient<MemoryBus>;
    type Subscriber = MemoryBus;

    fn name(&self) -> &str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        MemoryBus::capabilities()
    }

    async fn publisher(&self) -> Result<Self::Publisher, BusError> {
        Ok(PublisherClient::new(self.bus.clone()))
    }

    async fn subscriber(&self) -> Result<Self::Subscriber, BusError> {
        Ok(self.bus.clone())
    }

    async fn shutdown(&self) -> Result<(), BusError> {
        self.bus.close().await
    }

    fn timing(&self) -> Timing {
        Timing::default()
            .receive_timeout(Duration::from_secs(10))
            .quiet_period(Duration::from_millis(100))
            .retry_delay(Duration::from_millis(300))
    }
}
