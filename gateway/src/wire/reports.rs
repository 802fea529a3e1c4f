//! Bodies of the reports the gateway answers with: reconciliation and readiness.

use std::collections::BTreeMap;

use order_core::domain::ids::OrderId;
use order_core::domain::reconcile::{ReconcileReport, Repair};
use order_core::runtime::readiness::{CheckResult, ReadinessReport};
use serde::Serialize;
use utoipa::ToSchema;

use crate::wire::OrderIdSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ReconcileReport)]
pub struct ReconcileReportBody {
    pub promotion_id: i64,
    pub stock: i64,
    /// `None` when the promotion is not loaded into Redis.
    pub remaining: Option<i64>,
    pub reserved_units: i64,
    /// stock - (remaining + reserved units); 0 when consistent.
    pub drift: i64,
    pub live_orders_in_db: i64,
    pub reservations_not_in_db: i64,
    #[schema(value_type = Vec<OrderIdSchema>)]
    pub orders_missing_in_redis: Vec<OrderId>,
    #[schema(value_type = Vec<OrderIdSchema>)]
    pub reservations_of_cancelled_orders: Vec<OrderId>,
    pub buyers_mismatched: Vec<i64>,
    /// Reserved units beyond the stock (Redis remaining below zero): the configured stock was
    /// lowered under what orders hold. Not repairable; add stock.
    pub units_over_stock: i64,
    /// Units one shard lent and another has not taken in yet (a move stopped halfway; the
    /// gateways finish it, and so does a repair).
    pub units_in_transit: i64,
    /// The same check per Redis shard: each shard's stock (its share, plus units taken in,
    /// less units lent) = its remaining + its buyers' reserved units.
    pub shards: Vec<ShardCheckBody>,
    pub consistent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repaired: Option<RepairBody>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ShardCheck)]
pub struct ShardCheckBody {
    pub shard: u16,
    pub stock: i64,
    pub remaining: Option<i64>,
    pub reserved_units: i64,
    pub drift: i64,
    pub consistent: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Repair)]
pub struct RepairBody {
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

impl From<ReconcileReport> for ReconcileReportBody {
    fn from(r: ReconcileReport) -> Self {
        Self {
            promotion_id: r.promotion_id,
            stock: r.stock,
            remaining: r.remaining,
            reserved_units: r.reserved_units,
            drift: r.drift,
            live_orders_in_db: r.live_orders_in_db,
            reservations_not_in_db: r.reservations_not_in_db,
            orders_missing_in_redis: r.orders_missing_in_redis,
            reservations_of_cancelled_orders: r.reservations_of_cancelled_orders,
            buyers_mismatched: r.buyers_mismatched,
            units_over_stock: r.units_over_stock,
            units_in_transit: r.units_in_transit,
            shards: r
                .shards
                .into_iter()
                .map(|c| ShardCheckBody {
                    shard: c.shard,
                    stock: c.stock,
                    remaining: c.remaining,
                    reserved_units: c.reserved_units,
                    drift: c.drift,
                    consistent: c.consistent,
                })
                .collect(),
            consistent: r.consistent,
            repaired: r.repaired.map(
                |Repair {
                     released,
                     restored,
                     requests_restored,
                     request_conflicts,
                     remaining,
                 }| {
                    RepairBody {
                        released,
                        restored,
                        requests_restored,
                        request_conflicts,
                        remaining,
                    }
                },
            ),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = CheckResult)]
pub struct CheckResultBody {
    pub ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub latency_ms: u64,
}

/// `{"ready": bool, "checks": {"redis": {...}, "database": {...}, "pulsar": {...}}}`
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = ReadinessReport)]
pub struct ReadinessBody {
    pub ready: bool,
    pub checks: BTreeMap<&'static str, CheckResultBody>,
}

impl From<ReadinessReport> for ReadinessBody {
    fn from(r: ReadinessReport) -> Self {
        Self {
            ready: r.ready,
            checks: r
                .checks
                .into_iter()
                .map(
                    |(
                        name,
                        CheckResult {
                            ready,
                            error,
                            latency_ms,
                        },
                    )| {
                        (
                            name,
                            CheckResultBody {
                                ready,
                                error,
                                latency_ms,
                            },
                        )
                    },
                )
                .collect(),
        }
    }
}
