//! The success path allocates nothing: the direct call and the tower adapter, polled once.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use meshwork_retry::{Retry, RetryConfig};

/// Polls `future` once on this thread; it must be ready.
fn poll_once<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the success path must not wait"),
    }
}

#[test]
fn a_successful_call_allocates_nothing() {
    let retry = Retry::new("alloc", RetryConfig::default());
    let info = allocation_counter::measure(|| {
        for i in 0..1000u64 {
            let out = poll_once(retry.call(|| async move { Ok::<_, std::io::Error>(i) }));
            assert_eq!(out.unwrap(), i);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn the_counter_sees_allocations() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1u8));
    });
    assert_eq!(info.count_total, 1);
}

#[cfg(feature = "tower")]
#[test]
fn a_successful_call_through_the_layer_allocates_nothing() {
    use tower::{Layer, Service, service_fn};

    let retry = Retry::new("alloc", RetryConfig::default());
    let mut service =
        meshwork_retry::RetryLayer::new(retry).layer(service_fn(|x: u64| async move {
            Ok::<_, std::io::Error>(x)
        }));
    let info = allocation_counter::measure(|| {
        for i in 0..1000u64 {
            let mut cx = Context::from_waker(Waker::noop());
            assert!(service.poll_ready(&mut cx).is_ready());
            assert_eq!(poll_once(service.call(i)).unwrap(), i);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}
