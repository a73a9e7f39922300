//! Typed events: a stable type name, a topic and key mapping, and a codec (JSON by default),
//! with an optional CloudEvents 1.0 header mapping.
//!
//! The type name travels in the `event-type` header and the codec's media type in
//! `content-type`, so a consumer can refuse a message that is not what it expects with a
//! typed [`DecodeError`] instead of misreading it. Undecodable messages are never dropped by
//! meshwork: the router sends them through the subscription's failure policy (by default,
//! straight to the dead-letter topic).

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Message, header};

/// An event with a stable name and a home topic.
///
/// ```
/// use meshwork_event_bus::{Event, decode, encode};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// struct MessagePosted { room: u64, text: String }
///
/// impl Event for MessagePosted {
///     const TYPE: &'static str = "chat.message-posted.v1";
///     const TOPIC: &'static str = "chat.messages";
///     fn key(&self) -> Option<String> { Some(self.room.to_string()) }
/// }
///
/// let posted = MessagePosted { room: 7, text: "hi".into() };
/// let message = encode(&posted)?;
/// assert_eq!(message.headers().event_type(), Some("chat.message-posted.v1"));
/// assert_eq!(message.key(), Some(b"7".as_slice()));
/// assert_eq!(decode::<MessagePosted>(&message)?, posted);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Event: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The stable type name, versioned by convention (`domain.event-name.v1`); it must not
    /// change once events are in flight.
    const TYPE: &'static str;
    /// The topic the event is published to.
    const TOPIC: &'static str;

    /// The ordering key: events with one key are handled in order. Default: none.
    fn key(&self) -> Option<String> {
        None
    }
}

/// Turns events into bytes and back.
pub trait Codec: Send + Sync + 'static {
    /// The media type written in the `content-type` header.
    fn content_type(&self) -> &'static str;
    /// Encodes `value`.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Bytes, EncodeError>;
    /// Decodes `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// JSON through serde_json: the default codec.
///
/// ```
/// use meshwork_event_bus::{Codec, JsonCodec};
///
/// let bytes = JsonCodec.encode(&vec![1, 2])?;
/// assert_eq!(&bytes[..], b"[1,2]");
/// assert_eq!(JsonCodec.decode::<Vec<u8>>(&bytes).unwrap(), vec![1, 2]);
/// # Ok::<(), meshwork_event_bus::EncodeError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Bytes, EncodeError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| EncodeError(e.to_string()))
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// An event that could not be encoded (a map with non-string keys in JSON, say).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not encode the event: {0}")]
pub struct EncodeError(String);

/// A message that is not the event the consumer expected, or whose payload does not decode.
///
/// ```
/// use meshwork_event_bus::{DecodeError, Event, Message, decode};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Debug, Serialize, Deserialize)] struct Ping { n: u32 }
/// # impl Event for Ping { const TYPE: &'static str = "ping.v1"; const TOPIC: &'static str = "pings"; }
///
/// let wrong = Message::new("{}").with_header("event-type", "pong.v1");
/// assert!(matches!(decode::<Ping>(&wrong), Err(DecodeError::WrongType { .. })));
/// let garbage = Message::new("{not json").with_header("event-type", "ping.v1");
/// let err = decode::<Ping>(&garbage).unwrap_err();
/// assert!(err.to_string().starts_with("message "), "{err}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The `event-type` header names another event.
    #[error("message {id} is a '{found}', not the expected '{expected}'")]
    WrongType {
        /// The message id.
        id: crate::MessageId,
        /// The type expected.
        expected: &'static str,
        /// The type the message carries.
        found: String,
    },
    /// The payload does not decode as the expected event.
    #[error("message {id} does not decode as '{expected}': {reason}")]
    Undecodable {
        /// The message id.
        id: crate::MessageId,
        /// The type expected.
        expected: &'static str,
        /// The codec's complaint.
        reason: String,
    },
}

/// Encodes `event` into a message for [`Event::TOPIC`] with the JSON codec: the type name,
/// content type and key are set.
pub fn encode<E: Event>(event: &E) -> Result<Message, EncodeError> {
    encode_with(&JsonCodec, event)
}

/// Like [`encode`], with another codec.
pub fn encode_with<E: Event, C: Codec>(codec: &C, event: &E) -> Result<Message, EncodeError> {
    let mut message = Message::new(codec.encode(event)?)
        .with_header(header::EVENT_TYPE, E::TYPE)
        .with_header(header::CONTENT_TYPE, codec.content_type());
    if let Some(key) = event.key() {
        message = message.with_key(key);
    }
    Ok(message)
}

/// Decodes a message into `E` with the JSON codec, checking its `event-type` header when it
/// has one.
pub fn decode<E: Event>(message: &Message) -> Result<E, DecodeError> {
    decode_with(&JsonCodec, message)
}

/// Like [`decode`], with another codec.
pub fn decode_with<E: Event, C: Codec>(codec: &C, message: &Message) -> Result<E, DecodeError> {
    if let Some(found) = message.headers().event_type()
        && found != E::TYPE
    {
        return Err(DecodeError::WrongType {
            id: message.id(),
            expected: E::TYPE,
            found: found.to_owned(),
        });
    }
    codec
        .decode(message.payload())
        .map_err(|reason| DecodeError::Undecodable {
            id: message.id(),
            expected: E::TYPE,
            reason,
        })
}

/// CloudEvents 1.0 in binary content mode: the event's attributes as `ce-` headers (the HTTP
/// and AMQP spelling; Kafka bindings use `ce_`, chosen with [`CloudEvents::kafka`]).
///
/// ```
/// use meshwork_event_bus::{CloudEvents, Message};
///
/// let ce = CloudEvents::new("/chat-service");
/// let mut m = Message::new("{}").with_header("event-type", "chat.message-posted.v1");
/// ce.apply(&mut m);
/// assert_eq!(m.headers().get("ce-specversion"), Some("1.0"));
/// assert_eq!(m.headers().get("ce-type"), Some("chat.message-posted.v1"));
/// assert_eq!(m.headers().get("ce-id"), Some(m.id().to_string().as_str()));
/// assert_eq!(m.headers().get("ce-source"), Some("/chat-service"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEvents {
    source: String,
    prefix: &'static str,
}

impl CloudEvents {
    /// Attributes with `source` (a URI reference naming the producer), `ce-` prefixed.
    pub fn new(source: impl Into<String>) -> Self {
        CloudEvents {
            source: source.into(),
            prefix: "ce-",
        }
    }

    /// The Kafka binding's `ce_` prefix.
    #[must_use]
    pub fn kafka(mut self) -> Self {
        self.prefix = "ce_";
        self
    }

    /// Writes the required attributes (`specversion`, `id`, `source`, `type`) and `time`
    /// and `datacontenttype` when known, from the message's id, headers and creation time.
    pub fn apply(&self, message: &mut Message) {
        let id = message.id().to_string();
        let event_type = message
            .headers()
            .event_type()
            .unwrap_or("unknown")
            .to_owned();
        let content_type = message.headers().content_type().map(str::to_owned);
        let time = message
            .created_at()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .ok()
            .map(rfc3339);
        let p = self.prefix;
        let h = message.headers_mut();
        h.insert(format!("{p}specversion"), "1.0");
        h.insert(format!("{p}id"), id);
        h.insert(format!("{p}source"), self.source.clone());
        h.insert(format!("{p}type"), event_type);
        if let Some(t) = time {
            h.insert(format!("{p}time"), t);
        }
        if let Some(ct) = content_type {
            h.insert(format!("{p}datacontenttype"), ct);
        }
    }
}

/// Seconds since the epoch as an RFC 3339 UTC timestamp (civil-from-days, Howard Hinnant's
/// algorithm, valid for the whole proleptic Gregorian calendar).
fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Duration::from_millis(951_782_400_123)),
            "2000-02-29T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(Duration::from_secs(1_798_761_599)),
            "2026-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn kafka_binding_uses_underscores() {
        let mut m = Message::new("x");
        CloudEvents::new("/s").kafka().apply(&mut m);
        assert_eq!(m.headers().get("ce_specversion"), Some("1.0"));
        assert_eq!(m.headers().get("ce_type"), Some("unknown"));
        assert!(m.headers().get("ce_time").is_some_and(|t| t.ends_with('Z')));
    }
}
