//! The order-data task: every `archive.interval_secs` (and once at start), create the
//! coming months' partitions, archive the months past the retention (oldest first), prune
//! the event bookkeeping tables by age, and retire the Redis keys of sales that ended more
//! than `archive.sale_keys_grace_hours` ago (`order_core::app::retire`).
//!
//! Partitions are created months ahead, so the writer and checkout never wait on a schema
//! change; a pass that fails (the database is away, a lock is busy) is retried by the next.

use std::time::Duration;

use chrono::Utc;
use order_core::app::retire::{retire_ended_sales, Retirement};
use order_core::postgres::order_data::{self, PrunedTable};
use order_core::postgres::Pool;
use order_core::redis::deployment::DeploymentStore;
use order_core::redis::stock::StockStore;
use order_core::runtime::settings::ArchiveSettings;
use order_core::runtime::shutdown::ShutdownListener;

/// Rows one prune statement deletes; a pass deletes at most `PRUNE_BATCHES` of them per table.
const PRUNE_BATCH: i64 = 5_000;
const PRUNE_BATCHES: u32 = 200;

/// Ended sales one pass looks at.
const RETIRE_BATCH: i64 = 100;

/// The longest an archival of one month may take before the pass gives up on it.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug)]
pub struct OrderDataTask {
    pub db: Pool,
    pub stock: StockStore,
    pub deployment: DeploymentStore,
    pub settings: ArchiveSettings,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub months_created: i32,
    pub archived: Vec<order_data::ArchivedMonth>,
    pub processed_events_pruned: u64,
    pub notifications_pruned: u64,
    /// Ended sales whose keys left Redis in this pass.
    pub sales_retired: Vec<i64>,
    /// Ended sales kept in Redis because the stores disagree (reconcile them).
    pub sales_inconsistent: Vec<i64>,
}

impl OrderDataTask {
    pub async fn run(self, mut shutdown: ShutdownListener) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.settings.interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.recv() => break,
            }
            match self.pass().await {
                Ok(report) if report != PassReport::default() => {
                    tracing::info!(?report, "order data maintained")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "order data maintenance failed; next interval retries"
                ),
            }
        }
    }

    /// One pass: partitions ahead, archival of due months, pruning.
    pub async fn pass(&self) -> anyhow::Result<PassReport> {
        use anyhow::Context;
        let s = &self.settings;
        let now = Utc::now();
        let mut report = PassReport {
            months_created: order_data::create_partitions_ahead(&self.db, now, s.partitions_ahead_months)
                .await
                .context("create partitions ahead")?,
            ..PassReport::default()
        };
        let due = order_data::live_months(&self.db)
            .await
            .context("list order partitions")?
            .into_iter()
            .filter(|m| m.is_past_retention(now, s.retention_months));
        for month in due {
            let archived = tokio::time::timeout(
                ARCHIVE_TIMEOUT,
                order_data::archive_month(&self.db, &s.dir, month),
            )
            .await
            .with_context(|| format!("archive {month}: timed out"))?
            .with_context(|| format!("archive {month}"))?;
            match archived {
                Some(done) => report.archived.push(done),
                // Another consumers process is at it.
                None => break,
            }
        }
        let days = |n: u32| chrono::Duration::days(i64::from(n));
        report.processed_events_pruned = order_data::prune_older_than(
            &self.db,
            PrunedTable::ProcessedEvents,
            now - days(s.processed_events_days),
            PRUNE_BATCH,
            PRUNE_BATCHES,
        )
        .await
        .context("prune processed_events")?;
        report.notifications_pruned = order_data::prune_older_than(
            &self.db,
            PrunedTable::Notifications,
            now - days(s.notifications_days),
            PRUNE_BATCH,
            PRUNE_BATCHES,
        )
        .await
        .context("prune notifications")?;
        let grace = chrono::Duration::hours(i64::from(s.sale_keys_grace_hours));
        let fates = retire_ended_sales(
            &self.db,
            &self.stock,
            &self.deployment,
            now - grace,
            now - chrono::Duration::days(1),
            RETIRE_BATCH,
        )
        .await
        .context("retire ended sales' keys")?;
        for (id, fate) in fates {
            match fate {
                Retirement::Retired => report.sales_retired.push(id),
                Retirement::Inconsistent => {
                    tracing::warn!(
                        promotion_id = id,
                        "an ended sale's stores disagree: its keys stay in Redis until it is reconciled"
                    );
                    report.sales_inconsistent.push(id);
                }
                Retirement::OrdersPending(_) | Retirement::NotYet => {}
            }
        }
        Ok(report)
    }
}
