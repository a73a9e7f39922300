//! The router's metrics through the `metrics` facade (feature `metrics`); without the feature
//! every method is an empty inline function.
//!
//! Per handler (label `handler`): `meshwork_event_bus_handled_total`,
//! `meshwork_event_bus_handling_seconds` (from the start of handling to the ack, outputs
//! included), `meshwork_event_bus_duplicates_total`, and
//! `meshwork_event_bus_failures_total` with labels `kind` (transient, permanent, decode,
//! panic) and `outcome` (retried_in_process, redelivered, dead_lettered). Handles are
//! registered when the router is built, with the recorder installed at that time.

use super::{FailureKind, FailureOutcome};

#[cfg(feature = "metrics")]
mod imp {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::{FailureKind, FailureOutcome};

    const KINDS: [&str; 4] = ["transient", "permanent", "decode", "panic"];
    const OUTCOMES: [&str; 3] = ["retried_in_process", "redelivered", "dead_lettered"];

    #[derive(Debug)]
    pub(crate) struct Meters {
        handled: metrics::Counter,
        duplicates: metrics::Counter,
        seconds: metrics::Histogram,
        /// By kind, then outcome (registered up front, like the others).
        failures: [[metrics::Counter; 3]; 4],
    }

    impl Meters {
        pub(crate) fn new(handler: &Arc<str>) -> Self {
            let label = handler.to_string();
            Meters {
                handled: metrics::counter!("meshwork_event_bus_handled_total", "handler" => label.clone()),
                duplicates: metrics::counter!("meshwork_event_bus_duplicates_total", "handler" => label.clone()),
                seconds: metrics::histogram!("meshwork_event_bus_handling_seconds", "handler" => label.clone()),
                failures: KINDS.map(|kind| {
                    OUTCOMES.map(|outcome| {
                        metrics::counter!(
                            "meshwork_event_bus_failures_total",
                            "handler" => label.clone(),
                            "kind" => kind,
                            "outcome" => outcome
                        )
                    })
                }),
            }
        }

        pub(crate) fn start(&self) -> Instant {
            Instant::now()
        }

        pub(crate) fn handled(&self, started: Instant) {
            self.handled.increment(1);
            self.seconds.record(started.elapsed().as_secs_f64());
        }

        pub(crate) fn duplicate(&self) {
            self.duplicates.increment(1);
        }

        pub(crate) fn failed(&self, kind: FailureKind, outcome: &FailureOutcome) {
            let kind = match kind {
                FailureKind::Transient => 0,
                FailureKind::Permanent => 1,
                FailureKind::Decode => 2,
                FailureKind::Panic => 3,
            };
            let outcome = match outcome {
                FailureOutcome::RetriedInProcess { .. } => 0,
                FailureOutcome::Redelivered { .. } => 1,
                FailureOutcome::DeadLettered => 2,
            };
            self.failures[kind][outcome].increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod imp {
    use std::sync::Arc;

    use super::{FailureKind, FailureOutcome};

    #[derive(Debug)]
    pub(crate) struct Meters;

    /// Nothing to remember without metrics.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Started;

    impl Meters {
        #[inline]
        pub(crate) fn new(_handler: &Arc<str>) -> Self {
            Meters
        }

        #[inline]
        pub(crate) fn start(&self) -> Started {
            Started
        }

        #[inline]
        pub(crate) fn handled(&self, _started: Started) {}

        #[inline]
        pub(crate) fn duplicate(&self) {}

        #[inline]
        pub(crate) fn failed(&self, _kind: FailureKind, _outcome: &FailureOutcome) {}
    }
}

pub(crate) use imp::Meters;
