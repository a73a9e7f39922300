//! The in-memory backend: the embedded default, with the settlement semantics of a real
//! broker.
//!
//! Each topic is one bounded log. Every consumer group reads the whole log from where it
//! joined the topic's retained messages (a group created later reads the backlog), and
//! keeps its own books: what is ready, what is in flight, what waits for a retry delay, and
//! which keys are busy. A message with a key is never handed out while an earlier message
//! with that key is in flight or waiting to be retried, so each key is handled in publish
//! order, one at a time, while other keys keep flowing. A message leaves the log once every
//! group has settled it; when the log is full, publishers wait (backpressure): nothing is
//! ever dropped.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::validate_name;
use crate::{
    Acknowledger, BusError, Capabilities, Delivery, DeliveryInfo, Message, Position, Publisher,
    SettleFuture, Subscriber, Subscription, dead_letter_topic,
};

/// Default number of messages a topic holds before publishers wait.
pub const DEFAULT_CAPACITY: usize = 65_536;
/// Default longest wait of a publisher for room in a full topic.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`MemoryBus`].
///
/// ```
/// use meshwork_event_bus::MemoryConfig;
/// use std::time::Duration;
///
/// let config = MemoryConfig::builder()
///     .capacity(1_000)
///     .publish_timeout(Duration::from_secs(5))
///     .build()?;
/// assert_eq!(config.capacity, 1_000);
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryConfig {
    /// Messages a topic holds (published and not yet settled by every group).
    pub capacity: usize,
    /// How long a publisher waits for room before failing with [`BusError::Timeout`].
    pub publish_timeout: Duration,
    /// Create topics and groups on first use; when off, only [`MemoryBus::create_topic`]
    /// creates them.
    pub create_topology: bool,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: DEFAULT_CAPACITY,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            create_topology: true,
        }
    }
}

impl MemoryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> MemoryConfigBuilder {
        MemoryConfigBuilder {
            config: MemoryConfig::default(),
        }
    }
}

/// Builds a validated [`MemoryConfig`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryConfigBuilder {
    config: MemoryConfig,
}

impl MemoryConfigBuilder {
    /// Messages a topic holds before publishers wait. Default 65,536; at least 1.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.config.capacity = capacity;
        self
    }

    /// Longest wait for room in a full topic. Default 30 s; greater than zero.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// Create topics and groups on first use. Default on.
    pub fn create_topology(mut self, create: bool) -> Self {
        self.config.create_topology = create;
        self
    }

    /// Validates and returns the config.
    pub fn build(self) -> Result<MemoryConfig, BusError> {
        if self.config.capacity == 0 {
            return Err(BusError::invalid("capacity", "0", "must be at least 1"));
        }
        if self.config.publish_timeout.is_zero() {
            return Err(BusError::invalid(
                "publish_timeout",
                "0s",
                "must be greater than zero",
            ));
        }
        Ok(self.config)
    }
}

/// An in-process event bus: publishers and subscribers of one process share it by cloning.
///
/// ```
/// use meshwork_event_bus::{MemoryBus, Message, Publisher, Subscriber};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// let bus = MemoryBus::new();
/// let mut sub = bus.subscribe("chat", "store").await?;
/// bus.publish("chat", vec![Message::new("hi").with_key("room-1")]).await?;
/// let d = sub.recv().await.unwrap()?;
/// assert_eq!(d.message().payload().as_ref(), b"hi");
/// d.ack().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBus {
    inner: Arc<BusInner>,
}

struct BusInner {
    config: MemoryConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    closed: AtomicBool,
    /// Wakes subscribers when the bus closes.
    shutdown: Notify,
}

impl fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics = lock(&self.inner.topics).len();
        f.debug_struct("MemoryBus")
            .field("config", &self.inner.config)
            .field("topics", &topics)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state behind these locks is left consistent at every step; a panic elsewhere
    // must not wedge the bus.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Topic {
    name: Arc<str>,
    state: Mutex<TopicState>,
    /// Wakes publishers waiting for room.
    room: Notify,
}

struct TopicState {
    /// Offset of `log[0]`.
    base: u64,
    log: VecDeque<Message>,
    groups: HashMap<Arc<str>, Group>,
}

struct Group {
    /// Next offset not yet pulled into the books.
    cursor: u64,
    /// Deliverable now, by offset.
    ready: BTreeSet<u64>,
    /// Waiting behind an earlier message of the same key.
    parked: HashMap<Bytes, BTreeSet<u64>>,
    /// Keys with a message in flight or waiting for a retry delay.
    busy: HashSet<Bytes>,
    delayed: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Deliveries so far of each pulled, unfinished offset.
    attempts: BTreeMap<u64, u32>,
    /// Delivery token -> offset, for deliveries in flight.
    in_flight: HashMap<u64, u64>,
    next_token: u64,
    /// Wakes this group's consumers.
    wake: Arc<Notify>,
}

enum Next {
    Deliver(Message, u64, u32, u64),
    Wait(Option<Instant>),
}

impl Group {
    fn new(cursor: u64) -> Self {
        Group {
            cursor,
            ready: BTreeSet::new(),
            parked: HashMap::new(),
            busy: HashSet::new(),
            delayed: BinaryHeap::new(),
            attempts: BTreeMap::new(),
            in_flight: HashMap::new(),
            next_token: 1,
            wake: Arc::new(Notify::new()),
        }
    }

    /// The lowest offset this group still needs.
    fn floor(&self) -> u64 {
        self.attempts
            .first_key_value()
            .map_or(self.cursor, |(m, _)| (*m).min(self.cursor))
    }

    fn release_key(&mut self, key: Option<&Bytes>) {
        if let Some(key) = key {
            self.busy.remove(key);
            if let Some(parked) = self.parked.get_mut(key) {
                if let Some(first) = parked.pop_first() {
                    self.ready.insert(first);
                }
                if parked.is_empty() {
                    self.parked.remove(key);
                }
            }
        }
    }
}

impl TopicState {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    fn next(&mut self, group: &str, now: Instant) -> Option<Next> {
        let end = self.end();
        let base = self.base;
        let log = &self.log;
        let key_of = |offset: u64| log[(offset - base) as usize].key_bytes().cloned();
        let g = self.groups.get_mut(group)?;
        while let Some(Reverse((due, offset))) = g.delayed.peek().copied() {
            if due > now {
                break;
            }
            g.delayed.pop();
            if let Some(key) = key_of(offset) {
                g.busy.remove(&key);
            }
            g.ready.insert(offset);
        }
        loop {
            let offset = match g.ready.pop_first() {
                Some(offset) => offset,
                None if g.cursor < end => {
                    let offset = g.cursor;
                    g.cursor += 1;
                    g.attempts.insert(offset, 0);
                    offset
                }
                None => {
                    let next_due = g.delayed.peek().map(|Reverse((due, _))| *due);
                    return Some(Next::Wait(next_due));
                }
            };
            let key = key_of(offset);
            if let Some(key) = &key {
                if g.busy.contains(key) {
                    g.parked.entry(key.clone()).or_default().insert(offset);
                    continue;
                }
                g.busy.insert(key.clone());
            }
            let attempt = g.attempts.entry(offset).or_insert(0);
            *attempt += 1;
            let attempt = *attempt;
            let token = g.next_token;
            g.next_token += 1;
            g.in_flight.insert(token, offset);
            let message = log[(offset - base) as usize].clone();
            return Some(Next::Deliver(message, offset, attempt, token));
        }
    }

    /// Drops messages every group has finished with; returns whether room was made.
    fn trim(&mut self) -> bool {
        if self.groups.is_empty() {
            return false;
        }
        let floor = self
            .groups
            .values()
            .map(Group::floor)
            .min()
            .unwrap_or(self.base);
        let mut trimmed = false;
        while self.base < floor && !self.log.is_empty() {
            self.log.pop_front();
            self.base += 1;
            trimmed = true;
        }
        trimmed
    }
}

enum Settle {
    Done,
    Again(Option<Duration>),
}

impl Topic {
    fn settle(&self, info: &DeliveryInfo, how: Settle) -> Result<(), BusError> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        let stale = || BusError::Stale(info.message_id);
        let g = st.groups.get_mut(&*info.group).ok_or_else(stale)?;
        let offset = g.in_flight.remove(&info.token).ok_or_else(stale)?;
        let key = st.log[(offset - st.base) as usize].key_bytes().cloned();
        match how {
            Settle::Done => {
                g.attempts.remove(&offset);
                g.release_key(key.as_ref());
            }
            Settle::Again(None) => {
                if let Some(key) = &key {
                    g.busy.remove(key);
                }
                g.ready.insert(offset);
            }
            Settle::Again(Some(delay)) => {
                g.delayed.push(Reverse((Instant::now() + delay, offset)));
            }
        }
        g.wake.notify_waiters();
        if matches!(how, Settle::Done) && st.trim() {
            self.room.notify_waiters();
        }
        Ok(())
    }
}

struct MemoryAcker {
    bus: MemoryBus,
    topic: Arc<Topic>,
}

/// Releases a delivery when dropped while still holding its topic.
struct ReleaseOnDrop {
    topic: Option<Arc<Topic>>,
    info: DeliveryInfo,
}

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        if let Some(topic) = self.topic.take() {
            // Stale means it was settled elsewhere: nothing to give back.
            let _ = topic.settle(&self.info, Settle::Again(None));
        }
    }
}

impl Acknowledger for MemoryAcker {
    fn ack(&self, info: &DeliveryInfo) -> SettleFuture {
        SettleFuture::ready(self.topic.settle(info, Settle::Done))
    }

    fn nack(&self, info: &DeliveryInfo, delay: Option<Duration>) -> SettleFuture {
        SettleFuture::ready(self.topic.settle(info, Settle::Again(delay)))
    }

    fn term(&self, info: &DeliveryInfo) -> SettleFuture {
        SettleFuture::ready(self.topic.settle(info, Settle::Done))
    }

    fn dead_letter(&self, info: &DeliveryInfo, envelope: Message) -> SettleFuture {
        let bus = self.bus.clone();
        // Until the envelope is published and the delivery settled, the guard releases the
        // delivery when dropped: a dead letter that failed, or whose future was dropped,
        // leaves the message redeliverable instead of in flight forever.
        let mut guard = ReleaseOnDrop {
            topic: Some(self.topic.clone()),
            info: info.clone(),
        };
        SettleFuture::boxed(async move {
            let name = dead_letter_topic(&guard.info.topic);
            bus.publish(&name, vec![envelope]).await?;
            match guard.topic.take() {
                Some(topic) => topic.settle(&guard.info, Settle::Done),
                None => Err(BusError::Stale(guard.info.message_id)),
            }
        })
    }

    fn release(&self, info: &DeliveryInfo) {
        // A stale delivery (already settled elsewhere) has nothing to give back.
        let _ = self.topic.settle(info, Settle::Again(None));
    }
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus::new()
    }
}

impl MemoryBus {
    /// A bus with the default config.
    pub fn new() -> Self {
        MemoryBus::with_config(MemoryConfig::default())
    }

    /// A bus with `config` (validated by its builder).
    pub fn with_config(config: MemoryConfig) -> Self {
        MemoryBus {
            inner: Arc::new(BusInner {
                config,
                topics: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                shutdown: Notify::new(),
            }),
        }
    }

    /// What this backend guarantees.
    pub fn capabilities() -> Capabilities {
        Capabilities {
            per_key_ordering: true,
            persistent: false,
            backlog_for_new_groups: true,
            delayed_retry: true,
            attempt_count: true,
        }
    }

    /// Creates `topic` if missing (needed only when `create_topology` is off).
    pub fn create_topic(&self, topic: &str) -> Result<(), BusError> {
        validate_name("topic", topic)?;
        self.topic(topic, true).map(drop)
    }

    /// Creates `group` on `topic` if missing, reading from the oldest retained message.
    pub fn create_group(&self, topic: &str, group: &str) -> Result<(), BusError> {
        validate_name("group", group)?;
        let t = self.topic(topic, true)?;
        let mut st = lock(&t.state);
        let base = st.base;
        st.groups
            .entry(group.into())
            .or_insert_with(|| Group::new(base));
        Ok(())
    }

    /// Messages of `topic` not yet settled by every group.
    pub fn backlog(&self, topic: &str) -> usize {
        lock(&self.inner.topics)
            .get(topic)
            .map_or(0, |t| lock(&t.state).log.len())
    }

    fn check_open(&self) -> Result<(), BusError> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(BusError::Closed("memory bus"))
        } else {
            Ok(())
        }
    }

    fn topic(&self, name: &str, create: bool) -> Result<Arc<Topic>, BusError> {
        let mut topics = lock(&self.inner.topics);
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if !create {
            return Err(BusError::MissingTopology {
                what: "topic",
                name: name.into(),
            });
        }
        let t = Arc::new(Topic {
            name: name.into(),
            state: Mutex::new(TopicState {
                base: 0,
                log: VecDeque::new(),
                groups: HashMap::new(),
            }),
            room: Notify::new(),
        });
        topics.insert(name.into(), t.clone());
        Ok(t)
    }

    /// Appends what fits; returns how many were appended.
    fn append(&self, topic: &Topic, messages: &mut VecDeque<Message>) -> usize {
        let mut st = lock(&topic.state);
        let room = self.inner.config.capacity.saturating_sub(st.log.len());
        let n = room.min(messages.len());
        st.log.extend(messages.drain(..n));
        if n > 0 {
            for g in st.groups.values() {
                g.wake.notify_waiters();
            }
        }
        n
    }
}

impl Publisher for MemoryBus {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), BusError> {
        validate_name("topic", topic)?;
        self.check_open()?;
        let t = self.topic(topic, self.inner.config.create_topology)?;
        let total = messages.len();
        let mut pending: VecDeque<Message> = messages.into();
        let deadline = Instant::now() + self.inner.config.publish_timeout;
        loop {
            let room = t.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            self.append(&t, &mut pending);
            if pending.is_empty() {
                return Ok(());
            }
            self.check_open()?;
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                let why = if lock(&t.state).groups.is_empty() {
                    "no consumer group has joined it yet, so nothing can be released"
                } else {
                    "its consumers are behind"
                };
                let what = format!(
                    "for room in topic '{topic}' ({} messages held, {why}; {} of the batch not published)",
                    self.inner.config.capacity,
                    pending.len()
                );
                if pending.len() == total {
                    return Err(BusError::Timeout {
                        what,
                        after: self.inner.config.publish_timeout,
                    });
                }
                // Part of the batch is in: say exactly which messages are not.
                let reason = format!(
                    "timed out after {:?} {what}",
                    self.inner.config.publish_timeout
                );
                return Err(BusError::Partial {
                    topic: topic.to_owned(),
                    total,
                    failed: pending.iter().map(|m| (m.id(), reason.clone())).collect(),
                });
            }
        }
    }

    async fn close(&self) -> Result<(), BusError> {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.notify_waiters();
        for t in lock(&self.inner.topics).values() {
            t.room.notify_waiters();
            for g in lock(&t.state).groups.values() {
                g.wake.notify_waiters();
            }
        }
        Ok(())
    }
}

impl Subscriber for MemoryBus {
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Subscription, BusError> {
        validate_name("topic", topic)?;
        validate_name("group", group)?;
        self.check_open()?;
        let create = self.inner.config.create_topology;
        let t = self.topic(topic, create)?;
        let group: Arc<str> = group.into();
        {
            let mut st = lock(&t.state);
            let base = st.base;
            if !st.groups.contains_key(&group) {
                if !create {
                    return Err(BusError::MissingTopology {
                        what: "group",
                        name: group.to_string(),
                    });
                }
                st.groups.insert(group.clone(), Group::new(base));
            }
        }
        let acker: Arc<dyn Acknowledger> = Arc::new(MemoryAcker {
            bus: self.clone(),
            topic: t.clone(),
        });
        let state = Consumer {
            bus: self.clone(),
            topic: t,
            group,
            acker,
        };
        Ok(Subscription::new(futures_util::stream::unfold(
            state,
            |c| async move { c.next().await.map(|d| (Ok(d), c)) },
        )))
    }
}

struct Consumer {
    bus: MemoryBus,
    topic: Arc<Topic>,
    group: Arc<str>,
    acker: Arc<dyn Acknowledger>,
}

impl Consumer {
    async fn next(&self) -> Option<Delivery> {
        loop {
            let shutdown = self.bus.inner.shutdown.notified();
            tokio::pin!(shutdown);
            shutdown.as_mut().enable();
            if self.bus.inner.closed.load(Ordering::Acquire) {
                return None;
            }
            let wake = {
                let st = lock(&self.topic.state);
                st.groups.get(&self.group)?.wake.clone()
            };
            let woken = wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let next = lock(&self.topic.state).next(&self.group, Instant::now())?;
            match next {
                Next::Deliver(message, offset, attempt, token) => {
                    let info = DeliveryInfo::new(
                        message.id(),
                        self.topic.name.clone(),
                        self.group.clone(),
                        attempt,
                        Position::Sequence(offset),
                        token,
                    );
                    return Some(Delivery::new(message, info, self.acker.clone()));
                }
                Next::Wait(due) => match due {
                    Some(due) => {
                        tokio::select! {
                            _ = &mut woken => {}
                            _ = &mut shutdown => {}
                            _ = tokio::time::sleep_until(due) => {}
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = &mut woken => {}
                            _ = &mut shutdown => {}
                        }
                    }
                },
            }
        }
    }
}
