//! The router: named handlers bound to (topic, group), each consuming in a background task,
//! with middleware, a failure policy, idempotent handling and graceful shutdown.
//!
//! ## What happens to one delivery
//! 1. **Duplicates** (with an [`IdempotencyStore`]): a message its group already handled is
//!    acknowledged without running the handler. Two deliveries of one id are never handled
//!    at once by one router.
//! 2. **The handler** runs under the route's timeout, inside the tower layers added to the
//!    route and the router, with panics caught. It answers with [`Outputs`].
//! 3. **Outputs** inherit the input's correlation id (the input's id when it had none) and
//!    trace context, and carry the input's id as causation id, unless the handler set them
//!    (as [`Message::caused`](crate::Message::caused) does). They are published, and the
//!    backend confirms them, **before** the input is acknowledged: a crash in between
//!    redelivers the input, never loses the outputs. (So outputs are at least once:
//!    consumers dedupe by message id.)
//! 4. **Recorded** in the idempotency store only after that, then **acknowledged**.
//!
//! A failure anywhere (an error, a timeout, a panic, an output the backend refused) goes
//! through the route's [`FailurePolicy`]: in-process retries, delayed redelivery, dead letter.
//! See [`FailurePolicy`] and [`HandlerError`] for how a handler says "permanent".
//!
//! ## Why shutdown is never a failure
//! [`RunningRouter::shutdown`] stops fetching, lets the handlers in flight finish and settle,
//! and at the deadline drops what is still running. A dropped delivery is released
//! unsettled, so the backend redelivers it later: no retry delay is spent and no dead letter
//! written, because nothing failed. (The backend's own delivery count still rises: it counts
//! deliveries, not failures.)
//!
//! ## Concurrency and order
//! Each route works on at most `max_in_flight` deliveries at once, across keys. Order per
//! key comes from the backends that declare it: they never hand out a second message of a
//! key before the first is settled.
//!
//! ## Observability
//! Listeners given to [`RouterBuilder::on_event`] see every failure, dead letter, duplicate
//! and subscription error as a [`RouterEvent`]. With the `tracing` feature, each delivery is
//! handled inside a `meshwork.handle` span (handler, topic, group, message id, attempt) and
//! each failure is a `warn` event. With the `metrics` feature, each handler counts handled
//! messages, duplicates and failures (by kind and outcome) and records handling time through
//! the `metrics` facade.
//!
//! ## Example
//! ```
//! use meshwork_event_bus::{
//!     BoxError, HandlerError, MemoryBus, MemoryIdempotencyStore, Message, Outputs, Publisher,
//!     Route, Router,
//! };
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshwork_event_bus::BusError> {
//! async fn bill(order: Message) -> Result<Outputs, BoxError> {
//!     let amount: i64 = std::str::from_utf8(order.payload())
//!         .map_err(HandlerError::decode)?
//!         .parse()
//!         .map_err(HandlerError::decode)?;
//!     if amount <= 0 {
//!         return Err(HandlerError::permanent("amount must be positive").into());
//!     }
//!     Ok(Outputs::one("invoices", order.caused(format!("invoice {amount}"))))
//! }
//!
//! let bus = MemoryBus::new();
//! let running = Router::builder(bus.clone(), bus.clone())
//!     .idempotency(MemoryIdempotencyStore::new())
//!     .route(
//!         Route::new("bill-order", "orders", "billing", bill)
//!             .max_in_flight(32)
//!             .timeout(Duration::from_secs(10)),
//!     )
//!     .build()?
//!     .start();
//!
//! bus.publish("orders", vec![Message::new("120")]).await?;
//! running.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod builder;
mod handler;
mod idempotency;
#[cfg(feature = "redis")]
mod idempotency_redis;
#[cfg(feature = "sql")]
mod idempotency_sql;
mod meters;
mod policy;
mod run;

pub use builder::{
    DEFAULT_HANDLER_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, MAX_MAX_IN_FLIGHT, Route, Router, RouterBuilder,
};
pub use handler::{FailureKind, HandlerError, HandlerService, Outputs};
pub use idempotency::{
    DEFAULT_IDEMPOTENCY_CAPACITY, DEFAULT_IDEMPOTENCY_TTL, DynIdempotencyStore, IdempotencyKey,
    IdempotencyStore, MemoryIdempotencyStore,
};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use idempotency_redis::{
    DEFAULT_REDIS_IDEMPOTENCY_PREFIX, DEFAULT_REDIS_TIMEOUT, MAX_REDIS_IDEMPOTENCY_TTL,
    RedisIdempotencyConfig, RedisIdempotencyConfigBuilder, RedisIdempotencyStore,
};
#[cfg(feature = "sql")]
#[cfg_attr(docsrs, doc(cfg(feature = "sql")))]
pub use idempotency_sql::{
    DEFAULT_SQL_IDEMPOTENCY_TABLE, MAX_SQL_TABLE_NAME_LEN, SqlIdempotencyConfig,
    SqlIdempotencyConfigBuilder, SqlIdempotencyStore,
};
pub use policy::{
    DEFAULT_IN_PROCESS_ATTEMPTS, DEFAULT_IN_PROCESS_DELAY, DEFAULT_IN_PROCESS_MAX_DELAY,
    DEFAULT_MAX_DELIVERIES, DEFAULT_MAX_REDELIVERY_DELAY, DEFAULT_REDELIVERY_DELAY,
    DEFAULT_REDELIVERY_MULTIPLIER, FailureAction, FailurePolicy, FailurePolicyBuilder,
};
pub use run::{FailureOutcome, RouterEvent, RunningRouter, ShutdownReport};
