//! The bulkhead: atomic pools of permits, a wait queue used only when configured to wait,
//! and an optional adaptive limiter.
//!
//! # Design
//! A permit is one unit of an atomic counter (`used < cap`, one compare-and-swap). A
//! bulkhead without partitions has one pool holding the whole limit. With partitions, each
//! partition owns a pool of `floor(limit * share)` permits and the rest of the limit is a
//! shared pool: a partition takes from its own pool first and borrows from the shared one
//! after, so no flood can take another partition's minimum and the total never exceeds the
//! limit.
//!
//! Waiting calls park in one queue behind a mutex, touched only when a call must wait or when
//! a release finds waiters (`waiting != 0`). Release and enqueue order their steps so that a
//! permit freed while a call enqueues is never missed: the release decrements the pool (or a
//! raised limit stores the larger caps) then reads the waiter count; the waiter bumps the
//! count then reads the pool's count and cap under the queue lock. Every one of those accesses
//! is sequentially consistent, so at least one side sees the other (the store-buffering
//! pattern: with a relaxed cap load, a waiter could miss a raised limit and sit out its whole
//! `max_wait` beside free permits). Waiters are served in FIFO or LIFO order; a call to
//! [`try_acquire`](Bulkhead::try_acquire) that lands between a release and the hand-off may
//! take the permit first (it never waits, so it cannot starve a queue for long).

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::adaptive::{Limiter, Sample, Update};
use crate::config::{BulkheadConfig, ConfigError};
use crate::error::Detail;
use crate::event::{Event, Listeners};
use crate::{Error, RejectReason, Rejected};

/// A pool of permits.
#[derive(Debug, Default)]
struct Pool {
    used: AtomicUsize,
    cap: AtomicUsize,
}

impl Pool {
    #[inline]
    fn try_take(&self) -> bool {
        // SeqCst, not Relaxed: see the module docs (a plain load on x86 either way).
        let cap = self.cap.load(SeqCst);
        let mut used = self.used.load(SeqCst);
        while used < cap {
            match self
                .used
                .compare_exchange_weak(used, used + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
        false
    }
}

const WAITING: u32 = u32::MAX;

/// One parked call: the pool it was granted (or `WAITING`) and its waker.
#[derive(Debug)]
struct Waiter {
    pool: AtomicU32,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn grant(&self, pool: u32) {
        self.pool.store(pool, Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }

    fn poll(&self, cx: &mut Context<'_>) -> Poll<u32> {
        let pool = self.pool.load(Acquire);
        if pool != WAITING {
            return Poll::Ready(pool);
        }
        {
            let mut slot = lock(&self.waker);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        match self.pool.load(Acquire) {
            WAITING => Poll::Pending,
            pool => Poll::Ready(pool),
        }
    }
}

#[derive(Debug)]
struct Entry {
    part: usize,
    waiter: Arc<Waiter>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How a call that held a permit went, for an adaptive limit.
///
/// A permit dropped without [`Permit::record`] counts as [`Outcome::Success`]. Without an
/// adaptive limit outcomes are ignored.
///
/// ```
/// use meshwork_bulkhead::{AdaptiveLimit, Aimd, Bulkhead, BulkheadConfig, Outcome};
///
/// let config = BulkheadConfig::builder()
///     .max_concurrent_calls(10)
///     .adaptive(AdaptiveLimit::Aimd(Aimd::new(1, 100)))
///     .build()?;
/// let bulkhead = Bulkhead::new("db", config);
/// // A 404 says nothing about load; a timeout says the upstream is overloaded.
/// bulkhead.try_acquire()?.record(Outcome::Ignored);
/// assert_eq!(bulkhead.limit(), 10);
/// bulkhead.try_acquire()?.record(Outcome::Dropped);
/// assert_eq!(bulkhead.limit(), 9); // floor(10 * 0.9)
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Outcome {
    /// The call completed; its latency is a sample.
    #[default]
    Success,
    /// The call was dropped (timed out, shed, refused as overloaded): the limit should fall.
    Dropped,
    /// The call tells nothing about load (a client error, a cancelled call): no sample.
    Ignored,
}

/// What a permit remembers of its admission.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    /// Nanoseconds from the bulkhead's `base` to the admission, plus one; 0 when the
    /// bulkhead does not time its calls (no adaptive limit). Kept small so a permit is three
    /// words and `Result<Permit, Rejected>` stays cheap to return.
    start: u64,
    pool: u32,
    outcome: Outcome,
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Meters {
    limit: metrics::Gauge,
    in_flight: metrics::Gauge,
    waiting: metrics::Gauge,
    /// One counter per [`RejectReason`], in declaration order.
    rejected: [metrics::Counter; 4],
}

#[cfg(feature = "metrics")]
impl Meters {
    fn new(name: &Arc<str>) -> Self {
        let label = name.to_string();
        let rejected = |reason: &'static str| {
            metrics::counter!(
                "meshwork_bulkhead_rejected_total",
                "bulkhead" => label.clone(),
                "reason" => reason
            )
        };
        Meters {
            limit: metrics::gauge!("meshwork_bulkhead_limit", "bulkhead" => label.clone()),
            in_flight: metrics::gauge!("meshwork_bulkhead_in_flight", "bulkhead" => label.clone()),
            waiting: metrics::gauge!("meshwork_bulkhead_waiting", "bulkhead" => label.clone()),
            rejected: [
                rejected("full"),
                rejected("wait_timed_out"),
                rejected("too_many_waiters"),
                rejected("too_many_keys"),
            ],
        }
    }
}

pub(crate) struct Inner {
    /// The pool every call may use (the whole limit when there are no partitions).
    shared: Pool,
    /// Calls parked in `queue`.
    waiting: AtomicUsize,
    /// Each partition's own pool; pool `i + 1` is `reserved[i]`.
    reserved: Box<[Pool]>,
    /// The adaptive limit, if any; the lock also serialises every change of the caps.
    limiter: Mutex<Option<Limiter>>,
    /// Whether permits are timed (an adaptive limit is set).
    timed: bool,
    name: Arc<str>,
    partition_names: Box<[Arc<str>]>,
    shares: Box<[f64]>,
    limit: AtomicUsize,
    /// The origin of permits' start times.
    base: Instant,
    max_wait: Duration,
    lifo: bool,
    max_waiters: usize,
    queue: Mutex<VecDeque<Entry>>,
    rejected: AtomicU64,
    listeners: Arc<Listeners>,
    config: BulkheadConfig,
    #[cfg(feature = "metrics")]
    meters: Meters,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.name)
            .field("limit", &self.limit.load(Relaxed))
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting.load(Relaxed))
            .field("partitions", &self.partition_names)
            .field("adaptive", &self.timed)
            .field("listeners", &self.listeners)
            .finish()
    }
}

impl Inner {
    fn new(name: Arc<str>, config: BulkheadConfig, listeners: Arc<Listeners>) -> Self {
        let config = config.sanitized();
        let limiter = config
            .adaptive
            .map(|a| Limiter::new(&a, config.max_concurrent_calls, Instant::now()));
        let limit = limiter
            .as_ref()
            .map_or(config.max_concurrent_calls, Limiter::effective);
        let inner = Inner {
            shared: Pool::default(),
            waiting: AtomicUsize::new(0),
            reserved: config.partitions.iter().map(|_| Pool::default()).collect(),
            timed: limiter.is_some(),
            limiter: Mutex::new(limiter),
            #[cfg(feature = "metrics")]
            meters: Meters::new(&name),
            name,
            partition_names: config
                .partitions
                .iter()
                .map(|p| p.name_arc().clone())
                .collect(),
            shares: config.partitions.iter().map(|p| p.share()).collect(),
            limit: AtomicUsize::new(0),
            base: Instant::now(),
            max_wait: config.max_wait,
            lifo: config.queue_order == crate::QueueOrder::Lifo,
            max_waiters: config.max_waiters,
            queue: Mutex::new(VecDeque::new()),
            rejected: AtomicU64::new(0),
            listeners,
            config,
        };
        inner.apply_limit(limit);
        inner
    }

    fn pool(&self, pool: u32) -> &Pool {
        match pool.checked_sub(1) {
            Some(i) => self.reserved.get(i as usize).unwrap_or(&self.shared),
            None => &self.shared,
        }
    }

    /// Sets the caps of every pool for `limit`. Callers hold the `limiter` lock, so two
    /// changes never interleave their stores.
    fn apply_limit(&self, limit: usize) {
        self.limit.store(limit, Relaxed);
        let mut owned = 0;
        for (pool, share) in self.reserved.iter().zip(self.shares.iter()) {
            // Validation lets shares add up to a hair over 1 (binary fractions), so the floors
            // could add up to `limit + 1`: never hand out more than is left.
            let own = ((limit as f64 * share).floor() as usize).min(limit - owned);
            pool.cap.store(own, SeqCst);
            owned += own;
        }
        self.shared.cap.store(limit - owned, SeqCst);
        #[cfg(feature = "metrics")]
        self.meters.limit.set(limit as f64);
    }

    fn in_flight(&self) -> usize {
        self.reserved
            .iter()
            .fold(self.shared.used.load(Relaxed), |n, p| {
                n + p.used.load(Relaxed)
            })
    }

    /// Takes a permit for partition `part` (0: none) from its own pool, then the shared one.
    #[inline]
    fn try_take_for(&self, part: usize) -> Option<u32> {
        if part != 0
            && let Some(pool) = self.reserved.get(part - 1)
            && pool.try_take()
        {
            return Some(part as u32);
        }
        self.shared.try_take().then_some(0)
    }

    #[inline]
    fn admitted(&self, pool: u32) -> Ticket {
        #[cfg(feature = "metrics")]
        self.meters.in_flight.increment(1.0);
        let start = if self.timed {
            nanos_since(self.base).min(u64::MAX - 1) + 1
        } else {
            0
        };
        Ticket {
            start,
            pool,
            outcome: Outcome::Success,
        }
    }

    #[inline]
    pub(crate) fn try_ticket(&self, part: usize) -> Result<Ticket, Rejected> {
        match self.try_take_for(part) {
            Some(pool) => Ok(self.admitted(pool)),
            None => Err(self.reject(part, RejectReason::Full, Detail::None)),
        }
    }

    pub(crate) async fn ticket(&self, part: usize) -> Result<Ticket, Rejected> {
        if self.waiting.load(Relaxed) == 0
            && let Some(pool) = self.try_take_for(part)
        {
            return Ok(self.admitted(pool));
        }
        if self.max_wait.is_zero() {
            return Err(self.reject(part, RejectReason::Full, Detail::None));
        }
        let waiter = {
            let mut queue = lock(&self.queue);
            if queue.len() >= self.max_waiters {
                let n = queue.len();
                drop(queue);
                return Err(self.reject(part, RejectReason::TooManyWaiters, Detail::Waiters(n)));
            }
            let waiter = Arc::new(Waiter {
                pool: AtomicU32::new(WAITING),
                waker: Mutex::new(None),
            });
            queue.push_back(Entry {
                part,
                waiter: waiter.clone(),
            });
            self.waiting.fetch_add(1, SeqCst);
            #[cfg(feature = "metrics")]
            self.meters.waiting.increment(1.0);
            self.drain_locked(&mut queue);
            waiter
        };
        // Dropping the future before the end removes the waiter (or hands on its grant).
        let mut guard = WaitGuard {
            inner: self,
            waiter: Some(waiter.clone()),
        };
        let granted = match tokio::time::timeout(self.max_wait, poll_fn(|cx| waiter.poll(cx))).await
        {
            Ok(pool) => {
                // Granted: the grant already took the waiter off the queue.
                guard.waiter = None;
                Some(pool)
            }
            // The deadline passed, but a grant may have raced with it.
            Err(_) => guard.cancel(),
        };
        match granted {
            Some(pool) => Ok(self.admitted(pool)),
            None => Err(self.reject(
                part,
                RejectReason::WaitTimedOut,
                Detail::Waited(self.max_wait),
            )),
        }
    }

    /// Grants permits to waiters, in queue order, while the pools have any.
    fn drain_locked(&self, queue: &mut VecDeque<Entry>) {
        let partitioned = !self.reserved.is_empty();
        let mut i = 0;
        while i < queue.len() {
            let idx = if self.lifo { queue.len() - 1 - i } else { i };
            let part = queue[idx].part;
            match self.try_take_for(part) {
                Some(pool) => {
                    if let Some(entry) = queue.remove(idx) {
                        self.waiting.fetch_sub(1, SeqCst);
                        #[cfg(feature = "metrics")]
                        self.meters.waiting.decrement(1.0);
                        entry.waiter.grant(pool);
                    }
                }
                // Another partition's waiter may still fit.
                None if partitioned => i += 1,
                None => break,
            }
        }
    }

    fn drain(&self) {
        if self.waiting.load(SeqCst) != 0 {
            self.drain_locked(&mut lock(&self.queue));
        }
    }

    /// Returns a permit to its pool and hands it on to a waiter if there is one.
    fn release_raw(&self, pool: u32) {
        self.pool(pool).used.fetch_sub(1, SeqCst);
        self.drain();
    }

    #[inline]
    pub(crate) fn release(&self, ticket: Ticket) {
        if ticket.start != 0 {
            let start = self.base + Duration::from_nanos(ticket.start - 1);
            self.sample(start, ticket.outcome);
        }
        #[cfg(feature = "metrics")]
        self.meters.in_flight.decrement(1.0);
        self.release_raw(ticket.pool);
    }

    fn sample(&self, start: Instant, outcome: Outcome) {
        if outcome == Outcome::Ignored {
            return;
        }
        let sample = Sample {
            start,
            end: Instant::now(),
            in_flight: self.in_flight(),
            dropped: outcome == Outcome::Dropped,
        };
        self.change_limit(|limiter| limiter.map(|l| l.sample(sample)).unwrap_or_default());
    }

    /// Runs `f` on the limiter (if any) under its lock, applies the limit it returns, then
    /// reports the change outside the lock.
    fn change_limit(&self, f: impl FnOnce(Option<&mut Limiter>) -> Update) {
        let update = {
            let mut limiter = lock(&self.limiter);
            let update = f(limiter.as_mut());
            if let Some((_, to)) = update.limit {
                self.apply_limit(to);
            }
            update
        };
        self.report(update);
    }

    fn report(&self, update: Update) {
        if let Some((from, to)) = update.limit {
            #[cfg(feature = "tracing")]
            tracing::debug!(bulkhead = %self.name, from, to, "bulkhead limit changed");
            if self.listeners.active() {
                self.listeners.deliver(&Event::LimitChanged {
                    name: self.name.clone(),
                    from,
                    to,
                });
            }
            if to > from {
                self.drain();
            }
        }
        if let Some(min_rtt) = update.min_rtt {
            #[cfg(feature = "tracing")]
            tracing::debug!(bulkhead = %self.name, ?min_rtt, "bulkhead minimum RTT measured");
            if self.listeners.active() {
                self.listeners.deliver(&Event::MinRttMeasured {
                    name: self.name.clone(),
                    min_rtt,
                });
            }
        }
    }

    fn set_limit(&self, limit: usize) {
        self.change_limit(|limiter| match limiter {
            Some(limiter) => limiter.set(limit),
            None => {
                let (from, to) = (self.limit.load(Relaxed), limit.clamp(1, crate::MAX_LIMIT));
                Update {
                    limit: (from != to).then_some((from, to)),
                    min_rtt: None,
                }
            }
        });
    }

    fn partition_name(&self, part: usize) -> Option<&Arc<str>> {
        part.checked_sub(1)
            .and_then(|i| self.partition_names.get(i))
    }

    #[cold]
    #[inline(never)]
    fn reject(&self, part: usize, reason: RejectReason, detail: Detail) -> Rejected {
        self.rejected.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.meters.rejected[reason_index(reason)].increment(1);
        let rejected = Rejected::new(
            self.name.clone(),
            self.partition_name(part).cloned(),
            reason,
            self.in_flight(),
            self.limit.load(Relaxed),
            detail,
        );
        #[cfg(feature = "tracing")]
        tracing::debug!(bulkhead = %self.name, reason = ?reason, "{rejected}");
        if self.listeners.active() {
            self.listeners.deliver(&Event::Rejected {
                name: self.name.clone(),
                partition: self.partition_name(part).cloned(),
                reason,
            });
        }
        rejected
    }
}

/// Nanoseconds from `base` to now, saturating.
pub(crate) fn nanos_since(base: Instant) -> u64 {
    u64::try_from(Instant::now().saturating_duration_since(base).as_nanos()).unwrap_or(u64::MAX)
}

/// How a call's result counts for an adaptive limit: `Ok` a success, `Err` a drop.
pub(crate) fn outcome_of<T, E>(result: &Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Dropped,
    }
}

#[cfg(feature = "metrics")]
fn reason_index(reason: RejectReason) -> usize {
    match reason {
        RejectReason::Full => 0,
        RejectReason::WaitTimedOut => 1,
        RejectReason::TooManyWaiters => 2,
        RejectReason::TooManyKeys => 3,
    }
}

/// Removes a waiter from the queue when its wait ends or is cancelled; a permit granted in
/// the meantime is handed on.
struct WaitGuard<'a> {
    inner: &'a Inner,
    waiter: Option<Arc<Waiter>>,
}

impl WaitGuard<'_> {
    /// Ends the wait: the pool granted, or `None` if the waiter was still queued (it is
    /// removed).
    fn cancel(&mut self) -> Option<u32> {
        let waiter = self.waiter.take()?;
        let mut queue = lock(&self.inner.queue);
        // Grants happen under the queue lock, so this read is final.
        match waiter.pool.load(Acquire) {
            WAITING => {
                if let Some(i) = queue.iter().position(|e| Arc::ptr_eq(&e.waiter, &waiter)) {
                    queue.remove(i);
                    self.inner.waiting.fetch_sub(1, SeqCst);
                    #[cfg(feature = "metrics")]
                    self.inner.meters.waiting.decrement(1.0);
                }
                None
            }
            pool => Some(pool),
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if let Some(pool) = self.cancel() {
            self.inner.release_raw(pool);
        }
    }
}

/// A bulkhead: caps how many calls run at once, so one slow dependency or one noisy tenant
/// cannot take every thread, connection or task of a service.
///
/// It is cheap to clone (every clone shares one state), `Send + Sync`, and usable from sync
/// and async code. Three ways in share one core: [`call`](Self::call), permits
/// ([`try_acquire`](Self::try_acquire), [`acquire`](Self::acquire) and their `_owned`
/// forms), and the tower [`BulkheadLayer`](crate::BulkheadLayer).
///
/// The try path is one compare-and-swap on an atomic counter to take a permit and one
/// atomic subtraction to return it: no lock, no allocation, no clock read (unless an adaptive
/// limit needs the latency).
///
/// # Example
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadConfig};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = BulkheadConfig::builder()
///     .max_concurrent_calls(2)
///     .max_wait(Duration::from_millis(10))
///     .build()?;
/// let bulkhead = Bulkhead::new("inventory", config);
///
/// let a = bulkhead.try_acquire()?;
/// let b = bulkhead.acquire().await?;
/// assert_eq!(bulkhead.in_flight(), 2);
/// let err = bulkhead.call(|| async { Ok::<_, std::io::Error>(()) }).await.unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "bulkhead 'inventory' is full: no permit within 10ms (2 of 2 in flight)"
/// );
/// drop((a, b));
/// assert_eq!(bulkhead.call(|| async { Ok::<_, std::io::Error>(7) }).await?, 7);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
    part: usize,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Bulkhead");
        d.field("inner", &self.inner);
        if let Some(p) = self.partition_name() {
            d.field("partition", &p);
        }
        d.finish()
    }
}

/// Counts of a bulkhead at one moment; see [`Bulkhead::metrics`].
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadConfig};
///
/// let bulkhead = Bulkhead::new("db", BulkheadConfig::builder().max_concurrent_calls(1).build()?);
/// let _held = bulkhead.try_acquire()?;
/// assert!(bulkhead.try_acquire().is_err());
/// let m = bulkhead.metrics();
/// assert_eq!((m.limit, m.in_flight, m.waiting, m.rejected), (1, 1, 0, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// The limit in force.
    pub limit: usize,
    /// Calls holding a permit.
    pub in_flight: usize,
    /// Calls waiting for a permit.
    pub waiting: usize,
    /// Calls refused since the bulkhead was created.
    pub rejected: u64,
}

impl Bulkhead {
    /// A bulkhead named `name` (the name appears in errors, events, logs and metrics).
    ///
    /// `config` has been validated by its builder; a field changed by hand afterwards and out
    /// of range is brought back into range (partitions or an adaptive limit that don't
    /// validate are dropped). [`try_new`](Self::try_new) reports it instead.
    pub fn new(name: impl Into<Arc<str>>, config: BulkheadConfig) -> Self {
        Self::with_listeners(name.into(), config, Arc::default())
    }

    pub(crate) fn with_listeners(
        name: Arc<str>,
        config: BulkheadConfig,
        listeners: Arc<Listeners>,
    ) -> Self {
        Bulkhead {
            inner: Arc::new(Inner::new(name, config, listeners)),
            part: 0,
        }
    }

    /// A bulkhead named `name`, after checking `config` with [`BulkheadConfig::validate`].
    pub fn try_new(name: impl Into<Arc<str>>, config: BulkheadConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::new(name, config))
    }

    /// A bulkhead with the default config ([`DEFAULT_MAX_CONCURRENT_CALLS`](crate::DEFAULT_MAX_CONCURRENT_CALLS),
    /// no waiting).
    pub fn with_defaults(name: impl Into<Arc<str>>) -> Self {
        Self::new(name, BulkheadConfig::default())
    }

    /// The bulkhead's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The config it was built with.
    pub fn config(&self) -> &BulkheadConfig {
        &self.inner.config
    }

    /// A handle to the same bulkhead that admits calls into partition `name`: they take
    /// from the partition's guaranteed share first, then borrow unused capacity. `None` if
    /// there is no such partition.
    ///
    /// Calls through a handle without a partition (the one [`new`](Self::new) returns) only
    /// use the capacity no partition owns.
    ///
    /// ```
    /// use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Partition};
    ///
    /// let config = BulkheadConfig::builder()
    ///     .max_concurrent_calls(10)
    ///     .partition(Partition::new("live", 0.9))
    ///     .partition(Partition::new("batch", 0.1))
    ///     .build()?;
    /// let bulkhead = Bulkhead::new("api", config);
    /// let live = bulkhead.partition("live").unwrap();
    /// let batch = bulkhead.partition("batch").unwrap();
    ///
    /// // A flood of live traffic takes everything but batch's guaranteed permit.
    /// let held: Vec<_> = std::iter::from_fn(|| live.try_acquire().ok()).collect();
    /// assert_eq!(held.len(), 9);
    /// assert!(batch.try_acquire().is_ok());
    /// # Ok::<(), meshwork_bulkhead::ConfigError>(())
    /// ```
    pub fn partition(&self, name: &str) -> Option<Bulkhead> {
        let i = self
            .inner
            .partition_names
            .iter()
            .position(|p| &**p == name)?;
        Some(Bulkhead {
            inner: self.inner.clone(),
            part: i + 1,
        })
    }

    /// The partition this handle admits calls into, if any.
    pub fn partition_name(&self) -> Option<&str> {
        self.inner.partition_name(self.part).map(|p| &**p)
    }

    /// The limit in force (it moves with an adaptive limit).
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Relaxed)
    }

    /// Sets the limit: a fixed limit takes it as is (at least 1); an adaptive limit takes it
    /// as its current estimate, within its bounds. Waiters are served at once if it grew;
    /// calls in flight above a lowered limit finish normally.
    pub fn set_limit(&self, limit: usize) {
        self.inner.set_limit(limit);
    }

    /// Calls holding a permit, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight()
    }

    /// Calls waiting for a permit.
    pub fn waiting(&self) -> usize {
        self.inner.waiting.load(Relaxed)
    }

    /// A snapshot of the counts.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            limit: self.limit(),
            in_flight: self.in_flight(),
            waiting: self.waiting(),
            rejected: self.inner.rejected.load(Relaxed),
        }
    }

    /// Calls `listener` with every event of this bulkhead, from now on.
    ///
    /// A bulkhead from a [`KeyedBulkhead`](crate::KeyedBulkhead) shares its listeners with the
    /// whole family: a listener added here hears every key (use
    /// [`KeyedBulkhead::on_event`](crate::KeyedBulkhead::on_event) and match on the name).
    pub fn on_event<F>(&self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.inner.listeners.add(Arc::new(listener));
    }

    /// A permit if one is free now; never waits. Dropping the permit returns it.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.inner.try_ticket(self.part)?;
        Ok(Permit {
            inner: &self.inner,
            ticket,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a handle to the
    /// bulkhead, so it can move into a spawned task.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.inner.try_ticket(self.part)?;
        Ok(OwnedPermit {
            inner: self.inner.clone(),
            ticket,
        })
    }

    /// A permit, waiting up to the configured `max_wait` for one to come free (in the
    /// configured FIFO or LIFO order, behind at most `max_waiters` others). With no
    /// `max_wait`, the same as [`try_acquire`](Self::try_acquire).
    ///
    /// Cancel-safe: dropping the future while it waits leaves no waiter behind, and a permit
    /// granted at that moment goes to the next waiter.
    pub async fn acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.inner.ticket(self.part).await?;
        Ok(Permit {
            inner: &self.inner,
            ticket,
        })
    }

    /// Like [`acquire`](Self::acquire), with an owned permit.
    pub async fn acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.inner.ticket(self.part).await?;
        Ok(OwnedPermit {
            inner: self.inner.clone(),
            ticket,
        })
    }

    /// Runs `f` under a permit acquired with [`acquire`](Self::acquire).
    ///
    /// For an adaptive limit, `Ok` counts as [`Outcome::Success`] and `Err` as
    /// [`Outcome::Dropped`]; use the permit API to classify outcomes yourself. If the returned
    /// future is dropped before `f` completes, the permit is returned without a sample.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut permit = self.acquire().await?;
        // Until `f` completes, a drop means the call was cancelled.
        permit.ticket.outcome = Outcome::Ignored;
        let result = f().await;
        permit.record(outcome_of(&result));
        result.map_err(Error::Inner)
    }

    /// Runs the synchronous `f` under a permit taken with [`try_acquire`](Self::try_acquire)
    /// (a sync caller cannot wait on the async queue).
    pub fn call_sync<F, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Result<T, E>,
    {
        let mut permit = self.try_acquire()?;
        // Until `f` returns, a drop means it panicked: no sample.
        permit.ticket.outcome = Outcome::Ignored;
        let result = f();
        permit.record(outcome_of(&result));
        result.map_err(Error::Inner)
    }

    /// Whether a handle, permit or waiting call other than this handle keeps the bulkhead
    /// alive (a keyed family must not evict such a key: its users would carry on with a
    /// bulkhead the family no longer knows, beside a fresh one).
    pub(crate) fn is_shared(&self) -> bool {
        Arc::strong_count(&self.inner) > 1
    }
}

/// A permit borrowed from a [`Bulkhead`]; returned when dropped.
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, Outcome};
///
/// let bulkhead = Bulkhead::with_defaults("db");
/// let permit = bulkhead.try_acquire()?;
/// assert_eq!(bulkhead.in_flight(), 1);
/// permit.record(Outcome::Success);
/// assert_eq!(bulkhead.in_flight(), 0);
/// # Ok::<(), meshwork_bulkhead::Rejected>(())
/// ```
#[must_use = "a permit is returned as soon as it is dropped"]
pub struct Permit<'a> {
    inner: &'a Inner,
    ticket: Ticket,
}

impl Permit<'_> {
    /// Returns the permit, telling an adaptive limit how the call went.
    pub fn record(mut self, outcome: Outcome) {
        self.ticket.outcome = outcome;
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release(self.ticket);
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &self.inner.name)
            .field("pool", &self.ticket.pool)
            .finish()
    }
}

/// A permit that owns a handle to its [`Bulkhead`], so it can move into a spawned task;
/// returned when dropped.
///
/// ```
/// use meshwork_bulkhead::Bulkhead;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bulkhead = Bulkhead::with_defaults("jobs");
/// let permit = bulkhead.acquire_owned().await?;
/// tokio::spawn(async move {
///     let _permit = permit; // held until the task ends
/// })
/// .await?;
/// assert_eq!(bulkhead.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[must_use = "a permit is returned as soon as it is dropped"]
pub struct OwnedPermit {
    inner: Arc<Inner>,
    ticket: Ticket,
}

impl OwnedPermit {
    /// Returns the permit, telling an adaptive limit how the call went.
    pub fn record(mut self, outcome: Outcome) {
        self.ticket.outcome = outcome;
    }

    #[cfg(feature = "tower")]
    pub(crate) fn set_outcome(&mut self, outcome: Outcome) {
        self.ticket.outcome = outcome;
    }
}

impl Drop for OwnedPermit {
    #[inline]
    fn drop(&mut self) {
        self.inner.release(self.ticket);
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("bulkhead", &self.inner.name)
            .field("pool", &self.ticket.pool)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Partition, QueueOrder};

    fn bulkhead(limit: usize) -> Bulkhead {
        Bulkhead::new(
            "t",
            BulkheadConfig::builder()
                .max_concurrent_calls(limit)
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn permits_and_results_stay_small() {
        // The try path returns these by value; every byte is a store on the hot path.
        assert_eq!(std::mem::size_of::<Permit<'_>>(), 24);
        assert_eq!(std::mem::size_of::<OwnedPermit>(), 24);
        assert!(std::mem::size_of::<Result<Permit<'_>, Rejected>>() <= 56);
    }

    #[test]
    fn pool_never_exceeds_its_cap() {
        let pool = Pool::default();
        pool.cap.store(2, SeqCst);
        assert!(pool.try_take() && pool.try_take());
        assert!(!pool.try_take());
        assert_eq!(pool.used.load(SeqCst), 2);
    }

    #[test]
    fn permits_return_on_drop_and_record() {
        let b = bulkhead(2);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire_owned().unwrap();
        assert_eq!(b.try_acquire().unwrap_err().reason(), RejectReason::Full);
        drop(p1);
        p2.record(Outcome::Dropped);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.metrics().rejected, 1);
    }

    #[test]
    fn set_limit_moves_caps_and_reports() {
        let b = bulkhead(1);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        b.on_event(move |e| {
            if let Event::LimitChanged { from, to, .. } = e {
                lock(&sink).push((*from, *to));
            }
        });
        b.set_limit(3);
        let held: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
        assert!(b.try_acquire().is_err());
        b.set_limit(0);
        assert_eq!(b.limit(), 1);
        drop(held);
        b.set_limit(1);
        assert_eq!(*lock(&seen), vec![(1, 3), (3, 1)]);
    }

    #[test]
    fn partition_caps_follow_the_limit() {
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(10)
            .partition(Partition::new("a", 0.5))
            .partition(Partition::new("b", 0.25))
            .build()
            .unwrap();
        let b = Bulkhead::new("p", config);
        assert_eq!(b.inner.reserved[0].cap.load(SeqCst), 5);
        assert_eq!(b.inner.reserved[1].cap.load(SeqCst), 2);
        assert_eq!(b.inner.shared.cap.load(SeqCst), 3);
        assert!(b.partition("c").is_none());
        assert_eq!(b.partition("b").unwrap().partition_name(), Some("b"));
        assert_eq!(b.partition_name(), None);
        b.set_limit(100);
        assert_eq!(b.inner.shared.cap.load(SeqCst), 25);
    }

    fn caps(b: &Bulkhead) -> usize {
        let inner = &b.inner;
        inner
            .reserved
            .iter()
            .fold(inner.shared.cap.load(SeqCst), |n, p| n + p.cap.load(SeqCst))
    }

    #[test]
    fn shares_a_hair_over_one_never_give_out_more_than_the_limit() {
        // Accepted by validation (within its 1e-9 slack), but the floors of the two shares
        // add up to the limit plus one.
        let limit = crate::MAX_LIMIT;
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(limit)
            .partition(Partition::new("a", 0.5))
            .partition(Partition::new("b", 0.500_000_000_95))
            .build()
            .unwrap();
        let b = Bulkhead::new("hair", config);
        assert_eq!(caps(&b), limit);
    }

    #[test]
    fn racing_limit_changes_leave_consistent_caps() {
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(10)
            .partition(Partition::new("a", 0.3))
            .partition(Partition::new("b", 0.3))
            .build()
            .unwrap();
        let b = Bulkhead::new("race", config);
        std::thread::scope(|s| {
            for limit in [10, 1000] {
                let b = &b;
                s.spawn(move || {
                    for _ in 0..20_000 {
                        b.set_limit(limit);
                    }
                });
            }
        });
        assert_eq!(caps(&b), b.limit());
        assert_eq!(b.inner.reserved[0].cap.load(SeqCst), b.limit() * 3 / 10);
    }

    #[test]
    fn a_panic_in_call_sync_is_no_sample() {
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(2)
            .adaptive(crate::AdaptiveLimit::Aimd(crate::Aimd::new(1, 10)))
            .build()
            .unwrap();
        let b = Bulkhead::new("panic", config);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            b.call_sync(|| -> Result<(), ()> { panic!("boom") })
        }));
        assert!(r.is_err());
        // Counted as a success, it would have grown the limit (1 of 2 in flight is busy).
        assert_eq!((b.limit(), b.in_flight()), (2, 0));
        b.call_sync(|| Ok::<_, ()>(())).unwrap();
        assert_eq!(b.limit(), 3);
    }

    #[test]
    fn call_sync_records_and_rejects() {
        let b = bulkhead(1);
        assert_eq!(b.call_sync(|| Ok::<_, ()>(1)).unwrap(), 1);
        let held = b.try_acquire().unwrap();
        let err = b.call_sync(|| Ok::<_, ()>(1)).unwrap_err();
        assert!(err.rejected().is_some());
        drop(held);
        assert!(matches!(
            b.call_sync(|| Err::<(), _>(5)),
            Err(Error::Inner(5))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_hands_the_permit_to_the_queue_in_order() {
        let config = BulkheadConfig::builder()
            .max_concurrent_calls(1)
            .max_wait(Duration::from_secs(1))
            .queue_order(QueueOrder::Fifo)
            .build()
            .unwrap();
        let b = Bulkhead::new("q", config);
        let held = b.try_acquire().unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire_owned().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(b.waiting(), 1);
        drop(held);
        // The permit went to the waiter, not to a newcomer.
        assert!(b.try_acquire().is_err());
        waiter.await.unwrap().unwrap();
        assert_eq!((b.in_flight(), b.waiting()), (0, 0));
    }
}
