//! The recovery sweeper: a periodic pass of the recovery sweep
//! (`order_core::app::sweep`: republish reservations that never reached the writer, clear
//! persisted ones), counted in the consumers' stats.

use std::sync::Arc;
use std::time::Duration;

use order_core::app::sweep::RecoverySweep;
use order_core::runtime::shutdown::ShutdownListener;

use crate::stats::{Counter, Stats};

#[derive(Debug)]
pub struct RecoverySweeper {
    pub sweep: RecoverySweep,
    pub interval: Duration,
    pub stats: Arc<Stats>,
}

impl RecoverySweeper {
    pub async fn run(self, shutdown: ShutdownListener) {
        crate::periodic::every(self.interval, shutdown, "recovery sweep", || self.sweep()).await;
    }

    pub async fn sweep(&self) -> anyhow::Result<()> {
        self.sweep
            .sweep(|shard| {
                self.stats.count(Counter::SweeperRepublished, shard.republished);
                self.stats.count(Counter::SweeperConflicts, shard.conflicts);
                self.stats.count(Counter::SweeperCleared, shard.cleared);
            })
            .await
    }
}
