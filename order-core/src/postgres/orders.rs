//! Reading orders as their owner sees them: one by id, or a page of a user's orders.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::lifecycle::ALL_STATUSES;
use crate::domain::orders::{OrderView, SeenStatus};
use crate::domain::reconcile::SaleOrder;
use crate::postgres::stored;

struct OrderRow {
    id: i64,
    status: String,
    kind: String,
    promotion_id: Option<i64>,
    total_cents: i64,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// One order of a sale as its row reads.
struct SaleOrderRow {
    id: i64,
    user_id: i64,
    status: String,
    request_id: String,
    quantity: i32,
    created_at: DateTime<Utc>,
}

impl TryFrom<OrderRow> for OrderView {
    type Error = sqlx::Error;

    fn try_from(r: OrderRow) -> sqlx::Result<Self> {
        Ok(OrderView {
            order_id: OrderId(r.id),
            status: SeenStatus::Stored(stored(&r.status)?),
            kind: r.kind,
            promotion_id: r.promotion_id,
            total_cents: r.total_cents,
            expires_at: r.expires_at,
            created_at: r.created_at,
            archived: false,
        })
    }
}

/// The order with this id if `user_id` owns it; another user's order looks absent.
pub async fn find_for_user(
    pool: &PgPool,
    order_id: OrderId,
    user_id: i64,
) -> sqlx::Result<Option<OrderView>> {
    let row = sqlx::query_as!(
        OrderRow,
        "SELECT id, status, kind, promotion_id, total_cents, expires_at, created_at
         FROM orders WHERE id = $1 AND user_id = $2",
        order_id.0,
        user_id,
    )
    .fetch_optional(pool)
    .await?;
    row.map(OrderView::try_from).transpose()
}

/// A user's orders, newest first, keyset-paginated by id.
pub async fn list_for_user(
    pool: &PgPool,
    user_id: i64,
    before_id: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<OrderView>> {
    let rows = sqlx::query_as!(
        OrderRow,
        "SELECT id, status, kind, promotion_id, total_cents, expires_at, created_at
         FROM orders WHERE user_id = $1 AND ($2::BIGINT IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
        user_id,
        before_id,
        limit,
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(OrderView::try_from).collect()
}

/// Every order of a sale, with its units, for reconciliation; read from the partitions of
/// the ids the sale could mint only (`sale_order_ids`).
pub async fn orders_of_sale(db: &PgPool, promotion_id: i64) -> sqlx::Result<Vec<SaleOrder>> {
    let rows = sqlx::query_as!(
        SaleOrderRow,
        r#"WITH sale AS (SELECT first_id, end_id FROM sale_order_ids($1))
           SELECT o.id, o.user_id, o.status, o.request_id,
                  COALESCE(SUM(i.quantity), 0)::INTEGER AS "quantity!", o.created_at
           FROM orders o LEFT JOIN order_items i ON i.order_id = o.id
             AND i.order_id >= (SELECT first_id FROM sale) AND i.order_id < (SELECT end_id FROM sale)
           WHERE o.promotion_id = $1
             AND o.id >= (SELECT first_id FROM sale) AND o.id < (SELECT end_id FROM sale)
           GROUP BY o.id"#,
        promotion_id,
    )
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            // Written from a validated event: a row that fails the edge's rules is corrupt,
            // and counting it as anything would move stock.
            let corrupt =
                |field: &str| sqlx::Error::Decode(format!("order {}: invalid {field}", r.id).into());
            Ok(SaleOrder {
                id: OrderId(r.id),
                user_id: UserId::parse(r.user_id).map_err(|_| corrupt("user_id"))?,
                status: stored(&r.status)?,
                request_id: RequestId::parse(r.request_id).map_err(|_| corrupt("request_id"))?,
                quantity: Quantity::parse(r.quantity.into()).map_err(|_| corrupt("quantity"))?,
                created_at: r.created_at,
            })
        })
        .collect()
}

/// A sale's order counts by status: one index-only count per status over the ids the sale
/// could mint (`sale_order_ids`), so it reads only that range of the index, with no sort.
pub async fn order_counts(db: &PgPool, promotion_id: i64) -> sqlx::Result<HashMap<String, i64>> {
    let statuses: Vec<&str> = ALL_STATUSES.iter().map(|s| s.as_str()).collect();
    let rows = sqlx::query!(
        r#"WITH sale AS (SELECT first_id, end_id FROM sale_order_ids($1))
           SELECT s.status AS "status!",
                  (SELECT count(*) FROM orders o
                   WHERE o.promotion_id = $1 AND o.status = s.status
                     AND o.id >= (SELECT first_id FROM sale) AND o.id < (SELECT end_id FROM sale)) AS "count!"
           FROM UNNEST($2::TEXT[]) AS s(status)"#,
        promotion_id,
        &statuses as &[&str],
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|r| r.count > 0)
        .map(|r| (r.status, r.count))
        .collect())
}
