//! Reconciliation (invariant 7): Redis' view of a promotion compared with the database's, as
//! a pure function; `crate::app::reconcile` reads both sides and runs the repair.
//!
//! At a quiet moment, remaining + reserved units = stock, every live order in the database
//! holds a reservation in Redis, no cancelled order still holds one, and each buyer's count
//! matches their reservations. The report names every difference; `repair` rebuilds Redis
//! from the database's truth in one atomic script (`repair.lua`): reservations of live orders
//! restored, those of cancelled ones released, request ids mapped again, remaining and buyers
//! recounted, the sale loaded again if Redis lost it. Reservations not (yet) in the database
//! are not drift: they are queued, or the sweeper republishes them, and a repair keeps them.
//! A repair that raced an add-stock keeps the added units: Redis' newer revision wins.

use std::collections::{HashMap, HashSet};

use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::lifecycle::OrderStatus;
use crate::domain::promotion::Promotion;
use crate::domain::reservation::Reservation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    pub promotion_id: i64,
    pub stock: i64,
    /// `None` when the promotion is not loaded into Redis.
    pub remaining: Option<i64>,
    pub reserved_units: i64,
    /// stock - (remaining + reserved units); 0 when consistent.
    pub drift: i64,
    pub live_orders_in_db: i64,
    pub reservations_not_in_db: i64,
    pub orders_missing_in_redis: Vec<OrderId>,
    pub reservations_of_cancelled_orders: Vec<OrderId>,
    pub buyers_mismatched: Vec<i64>,
    /// Reserved units beyond the stock (Redis remaining below zero): the configured stock was
    /// lowered under what orders hold. Not repairable; add stock.
    pub units_over_stock: i64,
    /// Units one shard lent and another has not taken in yet (a move stopped halfway); a
    /// repair finishes it. 0 for a sale on one shard.
    pub units_in_transit: i64,
    /// The same check per shard (conservation holds on each), one entry per shard.
    pub shards: Vec<ShardCheck>,
    pub consistent: bool,
    pub repaired: Option<Repair>,
}

/// One shard's part of a report: its stock (share + taken in - lent), what remains, what
/// its buyers' reservations hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheck {
    pub shard: u16,
    pub stock: i64,
    pub remaining: Option<i64>,
    pub reserved_units: i64,
    pub drift: i64,
    pub consistent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Reservations taken from cancelled or refunded orders.
    pub released: i64,
    /// Reservations given back to live orders.
    pub restored: i64,
    /// Request ids mapped again to their orders (a retry gets the original order).
    pub requests_restored: i64,
    /// Request ids Redis maps to another order than the database's (left as they are).
    pub request_conflicts: i64,
    pub remaining: i64,
}

/// One order of the sale as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaleOrder {
    pub id: OrderId,
    pub user_id: UserId,
    pub status: OrderStatus,
    pub request_id: RequestId,
    pub quantity: Quantity,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Statuses whose orders hold no stock.
impl SaleOrder {
    /// Cancelled or refunded: its units went back to the sale.
    pub fn is_dead(&self) -> bool {
        matches!(self.status, OrderStatus::Cancelled | OrderStatus::Refunded)
    }
}

/// The reservations the reserve step recorded for these orders, rebuilt from their rows.
pub fn reservations(orders: &[&SaleOrder]) -> Vec<Reservation> {
    orders
        .iter()
        .map(|o| Reservation {
            order_id: o.id,
            user_id: o.user_id,
            quantity: o.quantity,
            reserved_at_ms: o.created_at.timestamp_millis(),
            request_id: o.request_id.clone(),
        })
        .collect()
}

/// What Redis holds of one sale, read for a comparison.
#[derive(Debug, Clone, Default)]
pub struct RedisView {
    /// `None` when the sale is not loaded.
    pub remaining: Option<i64>,
    pub reservations: Vec<Reservation>,
    /// Units per buyer, as the buyers hash has them.
    pub buyers: HashMap<i64, i64>,
}

/// Redis' view of a sale on one shard against the database's orders: the comparison
/// itself, no I/O.
pub fn compare(promotion: &Promotion, redis: &RedisView, orders: &[SaleOrder]) -> ReconcileReport {
    let report = compare_shard(promotion, promotion.stock, redis, orders);
    combine(promotion, vec![(0, report)], 0)
}

/// One shard's view against its buyers' orders, `stock` being what the shard has to sell.
pub fn compare_shard(
    promotion: &Promotion,
    stock: i64,
    redis: &RedisView,
    orders: &[SaleOrder],
) -> ReconcileReport {
    let reservations = &redis.reservations;
    let reserved: HashMap<OrderId, &Reservation> = reservations.iter().map(|r| (r.order_id, r)).collect();
    let in_db: HashSet<OrderId> = orders.iter().map(|o| o.id).collect();
    let is_dead = |o: &SaleOrder| o.is_dead();
    let live: Vec<&SaleOrder> = orders.iter().filter(|o| !is_dead(o)).collect();
    let mut missing: Vec<OrderId> = live
        .iter()
        .map(|o| o.id)
        .filter(|id| !reserved.contains_key(id))
        .collect();
    missing.sort();
    let mut of_cancelled: Vec<OrderId> = orders
        .iter()
        .filter(|o| is_dead(o))
        .map(|o| o.id)
        .filter(|id| reserved.contains_key(id))
        .collect();
    of_cancelled.sort();

    let reserved_units: i64 = reservations.iter().map(|r| i64::from(r.quantity.get())).sum();
    let mut per_user: HashMap<i64, i64> = HashMap::new();
    for r in reservations {
        *per_user.entry(r.user_id.get()).or_default() += i64::from(r.quantity.get());
    }
    let buyers = &redis.buyers;
    let mut buyers_mismatched: Vec<i64> = per_user
        .keys()
        .chain(buyers.keys())
        .copied()
        .collect::<HashSet<i64>>()
        .into_iter()
        .filter(|user| per_user.get(user).copied().unwrap_or(0) != buyers.get(user).copied().unwrap_or(0))
        .collect();
    buyers_mismatched.sort();
    let remaining = redis.remaining;
    let drift = remaining.map_or(0, |r| stock - (r + reserved_units));
    let units_over_stock = remaining.map_or(0, |r| (-r).max(0));
    let consistent = drift == 0
        && units_over_stock == 0
        && missing.is_empty()
        && of_cancelled.is_empty()
        && buyers_mismatched.is_empty();
    ReconcileReport {
        promotion_id: promotion.id,
        stock,
        remaining,
        reserved_units,
        drift,
        live_orders_in_db: live.len() as i64,
        reservations_not_in_db: reservations
            .iter()
            .filter(|r| !in_db.contains(&r.order_id))
            .count() as i64,
        orders_missing_in_redis: missing,
        reservations_of_cancelled_orders: of_cancelled,
        buyers_mismatched,
        units_over_stock,
        units_in_transit: 0,
        shards: Vec::new(),
        consistent,
        repaired: None,
    }
}

/// A sale's report from its shards' (`compare_shard`), with the units on their way
/// between shards: consistent when every shard is and nothing is on its way.
pub fn combine(
    promotion: &Promotion,
    shards: Vec<(u16, ReconcileReport)>,
    units_in_transit: i64,
) -> ReconcileReport {
    let mut total = ReconcileReport {
        promotion_id: promotion.id,
        stock: promotion.stock,
        remaining: Some(0),
        reserved_units: 0,
        drift: 0,
        live_orders_in_db: 0,
        reservations_not_in_db: 0,
        orders_missing_in_redis: Vec::new(),
        reservations_of_cancelled_orders: Vec::new(),
        buyers_mismatched: Vec::new(),
        units_over_stock: 0,
        units_in_transit,
        shards: Vec::new(),
        consistent: units_in_transit == 0,
        repaired: None,
    };
    for (shard, r) in shards {
        total.remaining = total.remaining.zip(r.remaining).map(|(a, b)| a + b);
        total.reserved_units += r.reserved_units;
        total.drift += r.drift;
        total.live_orders_in_db += r.live_orders_in_db;
        total.reservations_not_in_db += r.reservations_not_in_db;
        total.orders_missing_in_redis.extend(r.orders_missing_in_redis);
        total
            .reservations_of_cancelled_orders
            .extend(r.reservations_of_cancelled_orders);
        total.buyers_mismatched.extend(r.buyers_mismatched);
        total.units_over_stock += r.units_over_stock;
        total.consistent &= r.consistent;
        total.shards.push(ShardCheck {
            shard,
            stock: r.stock,
            remaining: r.remaining,
            reserved_units: r.reserved_units,
            drift: r.drift,
            consistent: r.consistent,
        });
    }
    total.orders_missing_in_redis.sort();
    total.reservations_of_cancelled_orders.sort();
    total.buyers_mismatched.sort();
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn sale(stock: i64) -> Promotion {
        let now = Utc::now();
        Promotion {
            id: 1,
            sku_id: "sku".into(),
            title: "t".into(),
            price_cents: 100,
            stock,
            per_user_limit: 2,
            starts_at: now,
            ends_at: now + chrono::Duration::hours(1),
            paused: false,
            created_at: now,
            updated_at: now,
            revision: 1,
            access: Default::default(),
            shards: 1,
        }
    }

    fn order(id: i64, user_id: i64, status: &str) -> SaleOrder {
        SaleOrder {
            id: OrderId(id),
            user_id: UserId::parse(user_id).expect("a user"),
            status: status.parse().expect("a known status"),
            request_id: RequestId::parse(format!("r{id}")).expect("a request id"),
            quantity: Quantity::parse(1).expect("a quantity"),
            created_at: Utc::now(),
        }
    }

    fn reservation(id: i64, user_id: i64) -> Reservation {
        Reservation {
            order_id: OrderId(id),
            user_id: UserId::parse(user_id).expect("a user"),
            quantity: Quantity::parse(1).expect("a quantity"),
            reserved_at_ms: 0,
            request_id: RequestId::parse(format!("r{id}")).expect("a request id"),
        }
    }

    #[test]
    fn a_quiet_sale_whose_counters_match_its_orders_is_consistent() {
        let redis = RedisView {
            remaining: Some(8),
            reservations: vec![reservation(1, 10), reservation(2, 11)],
            buyers: HashMap::from([(10, 1), (11, 1)]),
        };
        let orders = [order(1, 10, "paid"), order(3, 12, "cancelled")];
        let report = compare(&sale(10), &redis, &orders);
        assert!(report.consistent, "{report:?}");
        assert_eq!(
            (
                report.reserved_units,
                report.live_orders_in_db,
                report.reservations_not_in_db
            ),
            (2, 1, 1),
            "order 2 is still in flight: not drift"
        );
    }

    #[test]
    fn each_kind_of_drift_is_named() {
        let redis = RedisView {
            remaining: Some(9),
            // Order 3 was cancelled but keeps its unit; order 1 lost its reservation.
            reservations: vec![reservation(2, 11), reservation(3, 12)],
            buyers: HashMap::from([(11, 1), (12, 2)]),
        };
        let orders = [
            order(1, 10, "pending_payment"),
            order(2, 11, "paid"),
            order(3, 12, "refunded"),
        ];
        let report = compare(&sale(10), &redis, &orders);
        assert!(!report.consistent);
        assert_eq!(report.drift, 10 - (9 + 2));
        assert_eq!(report.orders_missing_in_redis, vec![OrderId(1)]);
        assert_eq!(report.reservations_of_cancelled_orders, vec![OrderId(3)]);
        assert_eq!(report.buyers_mismatched, vec![12]);
    }

    #[test]
    fn a_stock_below_the_reserved_units_is_reported_even_without_drift() {
        let redis = RedisView {
            remaining: Some(-1),
            reservations: vec![reservation(1, 10), reservation(2, 11)],
            buyers: HashMap::from([(10, 1), (11, 1)]),
        };
        let orders = [order(1, 10, "paid"), order(2, 11, "paid")];
        let report = compare(&sale(1), &redis, &orders);
        assert_eq!(
            (report.drift, report.units_over_stock, report.consistent),
            (0, 1, false)
        );
    }
}
