use std::fmt;
use std::sync::Arc;

/// The balancer had no endpoint to send a request to. Downcast a `tower::BoxError` to find it.
///
/// ```
/// use meshwork_discovery::balance::{BalanceConfig, BalanceLayer, EndpointSet, NoEndpoints, Picked};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let set = EndpointSet::new("web", BalanceConfig::default());
/// let inner = service_fn(|p: Picked<()>| async move { Ok::<_, std::io::Error>(p.instance().id.clone()) });
/// let err = BalanceLayer::new(set).layer(inner).oneshot(()).await.unwrap_err();
/// let none = err.downcast_ref::<NoEndpoints>().unwrap();
/// assert_eq!(none.to_string(), "no endpoints available for service 'web'");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NoEndpoints {
    service: Arc<str>,
}

impl NoEndpoints {
    pub(crate) fn new(service: &str) -> Self {
        NoEndpoints {
            service: service.into(),
        }
    }

    /// The service that had none.
    pub fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for NoEndpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no endpoints available for service '{}'", self.service)
    }
}

impl std::error::Error for NoEndpoints {}
