//! A load-shedding tower middleware that guards a service with a [`Bulkhead`](crate::Bulkhead).
//!
//! # Permits are taken in `call`, not in `poll_ready`
//! tower allows two designs: take the permit in `poll_ready` and keep it for `call` (tower's
//! `ConcurrencyLimit`, which makes callers queue inside `poll_ready`), or take it in `call`.
//! This layer does the latter, with [`Bulkhead::try_acquire_owned`](crate::Bulkhead::try_acquire_owned):
//! readiness stays the inner service's own business, a full bulkhead refuses the request at
//! once (load shedding) instead of making it wait, and a service that was made ready but never
//! called holds no permit. The bulkhead's `max_wait` is therefore not used by the layer; use
//! [`Bulkhead::acquire`](crate::Bulkhead::acquire) or [`Bulkhead::call`](crate::Bulkhead::call)
//! where waiting is wanted.
//!
//! # Errors
//! Errors are [`tower::BoxError`]s; a refusal is a [`Rejected`](crate::Rejected) naming the
//! bulkhead, that callers find with `downcast_ref` whatever layers sit around this one (the
//! box is the only allocation of a refusal). Inner errors pass through unchanged, boxed.
//!
//! # Adaptive limits
//! A response counts as [`Outcome::Success`](crate::Outcome::Success), an error as
//! [`Outcome::Dropped`](crate::Outcome::Dropped), and a response future dropped before it
//! completes as [`Outcome::Ignored`](crate::Outcome::Ignored).
//!
//! # With axum
//! The service's error is a `BoxError`, so an axum router turns refusals into responses with
//! `axum::error_handling::HandleErrorLayer`:
//!
//! ```
//! use axum::{BoxError, Router, error_handling::HandleErrorLayer, http::StatusCode, routing::get};
//! use meshwork_bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer, Rejected};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bulkhead = Bulkhead::new("api", BulkheadConfig::builder().max_concurrent_calls(100).build()?);
//! let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(
//!     ServiceBuilder::new()
//!         .layer(HandleErrorLayer::new(|err: BoxError| async move {
//!             if err.is::<Rejected>() {
//!                 (StatusCode::SERVICE_UNAVAILABLE, err.to_string())
//!             } else {
//!                 (StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
//!             }
//!         }))
//!         .layer(BulkheadLayer::new(bulkhead)),
//! );
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//! (`tests/layer.rs` sends requests through this very stack.)
//!
//! [`tower::BoxError`]: https://docs.rs/tower/latest/tower/type.BoxError.html

mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::BulkheadLayer;
pub use service::BulkheadService;

/// The error type of the tower adapter, as in tower itself.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
