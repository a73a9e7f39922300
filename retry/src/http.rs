//! HTTP helpers (feature `http`): `Retry-After`, a 429/503 classifier, and a bounded replay
//! body for requests whose body can't be cloned.
//!
//! # Retry-After
//! [`parse_retry_after`] reads both forms RFC 9110 allows: delay-seconds (`120`) and an
//! HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, a date in the past meaning "now"). The policy
//! caps the delay at `max_delay`, so a server can't park a caller for an hour.
//!
//! # Replaying bodies
//! A streaming body (hyper's `Incoming`, a file) can be read once. [`ReplayBody`] wraps it and
//! keeps what it reads in a buffer of bounded size; a copy made with
//! [`ReplayBody::try_clone`] reads the buffer first, then the rest of the original body. Once
//! the body outgrows the buffer, no further copies can be made ([`ReplayRequest`] returns
//! `None` and the tower adapter doesn't retry), and a copy that already lost its data fails
//! with a [`ReplayError`] rather than sending a truncated or empty body.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes};
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::{Classify, Decision};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Parses a `Retry-After` value, in seconds or as an HTTP-date relative to `now`; `None` when
/// it is neither.
///
/// ```
/// use meshwork_retry::http::parse_retry_after;
/// use http::HeaderValue;
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// let secs = HeaderValue::from_static("120");
/// assert_eq!(parse_retry_after(&secs, now), Some(Duration::from_secs(120)));
/// let date = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT");
/// assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
/// let junk = HeaderValue::from_static("soon");
/// assert_eq!(parse_retry_after(&junk, now), None);
/// let huge = HeaderValue::from_static("99999999999999999999999");
/// assert_eq!(parse_retry_after(&huge, now), Some(Duration::MAX), "capped by the policy");
/// ```
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // delay-seconds is `1*DIGIT`: a number too large for a u64 still means "a long
        // time" (the policy caps it at `max_delay`), not "no Retry-After".
        return Some(text.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` of a response's headers, relative to the system clock (an HTTP-date
/// can only be read against the wall clock); `None` when there is none or it can't be parsed.
///
/// ```
/// use meshwork_retry::http::retry_after;
/// use std::time::Duration;
///
/// let mut headers = http::HeaderMap::new();
/// assert_eq!(retry_after(&headers), None);
/// headers.insert(http::header::RETRY_AFTER, http::HeaderValue::from_static("7"));
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(headers.get(RETRY_AFTER)?, SystemTime::now())
}

/// Retries errors (connection refused, reset...) and responses with a retryable status (429
/// and 503 unless told otherwise), after the response's `Retry-After` when it has one.
///
/// 429 and 503 say the server did not process the request, so retrying them is safe for any
/// method; add 502 or 504 with [`retry_status`](HttpClassifier::retry_status) only for
/// idempotent requests.
///
/// ```
/// use meshwork_retry::http::HttpClassifier;
/// use meshwork_retry::{Classify, Decision};
/// use std::time::Duration;
///
/// let classifier = HttpClassifier::new();
/// let busy = http::Response::builder().status(503).header("retry-after", "2").body(()).unwrap();
/// let ok = http::Response::new(());
/// assert_eq!(classifier.classify(&Ok::<_, ()>(busy)), Decision::RetryAfter(Duration::from_secs(2)));
/// assert_eq!(classifier.classify(&Ok::<_, ()>(ok)), Decision::Done);
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpClassifier {
    // One bit per status in 400..656.
    statuses: [u64; 4],
    honour_retry_after: bool,
}

impl HttpClassifier {
    /// Retries errors, 429 and 503, honouring `Retry-After`.
    pub fn new() -> Self {
        HttpClassifier {
            statuses: [0; 4],
            honour_retry_after: true,
        }
        .retry_status(StatusCode::TOO_MANY_REQUESTS)
        .retry_status(StatusCode::SERVICE_UNAVAILABLE)
    }

    /// Also retry responses with `status`; only 4xx and 5xx statuses can be added (others
    /// are ignored).
    #[must_use]
    pub fn retry_status(mut self, status: StatusCode) -> Self {
        if let Some((word, bit)) = Self::slot(status) {
            self.statuses[word] |= 1 << bit;
        }
        self
    }

    /// Use the backoff's delay even when a response says `Retry-After`.
    #[must_use]
    pub fn ignore_retry_after(mut self) -> Self {
        self.honour_retry_after = false;
        self
    }

    /// Whether responses with `status` are retried.
    pub fn retries(&self, status: StatusCode) -> bool {
        Self::slot(status).is_some_and(|(word, bit)| self.statuses[word] & (1 << bit) != 0)
    }

    fn slot(status: StatusCode) -> Option<(usize, u32)> {
        let i = status.as_u16().checked_sub(400)?;
        (i < 256).then_some((usize::from(i / 64), u32::from(i % 64)))
    }
}

impl Default for HttpClassifier {
    fn default() -> Self {
        HttpClassifier::new()
    }
}

impl fmt::Debug for HttpClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses: Vec<u16> = (400..656)
            .filter(|s| StatusCode::from_u16(*s).is_ok_and(|s| self.retries(s)))
            .collect();
        f.debug_struct("HttpClassifier")
            .field("statuses", &statuses)
            .field("honour_retry_after", &self.honour_retry_after)
            .finish()
    }
}

impl<B, E> Classify<Response<B>, E> for HttpClassifier {
    fn classify(&self, outcome: &Result<Response<B>, E>) -> Decision {
        match outcome {
            Err(_) => Decision::Retry,
            Ok(response) if self.retries(response.status()) => {
                match self
                    .honour_retry_after
                    .then(|| retry_after(response.headers()))
                    .flatten()
                {
                    Some(after) => Decision::RetryAfter(after),
                    None => Decision::Retry,
                }
            }
            Ok(_) => Decision::Done,
        }
    }
}

/// A body that can't be sent again: it outgrew its replay buffer, or the original body
/// failed, before this copy read its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayError {
    limit: usize,
    overflowed: bool,
}

impl ReplayError {
    /// The replay buffer's size, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.overflowed {
            write!(
                f,
                "request body is larger than its replay buffer ({} bytes) and can't be sent again",
                self.limit
            )
        } else {
            f.write_str("request body failed while being read and can't be sent again")
        }
    }
}

impl std::error::Error for ReplayError {}

struct Shared<B> {
    body: Pin<Box<B>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    // Data frames read from the body so far.
    pulled: usize,
    overflowed: bool,
    failed: bool,
    finished: bool,
    trailers: Option<HeaderMap>,
    initial_hint: SizeHint,
    waiters: Vec<Waker>,
}

impl<B> Shared<B> {
    fn wake_all(&mut self) {
        for waker in self.waiters.drain(..) {
            waker.wake();
        }
    }
}

/// A request body that can be replayed from a buffer of at most `limit` bytes; see the
/// [module docs](self).
///
/// ```
/// use meshwork_retry::http::ReplayBody;
///
/// let body = ReplayBody::new(String::from("hello"), 1024);
/// let copy = body.try_clone().expect("nothing read yet, nothing lost");
/// # let _ = copy;
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    // Index of the next data frame this copy sends.
    pos: usize,
    trailers_sent: bool,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes for replays.
    pub fn new(body: B, limit: usize) -> Self {
        let initial_hint = body.size_hint();
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                body: Box::pin(body),
                chunks: Vec::new(),
                buffered: 0,
                limit,
                pulled: 0,
                overflowed: false,
                failed: false,
                finished: false,
                trailers: None,
                initial_hint,
                waiters: Vec::new(),
            })),
            pos: 0,
            trailers_sent: false,
        }
    }
}

impl<B> ReplayBody<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<B>> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy that sends the whole body from the start, unless the body has outgrown its
    /// buffer or failed.
    pub fn try_clone(&self) -> Option<Self> {
        let shared = self.lock();
        (!shared.overflowed && !shared.failed).then(|| ReplayBody {
            shared: Arc::clone(&self.shared),
            pos: 0,
            trailers_sent: false,
        })
    }

    /// Whether copies can still be made.
    pub fn is_replayable(&self) -> bool {
        let shared = self.lock();
        !shared.overflowed && !shared.failed
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock().unwrap_or_else(|p| p.into_inner());
        let shared = &mut *guard;
        loop {
            if this.pos < shared.pulled {
                // Behind the reader that leads: replay from the buffer.
                let Some(chunk) = shared.chunks.get(this.pos).cloned() else {
                    let err = ReplayError {
                        limit: shared.limit,
                        overflowed: shared.overflowed,
                    };
                    return Poll::Ready(Some(Err(err.into())));
                };
                this.pos += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if shared.failed {
                let err = ReplayError {
                    limit: shared.limit,
                    overflowed: false,
                };
                return Poll::Ready(Some(Err(err.into())));
            }
            if shared.finished {
                if !this.trailers_sent {
                    this.trailers_sent = true;
                    if let Some(trailers) = shared.trailers.clone() {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                }
                return Poll::Ready(None);
            }
            // Leading: read the original body.
            let frame = match shared.body.as_mut().poll_frame(cx) {
                Poll::Pending => {
                    if !shared.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                        shared.waiters.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => {
                    shared.finished = true;
                    shared.wake_all();
                    continue;
                }
                Poll::Ready(Some(Err(e))) => {
                    shared.failed = true;
                    shared.wake_all();
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            shared.wake_all();
            match frame.into_data() {
                Ok(mut data) => {
                    let bytes = data.copy_to_bytes(data.remaining());
                    shared.pulled += 1;
                    this.pos += 1;
                    if !shared.overflowed {
                        if shared.buffered.saturating_add(bytes.len()) > shared.limit {
                            shared.overflowed = true;
                            shared.chunks = Vec::new();
                        } else {
                            shared.buffered += bytes.len();
                            shared.chunks.push(bytes.clone());
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        shared.trailers = Some(trailers.clone());
                        this.trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                    }
                    // A frame kind this crate doesn't know: skip it.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.lock();
        if self.pos < shared.pulled || shared.failed {
            return false;
        }
        let trailers_pending = !self.trailers_sent && shared.trailers.is_some();
        if shared.finished {
            return !trailers_pending;
        }
        !trailers_pending && shared.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.lock();
        if shared.finished && !shared.overflowed {
            let rest: usize = shared.chunks.iter().skip(self.pos).map(Bytes::len).sum();
            return SizeHint::with_exact(rest as u64);
        }
        if self.pos == 0 {
            // A copy that has sent nothing sends the whole body, whoever has read it: keep
            // the original's hint, so a retry is framed like the first attempt (a known
            // length doesn't turn into chunked encoding).
            return shared.initial_hint;
        }
        SizeHint::default()
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.lock();
        f.debug_struct("ReplayBody")
            .field("limit", &shared.limit)
            .field("buffered", &shared.buffered)
            .field("replayable", &(!shared.overflowed && !shared.failed))
            .field("pos", &self.pos)
            .finish()
    }
}

/// Gets an HTTP request with a [`ReplayBody`] again for a retry: same method, URI, version,
/// headers and extensions, and a copy of the body; `None` once the body can't be replayed.
///
/// ```
/// use meshwork_retry::http::{ReplayBody, ReplayRequest};
/// use meshwork_retry::{CloneRequest, Retry, RetryLayer};
///
/// // Any streaming body: a copy replays what the first attempt read, up to 64 KiB.
/// let request = http::Request::post("http://orders/")
///     .body(ReplayBody::new(String::from("{\"qty\":1}"), 64 * 1024))
///     .unwrap();
/// let copy = ReplayRequest.clone_request(&request).expect("nothing read yet");
/// assert_eq!(copy.method(), http::Method::POST);
///
/// // With the tower layer:
/// let layer = RetryLayer::for_http(Retry::with_defaults("orders")).clone_requests_with(ReplayRequest);
/// # let _ = layer;
/// ```
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayRequest;

#[cfg(feature = "tower")]
impl<B> crate::CloneRequest<http::Request<ReplayBody<B>>> for ReplayRequest {
    fn clone_request(
        &self,
        request: &http::Request<ReplayBody<B>>,
    ) -> Option<http::Request<ReplayBody<B>>> {
        let body = request.body().try_clone()?;
        let mut copy = http::Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A body that yields the given chunks then the given trailers, one per poll.
    struct Chunks {
        chunks: VecDeque<&'static str>,
        trailers: Option<HeaderMap>,
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if let Some(c) = self.chunks.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(c.as_bytes())))));
            }
            Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    fn chunks(parts: &[&'static str], trailers: bool) -> Chunks {
        let mut t = HeaderMap::new();
        t.insert("x-sum", HeaderValue::from_static("7"));
        Chunks {
            chunks: parts.iter().copied().collect(),
            trailers: trailers.then_some(t),
        }
    }

    fn read_all<B: Body<Data = Bytes> + Unpin>(body: &mut B) -> (Result<String, String>, bool)
    where
        B::Error: fmt::Display,
    {
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut out = String::new();
        let mut trailers = false;
        loop {
            match Pin::new(&mut *body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => out.push_str(std::str::from_utf8(&d).unwrap()),
                    Err(f) => trailers = f.is_trailers(),
                },
                Poll::Ready(Some(Err(e))) => return (Err(e.to_string()), trailers),
                Poll::Ready(None) => return (Ok(out), trailers),
                Poll::Pending => panic!("test bodies are always ready"),
            }
        }
    }

    #[test]
    fn copies_replay_everything_including_trailers() {
        let mut body = ReplayBody::new(chunks(&["ab", "cd", "e"], true), 16);
        let mut copy = body.try_clone().unwrap();
        assert_eq!(read_all(&mut body), (Ok("abcde".into()), true));
        assert!(body.is_end_stream());
        assert_eq!(copy.size_hint().exact(), Some(5));
        assert_eq!(read_all(&mut copy), (Ok("abcde".into()), true));
        let mut late = body.try_clone().unwrap();
        assert_eq!(read_all(&mut late), (Ok("abcde".into()), true));
    }

    #[test]
    fn a_fresh_copy_keeps_the_original_size_hint_while_the_body_is_read() {
        let mut body = ReplayBody::new(String::from("hello"), 16);
        let copy = body.try_clone().unwrap();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        // The first attempt has read the data but not seen the end yet.
        assert_eq!(copy.size_hint().exact(), Some(5));
    }

    #[test]
    fn a_copy_continues_where_a_dropped_reader_stopped() {
        let mut body = ReplayBody::new(chunks(&["ab", "cd", "ef"], false), 16);
        let mut copy = body.try_clone().unwrap();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        drop(body);
        assert_eq!(read_all(&mut copy), (Ok("abcdef".into()), false));
    }

    #[test]
    fn overflow_stops_replays_and_never_sends_a_truncated_body() {
        let mut body = ReplayBody::new(chunks(&["abcd", "efgh", "ij"], false), 6);
        let mut early_copy = body.try_clone().unwrap();
        assert_eq!(read_all(&mut body), (Ok("abcdefghij".into()), false));
        assert!(!body.is_replayable());
        assert!(body.try_clone().is_none());
        let (result, _) = read_all(&mut early_copy);
        assert!(
            result
                .unwrap_err()
                .contains("larger than its replay buffer (6 bytes)")
        );
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(&v(" 5 "), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after(&v("Wed, 21 Oct 2015 07:27:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(
            parse_retry_after(&v("Wednesday, 21-Oct-15 07:29:00 GMT"), now),
            Some(Duration::from_secs(60)),
            "obsolete RFC 850 dates are accepted too"
        );
        assert_eq!(parse_retry_after(&v("-1"), now), None);
        assert_eq!(parse_retry_after(&v("+1"), now), None, "only digits");
        assert_eq!(parse_retry_after(&v("1.5"), now), None);
        assert_eq!(parse_retry_after(&v(""), now), None);
        assert_eq!(
            parse_retry_after(&v("18446744073709551616"), now),
            Some(Duration::MAX),
            "past u64::MAX seconds: as long as can be, capped later"
        );
    }

    #[test]
    fn classifier_statuses() {
        let c = HttpClassifier::new().retry_status(StatusCode::BAD_GATEWAY);
        assert!(c.retries(StatusCode::TOO_MANY_REQUESTS));
        assert!(c.retries(StatusCode::SERVICE_UNAVAILABLE));
        assert!(c.retries(StatusCode::BAD_GATEWAY));
        assert!(!c.retries(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!c.retries(StatusCode::OK));
        let c = c.retry_status(StatusCode::OK);
        assert!(!c.retries(StatusCode::OK), "2xx can't be made retryable");
        let busy = Response::builder()
            .status(429)
            .header(RETRY_AFTER, "3")
            .body(())
            .unwrap();
        assert_eq!(
            c.ignore_retry_after().classify(&Ok::<_, ()>(busy)),
            Decision::Retry
        );
        assert_eq!(
            HttpClassifier::new().classify(&Err::<Response<()>, _>(())),
            Decision::Retry
        );
        assert!(format!("{c:?}").contains("[429, 502, 503]"));
    }
}
