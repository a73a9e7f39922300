//! Configuration of the Consul backend.

use std::fmt;
use std::time::Duration;

use crate::ConfigError;

/// The agent address used when none is configured (Consul's own default).
pub const DEFAULT_ADDRESS: &str = "http://127.0.0.1:8500";
/// Default `wait` of a blocking query (Consul's default is 5 minutes too).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// The longest `wait` Consul accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(600);
/// Default timeout of a non-blocking request (a blocking one gets `wait + wait/16` on top).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default shortest time between two blocking queries of one watch.
pub const DEFAULT_MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Default first delay after a failed watch query.
pub const DEFAULT_ERROR_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Default longest delay after failed watch queries.
pub const DEFAULT_ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An ACL token; `Debug` prints `"<redacted>"`.
///
/// ```
/// use meshwork_discovery::consul::Token;
///
/// let token = Token::new("s3cr3t");
/// assert_eq!(format!("{token:?}"), "Token(<redacted>)");
/// assert_eq!(token.expose(), "s3cr3t");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(token.into())
    }

    /// The token itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything the Consul backend needs; build it with [`ConsulConfig::builder`].
///
/// ```
/// use meshwork_discovery::ConsulConfig;
/// use std::time::Duration;
///
/// let config = ConsulConfig::builder()
///     .address("http://127.0.0.1:8500")
///     .token("b1gs3cr3t")
///     .datacenter("dc1")
///     .filter("Service.Meta.version == \"2\"")
///     .wait(Duration::from_secs(60))
///     .build()?;
/// assert!(!format!("{config:?}").contains("b1gs3cr3t"));
/// # Ok::<(), meshwork_discovery::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsulConfig {
    /// Base URL of the agent's HTTP API (`http://` or `https://`).
    pub address: String,
    /// ACL token sent as `X-Consul-Token`.
    pub token: Option<Token>,
    /// Datacenter to query (`?dc=`); the agent's own when `None`.
    pub datacenter: Option<String>,
    /// Filter expression applied to health queries (`?filter=`).
    pub filter: Option<String>,
    /// `wait` of blocking queries, in `(0, 10m]`.
    pub wait: Duration,
    /// Timeout of non-blocking requests.
    pub request_timeout: Duration,
    /// Shortest time between two queries of one watch (rate limit for tight loops).
    pub min_watch_interval: Duration,
    /// First delay after a failed watch query.
    pub error_backoff_min: Duration,
    /// Longest delay after failed watch queries.
    pub error_backoff_max: Duration,
    /// Extra root certificates (PEM) trusted for an `https://` agent.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Client certificate and key (PEM, concatenated) for agents that verify clients.
    pub tls_identity_pem: Option<Token>,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            address: DEFAULT_ADDRESS.to_string(),
            token: None,
            datacenter: None,
            filter: None,
            wait: DEFAULT_WAIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            min_watch_interval: DEFAULT_MIN_WATCH_INTERVAL,
            error_backoff_min: DEFAULT_ERROR_BACKOFF_MIN,
            error_backoff_max: DEFAULT_ERROR_BACKOFF_MAX,
            tls_ca_pem: None,
            tls_identity_pem: None,
        }
    }
}

impl ConsulConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ConsulConfigBuilder {
        ConsulConfigBuilder {
            config: ConsulConfig::default(),
        }
    }
}

/// Builder of a [`ConsulConfig`]; `build()` validates every field once.
#[derive(Debug, Clone)]
#[must_use]
pub struct ConsulConfigBuilder {
    config: ConsulConfig,
}

impl ConsulConfigBuilder {
    /// Agent URL; default [`DEFAULT_ADDRESS`]. `host:port` without a scheme means `http://`.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        let address = address.into();
        self.config.address = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        self
    }

    /// ACL token; default none (the agent's default token applies).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(Token::new(token));
        self
    }

    /// Takes the address from `CONSUL_HTTP_ADDR` and the token from `CONSUL_HTTP_TOKEN`, when
    /// set and non-empty (as Consul's own CLI and clients do).
    pub fn from_env(mut self) -> Self {
        if let Some(addr) = std::env::var("CONSUL_HTTP_ADDR")
            .ok()
            .filter(|a| !a.is_empty())
        {
            self = self.address(addr);
        }
        if let Some(token) = std::env::var("CONSUL_HTTP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
        {
            self = self.token(token);
        }
        self
    }

    /// Datacenter to query; default the agent's own.
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.config.datacenter = Some(dc.into());
        self
    }

    /// Filter expression for health queries (Consul 1.5+); default none.
    pub fn filter(mut self, expression: impl Into<String>) -> Self {
        self.config.filter = Some(expression.into());
        self
    }

    /// `wait` of blocking queries; default [`DEFAULT_WAIT`], in `(0, 10m]`.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.config.wait = wait;
        self
    }

    /// Timeout of non-blocking requests; default [`DEFAULT_REQUEST_TIMEOUT`], at least 1 ms.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Shortest time between two queries of a watch; default [`DEFAULT_MIN_WATCH_INTERVAL`],
    /// in `[0, 1m]`.
    pub fn min_watch_interval(mut self, interval: Duration) -> Self {
        self.config.min_watch_interval = interval;
        self
    }

    /// Backoff after failed watch queries: from `min` doubling to `max` (with jitter);
    /// defaults [`DEFAULT_ERROR_BACKOFF_MIN`] and [`DEFAULT_ERROR_BACKOFF_MAX`]; `min` at least
    /// 1 ms and not above `max`.
    pub fn error_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.config.error_backoff_min = min;
        self.config.error_backoff_max = max;
        self
    }

    /// Trusts these root certificates (PEM) for an `https://` agent; default none.
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.config.tls_ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate and private key (PEM, concatenated); default none.
    pub fn tls_identity_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.tls_identity_pem = Some(Token::new(pem));
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<ConsulConfig, ConfigError> {
        let c = self.config;
        let scheme_ok = c.address.starts_with("http://") || c.address.starts_with("https://");
        if !scheme_ok || reqwest::Url::parse(&c.address).is_err() {
            return Err(ConfigError::new(
                "address",
                &c.address,
                "an http:// or https:// URL",
            ));
        }
        if c.wait.is_zero() || c.wait > MAX_WAIT {
            return Err(ConfigError::new(
                "wait",
                format!("{:?}", c.wait),
                "in (0, 10m]",
            ));
        }
        if c.request_timeout < Duration::from_millis(1) {
            return Err(ConfigError::new(
                "request_timeout",
                format!("{:?}", c.request_timeout),
                "at least 1ms",
            ));
        }
        if c.min_watch_interval > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "min_watch_interval",
                format!("{:?}", c.min_watch_interval),
                "in [0, 1m]",
            ));
        }
        if c.error_backoff_min < Duration::from_millis(1)
            || c.error_backoff_min > c.error_backoff_max
        {
            return Err(ConfigError::new(
                "error_backoff",
                format!("{:?}..{:?}", c.error_backoff_min, c.error_backoff_max),
                "min at least 1ms and not above max",
            ));
        }
        Ok(c)
    }
}
