use tower_layer::Layer;

use super::{BalanceService, EndpointSet, OkIsSuccess};

/// Spreads requests over an [`EndpointSet`]: the wrapped service receives each request as a
/// [`Picked`](super::Picked) naming the chosen instance, and the response time and outcome
/// feed the balancer.
///
/// ```
/// use meshwork_discovery::balance::{BalanceConfig, BalanceLayer, EndpointSet, Picked};
/// use meshwork_discovery::Instance;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let set = EndpointSet::new("web", BalanceConfig::default());
/// set.update([Instance::new("a", "web", "10.0.0.1", 80)]);
/// // The inner service would send `request` to `picked.instance().authority()`.
/// let client = service_fn(|picked: Picked<&'static str>| async move {
///     Ok::<_, std::io::Error>(format!("{} -> {}", picked.request(), picked.instance().authority()))
/// });
/// // Count 5xx answers as failures, so a fast 503 doesn't attract traffic.
/// let svc = BalanceLayer::new(set).classify_with(|r: &String| r.starts_with("5")).layer(client);
/// assert_eq!(svc.oneshot("GET /").await?, "GET / -> 10.0.0.1:80");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BalanceLayer<C = OkIsSuccess> {
    set: EndpointSet,
    classifier: C,
}

impl BalanceLayer {
    /// Balances over `set`; an `Ok` response is a success, an `Err` a failure.
    pub fn new(set: EndpointSet) -> Self {
        BalanceLayer {
            set,
            classifier: OkIsSuccess,
        }
    }
}

impl<C> BalanceLayer<C> {
    /// Counts `Ok` responses for which `is_failure` returns true as failures.
    pub fn classify_with<F>(self, is_failure: F) -> BalanceLayer<F> {
        BalanceLayer {
            set: self.set,
            classifier: is_failure,
        }
    }
}

impl<S, C: Clone> Layer<S> for BalanceLayer<C> {
    type Service = BalanceService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        BalanceService::new(inner, self.set.picker(), self.classifier.clone())
    }
}
