//! A tower middleware that guards a service with a [`CircuitBreaker`](crate::CircuitBreaker).
//!
//! The breaker is asked for a permit in `call`, not in `poll_ready`: readiness stays the inner
//! service's own business, and a rejected request costs nothing but an immediately ready
//! future. Errors are [`tower::BoxError`]s; a refusal is a [`Rejected`](crate::Rejected) that
//! callers find with `downcast_ref`, whatever layers sit around this one.
//!
//! [`tower::BoxError`]: https://docs.rs/tower/latest/tower/type.BoxError.html

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreakerService;

/// The error type of the tower adapter, as in tower itself.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
