//! Adaptive limits: synchronous state machines fed one sample per completed call.
//!
//! The bulkhead keeps one [`Limiter`] behind a mutex, taken once per completed call and only
//! when an adaptive limit is configured. The limiter never reads the clock: the caller passes
//! the call's start and end, so paused-time tests drive it exactly.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{AdaptiveLimit, Aimd, Gradient};

/// One completed call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) start: Instant,
    pub(crate) end: Instant,
    /// Calls in flight when it completed, itself included.
    pub(crate) in_flight: usize,
    /// The call was dropped (shed, timed out, failed as overload).
    pub(crate) dropped: bool,
}

/// What a sample changed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Update {
    /// The effective limit moved from `.0` to `.1`.
    pub(crate) limit: Option<(usize, usize)>,
    /// A probe finished with this minimum RTT.
    pub(crate) min_rtt: Option<Duration>,
}

#[derive(Debug)]
struct Probe {
    started: Instant,
    saved: f64,
    sum: f64,
    n: u32,
}

#[derive(Debug)]
struct GradientState {
    cfg: Gradient,
    min_rtt: Option<f64>,
    probe: Option<Probe>,
    next_probe: Instant,
    sum: f64,
    n: u32,
    max_in_flight: usize,
    dropped: bool,
    rng: fastrand::Rng,
}

#[derive(Debug)]
enum Kind {
    Aimd(Aimd),
    Gradient(Box<GradientState>),
}

/// The state of an adaptive limit.
#[derive(Debug)]
pub(crate) struct Limiter {
    kind: Kind,
    /// The estimated limit, within the bounds.
    limit: f64,
    min: f64,
    max: f64,
}

impl Limiter {
    /// A limiter starting at `initial` (already within the bounds); a gradient limiter starts
    /// with a probe at `now`.
    pub(crate) fn new(adaptive: &AdaptiveLimit, initial: usize, now: Instant) -> Self {
        let (min, max) = adaptive.bounds();
        let kind = match *adaptive {
            AdaptiveLimit::Aimd(a) => Kind::Aimd(a),
            AdaptiveLimit::Gradient(g) => Kind::Gradient(Box::new(GradientState {
                cfg: g,
                min_rtt: None,
                probe: Some(Probe {
                    started: now,
                    saved: initial as f64,
                    sum: 0.0,
                    n: 0,
                }),
                next_probe: now,
                sum: 0.0,
                n: 0,
                max_in_flight: 0,
                dropped: false,
                rng: g
                    .seed
                    .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed),
            })),
        };
        Limiter {
            kind,
            limit: initial as f64,
            min: min as f64,
            max: max as f64,
        }
    }

    /// The limit in force: the estimate, or the probe limit during a probe.
    pub(crate) fn effective(&self) -> usize {
        match &self.kind {
            Kind::Gradient(g) if g.probe.is_some() => g.cfg.probe_limit,
            _ => self.limit as usize,
        }
    }

    /// Sets the estimate by hand (clamped to the bounds); a running probe keeps its pin and
    /// restores the new value when it ends.
    pub(crate) fn set(&mut self, limit: usize) -> Update {
        let before = self.effective();
        let value = (limit as f64).clamp(self.min, self.max);
        self.limit = value;
        if let Kind::Gradient(g) = &mut self.kind
            && let Some(p) = &mut g.probe
        {
            p.saved = value;
        }
        self.update_from(before)
    }

    fn update_from(&self, before: usize) -> Update {
        let after = self.effective();
        Update {
            limit: (after != before).then_some((before, after)),
            min_rtt: None,
        }
    }

    pub(crate) fn sample(&mut self, s: Sample) -> Update {
        let before = self.effective();
        let rtt = s.end.saturating_duration_since(s.start);
        let (lo, hi) = (self.min, self.max);
        match &mut self.kind {
            Kind::Aimd(a) => {
                if s.dropped || rtt > a.latency_threshold {
                    self.limit = (self.limit * a.backoff_ratio).floor().clamp(lo, hi);
                } else if s.in_flight.saturating_mul(2) as f64 >= self.limit {
                    self.limit = (self.limit + 1.0).clamp(lo, hi);
                }
                self.update_from(before)
            }
            Kind::Gradient(g) => {
                let mut update = Update::default();
                if let Some(p) = &mut g.probe {
                    if s.start >= p.started {
                        p.sum += rtt.as_secs_f64();
                        p.n += 1;
                        if p.n >= g.cfg.probe_samples {
                            let min_rtt = p.sum / f64::from(p.n);
                            self.limit = p.saved;
                            g.min_rtt = Some(min_rtt);
                            g.probe = None;
                            let jitter = g.cfg.probe_jitter * g.rng.f64();
                            g.next_probe = s.end + g.cfg.probe_interval.mul_f64(1.0 + jitter);
                            g.reset_window();
                            update.min_rtt =
                                Some(Duration::try_from_secs_f64(min_rtt).unwrap_or(Duration::MAX));
                        }
                    }
                } else if s.end >= g.next_probe {
                    g.probe = Some(Probe {
                        started: s.end,
                        saved: self.limit,
                        sum: 0.0,
                        n: 0,
                    });
                } else {
                    g.sum += rtt.as_secs_f64();
                    g.n += 1;
                    g.dropped |= s.dropped;
                    g.max_in_flight = g.max_in_flight.max(s.in_flight);
                    if g.n >= g.cfg.sample_window {
                        let mean = g.sum / f64::from(g.n);
                        let min_rtt = g.min_rtt.unwrap_or(mean);
                        let gradient = if g.dropped {
                            0.5
                        } else if mean > 0.0 {
                            (g.cfg.tolerance * min_rtt / mean).clamp(0.5, 1.0)
                        } else {
                            1.0
                        };
                        let limit = self.limit;
                        let estimate = limit * gradient + limit.sqrt();
                        let mut next = limit * (1.0 - g.cfg.smoothing) + estimate * g.cfg.smoothing;
                        // Don't grow a limit the traffic does not use.
                        if next > limit && (g.max_in_flight as f64) < limit / 2.0 {
                            next = limit;
                        }
                        self.limit = next.clamp(lo, hi);
                        g.reset_window();
                    }
                }
                update.limit = self.update_from(before).limit;
                update
            }
        }
    }
}

impl GradientState {
    fn reset_window(&mut self) {
        self.sum = 0.0;
        self.n = 0;
        self.max_in_flight = 0;
        self.dropped = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn sample(base: Instant, start: u64, rtt: u64, in_flight: usize, dropped: bool) -> Sample {
        Sample {
            start: at(base, start),
            end: at(base, start + rtt),
            in_flight,
            dropped,
        }
    }

    #[test]
    fn aimd_adds_one_when_busy_and_backs_off_on_drops_and_slow_calls() {
        let base = Instant::now();
        let mut aimd = Aimd::new(2, 12);
        aimd.latency_threshold = Duration::from_millis(100);
        let mut l = Limiter::new(&AdaptiveLimit::Aimd(aimd), 10, base);
        // Not busy: half the limit is not in use, no growth.
        assert_eq!(l.sample(sample(base, 0, 10, 4, false)), Update::default());
        let u = l.sample(sample(base, 0, 10, 5, false));
        assert_eq!(u.limit, Some((10, 11)));
        l.sample(sample(base, 0, 10, 11, false));
        // Bounded by max_limit.
        assert_eq!(l.sample(sample(base, 0, 10, 12, false)).limit, None);
        assert_eq!(l.effective(), 12);
        // floor(12 * 0.9) = 10.
        assert_eq!(
            l.sample(sample(base, 0, 10, 12, true)).limit,
            Some((12, 10))
        );
        // Slow call: floor(10 * 0.9) = 9.
        assert_eq!(
            l.sample(sample(base, 0, 101, 1, false)).limit,
            Some((10, 9))
        );
        for _ in 0..20 {
            l.sample(sample(base, 0, 10, 1, true));
        }
        assert_eq!(l.effective(), 2);
    }

    fn gradient() -> Gradient {
        let mut g = Gradient::new(2, 100);
        g.sample_window = 2;
        g.probe_samples = 2;
        g.probe_limit = 2;
        g.probe_interval = Duration::from_secs(10);
        g.probe_jitter = 0.5;
        g.seed = Some(7);
        g
    }

    #[test]
    fn gradient_probes_first_then_restores_and_reprobes_with_jitter() {
        let base = Instant::now();
        let mut l = Limiter::new(&AdaptiveLimit::Gradient(gradient()), 20, base);
        assert_eq!(l.effective(), 2);
        l.sample(sample(base, 0, 10, 2, false));
        let u = l.sample(sample(base, 0, 30, 2, false));
        assert_eq!(u.limit, Some((2, 20)));
        assert_eq!(u.min_rtt, Some(Duration::from_millis(20)));
        let Kind::Gradient(g) = &l.kind else {
            unreachable!()
        };
        let wait = g.next_probe - at(base, 30);
        assert!(wait >= Duration::from_secs(10) && wait < Duration::from_secs(15));
        let next = g.next_probe;
        // The first sample after the interval starts a probe; calls started before the
        // probe don't count towards it.
        let late = next.duration_since(base).as_millis() as u64;
        let u = l.sample(sample(base, late - 4, 5, 20, false));
        assert_eq!(u.limit, Some((20, 2)));
        assert_eq!(l.sample(sample(base, late, 5, 2, false)), Update::default());
        l.sample(sample(base, late + 2, 40, 2, false));
        let u = l.sample(sample(base, late + 2, 40, 2, false));
        assert_eq!(u.min_rtt, Some(Duration::from_millis(40)));
        assert_eq!(u.limit, Some((2, 20)));
    }

    #[test]
    fn gradient_falls_when_latency_rises_and_grows_back() {
        let base = Instant::now();
        let mut l = Limiter::new(&AdaptiveLimit::Gradient(gradient()), 20, base);
        l.sample(sample(base, 0, 10, 2, false));
        l.sample(sample(base, 0, 10, 2, false));
        assert_eq!(l.effective(), 20);
        // Three times the min RTT: the gradient is 0.5.
        for _ in 0..20 {
            l.sample(sample(base, 100, 30, 20, false));
        }
        let low = l.effective();
        assert!(low < 15, "limit {low}");
        for _ in 0..10 {
            l.sample(sample(base, 200, 10, 20, false));
        }
        assert!(l.effective() > low);
        // App-limited: no growth while less than half the limit is used.
        let before = l.effective();
        for _ in 0..10 {
            l.sample(sample(base, 300, 10, 1, false));
        }
        assert_eq!(l.effective(), before);
        // A drop halves the gradient.
        l.sample(sample(base, 400, 10, 20, true));
        assert!(l.sample(sample(base, 400, 10, 20, false)).limit.is_some());
        assert!(l.effective() < before);
    }

    #[test]
    fn set_clamps_and_survives_a_probe() {
        let base = Instant::now();
        let mut l = Limiter::new(&AdaptiveLimit::Gradient(gradient()), 20, base);
        assert_eq!(l.set(500).limit, None); // pinned by the probe
        l.sample(sample(base, 0, 10, 2, false));
        assert_eq!(
            l.sample(sample(base, 0, 10, 2, false)).limit,
            Some((2, 100))
        );
        assert_eq!(l.set(0).limit, Some((100, 2)));
    }
}
