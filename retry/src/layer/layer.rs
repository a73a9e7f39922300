use tower_layer::Layer;

use super::{Cloned, RetryService};
use crate::{OnError, Retry};

/// Retries the services it wraps with a [`Retry`] policy (all of them share its budget).
///
/// ```
/// use meshwork_retry::{Retry, RetryConfig, RetryLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let layer = RetryLayer::new(Retry::new("echo", RetryConfig::default()));
/// let service = ServiceBuilder::new()
///     .layer(layer)
///     .service(service_fn(|req: String| async move { Ok::<_, std::io::Error>(req) }));
/// assert_eq!(service.oneshot("hi".to_string()).await.unwrap(), "hi");
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<C = OnError, K = Cloned> {
    retry: Retry,
    classifier: C,
    cloner: K,
}

impl RetryLayer {
    /// A layer that retries every error (but the never-retry types) and clones requests with
    /// `Clone`.
    pub fn new(retry: Retry) -> Self {
        RetryLayer {
            retry,
            classifier: OnError,
            cloner: Cloned,
        }
    }
}

#[cfg(feature = "http")]
impl RetryLayer<crate::http::HttpClassifier, Cloned> {
    /// A layer for HTTP clients: retries connection errors and 429/503 responses, honouring
    /// their `Retry-After` (capped at `max_delay`); requests are cloned with `Clone` (use
    /// [`clone_requests_with`](RetryLayer::clone_requests_with) and
    /// [`ReplayRequest`](crate::http::ReplayRequest) for bodies that can't be cloned).
    pub fn for_http(retry: Retry) -> Self {
        RetryLayer {
            retry,
            classifier: crate::http::HttpClassifier::new(),
            cloner: Cloned,
        }
    }
}

impl<C, K> RetryLayer<C, K> {
    /// Decide with this classifier, which sees `&Result<Response, BoxError>`.
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayer<C2, K> {
        RetryLayer {
            retry: self.retry,
            classifier,
            cloner: self.cloner,
        }
    }

    /// Get requests again for retries with this [`CloneRequest`](crate::CloneRequest).
    pub fn clone_requests_with<K2>(self, cloner: K2) -> RetryLayer<C, K2> {
        RetryLayer {
            retry: self.retry,
            classifier: self.classifier,
            cloner,
        }
    }

    /// The policy.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }
}

impl<S, C: Clone, K: Clone> Layer<S> for RetryLayer<C, K> {
    type Service = RetryService<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(
            inner,
            self.retry.clone(),
            self.classifier.clone(),
            self.cloner.clone(),
        )
    }
}
