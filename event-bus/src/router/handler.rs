//! What a handler is: a tower `Service<Message>` answering with [`Outputs`], and the error
//! that tells the failure policy whether a failure is worth retrying.

use std::borrow::Cow;
use std::fmt;
use std::future::{Future, poll_fn};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::TryFutureExt;
use tower_service::Service;

use crate::{BoxError, BoxFuture, Message};

/// The messages a handler asks the router to publish: `(topic, message)` pairs, published in
/// order and confirmed by the backend before the input is acknowledged.
///
/// ```
/// use meshwork_event_bus::{Message, Outputs};
///
/// let input = Message::new("order placed");
/// let outputs = Outputs::none()
///     .with("billing.invoices", input.caused("invoice issued"))
///     .with("audit", Message::new("order seen"));
/// assert_eq!(outputs.len(), 2);
/// assert_eq!(outputs.iter().next().map(|(t, _)| t), Some("billing.invoices"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    items: Vec<(Cow<'static, str>, Message)>,
}

impl Outputs {
    /// Nothing to publish (allocates nothing).
    pub fn none() -> Self {
        Outputs::default()
    }

    /// One message for `topic`.
    pub fn one(topic: impl Into<Cow<'static, str>>, message: Message) -> Self {
        Outputs {
            items: vec![(topic.into(), message)],
        }
    }

    /// Adds a message for `topic`, after the others.
    #[must_use]
    pub fn with(mut self, topic: impl Into<Cow<'static, str>>, message: Message) -> Self {
        self.push(topic, message);
        self
    }

    /// Adds a message for `topic`, after the others.
    pub fn push(&mut self, topic: impl Into<Cow<'static, str>>, message: Message) {
        self.items.push((topic.into(), message));
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there is nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The `(topic, message)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Message)> {
        self.items.iter().map(|(t, m)| (&**t, m))
    }

    /// The messages, mutably (middleware that stamps headers).
    pub fn messages_mut(&mut self) -> impl Iterator<Item = &mut Message> {
        self.items.iter_mut().map(|(_, m)| m)
    }

    pub(crate) fn into_items(self) -> Vec<(Cow<'static, str>, Message)> {
        self.items
    }
}

impl<T: Into<Cow<'static, str>>> FromIterator<(T, Message)> for Outputs {
    fn from_iter<I: IntoIterator<Item = (T, Message)>>(iter: I) -> Self {
        Outputs {
            items: iter.into_iter().map(|(t, m)| (t.into(), m)).collect(),
        }
    }
}

impl From<()> for Outputs {
    fn from((): ()) -> Self {
        Outputs::none()
    }
}

/// Why a message failed, as the failure policy sees it.
///
/// A [`DecodeError`](crate::DecodeError) from the typed-event codecs anywhere in a handler's
/// error chain counts as [`FailureKind::Decode`] without wrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// Might succeed later: retried in process, then redelivered after a delay, then
    /// dead-lettered. Every error that is not a [`HandlerError`] saying otherwise is transient.
    Transient,
    /// Will never succeed (a business rule refused it): dead-lettered at once.
    Permanent,
    /// The payload could not be decoded: by default dead-lettered at once
    /// (see [`FailurePolicyBuilder::on_decode_error`](crate::FailurePolicyBuilder::on_decode_error)).
    Decode,
    /// The handler panicked: by default dead-lettered at once
    /// (see [`FailurePolicyBuilder::on_panic`](crate::FailurePolicyBuilder::on_panic)).
    Panic,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureKind::Transient => "transient failure",
            FailureKind::Permanent => "permanent failure",
            FailureKind::Decode => "undecodable message",
            FailureKind::Panic => "handler panicked",
        })
    }
}

/// A handler error that says how the failure policy should treat it.
///
/// Handlers return any error convertible into a [`BoxError`]; a plain error is
/// [transient](FailureKind::Transient). Wrap it in a `HandlerError` to say more: the router
/// looks for one anywhere in the error's source chain, so it survives tower middleware that
/// boxes errors.
///
/// ```
/// use meshwork_event_bus::{BoxError, FailureKind, HandlerError};
///
/// let err: BoxError = HandlerError::permanent("amount must be positive").into();
/// assert_eq!(FailureKind::of(&*err), FailureKind::Permanent);
/// let plain: BoxError = "database busy".into();
/// assert_eq!(FailureKind::of(&*plain), FailureKind::Transient);
/// ```
#[derive(Debug)]
pub struct HandlerError {
    kind: FailureKind,
    source: BoxError,
}

impl HandlerError {
    /// Worth retrying (the default for any error).
    pub fn transient(error: impl Into<BoxError>) -> Self {
        HandlerError {
            kind: FailureKind::Transient,
            source: error.into(),
        }
    }

    /// Never worth retrying: dead-letter it now.
    pub fn permanent(error: impl Into<BoxError>) -> Self {
        HandlerError {
            kind: FailureKind::Permanent,
            source: error.into(),
        }
    }

    /// The message could not be decoded.
    pub fn decode(error: impl Into<BoxError>) -> Self {
        HandlerError {
            kind: FailureKind::Decode,
            source: error.into(),
        }
    }

    /// How the policy treats it.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Decode => write!(f, "cannot decode message: {}", self.source),
            _ => fmt::Display::fmt(&self.source, f),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl FailureKind {
    /// The kind of `error`: that of the first [`HandlerError`] in its source chain, else
    /// [`FailureKind::Transient`].
    pub fn of(error: &(dyn std::error::Error + 'static)) -> FailureKind {
        let mut next = Some(error);
        while let Some(e) = next {
            if let Some(h) = e.downcast_ref::<HandlerError>() {
                return h.kind;
            }
            if e.is::<crate::DecodeError>() {
                return FailureKind::Decode;
            }
            next = e.source();
        }
        FailureKind::Transient
    }
}

/// The error chain as one line: `outer: inner: root`, skipping repeats (an error whose
/// display already includes its source's).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        next = e.source();
    }
    out
}

trait ErasedHandler: Send + Sync {
    fn call(&self, message: Message) -> BoxFuture<'static, Result<Outputs, BoxError>>;
}

struct FnHandler<F>(F);

impl<F, Fut, E> ErasedHandler for FnHandler<F>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outputs, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    fn call(&self, message: Message) -> BoxFuture<'static, Result<Outputs, BoxError>> {
        Box::pin((self.0)(message).map_err(Into::into))
    }
}

/// Holds a prototype service and clones it for every call (tower's usual way to run one
/// service concurrently); the lock is held only for the clone.
struct TowerHandler<S>(Mutex<S>);

impl<S> ErasedHandler for TowerHandler<S>
where
    S: Service<Message, Response = Outputs> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    fn call(&self, message: Message) -> BoxFuture<'static, Result<Outputs, BoxError>> {
        let mut service = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            service.call(message).await.map_err(Into::into)
        })
    }
}

/// A handler with its type erased: a cheap-to-clone tower `Service<Message>` answering with
/// [`Outputs`] or a [`BoxError`]. Every route's handler becomes one, and router-wide layers
/// wrap it.
///
/// ```
/// use meshwork_event_bus::{BoxError, HandlerService, Message, Outputs};
///
/// let echo = HandlerService::from_fn(|msg: Message| async move {
///     Ok::<_, BoxError>(Outputs::one("echo", msg.caused(msg.payload().clone())))
/// });
/// # let _ = echo;
/// ```
#[derive(Clone)]
pub struct HandlerService {
    inner: Arc<dyn ErasedHandler>,
}

impl HandlerService {
    /// A handler from an async function (or closure) of the message.
    pub fn from_fn<F, Fut, E>(f: F) -> Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outputs, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        HandlerService {
            inner: Arc::new(FnHandler(f)),
        }
    }

    /// A handler from a tower service, such as a `ServiceBuilder` stack. It is cloned for each
    /// message, as tower services are meant to be.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Message, Response = Outputs> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        HandlerService {
            inner: Arc::new(TowerHandler(Mutex::new(service))),
        }
    }
}

impl fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerService")
    }
}

impl Service<Message> for HandlerService {
    type Response = Outputs;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Outputs, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, message: Message) -> Self::Future {
        self.inner.call(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_found_through_wrapping_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("layer refused")]
        struct Wrapper(#[source] HandlerError);

        let e = Wrapper(HandlerError::decode("bad json"));
        assert_eq!(FailureKind::of(&e), FailureKind::Decode);
        assert_eq!(
            error_chain(&e),
            "layer refused: cannot decode message: bad json"
        );
    }

    #[test]
    fn chain_skips_repeated_text() {
        let e = HandlerError::transient("db down");
        assert_eq!(error_chain(&e), "db down");
    }
}
