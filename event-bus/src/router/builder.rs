//! Building a router: routes, defaults, layers, validation.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use meshwork_retry::Retry;
use tower_layer::Layer;
use tower_service::Service;

use super::handler::{HandlerService, Outputs};
use super::idempotency::{DynIdempotencyStore, IdempotencyStore};
use super::policy::FailurePolicy;
use super::run::{Listener, RouteCtx, RouterEvent, RunningRouter, Shared};
use crate::error::validate_name;
use crate::{BoxError, BusError, DynPublisher, DynSubscriber, Message, Publisher, Subscriber};

/// Default number of deliveries one handler works on at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Largest `max_in_flight` accepted.
pub const MAX_MAX_IN_FLIGHT: usize = 1 << 20;
/// Default time one handler call may take before it fails (as a transient failure).
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

type LayerFn = Arc<dyn Fn(HandlerService) -> HandlerService + Send + Sync>;

fn erase_layer<L>(layer: L) -> LayerFn
where
    L: Layer<HandlerService> + Send + Sync + 'static,
    L::Service: Service<Message, Response = Outputs> + Clone + Send + 'static,
    <L::Service as Service<Message>>::Error: Into<BoxError>,
    <L::Service as Service<Message>>::Future: Send + 'static,
{
    Arc::new(move |inner| HandlerService::new(layer.layer(inner)))
}

/// One handler bound to a (topic, group), with its own settings; unset settings come from
/// the [`RouterBuilder`].
///
/// ```
/// use meshwork_event_bus::{BoxError, FailurePolicy, Message, Outputs, Route};
/// use std::time::Duration;
///
/// let route = Route::new("index-message", "chat.messages", "search", |msg: Message| async move {
///     let _ = msg;
///     Ok::<_, BoxError>(Outputs::none())
/// })
/// .max_in_flight(16)
/// .timeout(Duration::from_secs(5))
/// .policy(FailurePolicy::builder().max_deliveries(10).build()?);
/// # let _ = route;
/// # Ok::<(), meshwork_event_bus::BusError>(())
/// ```
#[must_use]
pub struct Route {
    name: String,
    topic: String,
    group: String,
    service: HandlerService,
    policy: Option<FailurePolicy>,
    max_in_flight: Option<usize>,
    timeout: Option<Duration>,
}

impl Route {
    /// A route whose handler is an async function of the message, answering with the
    /// [`Outputs`] to publish.
    pub fn new<F, Fut, E>(
        name: impl Into<String>,
        topic: impl Into<String>,
        group: impl Into<String>,
        handler: F,
    ) -> Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outputs, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        Route::service(name, topic, group, HandlerService::from_fn(handler))
    }

    /// A route whose handler is a tower service (a `ServiceBuilder` stack, say), cloned for
    /// each message.
    pub fn service<S>(
        name: impl Into<String>,
        topic: impl Into<String>,
        group: impl Into<String>,
        service: S,
    ) -> Self
    where
        S: Service<Message, Response = Outputs> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Route {
            name: name.into(),
            topic: topic.into(),
            group: group.into(),
            service: HandlerService::new(service),
            policy: None,
            max_in_flight: None,
            timeout: None,
        }
    }

    /// Wraps this route's handler in `layer` (a `CircuitBreakerLayer`, a tower timeout...).
    /// Layers added later wrap the earlier ones.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Message, Response = Outputs> + Clone + Send + 'static,
        <L::Service as Service<Message>>::Error: Into<BoxError>,
        <L::Service as Service<Message>>::Future: Send + 'static,
    {
        self.service = erase_layer(layer)(self.service);
        self
    }

    /// This route's failure policy; default: the router's.
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Deliveries this handler works on at once; in `[1, 2^20]`, default: the router's.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = Some(n);
        self
    }

    /// Longest handler call; greater than zero, default: the router's.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("policy", &self.policy)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Builds a [`Router`]: routes, defaults for their settings, router-wide layers, an
/// idempotency store and event listeners. [`build`](RouterBuilder::build) validates it all.
#[must_use]
pub struct RouterBuilder {
    publisher: Arc<dyn DynPublisher>,
    subscriber: Arc<dyn DynSubscriber>,
    routes: Vec<Route>,
    layers: Vec<LayerFn>,
    policy: FailurePolicy,
    max_in_flight: usize,
    timeout: Duration,
    store: Option<Arc<dyn DynIdempotencyStore>>,
    listeners: Vec<Listener>,
}

impl fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("routes", &self.routes)
            .field("layers", &self.layers.len())
            .field("policy", &self.policy)
            .field("max_in_flight", &self.max_in_flight)
            .field("timeout", &self.timeout)
            .field("idempotency", &self.store.is_some())
            .finish()
    }
}

impl RouterBuilder {
    /// Adds a route.
    pub fn route(mut self, route: Route) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a route whose handler is an async function, with the router's settings; see
    /// [`Route::new`].
    pub fn handler<F, Fut, E>(
        self,
        name: impl Into<String>,
        topic: impl Into<String>,
        group: impl Into<String>,
        handler: F,
    ) -> Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outputs, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.route(Route::new(name, topic, group, handler))
    }

    /// Wraps every route's handler in `layer`, outside the route's own layers. Layers added
    /// later sit inside those added earlier (as with tower's `ServiceBuilder`).
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + Send + Sync + 'static,
        L::Service: Service<Message, Response = Outputs> + Clone + Send + 'static,
        <L::Service as Service<Message>>::Error: Into<BoxError>,
        <L::Service as Service<Message>>::Future: Send + 'static,
    {
        self.layers.push(erase_layer(layer));
        self
    }

    /// The failure policy of routes that don't set their own; default
    /// [`FailurePolicy::default`].
    pub fn policy(mut self, policy: FailurePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Deliveries each handler works on at once, for routes that don't set it; in
    /// `[1, 2^20]`, default [`DEFAULT_MAX_IN_FLIGHT`] (64).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Longest handler call, for routes that don't set it; greater than zero, default
    /// [`DEFAULT_HANDLER_TIMEOUT`] (30 s). A call that takes longer fails as transient.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Handles each (group, message id) at most once while `store` remembers it; default:
    /// no store (at-least-once handling).
    pub fn idempotency(mut self, store: impl IdempotencyStore + 'static) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Calls `listener` with every [`RouterEvent`] (failures, dead letters, duplicates,
    /// subscription errors). Listeners run on the consumer's task: keep them quick.
    pub fn on_event(mut self, listener: impl Fn(&RouterEvent<'_>) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Validates everything and returns the router, not yet started.
    pub fn build(self) -> Result<Router, BusError> {
        if self.routes.is_empty() {
            return Err(BusError::invalid(
                "routes",
                "[]",
                "must hold at least one route",
            ));
        }
        self.policy.validate()?;
        check_in_flight(self.max_in_flight)?;
        check_timeout(self.timeout)?;
        let mut names = HashSet::new();
        let mut bindings = HashSet::new();
        let mut routes = Vec::with_capacity(self.routes.len());
        for route in self.routes {
            validate_name("handler name", &route.name)?;
            validate_name("topic", &route.topic)?;
            validate_name("group", &route.group)?;
            if !names.insert(route.name.clone()) {
                return Err(BusError::invalid(
                    "handler name",
                    route.name,
                    "must be unique within a router",
                ));
            }
            if !bindings.insert((route.topic.clone(), route.group.clone())) {
                return Err(BusError::invalid(
                    "route",
                    format!("{} -> {}/{}", route.name, route.topic, route.group),
                    "another handler of this router is bound to the same topic and group; give it another group",
                ));
            }
            let policy = route.policy.unwrap_or_else(|| self.policy.clone());
            policy.validate()?;
            let max_in_flight = route.max_in_flight.unwrap_or(self.max_in_flight);
            check_in_flight(max_in_flight)?;
            let timeout = route.timeout.unwrap_or(self.timeout);
            check_timeout(timeout)?;
            let service = self
                .layers
                .iter()
                .rev()
                .fold(route.service, |svc, layer| layer(svc));
            let name: Arc<str> = route.name.into();
            let retry = policy
                .in_process
                .clone()
                .map(|config| Retry::new(name.clone(), config));
            let meters = super::meters::Meters::new(&name);
            routes.push(RouteCtx {
                name,
                topic: route.topic.into(),
                group: route.group.into(),
                service,
                policy,
                retry,
                max_in_flight,
                timeout,
                meters,
            });
        }
        Ok(Router {
            shared: Arc::new(Shared {
                publisher: self.publisher,
                subscriber: self.subscriber,
                store: self.store,
                listeners: self.listeners,
            }),
            routes,
        })
    }
}

fn check_in_flight(n: usize) -> Result<(), BusError> {
    if !(1..=MAX_MAX_IN_FLIGHT).contains(&n) {
        return Err(BusError::invalid(
            "max_in_flight",
            n.to_string(),
            "must be in [1, 1048576]",
        ));
    }
    Ok(())
}

fn check_timeout(timeout: Duration) -> Result<(), BusError> {
    if timeout.is_zero() {
        return Err(BusError::invalid(
            "timeout",
            "0s",
            "must be greater than zero",
        ));
    }
    Ok(())
}

/// Named handlers bound to (topic, group), each consuming in a background task.
///
/// For each delivery the router: skips it (acknowledging it) if the idempotency store says
/// its group handled it already; runs the handler under a timeout, catching panics, with
/// in-process retries; stamps the outputs with the input's correlation id (causation id = the
/// input's id); publishes them and waits for the backend's confirmation; records the message
/// in the idempotency store; and only then acknowledges the input. A failure goes through
/// the route's [`FailurePolicy`].
///
/// ```
/// use meshwork_event_bus::{BoxError, MemoryBus, Message, Outputs, Publisher, Router};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), meshwork_event_bus::BusError> {
/// async fn shout(msg: Message) -> Result<Outputs, BoxError> {
///     let text = std::str::from_utf8(msg.payload())?.to_uppercase();
///     Ok(Outputs::one("chat.shouted", msg.caused(text)))
/// }
///
/// let bus = MemoryBus::new();
/// let router = Router::builder(bus.clone(), bus.clone())
///     .handler("shout", "chat.messages", "shouter", shout)
///     .build()?;
/// let running = router.start(); // returns at once; consumers run in the background
///
/// bus.publish("chat.messages", vec![Message::new("hello")]).await?;
/// # use meshwork_event_bus::Subscriber;
/// # let mut out = bus.subscribe("chat.shouted", "check").await?;
/// # let d = out.recv().await.unwrap()?;
/// # assert_eq!(d.message().payload().as_ref(), b"HELLO");
/// # d.ack().await?;
///
/// let report = running.shutdown(Duration::from_secs(10)).await;
/// assert_eq!(report.abandoned, 0);
/// # Ok(())
/// # }
/// ```
pub struct Router {
    pub(crate) shared: Arc<Shared>,
    pub(crate) routes: Vec<RouteCtx>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|r| (&*r.name, &*r.topic, &*r.group))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Router {
    /// A builder publishing outputs through `publisher` and consuming through `subscriber`
    /// (often two clones of one bus).
    pub fn builder(
        publisher: impl Publisher + 'static,
        subscriber: impl Subscriber + 'static,
    ) -> RouterBuilder {
        Router::builder_dyn(Arc::new(publisher), Arc::new(subscriber))
    }

    /// Like [`builder`](Router::builder), for backends chosen at run time.
    pub fn builder_dyn(
        publisher: Arc<dyn DynPublisher>,
        subscriber: Arc<dyn DynSubscriber>,
    ) -> RouterBuilder {
        RouterBuilder {
            publisher,
            subscriber,
            routes: Vec::new(),
            layers: Vec::new(),
            policy: FailurePolicy::default(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            timeout: DEFAULT_HANDLER_TIMEOUT,
            store: None,
            listeners: Vec::new(),
        }
    }

    /// Starts one background consumer task per route and returns at once: starting never
    /// waits for a broker (a subscription that fails is retried with backoff in the
    /// background, reported through [`RouterEvent::SubscribeFailed`]).
    ///
    /// Keep the returned handle: dropping it stops the consumers without waiting (in-flight
    /// deliveries are released and redelivered later). Stop them with
    /// [`RunningRouter::shutdown`].
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    #[must_use = "dropping the handle stops the router"]
    pub fn start(self) -> RunningRouter {
        super::run::start(self)
    }
}
