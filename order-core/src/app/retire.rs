//! Retiring an ended sale's Redis keys, so Redis holds only live sales.
//!
//! A sale's keys (stock, buyers, request ids, reservations, pending and released sets,
//! status markers, the deployment's counts) would otherwise stay forever. Once the sale has
//! ended more than a grace ago (longer than any gateway keeps it cached), every accepted
//! order is persisted (its pending sets are empty), the stores agree (reconciliation finds
//! nothing to repair) and no stock return waits, the database records the retirement and
//! the keys are deleted. From then on PostgreSQL alone answers for the sale's orders, and
//! nothing loads the sale into Redis again: edits, pause, add-stock and repair are refused,
//! and a later cancellation's stock return completes without Redis (the sale no longer
//! sells).

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::app::reconcile::SaleRetired;
use crate::domain::promotion::Promotion;
use crate::postgres::promotions::PromotionRepo;
use crate::redis::deployment::DeploymentStore;
use crate::redis::stock::StockStore;

/// What became of one ended sale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// Its keys are gone from Redis (now, or again after a crash between the two steps).
    Retired,
    /// Accepted orders still wait to be persisted.
    OrdersPending(u64),
    /// Redis and the database disagree: reconciliation must run first (never retired
    /// with a discrepancy, which would erase the evidence).
    Inconsistent,
    /// A stock return waits to be applied, or the sale was extended meanwhile.
    NotYet,
}

/// Retire `promotion`'s keys if it ended before `ended_before` and nothing is in flight.
pub async fn retire_sale(
    db: &PgPool,
    stock: &StockStore,
    deployment: &DeploymentStore,
    promotion: &Promotion,
    ended_before: DateTime<Utc>,
) -> anyhow::Result<Retirement> {
    let repo = PromotionRepo::new(db.clone());
    let sale = promotion.sale();
    let already = repo
        .keys_retired_at(promotion.id)
        .await
        .context("read the sale's retirement")?
        .is_some();
    if !already {
        let pending = stock.pending_count(sale).await.context("count pending orders")?;
        if pending > 0 {
            return Ok(Retirement::OrdersPending(pending));
        }
        // Another consumers process may retire the sale while this one compares: reconcile
        // then refuses it (`None` here), or reads its keys half gone (a discrepancy that is
        // none: the database says it was retired).
        let consistent = match crate::app::reconcile::reconcile(db, stock, promotion, false).await {
            Ok(report) => Some(report.consistent),
            Err(e) if e.is::<SaleRetired>() => None,
            Err(e) => return Err(e.context("reconcile before retiring")),
        };
        if consistent == Some(true) {
            let marked = repo
                .mark_keys_retired(promotion.id, ended_before)
                .await
                .context("record the retirement")?;
            if !marked {
                return Ok(Retirement::NotYet);
            }
        } else if consistent == Some(false) {
            let retired_meanwhile = repo
                .keys_retired_at(promotion.id)
                .await
                .context("read the sale's retirement")?
                .is_some();
            if !retired_meanwhile {
                return Ok(Retirement::Inconsistent);
            }
        }
    }
    stock
        .forget_promotion(sale)
        .await
        .context("delete the sale's keys")?;
    deployment
        .forget_counters(promotion.id)
        .await
        .context("delete the sale's counts")?;
    Ok(Retirement::Retired)
}

/// Retire every sale that ended before `ended_before` (oldest first, at most `limit`), and
/// delete again the keys of sales retired since `retired_since`; returns each sale's fate.
pub async fn retire_ended_sales(
    db: &PgPool,
    stock: &StockStore,
    deployment: &DeploymentStore,
    ended_before: DateTime<Utc>,
    retired_since: DateTime<Utc>,
    limit: i64,
) -> anyhow::Result<Vec<(i64, Retirement)>> {
    let repo = PromotionRepo::new(db.clone());
    let sales = repo
        .sales_to_retire(ended_before, retired_since, limit)
        .await
        .context("list ended sales")?;
    let mut fates = Vec::with_capacity(sales.len());
    for promotion in &sales {
        let fate = retire_sale(db, stock, deployment, promotion, ended_before)
            .await
            .with_context(|| format!("retire sale {}", promotion.id))?;
        fates.push((promotion.id, fate));
    }
    Ok(fates)
}
