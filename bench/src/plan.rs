//! Who sends what in a flash sale: a seeded sequence of attempts over N distinct buyers, with
//! some app retries (same request id again) and some over-limit tries (the same buyer with a
//! new request id), the way real apps and eager buyers behave.
//!
//! The plan is pure and deterministic for a seed, so a run can be repeated exactly.

/// Why an attempt is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptKind {
    /// A buyer's first try.
    First,
    /// An app retrying an earlier attempt with its request id (must get the same order).
    Retry,
    /// A buyer who already tried, again with a new request id (over the per-user limit
    /// once their earlier tries were accepted).
    Again,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// 1-based user id (the JWT `sub`).
    pub user: u64,
    /// The buyer's attempt number: the request id is `<run>-<user>-<request>`.
    pub request: u32,
    pub kind: AttemptKind,
}

#[derive(Debug, Clone, Copy)]
pub struct PlanSettings {
    pub users: u64,
    /// Share of attempts that retry an earlier request id.
    pub retry_fraction: f64,
    /// Share of attempts by a buyer who already tried, with a new request id.
    pub again_fraction: f64,
    pub seed: u64,
}

/// A small, fast, seeded generator (SplitMix64); quality is ample for picking attempts.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Retries and repeat tries pick from this many recent attempts, so they arrive close to
/// the original, as an app's retry would.
const RECENT: usize = 4096;

#[derive(Debug, Clone)]
pub struct Plan {
    attempts: Vec<Attempt>,
}

impl Plan {
    /// `len` attempts. Fresh buyers are taken in order 1..=users; once all have tried, the
    /// sequence starts over with new request ids (every later try is a repeat).
    pub fn build(settings: PlanSettings, len: usize) -> Self {
        assert!(settings.users > 0, "a plan needs at least one user");
        let mut rng = SplitMix64::new(settings.seed);
        let mut next_request = vec![0u32; settings.users as usize + 1];
        let mut recent: Vec<Attempt> = Vec::with_capacity(RECENT);
        let mut next_user = 0u64;
        let mut attempts = Vec::with_capacity(len);
        for i in 0..len {
            let roll = rng.next_f64();
            let attempt = if !recent.is_empty() && roll < settings.retry_fraction {
                let earlier = recent[rng.below(recent.len() as u64) as usize];
                Attempt {
                    kind: AttemptKind::Retry,
                    ..earlier
                }
            } else if !recent.is_empty() && roll < settings.retry_fraction + settings.again_fraction {
                let user = recent[rng.below(recent.len() as u64) as usize].user;
                let request = next_request[user as usize];
                next_request[user as usize] += 1;
                Attempt {
                    user,
                    request,
                    kind: AttemptKind::Again,
                }
            } else {
                next_user = next_user % settings.users + 1;
                let request = next_request[next_user as usize];
                next_request[next_user as usize] += 1;
                Attempt {
                    user: next_user,
                    request,
                    kind: if request == 0 {
                        AttemptKind::First
                    } else {
                        AttemptKind::Again
                    },
                }
            };
            if recent.len() < RECENT {
                recent.push(attempt);
            } else {
                recent[i % RECENT] = attempt;
            }
            attempts.push(attempt);
        }
        Self { attempts }
    }

    pub fn get(&self, index: u64) -> Option<Attempt> {
        self.attempts.get(usize::try_from(index).ok()?).copied()
    }

    pub fn len(&self) -> usize {
        self.attempts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.attempts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn settings(users: u64, retry: f64, again: f64) -> PlanSettings {
        PlanSettings {
            users,
            retry_fraction: retry,
            again_fraction: again,
            seed: 7,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_plan() {
        let a = Plan::build(settings(100, 0.1, 0.1), 1000);
        let b = Plan::build(settings(100, 0.1, 0.1), 1000);
        assert_eq!(a.attempts, b.attempts);
        let c = Plan::build(
            PlanSettings {
                seed: 8,
                ..settings(100, 0.1, 0.1)
            },
            1000,
        );
        assert_ne!(a.attempts, c.attempts);
    }

    #[test]
    fn fractions_are_honoured_and_kinds_are_consistent() {
        let plan = Plan::build(settings(50_000, 0.05, 0.03), 40_000);
        let count = |k: AttemptKind| plan.attempts.iter().filter(|a| a.kind == k).count() as f64;
        let n = plan.len() as f64;
        assert!((count(AttemptKind::Retry) / n - 0.05).abs() < 0.01);
        assert!((count(AttemptKind::Again) / n - 0.03).abs() < 0.01);
        // Every retry repeats an attempt made before it; every first try is a new buyer.
        let mut seen = HashSet::new();
        let mut first_users = HashSet::new();
        for a in &plan.attempts {
            match a.kind {
                AttemptKind::Retry => assert!(seen.contains(&(a.user, a.request)), "{a:?}"),
                AttemptKind::First => {
                    assert_eq!(a.request, 0);
                    assert!(first_users.insert(a.user), "{a:?}");
                }
                AttemptKind::Again => assert!(a.request > 0, "{a:?}"),
            }
            seen.insert((a.user, a.request));
        }
    }

    #[test]
    fn buyers_wrap_around_with_new_request_ids() {
        let plan = Plan::build(settings(10, 0.0, 0.0), 35);
        let mut per_user: HashMap<u64, Vec<u32>> = HashMap::new();
        for a in &plan.attempts {
            per_user.entry(a.user).or_default().push(a.request);
        }
        assert_eq!(per_user.len(), 10);
        assert_eq!(per_user[&1], vec![0, 1, 2, 3]);
        assert_eq!(per_user[&10], vec![0, 1, 2]);
        assert_eq!(
            plan.attempts
                .iter()
                .filter(|a| a.kind == AttemptKind::First)
                .count(),
            10
        );
    }
}
