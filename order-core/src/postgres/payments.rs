//! Payment callbacks: each applied exactly once (keyed by the provider's payment id), in one
//! transaction with the order's move to `paid`, its `order.paid` event, and a refund row for
//! money that arrived where it cannot be kept.

use sqlx::PgPool;

use crate::domain::checkout::{CallbackOutcome, PaymentCallback};
use crate::domain::events::OrderEvent;
use crate::domain::lifecycle::{OrderEventKind, OrderStatus};
use crate::postgres::transitions::LockedOrder;

/// Apply one callback exactly once (keyed by the provider's payment id).
pub async fn apply_payment(
    pool: &PgPool,
    callback: &PaymentCallback,
    order_events_topic: &str,
) -> sqlx::Result<CallbackOutcome> {
    let mut tx = pool.begin().await?;
    let payload = serde_json::json!({
        "payment_id": callback.payment_id,
        "order_id": callback.order_id,
        "amount_cents": callback.amount_cents,
        "status": callback.status,
        "timestamp": callback.timestamp,
    });
    let fresh = sqlx::query!(
        "INSERT INTO payments (id, order_id, amount_cents, outcome, payload) VALUES ($1, $2, $3, 'applied', $4)
         ON CONFLICT (id) DO NOTHING",
        callback.payment_id,
        callback.order_id.0,
        callback.amount_cents,
        payload,
    )
    .execute(&mut *tx)
    .await?;
    if fresh.rows_affected() == 0 {
        return Ok(CallbackOutcome::Duplicate);
    }
    let order = sqlx::query_as!(
        LockedOrder,
        "SELECT status, user_id, total_cents, kind, promotion_id FROM orders WHERE id = $1 FOR UPDATE",
        callback.order_id.0,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let refund = |reason: &'static str| (CallbackOutcome::RefundDue, Some(reason));
    let (outcome, refund_reason) = match &order {
        None => (CallbackOutcome::UnknownOrder, Some("unknown_order")),
        Some(order) if order.total_cents != callback.amount_cents => {
            (CallbackOutcome::AmountMismatch, Some("amount_mismatch"))
        }
        Some(order) => match order
            .status
            .parse::<OrderStatus>()
            .map(|s| s.apply(OrderEventKind::Pay))
        {
            Ok(Ok(_)) => (
                CallbackOutcome::Applied {
                    promotion_id: order.promotion_id,
                    user_id: order.user_id,
                },
                None,
            ),
            Ok(Err(e)) if e.from == OrderStatus::Cancelled => refund("late_payment"),
            _ => refund("duplicate_payment"),
        },
    };
    if let (Some(order), CallbackOutcome::Applied { .. }) = (&order, outcome) {
        sqlx::query!(
            "UPDATE orders SET status = 'paid', paid_at = now(), payment_id = $2, updated_at = now()
             WHERE id = $1 AND status = 'pending_payment'",
            callback.order_id.0,
            callback.payment_id,
        )
        .execute(&mut *tx)
        .await?;
        let event = OrderEvent::new(
            OrderEvent::PAID,
            callback.order_id,
            order.user_id,
            &order.kind,
            order.promotion_id,
            order.total_cents,
            None,
        );
        crate::postgres::outbox::enqueue(&mut tx, order_events_topic, &event.event_id, &event).await?;
    }
    sqlx::query!(
        "UPDATE payments SET outcome = $2 WHERE id = $1",
        callback.payment_id,
        outcome.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    if let Some(reason) = refund_reason {
        sqlx::query!(
            "INSERT INTO refunds (order_id, payment_id, amount_cents, reason) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            callback.order_id.0,
            callback.payment_id,
            callback.amount_cents,
            reason,
        )
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}
