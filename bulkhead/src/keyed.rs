//! One bulkhead per key (per tenant, per upstream host), created on first use.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::bulkhead::nanos_since;
use crate::error::Detail;
use crate::event::Listeners;
use crate::{Bulkhead, BulkheadConfig, ConfigError, Error, Event, RejectReason, Rejected};

/// Default bound on the number of keyed bulkheads.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

struct Entry {
    bulkhead: Bulkhead,
    last_used: AtomicU64,
}

struct KeyedInner<K> {
    name: Arc<str>,
    default: BulkheadConfig,
    overrides: HashMap<K, BulkheadConfig>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    base: Instant,
    map: RwLock<HashMap<K, Entry>>,
    listeners: Arc<Listeners>,
    evicted: AtomicU64,
}

/// A family of bulkheads, one per key, created on first use with the family's config (or
/// the key's own override), bounded in number.
///
/// When the family is full, a new key first evicts keys idle for `idle_timeout`, then the
/// least recently used key nobody holds. A key is never evicted while anyone holds its
/// [`Bulkhead`] (a handle from [`get`](Self::get), a permit, a waiting call): its users would
/// carry on with a bulkhead the family has forgotten while [`get`](Self::get) made a fresh
/// one, and the key would get twice its limit. If every key is held, the new key is refused
/// with [`RejectReason::TooManyKeys`].
///
/// ```
/// use meshwork_bulkhead::{BulkheadConfig, KeyedBulkhead};
///
/// let tenants = KeyedBulkhead::<String>::builder("tenant")
///     .config(BulkheadConfig::builder().max_concurrent_calls(2).build()?)
///     .max_keys(1_000)
///     .build()?;
/// let acme = tenants.get("acme")?;
/// assert_eq!(acme.name(), "tenant/acme");
/// let _a = acme.try_acquire()?;
/// let _b = acme.try_acquire()?;
/// assert!(tenants.get("acme")?.try_acquire().is_err()); // acme is full...
/// assert!(tenants.get("globex")?.try_acquire().is_ok()); // ...globex is not
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedBulkhead<K> {
    inner: Arc<KeyedInner<K>>,
}

impl<K> Clone for KeyedBulkhead<K> {
    fn clone(&self) -> Self {
        KeyedBulkhead {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for KeyedBulkhead<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkhead")
            .field("name", &self.inner.name)
            .field("keys", &self.inner.map.read().map(|m| m.len()).unwrap_or(0))
            .field("max_keys", &self.inner.max_keys)
            .field("idle_timeout", &self.inner.idle_timeout)
            .finish()
    }
}

/// Builds a [`KeyedBulkhead`]; see [`KeyedBulkhead::builder`].
///
/// ```
/// use meshwork_bulkhead::{BulkheadConfig, KeyedBulkhead};
/// use std::time::Duration;
///
/// let hosts = KeyedBulkhead::<String>::builder("host")
///     .config(BulkheadConfig::builder().max_concurrent_calls(20).build()?)
///     .override_for(
///         "search.internal".to_string(),
///         BulkheadConfig::builder().max_concurrent_calls(100).build()?,
///     )
///     .max_keys(500)
///     .idle_timeout(Duration::from_secs(600))
///     .build()?;
/// assert_eq!(hosts.get("search.internal")?.limit(), 100);
/// assert_eq!(hosts.get("mail.internal")?.limit(), 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct KeyedBuilder<K> {
    name: Arc<str>,
    default: BulkheadConfig,
    overrides: HashMap<K, BulkheadConfig>,
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
    /// The config of every key without an override. Default: [`BulkheadConfig::default`].
    pub fn config(mut self, config: BulkheadConfig) -> Self {
        self.default = config;
        self
    }

    /// A config for one key.
    pub fn override_for(mut self, key: K, config: BulkheadConfig) -> Self {
        self.overrides.insert(key, config);
        self
    }

    /// The most bulkheads kept at once. Default [`DEFAULT_MAX_KEYS`]; at least 1.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Bulkheads unused this long (and held by nobody) are evicted first when the family is
    /// full, and by [`KeyedBulkhead::evict_idle`]. Default: none; greater than zero.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Validates every config and builds the family.
    pub fn build(self) -> Result<KeyedBulkhead<K>, ConfigError> {
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
        Ok(KeyedBulkhead {
            inner: Arc::new(KeyedInner {
                name: self.name,
                default: self.default,
                overrides: self.overrides,
                max_keys: self.max_keys,
                idle_timeout: self.idle_timeout,
                base: Instant::now(),
                map: RwLock::new(HashMap::new()),
                listeners: Arc::default(),
                evicted: AtomicU64::new(0),
            }),
        })
    }
}

impl<K> KeyedBulkhead<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A builder for a family named `name`; each bulkhead is named `name/key`.
    pub fn builder(name: impl Into<Arc<str>>) -> KeyedBuilder<K> {
        KeyedBuilder {
            name: name.into(),
            default: BulkheadConfig::default(),
            overrides: HashMap::new(),
            max_keys: DEFAULT_MAX_KEYS,
            idle_timeout: None,
        }
    }

    /// The family's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    fn now(&self) -> u64 {
        nanos_since(self.inner.base)
    }

    /// The bulkhead of `key`, created on first use; refused only when the family is full and
    /// every key is held (see the type's docs). Holding the returned handle keeps the key
    /// from being evicted; drop it when done.
    pub fn get<Q>(&self, key: &Q) -> Result<Bulkhead, Rejected>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Relaxed);
                return Ok(entry.bulkhead.clone());
            }
        }
        let mut evicted = Vec::new();
        let result = {
            let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Relaxed);
                return Ok(entry.bulkhead.clone());
            }
            if map.len() >= self.inner.max_keys {
                self.evict(&mut map, now, true, &mut evicted);
            }
            if map.len() >= self.inner.max_keys {
                Err(map.len())
            } else {
                let key = key.to_owned();
                let config = self
                    .inner
                    .overrides
                    .get::<K>(&key)
                    .unwrap_or(&self.inner.default)
                    .clone();
                let bulkhead = Bulkhead::with_listeners(
                    format!("{}/{}", self.inner.name, key).into(),
                    config,
                    self.inner.listeners.clone(),
                );
                map.insert(
                    key,
                    Entry {
                        bulkhead: bulkhead.clone(),
                        last_used: AtomicU64::new(now),
                    },
                );
                Ok(bulkhead)
            }
        };
        self.report_evicted(evicted);
        result.map_err(|keys| self.too_many_keys(keys))
    }

    #[cold]
    fn too_many_keys(&self, keys: usize) -> Rejected {
        #[cfg(feature = "tracing")]
        tracing::debug!(bulkhead = %self.inner.name, keys, "keyed bulkhead is full");
        if self.inner.listeners.active() {
            self.inner.listeners.deliver(&Event::Rejected {
                name: self.inner.name.clone(),
                partition: None,
                reason: RejectReason::TooManyKeys,
            });
        }
        Rejected::new(
            self.inner.name.clone(),
            None,
            RejectReason::TooManyKeys,
            keys,
            self.inner.max_keys,
            Detail::None,
        )
    }

    /// Runs `f` under a permit of `key`'s bulkhead (see [`Bulkhead::call`]).
    pub async fn call<Q, F, Fut, T, E>(&self, key: &Q, f: F) -> Result<T, Error<E>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.get(key)?.call(f).await
    }

    /// Removes idle entries nobody holds; if `make_room` and still full, removes the least
    /// recently used one nobody holds. Runs under the map's write lock, so no `get` can hand
    /// out a handle to an entry while it is judged.
    fn evict(
        &self,
        map: &mut HashMap<K, Entry>,
        now: u64,
        make_room: bool,
        evicted: &mut Vec<Arc<str>>,
    ) {
        if let Some(idle) = self.inner.idle_timeout {
            let idle = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX);
            map.retain(|_, e| {
                let keep =
                    now.saturating_sub(e.last_used.load(Relaxed)) < idle || e.bulkhead.is_shared();
                if !keep {
                    evicted.push(e.bulkhead.name().into());
                }
                keep
            });
        }
        if make_room && map.len() >= self.inner.max_keys {
            let victim = map
                .iter()
                .filter(|(_, e)| !e.bulkhead.is_shared())
                .min_by_key(|(_, e)| e.last_used.load(Relaxed))
                .map(|(k, _)| k.clone());
            if let Some(entry) = victim.and_then(|k| map.remove(&k)) {
                evicted.push(entry.bulkhead.name().into());
            }
        }
        self.inner.evicted.fetch_add(evicted.len() as u64, Relaxed);
    }

    fn report_evicted(&self, evicted: Vec<Arc<str>>) {
        if self.inner.listeners.active() {
            for name in evicted {
                self.inner.listeners.deliver(&Event::KeyEvicted { name });
            }
        }
    }

    /// Removes bulkheads unused for the idle timeout and held by nobody; returns how many.
    /// Call it from a periodic task if keys come and go.
    ///
    /// ```
    /// use meshwork_bulkhead::KeyedBulkhead;
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let upstreams = KeyedBulkhead::<String>::builder("upstream")
    ///     .idle_timeout(Duration::from_secs(300))
    ///     .build()?;
    /// upstreams.call("db-1", || async { Ok::<_, std::io::Error>(()) }).await?;
    /// tokio::time::advance(Duration::from_secs(301)).await;
    /// assert_eq!(upstreams.evict_idle(), 1);
    /// assert!(upstreams.is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub fn evict_idle(&self) -> usize {
        let now = self.now();
        let mut evicted = Vec::new();
        {
            let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
            self.evict(&mut map, now, false, &mut evicted);
        }
        let n = evicted.len();
        self.report_evicted(evicted);
        n
    }

    /// Number of bulkheads alive.
    pub fn len(&self) -> usize {
        self.inner.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no bulkhead has been created yet (or all were evicted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bulkheads evicted since the family was created.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Relaxed)
    }

    /// Calls `listener` with the events of every bulkhead of the family, current and future,
    /// and the family's own (key evictions, refused keys).
    pub fn on_event<F>(&self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.inner.listeners.add(Arc::new(listener));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validates() {
        let err = KeyedBulkhead::<String>::builder("k")
            .max_keys(0)
            .build()
            .unwrap_err();
        assert_eq!(err.to_string(), "max_keys must be at least 1, got 0");
        let err = KeyedBulkhead::<String>::builder("k")
            .idle_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "idle_timeout");
        let bad = BulkheadConfig {
            max_concurrent_calls: 0,
            ..BulkheadConfig::default()
        };
        let err = KeyedBulkhead::<String>::builder("k")
            .override_for("x".into(), bad)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_concurrent_calls");
    }

    #[test]
    fn overrides_apply_per_key() {
        let keyed = KeyedBulkhead::<String>::builder("k")
            .override_for(
                "big".into(),
                BulkheadConfig::builder()
                    .max_concurrent_calls(100)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(keyed.get("big").unwrap().limit(), 100);
        assert_eq!(
            keyed.get("small").unwrap().limit(),
            crate::DEFAULT_MAX_CONCURRENT_CALLS
        );
        assert_eq!(keyed.len(), 2);
        assert!(format!("{keyed:?}").contains("keys: 2"));
    }
}
