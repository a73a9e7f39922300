//! One retry policy per key (per upstream host, per tenant), created on first use.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::event::Listener;
use crate::{ConfigError, Event, Retry, RetryConfig};

/// Default bound on the number of keyed policies.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

struct Entry {
    retry: Retry,
    last_used: AtomicU64,
}

struct KeyedInner<K> {
    name: Arc<str>,
    default: RetryConfig,
    overrides: HashMap<K, RetryConfig>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    base: Instant,
    map: RwLock<HashMap<K, Entry>>,
    listeners: RwLock<Vec<Listener>>,
}

/// A family of retry policies, one per key, created on first use with the family's config
/// (or the key's own override), bounded in number: when full, idle keys go first, then the
/// least recently used one.
///
/// # Why one budget per upstream
/// A single [`Retry`] shared by every upstream has one budget: a sick upstream whose calls all
/// fail spends it, and a healthy upstream's rare failures then go unretried. With a policy per
/// host, each upstream earns and spends its own budget: one sick upstream can't spend
/// another's.
///
/// A policy evicted while a caller still holds it keeps working for that caller; the next
/// [`get`](Self::get) of its key starts a fresh one, with a fresh budget. Set `max_keys` above
/// the number of keys in use so that busy keys are not evicted.
///
/// ```
/// use meshwork_retry::{KeyedRetry, RetryConfig};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork_retry::ConfigError> {
/// let upstreams = KeyedRetry::<String>::builder("upstream")
///     .config(RetryConfig::for_http())
///     .max_keys(1_000)
///     .build()?;
/// let retry = upstreams.get("10.0.0.7:8080");
/// assert_eq!(retry.name(), "upstream/10.0.0.7:8080");
/// let reply = retry.call(|| async { Ok::<_, std::io::Error>("pong") }).await;
/// assert_eq!(reply.unwrap(), "pong");
/// assert_eq!(upstreams.len(), 1);
/// # Ok(())
/// # }
/// ```
pub struct KeyedRetry<K> {
    inner: Arc<KeyedInner<K>>,
}

impl<K> Clone for KeyedRetry<K> {
    fn clone(&self) -> Self {
        KeyedRetry {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for KeyedRetry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.map.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("KeyedRetry")
            .field("name", &self.inner.name)
            .field("keys", &keys)
            .field("max_keys", &self.inner.max_keys)
            .finish()
    }
}

/// Builds a [`KeyedRetry`]; see [`KeyedRetry::builder`].
///
/// ```
/// use meshwork_retry::{KeyedRetry, RetryConfig};
/// use std::time::Duration;
///
/// let hosts = KeyedRetry::<String>::builder("host")
///     .override_for("legacy.internal".into(), RetryConfig::builder().max_attempts(5).build()?)
///     .idle_timeout(Duration::from_secs(600))
///     .build()?;
/// assert!(hosts.is_empty());
/// # Ok::<(), meshwork_retry::ConfigError>(())
/// ```
#[must_use]
pub struct KeyedBuilder<K> {
    name: Arc<str>,
    default: RetryConfig,
    overrides: HashMap<K, RetryConfig>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
}

impl<K: fmt::Debug> fmt::Debug for KeyedBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBuilder")
            .field("name", &self.name)
            .field("default", &self.default)
            .field("overrides", &self.overrides)
            .field("max_keys", &self.max_keys)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl<K> KeyedBuilder<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// The config of every key without an override. Default: [`RetryConfig::default`].
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.default = config;
        self
    }

    /// A config for one key.
    pub fn override_for(mut self, key: K, config: RetryConfig) -> Self {
        self.overrides.insert(key, config);
        self
    }

    /// The most policies kept at once. Default [`DEFAULT_MAX_KEYS`] (10,000); at least 1.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Policies unused this long are evicted first when the family is full, and by
    /// [`KeyedRetry::evict_idle`]. Default: none; greater than zero.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Validates every config and builds the family.
    pub fn build(self) -> Result<KeyedRetry<K>, ConfigError> {
        self.default.validate()?;
        for config in self.overrides.values() {
            config.validate()?;
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", 0, "at least 1"));
        }
        if self.idle_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "idle_timeout",
                "0s",
                "greater than zero (or unset)",
            ));
        }
        Ok(KeyedRetry {
            inner: Arc::new(KeyedInner {
                name: self.name,
                default: self.default,
                overrides: self.overrides,
                max_keys: self.max_keys,
                idle_timeout: self.idle_timeout,
                base: Instant::now(),
                map: RwLock::new(HashMap::new()),
                listeners: RwLock::new(Vec::new()),
            }),
        })
    }
}

impl<K> KeyedRetry<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A builder for a family named `name`; each policy is named `name/key`.
    pub fn builder(name: impl Into<Arc<str>>) -> KeyedBuilder<K> {
        KeyedBuilder {
            name: name.into(),
            default: RetryConfig::default(),
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: None,
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.inner.base)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }

    /// The policy of `key`, created on first use (a read lock and one `Arc` clone once it
    /// exists). Keep the returned [`Retry`] for a burst of calls rather than looking it up for
    /// each.
    pub fn get<Q>(&self, key: &Q) -> Retry
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Relaxed);
                return entry.retry.clone();
            }
        }
        let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get(key) {
            entry.last_used.store(now, Relaxed);
            return entry.retry.clone();
        }
        if map.len() >= self.inner.max_keys {
            self.evict(&mut map, now, true);
        }
        let key = key.to_owned();
        let config = self
            .inner
            .overrides
            .get::<K>(&key)
            .unwrap_or(&self.inner.default)
            .clone();
        let retry = Retry::new(format!("{}/{}", self.inner.name, key), config);
        for listener in self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            retry.add_listener(listener.clone());
        }
        map.insert(
            key,
            Entry {
                retry: retry.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        retry
    }

    /// Removes idle entries; if `make_room` and still full, removes the least recently used,
    /// preferring policies with no call sequence retrying right now.
    fn evict(&self, map: &mut HashMap<K, Entry>, now: u64, make_room: bool) -> usize {
        let before = map.len();
        if let Some(idle) = self.inner.idle_timeout {
            let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
            map.retain(|_, e| now.saturating_sub(e.last_used.load(Relaxed)) < idle);
        }
        if make_room && map.len() >= self.inner.max_keys {
            let victim = map
                .iter()
                .min_by_key(|(_, e)| {
                    let retrying = e.retry.budget().is_some_and(|b| b.concurrent_retries() > 0);
                    (retrying, e.last_used.load(Relaxed))
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        before - map.len()
    }

    /// Removes policies unused for the idle timeout (none without one); returns how many.
    /// Call it from a periodic task if keys come and go.
    ///
    /// ```
    /// use meshwork_retry::KeyedRetry;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), meshwork_retry::ConfigError> {
    /// let tenants = KeyedRetry::<u64>::builder("tenant")
    ///     .idle_timeout(Duration::from_secs(60))
    ///     .build()?;
    /// tenants.get(&7);
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(tenants.evict_idle(), 1);
    /// assert!(tenants.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn evict_idle(&self) -> usize {
        let now = self.now();
        let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        self.evict(&mut map, now, false)
    }

    /// Number of policies alive.
    pub fn len(&self) -> usize {
        self.inner.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no policy has been created yet (or all were evicted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `listener` with the events of every policy of the family, current and future;
    /// each event names its policy (`name/key`).
    ///
    /// ```
    /// use meshwork_retry::{Event, KeyedRetry};
    /// use std::sync::{Arc, Mutex};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), meshwork_retry::ConfigError> {
    /// let hosts = KeyedRetry::<String>::builder("host").build()?;
    /// let retried = Arc::new(Mutex::new(Vec::new()));
    /// let sink = retried.clone();
    /// hosts.on_event(move |e| {
    ///     if let Event::Retry { name, .. } = e {
    ///         sink.lock().unwrap().push(name.to_string());
    ///     }
    /// });
    /// let mut first = true;
    /// let _ = hosts
    ///     .get("a.internal")
    ///     .call(|| {
    ///         let fail = std::mem::take(&mut first);
    ///         async move { if fail { Err(std::fmt::Error) } else { Ok(()) } }
    ///     })
    ///     .await;
    /// assert_eq!(*retried.lock().unwrap(), ["host/a.internal"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_event<F>(&self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        let listener: Listener = Arc::new(listener);
        // Hold the map lock so no policy is created between the two steps.
        let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener.clone());
        for entry in map.values() {
            entry.retry.add_listener(listener.clone());
        }
    }
}
