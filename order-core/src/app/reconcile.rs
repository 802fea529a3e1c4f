//! Reconciliation, the one use case that reads both stores: Redis' view of a sale and the
//! database's orders, compared shard by shard by `domain::reconcile::compare_shard` (each
//! shard against its buyers' orders); on request, Redis rebuilt from the database's truth,
//! one atomic script per shard (`StockStore::repair`).

use anyhow::Context;
use sqlx::PgPool;

use crate::domain::promotion::Promotion;
use crate::domain::reconcile::{
    combine, compare_shard, reservations, ReconcileReport, RedisView, Repair, SaleOrder,
};
use crate::postgres::orders::orders_of_sale;
use crate::redis::stock::{RepairKind, RepairOrders, StockStore};

/// Reconciling a sale whose keys were retired from Redis: refused.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the sale's keys were retired from Redis at {at}: the database alone holds it")]
pub struct SaleRetired {
    pub at: chrono::DateTime<chrono::Utc>,
}

pub async fn reconcile(
    db: &PgPool,
    stock: &StockStore,
    promotion: &Promotion,
    repair: bool,
) -> anyhow::Result<ReconcileReport> {
    // A retired sale has no keys to compare, and a repair would load it into Redis again.
    let retired = crate::postgres::promotions::PromotionRepo::new(db.clone())
        .keys_retired_at(promotion.id)
        .await
        .context("read the sale's retirement")?;
    if let Some(at) = retired {
        anyhow::bail!(SaleRetired { at });
    }
    let (report, orders) = inspect(db, stock, promotion).await?;
    // The repair runs one script over every order of the sale: only when something is off.
    if !repair || (report.consistent && report.remaining.is_some()) {
        return Ok(report);
    }
    let (dead, live): (Vec<&SaleOrder>, Vec<&SaleOrder>) = orders.iter().partition(|o| o.is_dead());
    let (live, dead) = (reservations(&live), reservations(&dead));
    let orders = RepairOrders {
        live: &live,
        queued: &[],
        dead: &dead,
    };
    let outcome = stock
        .repair(promotion, orders, RepairKind::Operator)
        .await
        .context("repair the promotion in Redis")?;
    let (mut after, _) = inspect(db, stock, promotion).await?;
    after.repaired = Some(Repair {
        released: outcome.released,
        restored: outcome.restored,
        requests_restored: outcome.requests_restored,
        request_conflicts: outcome.request_conflicts,
        remaining: outcome.remaining,
    });
    Ok(after)
}

/// The report, and the promotion's orders it was computed from (a repair reuses them).
async fn inspect(
    db: &PgPool,
    stock: &StockStore,
    promotion: &Promotion,
) -> anyhow::Result<(ReconcileReport, Vec<SaleOrder>)> {
    let sale = promotion.sale();
    let orders = orders_of_sale(db, promotion.id)
        .await
        .context("read the promotion's orders")?;
    let stocks = stock.shard_stocks(sale).await.context("read remaining stock")?;
    let mut shards = Vec::with_capacity(stocks.len());
    let mut in_transit = 0;
    for (shard, live) in sale.shards().zip(stocks) {
        let redis = RedisView {
            remaining: live.map(|l| l.remaining),
            reservations: stock.all_reservations(shard).await.context("read reservations")?,
            buyers: stock.all_buyers(shard).await.context("read buyers")?,
        };
        let mine: Vec<SaleOrder> = orders
            .iter()
            .filter(|o| sale.shard_of(o.user_id.get()) == shard)
            .cloned()
            .collect();
        // The row's share (Redis may lag an edit) plus what moved in and out of the shard.
        let moved = live.map_or(0, |l| l.got - l.lent);
        in_transit -= moved;
        let expected = shard.share_of(promotion.stock) + moved;
        shards.push((shard.index, compare_shard(promotion, expected, &redis, &mine)));
    }
    Ok((combine(promotion, shards, in_transit), orders))
}
