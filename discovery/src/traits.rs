//! The two traits every backend implements, their object-safe twins, and the watch stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use futures_util::StreamExt;

use crate::{ConfigError, Error, Instance, Update};

/// A boxed future, as the object-safe traits return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the registry decides an instance is healthy.
///
/// ```
/// use meshwork_discovery::Check;
/// use std::time::Duration;
///
/// let ttl = Check::ttl(Duration::from_secs(15));
/// assert_eq!(ttl.ttl_duration(), Some(Duration::from_secs(15)));
/// let http = Check::http("http://10.0.0.7:8080/health", Duration::from_secs(10));
/// assert_eq!(http.ttl_duration(), None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Check {
    /// The registry GETs `url` every `interval`; 2xx passes, 429 warns, anything else fails.
    Http {
        /// The URL probed.
        url: String,
        /// Time between probes.
        interval: Duration,
        /// Probe timeout.
        timeout: Duration,
    },
    /// The registry opens a TCP connection to `address` (`host:port`) every `interval`.
    Tcp {
        /// `host:port` to connect to.
        address: String,
        /// Time between probes.
        interval: Duration,
        /// Connect timeout.
        timeout: Duration,
    },
    /// The instance itself reports in at least once per `ttl` (see
    /// [`Registrar::heartbeat`]); the check turns critical when it doesn't.
    Ttl {
        /// How long a heartbeat keeps the check passing.
        ttl: Duration,
    },
}

impl Check {
    /// An HTTP check with a 10 s timeout (capped at the interval).
    pub fn http(url: impl Into<String>, interval: Duration) -> Check {
        Check::Http {
            url: url.into(),
            interval,
            timeout: interval.min(Duration::from_secs(10)),
        }
    }

    /// A TCP check with a 10 s timeout (capped at the interval).
    pub fn tcp(address: impl Into<String>, interval: Duration) -> Check {
        Check::Tcp {
            address: address.into(),
            interval,
            timeout: interval.min(Duration::from_secs(10)),
        }
    }

    /// A TTL check.
    pub fn ttl(ttl: Duration) -> Check {
        Check::Ttl { ttl }
    }

    /// The TTL, for a TTL check.
    pub fn ttl_duration(&self) -> Option<Duration> {
        match self {
            Check::Ttl { ttl } => Some(*ttl),
            _ => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis(1);
        match self {
            Check::Http {
                url,
                interval,
                timeout,
            } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(ConfigError::new(
                        "check.url",
                        url,
                        "an http:// or https:// URL",
                    ));
                }
                if *interval < ms {
                    return Err(ConfigError::new(
                        "check.interval",
                        format!("{interval:?}"),
                        "at least 1ms",
                    ));
                }
                if *timeout < ms {
                    return Err(ConfigError::new(
                        "check.timeout",
                        format!("{timeout:?}"),
                        "at least 1ms",
                    ));
                }
            }
            Check::Tcp {
                address,
                interval,
                timeout,
            } => {
                if address
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(ConfigError::new("check.address", address, "host:port"));
                }
                if *interval < ms {
                    return Err(ConfigError::new(
                        "check.interval",
                        format!("{interval:?}"),
                        "at least 1ms",
                    ));
                }
                if *timeout < ms {
                    return Err(ConfigError::new(
                        "check.timeout",
                        format!("{timeout:?}"),
                        "at least 1ms",
                    ));
                }
            }
            Check::Ttl { ttl } => {
                if *ttl < ms {
                    return Err(ConfigError::new(
                        "check.ttl",
                        format!("{ttl:?}"),
                        "at least 1ms",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What to register: an instance, its health check, and when the registry may drop it.
///
/// ```
/// use meshwork_discovery::{Check, Instance, Registration};
/// use std::time::Duration;
///
/// let registration = Registration::new(Instance::new("web-1", "web", "10.0.0.7", 8080))
///     .with_check(Check::ttl(Duration::from_secs(10)))
///     .deregister_critical_after(Duration::from_secs(90));
/// assert!(registration.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registration {
    /// The instance (its `health` is ignored: the registry decides).
    pub instance: Instance,
    /// The health check, if any.
    pub check: Option<Check>,
    /// Consul's `DeregisterCriticalServiceAfter`: the registry removes the instance once its
    /// check has been critical this long (Consul enforces at least one minute).
    pub deregister_critical_after: Option<Duration>,
}

impl Registration {
    /// Registers `instance` with no check.
    pub fn new(instance: Instance) -> Self {
        Registration {
            instance,
            check: None,
            deregister_critical_after: None,
        }
    }

    /// Sets the health check.
    #[must_use]
    pub fn with_check(mut self, check: Check) -> Self {
        self.check = Some(check);
        self
    }

    /// Sets `DeregisterCriticalServiceAfter` (only meaningful with a check).
    #[must_use]
    pub fn deregister_critical_after(mut self, after: Duration) -> Self {
        self.deregister_critical_after = Some(after);
        self
    }

    /// Checks every field: non-empty id and service, a non-zero port, a valid check.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.instance.id.is_empty() {
            return Err(ConfigError::new("instance.id", "\"\"", "non-empty"));
        }
        if self.instance.service.is_empty() {
            return Err(ConfigError::new("instance.service", "\"\"", "non-empty"));
        }
        if self.instance.port == 0 {
            return Err(ConfigError::new("instance.port", 0, "in 1..=65535"));
        }
        if let Some(check) = &self.check {
            check.validate()?;
        }
        if let Some(after) = self.deregister_critical_after {
            if self.check.is_none() {
                return Err(ConfigError::new(
                    "deregister_critical_after",
                    format!("{after:?}"),
                    "set only together with a check",
                ));
            }
            if after < Duration::from_millis(1) {
                return Err(ConfigError::new(
                    "deregister_critical_after",
                    format!("{after:?}"),
                    "at least 1ms",
                ));
            }
        }
        Ok(())
    }
}

/// Registers instances with a registry, keeps TTL checks alive, and removes them.
///
/// Implementors write `async fn`; see [`DynRegistrar`] for the object-safe form.
pub trait Registrar: Send + Sync {
    /// Registers (or replaces) an instance and its check.
    fn register(
        &self,
        registration: &Registration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Reports that the instance is alive: passes its TTL check.
    fn heartbeat(&self, instance_id: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Removes the instance; an instance the registry doesn't know counts as removed.
    fn deregister(&self, instance_id: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Finds the healthy instances of a service, once or as a stream of changes.
///
/// Implementors write `async fn`; see [`DynDiscover`] for the object-safe form.
pub trait Discover: Send + Sync {
    /// The instances of `service` that are passing their checks now.
    fn resolve(&self, service: &str) -> impl Future<Output = Result<Vec<Instance>, Error>> + Send;

    /// Watches `service`: the stream yields an [`Update`] whenever the healthy set changes (the
    /// first item is the initial set, even when empty), and an `Err` when a refresh fails; it
    /// then backs off and keeps going, so a consumer keeps the last good set it saw.
    fn watch(&self, service: &str) -> WatchStream;
}

/// The object-safe twin of [`Registrar`], for backends chosen at run time; every `Registrar`
/// is one.
///
/// ```
/// use meshwork_discovery::{DynRegistrar, Instance, Registration, StaticDiscovery};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_discovery::Error> {
/// let registrar: Arc<dyn DynRegistrar> = Arc::new(StaticDiscovery::default());
/// registrar
///     .register_dyn(&Registration::new(Instance::new("a", "web", "127.0.0.1", 80)))
///     .await?;
/// # Ok(())
/// # }
/// ```
pub trait DynRegistrar: Send + Sync {
    /// See [`Registrar::register`].
    fn register_dyn<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), Error>>;
    /// See [`Registrar::heartbeat`].
    fn heartbeat_dyn<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    /// See [`Registrar::deregister`].
    fn deregister_dyn<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), Error>>;
}

impl<T: Registrar> DynRegistrar for T {
    fn register_dyn<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.register(registration))
    }
    fn heartbeat_dyn<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.heartbeat(instance_id))
    }
    fn deregister_dyn<'a>(&'a self, instance_id: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.deregister(instance_id))
    }
}

/// The object-safe twin of [`Discover`]; every `Discover` is one.
///
/// ```
/// use meshwork_discovery::{DynDiscover, Instance, StaticDiscovery};
/// use std::sync::Arc;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_discovery::Error> {
/// let discovery: Arc<dyn DynDiscover> =
///     Arc::new(StaticDiscovery::new([Instance::new("a", "web", "127.0.0.1", 80)]));
/// assert_eq!(discovery.resolve_dyn("web").await?.len(), 1);
/// # Ok(())
/// # }
/// ```
pub trait DynDiscover: Send + Sync {
    /// See [`Discover::resolve`].
    fn resolve_dyn<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Error>>;
    /// See [`Discover::watch`].
    fn watch_dyn(&self, service: &str) -> WatchStream;
}

impl<T: Discover> DynDiscover for T {
    fn resolve_dyn<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, Error>> {
        Box::pin(self.resolve(service))
    }
    fn watch_dyn(&self, service: &str) -> WatchStream {
        self.watch(service)
    }
}

/// The stream of a watch: an [`Update`] per change of the healthy set, an `Err` per failed
/// refresh (the watch goes on after it). Dropping the stream stops the watch.
///
/// ```
/// use meshwork_discovery::{Discover, Instance, StaticDiscovery};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let discovery = StaticDiscovery::new([Instance::new("a", "web", "127.0.0.1", 80)]);
/// let mut watch = discovery.watch("web");
/// let first = watch.recv().await.unwrap().unwrap();
/// assert_eq!(first.instances.len(), 1);
/// # }
/// ```
pub struct WatchStream {
    inner: Pin<Box<dyn Stream<Item = Result<Update, Error>> + Send>>,
}

impl WatchStream {
    /// Wraps any stream of updates.
    pub fn new(stream: impl Stream<Item = Result<Update, Error>> + Send + 'static) -> Self {
        WatchStream {
            inner: Box::pin(stream),
        }
    }

    /// The next item; `None` only if the backend has shut the watch down.
    pub async fn recv(&mut self) -> Option<Result<Update, Error>> {
        self.inner.next().await
    }
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl Stream for WatchStream {
    type Item = Result<Update, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Exponential backoff with full jitter, shared by the watches.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: `base * 2^attempt` capped at `max`, then a uniform draw in [d/2, d].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let exp = self.attempt.min(20);
        self.attempt = self.attempt.saturating_add(1);
        let d = self.base.saturating_mul(1 << exp).min(self.max);
        d.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}
