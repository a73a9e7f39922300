//! The idempotency store in Redis; see [`RedisIdempotencyStore`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ExistenceCheck, SetExpiry, SetOptions};

use super::idempotency::{DEFAULT_IDEMPOTENCY_TTL, IdempotencyKey, IdempotencyStore};
use crate::BusError;

/// Default key prefix of a [`RedisIdempotencyStore`].
pub const DEFAULT_REDIS_IDEMPOTENCY_PREFIX: &str = "meshwork:handled";
/// Longest TTL a [`RedisIdempotencyConfig`] accepts: 100 years.
pub const MAX_REDIS_IDEMPOTENCY_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);
/// How long [`RedisIdempotencyStore::connect`] waits for one connection attempt, and the
/// store for one reply.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of a [`RedisIdempotencyStore`].
///
/// ```
/// use meshwork_event_bus::RedisIdempotencyConfig;
/// use std::time::Duration;
///
/// let config = RedisIdempotencyConfig::builder()
///     .prefix("orders:handled")
///     .ttl(Duration::from_secs(7 * 24 * 3600))
///     .build()?;
/// assert_eq!(config.prefix, "orders:handled");
/// assert!(RedisIdempotencyConfig::builder().prefix("").build().is_err());
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisIdempotencyConfig {
    /// The start of every key; the group and message id follow, separated by `:`.
    pub prefix: String,
    /// How long Redis keeps a key after it is recorded.
    pub ttl: Duration,
    /// Longest wait for one connection attempt and for one reply (used by
    /// [`RedisIdempotencyStore::connect`]).
    pub timeout: Duration,
}

impl Default for RedisIdempotencyConfig {
    fn default() -> Self {
        RedisIdempotencyConfig {
            prefix: DEFAULT_REDIS_IDEMPOTENCY_PREFIX.to_owned(),
            ttl: DEFAULT_IDEMPOTENCY_TTL,
            timeout: DEFAULT_REDIS_TIMEOUT,
        }
    }
}

impl RedisIdempotencyConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RedisIdempotencyConfigBuilder {
        RedisIdempotencyConfigBuilder {
            config: RedisIdempotencyConfig::default(),
        }
    }

    /// Checks every field; [`RedisIdempotencyConfigBuilder::build`] calls this.
    ///
    /// ```
    /// use meshwork_event_bus::RedisIdempotencyConfig;
    ///
    /// assert!(RedisIdempotencyConfig::default().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), BusError> {
        if self.prefix.is_empty() {
            return Err(BusError::invalid("prefix", "", "must not be empty"));
        }
        if self.ttl.as_millis() == 0 {
            return Err(BusError::invalid(
                "ttl",
                format!("{:?}", self.ttl),
                "must be at least 1 ms",
            ));
        }
        if self.ttl > MAX_REDIS_IDEMPOTENCY_TTL {
            return Err(BusError::invalid(
                "ttl",
                format!("{:?}", self.ttl),
                "must be at most 100 years",
            ));
        }
        if self.timeout.is_zero() {
            return Err(BusError::invalid(
                "timeout",
                "0s",
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

/// Builds a validated [`RedisIdempotencyConfig`].
///
/// ```
/// use meshwork_event_bus::RedisIdempotencyConfig;
/// use std::time::Duration;
///
/// let err = RedisIdempotencyConfig::builder().ttl(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.to_string(), "invalid ttl \"0ns\": must be at least 1 ms");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisIdempotencyConfigBuilder {
    config: RedisIdempotencyConfig,
}

impl RedisIdempotencyConfigBuilder {
    /// The start of every key. Default [`DEFAULT_REDIS_IDEMPOTENCY_PREFIX`]
    /// (`meshwork:handled`); must not be empty.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.prefix = prefix.into();
        self
    }

    /// How long a key is kept after it is recorded: longer than duplicates can arrive.
    /// Default [`DEFAULT_IDEMPOTENCY_TTL`] (24 h); from 1 ms to 100 years.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// Longest wait for one connection attempt and one reply, used by
    /// [`RedisIdempotencyStore::connect`]. Default [`DEFAULT_REDIS_TIMEOUT`] (5 s); greater
    /// than zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<RedisIdempotencyConfig, BusError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// An [`IdempotencyStore`] in Redis, shared by every replica using the same server. Cheap to
/// clone (clones share the connection).
///
/// Keys look like `<prefix>:<group>:<message id>` (`meshwork:handled:billing:0190b6b4-...`);
/// the value is `1`. `record` uses `SET ... NX`, so recording a key twice is not an error and
/// does not extend its life; `is_handled` is `EXISTS`. Redis keeps the keys for the
/// configured TTL, so no purge is needed. The expiry is set in milliseconds (`PX`), so any
/// TTL of at least 1 ms is honoured exactly.
///
/// It protects every replica of a service that shares the Redis server. It can't
/// record in the same transaction as a handler's database writes: a crash between the
/// handler's commit and the record makes the message be handled again on redelivery. Where
/// that matters, use the SQL store's `record_in` (feature `sql`) inside the handler's
/// transaction.
///
/// ```no_run
/// use meshwork_event_bus::{
///     IdempotencyKey, IdempotencyStore, MessageId, RedisIdempotencyConfig,
///     RedisIdempotencyStore,
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let store =
///     RedisIdempotencyStore::connect("redis://127.0.0.1:6379", RedisIdempotencyConfig::default())
///         .await?;
/// let key = IdempotencyKey::new("billing", MessageId::new());
/// assert!(!store.is_handled(&key).await?);
/// store.record(&key).await?;
/// assert!(store.is_handled(&key).await?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    connection: ConnectionManager,
    prefix: String,
    ttl_millis: u64,
}

impl RedisIdempotencyStore {
    /// Connects to the Redis server at `url` (`redis://[:password@]host:port[/db]`) with a
    /// connection manager that reconnects on its own, waiting up to `config.timeout` per
    /// connection attempt and per reply.
    ///
    /// Fails with [`BusError::Invalid`] for a bad config or URL, and with
    /// [`BusError::Backend`] when the server can't be reached.
    ///
    /// ```no_run
    /// use meshwork_event_bus::{RedisIdempotencyConfig, RedisIdempotencyStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
    /// let config = RedisIdempotencyConfig::builder().prefix("billing:handled").build()?;
    /// let store = RedisIdempotencyStore::connect("redis://127.0.0.1:6379", config).await?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str, config: RedisIdempotencyConfig) -> Result<Self, BusError> {
        config.validate()?;
        let client = redis::Client::open(url)
            .map_err(|_| BusError::invalid("redis url", redact(url), "is not a Redis URL"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2);
        let connection = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(|e| BusError::backend("connecting to Redis for the idempotency store", e))?;
        RedisIdempotencyStore::new(connection, config)
    }

    /// A store over a connection manager the caller made (to share it, or to set its own
    /// retry and timeout settings). `config.timeout` is not used.
    ///
    /// ```no_run
    /// use meshwork_event_bus::{RedisIdempotencyConfig, RedisIdempotencyStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = redis::Client::open("redis://127.0.0.1:6379")?;
    /// let manager = redis::aio::ConnectionManager::new(client).await?;
    /// let store = RedisIdempotencyStore::new(manager, RedisIdempotencyConfig::default())?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn new(
        connection: ConnectionManager,
        config: RedisIdempotencyConfig,
    ) -> Result<Self, BusError> {
        config.validate()?;
        Ok(RedisIdempotencyStore {
            connection,
            // validate() bounds the TTL to 100 years, far below u64::MAX milliseconds.
            ttl_millis: u64::try_from(config.ttl.as_millis()).unwrap_or(u64::MAX),
            prefix: config.prefix,
        })
    }

    /// The Redis key of `key`: `<prefix>:<group>:<message id>`.
    ///
    /// ```no_run
    /// use meshwork_event_bus::{
    ///     IdempotencyKey, MessageId, RedisIdempotencyConfig, RedisIdempotencyStore,
    /// };
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
    /// let store =
    ///     RedisIdempotencyStore::connect("redis://127.0.0.1:6379", RedisIdempotencyConfig::default())
    ///         .await?;
    /// let id = MessageId::new();
    /// assert_eq!(
    ///     store.redis_key(&IdempotencyKey::new("billing", id)),
    ///     format!("meshwork:handled:billing:{id}")
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn redis_key(&self, key: &IdempotencyKey) -> String {
        format!("{}:{}:{}", self.prefix, key.group(), key.message_id())
    }
}

/// `url` with any password replaced, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl fmt::Debug for RedisIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisIdempotencyStore")
            .field("prefix", &self.prefix)
            .field("ttl", &Duration::from_millis(self.ttl_millis))
            .finish_non_exhaustive()
    }
}

impl IdempotencyStore for RedisIdempotencyStore {
    fn is_handled(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<bool, BusError>> + Send {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection.clone();
        async move {
            connection
                .exists::<_, bool>(&redis_key)
                .await
                .map_err(|e| BusError::backend(format!("redis EXISTS {redis_key}"), e))
        }
    }

    fn record(&self, key: &IdempotencyKey) -> impl Future<Output = Result<(), BusError>> + Send {
        let redis_key = self.redis_key(key);
        let mut connection = self.connection.clone();
        let options = SetOptions::default()
            .conditional_set(ExistenceCheck::NX)
            .with_expiration(SetExpiry::PX(self.ttl_millis));
        async move {
            // The reply is OK when set, nil when the key was there already: both are fine.
            connection
                .set_options::<_, _, Option<String>>(&redis_key, 1, options)
                .await
                .map(drop)
                .map_err(|e| BusError::backend(format!("redis SET NX {redis_key}"), e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_validated() {
        assert!(RedisIdempotencyConfig::default().validate().is_ok());
        let err = RedisIdempotencyConfig::builder()
            .prefix("")
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "invalid prefix \"\": must not be empty");
        let err = RedisIdempotencyConfig::builder()
            .ttl(Duration::from_micros(999))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("at least 1 ms"), "{err}");
        let err = RedisIdempotencyConfig::builder()
            .ttl(MAX_REDIS_IDEMPOTENCY_TTL + Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("at most 100 years"), "{err}");
        let err = RedisIdempotencyConfig::builder()
            .timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid timeout"), "{err}");
        let ok = RedisIdempotencyConfig::builder()
            .ttl(Duration::from_millis(1))
            .build()
            .unwrap();
        assert_eq!(ok.ttl, Duration::from_millis(1));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://:hunter2@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(redact("redis://cache:6379"), "redis://cache:6379");
        assert_eq!(redact("not a url"), "not a url");
    }
}
