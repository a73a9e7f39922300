//! The one error type of the bus.

use std::time::Duration;

use crate::MessageId;

/// A boxed error from a broker client, kept as [`std::error::Error::source`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, and what to do about it.
///
/// Broker client errors are never part of this type: they are reachable through
/// [`source()`](std::error::Error::source).
///
/// ```
/// use meshwork_event_bus::BusError;
///
/// let err = BusError::invalid("topic", "", "must not be empty");
/// assert_eq!(err.to_string(), "invalid topic \"\": must not be empty");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// A name or value given to the bus is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What was given (a topic, a group, a config field).
        what: &'static str,
        /// The value given.
        value: String,
        /// Why it is not acceptable, and what is.
        reason: &'static str,
    },
    /// The publisher, subscriber or bus was closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// A topic, queue, stream or group is missing and creating it was turned off.
    #[error(
        "{what} '{name}' does not exist and topology creation is turned off: create it, or turn create_topology on"
    )]
    MissingTopology {
        /// The kind of thing missing.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// The operation did not finish in time.
    #[error("timed out after {after:?} {what}")]
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// Some messages of a batch were not accepted; the others were.
    #[error("{} of {total} messages were not accepted by topic '{topic}' (first: {})", failed.len(), failed.first().map(|f| f.1.as_str()).unwrap_or("unknown"))]
    Partial {
        /// The topic.
        topic: String,
        /// Messages in the batch.
        total: usize,
        /// The messages not accepted, with the reason for each.
        failed: Vec<(MessageId, String)>,
    },
    /// The delivery was already settled elsewhere, or its lease expired and it went to
    /// another consumer.
    #[error("delivery {0} can no longer be settled: it was settled already or redelivered")]
    Stale(MessageId),
    /// The broker or its client failed; the cause is the source.
    #[error("{context}")]
    Backend {
        /// What meshwork was doing.
        context: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
}

impl BusError {
    /// A [`BusError::Invalid`].
    pub fn invalid(what: &'static str, value: impl Into<String>, reason: &'static str) -> Self {
        BusError::Invalid {
            what,
            value: value.into(),
            reason,
        }
    }

    /// A [`BusError::Backend`] wrapping a client error.
    pub fn backend(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        BusError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Checks a topic or group name: 1 to 249 characters of ASCII letters, digits, `.`, `_`, `-`
/// (the set every backend accepts).
pub(crate) fn validate_name(what: &'static str, name: &str) -> Result<(), BusError> {
    if name.is_empty() {
        return Err(BusError::invalid(what, name, "must not be empty"));
    }
    if name.len() > 249 {
        return Err(BusError::invalid(
            what,
            name,
            "must be at most 249 characters",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(BusError::invalid(
            what,
            name,
            "may hold only ASCII letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("topic", "chat.messages-v1_x").is_ok());
        for bad in ["", "a b", "ü", "a/b", &"x".repeat(250)] {
            let err = validate_name("topic", bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid topic"), "{err}");
        }
    }

    #[test]
    fn partial_names_the_first_failure() {
        let e = BusError::Partial {
            topic: "t".into(),
            total: 3,
            failed: vec![(MessageId::new(), "too large".into())],
        };
        assert_eq!(
            e.to_string(),
            "1 of 3 messages were not accepted by topic 't' (first: too large)"
        );
    }
}
