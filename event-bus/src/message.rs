//! Messages: an id that never changes, an optional ordering key, bytes, and headers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use uuid::Uuid;

/// A message's identity: a UUID v7 (time-ordered to the millisecond, 74 random bits),
/// assigned once at creation and kept across retries, relays and dead letters. It is the
/// idempotency key.
///
/// The random bits come from a fast thread-local generator rather than the operating system:
/// an id needs to be unique, not secret, and a `getrandom` system call per message cost a
/// tenth of the in-memory bus's throughput.
///
/// ```
/// use meshwork_event_bus::MessageId;
///
/// let a = MessageId::new();
/// let b = MessageId::new();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().parse::<MessageId>().unwrap(), a);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(Uuid);

impl MessageId {
    /// A fresh time-ordered id.
    pub fn new() -> Self {
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
        random[8..].copy_from_slice(&fastrand::u16(..).to_le_bytes());
        MessageId(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for MessageId {
    fn default() -> Self {
        MessageId::new()
    }
}

impl From<Uuid> for MessageId {
    fn from(uuid: Uuid) -> Self {
        MessageId(uuid)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A message id that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid message id {input:?}: expected a UUID such as 0190b6b4-8a4e-7cc5-9a53-4f1d2c3b4a5e"
)]
pub struct InvalidMessageId {
    input: String,
}

impl std::str::FromStr for MessageId {
    type Err = InvalidMessageId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s)
            .map(MessageId)
            .map_err(|_| InvalidMessageId {
                input: s.to_owned(),
            })
    }
}

/// Header names meshwork gives a meaning to.
pub mod header {
    /// The id shared by every message of one business flow (a request, a saga).
    pub const CORRELATION_ID: &str = "correlation-id";
    /// The id of the message that caused this one.
    pub const CAUSATION_ID: &str = "causation-id";
    /// The stable name of the event type, e.g. `chat.message-posted.v1`.
    pub const EVENT_TYPE: &str = "event-type";
    /// The payload's media type, e.g. `application/json`.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
}

/// String headers, sorted by name (so two equal messages compare equal).
///
/// ```
/// use meshwork_event_bus::Headers;
///
/// let mut h = Headers::new();
/// h.insert("tenant", "acme");
/// h.set_correlation_id("req-42");
/// assert_eq!(h.get("tenant"), Some("acme"));
/// assert_eq!(h.correlation_id(), Some("req-42"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Sets `name` to `value`, returning the previous value.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Every header, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The correlation id.
    pub fn correlation_id(&self) -> Option<&str> {
        self.get(header::CORRELATION_ID)
    }

    /// Sets the correlation id.
    pub fn set_correlation_id(&mut self, id: impl Into<String>) {
        self.insert(header::CORRELATION_ID, id);
    }

    /// The causation id.
    pub fn causation_id(&self) -> Option<&str> {
        self.get(header::CAUSATION_ID)
    }

    /// The event type.
    pub fn event_type(&self) -> Option<&str> {
        self.get(header::EVENT_TYPE)
    }

    /// The content type.
    pub fn content_type(&self) -> Option<&str> {
        self.get(header::CONTENT_TYPE)
    }

    /// The W3C `traceparent`.
    pub fn traceparent(&self) -> Option<&str> {
        self.get(header::TRACEPARENT)
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// One message: id, optional key, payload, headers and creation time.
///
/// The key orders and partitions: messages with the same key are handled one at a time, in
/// publish order, by every backend that declares per-key ordering.
///
/// ```
/// use meshwork_event_bus::Message;
///
/// let m = Message::new("hello")
///     .with_key("room-7")
///     .with_header("event-type", "chat.message-posted.v1");
/// assert_eq!(m.payload().as_ref(), b"hello");
/// assert_eq!(m.key(), Some(b"room-7".as_slice()));
/// assert_eq!(m.headers().event_type(), Some("chat.message-posted.v1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    id: MessageId,
    key: Option<Bytes>,
    payload: Bytes,
    headers: Headers,
    created_at: SystemTime,
}

impl Message {
    /// A message with a fresh id, no key and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Message {
            id: MessageId::new(),
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
            created_at: SystemTime::now(),
        }
    }

    /// Rebuilds a message from its parts, as a backend does when it reads one back.
    pub fn from_parts(
        id: MessageId,
        key: Option<Bytes>,
        payload: Bytes,
        headers: Headers,
        created_at: SystemTime,
    ) -> Self {
        Message {
            id,
            key,
            payload,
            headers,
            created_at,
        }
    }

    /// Sets the ordering key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces the id (to republish a message under the id it had elsewhere).
    #[must_use]
    pub fn with_id(mut self, id: MessageId) -> Self {
        self.id = id;
        self
    }

    /// A message caused by this one: a fresh id, the same correlation id (this message's id
    /// if it had none), and this message's id as causation id.
    ///
    /// ```
    /// use meshwork_event_bus::Message;
    ///
    /// let order = Message::new("order placed");
    /// let invoice = order.caused("invoice issued");
    /// assert_eq!(invoice.headers().causation_id(), Some(order.id().to_string().as_str()));
    /// assert_eq!(invoice.headers().correlation_id(), Some(order.id().to_string().as_str()));
    /// ```
    pub fn caused(&self, payload: impl Into<Bytes>) -> Message {
        let correlation = self
            .headers
            .correlation_id()
            .map(str::to_owned)
            .unwrap_or_else(|| self.id.to_string());
        let mut next = Message::new(payload);
        next.headers.set_correlation_id(correlation);
        next.headers
            .insert(header::CAUSATION_ID, self.id.to_string());
        if let Some(tp) = self.headers.traceparent() {
            next.headers.insert(header::TRACEPARENT, tp);
        }
        next
    }

    /// The id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// The ordering key.
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }

    /// The ordering key, as shared bytes.
    pub fn key_bytes(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The headers.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// The headers, mutably.
    pub fn headers_mut(&mut self) -> &mut Headers {
        &mut self.headers
    }

    /// When the message was created (wall clock).
    pub fn created_at(&self) -> SystemTime {
        self.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_unique_and_time_ordered_by_millisecond() {
        let ids: Vec<MessageId> = (0..10_000).map(|_| MessageId::new()).collect();
        let unique: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len());
        for pair in ids.windows(2) {
            assert_eq!(pair[0].as_uuid().get_version_num(), 7);
            let (a, _) = pair[0].as_uuid().get_timestamp().unwrap().to_unix();
            let (b, _) = pair[1].as_uuid().get_timestamp().unwrap().to_unix();
            assert!(a <= b, "ids go forward in time");
        }
    }
}
