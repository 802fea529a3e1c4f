//! Persisting accepted seckill orders: a whole batch in one transaction, idempotent, so a
//! redelivered message or a republished reservation changes nothing.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

// The order and its validation are the domain's: this module only stores it.
pub use crate::domain::accepted_order::{InvalidOrder, NewSeckillOrder};
use crate::domain::ids::{OrderId, RequestId, UserId};
use crate::domain::lifecycle::OrderStatus;

/// What became of one order of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderFate {
    /// Written by this batch.
    Inserted,
    /// Already stored, identical (a redelivered message or a republished copy).
    AlreadyStored,
    /// Not written: the database holds something else under its id or its request id.
    /// Never silently dropped: the writer raises an alarm and dead-letters the message.
    Conflict(Conflict),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("order id taken by another order (user {user_id}, request {request_id:?})")]
    IdTaken { user_id: i64, request_id: String },
    #[error("request id already holds order {0}")]
    RequestTaken(OrderId),
}

/// Why a batch was not persisted.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// The database failed (an outage or a bug: see `runtime::transient`).
    #[error("order database call")]
    Database(#[from] sqlx::Error),
    /// The database's answer contradicts itself or the code: a bug, not retried as an outage.
    #[error("inconsistent insert: {0}")]
    Inconsistent(String),
}

/// The fields two copies of one order must agree on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StoredOrder {
    id: i64,
    user_id: i64,
    promotion_id: Option<i64>,
    request_id: String,
    kind: String,
    total_cents: i64,
    status: String,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// What the database holds of an order a batch persisted (inserted now or found identical):
/// the writer hands it to Redis, which answers buyers' polls from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredState {
    pub status: OrderStatus,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl StoredOrder {
    /// Whether this row is the seckill order of `user_id`'s `request_id` in `promotion_id`.
    fn is_request(&self, promotion_id: i64, user_id: i64, request_id: &str) -> bool {
        self.kind == "seckill"
            && self.promotion_id == Some(promotion_id)
            && self.user_id == user_id
            && self.request_id == request_id
    }

    /// The conflict of finding this row under an order id that belongs to another order.
    fn taken(&self) -> Conflict {
        Conflict::IdTaken {
            user_id: self.user_id,
            request_id: self.request_id.clone(),
        }
    }
}

impl NewSeckillOrder {
    fn matches(&self, stored: &StoredOrder) -> bool {
        stored.id == self.order_id.0
            && stored.is_request(
                self.promotion_id.get(),
                self.user_id.get(),
                self.request_id.as_str(),
            )
            && stored.total_cents == self.total_cents()
    }
}

/// Insert the orders and their items in one transaction and say, per order (same index),
/// what became of it. Unpaid orders expire `payment_timeout` after they are persisted (not
/// accepted, so a backlog in Pulsar does not eat the buyer's time to pay).
///
/// `ON CONFLICT DO NOTHING` alone would hide a different order stored under the same id or
/// request id: every order it skipped is compared with what the database holds.
pub async fn insert_seckill_orders(
    pool: &PgPool,
    orders: &[NewSeckillOrder],
    payment_timeout: Duration,
) -> Result<Vec<OrderFate>, PersistError> {
    // Ungated: no deadline, and `go` is always yes; `Late` here means only that another
    // writer took a request key meanwhile, which the next attempt judges.
    for _ in 0..3 {
        match insert(pool, orders, payment_timeout, std::future::ready(true), None).await? {
            Paced::Written { fates, .. } => return Ok(fates),
            Paced::Late => continue,
            Paced::Stopped => break,
        }
    }
    Err(PersistError::Inconsistent(
        "an ungated insert was not written".into(),
    ))
}

/// How late an insert may run after its tokens were granted before it is refused.
pub const LATE_AFTER_GRANT: Duration = Duration::from_millis(20);

/// What a paced insert did.
#[derive(Debug)]
pub enum Paced {
    /// Written; `db_time` is how long the database took once the rows were cleared to go.
    Written {
        fates: Vec<OrderFate>,
        /// What the database holds of each order the batch persisted.
        stored: HashMap<OrderId, StoredState>,
        db_time: Duration,
    },
    /// The database ran the insert more than `LATE_AFTER_GRANT` after the grant (it stalled
    /// in between), or another writer committed one of the batch's request keys while it
    /// ran: nothing written; take new tokens and try again.
    Late,
    /// `go` said no (the writer is stopping): nothing written.
    Stopped,
}

/// `insert_seckill_orders`, cleared by `go` inside the open transaction, right before the
/// insert. A pace's tokens are thereby spent once the database answers, and the insert
/// itself refuses to run more than `LATE_AFTER_GRANT` after the grant (on the database's
/// own clock: `now()` at BEGIN plus the wait for `go`), so writers stuck on a stalled
/// database never insert, when it resumes, on tokens granted before or during the stall.
/// Rows are stamped with the time the insert ran (`clock_timestamp()`).
pub async fn insert_seckill_orders_when(
    pool: &PgPool,
    orders: &[NewSeckillOrder],
    payment_timeout: Duration,
    go: impl std::future::Future<Output = bool>,
) -> Result<Paced, PersistError> {
    insert(pool, orders, payment_timeout, go, Some(LATE_AFTER_GRANT)).await
}

async fn insert(
    pool: &PgPool,
    orders: &[NewSeckillOrder],
    payment_timeout: Duration,
    go: impl std::future::Future<Output = bool>,
    late_after: Option<Duration>,
) -> Result<Paced, PersistError> {
    if orders.is_empty() {
        return Ok(Paced::Written {
            fates: Vec::new(),
            stored: HashMap::new(),
            db_time: Duration::ZERO,
        });
    }
    // One row per order id is offered to the insert (the first copy); every copy is then
    // judged against what the database holds, so a different order under a taken id is a
    // conflict whether it came in this batch or an earlier one.
    // Likewise one order per request key: a second order of one request is judged, not
    // offered (the key table would refuse it and fail the whole batch).
    let mut seen: HashSet<OrderId> = HashSet::with_capacity(orders.len());
    let mut keys: HashSet<(i64, i64, &str)> = HashSet::with_capacity(orders.len());
    let first_copies: Vec<&NewSeckillOrder> = orders
        .iter()
        .filter(|o| seen.insert(o.order_id))
        .filter(|o| keys.insert((o.promotion_id.get(), o.user_id.get(), o.request_id.as_str())))
        .collect();
    let mut tx = pool.begin().await?;
    let began = std::time::Instant::now();
    if !go.await {
        tx.rollback().await?;
        return Ok(Paced::Stopped);
    }
    let cleared = std::time::Instant::now();
    let deadline = late_after.map(|slack| cleared - began + slack);
    let inserted = match insert_new(&mut tx, &first_copies, payment_timeout, deadline).await {
        // Another writer committed one of these request keys for another order id after
        // this statement's snapshot: the batch is retried, and judged against that order.
        Err(sqlx::Error::Database(e)) if e.constraint() == Some("orders_seckill_request") => {
            return Ok(Paced::Late);
        }
        other => other?,
    };
    let Some(inserted) = inserted else {
        tx.rollback().await?;
        return Ok(Paced::Late);
    };
    let inserted: HashSet<i64> = inserted.into_iter().collect();
    let stored = stored_for(&mut tx, orders).await?;
    tx.commit().await?;
    let db_time = cleared.elapsed();

    let by_id: HashMap<i64, &StoredOrder> = stored.iter().map(|s| (s.id, s)).collect();
    let by_request: HashMap<(Option<i64>, i64, &str), &StoredOrder> = stored
        .iter()
        .map(|s| ((s.promotion_id, s.user_id, s.request_id.as_str()), s))
        .collect();
    let mut reported_inserted: HashSet<OrderId> = HashSet::new();
    let fates = orders
        .iter()
        .map(|order| {
            if let Some(stored) = by_id.get(&order.order_id.0) {
                if !order.matches(stored) {
                    return Ok(OrderFate::Conflict(stored.taken()));
                }
                let fresh = inserted.contains(&order.order_id.0) && reported_inserted.insert(order.order_id);
                return Ok(if fresh {
                    OrderFate::Inserted
                } else {
                    OrderFate::AlreadyStored
                });
            }
            match by_request.get(&(
                Some(order.promotion_id.get()),
                order.user_id.get(),
                order.request_id.as_str(),
            )) {
                Some(stored) => Ok(OrderFate::Conflict(Conflict::RequestTaken(OrderId(stored.id)))),
                // Skipped, yet nothing stored explains it: let the caller retry the batch.
                None => Err(PersistError::Inconsistent(format!(
                    "order {} was not inserted and no stored row conflicts with it",
                    order.order_id
                ))),
            }
        })
        .collect::<Result<Vec<OrderFate>, PersistError>>()?;
    let stored = orders
        .iter()
        .zip(&fates)
        .filter(|(_, fate)| matches!(fate, OrderFate::Inserted | OrderFate::AlreadyStored))
        .filter_map(|(order, _)| by_id.get(&order.order_id.0))
        .map(|s| {
            let status = s
                .status
                .parse::<OrderStatus>()
                .map_err(|e| PersistError::Inconsistent(format!("order {} is stored with an {e}", s.id)))?;
            let state = StoredState {
                status,
                expires_at: s.expires_at,
                created_at: s.created_at,
            };
            Ok((OrderId(s.id), state))
        })
        .collect::<Result<HashMap<OrderId, StoredState>, PersistError>>()?;
    Ok(Paced::Written {
        fates,
        stored,
        db_time,
    })
}

/// The insert itself; returns the ids it wrote, or `None` when it ran later than
/// `now() + deadline` (the transaction's start on the database's clock) and wrote nothing.
/// Items are written only for orders this statement inserted, so an order skipped as a
/// duplicate never gets a second set of items.
async fn insert_new(
    tx: &mut sqlx::PgConnection,
    orders: &[&NewSeckillOrder],
    payment_timeout: Duration,
    deadline: Option<Duration>,
) -> sqlx::Result<Option<Vec<i64>>> {
    let ids: Vec<i64> = orders.iter().map(|o| o.order_id.0).collect();
    let users: Vec<i64> = orders.iter().map(|o| o.user_id.get()).collect();
    let promotions: Vec<i64> = orders.iter().map(|o| o.promotion_id.get()).collect();
    let requests: Vec<&str> = orders.iter().map(|o| o.request_id.as_str()).collect();
    let totals: Vec<i64> = orders.iter().map(|o| o.total_cents()).collect();
    let accepted: Vec<DateTime<Utc>> = orders.iter().map(|o| o.accepted_at).collect();
    let skus: Vec<&str> = orders.iter().map(|o| o.sku_id.as_str()).collect();
    let titles: Vec<&str> = orders.iter().map(|o| o.title.as_str()).collect();
    let quantities: Vec<i32> = orders.iter().map(|o| o.quantity.get() as i32).collect();
    let prices: Vec<i64> = orders.iter().map(|o| o.unit_price_cents).collect();
    let row = sqlx::query!(
        r#"WITH gate AS (
             SELECT $12::FLOAT8 IS NULL OR clock_timestamp() <= now() + make_interval(secs => $12) AS on_time
         ), batch AS (
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[],
                                  $6::TIMESTAMPTZ[], $7::TEXT[], $8::TEXT[], $9::INTEGER[], $10::BIGINT[])
                 AS t(id, user_id, promotion_id, request_id, total, accepted_at, sku_id, title, quantity, price)
             WHERE (SELECT on_time FROM gate)
               -- A request key another order holds: not offered (judged afterwards).
               AND NOT EXISTS (SELECT 1 FROM order_request_keys k
                               WHERE k.kind = 'seckill' AND k.promotion_id = t.promotion_id
                                 AND k.user_id = t.user_id AND k.request_id = t.request_id
                                 AND k.order_id <> t.id)
         ), inserted AS (
             INSERT INTO orders (id, user_id, kind, promotion_id, request_id, status, subtotal_cents,
                                 total_cents, expires_at, created_at, updated_at)
             SELECT id, user_id, 'seckill', promotion_id, request_id, 'pending_payment', total, total,
                    clock_timestamp() + make_interval(secs => $11), accepted_at, clock_timestamp()
             FROM batch
             ON CONFLICT DO NOTHING
             RETURNING id
         ), items AS (
             INSERT INTO order_items (order_id, line_no, sku_id, title, quantity, unit_price_cents)
             SELECT b.id, 1, b.sku_id, b.title, b.quantity, b.price FROM batch b JOIN inserted i ON i.id = b.id
             RETURNING order_id
         )
         SELECT (SELECT on_time FROM gate) AS "on_time!", ARRAY(SELECT order_id FROM items) AS "ids!""#,
        &ids,
        &users,
        &promotions,
        &requests as &[&str],
        &totals,
        &accepted,
        &skus as &[&str],
        &titles as &[&str],
        &quantities,
        &prices,
        payment_timeout.as_secs_f64(),
        deadline.map(|d| d.as_secs_f64()),
    )
    .fetch_one(&mut *tx)
    .await?;
    let (on_time, ids) = (row.on_time, row.ids);
    Ok(on_time.then_some(ids))
}

/// What the database holds under the ids or request ids of `orders`, this transaction's
/// inserts included. A separate statement after the insert: in READ COMMITTED it sees rows
/// another writer committed meanwhile.
async fn stored_for(
    tx: &mut sqlx::PgConnection,
    orders: &[NewSeckillOrder],
) -> sqlx::Result<Vec<StoredOrder>> {
    let ids: Vec<i64> = orders.iter().map(|o| o.order_id.0).collect();
    let promotions: Vec<i64> = orders.iter().map(|o| o.promotion_id.get()).collect();
    let users: Vec<i64> = orders.iter().map(|o| o.user_id.get()).collect();
    let requests: Vec<&str> = orders.iter().map(|o| o.request_id.as_str()).collect();
    sqlx::query_as!(
        StoredOrder,
        r#"SELECT id AS "id!", user_id AS "user_id!", promotion_id, request_id AS "request_id!", kind AS "kind!",
                  total_cents AS "total_cents!", status AS "status!", expires_at, created_at AS "created_at!"
         FROM orders WHERE id = ANY($1)
         UNION
         SELECT o.id, o.user_id, o.promotion_id, o.request_id, o.kind, o.total_cents, o.status, o.expires_at,
                o.created_at
         FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::TEXT[]) AS b(promotion_id, user_id, request_id)
         JOIN order_request_keys k
           ON k.kind = 'seckill' AND k.promotion_id = b.promotion_id AND k.user_id = b.user_id
          AND k.request_id = b.request_id
         JOIN orders o ON o.id = k.order_id"#,
        &ids,
        &promotions,
        &users,
        &requests as &[&str],
    )
    .fetch_all(&mut *tx)
    .await
}

/// The database's view of pending orders, for the sweeper: which are stored exactly as
/// reserved, which are stored as something else (an alarm), and which are missing.
#[derive(Debug, Default)]
pub struct StoredCheck {
    pub stored: HashSet<OrderId>,
    pub mismatched: Vec<(OrderId, Conflict)>,
}

/// Compare reservations (`order id`, `user`, `request id`) with the stored orders.
pub async fn check_stored(
    pool: &PgPool,
    promotion_id: i64,
    reserved: &[(OrderId, UserId, RequestId)],
) -> sqlx::Result<StoredCheck> {
    let ids: Vec<i64> = reserved.iter().map(|(id, _, _)| id.0).collect();
    let rows = sqlx::query_as!(
        StoredOrder,
        "SELECT id, user_id, promotion_id, request_id, kind, total_cents, status, expires_at, created_at
         FROM orders WHERE id = ANY($1)",
        &ids,
    )
    .fetch_all(pool)
    .await?;
    let by_id: HashMap<i64, StoredOrder> = rows.into_iter().map(|r| (r.id, r)).collect();
    let mut check = StoredCheck::default();
    for (id, user_id, request_id) in reserved {
        let Some(stored) = by_id.get(&id.0) else { continue };
        if stored.is_request(promotion_id, user_id.get(), request_id.as_str()) {
            check.stored.insert(*id);
        } else {
            check.mismatched.push((*id, stored.taken()));
        }
    }
    Ok(check)
}
