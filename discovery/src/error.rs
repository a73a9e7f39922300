//! Errors: configuration values out of range, and failures talking to a registry.

use std::fmt;

/// The boxed source of an error from an underlying client.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration value out of its valid range; the message names the field, the value and
/// what is accepted.
///
/// ```
/// use meshwork_discovery::StaticConfig;
/// use std::time::Duration;
///
/// let err = StaticConfig::builder().dns_refresh(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "dns_refresh");
/// assert_eq!(err.to_string(), "dns_refresh must be at least 1ms, got 0ns");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be {expected}, got {value}")]
pub struct ConfigError {
    field: &'static str,
    value: String,
    expected: &'static str,
}

impl ConfigError {
    pub(crate) fn new(
        field: &'static str,
        value: impl fmt::Display,
        expected: &'static str,
    ) -> Self {
        ConfigError {
            field,
            value: value.to_string(),
            expected,
        }
    }

    /// The name of the offending field, as spelled by its builder setter.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, formatted.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field accepts.
    pub fn expected(&self) -> &'static str {
        self.expected
    }
}

/// A discovery or registration operation that failed.
///
/// ```
/// use meshwork_discovery::{Discover, Error, StaticDiscovery};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let discovery = StaticDiscovery::default();
/// let err = discovery.resolve("nobody").await;
/// assert!(err.unwrap().is_empty());
/// let e = Error::AclDenied { operation: "register", message: "ACL not found".into() };
/// assert_eq!(e.to_string(), "register refused by the registry's ACL: ACL not found");
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration or registration value out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The registry refused the ACL token (Consul answers 403 with "ACL not found" for an
    /// unknown token and "Permission denied" for a token without the right policy).
    #[error("{operation} refused by the registry's ACL: {message}")]
    AclDenied {
        /// What was attempted (`register`, `heartbeat`, `resolve`, ...).
        operation: &'static str,
        /// The registry's own words.
        message: String,
    },
    /// The registry does not know the service instance or check.
    #[error("{operation}: not found: {message}")]
    NotFound {
        /// What was attempted.
        operation: &'static str,
        /// The registry's own words.
        message: String,
    },
    /// The registry answered with an unexpected HTTP status.
    #[error("{operation}: registry answered HTTP {status}: {message}")]
    Status {
        /// What was attempted.
        operation: &'static str,
        /// The HTTP status code.
        status: u16,
        /// The response body, trimmed.
        message: String,
    },
    /// The registry could not be reached, or the request timed out.
    #[error("{operation}: could not reach the registry at {url}")]
    Transport {
        /// What was attempted.
        operation: &'static str,
        /// The URL that was requested (without credentials).
        url: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// The registry's answer could not be understood.
    #[error("{operation}: could not decode the registry's answer")]
    Decode {
        /// What was attempted.
        operation: &'static str,
        /// The decoder's error.
        #[source]
        source: BoxError,
    },
    /// A DNS lookup failed.
    #[error("DNS lookup of '{host}' failed")]
    Dns {
        /// The name looked up.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The backend does not support this operation.
    #[error("{backend} does not support {operation}")]
    Unsupported {
        /// The backend.
        backend: &'static str,
        /// The operation.
        operation: &'static str,
    },
}

impl Error {
    /// Whether retrying later may succeed (transport failures, 5xx, 429).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Dns { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}
