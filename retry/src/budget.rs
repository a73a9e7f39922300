//! The retry budget.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::BudgetConfig;

/// One retry, in millionths.
const UNIT: u128 = 1_000_000;
/// Slots per TTL.
const SLOTS: u32 = 10;

/// A retry budget shared by every call of one [`Retry`](crate::Retry): Finagle's percentage
/// of recent calls plus a per-second minimum, and Envoy's cap on concurrent retries.
///
/// # Why a budget and not only a maximum number of attempts
/// With three attempts per call, an upstream that starts failing receives three times its
/// normal load just when it can least take it, and every layer of retries multiplies that
/// again: retry storms. A budget ties retries to the traffic that really arrives: at most
/// `percent` of the calls of the last `ttl` may be retried (20% adds at most 20% load), plus a
/// small reserve (`min_per_second * ttl`) so that a quiet service still retries its rare
/// failures.
///
/// # Exact fractions
/// tower's `TpsBudget` turns a percentage into "one retry per `(1 / p) as isize` calls",
/// which rounds the divisor down: at 30% it allows one retry per 3 calls (33%), at 15% one per
/// 6 (16.7%). Here each call deposits `floor(p * 1_000_000)` millionths of a retry and a retry
/// withdraws a whole `1_000_000`, so the budget never issues more than the percentage asked.
///
/// # Cost
/// A call deposits with a relaxed load and store (no lock-prefixed instruction, cheaper than
/// one `fetch_add`) on a counter striped per thread: no clock read, no lock. Two threads that
/// share a stripe may, rarely, lose a count; that only makes the budget stricter. The
/// clock is read and the window rotated only when a retry asks to withdraw. The window keeps
/// snapshots of the counter at the start of each slot (`ttl / 10`) and only counts the calls
/// made since a snapshot it knows to lie inside the TTL, so after a long retry-free spell the
/// first retries rely on the reserve until a slot has passed: it errs towards fewer retries.
///
/// # Example
/// ```
/// use meshwork_retry::{BudgetConfig, RetryBudget};
/// use std::time::Duration;
///
/// // 10% of calls, no reserve.
/// let budget = RetryBudget::new(BudgetConfig::new(10.0, 0, Duration::from_secs(10)));
/// for _ in 0..20 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw(), "20 calls buy 2 retries at 10%");
/// ```
pub struct RetryBudget {
    deposits: Stripes,
    concurrent: AtomicU32,
    per_call: u128,
    reserve: u128,
    ttl: Duration,
    slot: Duration,
    config: BudgetConfig,
    window: Mutex<VecDeque<Slot>>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    start: Instant,
    deposits_at_start: u64,
    withdrawals: u64,
}

impl RetryBudget {
    /// A budget with this configuration (out-of-range values are clamped, not rejected: use
    /// [`BudgetConfig::validate`] to check).
    pub fn new(config: BudgetConfig) -> Self {
        let percent = if config.percent.is_finite() {
            config.percent.clamp(0.0, crate::config::MAX_BUDGET_PERCENT)
        } else {
            0.0
        };
        // Millionths of a retry per call: a decimal percentage like 33.3 is taken exactly,
        // anything finer is rounded down, so the budget never issues more than asked.
        let ppm = percent * 10_000.0;
        let per_call = if (ppm - ppm.round()).abs() < 1e-6 {
            ppm.round()
        } else {
            ppm.floor()
        } as u128;
        // Clamped like the percentage: a TTL past `MAX_BUDGET_TTL` would overflow `Instant`
        // arithmetic, one under `SLOTS` ms would make zero-length slots.
        let ttl = config.ttl.clamp(
            Duration::from_millis(SLOTS.into()),
            crate::config::MAX_BUDGET_TTL,
        );
        let reserve =
            (f64::from(config.min_per_second) * ttl.as_secs_f64() * UNIT as f64).floor() as u128;
        // The first slot opens now, so the calls made before the first retry count.
        let mut window = VecDeque::with_capacity(SLOTS as usize + 2);
        window.push_back(Slot {
            start: Instant::now(),
            deposits_at_start: 0,
            withdrawals: 0,
        });
        RetryBudget {
            deposits: Stripes::default(),
            concurrent: AtomicU32::new(0),
            per_call,
            reserve,
            ttl,
            slot: ttl / SLOTS,
            config,
            window: Mutex::new(window),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BudgetConfig {
        &self.config
    }

    /// Records one call (a relaxed load and store on this thread's stripe of the counter).
    #[inline]
    pub fn deposit(&self) {
        self.deposits.add_one();
    }

    /// Takes one retry from the budget, if it has one.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_at(Instant::now())
    }

    /// Retries the budget would grant right now.
    pub fn available(&self) -> u64 {
        self.available_at(Instant::now())
    }

    /// Call sequences currently retrying (counted against `max_concurrent_retries`).
    pub fn concurrent_retries(&self) -> u32 {
        self.concurrent.load(Ordering::Relaxed)
    }

    pub(crate) fn try_withdraw_at(&self, now: Instant) -> bool {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (issued, spent) = self.rotate(&mut window, now);
        if (spent + 1) * UNIT <= issued {
            if let Some(back) = window.back_mut() {
                back.withdrawals += 1;
            }
            true
        } else {
            false
        }
    }

    pub(crate) fn available_at(&self, now: Instant) -> u64 {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let (issued, spent) = self.rotate(&mut window, now);
        u64::try_from((issued / UNIT).saturating_sub(spent)).unwrap_or(u64::MAX)
    }

    /// Rotates the window to `now`; returns the millionths issued and the retries spent in it.
    fn rotate(&self, window: &mut VecDeque<Slot>, now: Instant) -> (u128, u128) {
        // Threads read the clock before taking the lock, so `now` may lie a little before the
        // newest slot: count it in that slot, which keeps the slots in time order.
        let now = window.back().map_or(now, |s| now.max(s.start));
        let total = self.deposits.sum();
        let needs_slot = window.back().is_none_or(|s| now >= s.start + self.slot);
        if needs_slot {
            window.push_back(Slot {
                start: now,
                deposits_at_start: total,
                withdrawals: 0,
            });
        }
        let cutoff = now.checked_sub(self.ttl);
        if let Some(cutoff) = cutoff {
            // Drop slots that ended before the window began (a slot's retries were all
            // granted within `[start, start + slot)`).
            while window.len() > 1
                && window
                    .front()
                    .is_some_and(|s| s.start + self.slot <= cutoff)
            {
                window.pop_front();
            }
        }
        // Only calls made after a snapshot known to lie inside the window count.
        let counted_from = window
            .iter()
            .find(|s| cutoff.is_none_or(|c| s.start >= c))
            .map_or(total, |s| s.deposits_at_start);
        let calls = u128::from(total.saturating_sub(counted_from));
        let spent: u128 = window.iter().map(|s| u128::from(s.withdrawals)).sum();
        (calls * self.per_call + self.reserve, spent)
    }

    pub(crate) fn try_acquire_concurrency(self: &Arc<Self>) -> Option<ConcurrencySlot> {
        let max = self.config.max_concurrent_retries.max(1);
        self.concurrent
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |c| {
                (c < max).then_some(c + 1)
            })
            .ok()
            .map(|_| ConcurrencySlot {
                budget: Arc::clone(self),
            })
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config)
            .field("calls", &self.deposits.sum())
            .field("concurrent_retries", &self.concurrent_retries())
            .finish()
    }
}

/// Stripes of the call counter; each thread writes its own (most of the time).
const STRIPES: usize = 8;

#[derive(Default)]
struct Stripes([Padded; STRIPES]);

/// One counter on its own cache line(s), so threads don't fight over lines.
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

thread_local! {
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

impl Stripes {
    #[inline]
    fn add_one(&self) {
        let i = STRIPE.try_with(|s| *s).unwrap_or(0);
        let counter = &self.0[i % STRIPES].0;
        // A load and a store, not a read-modify-write: a lost count only makes the budget
        // stricter, and this is the per-call cost.
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }

    fn sum(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, c| sum.wrapping_add(c.0.load(Ordering::Relaxed)))
    }
}

/// One call sequence's place among the concurrent retries; given back on drop.
#[derive(Debug)]
pub(crate) struct ConcurrencySlot {
    budget: Arc<RetryBudget>,
}

impl Drop for ConcurrencySlot {
    fn drop(&mut self) {
        self.budget.concurrent.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn budget(percent: f64, min: u32, ttl_s: u64) -> RetryBudget {
        RetryBudget::new(BudgetConfig::new(percent, min, Duration::from_secs(ttl_s)))
    }

    fn grants(b: &RetryBudget, now: Instant) -> u32 {
        let mut n = 0;
        while b.try_withdraw_at(now) {
            n += 1;
        }
        n
    }

    #[test]
    fn fractional_percentages_are_exact() {
        // tower's TpsBudget allows 1 retry per 3 calls at 30% (33 of 100).
        for (percent, calls, expected) in [
            (30.0, 100, 30),
            (15.0, 100, 15),
            (12.5, 80, 10),
            (33.3, 1000, 333),
            (0.1, 10_000, 10),
            (150.0, 10, 15),
            (0.0, 1000, 0),
        ] {
            let b = budget(percent, 0, 10);
            let now = Instant::now();
            b.try_withdraw_at(now); // open the window before the calls
            for _ in 0..calls {
                b.deposit();
            }
            let got = grants(&b, now);
            assert_eq!(got, expected, "{percent}% of {calls}");
        }
    }

    #[test]
    fn reserve_is_min_per_second_times_ttl() {
        let b = budget(0.0, 3, 2);
        assert_eq!(grants(&b, Instant::now()), 6);
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn deposits_and_withdrawals_expire_after_ttl() {
        let b = budget(50.0, 0, 10);
        let t0 = Instant::now();
        assert!(!b.try_withdraw_at(t0));
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(b.available_at(t0 + Duration::from_secs(1)), 5);
        assert_eq!(grants(&b, t0 + Duration::from_secs(2)), 5);
        // 9 s later the calls still count, and so do the retries.
        assert_eq!(b.available_at(t0 + Duration::from_secs(9)), 0);
        // After the TTL both are gone.
        assert_eq!(b.available_at(t0 + Duration::from_secs(12)), 0);
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(b.available_at(t0 + Duration::from_secs(13)), 2);
    }

    #[test]
    fn a_clock_read_before_the_newest_slot_keeps_the_slots_in_order() {
        let b = budget(100.0, 0, 10);
        let t1 = Instant::now() + Duration::from_secs(5);
        b.try_withdraw_at(t1);
        // A thread that read the clock just before another opened the slot at `t1`.
        b.try_withdraw_at(t1 - Duration::from_millis(1));
        let window = b.window.lock().unwrap();
        let starts: Vec<Instant> = window.iter().map(|s| s.start).collect();
        assert!(starts.is_sorted(), "{starts:?}");
    }

    #[test]
    fn an_unvalidated_ttl_is_clamped_instead_of_overflowing() {
        let b = RetryBudget::new(BudgetConfig::new(0.0, 1, Duration::MAX));
        let now = Instant::now() + Duration::from_secs(1);
        assert_eq!(b.available_at(now), 60, "the reserve of a 60 s TTL");
        assert!(b.try_withdraw_at(now));
    }

    #[test]
    fn deposits_from_many_threads_are_counted() {
        let b = budget(100.0, 0, 10);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..10_000 {
                        b.deposit();
                    }
                });
            }
        });
        let counted = b.deposits.sum();
        // A stripe shared by two threads may lose a count now and then, never gain one.
        assert!((36_000..=40_000).contains(&counted), "{counted}");
    }

    #[test]
    fn concurrency_slots_are_capped_and_given_back() {
        let b = Arc::new(RetryBudget::new(
            BudgetConfig::default().with_max_concurrent_retries(2),
        ));
        let one = b.try_acquire_concurrency().unwrap();
        let two = b.try_acquire_concurrency().unwrap();
        assert!(b.try_acquire_concurrency().is_none());
        assert_eq!(b.concurrent_retries(), 2);
        drop(one);
        assert!(b.try_acquire_concurrency().is_some());
        drop(two);
        assert_eq!(b.concurrent_retries(), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Calls(u16),
        Retries(u8),
        Advance(u16), // milliseconds
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u16..200).prop_map(Op::Calls),
            (0u8..50).prop_map(Op::Retries),
            (0u16..3000).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// In every window of one TTL ending at a granted retry, the retries granted never
        /// exceed `percent` of the calls made in that window plus the reserve.
        #[test]
        fn never_over_issues(
            percent in 0.0f64..200.0,
            min in 0u32..5,
            ops in proptest::collection::vec(op(), 1..80),
        ) {
            let ttl = Duration::from_secs(2);
            let b = RetryBudget::new(BudgetConfig::new(percent, min, ttl));
            let t0 = Instant::now();
            let mut now = t0;
            let mut calls: Vec<Instant> = Vec::new();
            let mut granted: Vec<Instant> = Vec::new();
            for op in ops {
                match op {
                    Op::Calls(n) => for _ in 0..n { b.deposit(); calls.push(now); },
                    Op::Advance(ms) => now += Duration::from_millis(ms.into()),
                    Op::Retries(n) => for _ in 0..n {
                        if b.try_withdraw_at(now) {
                            granted.push(now);
                            let from = now.checked_sub(ttl).unwrap_or(t0);
                            let in_window = |t: &&Instant| **t >= from;
                            let c = calls.iter().filter(in_window).count() as f64;
                            let r = granted.iter().filter(in_window).count() as f64;
                            let allowed = c * percent / 100.0 + f64::from(min) * 2.0;
                            prop_assert!(r <= allowed + 1e-9, "{r} retries > {allowed}");
                        }
                    },
                }
            }
        }
    }
}
