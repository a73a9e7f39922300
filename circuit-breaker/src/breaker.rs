//! The breaker: one state machine behind the call API, the permit API and the tower Layer.
//!
//! The state and a generation number share one atomic word, so the closed path is one load
//! to admit a call and one window update to record it: no lock, no allocation. Every state
//! change happens under a small mutex (rare by nature) and bumps the generation, so a permit
//! taken before a change can never count against the state that came after it.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CircuitBreakerConfig, SlidingWindow};
use crate::event::{Event, Listeners};
use crate::window::{ConsecutiveWindow, CountWindow, Counts, FAILED, PRESENT, SLOW, TimeWindow};
use crate::{Classify, DefaultClassifier, Error, Outcome, Rejected, State};

const STATE_BITS: u64 = 8;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

const fn pack(generation: u64, state: State) -> u64 {
    (generation << STATE_BITS) | state.code()
}

const fn state_of(word: u64) -> State {
    State::from_code(word & STATE_MASK)
}

#[derive(Debug)]
enum Window {
    Count(CountWindow),
    Time(TimeWindow),
    Consecutive(ConsecutiveWindow),
}

/// What crossed a threshold.
#[derive(Debug, Clone, Copy)]
enum Trip {
    FailureRate(f64),
    SlowCallRate(f64),
    FailureCount(u64),
}

#[derive(Debug)]
struct HalfOpen {
    word: u64,
    issued: u32,
    successes: u32,
    failures: u32,
    since: Instant,
}

#[derive(Debug)]
struct Control {
    half_open: HalfOpen,
    opens_in_row: u32,
    rng: fastrand::Rng,
    /// Events raised under the lock, delivered once it is released (so a listener may call
    /// back into the breaker).
    pending: Vec<Event>,
}

/// The control lock; delivers the events raised while it was held when it is released.
struct Locked<'a> {
    inner: &'a Inner,
    guard: Option<MutexGuard<'a, Control>>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Control;
    fn deref(&self) -> &Control {
        self.guard.as_ref().expect("guard is present until drop")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Control {
        self.guard.as_mut().expect("guard is present until drop")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let events = std::mem::take(&mut guard.pending);
            drop(guard);
            for event in &events {
                self.inner.listeners.deliver(event);
            }
        }
    }
}

#[cfg(feature = "metrics")]
#[derive(Debug)]
struct Meters {
    state: metrics::Gauge,
    rejected: metrics::Counter,
}

#[derive(Debug)]
pub(crate) struct Inner {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    /// `generation << 8 | state`.
    state: AtomicU64,
    /// While open: nanoseconds after `base` at which probing may start.
    open_until: AtomicU64,
    window: Window,
    base: Instant,
    control: Mutex<Control>,
    not_permitted: AtomicU64,
    /// Metrics-only: a threshold crossing has been reported and not yet cleared.
    threshold_reported: AtomicBool,
    listeners: Listeners,
    #[cfg(feature = "metrics")]
    meters: Meters,
}

/// What a permit remembers of its admission: the state word it was admitted under (a
/// half-open word makes it a probe) and, when slow calls are detected, its start time in
/// nanoseconds after `base`. Two plain words, so permits move around in registers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    word: u64,
    start: u64,
}

/// `Ticket::start` when the call is not timed.
const UNTIMED: u64 = u64::MAX;
/// `Ticket::word` of a permit already settled.
const SETTLED: u64 = u64::MAX;

impl Ticket {
    fn is_probe(&self) -> bool {
        state_of(self.word) == State::HalfOpen
    }

    /// The ticket, once: later calls get `None`.
    #[inline]
    fn take(&mut self) -> Option<Ticket> {
        let word = std::mem::replace(&mut self.word, SETTLED);
        (word != SETTLED).then_some(Ticket {
            word,
            start: self.start,
        })
    }
}

/// A circuit breaker: stops calling an upstream that keeps failing or is too slow, and lets a
/// few probe calls through after a pause to find out whether it has recovered.
///
/// It is cheap to clone (every clone shares one state), `Send + Sync`, and usable from sync and
/// async code. Three ways in share one core: [`call`](Self::call), the permit API
/// ([`try_acquire`](Self::try_acquire) then [`Permit::record`]), and the tower
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// # Example
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, SlidingWindow, State};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = CircuitBreakerConfig::builder()
///     .sliding_window(SlidingWindow::Count { size: 10 })
///     .minimum_number_of_calls(4)
///     .failure_rate_threshold(50.0)
///     .build()?;
/// let breaker = CircuitBreaker::new("inventory", config);
///
/// for _ in 0..4 {
///     let _ = breaker.call(|| async { Err::<(), _>("connection refused") }).await;
/// }
/// assert_eq!(breaker.state(), State::Open);
/// let err = breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap_err();
/// assert!(err.rejected().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

/// Counts and rates of a breaker at one moment; see [`CircuitBreaker::metrics`].
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig, Outcome, State};
///
/// let config = CircuitBreakerConfig::builder().minimum_number_of_calls(4).build()?;
/// let breaker = CircuitBreaker::new("reports", config);
/// for outcome in [Outcome::Success, Outcome::Failure, Outcome::Success, Outcome::Success] {
///     breaker.try_acquire().unwrap().record(outcome);
/// }
/// let m = breaker.metrics();
/// assert_eq!(m.state, State::Closed);
/// assert_eq!(m.failure_rate, Some(25.0));
/// # Ok::<(), meshwork_circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The current state.
    pub state: State,
    /// Calls in the window (for a consecutive-failures window: the current run of failures).
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Slow calls in the window.
    pub slow_calls: u64,
    /// Calls refused since the breaker was created.
    pub not_permitted_calls: u64,
    /// Failure rate in percent, once the window holds the minimum number of calls.
    pub failure_rate: Option<f64>,
    /// Slow-call rate in percent, once the window holds the minimum number of calls.
    pub slow_call_rate: Option<f64>,
}

impl CircuitBreaker {
    /// A breaker named `name` (the name appears in errors, events, logs and metrics).
    ///
    /// `config` has been validated by its builder; a config changed by hand afterwards is
    /// checked with [`CircuitBreakerConfig::validate`] by [`try_new`](Self::try_new).
    pub fn new(name: impl Into<Arc<str>>, config: CircuitBreakerConfig) -> Self {
        let name = name.into();
        let window = match config.sliding_window {
            SlidingWindow::Count { size } => Window::Count(CountWindow::new(size)),
            SlidingWindow::Time { duration, buckets } => Window::Time(TimeWindow::new(
                u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
                buckets,
            )),
            SlidingWindow::ConsecutiveFailures { .. } => {
                Window::Consecutive(ConsecutiveWindow::default())
            }
        };
        let rng = match config.rng_seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        let now = Instant::now();
        #[cfg(feature = "metrics")]
        let meters = {
            let label = name.to_string();
            let meters = Meters {
                state: metrics::gauge!("meshwork_circuit_breaker_state", "name" => label.clone()),
                rejected: metrics::counter!("meshwork_circuit_breaker_rejected_calls_total", "name" => label),
            };
            meters.state.set(State::Closed.code() as f64);
            meters
        };
        CircuitBreaker {
            inner: Arc::new(Inner {
                name,
                window,
                state: AtomicU64::new(pack(0, State::Closed)),
                open_until: AtomicU64::new(0),
                base: now,
                control: Mutex::new(Control {
                    half_open: HalfOpen {
                        word: u64::MAX,
                        issued: 0,
                        successes: 0,
                        failures: 0,
                        since: now,
                    },
                    opens_in_row: 0,
                    rng,
                    pending: Vec::new(),
                }),
                not_permitted: AtomicU64::new(0),
                threshold_reported: AtomicBool::new(false),
                listeners: Listeners::default(),
                config,
                #[cfg(feature = "metrics")]
                meters,
            }),
        }
    }

    /// Like [`new`](Self::new), but validates `config` first.
    ///
    /// ```
    /// use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerConfig};
    ///
    /// let mut config = CircuitBreakerConfig::default();
    /// config.failure_rate_threshold = 0.0;
    /// let err = CircuitBreaker::try_new("db", config).unwrap_err();
    /// assert_eq!(err.field(), "failure_rate_threshold");
    /// ```
    pub fn try_new(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
    ) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        Ok(CircuitBreaker::new(name, config))
    }

    /// A breaker with the default config (the last 100 calls, opens at 50% failures, 30 s
    /// open, 10 probes).
    pub fn with_defaults(name: impl Into<Arc<str>>) -> Self {
        CircuitBreaker::new(name, CircuitBreakerConfig::default())
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The breaker's config.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// The current state, as every clone sees it.
    ///
    /// An open breaker whose open duration has passed still reads `Open` until the next call
    /// moves it to half-open.
    pub fn state(&self) -> State {
        state_of(self.inner.state.load(Acquire))
    }

    /// Counts and rates over the current window.
    ///
    /// ```
    /// use meshwork_circuit_breaker::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::with_defaults("geo");
    /// breaker.try_acquire()?.record_result(&Err::<(), _>("boom"));
    /// let m = breaker.metrics();
    /// assert_eq!((m.calls, m.failed_calls, m.failure_rate), (1, 1, None));
    /// # Ok::<(), meshwork_circuit_breaker::Rejected>(())
    /// ```
    pub fn metrics(&self) -> Metrics {
        let inner = &*self.inner;
        let counts = inner.counts();
        let min = u64::from(inner.config.minimum_number_of_calls);
        let rate = |part: u64| {
            (counts.calls >= min && counts.calls > 0)
                .then(|| part as f64 * 100.0 / counts.calls as f64)
        };
        Metrics {
            state: self.state(),
            calls: counts.calls,
            failed_calls: counts.failures,
            slow_calls: counts.slow,
            not_permitted_calls: inner.not_permitted.load(Relaxed),
            failure_rate: rate(counts.failures),
            slow_call_rate: rate(counts.slow),
        }
    }

    /// Calls `listener` with every [`Event`] from now on, synchronously, on the thread that
    /// caused it. Keep listeners quick; send to a channel for anything slow.
    pub fn on_event<F>(&self, listener: F)
    where
        F: Fn(&Event) + Send + Sync + 'static,
    {
        self.add_listener(Arc::new(listener));
    }

    pub(crate) fn add_listener(&self, listener: Arc<dyn Fn(&Event) + Send + Sync>) {
        self.inner.listeners.add(listener);
    }

    /// Asks to make one call. On success the returned [`Permit`] must be given the call's
    /// outcome with [`Permit::record`]; a permit dropped without it (a cancelled call) is given
    /// back and counts as nothing.
    ///
    /// ```
    /// use meshwork_circuit_breaker::{CircuitBreaker, Outcome};
    ///
    /// let breaker = CircuitBreaker::with_defaults("legacy-soap");
    /// match breaker.try_acquire() {
    ///     Ok(permit) => {
    ///         let status = 503; // from a client that can't be wrapped
    ///         permit.record(if status >= 500 { Outcome::Failure } else { Outcome::Success });
    ///     }
    ///     Err(rejected) => eprintln!("not calling: {rejected}"),
    /// }
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let ticket = self.inner.acquire()?;
        Ok(Permit(Held {
            inner: &self.inner,
            ticket,
        }))
    }

    /// Like [`try_acquire`](Self::try_acquire), but the permit owns a handle to the breaker
    /// and can move into a spawned task.
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        let ticket = self.inner.acquire()?;
        Ok(OwnedPermit(Held {
            inner: self.inner.clone(),
            ticket,
        }))
    }

    /// Runs `f` if the breaker allows it and records the outcome: `Ok` is a success, `Err` a
    /// failure. If the returned future is dropped before it finishes, nothing is recorded and a
    /// half-open probe permit is given back.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(&DefaultClassifier, f).await
    }

    /// Like [`call`](Self::call), with a classifier deciding how the result counts.
    ///
    /// ```
    /// use meshwork_circuit_breaker::{CircuitBreaker, Outcome};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let breaker = CircuitBreaker::with_defaults("catalog");
    /// let server_errors = |r: &Result<u16, std::io::Error>| match r {
    ///     Ok(status) if *status >= 500 => Outcome::Failure,
    ///     Ok(_) => Outcome::Success,
    ///     Err(_) => Outcome::Failure,
    /// };
    /// let status = breaker.call_with(&server_errors, || async { Ok(503) }).await.unwrap();
    /// assert_eq!(status, 503);
    /// assert_eq!(breaker.metrics().failed_calls, 1);
    /// # }
    /// ```
    pub async fn call_with<C, F, Fut, T, E>(&self, classifier: &C, f: F) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = self.try_acquire()?;
        let result = f().await;
        permit.record(classifier.classify(&result));
        result.map_err(Error::Inner)
    }

    /// Runs the blocking function `f` if the breaker allows it and records the outcome.
    ///
    /// ```
    /// use meshwork_circuit_breaker::CircuitBreaker;
    ///
    /// let breaker = CircuitBreaker::with_defaults("disk");
    /// let n = breaker.call_sync(|| "42".parse::<u32>()).unwrap();
    /// assert_eq!(n, 42);
    /// ```
    #[inline]
    pub fn call_sync<F, T, E>(&self, f: F) -> Result<T, Error<E>>
    where
        F: FnOnce() -> Result<T, E>,
    {
        self.call_sync_with(&DefaultClassifier, f)
    }

    /// Like [`call_sync`](Self::call_sync), with a classifier deciding how the result counts.
    #[inline]
    pub fn call_sync_with<C, F, T, E>(&self, classifier: &C, f: F) -> Result<T, Error<E>>
    where
        C: Classify<T, E> + ?Sized,
        F: FnOnce() -> Result<T, E>,
    {
        let permit = self.try_acquire()?;
        let result = f();
        permit.record(classifier.classify(&result));
        result.map_err(Error::Inner)
    }

    /// Moves the breaker to `state` by hand: `ForcedOpen` to take an upstream out of
    /// rotation, `Disabled` to stop protecting, `MetricsOnly` to watch thresholds without
    /// acting, `Closed` to start afresh, `Open`/`HalfOpen` to test recovery. Entering `Closed`
    /// or `MetricsOnly` clears the window.
    ///
    /// ```
    /// use meshwork_circuit_breaker::{CircuitBreaker, State};
    ///
    /// let breaker = CircuitBreaker::with_defaults("search");
    /// breaker.transition_to(State::MetricsOnly);
    /// assert_eq!(breaker.state(), State::MetricsOnly);
    /// ```
    pub fn transition_to(&self, state: State) {
        let inner = &*self.inner;
        let mut ctl = inner.lock();
        let word = inner.state.load(Acquire);
        if state == State::Closed {
            ctl.opens_in_row = 0;
        }
        if state == State::Open {
            ctl.opens_in_row = ctl.opens_in_row.saturating_add(1);
        }
        inner.set_state(&mut ctl, word, state);
    }

    /// Rejects every call until [`reset`](Self::reset) (or another transition).
    pub fn force_open(&self) {
        self.transition_to(State::ForcedOpen);
    }

    /// Closes the breaker, clears its window and forgets earlier openings.
    pub fn reset(&self) {
        self.transition_to(State::Closed);
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
///
/// Give it the outcome with [`record`](Self::record); dropping it instead (a cancelled call)
/// records nothing and gives a half-open probe permit back.
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, Outcome};
///
/// let breaker = CircuitBreaker::with_defaults("ftp");
/// let permit = breaker.try_acquire()?;
/// permit.record(Outcome::Success);
/// assert_eq!(breaker.metrics().calls, 1);
/// # Ok::<(), meshwork_circuit_breaker::Rejected>(())
/// ```
#[derive(Debug)]
#[must_use = "a permit records nothing unless given the call's outcome"]
pub struct Permit<'a>(Held<&'a Inner>);

impl Permit<'_> {
    /// Records how the call went.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.0.record(outcome);
    }

    /// Records a result with the default classification (`Ok` success, `Err` failure).
    #[inline]
    pub fn record_result<T, E>(self, result: &Result<T, E>) {
        self.record(DefaultClassifier.classify(result));
    }
}

/// A [`Permit`] that owns a handle to its breaker, from
/// [`CircuitBreaker::try_acquire_owned`]: it can move into a spawned task.
///
/// ```
/// use meshwork_circuit_breaker::CircuitBreaker;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let breaker = CircuitBreaker::with_defaults("thumbnails");
/// let permit = breaker.try_acquire_owned()?;
/// tokio::spawn(async move {
///     let result: Result<(), std::io::Error> = Ok(()); // the work
///     permit.record_result(&result);
/// })
/// .await?;
/// assert_eq!(breaker.metrics().calls, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
#[must_use = "a permit records nothing unless given the call's outcome"]
pub struct OwnedPermit(Held<Arc<Inner>>);

impl OwnedPermit {
    /// Records how the call went.
    #[inline]
    pub fn record(mut self, outcome: Outcome) {
        self.0.record(outcome);
    }

    /// Records a result with the default classification (`Ok` success, `Err` failure).
    #[inline]
    pub fn record_result<T, E>(self, result: &Result<T, E>) {
        self.record(DefaultClassifier.classify(result));
    }
}

/// The body of both permit kinds: a ticket and a way to the breaker; a ticket not settled by
/// `record` is released on drop.
#[derive(Debug)]
struct Held<R: Deref<Target = Inner>> {
    inner: R,
    ticket: Ticket,
}

impl<R: Deref<Target = Inner>> Held<R> {
    #[inline]
    fn record(&mut self, outcome: Outcome) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.record(ticket, outcome);
        }
    }
}

impl<R: Deref<Target = Inner>> Drop for Held<R> {
    #[inline]
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.inner.release(ticket);
        }
    }
}

impl Inner {
    fn lock(&self) -> Locked<'_> {
        // Control holds plain counters that stay consistent if a thread panicked.
        Locked {
            inner: self,
            guard: Some(self.control.lock().unwrap_or_else(|p| p.into_inner())),
        }
    }

    /// Raises an event: queued while the control lock is held, delivered at once otherwise.
    /// Nothing is built when nobody listens.
    fn raise(&self, ctl: Option<&mut Control>, event: impl FnOnce() -> Event) {
        if self.listeners.active() {
            match ctl {
                Some(ctl) => ctl.pending.push(event()),
                None => self.listeners.deliver(&event()),
            }
        }
    }

    fn nanos_since_base(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn counts(&self) -> Counts {
        match &self.window {
            Window::Count(w) => w.counts(),
            Window::Time(w) => w.counts(self.nanos_since_base(Instant::now())),
            Window::Consecutive(w) => w.counts(),
        }
    }

    #[inline]
    fn start_clock(&self) -> u64 {
        if self.config.slow_call_duration_threshold.is_some() {
            self.nanos_since_base(Instant::now())
        } else {
            UNTIMED
        }
    }

    #[inline]
    fn acquire(&self) -> Result<Ticket, Rejected> {
        loop {
            let word = self.state.load(Acquire);
            return match state_of(word) {
                State::Closed | State::MetricsOnly => Ok(Ticket {
                    word,
                    start: self.start_clock(),
                }),
                State::Disabled => Ok(Ticket {
                    word,
                    start: UNTIMED,
                }),
                State::ForcedOpen => Err(self.reject(None, State::ForcedOpen, None)),
                State::Open => {
                    let now = Instant::now();
                    let now_nanos = self.nanos_since_base(now);
                    let until = self.open_until.load(Acquire);
                    if now_nanos < until {
                        return Err(self.reject(
                            None,
                            State::Open,
                            Some(Duration::from_nanos(until - now_nanos)),
                        ));
                    }
                    let mut ctl = self.lock();
                    if self.state.load(Acquire) != word {
                        continue;
                    }
                    let half_open = self.set_state(&mut ctl, word, State::HalfOpen);
                    self.take_probe(&mut ctl, half_open, now)
                }
                State::HalfOpen => {
                    let mut ctl = self.lock();
                    if self.state.load(Acquire) != word {
                        continue;
                    }
                    self.take_probe(&mut ctl, word, Instant::now())
                }
            };
        }
    }

    /// Admits a half-open probe if one of the permits is free.
    fn take_probe(&self, ctl: &mut Control, word: u64, now: Instant) -> Result<Ticket, Rejected> {
        if let Some(max) = self.config.max_half_open_duration
            && now.saturating_duration_since(ctl.half_open.since) >= max
        {
            // Probes hung (or never reported): open again rather than stay stuck.
            ctl.opens_in_row = ctl.opens_in_row.saturating_add(1);
            self.set_state(ctl, word, State::Open);
            let until = self.open_until.load(Acquire);
            let retry = Duration::from_nanos(until.saturating_sub(self.nanos_since_base(now)));
            return Err(self.reject(Some(ctl), State::Open, Some(retry)));
        }
        if ctl.half_open.issued < self.config.permitted_calls_in_half_open {
            ctl.half_open.issued += 1;
            Ok(Ticket {
                word,
                start: self.start_clock(),
            })
        } else {
            Err(self.reject(Some(ctl), State::HalfOpen, None))
        }
    }

    fn reject(
        &self,
        ctl: Option<&mut Control>,
        state: State,
        retry_after: Option<Duration>,
    ) -> Rejected {
        self.not_permitted.fetch_add(1, Relaxed);
        #[cfg(feature = "metrics")]
        self.meters.rejected.increment(1);
        self.raise(ctl, || Event::Rejected {
            name: self.name.clone(),
            state,
        });
        Rejected::new(self.name.clone(), state, retry_after)
    }

    #[inline]
    fn outcome_bits(&self, ticket: &Ticket, outcome: Outcome, now: &mut Option<u64>) -> u8 {
        let mut bits = PRESENT;
        if outcome == Outcome::Failure {
            bits |= FAILED;
        }
        if ticket.start != UNTIMED
            && let Some(threshold) = self.config.slow_call_duration_threshold
        {
            let t = *now.get_or_insert_with(|| self.nanos_since_base(Instant::now()));
            if Duration::from_nanos(t.saturating_sub(ticket.start)) >= threshold {
                bits |= SLOW;
            }
        }
        bits
    }

    #[inline]
    fn record(&self, ticket: Ticket, outcome: Outcome) {
        if ticket.is_probe() {
            return self.record_probe(ticket, outcome);
        }
        if outcome == Outcome::Ignored || state_of(ticket.word) == State::Disabled {
            return;
        }
        if self.state.load(Relaxed) != ticket.word {
            // The breaker changed state since this call was admitted: its outcome belongs to
            // a window that is gone.
            return;
        }
        let mut now = None;
        let bits = self.outcome_bits(&ticket, outcome, &mut now);
        let counts = match &self.window {
            Window::Count(w) => w.record(bits),
            Window::Time(w) => {
                let t = *now.get_or_insert_with(|| self.nanos_since_base(Instant::now()));
                w.record(t, bits)
            }
            Window::Consecutive(w) => w.record(bits),
        };
        // A success can only trip the breaker by bringing the window up to the minimum number
        // of calls while it holds failures or slow calls.
        if bits & (FAILED | SLOW) != 0
            || (counts.calls == u64::from(self.config.minimum_number_of_calls)
                && counts.failures + counts.slow > 0)
        {
            self.evaluate(ticket.word, counts);
        }
    }

    fn check(&self, counts: Counts) -> Option<Trip> {
        if let SlidingWindow::ConsecutiveFailures { threshold } = self.config.sliding_window {
            return (counts.failures >= u64::from(threshold))
                .then_some(Trip::FailureCount(counts.failures));
        }
        if let Some(limit) = self.config.failure_count_threshold
            && counts.failures >= u64::from(limit)
        {
            return Some(Trip::FailureCount(counts.failures));
        }
        if counts.calls == 0 || counts.calls < u64::from(self.config.minimum_number_of_calls) {
            return None;
        }
        let failure_rate = counts.failures as f64 * 100.0 / counts.calls as f64;
        if failure_rate >= self.config.failure_rate_threshold {
            return Some(Trip::FailureRate(failure_rate));
        }
        if self.config.slow_call_duration_threshold.is_some() {
            let slow_rate = counts.slow as f64 * 100.0 / counts.calls as f64;
            if slow_rate >= self.config.slow_call_rate_threshold {
                return Some(Trip::SlowCallRate(slow_rate));
            }
        }
        None
    }

    fn evaluate(&self, word: u64, counts: Counts) {
        let trip = self.check(counts);
        if state_of(word) == State::MetricsOnly {
            match trip {
                Some(trip) => {
                    if !self.threshold_reported.swap(true, Relaxed) {
                        self.report(None, trip);
                    }
                }
                None => {
                    if self.threshold_reported.load(Relaxed) {
                        self.threshold_reported.store(false, Relaxed);
                    }
                }
            }
            return;
        }
        let Some(trip) = trip else { return };
        let mut ctl = self.lock();
        if self.state.load(Acquire) != word {
            return;
        }
        self.report(Some(&mut ctl), trip);
        ctl.opens_in_row = 1;
        self.set_state(&mut ctl, word, State::Open);
    }

    fn report(&self, ctl: Option<&mut Control>, trip: Trip) {
        #[cfg(feature = "tracing")]
        tracing::warn!(breaker = %self.name, ?trip, "circuit breaker threshold exceeded");
        self.raise(ctl, || match trip {
            Trip::FailureRate(rate) => Event::FailureRateExceeded {
                name: self.name.clone(),
                rate,
            },
            Trip::SlowCallRate(rate) => Event::SlowCallRateExceeded {
                name: self.name.clone(),
                rate,
            },
            Trip::FailureCount(failures) => Event::FailureCountExceeded {
                name: self.name.clone(),
                failures,
            },
        });
    }

    fn record_probe(&self, ticket: Ticket, outcome: Outcome) {
        let mut now = None;
        let bits = self.outcome_bits(&ticket, outcome, &mut now);
        let mut ctl = self.lock();
        if ctl.half_open.word != ticket.word || self.state.load(Acquire) != ticket.word {
            return;
        }
        let permitted = self.config.permitted_calls_in_half_open;
        let needed = self.config.successes_to_close();
        match outcome {
            Outcome::Ignored => {
                ctl.half_open.issued -= 1;
            }
            _ if bits & (FAILED | SLOW) != 0 => {
                ctl.half_open.failures += 1;
                if ctl.half_open.failures > permitted - needed {
                    ctl.opens_in_row = ctl.opens_in_row.saturating_add(1);
                    self.set_state(&mut ctl, ticket.word, State::Open);
                }
            }
            _ => {
                ctl.half_open.successes += 1;
                if ctl.half_open.successes >= needed {
                    ctl.opens_in_row = 0;
                    self.set_state(&mut ctl, ticket.word, State::Closed);
                }
            }
        }
    }

    /// A permit dropped without an outcome: give a probe permit back.
    #[inline]
    fn release(&self, ticket: Ticket) {
        if ticket.is_probe() {
            let mut ctl = self.lock();
            if ctl.half_open.word == ticket.word && self.state.load(Acquire) == ticket.word {
                ctl.half_open.issued -= 1;
            }
        }
    }

    /// Moves from `from` (the current word) to `to`, doing the entry work of `to`; returns the
    /// new word. Called with the control lock held.
    fn set_state(&self, ctl: &mut Control, from: u64, to: State) -> u64 {
        let word = pack((from >> STATE_BITS).wrapping_add(1), to);
        let now = Instant::now();
        match to {
            State::Closed | State::MetricsOnly => {
                self.threshold_reported.store(false, Relaxed);
                match &self.window {
                    Window::Count(w) => w.reset(),
                    Window::Time(w) => w.reset(),
                    Window::Consecutive(w) => w.reset(),
                }
            }
            State::Open => {
                let backoff = &self.config.open_backoff;
                let open_for =
                    backoff.jittered(backoff.duration_for(ctl.opens_in_row.max(1)), &mut ctl.rng);
                let until = self
                    .nanos_since_base(now)
                    .saturating_add(u64::try_from(open_for.as_nanos()).unwrap_or(u64::MAX));
                self.open_until.store(until, Release);
            }
            State::HalfOpen => {
                ctl.half_open = HalfOpen {
                    word,
                    issued: 0,
                    successes: 0,
                    failures: 0,
                    since: now,
                };
            }
            State::Disabled | State::ForcedOpen => {}
        }
        self.state.store(word, Release);
        let from = state_of(from);
        #[cfg(feature = "tracing")]
        tracing::info!(breaker = %self.name, %from, %to, "circuit breaker state changed");
        #[cfg(feature = "metrics")]
        {
            self.meters.state.set(to.code() as f64);
            metrics::counter!(
                "meshwork_circuit_breaker_transitions_total",
                "name" => self.name.to_string(),
                "from" => from.as_str(),
                "to" => to.as_str()
            )
            .increment(1);
        }
        self.raise(Some(ctl), || Event::StateTransition {
            name: self.name.clone(),
            from,
            to,
        });
        word
    }
}
