//! Running routes: the consumer task of each route, the handling of one delivery, shutdown.

use std::collections::HashSet;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use meshwork_retry::{Backoff, Decision, Next, Retry};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower_service::Service;

use super::builder::Router;
use super::handler::{FailureKind, HandlerService, Outputs, error_chain};
use super::idempotency::{DynIdempotencyStore, IdempotencyKey};
use super::policy::{FailureAction, FailurePolicy};
use crate::{BusError, Delivery, DynPublisher, DynSubscriber, Message, MessageId, Subscription};

pub(crate) type Listener = Arc<dyn Fn(&RouterEvent<'_>) + Send + Sync>;

/// First wait before subscribing again after a subscription error.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(100);
/// Longest wait before subscribing again.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(30);

/// What a running router reports to the listeners given to
/// [`RouterBuilder::on_event`](crate::RouterBuilder::on_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum RouterEvent<'a> {
    /// Subscribing failed; the consumer tries again after `retry_in`.
    SubscribeFailed {
        /// The route's handler.
        handler: &'a str,
        /// Why.
        error: &'a BusError,
        /// When it tries again.
        retry_in: Duration,
    },
    /// The subscription yielded an error or ended; the consumer subscribes again after
    /// `retry_in`.
    SubscriptionInterrupted {
        /// The route's handler.
        handler: &'a str,
        /// The error, if the stream yielded one (`None`: the stream ended).
        error: Option<&'a BusError>,
        /// When it subscribes again.
        retry_in: Duration,
    },
    /// The bus was closed: this route's consumer stopped fetching.
    Stopped {
        /// The route's handler.
        handler: &'a str,
        /// The error that said so.
        error: &'a BusError,
    },
    /// Handling a message failed.
    Failed {
        /// The route's handler.
        handler: &'a str,
        /// The message.
        message_id: MessageId,
        /// Its delivery attempt (1 the first time).
        attempt: u32,
        /// How the policy classified the failure.
        kind: FailureKind,
        /// The error, as one line.
        error: &'a str,
        /// What the router did about it.
        outcome: FailureOutcome,
    },
    /// The idempotency store says this group handled the message already: it was
    /// acknowledged without running the handler.
    Duplicate {
        /// The route's handler.
        handler: &'a str,
        /// The message.
        message_id: MessageId,
    },
    /// Settling a delivery failed (it will be redelivered, or was settled elsewhere).
    SettleFailed {
        /// The route's handler.
        handler: &'a str,
        /// The message.
        message_id: MessageId,
        /// Why.
        error: &'a BusError,
    },
    /// Recording a handled message in the idempotency store failed (it was acknowledged
    /// anyway: its outputs were published).
    RecordFailed {
        /// The route's handler.
        handler: &'a str,
        /// The message.
        message_id: MessageId,
        /// Why.
        error: &'a BusError,
    },
}

/// What the router did with a failed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureOutcome {
    /// Tried again within the same delivery, after this delay.
    RetriedInProcess {
        /// The delay.
        after: Duration,
    },
    /// Handed back to the broker for a delivery after this delay.
    Redelivered {
        /// The delay.
        after: Duration,
    },
    /// Sent to the dead-letter topic.
    DeadLettered,
}

pub(crate) struct Shared {
    pub(crate) publisher: Arc<dyn DynPublisher>,
    pub(crate) subscriber: Arc<dyn DynSubscriber>,
    pub(crate) store: Option<Arc<dyn DynIdempotencyStore>>,
    pub(crate) listeners: Vec<Listener>,
}

impl Shared {
    fn emit(&self, event: RouterEvent<'_>) {
        for listener in &self.listeners {
            listener(&event);
        }
    }
}

pub(crate) struct RouteCtx {
    pub(crate) name: Arc<str>,
    pub(crate) topic: Arc<str>,
    pub(crate) group: Arc<str>,
    pub(crate) service: HandlerService,
    pub(crate) policy: FailurePolicy,
    pub(crate) retry: Option<Retry>,
    pub(crate) max_in_flight: usize,
    pub(crate) timeout: Duration,
    pub(crate) meters: super::meters::Meters,
}

/// What shutdown found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Deliveries that were in flight when fetching stopped and finished (and were settled)
    /// before the deadline.
    pub drained: usize,
    /// Deliveries still in flight at the deadline: dropped unsettled, so the backend
    /// redelivers them. Not counted as failures.
    pub abandoned: usize,
    /// Consumer tasks that ended abnormally (a bug: please report it).
    pub crashed: usize,
}

impl ShutdownReport {
    fn add(&mut self, other: ShutdownReport) {
        self.drained += other.drained;
        self.abandoned += other.abandoned;
        self.crashed += other.crashed;
    }
}

/// A started [`Router`]: its consumers run as background tasks until
/// [`shutdown`](RunningRouter::shutdown).
///
/// Dropping it stops the consumers at once: in-flight deliveries are released unsettled
/// and redelivered later.
#[must_use = "dropping the handle stops the router"]
pub struct RunningRouter {
    stop: watch::Sender<Option<Instant>>,
    consumers: Vec<(Arc<str>, JoinHandle<ShutdownReport>)>,
}

impl fmt::Debug for RunningRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunningRouter")
            .field(
                "handlers",
                &self.consumers.iter().map(|(n, _)| &**n).collect::<Vec<_>>(),
            )
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl RunningRouter {
    /// The names of the handlers running.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        self.consumers.iter().map(|(n, _)| &**n)
    }

    /// Whether every consumer has stopped (after a shutdown, or because the bus closed).
    pub fn is_finished(&self) -> bool {
        self.consumers.iter().all(|(_, h)| h.is_finished())
    }

    /// Stops fetching, lets the deliveries in flight finish and settle until `deadline` from
    /// now, then drops what is still running (those deliveries are redelivered later and
    /// are never counted as failed attempts) and returns once every consumer has stopped.
    ///
    /// ```
    /// use meshwork_event_bus::{BoxError, MemoryBus, Message, Outputs, Router};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
    /// let bus = MemoryBus::new();
    /// let running = Router::builder(bus.clone(), bus)
    ///     .handler("noop", "t", "g", |_m: Message| async { Ok::<_, BoxError>(Outputs::none()) })
    ///     .build()?
    ///     .start();
    /// let report = running.shutdown(Duration::from_secs(5)).await;
    /// assert_eq!((report.drained, report.abandoned), (0, 0));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(mut self, deadline: Duration) -> ShutdownReport {
        let at = Instant::now() + deadline;
        self.stop.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(at);
                true
            } else {
                false
            }
        });
        self.join().await
    }

    /// Waits until every consumer stops by itself (the bus was closed), without asking
    /// them to. Use [`shutdown`](RunningRouter::shutdown) to stop them.
    pub async fn wait(mut self) -> ShutdownReport {
        self.join().await
    }

    async fn join(&mut self) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        for (_, handle) in self.consumers.drain(..) {
            match handle.await {
                Ok(r) => report.add(r),
                Err(_) => report.crashed += 1,
            }
        }
        report
    }
}

impl Drop for RunningRouter {
    fn drop(&mut self) {
        let now = Instant::now();
        self.stop.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(now);
                true
            } else {
                false
            }
        });
    }
}

pub(crate) fn start(router: Router) -> RunningRouter {
    let (stop, _) = watch::channel(None);
    let consumers = router
        .routes
        .into_iter()
        .map(|route| {
            let route = Arc::new(route);
            let name = route.name.clone();
            let handle = tokio::spawn(consume(router.shared.clone(), route, stop.subscribe()));
            (name, handle)
        })
        .collect();
    RunningRouter { stop, consumers }
}

type Stop = watch::Receiver<Option<Instant>>;

/// Resolves once shutdown is asked for, with its deadline.
async fn stopping(stop: &mut Stop) -> Instant {
    match stop.wait_for(Option::is_some).await {
        Ok(v) => (*v).unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    }
}

/// Sleeps for `delay`; `true` if shutdown was asked for meanwhile.
async fn sleep_or_stop(delay: Duration, stop: &mut Stop) -> bool {
    tokio::select! {
        biased;
        _ = stopping(stop) => true,
        _ = tokio::time::sleep(delay) => false,
    }
}

fn resubscribe_delay(failures: u32) -> Duration {
    Backoff::exponential(RESUBSCRIBE_DELAY, 2.0)
        .delay(failures)
        .min(MAX_RESUBSCRIBE_DELAY)
}

async fn consume(shared: Arc<Shared>, route: Arc<RouteCtx>, mut stop: Stop) -> ShutdownReport {
    let permits = Arc::new(Semaphore::new(route.max_in_flight));
    let claims = Arc::new(Claims::default());
    let mut tasks = JoinSet::new();
    let mut subscription: Option<Subscription> = None;
    let mut failures: u32 = 0;
    loop {
        while tasks.try_join_next().is_some() {}
        let sub = match subscription.as_mut() {
            Some(sub) => sub,
            None => {
                let result = tokio::select! {
                    biased;
                    _ = stopping(&mut stop) => break,
                    r = shared.subscriber.subscribe_dyn(&route.topic, &route.group) => r,
                };
                match result {
                    Ok(sub) => subscription.insert(sub),
                    Err(error @ BusError::Closed(_)) => {
                        shared.emit(RouterEvent::Stopped {
                            handler: &route.name,
                            error: &error,
                        });
                        break;
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        let retry_in = resubscribe_delay(failures);
                        shared.emit(RouterEvent::SubscribeFailed {
                            handler: &route.name,
                            error: &error,
                            retry_in,
                        });
                        if sleep_or_stop(retry_in, &mut stop).await {
                            break;
                        }
                        continue;
                    }
                }
            }
        };
        // A permit first, so no delivery is taken that can't be worked on at once.
        let permit = tokio::select! {
            biased;
            _ = stopping(&mut stop) => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let next = tokio::select! {
            biased;
            _ = stopping(&mut stop) => break,
            next = sub.recv() => next,
        };
        match next {
            Some(Ok(delivery)) => {
                failures = 0;
                #[cfg(feature = "tracing")]
                let span = tracing::info_span!(
                    "meshwork.handle",
                    handler = %route.name,
                    topic = %route.topic,
                    group = %route.group,
                    message_id = %delivery.message().id(),
                    attempt = delivery.info().attempt,
                );
                let work = handle(
                    shared.clone(),
                    route.clone(),
                    claims.clone(),
                    delivery,
                    permit,
                    stop.clone(),
                );
                #[cfg(feature = "tracing")]
                let work = tracing::Instrument::instrument(work, span);
                tasks.spawn(work);
            }
            interrupted => {
                drop(permit);
                let error = match interrupted {
                    Some(Err(e)) => Some(e),
                    _ => None,
                };
                subscription = None;
                failures = failures.saturating_add(1);
                let retry_in = resubscribe_delay(failures);
                shared.emit(RouterEvent::SubscriptionInterrupted {
                    handler: &route.name,
                    error: error.as_ref(),
                    retry_in,
                });
                if sleep_or_stop(retry_in, &mut stop).await {
                    break;
                }
            }
        }
    }
    // Stop fetching; drain what is in flight until the deadline.
    drop(subscription);
    let in_flight = tasks.len();
    let mut abandoned = 0;
    loop {
        let deadline = *stop.borrow();
        let joined = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(joined) => joined,
                Err(_) => {
                    abandoned = tasks.len();
                    // Dropping the handling futures drops their deliveries unsettled: the
                    // backend redelivers them, and no failure is recorded.
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            },
            // The bus closed by itself: drain until done or a shutdown sets a deadline.
            None => tokio::select! {
                joined = tasks.join_next() => joined,
                _ = stopping(&mut stop) => continue,
            },
        };
        if joined.is_none() {
            break;
        }
    }
    ShutdownReport {
        drained: in_flight.saturating_sub(abandoned),
        abandoned,
        crashed: 0,
    }
}

/// Message ids being handled by one route right now, so that two deliveries of one id (a
/// forced duplicate) are never handled at the same time: the second waits, then finds the
/// first recorded in the idempotency store.
#[derive(Default)]
struct Claims {
    ids: Mutex<HashSet<MessageId>>,
    released: Notify,
}

struct Claim {
    claims: Arc<Claims>,
    id: MessageId,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<MessageId>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn claim(self: &Arc<Self>, id: MessageId) -> Claim {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.lock().insert(id) {
                return Claim {
                    claims: self.clone(),
                    id,
                };
            }
            released.await;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.claims.lock().remove(&self.id);
        self.claims.released.notify_waiters();
    }
}

struct Failure {
    kind: FailureKind,
    reason: String,
}

impl FailurePolicy {
    fn retries(&self, kind: FailureKind) -> bool {
        match kind {
            FailureKind::Permanent => false,
            FailureKind::Decode => self.on_decode_error == FailureAction::Retry,
            FailureKind::Panic => self.on_panic == FailureAction::Retry,
            _ => true,
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(a non-string panic payload)"
    }
}

async fn call_once(route: &RouteCtx, message: Message) -> Result<Outputs, Failure> {
    let mut service = route.service.clone();
    // The call itself sits inside the async block, so a panic while building the future is
    // caught too.
    let call = AssertUnwindSafe(async move { service.call(message).await }).catch_unwind();
    match tokio::time::timeout(route.timeout, call).await {
        Ok(Ok(Ok(outputs))) => Ok(outputs),
        Ok(Ok(Err(error))) => Err(Failure {
            kind: FailureKind::of(&*error),
            reason: error_chain(&*error),
        }),
        Ok(Err(panic)) => Err(Failure {
            kind: FailureKind::Panic,
            reason: format!("handler panicked: {}", panic_message(&*panic)),
        }),
        Err(_) => Err(Failure {
            kind: FailureKind::Transient,
            reason: format!("handler timed out after {:?}", route.timeout),
        }),
    }
}

/// Outputs inherit the input's correlation id (its id if it had none) and trace context, and
/// name the input as their cause, unless the handler set them.
fn stamp(outputs: &mut Outputs, input: &Message) {
    if outputs.is_empty() {
        return;
    }
    let input_id = input.id().to_string();
    let correlation = input.headers().correlation_id().unwrap_or(&input_id);
    let traceparent = input.headers().traceparent();
    for message in outputs.messages_mut() {
        let headers = message.headers_mut();
        if headers.correlation_id().is_none() {
            headers.set_correlation_id(correlation);
        }
        if headers.causation_id().is_none() {
            headers.insert(crate::header::CAUSATION_ID, input_id.as_str());
        }
        if let Some(tp) = traceparent
            && headers.traceparent().is_none()
        {
            headers.insert(crate::header::TRACEPARENT, tp);
        }
    }
}

/// Publishes the outputs in order, one batch per run of messages to the same topic.
async fn publish(publisher: &dyn DynPublisher, outputs: Outputs) -> Result<(), BusError> {
    let mut items = outputs.into_items().into_iter().peekable();
    while let Some((topic, first)) = items.next() {
        let mut batch = vec![first];
        while let Some((_, message)) = items.next_if(|(t, _)| *t == topic) {
            batch.push(message);
        }
        publisher.publish_dyn(&topic, batch).await?;
    }
    Ok(())
}

async fn handle(
    shared: Arc<Shared>,
    route: Arc<RouteCtx>,
    claims: Arc<Claims>,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
    mut stop: Stop,
) {
    let id = delivery.message().id();
    let started = route.meters.start();
    let mut key = None;
    let mut _claim = None;
    if let Some(store) = &shared.store {
        _claim = Some(claims.claim(id).await);
        let k = IdempotencyKey::new(route.group.clone(), id);
        match store.is_handled_dyn(&k).await {
            Ok(true) => {
                route.meters.duplicate();
                shared.emit(RouterEvent::Duplicate {
                    handler: &route.name,
                    message_id: id,
                });
                settle(&shared, &route, id, delivery.ack().await);
                return;
            }
            Ok(false) => key = Some(k),
            Err(error) => {
                let failure = Failure {
                    kind: FailureKind::Transient,
                    reason: format!("idempotency store failed: {}", error_chain(&error)),
                };
                fail(&shared, &route, delivery, failure).await;
                return;
            }
        }
    }

    let mut attempts = route.retry.as_ref().map(Retry::start);
    let mut outputs = loop {
        match call_once(&route, delivery.message().clone()).await {
            Ok(outputs) => break outputs,
            Err(failure) => {
                if !route.policy.retries(failure.kind) {
                    fail(&shared, &route, delivery, failure).await;
                    return;
                }
                match attempts
                    .as_mut()
                    .map(|a| a.next_delay_with(Decision::Retry))
                {
                    Some(Next::Retry(after)) => {
                        let outcome = FailureOutcome::RetriedInProcess { after };
                        route.meters.failed(failure.kind, &outcome);
                        shared.emit(RouterEvent::Failed {
                            handler: &route.name,
                            message_id: id,
                            attempt: delivery.info().attempt,
                            kind: failure.kind,
                            error: &failure.reason,
                            outcome,
                        });
                        if sleep_or_stop(after, &mut stop).await {
                            // Shutting down: give the delivery back (redelivered, not a
                            // failed attempt) rather than keep retrying.
                            return;
                        }
                    }
                    _ => {
                        fail(&shared, &route, delivery, failure).await;
                        return;
                    }
                }
            }
        }
    };
    drop(attempts);

    stamp(&mut outputs, delivery.message());
    if let Err(error) = publish(&*shared.publisher, outputs).await {
        let failure = Failure {
            kind: FailureKind::Transient,
            reason: format!("publishing the outputs failed: {}", error_chain(&error)),
        };
        fail(&shared, &route, delivery, failure).await;
        return;
    }
    if let (Some(store), Some(key)) = (&shared.store, &key)
        && let Err(error) = store.record_dyn(key).await
    {
        shared.emit(RouterEvent::RecordFailed {
            handler: &route.name,
            message_id: id,
            error: &error,
        });
    }
    let acked = delivery.ack().await;
    if acked.is_ok() {
        route.meters.handled(started);
    }
    settle(&shared, &route, id, acked);
}

/// The end of the failure policy: redeliver after a delay while deliveries are left, else
/// dead-letter.
async fn fail(shared: &Shared, route: &RouteCtx, delivery: Delivery, failure: Failure) {
    let id = delivery.message().id();
    let attempt = delivery.info().attempt;
    let policy = &route.policy;
    let dead = !policy.retries(failure.kind) || attempt >= policy.max_deliveries;
    let outcome = if dead {
        FailureOutcome::DeadLettered
    } else {
        FailureOutcome::Redelivered {
            after: policy.redelivery_delay(attempt),
        }
    };
    #[cfg(feature = "tracing")]
    tracing::warn!(
        handler = %route.name,
        message_id = %id,
        attempt,
        kind = %failure.kind,
        error = %failure.reason,
        ?outcome,
        "message handling failed"
    );
    route.meters.failed(failure.kind, &outcome);
    shared.emit(RouterEvent::Failed {
        handler: &route.name,
        message_id: id,
        attempt,
        kind: failure.kind,
        error: &failure.reason,
        outcome,
    });
    let settled = match outcome {
        FailureOutcome::Redelivered { after } => delivery.retry(Some(after)).await,
        _ => {
            delivery
                .dead_letter_from(&failure.reason, Some(&route.name))
                .await
        }
    };
    settle(shared, route, id, settled);
}

fn settle(shared: &Shared, route: &RouteCtx, id: MessageId, result: Result<(), BusError>) {
    if let Err(error) = result {
        shared.emit(RouterEvent::SettleFailed {
            handler: &route.name,
            message_id: id,
            error: &error,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_inherit_correlation_and_name_their_cause() {
        let input = Message::new("in")
            .with_header(crate::header::CORRELATION_ID, "req-1")
            .with_header(crate::header::TRACEPARENT, "00-abc-def-01");
        let mut outputs = Outputs::none().with("a", Message::new("plain")).with(
            "b",
            Message::new("own").with_header(crate::header::CORRELATION_ID, "mine"),
        );
        stamp(&mut outputs, &input);
        let got: Vec<_> = outputs.iter().map(|(_, m)| m.headers().clone()).collect();
        assert_eq!(got[0].correlation_id(), Some("req-1"));
        assert_eq!(got[0].causation_id(), Some(input.id().to_string().as_str()));
        assert_eq!(got[0].traceparent(), Some("00-abc-def-01"));
        assert_eq!(got[1].correlation_id(), Some("mine"), "kept");
    }

    #[test]
    fn resubscribe_delay_grows_and_is_capped() {
        assert_eq!(resubscribe_delay(1), RESUBSCRIBE_DELAY);
        assert!(resubscribe_delay(2) > resubscribe_delay(1));
        assert_eq!(resubscribe_delay(100), MAX_RESUBSCRIBE_DELAY);
    }
}
