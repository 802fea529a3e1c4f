//! 64-bit order ids minted in-process, without a database round trip (Snowflake layout).
//!
//! `0 | 41 bits ms since 2026-01-01 | 10 bits worker | 12 bits sequence`: up to 4096 ids per
//! millisecond per worker, ordered by time, positive in an `i64`. Two generators with the same
//! worker id would mint the same ids: each gateway leases its worker id in Redis and stamps
//! ids with Redis' clock (`redis::worker_lease`); this module is the pure arithmetic.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const EPOCH_MS: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
const WORKER_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;
pub const MAX_WORKER_ID: u16 = (1 << WORKER_BITS) - 1;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;

/// An order id. In JSON it is a decimal string: 64-bit ids overflow JavaScript numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderId(pub i64);

impl OrderId {
    /// When the id was minted (Unix ms): the minting gateway's reading of Redis' clock, give
    /// or take the milliseconds a busy generator borrows ahead.
    pub fn minted_at_ms(self) -> i64 {
        ((self.0 as u64) >> (WORKER_BITS + SEQUENCE_BITS)) as i64 + EPOCH_MS as i64
    }

    /// The smallest id minted at Unix millisecond `ms` (negative before the epoch), so the
    /// ids of a time range are an id range.
    pub fn first_minted_at_ms(ms: i64) -> i64 {
        (ms - EPOCH_MS as i64) << (WORKER_BITS + SEQUENCE_BITS)
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for OrderId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(OrderId)
    }
}

impl Serialize for OrderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OrderId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A client-chosen idempotency key (seckill and checkout): 1 to 64 of `A-Z a-z 0-9 . _ -`,
/// so it is safe inside the `|`- and `:`-separated Redis payloads. Parsed once, at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request_id must be 1 to 64 characters of A-Z a-z 0-9 . _ -")]
pub struct InvalidRequestId;

impl RequestId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidRequestId> {
        let raw = raw.into();
        let ok = (1..=64).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(RequestId(raw))
        } else {
            Err(InvalidRequestId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An id that is not a positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ids are positive integers")]
pub struct InvalidId;

/// A user, as a verified token names them: a positive integer, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(i64);

impl UserId {
    pub fn parse(raw: i64) -> Result<Self, InvalidId> {
        if raw > 0 {
            Ok(UserId(raw))
        } else {
            Err(InvalidId)
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A promotion (one sale), by its positive database id, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PromotionId(i64);

impl PromotionId {
    pub fn parse(raw: i64) -> Result<Self, InvalidId> {
        if raw > 0 {
            Ok(PromotionId(raw))
        } else {
            Err(InvalidId)
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for PromotionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Units per seckill order; a promotion's own per-user limit may be lower.
pub const MAX_QUANTITY: i64 = 100;

/// The units one seckill order asks for: 1 to `MAX_QUANTITY`, parsed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("quantity must be between 1 and {MAX_QUANTITY}")]
pub struct InvalidQuantity;

impl Quantity {
    pub fn parse(raw: i64) -> Result<Self, InvalidQuantity> {
        if (1..=MAX_QUANTITY).contains(&raw) {
            Ok(Quantity(raw as u32))
        } else {
            Err(InvalidQuantity)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug)]
pub struct OrderIdGenerator {
    worker: u64,
    /// (last millisecond used, sequence within it)
    state: Mutex<(u64, u64)>,
}

impl OrderIdGenerator {
    pub fn new(worker_id: u16) -> Self {
        assert!(
            worker_id <= MAX_WORKER_ID,
            "worker id {worker_id} exceeds {MAX_WORKER_ID}"
        );
        Self {
            worker: u64::from(worker_id),
            state: Mutex::new((0, 0)),
        }
    }

    /// A generator that never stamps an id before `floor_ms` (Unix ms): a worker id taken
    /// over from a gateway whose lease expired at `floor_ms` cannot repeat one of its ids.
    pub fn starting_at(worker_id: u16, floor_ms: u64) -> Self {
        let generator = Self::new(worker_id);
        *generator
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = (floor_ms, 0);
        generator
    }

    pub fn worker_id(&self) -> u16 {
        self.worker as u16
    }

    /// The next id on this machine's clock (tests and benches; the gateway uses Redis' clock).
    pub fn next_id(&self) -> OrderId {
        self.next_at(now_ms())
    }

    /// The id for a given clock reading (Unix ms); the clock may stand still or step back,
    /// ids still increase (a backwards step reuses the last millisecond).
    pub fn next_at(&self, now: u64) -> OrderId {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last, seq) = *state;
        let (ms, seq) = if now > last {
            (now, 0)
        } else if seq < MAX_SEQUENCE {
            (last, seq + 1)
        } else {
            // 4096 ids in one millisecond: borrow the next one.
            (last + 1, 0)
        };
        *state = (ms, seq);
        let elapsed = ms.saturating_sub(EPOCH_MS);
        OrderId(((elapsed << (WORKER_BITS + SEQUENCE_BITS)) | (self.worker << SEQUENCE_BITS) | seq) as i64)
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(EPOCH_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn user_and_promotion_ids_are_positive_and_quantities_bounded() {
        assert_eq!(UserId::parse(7).map(UserId::get), Ok(7));
        assert_eq!(PromotionId::parse(3).map(PromotionId::get), Ok(3));
        for bad in [0, -1, i64::MIN] {
            assert_eq!(UserId::parse(bad), Err(InvalidId));
            assert_eq!(PromotionId::parse(bad), Err(InvalidId));
        }
        assert_eq!(Quantity::parse(1).map(Quantity::get), Ok(1));
        assert_eq!(Quantity::parse(MAX_QUANTITY).map(Quantity::get), Ok(100));
        for bad in [0, -3, MAX_QUANTITY + 1, i64::MAX] {
            assert_eq!(Quantity::parse(bad), Err(InvalidQuantity));
        }
    }

    #[test]
    fn ids_increase_even_when_the_clock_stands_still_or_steps_back() {
        let gen = OrderIdGenerator::new(7);
        let t = EPOCH_MS + 1_000;
        let mut last = gen.next_at(t);
        for now in [t, t, t - 5, t + 1, t - 100] {
            let id = gen.next_at(now);
            assert!(id > last, "{id} after {last}");
            last = id;
        }
    }

    #[test]
    fn more_than_4096_ids_in_one_millisecond_stay_unique() {
        let gen = OrderIdGenerator::new(1);
        let ids: HashSet<OrderId> = (0..10_000).map(|_| gen.next_at(EPOCH_MS + 5)).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn workers_never_collide() {
        let a = OrderIdGenerator::new(1);
        let b = OrderIdGenerator::new(2);
        let t = EPOCH_MS + 42;
        let ids_a: HashSet<_> = (0..100).map(|_| a.next_at(t)).collect();
        assert!((0..100).map(|_| b.next_at(t)).all(|id| !ids_a.contains(&id)));
    }

    #[test]
    fn a_generator_with_a_floor_never_stamps_an_earlier_millisecond() {
        let floor = EPOCH_MS + 10_000;
        let gen = OrderIdGenerator::starting_at(3, floor);
        let earlier = OrderIdGenerator::new(3).next_at(floor - 1);
        for now in [floor - 5_000, floor - 1, floor] {
            assert!(gen.next_at(now) > earlier);
        }
    }

    #[test]
    fn an_id_tells_when_it_was_minted() {
        let t = EPOCH_MS + 123_456_789;
        let gen = OrderIdGenerator::new(MAX_WORKER_ID);
        for _ in 0..5000 {
            let id = gen.next_at(t);
            // 4096 per millisecond: the 4097th borrows the next one.
            assert!((t as i64..=t as i64 + 1).contains(&id.minted_at_ms()), "{id}");
        }
    }

    #[test]
    fn ids_are_positive_and_round_trip_as_strings() {
        let id = OrderIdGenerator::new(MAX_WORKER_ID).next_id();
        assert!(id.0 > 0);
        let json = serde_json::to_string(&id).expect("serialize");
        assert_eq!(json, format!("\"{}\"", id.0));
        assert_eq!(serde_json::from_str::<OrderId>(&json).expect("parse"), id);
    }

    #[test]
    fn a_request_id_is_short_and_plain() {
        assert_eq!(
            RequestId::parse("a1.B_2-c").map(RequestId::into_string),
            Ok("a1.B_2-c".to_owned())
        );
        for bad in ["", "has space", "pipe|x", "colon:x", &"x".repeat(65)] {
            assert_eq!(RequestId::parse(bad), Err(InvalidRequestId), "{bad}");
        }
    }
}
