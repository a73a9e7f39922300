//! Load balancing over what discovery sees (feature `tower`).
//!
//! An [`EndpointSet`] holds the endpoints of one service, updated whole from a watch
//! ([`EndpointSet::follow`]); a [`Picker`] chooses one per request by **power of two
//! choices**: two candidates drawn at random in proportion to their Consul weights, the one
//! with the lower **peak-EWMA latency x (in-flight + 1)** wins (Finagle's and linkerd's
//! choice: it reacts at once to a slow endpoint, because the estimate jumps to any slower
//! sample and decays back over `decay`).
//!
//! * **Failures cost**: a failed call is charged at least `failure_penalty`, so an endpoint
//!   answering 503 in a millisecond does not look like the fastest one.
//! * **Passive outlier ejection**: `eject_after` consecutive failures remove an endpoint for
//!   `base_ejection_time` (longer each time in a row), never more than `max_ejection_percent`
//!   of the set at once.
//! * **Panic threshold**: when fewer than `panic_threshold` percent of endpoints are usable,
//!   ejections are ignored and every endpoint takes traffic (better some errors than all
//!   traffic on a few survivors).
//! * **Lock-free picks**: the snapshot is an `Arc` swapped under a write lock only on
//!   updates; each picker caches it and checks a generation counter; statistics are atomics.
//!
//! [`BalanceLayer`] puts this in front of any tower client: the inner service gets a
//! [`Picked`] request naming the instance. For `tower::balance` itself, [`ServiceDiscover`]
//! adapts a watch to `tower::discover::Discover`.

mod config;
mod discover;
mod error;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;
mod set;

use std::sync::Arc;

pub use config::{
    BalanceConfig, BalanceConfigBuilder, DEFAULT_BASE_EJECTION_TIME, DEFAULT_DECAY,
    DEFAULT_EJECT_AFTER, DEFAULT_FAILURE_PENALTY, DEFAULT_MAX_EJECTION_PERCENT,
    DEFAULT_PANIC_THRESHOLD, DEFAULT_RTT,
};
pub use discover::ServiceDiscover;
pub use error::NoEndpoints;
pub use future::ResponseFuture;
pub use layer::BalanceLayer;
pub use service::BalanceService;
pub use set::{EndpointSet, Pick, Picker};

use crate::Instance;

/// The error type of the tower adapter, as in tower itself.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request on its way to a chosen instance: what a [`BalanceService`]'s inner service gets.
#[derive(Debug, Clone)]
pub struct Picked<Req> {
    instance: Arc<Instance>,
    request: Req,
}

impl<Req> Picked<Req> {
    /// The chosen instance.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.instance
    }

    /// The request.
    pub fn request(&self) -> &Req {
        &self.request
    }

    /// The instance and the request.
    pub fn into_parts(self) -> (Arc<Instance>, Req) {
        (self.instance, self.request)
    }
}

/// Decides whether an `Ok` response counts as a failure for the balancer (`Err` always does).
pub trait ClassifyResponse<R> {
    /// Whether `response` is a failure (an HTTP 5xx, say).
    fn is_failure(&self, response: &R) -> bool;
}

/// Every `Ok` response is a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct OkIsSuccess;

impl<R> ClassifyResponse<R> for OkIsSuccess {
    fn is_failure(&self, _: &R) -> bool {
        false
    }
}

impl<R, F: Fn(&R) -> bool> ClassifyResponse<R> for F {
    fn is_failure(&self, response: &R) -> bool {
        self(response)
    }
}
