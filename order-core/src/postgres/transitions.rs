//! Lifecycle changes asked for by a user or an operator (cancel, ship, refund, …): each
//! applied in one transaction, guarded by the order's current status, with the side effects
//! the event implies (stock returned, refund row, event queued).

use sqlx::PgPool;

use crate::domain::checkout::Transition;
use crate::domain::events::OrderEvent;
use crate::domain::ids::OrderId;
use crate::domain::lifecycle::{OrderEventKind, OrderStatus};
use crate::domain::orders::CancelledOrder;
use crate::postgres::cancellation::return_stock_and_announce;
use crate::postgres::checkout::CheckoutError;

/// The order a lifecycle change or a payment locks (`FOR UPDATE`) and judges.
pub(crate) struct LockedOrder {
    pub status: String,
    pub user_id: i64,
    pub total_cents: i64,
    pub kind: String,
    pub promotion_id: Option<i64>,
}

/// Apply `event` to an order (the user's own when `user_id` is given), guarded by its
/// current status, with the side effects the event implies, in one transaction.
pub async fn transition(
    pool: &PgPool,
    order_id: OrderId,
    user_id: Option<i64>,
    event: OrderEventKind,
    order_events_topic: &str,
) -> Result<Transition, CheckoutError> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query_as!(
        LockedOrder,
        "SELECT status, user_id, total_cents, kind, promotion_id FROM orders
         WHERE id = $1 AND ($2::BIGINT IS NULL OR user_id = $2) FOR UPDATE",
        order_id.0,
        user_id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(LockedOrder {
        status,
        user_id: owner,
        total_cents: total,
        kind,
        promotion_id,
    }) = row
    else {
        return Ok(Transition::NotFound);
    };
    let from: OrderStatus = status
        .parse()
        .map_err(|e: String| CheckoutError::Inconsistent(format!("order {order_id}: {e}")))?;
    let to = match from.apply(event) {
        Ok(to) => to,
        Err(illegal) => return Ok(Transition::Illegal(illegal)),
    };
    sqlx::query!(
        "UPDATE orders SET status = $2, updated_at = now() WHERE id = $1 AND status = $3",
        order_id.0,
        to.as_str(),
        from.as_str(),
    )
    .execute(&mut *tx)
    .await?;
    let order = CancelledOrder {
        id: order_id.0,
        user_id: owner,
        kind: kind.clone(),
        promotion_id,
        total_cents: total,
    };
    match event {
        OrderEventKind::Cancel => {
            return_stock_and_announce(
                &mut tx,
                &[order],
                OrderEvent::CANCELLED,
                Some("user"),
                order_events_topic,
            )
            .await?
        }
        OrderEventKind::Refund => {
            sqlx::query!(
                "INSERT INTO refunds (order_id, amount_cents, reason) VALUES ($1, $2, 'user_request')
                 ON CONFLICT DO NOTHING",
                order_id.0,
                total,
            )
            .execute(&mut *tx)
            .await?;
            return_stock_and_announce(&mut tx, &[order], OrderEvent::REFUNDED, None, order_events_topic)
                .await?
        }
        OrderEventKind::RequestRefund
        | OrderEventKind::Ship
        | OrderEventKind::Pay
        | OrderEventKind::Complete => {
            let e = OrderEvent::new(
                OrderEvent::type_for(event),
                order_id,
                owner,
                &kind,
                promotion_id,
                total,
                None,
            );
            crate::postgres::outbox::enqueue(&mut tx, order_events_topic, &e.event_id, &e).await?;
        }
    }
    tx.commit().await?;
    Ok(Transition::Done {
        status: to,
        promotion_id,
        user_id: owner,
    })
}
