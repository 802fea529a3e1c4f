//! Reconciliation, the one use case that reads both stores: Redis' view of a sale and the
//! database's orders, compared by `domain::reconcile::compare`; on request, Redis rebuilt from
//! the database's truth in one atomic script (`StockStore::repair`).

use anyhow::Context;
use sqlx::PgPool;

use crate::domain::promotion::Promotion;
use crate::domain::reconcile::{compare, reservations, ReconcileReport, RedisView, Repair, SaleOrder};
use crate::postgres::orders::orders_of_sale;
use crate::redis::stock::StockStore;

pub async fn reconcile(
    db: &PgPool,
    stock: &StockStore,
    promotion: &Promotion,
    repair: bool,
) -> anyhow::Result<ReconcileReport> {
    let (report, orders) = inspect(db, stock, promotion).await?;
    // The repair runs one script over every order of the sale: only when something is off.
    if !repair || (report.consistent && report.remaining.is_some()) {
        return Ok(report);
    }
    let (dead, live): (Vec<&SaleOrder>, Vec<&SaleOrder>) = orders.iter().partition(|o| o.is_dead());
    let outcome = stock
        .repair(promotion, &reservations(&live), &reservations(&dead))
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
    let redis = RedisView {
        remaining: stock
            .live_stock_of(promotion.id)
            .await
            .context("read remaining stock")?
            .map(|l| l.remaining),
        reservations: stock
            .all_reservations(promotion.id)
            .await
            .context("read reservations")?,
        buyers: stock.all_buyers(promotion.id).await.context("read buyers")?,
    };
    let orders = orders_of_sale(db, promotion.id)
        .await
        .context("read the promotion's orders")?;
    let report = compare(promotion, &redis, &orders);
    Ok((report, orders))
}
