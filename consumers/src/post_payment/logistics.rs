//! Logistics hand-off: a shipment record per paid order (exactly once), then a relay that
//! POSTs each new shipment to the logistics endpoint (retries, timeouts, idempotency key =
//! order id) and, once accepted, marks the order shipped (`order.shipped`). A shipment waits
//! `post_payment.handover_after_secs` after payment first (a warehouse does not ship the
//! second an order is paid; until then the buyer may still ask for a refund).

use std::time::Duration;

use order_core::domain::checkout::Transition;
use order_core::domain::events::{OrderEvent, OrderEventType};
use order_core::domain::ids::OrderId;
use order_core::domain::lifecycle::OrderEventKind;
use order_core::postgres::post_payment::{self, DueShipment};
use order_core::postgres::processed;
use order_core::postgres::transitions::transition;
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
            let Some(mut tx) = processed::claim(&self.db, self.name(), &event.event_id).await? else {
                return Ok(());
            };
            if event.typed() == Some(OrderEventType::Paid) {
                // An event about an order this database does not hold ships nothing.
                post_payment::create_shipment(&mut *tx, event.order_id).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }
}

#[derive(Debug)]
pub struct ShipmentRelay {
    pub db: Pool,
    pub client: reqwest::Client,
    /// Empty: hand over locally (development).
    pub endpoint: String,
    pub attempts: u32,
    pub interval: Duration,
    /// How long after payment a shipment is handed over (the warehouse's pick-up delay).
    pub handover_after: Duration,
    pub order_events_topic: String,
}

impl ShipmentRelay {
    pub async fn run(self, shutdown: ShutdownListener) {
        crate::periodic::every(self.interval, shutdown, "shipment hand-off", || self.run_once()).await;
    }

    pub async fn run_once(&self) -> anyhow::Result<()> {
        let due = post_payment::due_shipments(&self.db, self.handover_after).await?;
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
                    post_payment::count_handover_attempt(&self.db, order_id).await?;
                    tracing::warn!(
                        order_id,
                        error = format!("{e:#}"),
                        "logistics hand-off failed; retrying next interval"
                    );
                    continue;
                }
            }
            match transition(
                &self.db,
                OrderId(order_id),
                None,
                OrderEventKind::Ship,
                &self.order_events_topic,
            )
            .await?
            {
                Transition::Done { .. } => {}
                other => tracing::info!(order_id, ?other, "handed over an order that can no longer ship"),
            }
            post_payment::mark_handed_over(&self.db, order_id).await?;
        }
        Ok(())
    }
}
