use tower_layer::Layer;

use super::CircuitBreakerService;
use crate::{CircuitBreaker, DefaultClassifier};

/// Wraps services in a [`CircuitBreakerService`] sharing one [`CircuitBreaker`].
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, CircuitBreakerLayer, Outcome, Rejected};
/// use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let breaker = CircuitBreaker::with_defaults("users-api");
/// // Count 5xx statuses as failures, although they are `Ok` responses.
/// let layer = CircuitBreakerLayer::new(breaker.clone()).with_classifier(
///     |r: &Result<u16, std::io::Error>| match r {
///         Ok(status) if *status >= 500 => Outcome::Failure,
///         _ => Outcome::Success,
///     },
/// );
/// let mut svc = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|_req: &'static str| async { Ok::<u16, std::io::Error>(200) }));
///
/// let status = svc.ready().await.unwrap().call("GET /users/7").await.unwrap();
/// assert_eq!(status, 200);
///
/// breaker.force_open();
/// let err = svc.ready().await.unwrap().call("GET /users/7").await.unwrap_err();
/// assert!(err.downcast_ref::<Rejected>().is_some());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A layer that counts `Ok` as success and `Err` as failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        CircuitBreakerLayer {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Uses `classifier` (a [`Classify`](crate::Classify) over the inner service's
    /// `Result<Response, Error>`) to decide how each response counts.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classifier,
        }
    }

    /// The breaker this layer shares with its services.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
