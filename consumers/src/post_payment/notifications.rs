//! Push/SMS notifications for order events, through a [`Notifier`]: by default an outbox
//! table the delivery service reads, or an HTTP webhook (timeouts, retries, idempotency
//! key). One notification per (order, template) either way.

use order_core::app::post_payment::{self, JobLedger};
use order_core::domain::events::{OrderEvent, OrderEventType};
use order_core::domain::ids::OrderId;
use order_core::postgres::Pool;
use serde::Serialize;

use super::{post_with_retries, BoxFuture, Handler};

#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub user_id: i64,
    pub order_id: String,
    pub template: &'static str,
    pub total_cents: i64,
}

impl Notification {
    /// The message an event warrants, if any.
    pub fn for_event(event: &OrderEvent) -> Option<Self> {
        let template = match event.typed()? {
            OrderEventType::Paid => "payment_received",
            OrderEventType::Cancelled => "order_cancelled",
            OrderEventType::Shipped => "order_shipped",
            OrderEventType::Refunded => "refund_completed",
            _ => return None,
        };
        Some(Self {
            user_id: event.user_id,
            order_id: event.order_id.to_string(),
            template,
            total_cents: event.total_cents,
        })
    }

    pub fn key(&self) -> String {
        format!("{}:{}", self.template, self.order_id)
    }
}

pub trait Notifier: Send + Sync + std::fmt::Debug + 'static {
    /// Deliver once; a repeat of the same (order, template) must not notify twice.
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Writes to the `notifications` table (unique per order and template).
#[derive(Debug)]
pub struct OutboxNotifier {
    pub db: Pool,
}

impl Notifier for OutboxNotifier {
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            post_payment::queue_notification(
                &self.db,
                n.user_id,
                n.order_id.parse::<OrderId>()?,
                n.template,
                serde_json::to_value(n)?,
            )
            .await?;
            Ok(())
        })
    }
}

/// POSTs to a push/SMS gateway; the `Idempotency-Key` lets it drop repeats.
#[derive(Debug)]
pub struct WebhookNotifier {
    pub client: reqwest::Client,
    pub url: String,
    pub attempts: u32,
}

impl Notifier for WebhookNotifier {
    fn notify<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            post_with_retries(
                &self.client,
                &self.url,
                &n.key(),
                &serde_json::to_value(n)?,
                self.attempts,
            )
            .await
        })
    }
}

/// The job's subscription, and its name in `processed_events`.
const NAME: &str = "notifications";

#[derive(Debug)]
pub struct Notifications {
    done: JobLedger,
    notifier: Box<dyn Notifier>,
}

impl Notifications {
    pub fn new(db: Pool, notifier: Box<dyn Notifier>) -> Self {
        Self {
            done: JobLedger::new(db, NAME),
            notifier,
        }
    }
}

impl Handler for Notifications {
    fn name(&self) -> &'static str {
        NAME
    }

    fn handle<'a>(&'a self, event: &'a OrderEvent) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            if self.done.is_done(event).await? {
                return Ok(());
            }
            if let Some(n) = Notification::for_event(event) {
                self.notifier.notify(&n).await?;
            }
            self.done.mark_done(event).await?;
            Ok(())
        })
    }
}
