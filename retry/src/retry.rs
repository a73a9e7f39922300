//! The policy handle, its direct API and its step API.

use std::any::Any;
use std::error::Error as StdError;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use crate::backoff::{DelayState, seeded_rng};
use crate::budget::{ConcurrencySlot, RetryBudget};
use crate::classify::{Classify, Decision};
use crate::config::RetryConfig;
use crate::error::{BudgetExhausted, Error, TimedOut};
use crate::event::{Event, GiveUpReason, Listener, Telemetry};
use crate::hedge::HedgeTimer;

/// A retry policy: a name, a validated [`RetryConfig`], a budget shared by every call, and
/// event listeners.
///
/// Cheap to clone (one `Arc`), `Send + Sync`; clones share the budget and the listeners.
///
/// # Example
/// ```
/// use meshwork_retry::{Retry, RetryConfig};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let retry = Retry::new("inventory", RetryConfig::default());
/// let mut calls = 0;
/// let stock = retry
///     .call(|| {
///         calls += 1;
///         let n = calls;
///         async move {
///             if n < 3 { Err(std::io::Error::other("flaky")) } else { Ok(42) }
///         }
///     })
///     .await;
/// assert_eq!(stock.unwrap(), 42);
/// # }
/// ```
#[derive(Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: RetryConfig,
    pub(crate) budget: Option<Arc<RetryBudget>>,
    pub(crate) telemetry: Telemetry,
    rng: Mutex<fastrand::Rng>,
    hedge: HedgeTimer,
}

impl Inner {
    pub(crate) fn name(&self) -> &Arc<str> {
        self.telemetry.name()
    }

    #[inline]
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.budget {
            budget.deposit();
        }
    }

    fn fork_rng(&self) -> fastrand::Rng {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).fork()
    }

    /// Whether a never-retry type is `error` itself, or inside it when it is a boxed error.
    pub(crate) fn is_never_retry_any<E: 'static>(&self, error: &E) -> bool {
        let types = &self.config.never_retry;
        if types.is_empty() {
            return false;
        }
        let any = error as &dyn Any;
        if let Some(e) = any.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
            return self.config.is_never_retry(&**e);
        }
        if let Some(e) = any.downcast_ref::<Box<dyn StdError + Send>>() {
            return self.config.is_never_retry(&**e);
        }
        if let Some(e) = any.downcast_ref::<Box<dyn StdError>>() {
            return self.config.is_never_retry(&**e);
        }
        types.iter().any(|t| t.is_any(any))
    }

    /// The default classification: retry every error but the never-retry types (looked for
    /// in the error's source chain), never a success.
    #[inline]
    pub(crate) fn on_error<T, E: StdError + 'static>(&self, outcome: &Result<T, E>) -> Decision {
        match outcome {
            Ok(_) => Decision::Done,
            Err(e) if self.config.is_never_retry(e) => Decision::Done,
            Err(_) => Decision::Retry,
        }
    }

    /// A classifier's `decision`, overruled to `Done` when the error is a never-retry type
    /// (see [`is_never_retry_any`](Inner::is_never_retry_any)).
    #[inline]
    pub(crate) fn guard<T, E: 'static>(
        &self,
        decision: Decision,
        outcome: &Result<T, E>,
    ) -> Decision {
        match outcome {
            Err(e) if decision.is_retry() && self.is_never_retry_any(e) => Decision::Done,
            _ => decision,
        }
    }

    /// The error to return instead of the last outcome when the budget refused a retry and
    /// `budget_error` is set.
    pub(crate) fn budget_refusal(&self, attempts: u32, next: Next) -> Option<BudgetExhausted> {
        match next {
            Next::GiveUp(reason) if reason.is_budget() && self.config.budget_error => {
                Some(BudgetExhausted::new(
                    self.name().clone(),
                    attempts,
                    reason == GiveUpReason::Concurrency,
                ))
            }
            _ => None,
        }
    }

    /// Takes a retry from the budget (and a place among concurrent retries, once per call).
    fn withdraw(
        &self,
        slot: &mut Option<ConcurrencySlot>,
        now: Instant,
    ) -> Result<(), GiveUpReason> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        if slot.is_none() {
            *slot = Some(
                budget
                    .try_acquire_concurrency()
                    .ok_or(GiveUpReason::Concurrency)?,
            );
        }
        if budget.try_withdraw_at(now) {
            Ok(())
        } else {
            Err(GiveUpReason::Budget)
        }
    }
}

/// What to do after an attempt, as answered by the step API ([`Attempts`]); see
/// [`Retry::start`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Next {
    /// Stop: the outcome is final (a success or an error not worth retrying).
    Done,
    /// Make another attempt after this delay.
    Retry(Duration),
    /// The outcome was worth retrying, but retrying stopped for this reason.
    GiveUp(GiveUpReason),
}

/// The retry state of one call sequence, without the policy it belongs to.
#[derive(Debug, Default)]
pub(crate) struct AttemptState {
    attempts: u32,
    first_failure: Option<Instant>,
    delays: Option<DelayState>,
    slot: Option<ConcurrencySlot>,
}

impl AttemptState {
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Records the outcome of one attempt, as a decision, and says what comes next.
    #[inline]
    pub(crate) fn next(&mut self, inner: &Inner, decision: Decision) -> Next {
        self.attempts = self.attempts.saturating_add(1);
        match decision {
            Decision::Done => {
                self.slot = None;
                Next::Done
            }
            Decision::Retry => self.retry(inner, None),
            Decision::RetryAfter(after) => self.retry(inner, Some(after)),
        }
    }

    #[cold]
    fn retry(&mut self, inner: &Inner, after: Option<Duration>) -> Next {
        let config = &inner.config;
        if self.attempts >= config.max_attempts {
            return self.give_up(inner, GiveUpReason::MaxAttempts);
        }
        let now = Instant::now();
        let first = *self.first_failure.get_or_insert(now);
        let delay = match after {
            Some(after) => after.min(config.max_delay),
            None => self
                .delays
                .get_or_insert_with(|| DelayState::new(inner.fork_rng()))
                .delay(config, self.attempts),
        };
        if let Some(max) = config.max_elapsed
            && now.saturating_duration_since(first).saturating_add(delay) > max
        {
            return self.give_up(inner, GiveUpReason::MaxElapsed);
        }
        if let Err(reason) = inner.withdraw(&mut self.slot, now) {
            return self.give_up(inner, reason);
        }
        inner.telemetry.retry(self.attempts, delay);
        Next::Retry(delay)
    }

    /// Records a retryable failure whose request can't be sent again (tower adapter).
    #[cfg(feature = "tower")]
    pub(crate) fn next_not_replayable(&mut self, inner: &Inner) -> Next {
        self.attempts = self.attempts.saturating_add(1);
        self.give_up(inner, GiveUpReason::NotReplayable)
    }

    fn give_up(&mut self, inner: &Inner, reason: GiveUpReason) -> Next {
        self.slot = None;
        inner.telemetry.gave_up(self.attempts, reason);
        Next::GiveUp(reason)
    }
}

/// The outcome of one attempt: the call's own result, or the timeout it ran into.
type Outcome<T, E> = Result<Result<T, E>, Duration>;

impl Retry {
    /// A policy named `name` (used in errors, events and metrics) with this configuration.
    ///
    /// The configuration is used as given; build it with [`RetryConfig::builder`] to have it
    /// validated.
    pub fn new(name: impl Into<Arc<str>>, config: RetryConfig) -> Self {
        let name = name.into();
        let budget = config.budget.map(|b| Arc::new(RetryBudget::new(b)));
        let rng = Mutex::new(seeded_rng(config.rng_seed));
        let hedge = HedgeTimer::new(config.hedge_delay);
        Retry {
            inner: Arc::new(Inner {
                config,
                budget,
                telemetry: Telemetry::new(name),
                rng,
                hedge,
            }),
        }
    }

    /// A policy with [`RetryConfig::default`].
    pub fn with_defaults(name: impl Into<Arc<str>>) -> Self {
        Retry::new(name, RetryConfig::default())
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.inner.name()
    }

    /// The policy's configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.inner.config
    }

    /// The policy's budget, unless budgeting is off.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_deref()
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// Calls `listener` with every [`Event`] from now on. Listeners run synchronously on the
    /// retry path: keep them quick.
    pub fn on_event(&self, listener: impl Fn(&Event) + Send + Sync + 'static) {
        self.add_listener(Arc::new(listener));
    }

    /// Adds a listener shared with other policies (a [`KeyedRetry`](crate::KeyedRetry)'s).
    pub(crate) fn add_listener(&self, listener: Listener) {
        self.inner.telemetry.add(listener);
    }

    /// Whether `error`, or anything in its source chain, is of a type registered with
    /// [`never_retry`](crate::RetryConfigBuilder::never_retry). For custom classifiers.
    pub fn is_never_retry(&self, error: &(dyn StdError + 'static)) -> bool {
        self.inner.config.is_never_retry(error)
    }

    /// Starts the step API for one call sequence, for code that can't hand its call to
    /// [`call`](Retry::call) (a message handler that nacks with a delay, say). Counts as one
    /// call for the budget.
    ///
    /// ```
    /// use meshwork_retry::{Jitter, Next, Retry, RetryConfig};
    /// use std::time::Duration;
    ///
    /// let retry = Retry::new("consumer", RetryConfig::builder().jitter(Jitter::None).build()?);
    /// let mut attempts = retry.start();
    /// let failed: Result<(), std::io::Error> = Err(std::io::Error::other("busy"));
    /// assert_eq!(attempts.next_delay(&failed), Next::Retry(Duration::from_millis(100)));
    /// assert_eq!(attempts.next_delay(&failed), Next::Retry(Duration::from_millis(200)));
    /// assert!(matches!(attempts.next_delay(&failed), Next::GiveUp(_)));
    /// # Ok::<(), meshwork_retry::ConfigError>(())
    /// ```
    pub fn start(&self) -> Attempts<'_> {
        self.inner.deposit();
        Attempts {
            retry: self,
            state: AttemptState::default(),
        }
    }

    /// Runs `op`, retrying its errors (except the never-retry types) with backoff, within
    /// the budget. A success is never retried.
    ///
    /// The success path reads no clock, takes no lock and allocates nothing.
    ///
    /// ```
    /// use meshwork_retry::{Backoff, Error, Jitter, Retry, RetryConfig};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), meshwork_retry::ConfigError> {
    /// let config = RetryConfig::builder()
    ///     .max_attempts(2)
    ///     .backoff(Backoff::constant(Duration::from_millis(10)))
    ///     .jitter(Jitter::None)
    ///     .build()?;
    /// let retry = Retry::new("db", config);
    /// let mut attempts = 0;
    /// let result = retry
    ///     .call(|| {
    ///         attempts += 1;
    ///         async { Err::<(), _>(std::io::Error::other("connection reset")) }
    ///     })
    ///     .await;
    /// assert_eq!(attempts, 2);
    /// assert!(matches!(result, Err(Error::Inner(e)) if e.to_string() == "connection reset"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn call<T, E, F, Fut>(&self, op: F) -> impl Future<Output = Result<T, Error<E>>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: StdError + 'static,
    {
        let inner = &*self.inner;
        self.run(op, move |outcome: &Result<T, E>| inner.on_error(outcome))
    }

    /// Runs `op`, retrying what `classifier` asks for: errors, results (a `503`), with the
    /// delay it names (a Retry-After).
    ///
    /// Never-retry types are honoured when the error is of such a type or is a boxed
    /// `dyn Error` holding one in its chain; for other error types, call
    /// [`is_never_retry`](Retry::is_never_retry) in the classifier.
    ///
    /// ```
    /// use meshwork_retry::{Decision, Retry, RetryConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let retry = Retry::new("status", RetryConfig::default());
    /// let mut statuses = vec![200, 503, 503];
    /// let status = retry
    ///     .call_with(
    ///         |r: &Result<u16, std::io::Error>| match r {
    ///             Ok(503) | Err(_) => Decision::Retry,
    ///             Ok(_) => Decision::Done,
    ///         },
    ///         || {
    ///             let s = statuses.pop();
    ///             async move { Ok(s.unwrap_or(500)) }
    ///         },
    ///     )
    ///     .await;
    /// assert_eq!(status.unwrap(), 200);
    /// # }
    /// ```
    pub async fn call_with<T, E, F, Fut, C>(&self, classifier: C, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
        E: 'static,
    {
        let inner = &*self.inner;
        self.run(op, |outcome: &Result<T, E>| {
            inner.guard(classifier.classify(outcome), outcome)
        })
        .await
    }

    /// Like [`call_with`](Retry::call_with), with an async classifier (one that must look at
    /// a response body, or ask something else, before deciding).
    ///
    /// ```
    /// use meshwork_retry::{Decision, Retry, RetryConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let retry = Retry::new("jobs", RetryConfig::default());
    /// let mut left = 2;
    /// let result = retry
    ///     .call_with_async(
    ///         async |r: &Result<&str, std::io::Error>| {
    ///             tokio::task::yield_now().await;
    ///             if matches!(r, Ok("pending")) { Decision::Retry } else { Decision::Done }
    ///         },
    ///         || {
    ///             left -= 1;
    ///             let s = if left > 0 { "pending" } else { "done" };
    ///             async move { Ok(s) }
    ///         },
    ///     )
    ///     .await;
    /// assert_eq!(result.unwrap(), "done");
    /// # }
    /// ```
    pub async fn call_with_async<T, E, F, Fut, C>(
        &self,
        classifier: C,
        mut op: F,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: AsyncFn(&Result<T, E>) -> Decision,
        E: 'static,
    {
        let inner = &*self.inner;
        inner.deposit();
        let mut state = AttemptState::default();
        loop {
            let outcome = timed(inner.config.attempt_timeout, op()).await;
            let decision = match &outcome {
                Ok(r) => inner.guard(classifier(r).await, r),
                Err(_) => Decision::Retry,
            };
            match state.next(inner, decision) {
                Next::Retry(delay) => tokio::time::sleep(delay).await,
                next => return finish(inner, &state, next, outcome),
            }
        }
    }

    async fn run<T, E, F, Fut>(
        &self,
        mut op: F,
        classify: impl Fn(&Result<T, E>) -> Decision,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        inner.deposit();
        let first = if inner.config.attempt_timeout.is_none() {
            // The common case, kept lean: one attempt, no timer, no state touched on success.
            let result = op().await;
            let decision = classify(&result);
            if !decision.is_retry() {
                return result.map_err(Error::Inner);
            }
            Some((Ok(result), decision))
        } else {
            None
        };
        self.retry_loop(op, classify, first).await
    }

    /// Everything after a first attempt that asked for a retry (or every attempt, with a
    /// per-attempt timeout): kept out of [`run`](Self::run) so the success path carries no
    /// retry state.
    async fn retry_loop<T, E, F, Fut>(
        &self,
        mut op: F,
        classify: impl Fn(&Result<T, E>) -> Decision,
        mut first: Option<(Outcome<T, E>, Decision)>,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let mut state = AttemptState::default();
        loop {
            let (outcome, decision) = match first.take() {
                Some(first) => first,
                None => {
                    let outcome = timed(inner.config.attempt_timeout, op()).await;
                    let decision = match &outcome {
                        Ok(r) => classify(r),
                        Err(_) => Decision::Retry,
                    };
                    (outcome, decision)
                }
            };
            match state.next(inner, decision) {
                Next::Retry(delay) => tokio::time::sleep(delay).await,
                next => return finish(inner, &state, next, outcome),
            }
        }
    }

    /// Hedging (Finagle's backup requests, Polly's hedging): starts `op`, and if it has not
    /// succeeded after `hedge_delay`, starts it again while the first keeps running, up to
    /// `max_attempts` attempts in all; a retryable failure starts the next attempt at once.
    /// The first success wins and the other attempts are dropped (cancelled). Each extra
    /// attempt takes a retry from the budget.
    ///
    /// The delay is fixed, or follows a percentile of the latencies of this policy's recent
    /// successful hedged calls ([`HedgeDelay::Percentile`](crate::HedgeDelay::Percentile)):
    /// it is read once when the call starts, and the call's latency is recorded when it
    /// succeeds.
    ///
    /// Backoff, jitter, `max_elapsed` and a classifier's `RetryAfter` delay don't apply:
    /// hedging spends load on latency, and the budget bounds that load.
    ///
    /// Errors are classified as in [`call`](Retry::call). Hedging allocates (one task node per
    /// attempt); use it for latency, not for the cheapest path.
    ///
    /// ```
    /// use meshwork_retry::{Retry, RetryConfig};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let config = RetryConfig::builder().max_attempts(2).hedge_delay(Duration::from_millis(50)).build().unwrap();
    /// let retry = Retry::new("search", config);
    /// let mut n = 0;
    /// let start = tokio::time::Instant::now();
    /// let winner = retry
    ///     .hedge(|| {
    ///         n += 1;
    ///         let (me, took) = if n == 1 { (1, 1000) } else { (2, 10) };
    ///         async move {
    ///             tokio::time::sleep(Duration::from_millis(took)).await;
    ///             Ok::<_, std::io::Error>(me)
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!(winner.unwrap(), 2);
    /// assert_eq!(start.elapsed(), Duration::from_millis(60));
    /// # }
    /// ```
    pub async fn hedge<T, E, F, Fut>(&self, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: StdError + 'static,
    {
        let inner = &*self.inner;
        self.run_hedged(op, |outcome: &Result<T, E>| inner.on_error(outcome))
            .await
    }

    /// [`hedge`](Retry::hedge) with a classifier, as in [`call_with`](Retry::call_with): a
    /// result the classifier wants retried (a `503`) starts the next attempt at once.
    ///
    /// ```
    /// use meshwork_retry::{Decision, Retry, RetryConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let retry = Retry::new("lookup", RetryConfig::builder().max_attempts(2).build().unwrap());
    /// let mut statuses = vec![200, 503];
    /// let status = retry
    ///     .hedge_with(
    ///         |r: &Result<u16, std::io::Error>| match r {
    ///             Ok(503) | Err(_) => Decision::Retry,
    ///             Ok(_) => Decision::Done,
    ///         },
    ///         || {
    ///             let s = statuses.pop().unwrap_or(500);
    ///             async move { Ok(s) }
    ///         },
    ///     )
    ///     .await;
    /// assert_eq!(status.unwrap(), 200);
    /// # }
    /// ```
    pub async fn hedge_with<T, E, F, Fut, C>(&self, classifier: C, op: F) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E>,
        E: 'static,
    {
        let inner = &*self.inner;
        self.run_hedged(op, |outcome: &Result<T, E>| {
            inner.guard(classifier.classify(outcome), outcome)
        })
        .await
    }

    async fn run_hedged<T, E, F, Fut>(
        &self,
        mut op: F,
        classify: impl Fn(&Result<T, E>) -> Decision,
    ) -> Result<T, Error<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let inner = &*self.inner;
        let config = &inner.config;
        inner.deposit();
        let hedge_delay = inner.hedge.delay();
        let latencies = inner.hedge.window().map(|w| (w, Instant::now()));
        let launch = |op: &mut F| timed(config.attempt_timeout, op());
        let mut running = FuturesUnordered::new();
        running.push(launch(&mut op));
        let mut state = AttemptState {
            attempts: 1,
            ..AttemptState::default()
        };
        let mut can_launch = config.max_attempts > 1;
        let mut refused = None;
        let mut timer = pin!(tokio::time::sleep(hedge_delay));
        loop {
            let finished = poll_fn(|cx| {
                if let Poll::Ready(Some(outcome)) = running.poll_next_unpin(cx) {
                    return Poll::Ready(Some(outcome));
                }
                if can_launch && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                Poll::Pending
            })
            .await;
            let mut failed = None;
            if let Some(outcome) = finished {
                let decision = match &outcome {
                    Ok(r) => classify(r),
                    Err(_) => Decision::Retry,
                };
                if !decision.is_retry() {
                    if let (Some((window, started)), Ok(Ok(_))) = (latencies, &outcome) {
                        window.record(started.elapsed());
                    }
                    // The winner: dropping `running` cancels the other attempts.
                    return finish(inner, &state, Next::Done, outcome);
                }
                failed = Some(outcome);
            }
            // The timer fired, or an attempt failed: start the next one.
            if can_launch {
                match inner.withdraw(&mut state.slot, Instant::now()) {
                    Ok(()) => {
                        running.push(launch(&mut op));
                        state.attempts += 1;
                        inner.telemetry.hedge(state.attempts);
                        can_launch = state.attempts < config.max_attempts;
                        // `sleep` saturates where `Instant + Duration` would panic.
                        timer.set(tokio::time::sleep(hedge_delay));
                    }
                    Err(reason) => {
                        // Reports the refusal now and frees the concurrency slot; the attempts
                        // in flight may still win.
                        can_launch = false;
                        refused = Some(state.give_up(inner, reason));
                    }
                }
            }
            if let Some(outcome) = failed
                && running.is_empty()
            {
                // Every attempt failed and no more may start.
                let next =
                    refused.unwrap_or_else(|| state.give_up(inner, GiveUpReason::MaxAttempts));
                return finish(inner, &state, next, outcome);
            }
        }
    }
}

/// Runs one attempt, under the per-attempt timeout if there is one.
#[inline]
async fn timed<T, E>(
    timeout: Option<Duration>,
    attempt: impl Future<Output = Result<T, E>>,
) -> Outcome<T, E> {
    match timeout {
        None => Ok(attempt.await),
        Some(t) => tokio::time::timeout(t, attempt).await.map_err(|_| t),
    }
}

/// Turns the last outcome into the call's result.
#[inline]
fn finish<T, E>(
    inner: &Inner,
    state: &AttemptState,
    next: Next,
    outcome: Outcome<T, E>,
) -> Result<T, Error<E>> {
    if let Some(refusal) = inner.budget_refusal(state.attempts(), next) {
        return Err(Error::BudgetExhausted(refusal));
    }
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(Error::Inner(e)),
        Err(timeout) => Err(Error::TimedOut(TimedOut::new(
            inner.name().clone(),
            state.attempts(),
            timeout,
        ))),
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.name())
            .field("config", &self.inner.config)
            .field("budget", &self.inner.budget)
            .field("telemetry", &self.inner.telemetry)
            .finish()
    }
}

/// The step API: the retry state of one call sequence, from [`Retry::start`].
///
/// After each attempt, ask it what comes next; it applies the attempt cap, the backoff and
/// jitter, the elapsed cap and the budget exactly as [`Retry::call`] does, and reports the
/// same events.
///
/// ```
/// use meshwork_retry::{Decision, Next, Retry};
/// use std::time::Duration;
///
/// let retry = Retry::with_defaults("queue");
/// let mut attempts = retry.start();
/// // A message handler that can only nack with a delay: it classifies on its own.
/// let next = attempts.next_delay_with(Decision::RetryAfter(Duration::from_secs(3)));
/// assert_eq!(next, Next::Retry(Duration::from_secs(3)));
/// assert_eq!(attempts.next_delay_with(Decision::Done), Next::Done);
/// assert_eq!(attempts.attempts(), 2);
/// ```
#[derive(Debug)]
pub struct Attempts<'a> {
    retry: &'a Retry,
    state: AttemptState,
}

impl Attempts<'_> {
    /// Attempts recorded so far.
    pub fn attempts(&self) -> u32 {
        self.state.attempts()
    }

    /// Records an attempt's outcome, classified like [`Retry::call`] does (every error but
    /// the never-retry types is retried, a success never), and says what comes next.
    pub fn next_delay<T, E: StdError + 'static>(&mut self, outcome: &Result<T, E>) -> Next {
        let inner = self.retry.inner();
        self.state.next(inner, inner.on_error(outcome))
    }

    /// Records an attempt the caller has classified itself, and says what comes next.
    pub fn next_delay_with(&mut self, decision: Decision) -> Next {
        self.state.next(self.retry.inner(), decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BudgetConfig, Jitter};

    #[derive(Debug, thiserror::Error)]
    #[error("marker")]
    struct Marker;

    fn retry(max_attempts: u32) -> Retry {
        Retry::new(
            "t",
            RetryConfig::builder()
                .max_attempts(max_attempts)
                .jitter(Jitter::None)
                .never_retry::<Marker>()
                .build()
                .unwrap(),
        )
    }

    #[test]
    fn retry_is_send_sync_and_cheap_to_clone() {
        fn is<T: Send + Sync + Clone>() {}
        is::<Retry>();
        assert_eq!(std::mem::size_of::<Retry>(), std::mem::size_of::<usize>());
    }

    #[test]
    fn never_retry_through_any_sees_exact_and_boxed_types() {
        let r = retry(3);
        let inner = r.inner();
        assert!(inner.is_never_retry_any(&Marker));
        let boxed: Box<dyn StdError + Send + Sync> = Box::new(Marker);
        assert!(inner.is_never_retry_any(&boxed));
        let boxed: Box<dyn StdError + Send> = Box::new(Marker);
        assert!(inner.is_never_retry_any(&boxed));
        let boxed: Box<dyn StdError> = Box::new(Marker);
        assert!(inner.is_never_retry_any(&boxed));
        assert!(!inner.is_never_retry_any(&"marker"));
        assert!(!retry(3).inner().is_never_retry_any(&std::fmt::Error));
    }

    #[tokio::test(start_paused = true)]
    async fn step_api_caps_attempts_and_ends_on_success() {
        let r = retry(3);
        let mut a = r.start();
        let err: Result<(), std::fmt::Error> = Err(std::fmt::Error);
        assert_eq!(a.next_delay(&err), Next::Retry(Duration::from_millis(100)));
        assert_eq!(a.next_delay(&Ok::<(), std::fmt::Error>(())), Next::Done);
        assert_eq!(a.attempts(), 2);
        let mut b = r.start();
        assert_eq!(b.next_delay(&Err::<(), _>(Marker)), Next::Done);
        assert_eq!(
            b.next_delay_with(Decision::RetryAfter(Duration::from_secs(60))),
            Next::Retry(Duration::from_secs(10)),
            "capped at max_delay"
        );
        assert_eq!(
            b.next_delay_with(Decision::Retry),
            Next::GiveUp(GiveUpReason::MaxAttempts)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_slot_is_held_while_retrying_and_released_after() {
        let r = Retry::new(
            "t",
            RetryConfig::builder()
                .budget(BudgetConfig::default().with_max_concurrent_retries(1))
                .build()
                .unwrap(),
        );
        let mut a = r.start();
        assert!(matches!(a.next_delay_with(Decision::Retry), Next::Retry(_)));
        let mut b = r.start();
        assert_eq!(
            b.next_delay_with(Decision::Retry),
            Next::GiveUp(GiveUpReason::Concurrency)
        );
        assert_eq!(a.next_delay_with(Decision::Done), Next::Done);
        let mut c = r.start();
        assert!(matches!(c.next_delay_with(Decision::Retry), Next::Retry(_)));
        drop(c);
        assert_eq!(r.budget().unwrap().concurrent_retries(), 0);
    }
}
