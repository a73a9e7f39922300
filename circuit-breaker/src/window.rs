//! The sliding windows: lock-free, O(1) per call.
//!
//! A recorded call is a small bit set: [`PRESENT`], plus [`FAILED`] and/or [`SLOW`].
//!
//! * [`CountWindow`] keeps the last `size` calls in a ring of bytes. A call claims the next
//!   slot with one `fetch_add`, swaps its bits in, and adjusts the running failure and slow
//!   counts by the difference with what it evicted. Those two counts live in one `AtomicU64`
//!   as two biased 32-bit lanes, so a concurrent decrement that lands before its matching
//!   increment never borrows across lanes. When the ring is full of plain successes, another
//!   success writes nothing at all: the ring would look the same after it.
//! * [`TimeWindow`] keeps one bucket per `duration / buckets`. The first call of a new bucket
//!   period claims the bucket (a short critical section once per period, not per call), resets
//!   it and sums the other live buckets into a cached "prior" total; every other call is one
//!   or two `fetch_add`s on the current bucket plus reads of the prior total.
//! * [`ConsecutiveWindow`] counts failures in a row.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::*};

/// The call happened (distinguishes an empty ring slot from a recorded success).
pub(crate) const PRESENT: u8 = 0b100;
/// The call failed.
pub(crate) const FAILED: u8 = 0b001;
/// The call was slow.
pub(crate) const SLOW: u8 = 0b010;

/// Counts over the window at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// Bias of each 32-bit lane of a packed failure/slow pair.
const BIAS: u64 = 1 << 31;
const BIASED_ZERO: u64 = (BIAS << 32) | BIAS;
const LOW: u64 = 0xFFFF_FFFF;

fn unpack(packed: u64) -> (u64, u64) {
    let f = (packed & LOW).saturating_sub(BIAS);
    let s = (packed >> 32).saturating_sub(BIAS);
    (f, s)
}

/// The packed delta that moves the lanes from `old` bits to `new` bits.
fn delta(old: u8, new: u8) -> u64 {
    let df = i64::from(new & FAILED) - i64::from(old & FAILED);
    let ds = i64::from((new & SLOW) >> 1) - i64::from((old & SLOW) >> 1);
    (df + (ds << 32)) as u64
}

/// Packed delta for adding `bits` to a bucket (no eviction).
fn add(bits: u8) -> u64 {
    delta(0, bits)
}

/// The last `size` calls.
#[derive(Debug)]
pub(crate) struct CountWindow {
    size: u64,
    seq: AtomicU64,
    counts: AtomicU64,
    slots: Box<[AtomicU8]>,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        CountWindow {
            size: u64::from(size),
            seq: AtomicU64::new(0),
            counts: AtomicU64::new(BIASED_ZERO),
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, bits: u8) -> Counts {
        if bits == PRESENT
            && self.counts.load(Relaxed) == BIASED_ZERO
            && self.seq.load(Relaxed) >= self.size
        {
            // A full ring of plain successes: one more success changes nothing observable
            // (every slot it could evict holds the same thing), so it writes nothing. This
            // keeps the healthy path free of shared writes, and so of cache-line ping-pong
            // between cores.
            return Counts {
                calls: self.size,
                failures: 0,
                slow: 0,
            };
        }
        let n = self.seq.fetch_add(1, Relaxed);
        // `n % size` is in range: size >= 1 and fits the slice length.
        let slot = &self.slots[(n % self.size) as usize];
        let old = if slot.load(Relaxed) == bits {
            bits
        } else {
            slot.swap(bits, Relaxed)
        };
        let packed = if old == bits {
            self.counts.load(Relaxed)
        } else {
            let d = delta(old, bits);
            self.counts.fetch_add(d, Relaxed).wrapping_add(d)
        };
        let (failures, slow) = unpack(packed);
        Counts {
            calls: (n + 1).min(self.size),
            failures,
            slow,
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let (failures, slow) = unpack(self.counts.load(Relaxed));
        Counts {
            calls: self.seq.load(Relaxed).min(self.size),
            failures,
            slow,
        }
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            slot.store(0, Relaxed);
        }
        self.counts.store(BIASED_ZERO, Relaxed);
        self.seq.store(0, Relaxed);
    }
}

/// Marks a bucket that one thread is resetting.
const CLAIMED: u64 = u64::MAX;

#[derive(Debug)]
struct Bucket {
    /// The bucket period this bucket currently counts (`u64::MAX - 1` = never used).
    period: AtomicU64,
    calls: AtomicU64,
    outcomes: AtomicU64,
}

const UNUSED: u64 = u64::MAX - 1;

/// The calls of the last `buckets * bucket_nanos` nanoseconds.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    bucket_nanos: u64,
    buckets: Box<[Bucket]>,
    /// Totals of the live buckets other than the current one, summed when the current one
    /// was claimed.
    prior_calls: AtomicU64,
    prior_outcomes: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(duration_nanos: u64, buckets: u32) -> Self {
        TimeWindow {
            bucket_nanos: (duration_nanos / u64::from(buckets)).max(1),
            buckets: (0..buckets)
                .map(|_| Bucket {
                    period: AtomicU64::new(UNUSED),
                    calls: AtomicU64::new(0),
                    outcomes: AtomicU64::new(BIASED_ZERO),
                })
                .collect(),
            prior_calls: AtomicU64::new(0),
            prior_outcomes: AtomicU64::new(BIASED_ZERO),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn bucket(&self, period: u64) -> &Bucket {
        &self.buckets[(period % self.len()) as usize]
    }

    fn is_live(&self, bucket_period: u64, now_period: u64) -> bool {
        bucket_period <= now_period && now_period - bucket_period < self.len()
    }

    /// Sums the live buckets other than `period`'s.
    fn sum_others(&self, period: u64) -> (u64, u64, u64) {
        let (mut calls, mut failures, mut slow) = (0, 0, 0);
        for b in self.buckets.iter() {
            let p = b.period.load(Acquire);
            if p != period && p != CLAIMED && p != UNUSED && self.is_live(p, period) {
                calls += b.calls.load(Relaxed);
                let (f, s) = unpack(b.outcomes.load(Relaxed));
                failures += f;
                slow += s;
            }
        }
        (calls, failures, slow)
    }

    #[inline]
    pub(crate) fn record(&self, now_nanos: u64, bits: u8) -> Counts {
        let period = now_nanos / self.bucket_nanos;
        let bucket = self.bucket(period);
        let mut spins = 0u32;
        loop {
            let p = bucket.period.load(Acquire);
            if p == period {
                break;
            }
            if p == CLAIMED {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            if p != UNUSED && p > period {
                // This call was timed before the bucket moved on a whole window: it belongs
                // to a bucket that has expired, so it no longer counts.
                return self.counts(now_nanos);
            }
            if bucket
                .period
                .compare_exchange(p, CLAIMED, Acquire, Relaxed)
                .is_ok()
            {
                bucket.calls.store(0, Relaxed);
                bucket.outcomes.store(BIASED_ZERO, Relaxed);
                let (calls, failures, slow) = self.sum_others(period);
                self.prior_calls.store(calls, Relaxed);
                self.prior_outcomes
                    .store(BIASED_ZERO.wrapping_add(failures + (slow << 32)), Relaxed);
                bucket.period.store(period, Release);
                break;
            }
        }
        let calls = bucket.calls.fetch_add(1, Relaxed) + 1;
        let packed = if bits & (FAILED | SLOW) != 0 {
            let d = add(bits);
            bucket.outcomes.fetch_add(d, Relaxed).wrapping_add(d)
        } else {
            bucket.outcomes.load(Relaxed)
        };
        let (f, s) = unpack(packed);
        let (pf, ps) = unpack(self.prior_outcomes.load(Relaxed));
        Counts {
            calls: calls + self.prior_calls.load(Relaxed),
            failures: f + pf,
            slow: s + ps,
        }
    }

    pub(crate) fn counts(&self, now_nanos: u64) -> Counts {
        let period = now_nanos / self.bucket_nanos;
        let mut counts = Counts::default();
        for b in self.buckets.iter() {
            let p = b.period.load(Acquire);
            if p != CLAIMED && p != UNUSED && self.is_live(p, period) {
                counts.calls += b.calls.load(Relaxed);
                let (f, s) = unpack(b.outcomes.load(Relaxed));
                counts.failures += f;
                counts.slow += s;
            }
        }
        counts
    }

    pub(crate) fn reset(&self) {
        for b in self.buckets.iter() {
            b.period.store(UNUSED, Relaxed);
            b.calls.store(0, Relaxed);
            b.outcomes.store(BIASED_ZERO, Relaxed);
        }
        self.prior_calls.store(0, Relaxed);
        self.prior_outcomes.store(BIASED_ZERO, Relaxed);
    }
}

/// Failures in a row.
#[derive(Debug, Default)]
pub(crate) struct ConsecutiveWindow {
    failures: AtomicU64,
}

impl ConsecutiveWindow {
    #[inline]
    pub(crate) fn record(&self, bits: u8) -> Counts {
        let failures = if bits & FAILED != 0 {
            self.failures.fetch_add(1, Relaxed) + 1
        } else {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            0
        };
        Counts {
            calls: failures,
            failures,
            slow: 0,
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        let failures = self.failures.load(Relaxed);
        Counts {
            calls: failures,
            failures,
            slow: 0,
        }
    }

    pub(crate) fn reset(&self) {
        self.failures.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    fn bits(failed: bool, slow: bool) -> u8 {
        PRESENT | if failed { FAILED } else { 0 } | if slow { SLOW } else { 0 }
    }

    #[test]
    fn count_window_is_a_true_sliding_window() {
        let w = CountWindow::new(100);
        for _ in 0..10_000 {
            w.record(bits(false, false));
        }
        let mut c = Counts::default();
        for _ in 0..50 {
            c = w.record(bits(true, false));
        }
        assert_eq!(
            c,
            Counts {
                calls: 100,
                failures: 50,
                slow: 0
            }
        );
    }

    #[test]
    fn count_window_reset_forgets_everything() {
        let w = CountWindow::new(3);
        w.record(bits(true, true));
        w.reset();
        assert_eq!(w.counts(), Counts::default());
        assert_eq!(
            w.record(bits(false, false)),
            Counts {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_expires_old_buckets() {
        let w = TimeWindow::new(10_000, 10); // 10 buckets of 1000 ns
        w.record(0, bits(true, false));
        w.record(500, bits(false, true));
        let c = w.record(9_999, bits(false, false));
        assert_eq!(
            c,
            Counts {
                calls: 3,
                failures: 1,
                slow: 1
            }
        );
        // At 10_000 the first bucket (0..1000) has expired.
        let c = w.record(10_000, bits(false, false));
        assert_eq!(
            c,
            Counts {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
        assert_eq!(
            w.counts(10_000),
            Counts {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
        // Long idle: everything expired.
        assert_eq!(w.counts(1_000_000), Counts::default());
        let c = w.record(1_000_000, bits(true, false));
        assert_eq!(
            c,
            Counts {
                calls: 1,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn time_window_drops_calls_older_than_the_window() {
        let w = TimeWindow::new(10_000, 10);
        w.record(20_000, bits(false, false));
        // A call timed at 10 (bucket 0 period 0), but bucket 0 now counts period 20.
        let c = w.record(10, bits(true, false));
        assert_eq!(c.failures, 0);
    }

    #[test]
    fn consecutive_window_resets_on_success() {
        let w = ConsecutiveWindow::default();
        assert_eq!(w.record(bits(true, false)).failures, 1);
        assert_eq!(w.record(bits(true, false)).failures, 2);
        assert_eq!(w.record(bits(false, false)).failures, 0);
        assert_eq!(w.record(bits(true, false)).failures, 1);
    }

    #[test]
    fn count_window_counts_stay_exact_under_threads() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        w.record(bits((i + t) % 3 == 0, i % 5 == 0));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        // Quiescent: the packed counts must equal a recount of the ring.
        let (mut f, mut s) = (0, 0);
        for slot in w.slots.iter() {
            let b = slot.load(Relaxed);
            f += u64::from(b & FAILED);
            s += u64::from((b & SLOW) >> 1);
        }
        let c = w.counts();
        assert_eq!((c.calls, c.failures, c.slow), (64, f, s));
    }

    proptest! {
        #[test]
        fn count_window_matches_naive_model(
            size in 1u32..50,
            calls in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..400),
        ) {
            let w = CountWindow::new(size);
            let mut model: VecDeque<(bool, bool)> = VecDeque::new();
            for (failed, slow) in calls {
                let got = w.record(bits(failed, slow));
                model.push_back((failed, slow));
                if model.len() > size as usize {
                    model.pop_front();
                }
                let want = Counts {
                    calls: model.len() as u64,
                    failures: model.iter().filter(|c| c.0).count() as u64,
                    slow: model.iter().filter(|c| c.1).count() as u64,
                };
                prop_assert_eq!(got, want);
                prop_assert_eq!(w.counts(), want);
            }
        }

        #[test]
        fn time_window_matches_naive_model(
            buckets in 1u32..12,
            steps in proptest::collection::vec((0u64..400, any::<bool>(), any::<bool>()), 0..300),
        ) {
            let bucket_nanos = 100u64;
            let w = TimeWindow::new(bucket_nanos * u64::from(buckets), buckets);
            let mut now = 0u64;
            let mut model: Vec<(u64, bool, bool)> = Vec::new();
            for (dt, failed, slow) in steps {
                now += dt;
                let got = w.record(now, bits(failed, slow));
                model.push((now, failed, slow));
                let period = now / bucket_nanos;
                let live: Vec<_> = model
                    .iter()
                    .filter(|(t, _, _)| period - t / bucket_nanos < u64::from(buckets))
                    .collect();
                let want = Counts {
                    calls: live.len() as u64,
                    failures: live.iter().filter(|c| c.1).count() as u64,
                    slow: live.iter().filter(|c| c.2).count() as u64,
                };
                prop_assert_eq!(got, want);
                prop_assert_eq!(w.counts(now), want);
            }
        }
    }
}
