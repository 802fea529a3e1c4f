//! An order's status as its owner sees it, from whichever store can vouch for it.
//!
//! Every accepted buyer's app polls until its order leaves `queued`: the flood's second wave.
//! While the order's sale is current (held by the caller, the gateway's cache), Redis answers
//! alone: `queued` from the reservation and the pending set, then the status marker the
//! writer records once the order is persisted (and the payment and lifecycle paths move
//! forward). PostgreSQL answers for checkout orders, sales that have cooled down, and markers
//! that are missing or older than the reader's `marker_max_age` (a marker write a crash
//! skipped is thereby stale for at most that long; a writer that died before its Redis step
//! leaves `queued` until the sweeper takes the stored order out of the pending set). An order
//! of a month past the retention comes from that month's archive file (`archived`, its final
//! status). Another user's order is indistinguishable from a missing one.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use crate::domain::ids::{OrderId, Quantity, UserId};
use crate::domain::orders::{OrderView, SeenStatus};
use crate::domain::shards::SaleShards;
use crate::postgres::order_data::{self, OrderDataError};
use crate::postgres::orders;
use crate::postgres::promotions::PromotionRepo;
use crate::redis::stock::{OrderInRedis, StatusMarker, StockError};
use crate::runtime::transient::Transient;

/// Where a poll of a seckill order is answered first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstAsked {
    /// Redis while the sale is current, the database otherwise (the default).
    Redis,
    /// The database for every poll, Redis only for orders not yet stored (the earlier path,
    /// kept to measure against and to fall back to).
    Database,
}

/// A sale the caller holds as current, as the status lookup needs it.
#[derive(Debug, Clone, Copy)]
pub struct CurrentSale {
    pub sale: SaleShards,
    pub unit_price_cents: i64,
}

/// The sales the caller holds as current (the gateway's promotion cache).
pub trait CurrentSales {
    /// The current sales that ran when `at_ms` was (within the id minting margin).
    fn running_around(&self, at_ms: i64) -> Vec<CurrentSale>;
    /// A current sale by id.
    fn get(&self, promotion_id: i64) -> Option<CurrentSale>;
}

/// How far outside a sale's window an order id of that sale may be stamped (the clocks of
/// minting and of the sale window are both Redis', as gateways read it; the margin covers
/// their reading errors and borrowed milliseconds).
pub const MINT_MARGIN: Duration = Duration::from_secs(60);

/// A store failed while an order's status was worked out.
#[derive(Debug, thiserror::Error)]
pub enum StatusLookupError {
    #[error("look up an order in Redis: {0}")]
    Redis(#[from] StockError),
    #[error("read an order: {0}")]
    Database(#[from] sqlx::Error),
    #[error("read an archived order: {0}")]
    Archive(#[from] OrderDataError),
}

impl Transient for StatusLookupError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Redis(e) => e.is_transient(),
            Self::Database(e) => e.is_transient(),
            Self::Archive(e) => e.is_transient(),
        }
    }
}

/// Reads orders' statuses; built once per process.
#[derive(Debug, Clone)]
pub struct OrderStatusReader {
    stock: crate::redis::stock::StockStore,
    db: sqlx::PgPool,
    promotions: PromotionRepo,
    archive_dir: PathBuf,
    first_asked: FirstAsked,
    marker_max_age: Duration,
}

impl OrderStatusReader {
    pub fn new(
        stock: crate::redis::stock::StockStore,
        db: sqlx::PgPool,
        archive_dir: PathBuf,
        first_asked: FirstAsked,
        marker_max_age: Duration,
    ) -> Self {
        Self {
            stock,
            promotions: PromotionRepo::new(db.clone()),
            db,
            archive_dir,
            first_asked,
            marker_max_age,
        }
    }

    /// The order as it stands for `user_id`, or `None` when it is missing or another user's.
    pub async fn current(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        user_id: UserId,
    ) -> Result<Option<OrderView>, StatusLookupError> {
        // What the current sales hold of the order, read at most once per answer.
        let mut in_redis = None;
        if self.first_asked == FirstAsked::Redis {
            let found = self.held_by_current_sale(sales, order_id, user_id).await?;
            if let Some((sale, seen)) = &found {
                match judge(seen, order_id, *sale, user_id, self.marker_max_age) {
                    FromRedis::Order(view) => return Ok(Some(view)),
                    FromRedis::NotTheirs => return Ok(None),
                    FromRedis::AskDatabase => {}
                }
            }
            in_redis = Some(found);
        }
        if let Some(order) = orders::find_for_user(&self.db, order_id, user_id.get()).await? {
            return Ok(Some(order));
        }
        // Not in the database: an accepted order still on its way there.
        let found = match in_redis {
            Some(found) => found,
            None => self.held_by_current_sale(sales, order_id, user_id).await?,
        };
        if let Some((sale, seen)) = found {
            return Ok(seen
                .reservation
                .filter(|r| r.user_id == user_id)
                .map(|r| queued(order_id, sale, r.quantity, r.reserved_at_ms)));
        }
        // Older than the retention: its month went to the archive. Asked after the current
        // sales, so the polls of orders still on their way (the common miss) do not pay for
        // it, and before the older sales' Redis keys, which are gone by then.
        if let Some(order) =
            order_data::find_archived(&self.db, &self.archive_dir, order_id, user_id.get()).await?
        {
            return Ok(Some(order));
        }
        // Of a sale the caller does not hold: created a moment ago elsewhere, or over for a
        // while.
        for sale in self.sales_in_database_around(order_id).await? {
            if let Some(view) = self.queued_elsewhere(sales, order_id, sale, user_id).await? {
                return Ok(Some(view));
            }
        }
        Ok(None)
    }

    /// The current sale that holds the order in Redis, with what it holds: looked up in the
    /// sales that ran when the order id was minted (usually one).
    async fn held_by_current_sale(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        user_id: UserId,
    ) -> Result<Option<(CurrentSale, OrderInRedis)>, StockError> {
        let candidates = sales.running_around(order_id.minted_at_ms());
        if candidates.is_empty() {
            return Ok(None);
        }
        let shards: Vec<_> = candidates.iter().map(|c| c.sale).collect();
        let found = self.stock.find_order(&shards, user_id, order_id).await?;
        Ok(found.map(|(index, seen)| (candidates[index], seen)))
    }

    /// Every sale, current or not, that ran when the order id was minted.
    async fn sales_in_database_around(&self, order_id: OrderId) -> sqlx::Result<Vec<SaleShards>> {
        let Some(minted) = at_ms(order_id.minted_at_ms()) else {
            return Ok(Vec::new());
        };
        let margin = chrono::Duration::from_std(MINT_MARGIN).unwrap_or_default();
        self.promotions.sales_running_around(minted, margin).await
    }

    /// Not in the database: an accepted order still on its way there, of a sale the caller
    /// does not hold (yet).
    async fn queued_elsewhere(
        &self,
        sales: &impl CurrentSales,
        order_id: OrderId,
        sale: SaleShards,
        user_id: UserId,
    ) -> Result<Option<OrderView>, StockError> {
        let Some(reservation) = self
            .stock
            .reservation(sale.shard_of(user_id.get()), order_id)
            .await?
            .filter(|r| r.user_id == user_id)
        else {
            return Ok(None);
        };
        let current = CurrentSale {
            sale,
            unit_price_cents: sales.get(sale.id()).map_or(0, |c| c.unit_price_cents),
        };
        Ok(Some(queued(
            order_id,
            current,
            reservation.quantity,
            reservation.reserved_at_ms,
        )))
    }
}

/// What Redis can say of a seckill order without the database.
enum FromRedis {
    Order(OrderView),
    /// Another user's order: answered as missing.
    NotTheirs,
    /// Not a seckill order of a current sale, or Redis cannot vouch for it.
    AskDatabase,
}

/// Redis' view of one order, judged: the marker when it is the buyer's and fresh, `queued`
/// while the reservation waits in the pending set, else the database.
fn judge(
    seen: &OrderInRedis,
    order_id: OrderId,
    sale: CurrentSale,
    user_id: UserId,
    max_age: Duration,
) -> FromRedis {
    if let Some(marker) = &seen.marker {
        if marker.user_id != user_id {
            return FromRedis::NotTheirs;
        }
        return match fresh(marker, seen.now_ms, max_age) {
            true => FromRedis::Order(OrderView {
                order_id,
                status: SeenStatus::Stored(marker.status),
                kind: "seckill".to_owned(),
                promotion_id: Some(sale.sale.id()),
                total_cents: marker.total_cents,
                expires_at: marker.expires_at_ms.and_then(at_ms),
                created_at: at_ms(marker.created_at_ms).unwrap_or_else(Utc::now),
                archived: false,
            }),
            false => FromRedis::AskDatabase,
        };
    }
    match &seen.reservation {
        Some(r) if r.user_id != user_id => FromRedis::NotTheirs,
        Some(r) if seen.pending => FromRedis::Order(queued(order_id, sale, r.quantity, r.reserved_at_ms)),
        // Persisted without a marker (its write failed), or released: the database knows.
        _ => FromRedis::AskDatabase,
    }
}

/// A marker is trusted for `max_age` after it was written, and an unpaid one not past its
/// expiry (the canceller may have cancelled it since).
fn fresh(marker: &StatusMarker, now_ms: i64, max_age: Duration) -> bool {
    let young = now_ms - marker.written_at_ms <= max_age.as_millis() as i64;
    young && !marker.unpaid_past_expiry(now_ms)
}

fn at_ms(ms: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms).single()
}

fn queued(order_id: OrderId, sale: CurrentSale, quantity: Quantity, reserved_at_ms: i64) -> OrderView {
    OrderView {
        order_id,
        status: SeenStatus::Queued,
        kind: "seckill".to_owned(),
        promotion_id: Some(sale.sale.id()),
        total_cents: sale.unit_price_cents * i64::from(quantity.get()),
        expires_at: None,
        created_at: at_ms(reserved_at_ms).unwrap_or_else(Utc::now),
        archived: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::RequestId;
    use crate::domain::lifecycle::OrderStatus;
    use crate::domain::reservation::Reservation;

    fn marker(status: OrderStatus, written_at_ms: i64, expires_at_ms: Option<i64>) -> StatusMarker {
        StatusMarker {
            status,
            user_id: UserId::parse(7).expect("a user"),
            total_cents: 300,
            expires_at_ms,
            created_at_ms: 1_000,
            written_at_ms,
        }
    }

    fn seen(marker: Option<StatusMarker>, pending: bool, now_ms: i64) -> OrderInRedis {
        OrderInRedis {
            reservation: Some(Reservation {
                order_id: OrderId(5),
                user_id: UserId::parse(7).expect("a user"),
                quantity: Quantity::parse(3).expect("three units"),
                reserved_at_ms: 1_000,
                request_id: RequestId::parse("r").expect("a request id"),
            }),
            pending,
            marker,
            now_ms,
        }
    }

    fn status(answer: FromRedis) -> Option<String> {
        match answer {
            FromRedis::Order(view) => Some(view.status.to_string()),
            FromRedis::NotTheirs => Some("not theirs".into()),
            FromRedis::AskDatabase => None,
        }
    }

    #[test]
    fn redis_answers_queued_then_fresh_markers_and_leaves_the_rest_to_the_database() {
        let age = Duration::from_secs(60);
        let sale = CurrentSale {
            sale: SaleShards::new(2, 1).expect("valid shards"),
            unit_price_cents: 100,
        };
        let judged = |s: &OrderInRedis, user| {
            let user = UserId::parse(user).expect("a user");
            status(judge(s, OrderId(5), sale, user, age))
        };
        assert_eq!(judged(&seen(None, true, 2_000), 7), Some("queued".into()));
        assert_eq!(judged(&seen(None, true, 2_000), 8), Some("not theirs".into()));
        assert_eq!(
            judged(&seen(None, false, 2_000), 7),
            None,
            "persisted, marker missing"
        );
        let paid = marker(OrderStatus::Paid, 2_000, Some(900_000));
        assert_eq!(
            judged(&seen(Some(paid.clone()), false, 3_000), 7),
            Some("paid".into())
        );
        assert_eq!(
            judged(&seen(Some(paid), false, 62_001), 7),
            None,
            "older than the max age"
        );
        let unpaid = marker(OrderStatus::PendingPayment, 2_000, Some(10_000));
        assert_eq!(
            judged(&seen(Some(unpaid.clone()), false, 9_999), 7),
            Some("pending_payment".into())
        );
        assert_eq!(
            judged(&seen(Some(unpaid), false, 10_000), 7),
            None,
            "past its expiry"
        );
    }
}
