//! # meshwork-event-bus
//!
//! One publish/subscribe API that never loses a message, over an in-memory bus (the embedded
//! default) and real brokers.
//!
//! The safe thing is the default:
//! * [`Publisher::publish`] returns only once the backend has durably accepted the messages.
//! * Every [`Delivery`] must be settled exactly once: [`ack`](Delivery::ack),
//!   [`retry`](Delivery::retry) (at once or after a delay), [`dead_letter`](Delivery::dead_letter)
//!   or [`term`](Delivery::term). Each consumes the delivery, so settling twice does not
//!   compile; a delivery dropped unsettled is redelivered.
//! * Every delivery carries its attempt count, topic, group and source position.
//! * Members of a consumer group share the work; distinct groups each get every message.
//! * Topics and groups are created when missing.
//!
//! ## Example
//! ```
//! use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshwork_event_bus::BusError> {
//! let bus = MemoryBus::new();
//! let mut store = bus.subscribe("chat.messages", "chat-store").await?;
//!
//! bus.publish("chat.messages", vec![Message::new("hello").with_key("room-1")]).await?;
//!
//! let delivery = store.recv().await.expect("bus open")?;
//! match std::str::from_utf8(delivery.message().payload()) {
//!     Ok(text) => {
//!         println!("storing {text}");
//!         delivery.ack().await?;
//!     }
//!     Err(_) => delivery.dead_letter("payload is not UTF-8").await?,
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Backends
//! | backend | feature | per-key order | persistent | backlog for new groups | delayed retry |
//! |---|---|---|---|---|---|
//! | [`MemoryBus`] | always | yes | no | yes | yes |
//!
//! ## Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `conformance` | no | [`conformance`]: the suite every backend runs against its broker |
//! | `redis` | no | `RedisIdempotencyStore` |
//! | `sql` | no | `SqlIdempotencyStore` for PostgreSQL and SQLite (sqlx), recording inside the handler's transaction |
//! | `metrics` | no | router counters and a handling-time histogram through `metrics` |
//! | `tracing` | no | a span per delivery the router handles, and events on failures |
//!
//! ## Minimum supported Rust version
//! Rust 1.95.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod bus;
#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
mod delivery;
mod error;
mod memory;
mod message;
mod redrive;
pub mod router;
mod typed;

pub use bus::{
    BoxFuture, Capabilities, DynPublisher, DynSubscriber, Publisher, Subscriber, Subscription,
};
pub use delivery::{
    Acknowledger, Delivery, DeliveryInfo, Position, SettleFuture, Settlement, dead_letter_envelope,
    dead_letter_header, dead_letter_topic,
};
pub use error::{BoxError, BusError};
pub use memory::{
    DEFAULT_CAPACITY, DEFAULT_PUBLISH_TIMEOUT, MemoryBus, MemoryConfig, MemoryConfigBuilder,
};
pub use message::{Headers, InvalidMessageId, Message, MessageId, header};
pub use redrive::{RedriveReport, redrive};
pub use router::{
    DynIdempotencyStore, FailureAction, FailureKind, FailureOutcome, FailurePolicy,
    FailurePolicyBuilder, HandlerError, HandlerService, IdempotencyKey, IdempotencyStore,
    MemoryIdempotencyStore, Outputs, Route, Router, RouterBuilder, RouterEvent, RunningRouter,
    ShutdownReport,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use router::{RedisIdempotencyConfig, RedisIdempotencyConfigBuilder, RedisIdempotencyStore};
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub use router::{SqlIdempotencyConfig, SqlIdempotencyConfigBuilder, SqlIdempotencyStore};
pub use typed::{
    CloudEvents, Codec, DecodeError, EncodeError, Event, JsonCodec, decode, decode_with, encode,
    encode_with,
};
