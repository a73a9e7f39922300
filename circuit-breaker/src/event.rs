//! Events a breaker reports, and the listeners that receive them.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use crate::State;

/// Something worth knowing that happened to a breaker.
///
/// Events are delivered synchronously to listeners added with
/// [`CircuitBreaker::on_event`](crate::CircuitBreaker::on_event); when nobody listens, no event
/// is built.
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, Event, State};
/// use std::sync::{Arc, Mutex};
///
/// let breaker = CircuitBreaker::with_defaults("mail");
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = seen.clone();
/// breaker.on_event(move |event| {
///     if let Event::StateTransition { to, .. } = event {
///         sink.lock().unwrap().push(*to);
///     }
/// });
/// breaker.force_open();
/// assert_eq!(*seen.lock().unwrap(), vec![State::ForcedOpen]);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The breaker moved from one state to another.
    StateTransition {
        /// The breaker's name.
        name: Arc<str>,
        /// The state it left.
        from: State,
        /// The state it entered.
        to: State,
    },
    /// A call was refused.
    Rejected {
        /// The breaker's name.
        name: Arc<str>,
        /// The state that refused it.
        state: State,
    },
    /// The failure rate reached its threshold (percent, measured over the window).
    FailureRateExceeded {
        /// The breaker's name.
        name: Arc<str>,
        /// The measured failure rate, in percent.
        rate: f64,
    },
    /// The slow-call rate reached its threshold (percent, measured over the window).
    SlowCallRateExceeded {
        /// The breaker's name.
        name: Arc<str>,
        /// The measured slow-call rate, in percent.
        rate: f64,
    },
    /// The window holds as many failures as the absolute threshold allows, or a
    /// consecutive-failures window reached its threshold.
    FailureCountExceeded {
        /// The breaker's name.
        name: Arc<str>,
        /// Failures counted.
        failures: u64,
    },
}

type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// The listeners of one breaker. Emitting checks one relaxed flag when nobody listens.
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
