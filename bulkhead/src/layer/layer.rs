use tower_layer::Layer;

use super::BulkheadService;
use crate::Bulkhead;

/// Guards every service it wraps with one [`Bulkhead`] (shared by all the wrapped services
/// and their clones).
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadConfig, BulkheadLayer, Rejected};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let bulkhead = Bulkhead::new("users", BulkheadConfig::builder().max_concurrent_calls(1).build()?);
/// let svc = ServiceBuilder::new()
///     .layer(BulkheadLayer::new(bulkhead.clone()))
///     .service(service_fn(|id: u32| async move { Ok::<_, std::io::Error>(id * 2) }));
///
/// assert_eq!(svc.clone().oneshot(21).await?, 42);
///
/// let _held = bulkhead.try_acquire()?; // fill it
/// let err = svc.oneshot(1).await.unwrap_err();
/// let rejected = err.downcast_ref::<Rejected>().unwrap();
/// assert_eq!(rejected.to_string(), "bulkhead 'users' is full (1 of 1 in flight)");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// A layer guarding services with `bulkhead` (or a partition of it, from
    /// [`Bulkhead::partition`]).
    pub fn new(bulkhead: Bulkhead) -> Self {
        BulkheadLayer { bulkhead }
    }

    /// The bulkhead this layer applies.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
