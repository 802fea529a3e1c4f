//! Counters the workers keep: served as JSON on `/status` and as Prometheus series
//! (`seckill_<name>_total`) on `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Declared in the order of `COUNTERS`: a counter's discriminant is its slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    RowsInserted,
    BatchesCommitted,
    BatchFailures,
    PoisonMessages,
    OrderConflicts,
    LateInserts,
    SweeperRepublished,
    SweeperConflicts,
    SweeperCleared,
    OrdersCancelled,
    StockReturned,
    OutboxPublished,
    SaleFences,
    SalesRecovered,
}

const COUNTERS: [Counter; 14] = [
    Counter::RowsInserted,
    Counter::BatchesCommitted,
    Counter::BatchFailures,
    Counter::PoisonMessages,
    Counter::OrderConflicts,
    Counter::LateInserts,
    Counter::SweeperRepublished,
    Counter::SweeperConflicts,
    Counter::SweeperCleared,
    Counter::OrdersCancelled,
    Counter::StockReturned,
    Counter::OutboxPublished,
    Counter::SaleFences,
    Counter::SalesRecovered,
];

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Counter::RowsInserted => "rows_inserted",
            Counter::BatchesCommitted => "batches_committed",
            Counter::BatchFailures => "batch_failures",
            Counter::PoisonMessages => "poison_messages",
            Counter::OrderConflicts => "order_conflicts",
            Counter::LateInserts => "late_inserts",
            Counter::SweeperRepublished => "sweeper_republished",
            Counter::SweeperConflicts => "sweeper_conflicts",
            Counter::SweeperCleared => "sweeper_cleared",
            Counter::OrdersCancelled => "orders_cancelled",
            Counter::StockReturned => "stock_returned",
            Counter::OutboxPublished => "outbox_published",
            Counter::SaleFences => "sale_fences",
            Counter::SalesRecovered => "sales_recovered",
        }
    }

    fn metric(self) -> &'static str {
        match self {
            Counter::RowsInserted => "seckill_writer_rows_inserted_total",
            Counter::BatchesCommitted => "seckill_writer_batches_committed_total",
            Counter::BatchFailures => "seckill_writer_batch_failures_total",
            Counter::PoisonMessages => "seckill_poison_messages_total",
            Counter::OrderConflicts => "seckill_writer_order_conflicts_total",
            Counter::LateInserts => "seckill_writer_late_inserts_total",
            Counter::SweeperRepublished => "seckill_sweeper_republished_total",
            Counter::SweeperConflicts => "seckill_sweeper_order_conflicts_total",
            Counter::SweeperCleared => "seckill_sweeper_cleared_total",
            Counter::OrdersCancelled => "seckill_orders_timed_out_total",
            Counter::StockReturned => "seckill_stock_returned_total",
            Counter::OutboxPublished => "seckill_outbox_published_total",
            Counter::SaleFences => "seckill_sale_fences_total",
            Counter::SalesRecovered => "seckill_sales_recovered_total",
        }
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    writer_rate_millis: AtomicU64,
    counts: [AtomicU64; COUNTERS.len()],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_counter_has_its_own_slot() {
        for (i, c) in COUNTERS.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?}");
        }
    }
}

impl Stats {
    pub fn set_writer_rate(&self, rows_per_sec: f64) {
        self.writer_rate_millis
            .store((rows_per_sec * 1000.0) as u64, Ordering::Relaxed);
        metrics::gauge!("seckill_writer_rows_per_sec").set(rows_per_sec);
    }

    pub fn count(&self, counter: Counter, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[counter as usize].fetch_add(n, Ordering::Relaxed);
        metrics::counter!(counter.metric()).increment(n);
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counts[counter as usize].load(Ordering::Relaxed)
    }

    /// `{"writer_rows_per_sec": …, "rows_inserted": …, …}`
    pub fn report(&self) -> StatusReport {
        StatusReport {
            writer_rows_per_sec: self.writer_rate_millis.load(Ordering::Relaxed) as f64 / 1000.0,
            counts: COUNTERS.iter().map(|c| (c.name(), self.get(*c))).collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub writer_rows_per_sec: f64,
    #[serde(flatten)]
    pub counts: std::collections::BTreeMap<&'static str, u64>,
}

impl StatusReport {
    pub fn get(&self, name: &str) -> u64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}
