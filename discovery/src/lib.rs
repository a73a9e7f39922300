//! # meshwork-discovery
//!
//! Service discovery for Rust services: register an instance with a registry, keep its health
//! check alive, find the healthy instances of a service, follow them as they come and go, and
//! spread calls over them by measured latency.
//!
//! * **Two traits, any backend:** [`Registrar`] (register, heartbeat, deregister) and
//!   [`Discover`] (resolve, watch as a stream of [`Update`]s), with object-safe twins
//!   [`DynRegistrar`] and [`DynDiscover`] for backends chosen at run time.
//! * **Static backend** from config, with DNS names resolved periodically ([`StaticDiscovery`]).
//! * **Consul** (feature `consul`): agent registration with HTTP, TCP or TTL checks,
//!   `DeregisterCriticalServiceAfter`, TTL heartbeats, `?passing` health queries, blocking-query
//!   watches done the way Consul's docs ask, ACL tokens, datacenters, filters, TLS; and a
//!   [`RegistrationGuard`] that registers on start and deregisters on shutdown.
//! * **A Consul stand-in** (feature `consul-testing`): an in-process server implementing the
//!   same endpoints with Consul's documented shapes, so the backend is tested without a
//!   Consul binary.
//! * **Load balancing** (feature `tower`): power of two choices over peak-EWMA latency times
//!   in-flight requests, failure penalties, weights, passive outlier ejection and a panic
//!   threshold, as a tower `Layer` fed by a watch; and an adapter to
//!   `tower::discover::Discover` for `tower::balance`.
//!
//! ## Example
//! ```
//! use meshwork_discovery::{Discover, Instance, StaticDiscovery};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), meshwork_discovery::Error> {
//! let discovery = StaticDiscovery::new([
//!     Instance::new("web-1", "web", "10.0.0.1", 8080),
//!     Instance::new("web-2", "web", "10.0.0.2", 8080).with_tag("canary"),
//! ]);
//! let web = discovery.resolve("web").await?;
//! assert_eq!(web.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! ## Feature flags
//! | feature | default | what it adds |
//! |---|---|---|
//! | `tower` | yes | [`balance`]: the balancer `Layer`, endpoint sets, the `tower::discover` adapter |
//! | `consul` | no | [`consul`]: the Consul backend over reqwest + rustls (ring) |
//! | `consul-testing` | no | [`standin`]: an in-process Consul HTTP API stand-in for tests |
//! | `tracing` | no | `tracing` events when watches fail or recover and endpoints are ejected |
//!
//! ## Minimum supported Rust version
//! Rust 1.95.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod guard;
mod instance;
mod static_backend;
mod traits;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod balance;
#[cfg(feature = "consul")]
#[cfg_attr(docsrs, doc(cfg(feature = "consul")))]
pub mod consul;
#[cfg(feature = "consul-testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "consul-testing")))]
pub mod standin;

pub use error::{ConfigError, Error};
pub use guard::{DEFAULT_HEARTBEAT_FRACTION, RegistrationGuard};
pub use instance::{Change, Health, Instance, Update, Weights};
pub use static_backend::{
    DEFAULT_DNS_ERROR_BACKOFF, DEFAULT_DNS_REFRESH, StaticConfig, StaticConfigBuilder,
    StaticDiscovery,
};
pub use traits::{
    BoxFuture, Check, Discover, DynDiscover, DynRegistrar, Registrar, Registration, WatchStream,
};

#[cfg(feature = "consul")]
pub use consul::{ConsulConfig, ConsulConfigBuilder, ConsulDiscovery};
