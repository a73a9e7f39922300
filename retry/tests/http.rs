//! HTTP through the tower adapter: Retry-After honoured and capped, 429/503 retried, bodies
//! replayed from a bounded buffer or not retried at all.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use meshwork_retry::http::{ReplayBody, ReplayRequest};
use meshwork_retry::{Event, GiveUpReason, Jitter, Retry, RetryConfig, RetryLayer};
use tokio::time::Instant;
use tower::{BoxError, Layer, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn policy() -> Retry {
    let mut config = RetryConfig::for_http();
    config.jitter = Jitter::None;
    Retry::new("api", config)
}

fn response(status: u16, retry_after: Option<String>, body: &str) -> Response<String> {
    let mut builder = Response::builder().status(status);
    if let Some(after) = retry_after {
        builder = builder.header("retry-after", after);
    }
    builder.body(body.to_string()).unwrap()
}

/// Answers the first call with `first`, then 200 with the number of the call.
async fn elapsed_until_success(first: Response<String>) -> (Duration, u32) {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let first = Arc::new(Mutex::new(Some(first)));
    let inner = service_fn(move |_: Request<String>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        let first = first.lock().unwrap().take();
        async move {
            Ok::<_, std::io::Error>(first.unwrap_or_else(|| response(200, None, &n.to_string())))
        }
    });
    let service = RetryLayer::for_http(policy()).layer(inner);
    let start = Instant::now();
    let res = service
        .oneshot(Request::new("q".to_string()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    (start.elapsed(), calls.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_is_honoured() {
    let (elapsed, calls) = elapsed_until_success(response(503, Some("2".into()), "")).await;
    assert_eq!((elapsed, calls), (ms(2_000), 2));
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_capped_at_max_delay() {
    let (elapsed, _) = elapsed_until_success(response(429, Some("3600".into()), "")).await;
    assert_eq!(elapsed, ms(5_000), "for_http caps each delay at 5 s");
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(3));
    let (elapsed, _) = elapsed_until_success(response(503, Some(at), "")).await;
    // HTTP-dates have whole seconds: the wait is between 2 and 3 s.
    assert!(elapsed > ms(2_000) && elapsed <= ms(3_000), "{elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn without_retry_after_the_backoff_applies() {
    let (elapsed, calls) = elapsed_until_success(response(429, None, "")).await;
    assert_eq!((elapsed, calls), (ms(200), 2));
}

#[tokio::test(start_paused = true)]
async fn other_statuses_are_final() {
    let (calls, res) = {
        let calls = Arc::new(AtomicU32::new(0));
        let counter = calls.clone();
        let inner = service_fn(move |_: Request<String>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(response(500, None, "")) }
        });
        let res = RetryLayer::for_http(policy())
            .layer(inner)
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
        (calls, res)
    };
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A streaming body that can't be cloned: one chunk per poll.
struct Stream(VecDeque<&'static str>);

impl Body for Stream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(
            self.0
                .pop_front()
                .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes())))),
        )
    }
}

/// Reads up to `frames` data frames of `body` (all of them with `usize::MAX`).
async fn read<B: Body<Data = Bytes> + Unpin>(
    body: &mut B,
    frames: usize,
) -> Result<String, BoxError>
where
    B::Error: Into<BoxError>,
{
    let mut out = String::new();
    for _ in 0..frames {
        match poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    out.push_str(std::str::from_utf8(&data)?);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(out)
}

fn streaming(limit: usize) -> Request<ReplayBody<Stream>> {
    let body = Stream(["ab", "cd", "ef"].into_iter().collect());
    Request::builder()
        .method("POST")
        .uri("http://upstream/orders")
        .header("content-type", "text/plain")
        .body(ReplayBody::new(body, limit))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_streaming_body_is_replayed_in_full() {
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |req: Request<ReplayBody<Stream>>| {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            assert_eq!(req.method(), "POST");
            assert_eq!(req.headers()["content-type"], "text/plain");
            let mut body = req.into_body();
            if n == 1 {
                // Answers before reading the whole body, as servers under load do.
                let start = read(&mut body, 1).await?;
                assert_eq!(start, "ab");
                return Ok::<_, BoxError>(response(503, None, ""));
            }
            Ok(response(200, None, &read(&mut body, usize::MAX).await?))
        }
    });
    let service = RetryLayer::for_http(policy())
        .clone_requests_with(ReplayRequest)
        .layer(inner);
    let res = service.oneshot(streaming(1024)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.body(),
        "abcdef",
        "the retry sent the whole body, not what was left"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_larger_than_the_buffer_is_not_retried() {
    let retry = policy();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    retry.on_event(move |e| sink.lock().unwrap().push(e.clone()));
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let inner = service_fn(move |req: Request<ReplayBody<Stream>>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut body = req.into_body();
            assert_eq!(read(&mut body, usize::MAX).await?, "abcdef");
            Ok::<_, BoxError>(response(503, None, ""))
        }
    });
    let service = RetryLayer::for_http(retry)
        .clone_requests_with(ReplayRequest)
        .layer(inner);
    let res = service.oneshot(streaming(4)).await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the real response comes back"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "never sent again without its body"
    );
    assert!(matches!(
        events.lock().unwrap().as_slice(),
        [Event::GaveUp {
            reason: GiveUpReason::NotReplayable,
            ..
        }]
    ));
}
