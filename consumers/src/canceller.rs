//! The payment-timeout canceller: a periodic pass of the payment expiry use case
//! (`order_core::app::payment_expiry`: cancel what expired, return its stock to Redis,
//! publish its events), counted in the consumers' stats.

use std::sync::Arc;
use std::time::Duration;

use order_core::app::payment_expiry::PaymentExpiry;
use order_core::runtime::shutdown::ShutdownListener;

use crate::settings::CancellerSettings;
use crate::stats::{Counter, Stats};

#[derive(Debug)]
pub struct PaymentTimeoutCanceller {
    pub expiry: PaymentExpiry,
    pub settings: CancellerSettings,
    pub stats: Arc<Stats>,
}

impl PaymentTimeoutCanceller {
    pub async fn run(self, shutdown: ShutdownListener) {
        let interval = Duration::from_millis(self.settings.interval_ms);
        crate::periodic::every(interval, shutdown, "payment-timeout pass", || self.run_once()).await;
    }

    pub async fn run_once(&self) -> anyhow::Result<()> {
        let count = |counter| move |n| self.stats.count(counter, n);
        self.expiry
            .cancel_expired(count(Counter::OrdersCancelled))
            .await?;
        self.expiry.return_stock(count(Counter::StockReturned)).await?;
        self.expiry.relay_outbox(count(Counter::OutboxPublished)).await
    }
}
