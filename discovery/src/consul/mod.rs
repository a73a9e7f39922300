//! The Consul backend: agent registration, TTL heartbeats, `?passing` health queries and
//! blocking-query watches, over Consul's HTTP API.
//!
//! ## Why not an existing Consul crate
//! The Rust Consul clients each cover half of the job: `consulrs` (one release, 2021)
//! registers with checks but has no health-filtered lookup and brings hyper 0.14 and OpenSSL;
//! `rs-consul` looks up healthy instances but can't register with the agent or pass TTL
//! checks. The handful of endpoints needed are simple JSON over HTTP, so this backend talks
//! to them directly with reqwest on rustls (ring), the HTTP stack the workspace already has.
//!
//! ## Watches
//! [`Discover::watch`] follows Consul's advice for blocking queries: the first query is
//! non-blocking, each next one passes the last `X-Consul-Index` as `index` with the configured
//! `wait`; an index that went backwards resets to 0 (a fresh, non-blocking query), an index
//! below 1 is treated as 1 (so a buggy 0 can't turn the loop into a busy one), queries are
//! spaced at least `min_watch_interval` apart, and the client timeout is `wait + wait/16` (the
//! jitter Consul adds) plus `request_timeout`. A failed query yields an `Err` item, resets the
//! index and backs off with jitter; the watch goes on, and only a changed set of passing
//! instances yields an [`Update`].

mod config;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use tokio::time::Instant;

pub use config::{
    ConsulConfig, ConsulConfigBuilder, DEFAULT_ADDRESS, DEFAULT_ERROR_BACKOFF_MAX,
    DEFAULT_ERROR_BACKOFF_MIN, DEFAULT_MIN_WATCH_INTERVAL, DEFAULT_REQUEST_TIMEOUT, DEFAULT_WAIT,
    MAX_WAIT, Token,
};

use crate::traits::Backoff;
use crate::{Discover, Error, Instance, Registrar, Registration, Update, WatchStream};

#[derive(Debug)]
struct Inner {
    config: ConsulConfig,
    base: Url,
    http: reqwest::Client,
}

/// A Consul agent as [`Registrar`] and [`Discover`]. Cheap to clone (the connection pool is
/// shared).
///
/// ```no_run
/// use meshwork_discovery::{
///     Check, ConsulConfig, ConsulDiscovery, Discover, Instance, Registration, RegistrationGuard,
/// };
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let consul = ConsulDiscovery::new(ConsulConfig::builder().from_env().build()?)?;
/// let registration = Registration::new(Instance::new("web-1", "web", "10.0.0.7", 8080))
///     .with_check(Check::ttl(Duration::from_secs(15)))
///     .deregister_critical_after(Duration::from_secs(90));
/// let guard = RegistrationGuard::start(Arc::new(consul.clone()), registration).await?;
///
/// let payments = consul.resolve("payments").await?;
/// println!("{} healthy payments instances", payments.len());
/// guard.shutdown().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConsulDiscovery {
    inner: Arc<Inner>,
}

impl ConsulDiscovery {
    /// A client for the agent in `config`. Fails only if the TLS material can't be loaded.
    pub fn new(config: ConsulConfig) -> Result<Self, Error> {
        let base = Url::parse(&config.address).map_err(|e| {
            Error::Config(crate::ConfigError::new(
                "address",
                format!("{} ({e})", config.address),
                "an http:// or https:// URL",
            ))
        })?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("meshwork-discovery/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &config.tls_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::Config(crate::ConfigError::new("tls_ca_pem", e, "PEM certificates"))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(pem) = &config.tls_identity_pem {
            let identity = reqwest::Identity::from_pem(pem.expose().as_bytes()).map_err(|e| {
                Error::Config(crate::ConfigError::new(
                    "tls_identity_pem",
                    e,
                    "a PEM certificate chain and private key",
                ))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder.build().map_err(|e| Error::Transport {
            operation: "build client",
            url: config.address.clone(),
            source: e.into(),
        })?;
        Ok(ConsulDiscovery {
            inner: Arc::new(Inner { config, base, http }),
        })
    }

    /// The config it was built from.
    pub fn config(&self) -> &ConsulConfig {
        &self.inner.config
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        url
    }

    async fn send(
        &self,
        operation: &'static str,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<reqwest::Response, Error> {
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .timeout(timeout);
        if let Some(token) = &self.inner.config.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| Error::Transport {
            operation,
            url: redact(&url),
            source: e.into(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response.text().await.unwrap_or_default().trim().to_string();
        Err(match status {
            StatusCode::FORBIDDEN => Error::AclDenied { operation, message },
            StatusCode::NOT_FOUND => Error::NotFound { operation, message },
            _ => Error::Status {
                operation,
                status: status.as_u16(),
                message,
            },
        })
    }

    /// One health query: the passing instances and the `X-Consul-Index`.
    async fn health(
        &self,
        service: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<Instance>, u64), Error> {
        let mut url = self.url(&["v1", "health", "service", service]);
        {
            let config = &self.inner.config;
            let mut q = url.query_pairs_mut();
            q.append_pair("passing", "true");
            if let Some(dc) = &config.datacenter {
                q.append_pair("dc", dc);
            }
            if let Some(filter) = &config.filter {
                q.append_pair("filter", filter);
            }
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &wire::go_duration(wait));
            }
        }
        let timeout = if index > 0 {
            self.inner.config.request_timeout + wait + wait / 16
        } else {
            self.inner.config.request_timeout
        };
        let response = self
            .send("resolve", Method::GET, url, None, timeout)
            .await?;
        let new_index = response
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let bytes = response.bytes().await.map_err(|e| Error::Transport {
            operation: "resolve",
            url: self.inner.config.address.clone(),
            source: e.into(),
        })?;
        let entries: Vec<wire::HealthEntry> =
            serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                operation: "resolve",
                source: e.into(),
            })?;
        let mut instances: Vec<Instance> = entries
            .into_iter()
            .map(wire::HealthEntry::into_instance)
            .collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((instances, new_index))
    }
}

fn redact(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.to_string()
}

impl Registrar for ConsulDiscovery {
    async fn register(&self, registration: &Registration) -> Result<(), Error> {
        registration.validate()?;
        let body = serde_json::to_vec(&wire::RegisterBody::new(registration)).map_err(|e| {
            Error::Decode {
                operation: "register",
                source: e.into(),
            }
        })?;
        let mut url = self.url(&["v1", "agent", "service", "register"]);
        url.query_pairs_mut()
            .append_pair("replace-existing-checks", "true");
        self.send(
            "register",
            Method::PUT,
            url,
            Some(body),
            self.inner.config.request_timeout,
        )
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, instance_id: &str) -> Result<(), Error> {
        let check_id = format!("service:{instance_id}");
        let url = self.url(&["v1", "agent", "check", "pass", &check_id]);
        self.send(
            "heartbeat",
            Method::PUT,
            url,
            None,
            self.inner.config.request_timeout,
        )
        .await?;
        Ok(())
    }

    async fn deregister(&self, instance_id: &str) -> Result<(), Error> {
        let url = self.url(&["v1", "agent", "service", "deregister", instance_id]);
        match self
            .send(
                "deregister",
                Method::PUT,
                url,
                None,
                self.inner.config.request_timeout,
            )
            .await
        {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

struct WatchState {
    consul: ConsulDiscovery,
    service: String,
    index: u64,
    raw_index: u64,
    last: Option<Arc<[Instance]>>,
    backoff: Backoff,
    delay: Option<Duration>,
    last_query: Option<Instant>,
}

impl Discover for ConsulDiscovery {
    async fn resolve(&self, service: &str) -> Result<Vec<Instance>, Error> {
        self.health(service, 0, Duration::ZERO)
            .await
            .map(|(i, _)| i)
    }

    fn watch(&self, service: &str) -> WatchStream {
        let config = &self.inner.config;
        let state = WatchState {
            consul: self.clone(),
            service: service.to_string(),
            index: 0,
            raw_index: 0,
            last: None,
            backoff: Backoff::new(config.error_backoff_min, config.error_backoff_max),
            delay: None,
            last_query: None,
        };
        WatchStream::new(futures_util::stream::unfold(state, |mut s| async move {
            loop {
                if let Some(delay) = s.delay.take() {
                    tokio::time::sleep(delay).await;
                }
                let config = &s.consul.inner.config;
                if let Some(at) = s.last_query {
                    tokio::time::sleep_until(at + config.min_watch_interval).await;
                }
                s.last_query = Some(Instant::now());
                let wait = config.wait;
                match s.consul.health(&s.service, s.index, wait).await {
                    Ok((instances, new_index)) => {
                        s.backoff.reset();
                        // Consul's rules: an index that went backwards starts over with a
                        // fresh query; one below 1 is used as 1 (never a busy non-blocking loop).
                        s.index = if new_index < s.raw_index {
                            0
                        } else {
                            new_index.max(1)
                        };
                        s.raw_index = new_index;
                        let first = s.last.is_none();
                        let old = s.last.clone().unwrap_or_else(|| Arc::from(Vec::new()));
                        match Update::between(&old, instances) {
                            Some(update) => {
                                s.last = Some(update.instances.clone());
                                return Some((Ok(update), s));
                            }
                            None if first => {
                                s.last = Some(old.clone());
                                return Some((
                                    Ok(Update {
                                        instances: old,
                                        changes: Vec::new(),
                                    }),
                                    s,
                                ));
                            }
                            None => {}
                        }
                    }
                    Err(e) => {
                        #[cfg(feature = "tracing")]
                        tracing::warn!(service = %s.service, error = %e, "consul watch query failed");
                        s.index = 0;
                        s.raw_index = 0;
                        s.delay = Some(s.backoff.next_delay());
                        return Some((Err(e), s));
                    }
                }
            }
        }))
    }
}
