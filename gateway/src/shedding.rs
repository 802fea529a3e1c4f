//! Priority load shedding: an adaptive concurrency limit on the seckill order route, so a
//! flood cannot take the CPU that checkout, order queries, payments and admin need.
//!
//! Why adaptive: the right number of seckill requests in flight depends on the machine, the
//! other load on it and the state of Redis and the broker, so no fixed number stays right.
//! The limit follows measured latency instead (the gradient idea of Netflix's
//! concurrency-limits): each request's time inside the gateway is a sample; over each window
//! the limit is multiplied by `2 × floor latency / recent latency` (at most 1) and given a
//! small headroom (`√limit`). When requests queue for CPU or for a slow Redis their latency
//! rises past twice its floor and the limit falls until they stop queueing; when latency is
//! back near its floor the headroom grows the limit again. The floor is the latency of a
//! window with few requests in flight (what an unqueued request costs right now); with many
//! in flight it only falls, or drifts up slowly, so a sale's overload is read as congestion,
//! not as the new normal.
//!
//! A request over the limit is refused before anything else (no body read, no token check,
//! no JSON, no Redis): 503 `overloaded` with Retry-After, retryable with the same request id
//! (nothing was reserved). A request takes its place only once its body is in, so slow
//! bodies hold none, and only requests that reach Redis are timed (see `WorkedOn`).
//!
//! Only the seckill order route is limited: nothing else is ever shed because of seckill
//! load. The normal routes' latency (checkout, order queries, payments; long polls excepted)
//! is a second signal: when it passes twice its own floor the seckill limit falls as if
//! seckill itself were slow, since that latency is what the flood must not move.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[shedding]`: bounds of the adaptive limit; the limit itself is not configured.
#[derive(Debug, Clone, Deserialize)]
pub struct SheddingSettings {
    pub enabled: bool,
    /// The limit never falls below this (seckill always makes progress).
    pub min_limit: usize,
    /// Nor rises above this.
    pub max_limit: usize,
    /// Where the limit starts.
    pub initial_limit: usize,
    /// Samples are averaged over windows this long (ms).
    pub window_ms: u64,
}

impl SheddingSettings {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            1 <= self.min_limit
                && self.min_limit <= self.initial_limit
                && self.initial_limit <= self.max_limit,
            "shedding: need 1 <= min_limit <= initial_limit <= max_limit"
        );
        anyhow::ensure!(
            (10..=10_000).contains(&self.window_ms),
            "shedding.window_ms must be within 10..=10000"
        );
        Ok(())
    }
}

/// A window ends once it has this many samples (a quiet gateway's windows run longer).
const MIN_SAMPLES: u64 = 8;

/// How far above its floor latency may go before the limit falls.
const TOLERANCE: f64 = 2.0;

/// A latency floor after one window's mean `sample`: a faster window is the floor at once; a
/// slower one moves it up by 20 % of the gap when `follow` (the window saw the floor itself),
/// else by 0.2 % (read as queueing; about a minute to follow at 100 ms windows).
fn follow_floor(floor: Option<f64>, sample: f64, follow: bool) -> f64 {
    match floor {
        Some(f) if sample > f && follow => f + (sample - f) * 0.2,
        Some(f) if sample > f => f + (sample - f) * 0.002,
        _ => sample,
    }
}

/// What a latency `sample` against its `floor` does to the limit: 1 (no cut) up to twice the
/// floor (noise, short queues), down to 0.5 beyond.
fn gradient_of(floor: f64, sample: f64) -> f64 {
    (TOLERANCE * floor / sample).clamp(0.5, 1.0)
}

/// The latency-driven limit itself: pure arithmetic over samples, no clock of its own.
#[derive(Debug, Clone)]
pub struct Gradient {
    limit: f64,
    min_limit: f64,
    max_limit: f64,
    /// Seckill's floor latency (µs): what an unqueued order costs now (see `follow_floor`).
    long_us: Option<f64>,
    /// The same floor for the normal routes' latency (checkout, order queries, payments).
    normal_floor_us: Option<f64>,
}

impl Gradient {
    pub fn new(initial: usize, min: usize, max: usize) -> Self {
        Self {
            limit: initial as f64,
            min_limit: min as f64,
            max_limit: max as f64,
            long_us: None,
            normal_floor_us: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// One window's mean latency (µs), the most requests that were in flight in it, and the
    /// normal routes' mean latency over it (`None`: too few to say).
    pub fn update(&mut self, short_us: f64, peak_in_flight: usize, normal_us: Option<f64>) {
        let short_us = short_us.max(1.0);
        // What few requests in flight see is the floor itself: then the floor follows the
        // window (up or down), so a limit held low by a slow dependency or a busy machine
        // finds its way back up; with many in flight a slower window is read as queueing,
        // and moves the floor up only by 0.2 % of the gap (about a minute at 100 ms).
        let few_in_flight = peak_in_flight as f64 <= 2.0 * self.min_limit;
        let long = follow_floor(self.long_us, short_us, few_in_flight);
        self.long_us = Some(long);
        // A limit the traffic did not reach says nothing about the latency at that limit:
        // grow only when requests were pressing against it.
        let pressing = peak_in_flight as f64 >= self.limit / 2.0;
        let own = gradient_of(long, short_us);
        // The promise is about normal traffic: when its latency passes twice its floor, the
        // seckill limit falls too. While the seckill limit is already near its minimum, a
        // slower normal route is not the flood's doing, and its floor follows.
        let normal = normal_us.map_or(1.0, |n| {
            let n = n.max(1.0);
            let held_low = self.limit <= 2.0 * self.min_limit;
            let floor = follow_floor(self.normal_floor_us, n, held_low);
            self.normal_floor_us = Some(floor);
            gradient_of(floor, n)
        });
        let gradient = own.min(normal);
        // Headroom only while latency is near its floor: a congested gateway just shrinks.
        let headroom = if pressing && gradient >= 0.9 {
            self.limit.sqrt()
        } else {
            0.0
        };
        let target = self.limit * gradient + headroom;
        let next = self.limit * 0.8 + target * 0.2;
        self.limit = next.clamp(self.min_limit, self.max_limit);
    }
}

/// The seckill route's limiter, shared by every request of one gateway.
#[derive(Debug)]
pub struct SeckillLimiter {
    enabled: bool,
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    window: Duration,
    state: Mutex<Window>,
    shed: AtomicU64,
    /// The normal routes' latency since the last window (µs, and how many).
    normal_total_us: AtomicU64,
    normal_samples: AtomicU64,
}

#[derive(Debug)]
struct Window {
    gradient: Gradient,
    started: Instant,
    samples: u64,
    total_us: u64,
    peak_in_flight: usize,
}

/// A request let through; dropping it frees its place and, when it reached Redis, records its
/// latency.
#[derive(Debug)]
pub struct Admitted<'a> {
    limiter: &'a SeckillLimiter,
    started: Instant,
    in_flight: usize,
    worked: WorkedOn,
}

/// Set by the handler when a request went past the local checks to Redis: only those
/// requests' latency says how loaded the gateway and its dependencies are (a refusal without
/// I/O takes microseconds, and would set the floor so low that every real order looks slow).
#[derive(Debug, Clone, Default)]
pub struct WorkedOn(Arc<AtomicBool>);

impl WorkedOn {
    pub fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl SeckillLimiter {
    pub fn new(settings: &SheddingSettings) -> Self {
        let gradient = Gradient::new(settings.initial_limit, settings.min_limit, settings.max_limit);
        Self {
            enabled: settings.enabled,
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(gradient.limit()),
            window: Duration::from_millis(settings.window_ms),
            state: Mutex::new(Window {
                gradient,
                started: Instant::now(),
                samples: 0,
                total_us: 0,
                peak_in_flight: 0,
            }),
            shed: AtomicU64::new(0),
            normal_total_us: AtomicU64::new(0),
            normal_samples: AtomicU64::new(0),
        }
    }

    /// A normal request's latency (checkout, order queries, payments; not long polls).
    pub fn record_normal(&self, latency: Duration) {
        self.normal_total_us
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        self.normal_samples.fetch_add(1, Ordering::Relaxed);
    }

    /// The normal routes' mean latency since the last call, when there were enough of them.
    fn take_normal(&self) -> Option<f64> {
        if self.normal_samples.load(Ordering::Relaxed) < MIN_SAMPLES {
            return None;
        }
        let samples = self.normal_samples.swap(0, Ordering::Relaxed);
        let total = self.normal_total_us.swap(0, Ordering::Relaxed);
        (samples > 0).then(|| total as f64 / samples as f64)
    }

    /// Whether a request arriving now would be shed: the cheap look before its body is read
    /// (the place itself is taken after, so a slow body holds none).
    pub fn is_full(&self) -> bool {
        self.enabled && self.in_flight.load(Ordering::Relaxed) >= self.limit.load(Ordering::Relaxed)
    }

    /// Count a request shed without `admit`.
    pub fn count_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// A place for one seckill request, or `None`: shed it.
    pub fn admit(&self) -> Option<Admitted<'_>> {
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        if self.enabled && in_flight > self.limit.load(Ordering::Relaxed) {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.shed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted {
            limiter: self,
            started: Instant::now(),
            in_flight,
            worked: WorkedOn::default(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests shed since start.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    fn record(&self, latency: Duration, in_flight: usize) {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        w.samples += 1;
        w.total_us += latency.as_micros() as u64;
        w.peak_in_flight = w.peak_in_flight.max(in_flight);
        // A window of a few requests says little (one quick request would set the floor).
        if w.started.elapsed() < self.window || w.samples < MIN_SAMPLES {
            return;
        }
        let mean = w.total_us as f64 / w.samples as f64;
        let peak = w.peak_in_flight;
        let normal = self.take_normal();
        w.gradient.update(mean, peak, normal);
        self.limit.store(w.gradient.limit(), Ordering::Relaxed);
        metrics::gauge!("seckill_concurrency_limit").set(w.gradient.limit() as f64);
        w.started = Instant::now();
        w.samples = 0;
        w.total_us = 0;
        w.peak_in_flight = 0;
    }
}

impl Admitted<'_> {
    /// The flag the handler sets when the request reaches Redis.
    pub fn worked_on(&self) -> WorkedOn {
        self.worked.clone()
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.worked.marked() {
            self.limiter.record(self.started.elapsed(), self.in_flight);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: usize, initial: usize, max: usize) -> SheddingSettings {
        SheddingSettings {
            enabled: true,
            min_limit: min,
            max_limit: max,
            initial_limit: initial,
            window_ms: 100,
        }
    }

    #[test]
    fn the_limit_falls_when_latency_rises_and_recovers_when_it_falls_back() {
        let mut g = Gradient::new(100, 4, 1000);
        for _ in 0..20 {
            g.update(1_000.0, 100, None);
        }
        let steady = g.limit();
        assert!(
            steady >= 100,
            "a steady latency under pressure grows the limit: {steady}"
        );
        for _ in 0..20 {
            g.update(20_000.0, steady, None);
        }
        let congested = g.limit();
        assert!(
            congested < steady / 4,
            "latency ×20 must cut the limit: {steady} → {congested}"
        );
        for _ in 0..60 {
            g.update(1_000.0, g.limit(), None);
        }
        assert!(
            g.limit() > congested * 2,
            "back at the floor it grows: {} vs {congested}",
            g.limit()
        );
    }

    #[test]
    fn a_limit_held_low_by_a_slower_dependency_finds_its_way_back_up() {
        let mut g = Gradient::new(64, 8, 1000);
        // A quiet moment sets a fast floor.
        g.update(200.0, 4, None);
        // Then every request costs 5 ms whatever the concurrency (a slower broker): not
        // queueing in this gateway, so the limit must not stay at its minimum.
        let mut lowest = g.limit();
        for _ in 0..240 {
            g.update(5_000.0, g.limit(), None);
            lowest = lowest.min(g.limit());
        }
        assert!(lowest <= 16, "first read as congestion: {lowest}");
        assert!(g.limit() >= 64, "then the floor follows: {}", g.limit());
    }

    #[test]
    fn slower_normal_routes_cut_the_seckill_limit() {
        let mut g = Gradient::new(256, 8, 1000);
        for _ in 0..10 {
            g.update(1_000.0, 256, Some(2_000.0));
        }
        let calm = g.limit();
        assert!(calm >= 256, "{calm}");
        // Seckill's own latency unchanged, checkout five times slower: the flood yields.
        for _ in 0..20 {
            g.update(1_000.0, g.limit(), Some(10_000.0));
        }
        assert!(g.limit() < calm / 4, "{} vs {calm}", g.limit());
    }

    #[test]
    fn the_limit_stays_within_its_bounds() {
        let mut g = Gradient::new(10, 4, 50);
        for _ in 0..200 {
            g.update(500.0, 1_000, None);
        }
        assert_eq!(g.limit(), 50);
        // Five seconds of 100 ms windows far above the floor.
        for _ in 0..50 {
            g.update(1e9, 1_000, None);
        }
        assert_eq!(g.limit(), 4);
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        let mut g = Gradient::new(20, 4, 1000);
        for _ in 0..100 {
            g.update(1_000.0, 1, None);
        }
        assert!(g.limit() <= 20, "{}", g.limit());
    }

    #[test]
    fn past_the_limit_requests_are_shed_and_a_finished_one_frees_its_place() {
        let limiter = SeckillLimiter::new(&settings(2, 2, 2));
        let a = limiter.admit().expect("first");
        let _b = limiter.admit().expect("second");
        assert!(limiter.admit().is_none(), "third is over the limit");
        assert_eq!(limiter.shed(), 1);
        drop(a);
        assert!(limiter.admit().is_some(), "a place was freed");
        assert_eq!(limiter.in_flight(), 1);
    }

    #[test]
    fn only_requests_that_reached_redis_move_the_limit() {
        let limiter = SeckillLimiter::new(&SheddingSettings {
            window_ms: 10,
            ..settings(2, 64, 64)
        });
        // Refusals without I/O: however many, the limit stays where it was.
        for _ in 0..100 {
            drop(limiter.admit().expect("room"));
        }
        let state = limiter.state.lock().expect("lock");
        assert_eq!((state.samples, state.gradient.long_us), (0, None));
        drop(state);
        // Orders that reached Redis are timed.
        for _ in 0..3 {
            let admitted = limiter.admit().expect("room");
            admitted.worked_on().mark();
        }
        assert_eq!(limiter.state.lock().expect("lock").samples, 3);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn disabled_sheds_nothing() {
        let limiter = SeckillLimiter::new(&SheddingSettings {
            enabled: false,
            ..settings(1, 1, 1)
        });
        let held: Vec<_> = (0..10).map(|_| limiter.admit()).collect();
        assert!(held.iter().all(Option::is_some));
    }
}
