//! The hedge delay of one policy: fixed, or a percentile of recent call latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, TryLockError};
use std::time::Duration;

use crate::config::{HedgeDelay, MAX_HEDGE_WINDOW};

/// A policy's hedge delay, built once from its [`HedgeDelay`].
#[derive(Debug)]
pub(crate) enum HedgeTimer {
    Fixed(Duration),
    Observed(LatencyWindow),
}

impl HedgeTimer {
    pub(crate) fn new(delay: HedgeDelay) -> Self {
        match delay {
            HedgeDelay::Fixed(d) => HedgeTimer::Fixed(d),
            HedgeDelay::Percentile {
                p,
                min,
                max,
                window,
            } => HedgeTimer::Observed(LatencyWindow::new(p, min, max, window)),
        }
    }

    /// The delay before the next hedged attempt of a call starting now.
    pub(crate) fn delay(&self) -> Duration {
        match self {
            HedgeTimer::Fixed(d) => *d,
            HedgeTimer::Observed(w) => w.delay(),
        }
    }

    /// The latencies to record successes in, if the delay follows them.
    pub(crate) fn window(&self) -> Option<&LatencyWindow> {
        match self {
            HedgeTimer::Fixed(_) => None,
            HedgeTimer::Observed(w) => Some(w),
        }
    }
}

/// A fixed-size ring of recent latencies and the clamped percentile of the full ring.
#[derive(Debug)]
pub(crate) struct LatencyWindow {
    p: f64,
    min: Duration,
    max: Duration,
    /// The current delay in nanoseconds, read without a lock by every hedged call.
    delay_nanos: AtomicU64,
    ring: Mutex<Ring>,
}

#[derive(Debug)]
struct Ring {
    /// Latencies in nanoseconds; the oldest is overwritten first.
    samples: Box<[u64]>,
    /// Where the percentile is selected, so `samples` keeps its order.
    scratch: Box<[u64]>,
    len: usize,
    next: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl LatencyWindow {
    /// Out-of-range values (from an unvalidated config) are clamped, not rejected.
    fn new(p: f64, min: Duration, max: Duration, window: usize) -> Self {
        let p = if p.is_finite() { p.min(100.0) } else { 100.0 };
        let max = max.max(min);
        let window = window.clamp(1, MAX_HEDGE_WINDOW);
        LatencyWindow {
            p,
            min,
            max,
            delay_nanos: AtomicU64::new(nanos(max)),
            ring: Mutex::new(Ring {
                samples: vec![0; window].into_boxed_slice(),
                scratch: vec![0; window].into_boxed_slice(),
                len: 0,
                next: 0,
            }),
        }
    }

    /// `max` until the window is full, then the clamped percentile of its latencies.
    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::Relaxed))
    }

    /// Adds one latency and updates the delay, unless another thread is adding one right
    /// now: then this sample is dropped (a percentile over a sample of calls is still the
    /// percentile), and no call ever waits here.
    pub(crate) fn record(&self, latency: Duration) {
        let mut ring = match self.ring.try_lock() {
            Ok(ring) => ring,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let Ring {
            samples,
            scratch,
            len,
            next,
        } = &mut *ring;
        let cap = samples.len();
        samples[*next] = nanos(latency);
        *next = (*next + 1) % cap;
        *len = (*len + 1).min(cap);
        if *len < cap {
            return;
        }
        // Nearest rank: the smallest latency with at least `p`% of the samples at or below.
        let rank = (self.p * cap as f64 / 100.0).ceil() as usize;
        let i = rank.clamp(1, cap) - 1;
        scratch.copy_from_slice(samples);
        let (_, at, _) = scratch.select_nth_unstable(i);
        let delay = (*at).max(nanos(self.min)).min(nanos(self.max));
        self.delay_nanos.store(delay, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn window(p: f64, min: u64, max: u64, size: usize) -> LatencyWindow {
        LatencyWindow::new(p, ms(min), ms(max), size)
    }

    #[test]
    fn max_until_the_window_is_full_then_the_nearest_rank() {
        let w = window(95.0, 1, 1000, 20);
        for n in (1..=20).rev() {
            assert_eq!(w.delay(), ms(1000), "{n} samples to go");
            w.record(ms(n));
        }
        assert_eq!(w.delay(), ms(19), "the 19th of 20");
        // The oldest sample (20 ms) goes first.
        w.record(ms(1));
        assert_eq!(w.delay(), ms(18));
        let median = window(50.0, 0, 1000, 4);
        for n in [40, 10, 30, 20] {
            median.record(ms(n));
        }
        assert_eq!(median.delay(), ms(20));
        let top = window(100.0, 0, 1000, 3);
        for n in [5, 700, 6] {
            top.record(ms(n));
        }
        assert_eq!(top.delay(), ms(700));
    }

    #[test]
    fn the_percentile_is_kept_within_bounds() {
        let low = window(90.0, 10, 100, 2);
        low.record(ms(1));
        low.record(ms(2));
        assert_eq!(low.delay(), ms(10));
        let high = window(90.0, 10, 100, 2);
        high.record(Duration::MAX);
        high.record(ms(500));
        assert_eq!(high.delay(), ms(100));
    }

    #[test]
    fn unvalidated_values_are_clamped_instead_of_panicking() {
        for (p, min, max, size) in [
            (f64::NAN, 5, 1, 0),
            (-3.0, 0, 0, usize::MAX),
            (250.0, 1, 2, 1),
        ] {
            let w = window(p, min, max, size);
            for n in 0..3 {
                w.record(ms(n));
            }
            assert!(w.delay() >= ms(min) && w.delay() <= ms(max.max(min)));
        }
        assert_eq!(
            HedgeTimer::new(HedgeDelay::Fixed(Duration::MAX)).delay(),
            Duration::MAX
        );
        let huge = window(50.0, 0, u64::MAX, 1);
        assert_eq!(huge.delay(), Duration::from_nanos(u64::MAX), "saturated");
    }
}
