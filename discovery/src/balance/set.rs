use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::BalanceConfig;
use crate::{Instance, WatchStream};

/// `e^(-x)` for `x >= 0`, to about 2e-4 relative error: the decay weight of the latency
/// estimate. `f64::exp` costs more than the rest of a pick together; an estimate doesn't need
/// its precision.
#[inline]
fn decay(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 1.0;
    }
    if x >= 700.0 {
        return 0.0;
    }
    // e^-x = 2^-y = 2^-i * 2^-f with y = x*log2(e), i = floor(y), f in [0, 1).
    let y = x * std::f64::consts::LOG2_E;
    // y >= 0, so truncation is floor (and avoids a libm call on baseline x86-64).
    let i = y as i64 as f64;
    let t = (y - i) * std::f64::consts::LN_2;
    // e^-t for t in [0, ln 2), Taylor to the fifth order.
    let p = 1.0 - t * (1.0 - t * (0.5 - t * (1.0 / 6.0 - t * (1.0 / 24.0 - t / 120.0))));
    p * f64::from_bits(((1023 - i as i64) as u64) << 52)
}

/// Per-endpoint load statistics, all atomics: recording and picking take no lock.
#[derive(Debug)]
struct Stats {
    in_flight: AtomicU32,
    /// Peak-EWMA latency estimate, as `f64` bits, in nanoseconds.
    ewma: AtomicU64,
    /// When `ewma` was last updated (nanoseconds since the set's epoch).
    stamp: AtomicU64,
    consecutive_failures: AtomicU32,
    /// 0 when not ejected, else the end of the ejection (nanoseconds since the epoch).
    ejected_until: AtomicU64,
    ejections: AtomicU32,
}

impl Stats {
    fn new(default_rtt_ns: f64, now: u64) -> Self {
        Stats {
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(default_rtt_ns.to_bits()),
            stamp: AtomicU64::new(now),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

struct Entry {
    instance: Arc<Instance>,
    stats: Stats,
    /// What recording needs, so a [`Pick`] carries a single `Arc`.
    core: Arc<Core>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("instance", &self.instance.id)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    entries: Vec<Arc<Entry>>,
    /// Cumulative weights, for weighted draws; empty when every weight is equal.
    cumulative: Vec<u64>,
    total_weight: u64,
    instances: Arc<[Instance]>,
}

/// The set's settings and counters: shared by the set and every entry (no snapshot inside,
/// so entries can point at it without a cycle).
struct Core {
    service: Arc<str>,
    config: BalanceConfig,
    epoch: Instant,
    ejected: AtomicUsize,
    len: AtomicUsize,
    decay_ns: f64,
    penalty_ns: f64,
}

struct Shared {
    core: Arc<Core>,
    current: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
}

impl std::ops::Deref for Shared {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Shared {
    fn load(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Core {
    #[inline]
    fn now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_nanos() as u64
    }

    /// Whether entry is ejected now; clears an expired ejection.
    #[inline]
    fn is_ejected(&self, stats: &Stats, now: u64) -> bool {
        let until = stats.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > now {
            return true;
        }
        if stats
            .ejected_until
            .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let _ = self
                .ejected
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |e| e.checked_sub(1));
        }
        false
    }

    #[inline]
    fn cost(&self, stats: &Stats, now: u64) -> f64 {
        let ewma = f64::from_bits(stats.ewma.load(Ordering::Relaxed));
        let stamp = stats.stamp.load(Ordering::Relaxed);
        let age = now.saturating_sub(stamp) as f64;
        let decayed = ewma * decay(age / self.decay_ns);
        let pending = stats.in_flight.load(Ordering::Relaxed) as f64;
        (decayed + 1.0) * (pending + 1.0)
    }

    fn record(&self, stats: &Stats, rtt_ns: u64, failure: bool, now: u64) {
        let sample = if failure {
            (rtt_ns as f64).max(self.penalty_ns)
        } else {
            rtt_ns as f64
        };
        let ewma = f64::from_bits(stats.ewma.load(Ordering::Relaxed));
        // A load and a store, not a swap: concurrent recordings may lose one sample's
        // decay step, which an estimate can afford, and the hot path saves an atomic RMW.
        let stamp = stats.stamp.load(Ordering::Relaxed);
        stats.stamp.store(now, Ordering::Relaxed);
        let next = if sample > ewma {
            sample
        } else {
            let age = now.saturating_sub(stamp) as f64;
            let w = decay(age / self.decay_ns);
            ewma * w + sample * (1.0 - w)
        };
        stats.ewma.store(next.to_bits(), Ordering::Relaxed);
        if failure {
            let failures = stats.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            let threshold = self.config.eject_after;
            if threshold > 0 && failures >= threshold {
                self.try_eject(stats, now);
            }
        } else {
            if stats.consecutive_failures.load(Ordering::Relaxed) != 0 {
                stats.consecutive_failures.store(0, Ordering::Relaxed);
            }
            if stats.ejected_until.load(Ordering::Relaxed) == 0
                && stats.ejections.load(Ordering::Relaxed) != 0
            {
                stats.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    fn try_eject(&self, stats: &Stats, now: u64) {
        if stats.ejected_until.load(Ordering::Relaxed) != 0 {
            return;
        }
        let len = self.len.load(Ordering::Relaxed);
        let ejected = self.ejected.load(Ordering::Relaxed);
        if ((ejected + 1) as f64) * 100.0 > self.config.max_ejection_percent * len as f64 {
            return;
        }
        let times = (stats.ejections.fetch_add(1, Ordering::AcqRel) + 1).min(10);
        let duration = self.config.base_ejection_time.saturating_mul(times);
        let until = now.saturating_add(duration.as_nanos() as u64).max(1);
        if stats
            .ejected_until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.ejected.fetch_add(1, Ordering::AcqRel);
            stats.consecutive_failures.store(0, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::warn!(service = %self.service, ?duration, "endpoint ejected after consecutive failures");
        }
    }
}

/// The endpoints of one service as the balancer sees them: a snapshot swapped whole on every
/// discovery update, with per-endpoint load statistics that survive updates.
///
/// Readers never take the lock on the hot path: a [`Picker`] caches the snapshot and checks a
/// generation counter (one atomic load) before each pick; only a swap takes the (tiny) write
/// lock.
///
/// ```
/// use meshwork_discovery::balance::{BalanceConfig, EndpointSet};
/// use meshwork_discovery::Instance;
///
/// let set = EndpointSet::new("web", BalanceConfig::default());
/// set.update([
///     Instance::new("a", "web", "10.0.0.1", 80),
///     Instance::new("b", "web", "10.0.0.2", 80),
/// ]);
/// let mut picker = set.picker();
/// let pick = picker.pick().expect("two endpoints");
/// assert!(["a", "b"].contains(&pick.instance().id.as_str()));
/// pick.success();
/// ```
#[derive(Clone)]
pub struct EndpointSet {
    shared: Arc<Shared>,
}

impl fmt::Debug for EndpointSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSet")
            .field("service", &self.shared.service)
            .field("endpoints", &self.shared.len.load(Ordering::Relaxed))
            .field("ejected", &self.shared.ejected.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl EndpointSet {
    /// An empty set for `service`.
    pub fn new(service: impl Into<Arc<str>>, config: BalanceConfig) -> Self {
        let decay_ns = config.decay.as_nanos() as f64;
        let penalty_ns = config.failure_penalty.as_nanos() as f64;
        EndpointSet {
            shared: Arc::new(Shared {
                core: Arc::new(Core {
                    service: service.into(),
                    config,
                    epoch: Instant::now(),
                    ejected: AtomicUsize::new(0),
                    len: AtomicUsize::new(0),
                    decay_ns,
                    penalty_ns,
                }),
                current: RwLock::new(Arc::new(Snapshot {
                    instances: Arc::from(Vec::new()),
                    ..Snapshot::default()
                })),
                generation: AtomicU64::new(0),
            }),
        }
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// Replaces the endpoints; the statistics of endpoints that stay (same id) are kept.
    pub fn update(&self, instances: impl IntoIterator<Item = Instance>) {
        let shared = &self.shared;
        let now = shared.now();
        let mut current = shared.current.write().unwrap_or_else(|p| p.into_inner());
        let old: HashMap<&str, &Arc<Entry>> = current
            .entries
            .iter()
            .map(|e| (e.instance.id.as_str(), e))
            .collect();
        let mut instances: Vec<Instance> = instances.into_iter().collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        instances.dedup_by(|a, b| a.id == b.id);
        let default_rtt = shared.config.default_rtt.as_nanos() as f64;
        let entries: Vec<Arc<Entry>> = instances
            .iter()
            .map(|i| {
                let stats = match old.get(i.id.as_str()) {
                    Some(e) => Stats {
                        in_flight: AtomicU32::new(0),
                        ewma: AtomicU64::new(e.stats.ewma.load(Ordering::Relaxed)),
                        stamp: AtomicU64::new(e.stats.stamp.load(Ordering::Relaxed)),
                        consecutive_failures: AtomicU32::new(
                            e.stats.consecutive_failures.load(Ordering::Relaxed),
                        ),
                        ejected_until: AtomicU64::new(
                            e.stats.ejected_until.load(Ordering::Relaxed),
                        ),
                        ejections: AtomicU32::new(e.stats.ejections.load(Ordering::Relaxed)),
                    },
                    None => Stats::new(default_rtt, now),
                };
                Arc::new(Entry {
                    instance: Arc::new(i.clone()),
                    stats,
                    core: shared.core.clone(),
                })
            })
            .collect();
        let weights: Vec<u64> = instances.iter().map(|i| u64::from(i.weight())).collect();
        let total: u64 = weights.iter().sum();
        let all_equal = weights.windows(2).all(|w| w[0] == w[1]);
        let cumulative = if all_equal || total == 0 {
            Vec::new()
        } else {
            weights
                .iter()
                .scan(0u64, |acc, w| {
                    *acc += w;
                    Some(*acc)
                })
                .collect()
        };
        let ejected = entries
            .iter()
            .filter(|e| e.stats.ejected_until.load(Ordering::Relaxed) > now)
            .count();
        *current = Arc::new(Snapshot {
            entries,
            cumulative,
            total_weight: total,
            instances: instances.into(),
        });
        shared.len.store(current.entries.len(), Ordering::Relaxed);
        shared.ejected.store(ejected, Ordering::Relaxed);
        shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Applies every update of `watch` to this set from a background task (errors keep the
    /// last good set). Abort the handle, or drop the watch's source, to stop.
    pub fn follow(&self, mut watch: WatchStream) -> JoinHandle<()> {
        let set = self.clone();
        tokio::spawn(async move {
            while let Some(item) = watch.recv().await {
                if let Ok(update) = item {
                    set.update(update.instances.iter().cloned());
                }
            }
        })
    }

    /// The instances in the current snapshot (resolve without a round trip).
    pub fn instances(&self) -> Arc<[Instance]> {
        self.shared.load().instances.clone()
    }

    /// Number of endpoints now.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of endpoints ejected now.
    pub fn ejected(&self) -> usize {
        let snap = self.shared.load();
        let now = self.shared.now();
        snap.entries
            .iter()
            .filter(|e| self.shared.is_ejected(&e.stats, now))
            .count()
    }

    /// A picker: a cached view of this set with its own random number generator.
    pub fn picker(&self) -> Picker {
        Picker {
            shared: self.shared.clone(),
            generation: u64::MAX,
            snapshot: Arc::new(Snapshot::default()),
            rng: fastrand::Rng::new(),
        }
    }
}

/// Picks endpoints by power of two choices; one per task or per service clone (`&mut self`).
///
/// Two distinct candidates are drawn at random in proportion to their weights, skipping
/// ejected ones (unless the usable share is below the panic threshold), and the one with the
/// lower cost wins: peak-EWMA latency times (in-flight + 1); ties go to either in proportion
/// to weight, which keeps traffic proportional to weight among equally loaded endpoints.
#[derive(Clone)]
pub struct Picker {
    shared: Arc<Shared>,
    generation: u64,
    snapshot: Arc<Snapshot>,
    rng: fastrand::Rng,
}

impl fmt::Debug for Picker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picker")
            .field("service", &self.shared.service)
            .field("endpoints", &self.snapshot.entries.len())
            .finish_non_exhaustive()
    }
}

impl Picker {
    /// Seeds the random number generator (for reproducible tests).
    pub fn seed(&mut self, seed: u64) {
        self.rng.seed(seed);
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    #[inline]
    fn refresh(&mut self) {
        let generation = self.shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.snapshot = self.shared.load();
            self.generation = generation;
        }
    }

    /// The weight of entry `i` (1 when all weights are equal).
    #[inline]
    fn weight(&self, i: usize) -> u64 {
        let c = &self.snapshot.cumulative;
        if c.is_empty() {
            1
        } else if i == 0 {
            c[0]
        } else {
            c[i] - c[i - 1]
        }
    }

    /// Draws an entry in proportion to its weight, excluding `exclude` when given.
    #[inline]
    fn draw(&mut self, exclude: Option<usize>) -> usize {
        let snap = &self.snapshot;
        let n = snap.entries.len();
        if snap.cumulative.is_empty() {
            match exclude {
                None => self.rng.usize(..n),
                Some(x) => {
                    let i = self.rng.usize(..n - 1);
                    if i >= x { i + 1 } else { i }
                }
            }
        } else {
            let (skip_from, skip) = match exclude {
                None => (u64::MAX, 0),
                Some(x) => (snap.cumulative[x] - self.weight(x), self.weight(x)),
            };
            let span = self.snapshot.total_weight - skip;
            if span == 0 {
                return exclude.unwrap_or(0);
            }
            let mut r = self.rng.u64(..span);
            if r >= skip_from {
                r += skip;
            }
            self.snapshot.cumulative.partition_point(|&c| c <= r)
        }
    }

    /// A weighted draw that skips ejected entries (unless in panic mode), never `exclude`.
    #[inline]
    /// `None` when every candidate is ejected.
    fn draw_usable(&mut self, now: u64, panic: bool, exclude: Option<usize>) -> Option<usize> {
        let mut i = self.draw(exclude);
        if panic {
            return Some(i);
        }
        for _ in 0..4 {
            if !self.shared.is_ejected(&self.snapshot.entries[i].stats, now) {
                return Some(i);
            }
            i = self.draw(exclude);
        }
        let n = self.snapshot.entries.len();
        let start = self.rng.usize(..n);
        (0..n).map(|k| (start + k) % n).find(|&k| {
            Some(k) != exclude
                && self.weight(k) > 0
                && !self.shared.is_ejected(&self.snapshot.entries[k].stats, now)
        })
    }

    /// Picks an endpoint, or `None` when the set is empty. Record the call's outcome on the
    /// returned [`Pick`]; dropping it records nothing (a cancelled call).
    #[inline]
    pub fn pick(&mut self) -> Option<Pick> {
        self.refresh();
        let n = self.snapshot.entries.len();
        if n == 0 {
            return None;
        }
        let now = self.shared.now();
        let index = if n == 1 {
            0
        } else {
            let ejected = self.shared.ejected.load(Ordering::Relaxed).min(n);
            let panic =
                ((n - ejected) as f64) * 100.0 < self.shared.config.panic_threshold * n as f64;
            // Two distinct candidates, each drawn in proportion to its weight.
            // Everything ejected (only possible without a panic threshold): use them anyway.
            let a = match self.draw_usable(now, panic, None) {
                Some(a) => a,
                None => self.draw(None),
            };
            // No other usable candidate: the first one it is.
            let b = self.draw_usable(now, panic, Some(a)).unwrap_or(a);
            if a == b {
                a
            } else {
                let ca = self.shared.cost(&self.snapshot.entries[a].stats, now);
                let cb = self.shared.cost(&self.snapshot.entries[b].stats, now);
                if ca < cb {
                    a
                } else if cb < ca {
                    b
                } else {
                    // Equal load: choose in proportion to weight, which keeps traffic
                    // proportional to weight among equally loaded endpoints.
                    let (wa, wb) = (self.weight(a), self.weight(b));
                    if self.rng.u64(..(wa + wb).max(1)) < wa {
                        a
                    } else {
                        b
                    }
                }
            }
        };
        let entry = self.snapshot.entries[index].clone();
        entry.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Pick {
            entry,
            start: now,
            done: false,
        })
    }
}

/// A picked endpoint; it counts as in flight until [`success`](Self::success),
/// [`failure`](Self::failure) or drop.
pub struct Pick {
    entry: Arc<Entry>,
    start: u64,
    done: bool,
}

impl fmt::Debug for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pick")
            .field("instance", &self.entry.instance.id)
            .finish_non_exhaustive()
    }
}

impl Pick {
    /// The picked instance.
    pub fn instance(&self) -> &Arc<Instance> {
        &self.entry.instance
    }

    /// Records the outcome: `failure` charges at least the failure penalty and counts
    /// towards ejection.
    pub fn record(mut self, failure: bool) {
        self.finish(failure);
    }

    /// Records a success.
    pub fn success(self) {
        self.record(false);
    }

    /// Records a failure.
    pub fn failure(self) {
        self.record(true);
    }

    fn finish(&mut self, failure: bool) {
        if self.done {
            return;
        }
        self.done = true;
        let stats = &self.entry.stats;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        let core = &self.entry.core;
        let now = core.now();
        core.record(stats, now.saturating_sub(self.start), failure, now);
    }

    /// Time since the pick.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.entry.core.now().saturating_sub(self.start))
    }
}

impl Drop for Pick {
    fn drop(&mut self) {
        if !self.done {
            self.entry.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::decay;

    #[test]
    fn decay_matches_exp() {
        let mut x: f64 = 0.0;
        while x < 50.0 {
            let exact = (-x).exp();
            let approx = decay(x);
            assert!(
                ((approx - exact) / exact).abs() < 3e-4,
                "x={x}: {approx} vs {exact}"
            );
            x += 0.0137;
        }
        assert_eq!(decay(0.0), 1.0);
        assert_eq!(decay(-1.0), 1.0);
        assert_eq!(decay(1e9), 0.0);
        assert_eq!(decay(f64::NAN), 1.0);
    }
}
