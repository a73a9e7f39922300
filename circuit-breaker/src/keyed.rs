//! One breaker per key (per upstream host, per tenant), created on first use.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::{CircuitBreaker, CircuitBreakerConfig, ConfigError, Event, Metrics, State};

/// Default bound on the number of keyed breakers.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

struct Entry {
    breaker: CircuitBreaker,
    last_used: AtomicU64,
}

struct KeyedInner<K> {
    name: Arc<str>,
    default: CircuitBreakerConfig,
    overrides: HashMap<K, CircuitBreakerConfig>,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    base: Instant,
    map: RwLock<HashMap<K, Entry>>,
    listeners: RwLock<Vec<Listener>>,
    evicted: AtomicU64,
}

/// A family of breakers, one per key, created on first use with the family's config (or the
/// key's own override), bounded in number: when full, idle keys go first, then the least
/// recently used closed one.
///
/// A breaker evicted while a caller still holds it keeps working for that caller; the next
/// [`get`](Self::get) of its key starts a fresh one.
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreaker, State};
///
/// let upstreams = KeyedCircuitBreaker::<String>::builder("upstream")
///     .config(CircuitBreakerConfig::for_http())
///     .max_keys(1_000)
///     .build()?;
/// let breaker = upstreams.get("10.0.0.7:8080");
/// assert_eq!(breaker.name(), "upstream/10.0.0.7:8080");
/// breaker.force_open();
/// assert_eq!(upstreams.get("10.0.0.7:8080").state(), State::ForcedOpen);
/// assert_eq!(upstreams.metrics().breakers, 1);
/// # Ok::<(), meshwork_circuit_breaker::ConfigError>(())
/// ```
pub struct KeyedCircuitBreaker<K> {
    inner: Arc<KeyedInner<K>>,
}

impl<K> Clone for KeyedCircuitBreaker<K> {
    fn clone(&self) -> Self {
        KeyedCircuitBreaker {
            inner: self.inner.clone(),
        }
    }
}

impl<K: fmt::Debug> fmt::Debug for KeyedCircuitBreaker<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.inner.map.read().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("KeyedCircuitBreaker")
            .field("name", &self.inner.name)
            .field("keys", &keys)
            .field("max_keys", &self.inner.max_keys)
            .finish()
    }
}

/// Totals over every breaker of a [`KeyedCircuitBreaker`].
///
/// ```
/// use meshwork_circuit_breaker::KeyedCircuitBreaker;
///
/// let tenants = KeyedCircuitBreaker::<u64>::builder("tenant").build()?;
/// tenants.get(&7).force_open();
/// tenants.get(&8);
/// let totals = tenants.metrics();
/// assert_eq!((totals.breakers, totals.open), (2, 1));
/// # Ok::<(), meshwork_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyedMetrics {
    /// Breakers alive.
    pub breakers: usize,
    /// Breakers open (including forced open).
    pub open: usize,
    /// Breakers half-open.
    pub half_open: usize,
    /// Calls in all windows.
    pub calls: u64,
    /// Failed calls in all windows.
    pub failed_calls: u64,
    /// Slow calls in all windows.
    pub slow_calls: u64,
    /// Calls refused by the breakers alive.
    pub not_permitted_calls: u64,
    /// Breakers evicted since creation.
    pub evicted: u64,
}

/// Builds a [`KeyedCircuitBreaker`]; see [`KeyedCircuitBreaker::builder`].
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreakerConfig, KeyedCircuitBreaker};
/// use std::time::Duration;
///
/// let hosts = KeyedCircuitBreaker::<String>::builder("host")
///     .override_for("legacy.internal".into(), CircuitBreakerConfig::for_http())
///     .idle_timeout(Duration::from_secs(600))
///     .build()?;
/// assert!(hosts.is_empty());
/// # Ok::<(), meshwork_circuit_breaker::ConfigError>(())
/// ```
#[must_use]
pub struct KeyedBuilder<K> {
    name: Arc<str>,
    default: CircuitBreakerConfig,
    overrides: HashMap<K, CircuitBreakerConfig>,
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
    /// The config of every key without an override. Default: [`CircuitBreakerConfig::default`].
    pub fn config(mut self, config: CircuitBreakerConfig) -> Self {
        self.default = config;
        self
    }

    /// A config for one key.
    pub fn override_for(mut self, key: K, config: CircuitBreakerConfig) -> Self {
        self.overrides.insert(key, config);
        self
    }

    /// The most breakers kept at once. Default 10,000; at least 1.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Breakers unused this long are evicted first when the family is full, and by
    /// [`KeyedCircuitBreaker::evict_idle`]. Default: none; greater than zero.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Validates every config and builds the family.
    pub fn build(self) -> Result<KeyedCircuitBreaker<K>, ConfigError> {
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
        Ok(KeyedCircuitBreaker {
            inner: Arc::new(KeyedInner {
                name: self.name,
                default: self.default,
                overrides: self.overrides,
                max_keys: self.max_keys,
                idle_timeout: self.idle_timeout,
                base: Instant::now(),
                map: RwLock::new(HashMap::new()),
                listeners: RwLock::new(Vec::new()),
                evicted: AtomicU64::new(0),
            }),
        })
    }
}

impl<K> KeyedCircuitBreaker<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A builder for a family named `name`; each breaker is named `name/key`.
    pub fn builder(name: impl Into<Arc<str>>) -> KeyedBuilder<K> {
        KeyedBuilder {
            name: name.into(),
            default: CircuitBreakerConfig::default(),
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

    /// The breaker of `key`, created on first use.
    pub fn get<Q>(&self, key: &Q) -> CircuitBreaker
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = self.now();
        {
            let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
            if let Some(entry) = map.get(key) {
                entry.last_used.store(now, Relaxed);
                return entry.breaker.clone();
            }
        }
        let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = map.get(key) {
            entry.last_used.store(now, Relaxed);
            return entry.breaker.clone();
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
        let breaker = CircuitBreaker::new(format!("{}/{}", self.inner.name, key), config);
        for listener in self
            .inner
            .listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            breaker.add_listener(listener.clone());
        }
        map.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(now),
            },
        );
        breaker
    }

    /// Removes idle entries; if `make_room` and still full, removes the least recently used,
    /// preferring breakers that are not open (an open breaker still protects its upstream).
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
                    let protecting = matches!(
                        e.breaker.state(),
                        State::Open | State::HalfOpen | State::ForcedOpen
                    );
                    (protecting, e.last_used.load(Relaxed))
                })
                .map(|(k, _)| k.clone());
            if let Some(k) = victim {
                map.remove(&k);
            }
        }
        let removed = before - map.len();
        self.inner.evicted.fetch_add(removed as u64, Relaxed);
        removed
    }

    /// Removes breakers unused for the idle timeout; returns how many. Call it from a periodic
    /// task if keys come and go.
    pub fn evict_idle(&self) -> usize {
        let now = self.now();
        let mut map = self.inner.map.write().unwrap_or_else(|p| p.into_inner());
        self.evict(&mut map, now, false)
    }

    /// Number of breakers alive.
    pub fn len(&self) -> usize {
        self.inner.map.read().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no breaker has been created yet (or all were evicted).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `listener` with the events of every breaker of the family, current and future.
    pub fn on_event<F>(&self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        let listener: Listener = Arc::new(listener);
        // Hold the map lock so no breaker is created between the two steps.
        let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
        self.inner
            .listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(listener.clone());
        for entry in map.values() {
            entry.breaker.add_listener(listener.clone());
        }
    }

    /// Each key's metrics.
    pub fn metrics_by_key(&self) -> Vec<(K, Metrics)> {
        let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(k, e)| (k.clone(), e.breaker.metrics()))
            .collect()
    }

    /// Totals over every breaker of the family.
    pub fn metrics(&self) -> KeyedMetrics {
        let map = self.inner.map.read().unwrap_or_else(|p| p.into_inner());
        let mut total = KeyedMetrics {
            breakers: map.len(),
            evicted: self.inner.evicted.load(Relaxed),
            ..KeyedMetrics::default()
        };
        for e in map.values() {
            let m = e.breaker.metrics();
            match m.state {
                State::Open | State::ForcedOpen => total.open += 1,
                State::HalfOpen => total.half_open += 1,
                _ => {}
            }
            total.calls += m.calls;
            total.failed_calls += m.failed_calls;
            total.slow_calls += m.slow_calls;
            total.not_permitted_calls += m.not_permitted_calls;
        }
        total
    }
}
