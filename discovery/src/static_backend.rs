//! The static backend: instances from config, names resolved through DNS, and in-memory
//! registration (handy in tests and single-host deployments).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::traits::Backoff;
use crate::{ConfigError, Discover, Error, Instance, Registrar, Registration, Update, WatchStream};

/// Default time between DNS lookups of a watched name.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(30);
/// Default first delay after a failed DNS lookup (it doubles up to [`DEFAULT_DNS_REFRESH`]).
pub const DEFAULT_DNS_ERROR_BACKOFF: Duration = Duration::from_secs(1);

/// Configuration of a [`StaticDiscovery`]: fixed instances, and DNS names whose addresses
/// become instances.
///
/// ```
/// use meshwork_discovery::{Instance, StaticConfig, StaticDiscovery};
/// use std::time::Duration;
///
/// let config = StaticConfig::builder()
///     .instance(Instance::new("pay-1", "payments", "10.0.0.5", 8443))
///     .dns("search", "search.internal:9200")
///     .dns_refresh(Duration::from_secs(10))
///     .build()?;
/// let discovery = StaticDiscovery::from_config(config);
/// # let _ = discovery;
/// # Ok::<(), meshwork_discovery::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StaticConfig {
    /// Fixed instances, by service.
    pub instances: Vec<Instance>,
    /// DNS targets by service: `(host, port)`; every address the host resolves to is an
    /// instance with id `ip:port`.
    pub dns: BTreeMap<String, Vec<(String, u16)>>,
    /// Time between lookups while a DNS-backed service is watched.
    pub dns_refresh: Duration,
    /// First delay after a failed lookup.
    pub dns_error_backoff: Duration,
}

impl Default for StaticConfig {
    fn default() -> Self {
        StaticConfig {
            instances: Vec::new(),
            dns: BTreeMap::new(),
            dns_refresh: DEFAULT_DNS_REFRESH,
            dns_error_backoff: DEFAULT_DNS_ERROR_BACKOFF,
        }
    }
}

impl StaticConfig {
    /// A builder, starting from the defaults.
    pub fn builder() -> StaticConfigBuilder {
        StaticConfigBuilder {
            config: StaticConfig::default(),
            bad_target: None,
        }
    }
}

/// Builder of a [`StaticConfig`]; `build()` validates every field.
#[derive(Debug, Clone)]
#[must_use]
pub struct StaticConfigBuilder {
    config: StaticConfig,
    bad_target: Option<String>,
}

impl StaticConfigBuilder {
    /// Adds a fixed instance.
    pub fn instance(mut self, instance: Instance) -> Self {
        self.config.instances.push(instance);
        self
    }

    /// Adds a DNS target `host:port` for `service`; the host is resolved on every
    /// [`Discover::resolve`] and every `dns_refresh` while watched.
    pub fn dns(mut self, service: impl Into<String>, target: impl AsRef<str>) -> Self {
        let target = target.as_ref();
        match target
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        {
            Some((host, port)) if !host.is_empty() && port != 0 => {
                let host = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                self.config
                    .dns
                    .entry(service.into())
                    .or_default()
                    .push((host, port));
            }
            _ => self.bad_target = Some(target.to_string()),
        }
        self
    }

    /// Time between lookups while watched; default [`DEFAULT_DNS_REFRESH`], at least 1 ms.
    pub fn dns_refresh(mut self, every: Duration) -> Self {
        self.config.dns_refresh = every;
        self
    }

    /// First delay after a failed lookup (doubling up to `dns_refresh`); default
    /// [`DEFAULT_DNS_ERROR_BACKOFF`], at least 1 ms.
    pub fn dns_error_backoff(mut self, delay: Duration) -> Self {
        self.config.dns_error_backoff = delay;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<StaticConfig, ConfigError> {
        if let Some(target) = self.bad_target {
            return Err(ConfigError::new(
                "dns",
                target,
                "host:port with a port in 1..=65535",
            ));
        }
        let ms = Duration::from_millis(1);
        if self.config.dns_refresh < ms {
            return Err(ConfigError::new(
                "dns_refresh",
                format!("{:?}", self.config.dns_refresh),
                "at least 1ms",
            ));
        }
        if self.config.dns_error_backoff < ms {
            return Err(ConfigError::new(
                "dns_error_backoff",
                format!("{:?}", self.config.dns_error_backoff),
                "at least 1ms",
            ));
        }
        for i in &self.config.instances {
            Registration::new(i.clone()).validate()?;
        }
        Ok(self.config)
    }
}

type Table = BTreeMap<String, BTreeMap<String, Instance>>;

#[derive(Debug)]
struct Inner {
    table: watch::Sender<Table>,
    config: StaticConfig,
}

/// Discovery from config and DNS, plus an in-memory [`Registrar`]: registering adds an
/// instance (passing), deregistering removes it, and watches see both.
///
/// ```
/// use futures_util::StreamExt;
/// use meshwork_discovery::{Discover, Instance, Registrar, Registration, StaticDiscovery};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_discovery::Error> {
/// let discovery = StaticDiscovery::new([Instance::new("a", "web", "10.0.0.1", 80)]);
/// let mut watch = discovery.watch("web");
/// assert_eq!(watch.next().await.unwrap()?.instances.len(), 1);
///
/// discovery.register(&Registration::new(Instance::new("b", "web", "10.0.0.2", 80))).await?;
/// assert_eq!(watch.next().await.unwrap()?.instances.len(), 2);
/// assert_eq!(discovery.resolve("web").await?.len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    inner: Arc<Inner>,
}

impl Default for StaticDiscovery {
    fn default() -> Self {
        StaticDiscovery::from_config(StaticConfig::default())
    }
}

impl StaticDiscovery {
    /// Discovery over these fixed instances.
    pub fn new(instances: impl IntoIterator<Item = Instance>) -> Self {
        StaticDiscovery::from_config(StaticConfig {
            instances: instances.into_iter().collect(),
            ..StaticConfig::default()
        })
    }

    /// Discovery from a validated config.
    pub fn from_config(config: StaticConfig) -> Self {
        let mut table = Table::new();
        for i in &config.instances {
            table
                .entry(i.service.clone())
                .or_default()
                .insert(i.id.clone(), i.clone());
        }
        StaticDiscovery {
            inner: Arc::new(Inner {
                table: watch::Sender::new(table),
                config,
            }),
        }
    }

    /// Replaces the fixed instances of `service` (watches see the change).
    pub fn set(&self, service: &str, instances: impl IntoIterator<Item = Instance>) {
        let set: BTreeMap<String, Instance> = instances
            .into_iter()
            .map(|mut i| {
                i.service = service.to_string();
                (i.id.clone(), i)
            })
            .collect();
        self.inner.table.send_modify(|t| {
            t.insert(service.to_string(), set);
        });
    }

    fn fixed(&self, service: &str) -> Vec<Instance> {
        self.inner
            .table
            .borrow()
            .get(service)
            .map(|m| {
                m.values()
                    .filter(|i| i.health.is_passing())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn current(&self, service: &str) -> Result<Vec<Instance>, Error> {
        let mut out = self.fixed(service);
        if let Some(targets) = self.inner.config.dns.get(service) {
            for (host, port) in targets {
                let addrs = tokio::net::lookup_host((host.as_str(), *port))
                    .await
                    .map_err(|source| Error::Dns {
                        host: host.clone(),
                        source,
                    })?;
                for addr in addrs {
                    out.push(
                        Instance::new(
                            addr.to_string(),
                            service,
                            addr.ip().to_string(),
                            addr.port(),
                        )
                        .with_metadata("dns_name", host.clone()),
                    );
                }
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }
}

impl Registrar for StaticDiscovery {
    async fn register(&self, registration: &Registration) -> Result<(), Error> {
        registration.validate()?;
        let i = registration
            .instance
            .clone()
            .with_health(crate::Health::Passing);
        self.inner.table.send_modify(|t| {
            t.entry(i.service.clone())
                .or_default()
                .insert(i.id.clone(), i);
        });
        Ok(())
    }

    async fn heartbeat(&self, instance_id: &str) -> Result<(), Error> {
        let known = self
            .inner
            .table
            .borrow()
            .values()
            .any(|m| m.contains_key(instance_id));
        if known {
            Ok(())
        } else {
            Err(Error::NotFound {
                operation: "heartbeat",
                message: format!("unknown instance id \"{instance_id}\""),
            })
        }
    }

    async fn deregister(&self, instance_id: &str) -> Result<(), Error> {
        self.inner
            .table
            .send_if_modified(|t| t.values_mut().any(|m| m.remove(instance_id).is_some()));
        Ok(())
    }
}

struct WatchState {
    discovery: StaticDiscovery,
    service: String,
    rx: watch::Receiver<Table>,
    last: Option<Arc<[Instance]>>,
    backoff: Backoff,
    wait: Option<std::time::Duration>,
    uses_dns: bool,
}

impl Discover for StaticDiscovery {
    async fn resolve(&self, service: &str) -> Result<Vec<Instance>, Error> {
        self.current(service).await
    }

    fn watch(&self, service: &str) -> WatchStream {
        let config = &self.inner.config;
        let state = WatchState {
            discovery: self.clone(),
            service: service.to_string(),
            rx: self.inner.table.subscribe(),
            last: None,
            backoff: Backoff::new(config.dns_error_backoff, config.dns_refresh),
            wait: None,
            uses_dns: config.dns.contains_key(service),
        };
        WatchStream::new(futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(wait) = s.wait.take() {
                    if s.uses_dns {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = s.rx.changed() => {}
                        }
                    } else if s.rx.changed().await.is_err() {
                        return None;
                    }
                }
                s.rx.borrow_and_update();
                let refresh = s.discovery.inner.config.dns_refresh;
                match s.discovery.current(&s.service).await {
                    Ok(now) => {
                        s.backoff.reset();
                        s.wait = Some(refresh);
                        let old = s.last.clone().unwrap_or_else(|| Arc::from(Vec::new()));
                        let first = s.last.is_none();
                        match Update::between(&old, now) {
                            Some(update) => {
                                s.last = Some(update.instances.clone());
                                return Some((Ok(update), s));
                            }
                            None if first => {
                                s.last = Some(old.clone());
                                let update = Update {
                                    instances: old,
                                    changes: Vec::new(),
                                };
                                return Some((Ok(update), s));
                            }
                            None => {}
                        }
                    }
                    Err(e) => {
                        s.wait = Some(s.backoff.next_delay());
                        return Some((Err(e), s));
                    }
                }
            }
        }))
    }
}
