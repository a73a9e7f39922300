//! The breaker's states.

use std::fmt;

/// Where a breaker stands.
///
/// ```
/// use meshwork_circuit_breaker::{CircuitBreaker, State};
///
/// let breaker = CircuitBreaker::with_defaults("inventory");
/// assert_eq!(breaker.state(), State::Closed);
/// breaker.force_open();
/// assert_eq!(breaker.state(), State::ForcedOpen);
/// assert_eq!(State::HalfOpen.to_string(), "half-open");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls flow and are recorded; the breaker opens when a threshold is crossed.
    Closed,
    /// Calls are rejected until the open duration has passed.
    Open,
    /// A fixed number of probe calls is let through to decide between closing and opening.
    HalfOpen,
    /// Calls flow and nothing is recorded (set by hand).
    Disabled,
    /// Every call is rejected until the breaker is reset (set by hand).
    ForcedOpen,
    /// Calls flow, are recorded and threshold crossings are reported, but nothing is ever
    /// rejected: the way to roll out new thresholds safely (set by hand).
    MetricsOnly,
}

impl State {
    pub(crate) const fn code(self) -> u64 {
        match self {
            State::Closed => 0,
            State::Open => 1,
            State::HalfOpen => 2,
            State::Disabled => 3,
            State::ForcedOpen => 4,
            State::MetricsOnly => 5,
        }
    }

    pub(crate) const fn from_code(code: u64) -> State {
        match code {
            0 => State::Closed,
            1 => State::Open,
            2 => State::HalfOpen,
            3 => State::Disabled,
            4 => State::ForcedOpen,
            _ => State::MetricsOnly,
        }
    }

    /// A stable lower-case name, used in logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::Disabled => "disabled",
            State::ForcedOpen => "forced-open",
            State::MetricsOnly => "metrics-only",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
