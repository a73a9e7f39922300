//! Events a bulkhead reports, and the listeners that receive them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::RejectReason;

/// Something worth knowing that happened to a bulkhead.
///
/// Events are delivered synchronously, on the thread that caused them, to listeners added
/// with [`Bulkhead::on_event`](crate::Bulkhead::on_event); when nobody listens, no event is
/// built (one relaxed atomic load).
///
/// ```
/// use meshwork_bulkhead::{Bulkhead, BulkheadConfig, Event, RejectReason};
/// use std::sync::{Arc, Mutex};
///
/// let bulkhead = Bulkhead::new("mail", BulkheadConfig::builder().max_concurrent_calls(1).build()?);
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = seen.clone();
/// bulkhead.on_event(move |event| {
///     if let Event::Rejected { reason, .. } = event {
///         sink.lock().unwrap().push(*reason);
///     }
/// });
/// let _held = bulkhead.try_acquire()?;
/// assert!(bulkhead.try_acquire().is_err());
/// assert_eq!(*seen.lock().unwrap(), vec![RejectReason::Full]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A call was refused.
    Rejected {
        /// The bulkhead's name.
        name: Arc<str>,
        /// The partition the call asked for, if any.
        partition: Option<Arc<str>>,
        /// Why.
        reason: RejectReason,
    },
    /// An adaptive limit moved (also reported when a probe pins it and when it is set by
    /// hand).
    LimitChanged {
        /// The bulkhead's name.
        name: Arc<str>,
        /// The previous limit.
        from: usize,
        /// The new limit.
        to: usize,
    },
    /// A minimum-RTT probe of a [`Gradient`](crate::Gradient) limit finished.
    MinRttMeasured {
        /// The bulkhead's name.
        name: Arc<str>,
        /// The measured minimum RTT.
        min_rtt: Duration,
    },
    /// A keyed bulkhead dropped the bulkhead of an idle key.
    KeyEvicted {
        /// The evicted bulkhead's name (`"{registry}/{key}"`).
        name: Arc<str>,
    },
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The listeners of one bulkhead (or of every bulkhead of a keyed registry). Emitting checks
/// one relaxed flag when nobody listens.
pub(crate) struct Listeners {
    any: AtomicBool,
    list: RwLock<Arc<[Listener]>>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            any: AtomicBool::new(false),
            list: RwLock::new(Arc::from(Vec::new())),
        }
    }
}

impl Listeners {
    pub(crate) fn add(&self, listener: Listener) {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let mut grown = list.to_vec();
        grown.push(listener);
        *list = grown.into();
        self.any.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Calls every listener with `event`.
    pub(crate) fn deliver(&self, event: &Event) {
        // Take the shared list out of the lock, so a listener may add listeners.
        let list = self.list.read().unwrap_or_else(|p| p.into_inner()).clone();
        for listener in list.iter() {
            listener(event);
        }
    }
}

impl fmt::Debug for Listeners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.list.read().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("Listeners").field("count", &n).finish()
    }
}
