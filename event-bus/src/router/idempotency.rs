//! Idempotent handling: remember which (group, message id) pairs were handled, so that a
//! duplicate delivery is acknowledged without running the handler again.
//!
//! The router asks [`IdempotencyStore::is_handled`] before running the handler and calls
//! [`IdempotencyStore::record`] only **after** the handler succeeded and its outputs were
//! confirmed by the backend. Recording first (as some libraries do) loses messages: a handler
//! that fails after the record sees its redelivery skipped as a "duplicate". The key is the
//! message id, never a payload hash: two distinct messages with the same payload are both
//! handled.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::{BoxFuture, BusError, MessageId};

/// Default number of keys a [`MemoryIdempotencyStore`] remembers.
pub const DEFAULT_IDEMPOTENCY_CAPACITY: usize = 100_000;
/// Default time a [`MemoryIdempotencyStore`] remembers a key.
pub const DEFAULT_IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// What an idempotency store keys on: the consumer group and the message id.
///
/// ```
/// use meshwork_event_bus::{IdempotencyKey, MessageId};
///
/// let id = MessageId::new();
/// let key = IdempotencyKey::new("billing", id);
/// assert_eq!(key.group(), "billing");
/// assert_eq!(key.message_id(), id);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey {
    group: Arc<str>,
    message_id: MessageId,
}

impl IdempotencyKey {
    /// The key of `message_id` handled by `group`.
    pub fn new(group: impl Into<Arc<str>>, message_id: MessageId) -> Self {
        IdempotencyKey {
            group: group.into(),
            message_id,
        }
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The message id.
    pub fn message_id(&self) -> MessageId {
        self.message_id
    }
}

/// Remembers which messages a group has handled.
///
/// `record` must be idempotent (recording a key twice is not an error), and a key recorded
/// must be reported by `is_handled` for at least as long as duplicates can arrive.
///
/// # Recording in the handler's own transaction (SQL stores)
/// A SQL store keeps a table `handled(group, message_id, handled_at)` with a primary key on
/// `(group, message_id)`. For exactly-once effects on the same database, the handler inserts
/// the key itself, in the transaction that makes its business change (building the key with
/// [`IdempotencyKey::new`] from its group and [`Message::id`](crate::Message::id)): either both
/// commit or neither does, and a concurrent duplicate fails on the primary key. The router's
/// own `record` call afterwards is then an `INSERT ... ON CONFLICT DO NOTHING`, which is why
/// `record` must accept a key recorded already.
///
/// # Example
/// ```
/// use meshwork_event_bus::{IdempotencyKey, IdempotencyStore, MemoryIdempotencyStore, MessageId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let store = MemoryIdempotencyStore::new();
/// let key = IdempotencyKey::new("billing", MessageId::new());
/// assert!(!store.is_handled(&key).await?);
/// store.record(&key).await?;
/// store.record(&key).await?; // idempotent
/// assert!(store.is_handled(&key).await?);
/// # Ok(())
/// # }
/// ```
pub trait IdempotencyStore: Send + Sync {
    /// Whether `key` was recorded (and has not expired).
    fn is_handled(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<bool, BusError>> + Send;

    /// Records `key` as handled; recording it again is not an error.
    fn record(&self, key: &IdempotencyKey) -> impl Future<Output = Result<(), BusError>> + Send;
}

/// The object-safe twin of [`IdempotencyStore`]; every store is one. The router holds its
/// store as `Arc<dyn DynIdempotencyStore>`.
pub trait DynIdempotencyStore: Send + Sync {
    /// See [`IdempotencyStore::is_handled`].
    fn is_handled_dyn<'a>(
        &'a self,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<bool, BusError>>;
    /// See [`IdempotencyStore::record`].
    fn record_dyn<'a>(&'a self, key: &'a IdempotencyKey) -> BoxFuture<'a, Result<(), BusError>>;
}

impl<S: IdempotencyStore> DynIdempotencyStore for S {
    fn is_handled_dyn<'a>(
        &'a self,
        key: &'a IdempotencyKey,
    ) -> BoxFuture<'a, Result<bool, BusError>> {
        Box::pin(self.is_handled(key))
    }

    fn record_dyn<'a>(&'a self, key: &'a IdempotencyKey) -> BoxFuture<'a, Result<(), BusError>> {
        Box::pin(self.record(key))
    }
}

/// An in-process [`IdempotencyStore`]: remembers up to `capacity` keys, each for `ttl`;
/// when full, the oldest key is forgotten first. Cheap to clone (clones share the keys).
///
/// It protects one process only; services with several replicas want a shared store (Redis,
/// or SQL in the handler's transaction).
///
/// ```
/// use meshwork_event_bus::MemoryIdempotencyStore;
/// use std::time::Duration;
///
/// let store = MemoryIdempotencyStore::with_limits(10_000, Duration::from_secs(3600))?;
/// assert!(MemoryIdempotencyStore::with_limits(0, Duration::from_secs(1)).is_err());
/// # let _ = store;
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[derive(Clone)]
pub struct MemoryIdempotencyStore {
    inner: Arc<Mutex<MemoryState>>,
}

struct MemoryState {
    capacity: usize,
    ttl: Duration,
    /// Key -> when it was recorded.
    keys: HashMap<IdempotencyKey, Instant>,
    /// Keys in recording order (the order they expire in).
    order: VecDeque<(Instant, IdempotencyKey)>,
}

impl MemoryState {
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            let expired = now.saturating_duration_since(*at) >= self.ttl;
            if !expired && self.order.len() <= self.capacity {
                break;
            }
            if let Some((at, key)) = self.order.pop_front() {
                // Only forget the key if this entry is its latest recording.
                if self.keys.get(&key) == Some(&at) {
                    self.keys.remove(&key);
                }
            }
        }
    }
}

impl MemoryIdempotencyStore {
    /// A store remembering [`DEFAULT_IDEMPOTENCY_CAPACITY`] keys for
    /// [`DEFAULT_IDEMPOTENCY_TTL`] (24 h).
    pub fn new() -> Self {
        MemoryIdempotencyStore::from_parts(DEFAULT_IDEMPOTENCY_CAPACITY, DEFAULT_IDEMPOTENCY_TTL)
    }

    /// A store remembering up to `capacity` keys (at least 1) for `ttl` (greater than zero).
    pub fn with_limits(capacity: usize, ttl: Duration) -> Result<Self, BusError> {
        if capacity == 0 {
            return Err(BusError::invalid(
                "idempotency capacity",
                "0",
                "must be at least 1",
            ));
        }
        if ttl.is_zero() {
            return Err(BusError::invalid(
                "idempotency ttl",
                "0s",
                "must be greater than zero",
            ));
        }
        Ok(MemoryIdempotencyStore::from_parts(capacity, ttl))
    }

    fn from_parts(capacity: usize, ttl: Duration) -> Self {
        MemoryIdempotencyStore {
            inner: Arc::new(Mutex::new(MemoryState {
                capacity,
                ttl,
                keys: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        let mut st = self.lock();
        st.expire(Instant::now());
        st.keys.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for MemoryIdempotencyStore {
    fn default() -> Self {
        MemoryIdempotencyStore::new()
    }
}

impl fmt::Debug for MemoryIdempotencyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("MemoryIdempotencyStore")
            .field("capacity", &st.capacity)
            .field("ttl", &st.ttl)
            .field("keys", &st.keys.len())
            .finish()
    }
}

impl IdempotencyStore for MemoryIdempotencyStore {
    fn is_handled(
        &self,
        key: &IdempotencyKey,
    ) -> impl Future<Output = Result<bool, BusError>> + Send {
        let mut st = self.lock();
        st.expire(Instant::now());
        let handled = st.keys.contains_key(key);
        drop(st);
        std::future::ready(Ok(handled))
    }

    fn record(&self, key: &IdempotencyKey) -> impl Future<Output = Result<(), BusError>> + Send {
        let now = Instant::now();
        let mut st = self.lock();
        st.keys.insert(key.clone(), now);
        st.order.push_back((now, key.clone()));
        st.expire(now);
        drop(st);
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str) -> IdempotencyKey {
        IdempotencyKey::new(group, MessageId::new())
    }

    #[tokio::test(start_paused = true)]
    async fn keys_expire_after_the_ttl() {
        let store = MemoryIdempotencyStore::with_limits(10, Duration::from_secs(60)).unwrap();
        let k = key("g");
        store.record(&k).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(store.is_handled(&k).await.unwrap());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!store.is_handled(&k).await.unwrap());
        assert!(store.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_key_goes_first_when_full() {
        let store = MemoryIdempotencyStore::with_limits(2, Duration::from_secs(60)).unwrap();
        let (a, b, c) = (key("g"), key("g"), key("g"));
        for k in [&a, &b, &c] {
            store.record(k).await.unwrap();
        }
        assert!(!store.is_handled(&a).await.unwrap());
        assert!(store.is_handled(&b).await.unwrap());
        assert!(store.is_handled(&c).await.unwrap());
        assert_eq!(store.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn groups_are_separate_and_rerecording_refreshes() {
        let store = MemoryIdempotencyStore::with_limits(10, Duration::from_secs(60)).unwrap();
        let id = MessageId::new();
        let a = IdempotencyKey::new("a", id);
        store.record(&a).await.unwrap();
        assert!(
            !store
                .is_handled(&IdempotencyKey::new("b", id))
                .await
                .unwrap()
        );
        tokio::time::advance(Duration::from_secs(50)).await;
        store.record(&a).await.unwrap();
        tokio::time::advance(Duration::from_secs(50)).await;
        assert!(store.is_handled(&a).await.unwrap(), "refreshed at 50 s");
    }
}
