//! Orders as Redis knows them: reservations by order or request id, and the status markers
//! the writer and the lifecycle paths write (`order_persisted.lua`, `order_status.lua`,
//! `order_view.lua`) that answer order polls without the database.

use super::*;

// This file's scripts (`lua/`), loaded into `StockStore`'s script set.
pub(super) const ORDER_PERSISTED_LUA: &str = include_str!("../../../../lua/order_persisted.lua");
pub(super) const ORDER_STATUS_LUA: &str = include_str!("../../../../lua/order_status.lua");
pub(super) const ORDER_VIEW_LUA: &str = include_str!("../../../../lua/order_view.lua");

/// The channel every status marker change is published on (the order id as the message):
/// each gateway subscribes once and wakes the long polls of that order.
pub const ORDER_STATUS_CHANNEL: &str = "seckill:order-status";

/// A persisted order as the writer hands it to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistedOrder {
    pub sale: SaleShards,
    pub order_id: OrderId,
    pub status: OrderStatus,
    pub user_id: UserId,
    pub total_cents: i64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// What the database held of an order when its marker was last written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMarker {
    pub status: OrderStatus,
    pub user_id: UserId,
    pub total_cents: i64,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    /// On Redis' clock.
    pub written_at_ms: i64,
}

impl StatusMarker {
    /// Unpaid and past its expiry: the canceller may have cancelled it since, so the marker
    /// no longer answers for the order.
    pub fn unpaid_past_expiry(&self, now_ms: i64) -> bool {
        self.status == OrderStatus::PendingPayment && self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// One seckill order as Redis holds it, with Redis' clock at the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderInRedis {
    pub reservation: Option<Reservation>,
    /// Accepted and not yet persisted.
    pub pending: bool,
    pub marker: Option<StatusMarker>,
    pub now_ms: i64,
}

/// `rank|status|user|total|expires_ms|created_ms|written_ms`.
pub(super) fn decode_marker(raw: &str) -> Option<StatusMarker> {
    let mut parts = raw.split('|');
    let _rank = parts.next()?;
    let status = parts.next()?.parse().ok()?;
    let user_id = UserId::parse(parts.next()?.parse().ok()?).ok()?;
    let total_cents = parts.next()?.parse().ok()?;
    let expires_at_ms: i64 = parts.next()?.parse().ok()?;
    let created_at_ms = parts.next()?.parse().ok()?;
    let written_at_ms = parts.next()?.parse().ok()?;
    Some(StatusMarker {
        status,
        user_id,
        total_cents,
        expires_at_ms: (expires_at_ms > 0).then_some(expires_at_ms),
        created_at_ms,
        written_at_ms,
    })
}

impl StockStore {
    pub async fn reservation(
        &self,
        shard: Shard,
        order_id: OrderId,
    ) -> Result<Option<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let payload: Option<String> = redis::cmd("HGET")
            .arg(SaleKeys::of(shard).reservations)
            .arg(order_id.0)
            .query_async(&mut conn)
            .await?;
        Ok(payload.and_then(|p| decode_reservation(order_id, &p)))
    }

    /// The order a user's request id reserved, if any (read only): answers a retry for a
    /// sale the gateway no longer lists (ended long ago) with the order it holds.
    pub async fn order_for_request(
        &self,
        sale: SaleShards,
        user_id: UserId,
        request_id: &RequestId,
    ) -> Result<Option<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let id: Option<String> = redis::cmd("HGET")
            .arg(SaleKeys::of(sale.shard_of(user_id.get())).requests)
            .arg(format!("{user_id}:{request_id}"))
            .query_async(&mut conn)
            .await?;
        Ok(id.and_then(|id| id.parse().ok()))
    }

    /// Record what the database holds of orders just persisted: their status markers answer
    /// buyers' polls without the database, and their long polls wake (`order_persisted.lua`,
    /// once per shard). The orders leave the pending set.
    pub async fn mark_persisted(&self, orders: &[PersistedOrder]) -> Result<(), StockError> {
        let mut by_shard: HashMap<Shard, Vec<&PersistedOrder>> = HashMap::new();
        for order in orders {
            by_shard
                .entry(order.sale.shard_of(order.user_id.get()))
                .or_default()
                .push(order);
        }
        let mut conn = self.conn.clone();
        for (shard, orders) in by_shard {
            let k = SaleKeys::of(shard);
            let mut invocation = self.scripts.order_persisted.key(&k.orders);
            invocation.key(&k.pending).arg(ORDER_STATUS_CHANNEL);
            for o in orders {
                invocation
                    .arg(o.order_id.0)
                    .arg(o.status.rank())
                    .arg(o.status.as_str())
                    .arg(o.user_id.get())
                    .arg(o.total_cents)
                    .arg(o.expires_at_ms.unwrap_or(0))
                    .arg(o.created_at_ms);
            }
            let _written: i64 = invocation.invoke_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Move a persisted order's marker to a later status after the database committed it
    /// (`order_status.lua` on its buyer's shard); `false` when Redis holds no marker or a
    /// later one.
    pub async fn mark_status(
        &self,
        shard: Shard,
        order_id: OrderId,
        status: OrderStatus,
    ) -> Result<bool, StockError> {
        let mut conn = self.conn.clone();
        let moved: i64 = self
            .scripts
            .order_status
            .key(SaleKeys::of(shard).orders)
            .arg(ORDER_STATUS_CHANNEL)
            .arg(order_id.0)
            .arg(status.rank())
            .arg(status.as_str())
            .invoke_async(&mut conn)
            .await?;
        Ok(moved == 1)
    }

    /// What Redis knows of one seckill order, read atomically on its buyer's shard
    /// (`order_view.lua`).
    pub async fn order_in_redis(&self, shard: Shard, order_id: OrderId) -> Result<OrderInRedis, StockError> {
        let k = SaleKeys::of(shard);
        let mut conn = self.conn.clone();
        let (reservation, pending, marker, now_ms): (String, i64, String, i64) = self
            .scripts
            .order_view
            .key(&k.reservations)
            .key(&k.pending)
            .key(&k.orders)
            .arg(order_id.0)
            .invoke_async(&mut conn)
            .await?;
        let marker = match marker.as_str() {
            "" => None,
            raw => Some(decode_marker(raw).ok_or_else(|| StockError::UnexpectedReply {
                script: "order_view.lua",
                reply: raw.to_owned(),
            })?),
        };
        Ok(OrderInRedis {
            reservation: decode_reservation(order_id, &reservation),
            pending: pending == 1,
            marker,
            now_ms,
        })
    }

    /// Which of `sales` holds `order_id` of buyer `user_id` (a reservation or a status
    /// marker), as its index in the slice, and what it holds, looked up in each at once.
    /// There is no index from order id to sale: accepting an order costs one Redis call, and
    /// a poll looks in the few sales that ran when the id was minted, on the buyer's shard.
    pub async fn find_order(
        &self,
        sales: &[SaleShards],
        user_id: UserId,
        order_id: OrderId,
    ) -> Result<Option<(usize, OrderInRedis)>, StockError> {
        let views = futures::future::try_join_all(
            sales
                .iter()
                .map(|sale| self.order_in_redis(sale.shard_of(user_id.get()), order_id)),
        )
        .await?;
        Ok(views
            .into_iter()
            .enumerate()
            .find(|(_, seen)| seen.reservation.is_some() || seen.marker.is_some() || seen.pending))
    }
}
