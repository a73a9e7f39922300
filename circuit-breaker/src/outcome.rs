//! How a finished call counts.

/// The verdict on one finished call.
///
/// ```
/// use meshwork_circuit_breaker::Outcome;
/// assert_ne!(Outcome::Success, Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked.
    Success,
    /// The call failed and counts against the upstream.
    Failure,
    /// The call says nothing about the upstream's health (a 404, a cancellation by the
    /// caller): it is not recorded, and a half-open probe permit is given back.
    Ignored,
}

/// Decides how a call's result counts: an `Ok` may be a failure (an HTTP 503), an `Err` may be
/// ignored (a 404, a cancellation).
///
/// Closures `Fn(&Result<T, E>) -> Outcome` implement it.
///
/// ```
/// use meshwork_circuit_breaker::{Classify, Outcome};
///
/// let by_status = |r: &Result<u16, std::io::Error>| match r {
///     Ok(status) if *status >= 500 => Outcome::Failure,
///     Ok(404) => Outcome::Ignored,
///     Ok(_) => Outcome::Success,
///     Err(_) => Outcome::Failure,
/// };
/// assert_eq!(by_status.classify(&Ok(503)), Outcome::Failure);
/// ```
pub trait Classify<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classification: `Ok` is a success, `Err` a failure.
///
/// ```
/// use meshwork_circuit_breaker::{Classify, DefaultClassifier, Outcome};
/// assert_eq!(DefaultClassifier.classify(&Err::<(), _>("boom")), Outcome::Failure);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
