//! The post-payment jobs' use cases: what each job does with one order event, at most once.
//!
//! A job whose effect lives in the database (points, reward coupons, shipments) commits it
//! together with its `processed_events` row: a redelivered event changes nothing. A job whose
//! effect lives outside (a push/SMS gateway, an export file) makes that effect idempotent on
//! its own (the event's natural key), then records the event as done ([`JobLedger`]). The
//! consumers run the subscriptions, retries and dead-lettering around these.

use std::time::Duration;

use crate::domain::checkout::Transition;
use crate::domain::events::{OrderEvent, OrderEventType};
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::OrderEventKind;
use crate::postgres::post_payment::{self, DueShipment};
use crate::postgres::{processed, transitions, Error, Pool};

/// Which events a job has done, for jobs whose effect lives outside the database.
#[derive(Debug, Clone)]
pub struct JobLedger {
    db: Pool,
    job: &'static str,
}

impl JobLedger {
    pub fn new(db: Pool, job: &'static str) -> Self {
        Self { db, job }
    }

    pub async fn is_done(&self, event: &OrderEvent) -> Result<bool, Error> {
        processed::is_processed(&self.db, self.job, &event.event_id).await
    }

    pub async fn mark_done(&self, event: &OrderEvent) -> Result<(), Error> {
        processed::mark(&self.db, self.job, &event.event_id).await
    }
}

/// Loyalty points: credited for a paid order (`total / cents_per_point`), reversed when it
/// is refunded.
pub async fn apply_points(
    db: &Pool,
    job: &'static str,
    event: &OrderEvent,
    cents_per_point: i64,
) -> Result<(), Error> {
    let Some(mut tx) = processed::claim(db, job, &event.event_id).await? else {
        return Ok(());
    };
    match event.typed() {
        Some(OrderEventType::Paid) => {
            let points = event.total_cents / cents_per_point;
            post_payment::credit_points(&mut *tx, event.user_id, event.order_id, points).await?;
        }
        Some(OrderEventType::Refunded) => post_payment::reverse_points(&mut *tx, event.order_id).await?,
        _ => {}
    }
    tx.commit().await
}

/// Reward coupons: one of the template `template_code` per paid order (none when empty),
/// revoked if still unused when the order is refunded.
pub async fn apply_reward(
    db: &Pool,
    job: &'static str,
    event: &OrderEvent,
    template_code: &str,
) -> Result<(), Error> {
    let Some(mut tx) = processed::claim(db, job, &event.event_id).await? else {
        return Ok(());
    };
    // Unique per order: a grant is recognisable by its reason.
    let reason = format!("reward:{}", event.order_id);
    match event.typed() {
        Some(OrderEventType::Paid) if !template_code.is_empty() => {
            post_payment::grant_reward(&mut *tx, template_code, event.user_id, &reason).await?;
        }
        Some(OrderEventType::Refunded) => post_payment::revoke_reward(&mut *tx, &reason).await?,
        _ => {}
    }
    tx.commit().await
}

/// Logistics: a shipment created for a paid order (an event about an order this database
/// does not hold ships nothing).
pub async fn create_shipment(db: &Pool, job: &'static str, event: &OrderEvent) -> Result<(), Error> {
    let Some(mut tx) = processed::claim(db, job, &event.event_id).await? else {
        return Ok(());
    };
    if event.typed() == Some(OrderEventType::Paid) {
        post_payment::create_shipment(&mut *tx, event.order_id).await?;
    }
    tx.commit().await
}

/// A notification written to the `notifications` table (unique per order and template):
/// the outbox a push/SMS sender drains when no gateway is configured.
pub async fn queue_notification(
    db: &Pool,
    user_id: i64,
    order_id: OrderId,
    template: &str,
    payload: serde_json::Value,
) -> Result<(), Error> {
    post_payment::queue_notification(db, user_id, order_id.0, template, payload).await
}

/// Shipments handed over to the warehouse: the due ones, a failed attempt counted, a
/// successful one recorded with the order shipped.
#[derive(Debug, Clone)]
pub struct ShipmentHandOff {
    db: Pool,
    order_events_topic: String,
    /// How long after payment a shipment is handed over (the warehouse's pick-up delay).
    after: Duration,
}

impl ShipmentHandOff {
    pub fn new(db: Pool, order_events_topic: String, after: Duration) -> Self {
        Self {
            db,
            order_events_topic,
            after,
        }
    }

    /// Up to 100 shipments due for hand-over, oldest first.
    pub async fn due(&self) -> Result<Vec<DueShipment>, Error> {
        post_payment::due_shipments(&self.db, self.after).await
    }

    pub async fn failed(&self, order_id: i64) -> Result<(), Error> {
        post_payment::count_handover_attempt(&self.db, order_id).await
    }

    /// The warehouse took it: the order ships (`order.shipped`) and the shipment is done.
    pub async fn handed_over(&self, order_id: i64) -> Result<(), crate::postgres::checkout::CheckoutError> {
        let shipped = transitions::transition(
            &self.db,
            OrderId(order_id),
            None,
            OrderEventKind::Ship,
            &self.order_events_topic,
        )
        .await?;
        if !matches!(shipped, Transition::Done { .. }) {
            tracing::info!(order_id, ?shipped, "handed over an order that can no longer ship");
        }
        post_payment::mark_handed_over(&self.db, order_id).await?;
        Ok(())
    }
}
