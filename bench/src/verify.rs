//! After a run, invariants 1–5 of ARCHITECTURE.md checked against what the bench saw and what
//! PostgreSQL and Redis hold: every 202 became exactly one order (none lost, none twice),
//! no oversell (database and Redis), no buyer over the limit, one order per request id, and
//! no second in which the writer inserted more rows than its pace allows.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use order_core::app::reconcile::reconcile;
use order_core::postgres::promotions::PromotionRepo;
use order_core::redis::stock::StockStore;
use serde::Serialize;
use sqlx::PgPool;

use crate::target::WriterPace;

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    /// Distinct orders answered 202.
    pub accepted: u64,
    /// Orders of the promotion in the database.
    pub persisted: u64,
    /// Answered 202, not in the database (invariant 2).
    pub lost: u64,
    /// In the database, never seen as a 202: only a request the bench gave up on (timeout,
    /// broken connection) may explain one.
    pub unanswered: u64,
    /// One request id with two orders, in the answers or in the database (invariant 4).
    pub duplicated: u64,
    /// Live units beyond the promotion's stock (invariant 1).
    pub oversold: i64,
    /// stock - (Redis remaining + reserved units); `None` where Redis is not involved.
    pub stock_drift: Option<i64>,
    /// Buyers holding more than the per-user limit (invariant 3).
    pub users_over_limit: u64,
    /// Most rows inserted within any one second (invariant 5); `None` for the baseline.
    pub max_rows_in_one_second: Option<u64>,
    pub failures: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    pub fn summary(&self) -> String {
        let verdict = if self.ok() {
            "invariants hold".to_owned()
        } else {
            format!("INVARIANTS BROKEN: {}", self.failures.join("; "))
        };
        format!(
            "{verdict} (accepted {}, persisted {}, lost {}, duplicated {}, oversold {}, over limit {}{}{})",
            self.accepted,
            self.persisted,
            self.lost,
            self.duplicated,
            self.oversold,
            self.users_over_limit,
            self.stock_drift
                .map(|d| format!(", stock drift {d}"))
                .unwrap_or_default(),
            self.max_rows_in_one_second
                .map(|m| format!(", most rows in one second {m}"))
                .unwrap_or_default(),
        )
    }
}

/// What the bench saw of one sale.
#[derive(Debug)]
pub struct Seen<'a> {
    pub promotion_id: i64,
    pub stock: i64,
    pub per_user_limit: u32,
    /// (user, request id) → order id, from the 202s.
    pub accepted: &'a HashMap<(u64, String), i64>,
    /// Requests answered 202 twice with different order ids.
    pub conflicting_answers: u64,
    /// Requests the bench gave up on.
    pub client_errors: u64,
}

/// The gateway's sale: `orders`/`order_items` and the promotion's keys in Redis.
pub async fn gateway_sale(
    db: &PgPool,
    stock: &StockStore,
    seen: &Seen<'_>,
    pace: WriterPace,
) -> anyhow::Result<Verification> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM orders WHERE promotion_id = $1")
        .bind(seen.promotion_id)
        .fetch_all(db)
        .await
        .context("read the promotion's order ids")?;
    let live_units: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(i.quantity), 0)::BIGINT FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE o.promotion_id = $1 AND o.status NOT IN ('cancelled', 'refunded')",
    )
    .bind(seen.promotion_id)
    .fetch_one(db)
    .await
    .context("sum live units")?;
    let over_limit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT o.user_id FROM orders o JOIN order_items i ON i.order_id = o.id
         WHERE o.promotion_id = $1 AND o.status NOT IN ('cancelled', 'refunded')
         GROUP BY o.user_id HAVING SUM(i.quantity) > $2) over",
    )
    .bind(seen.promotion_id)
    .bind(i64::from(seen.per_user_limit))
    .fetch_one(db)
    .await
    .context("count buyers over the limit")?;
    let twice: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM orders WHERE promotion_id = $1
         GROUP BY user_id, request_id HAVING count(*) > 1) twice",
    )
    .bind(seen.promotion_id)
    .fetch_one(db)
    .await
    .context("count request ids with two orders")?;
    let stamps: Vec<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM updated_at)::FLOAT8 FROM orders WHERE promotion_id = $1 ORDER BY 1",
    )
    .bind(seen.promotion_id)
    .fetch_all(db)
    .await
    .context("read insert times")?;
    // Stock conservation in Redis is the reconciliation's check (invariant 7): reuse it.
    let promotion = PromotionRepo::new(db.clone())
        .get(seen.promotion_id)
        .await
        .context("read the promotion")?
        .context("the promotion is gone")?;
    let redis = reconcile(db, stock, &promotion, false)
        .await
        .context("reconcile the sale")?;
    let remaining = redis.remaining.context("the promotion is not in Redis")?;

    // Oversold against what is configured now: operators may have added stock mid-sale.
    let seen = &Seen {
        stock: promotion.stock,
        ..*seen
    };
    let mut v = common(seen, &ids, live_units, over_limit, twice);
    v.stock_drift = Some(redis.drift);
    let most = max_in_window(&stamps, 1.0);
    v.max_rows_in_one_second = Some(most);
    if redis.drift != 0 {
        v.failures.push(format!(
            "Redis remaining {remaining} + reserved {} != stock {}",
            redis.reserved_units, promotion.stock
        ));
    }
    // What a buyer's poll is answered from Redis must be what the database holds.
    for wrong in poll_answers_against_database(db, stock, seen.promotion_id).await? {
        v.failures.push(wrong);
    }
    let allowed = pace_allowance(pace);

    if most as f64 > allowed {
        v.failures.push(format!(
            "{most} rows inserted within one second (allowed {allowed:.0}: pace {} rows/s, one batch of {})",
            pace.max_rows_per_sec, pace.batch_size
        ));
    }
    Ok(v)
}

/// Orders whose status marker in Redis (what polls are answered from) disagrees with the
/// database: another buyer, another total, or another status. A missing marker is not a
/// disagreement: such a poll asks the database.
async fn poll_answers_against_database(
    db: &PgPool,
    stock: &StockStore,
    promotion_id: i64,
) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(i64, i64, i64, String)> =
        sqlx::query_as("SELECT id, user_id, total_cents, status FROM orders WHERE promotion_id = $1")
            .bind(promotion_id)
            .fetch_all(db)
            .await
            .context("read the promotion's orders")?;
    let sale = PromotionRepo::new(db.clone())
        .sale_shards(promotion_id)
        .await
        .context("read the promotion's shards")?
        .context("the promotion is gone")?;
    let mut wrong = Vec::new();
    for (id, user_id, total_cents, status) in rows {
        let seen = stock
            .order_in_redis(sale.shard_of(user_id), order_core::domain::ids::OrderId(id))
            .await
            .context("read an order's marker")?;
        // An unpaid marker past its expiry is not served (the canceller may have moved on).
        let served = seen.marker.filter(|m| !m.unpaid_past_expiry(seen.now_ms));
        if let Some(m) = served {
            if (m.user_id.get(), m.total_cents, m.status.as_str()) != (user_id, total_cents, status.as_str())
            {
                wrong.push(format!(
                    "order {id}: a poll would answer {} ({} cents, user {}); the database holds {status} ({total_cents} cents, user {user_id})",
                    m.status, m.total_cents, m.user_id
                ));
            }
        }
    }
    Ok(wrong)
}

/// The most rows one second may hold under `pace`. The writer's token bucket grants at most
/// a burst of one batch plus the pace in any second; a row's time is its transaction's start,
/// a little after its tokens were granted, so the window gets 2% (20 ms) of slack for that.
pub fn pace_allowance(pace: WriterPace) -> f64 {
    pace.max_rows_per_sec * 1.02 + f64::from(pace.batch_size)
}

/// The baseline's sale: its own tables, written synchronously.
pub async fn baseline_sale(db: &PgPool, seen: &Seen<'_>) -> anyhow::Result<Verification> {
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM bench_baseline_orders WHERE promotion_id = $1")
        .bind(seen.promotion_id)
        .fetch_all(db)
        .await
        .context("read the baseline's order ids")?;
    let live_units: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(quantity), 0)::BIGINT FROM bench_baseline_orders WHERE promotion_id = $1",
    )
    .bind(seen.promotion_id)
    .fetch_one(db)
    .await
    .context("sum the baseline's units")?;
    let over_limit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT user_id FROM bench_baseline_orders WHERE promotion_id = $1
         GROUP BY user_id HAVING SUM(quantity) > $2) over",
    )
    .bind(seen.promotion_id)
    .bind(i64::from(seen.per_user_limit))
    .fetch_one(db)
    .await
    .context("count the baseline's buyers over the limit")?;
    Ok(common(seen, &ids, live_units, over_limit, 0))
}

fn common(seen: &Seen<'_>, ids: &[i64], live_units: i64, over_limit: i64, twice_in_db: i64) -> Verification {
    let accepted: HashSet<i64> = seen.accepted.values().copied().collect();
    let persisted: HashSet<i64> = ids.iter().copied().collect();
    let lost = accepted.difference(&persisted).count() as u64;
    let unanswered = persisted.difference(&accepted).count() as u64;
    // Two requests answered with one order id would also be a duplicate.
    let shared_ids = seen.accepted.len() as u64 - accepted.len() as u64;
    let duplicated = seen.conflicting_answers + twice_in_db as u64 + shared_ids;
    let oversold = (live_units - seen.stock).max(0);
    let mut failures = Vec::new();
    if lost > 0 {
        failures.push(format!("{lost} accepted orders are not in the database"));
    }
    if unanswered > seen.client_errors {
        failures.push(format!(
            "{unanswered} orders in the database were never answered 202 (only {} requests were given up on)",
            seen.client_errors
        ));
    }
    if duplicated > 0 {
        failures.push(format!("{duplicated} requests got two orders"));
    }
    if oversold > 0 {
        failures.push(format!("oversold by {oversold} units"));
    }
    if over_limit > 0 {
        failures.push(format!("{over_limit} buyers over the per-user limit"));
    }
    Verification {
        accepted: accepted.len() as u64,
        persisted: persisted.len() as u64,
        lost,
        unanswered,
        duplicated,
        oversold,
        stock_drift: None,
        users_over_limit: over_limit as u64,
        max_rows_in_one_second: None,
        failures,
    }
}

/// The most timestamps (sorted, seconds) within any window of `width` seconds.
pub fn max_in_window(sorted: &[f64], width: f64) -> u64 {
    let mut most = 0;
    let mut start = 0;
    for (end, t) in sorted.iter().enumerate() {
        while sorted[start] <= t - width {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busiest_second_is_found_anywhere_not_only_on_whole_seconds() {
        assert_eq!(max_in_window(&[], 1.0), 0);
        assert_eq!(max_in_window(&[5.0], 1.0), 1);
        // 0.6..1.5 holds four stamps, though no whole second holds more than two.
        let stamps = [0.1, 0.6, 0.9, 1.2, 1.5, 2.7];
        assert_eq!(max_in_window(&stamps, 1.0), 4);
        // A window is half-open: stamps exactly one second apart are in different windows.
        assert_eq!(max_in_window(&[1.0, 2.0, 3.0], 1.0), 1);
    }

    fn seen(accepted: &HashMap<(u64, String), i64>) -> Seen<'_> {
        Seen {
            promotion_id: 1,
            stock: 3,
            per_user_limit: 1,
            accepted,
            conflicting_answers: 0,
            client_errors: 0,
        }
    }

    #[test]
    fn lost_duplicated_and_oversold_orders_are_failures() {
        let accepted: HashMap<(u64, String), i64> = [
            ((1, "a".into()), 10),
            ((2, "b".into()), 11),
            ((3, "c".into()), 12),
        ]
        .into();
        let ok = common(&seen(&accepted), &[10, 11, 12], 3, 0, 0);
        assert!(ok.ok(), "{:?}", ok.failures);

        let lost = common(&seen(&accepted), &[10, 11], 2, 0, 0);
        assert_eq!(lost.lost, 1);
        assert!(!lost.ok());

        let unanswered = common(&seen(&accepted), &[10, 11, 12, 13], 4, 0, 0);
        assert_eq!((unanswered.unanswered, unanswered.oversold), (1, 1));
        assert_eq!(unanswered.failures.len(), 2, "{:?}", unanswered.failures);

        let shared: HashMap<(u64, String), i64> = [((1, "a".into()), 10), ((1, "b".into()), 10)].into();
        let twice = common(&seen(&shared), &[10], 1, 1, 0);
        assert_eq!((twice.duplicated, twice.users_over_limit), (1, 1));
        assert_eq!(twice.failures.len(), 2);
    }
}
