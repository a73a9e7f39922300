use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tower::discover::Change as TowerChange;

use crate::{Change, Error, Instance, WatchStream};

/// Adapts a [`WatchStream`] to `tower::discover::Discover`, so `tower::balance` can balance
/// over what discovery sees: each instance becomes a service made by `make`, keyed by id.
///
/// Watch errors are transient (the watch backs off and goes on), and `tower::balance` treats
/// a discovery error as fatal, so errors are skipped here: the balancer keeps the last good
/// set. The stream ends when the watch does.
///
/// ```
/// use meshwork_discovery::balance::ServiceDiscover;
/// use meshwork_discovery::{Discover, Instance, StaticDiscovery};
/// use std::time::Duration;
/// use tower::balance::p2c::Balance;
/// use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
/// use tower::{ServiceExt, service_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let discovery = StaticDiscovery::new([Instance::new("a", "web", "10.0.0.1", 80)]);
/// let services = ServiceDiscover::new(discovery.watch("web"), |i: &Instance| {
///     let id = i.id.clone();
///     service_fn(move |_req: ()| { let id = id.clone(); async move { Ok::<_, tower::BoxError>(id) } })
/// });
/// let loaded = PeakEwmaDiscover::new(
///     services,
///     Duration::from_millis(30),
///     Duration::from_secs(10),
///     CompleteOnResponse::default(),
/// );
/// let balance = Balance::new(loaded);
/// assert_eq!(balance.oneshot(()).await?, "a");
/// # Ok(())
/// # }
/// ```
pub struct ServiceDiscover<M> {
    watch: WatchStream,
    make: M,
    pending: VecDeque<Change>,
    last_error: Option<Error>,
}

impl<M> fmt::Debug for ServiceDiscover<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDiscover")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<M> ServiceDiscover<M> {
    /// Makes a service per instance with `make`.
    pub fn new(watch: WatchStream, make: M) -> Self {
        ServiceDiscover {
            watch,
            make,
            pending: VecDeque::new(),
            last_error: None,
        }
    }

    /// The last watch error skipped, if any (cleared by the next update).
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }
}

impl<M, S> Stream for ServiceDiscover<M>
where
    M: FnMut(&Instance) -> S + Unpin,
{
    type Item = Result<TowerChange<String, S>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(match change {
                    Change::Upsert(instance) => {
                        TowerChange::Insert(instance.id.clone(), (this.make)(&instance))
                    }
                    Change::Remove(id) => TowerChange::Remove(id),
                })));
            }
            match Pin::new(&mut this.watch).poll_next(cx) {
                Poll::Ready(Some(Ok(update))) => {
                    this.last_error = None;
                    this.pending.extend(update.changes);
                }
                Poll::Ready(Some(Err(e))) => this.last_error = Some(e),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
