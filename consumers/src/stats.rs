//! Counters the workers keep, served as JSON on `/status` (Prometheus comes later).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct Stats {
    writer_rate_millis: AtomicU64,
    pub rows_inserted: AtomicU64,
    pub batches_committed: AtomicU64,
    pub batch_failures: AtomicU64,
    pub poison_messages: AtomicU64,
    pub released_skipped: AtomicU64,
    pub sweeper_republished: AtomicU64,
    pub sweeper_cleared: AtomicU64,
    pub orders_cancelled: AtomicU64,
    pub stock_returned: AtomicU64,
    pub outbox_published: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub writer_rows_per_sec: f64,
    pub rows_inserted: u64,
    pub batches_committed: u64,
    pub batch_failures: u64,
    pub poison_messages: u64,
    pub released_skipped: u64,
    pub sweeper_republished: u64,
    pub sweeper_cleared: u64,
    pub orders_cancelled: u64,
    pub stock_returned: u64,
    pub outbox_published: u64,
}

impl Stats {
    pub fn set_writer_rate(&self, rows_per_sec: f64) {
        self.writer_rate_millis
            .store((rows_per_sec * 1000.0) as u64, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn report(&self) -> StatusReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatusReport {
            writer_rows_per_sec: get(&self.writer_rate_millis) as f64 / 1000.0,
            rows_inserted: get(&self.rows_inserted),
            batches_committed: get(&self.batches_committed),
            batch_failures: get(&self.batch_failures),
            poison_messages: get(&self.poison_messages),
            released_skipped: get(&self.released_skipped),
            sweeper_republished: get(&self.sweeper_republished),
            sweeper_cleared: get(&self.sweeper_cleared),
            orders_cancelled: get(&self.orders_cancelled),
            stock_returned: get(&self.stock_returned),
            outbox_published: get(&self.outbox_published),
        }
    }
}
