//! Logistics hand-off: a shipment record per paid order (exactly once), then a relay that
//! POSTs each new shipment to the logistics endpoint (retries, timeouts, idempotency key =
//! order id) and, once accepted, marks the order shipped (`order.shipped`). A shipment waits
//! `post_payment.handover_after_secs` after payment first (a warehouse does not ship the
//! second an order is paid; until then the buyer may still ask for a refund).

use std::time::Duration;

use order_core::app::post_payment::{self, ShipmentHandOff};
use order_core::domain::events::OrderEvent;
use order_core::postgres::post_payment::DueShipment;
use order_core::postgres::Pool;
use order_core::runtime::shutdown::ShutdownListener;
use serde_json::json;

use super::{post_with_retries, BoxFuture, Handler};

#[derive(Debug)]
pub struct Logistics {
    pub db: Pool,
}

impl Handler for Logistics {
    fn name(&self) -> &'static str {
        "logistics"
    }

    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            post_payment::create_shipment(&self.db, self.name(), event).await?;
            Ok(())
        })
    }
}

#[derive(Debug)]
pub struct ShipmentRelay {
    pub hand_off: ShipmentHandOff,
    pub client: reqwest::Client,
    /// Empty: hand over locally (development).
    pub endpoint: String,
    pub attempts: u32,
    pub interval: Duration,
}

impl ShipmentRelay {
    pub async fn run(self, shutdown: ShutdownListener) {
        crate::periodic::every(self.interval, shutdown, "shipment hand-off", || self.run_once()).await;
    }

    pub async fn run_once(&self) -> anyhow::Result<()> {
        let due = self.hand_off.due().await?;
        for DueShipment { order_id, user_id } in due {
            if !self.endpoint.is_empty() {
                let body = json!({ "order_id": order_id.to_string(), "user_id": user_id });
                let sent = post_with_retries(
                    &self.client,
                    &self.endpoint,
                    &order_id.to_string(),
                    &body,
                    self.attempts,
                )
                .await;
                if let Err(e) = sent {
                    self.hand_off.failed(order_id).await?;
                    tracing::warn!(
                        order_id,
                        error = format!("{e:#}"),
                        "logistics hand-off failed; retrying next interval"
                    );
                    continue;
                }
            }
            self.hand_off.handed_over(order_id).await?;
        }
        Ok(())
    }
}
