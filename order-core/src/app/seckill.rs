//! Placing a seckill order once the edge let it through (limits, sale token, the sale's local
//! state): one Lua reserve in Redis → confirmed on the replicas → published → queued; and a
//! retry's way back to the order its request id already holds.
//!
//! A reservation is a promise: once `reserve.lua` took a unit for an order id, that order will
//! be persisted — by this publish, by a retry's publish, or by the recovery sweeper. Nothing
//! here ever releases it. So a failed confirmation or publish answers
//! `Refusal::Unconfirmed` (retry with the same request id) and keeps the unit; a retry on
//! any gateway finds the order id and, while the order is not yet persisted, publishes a copy
//! before it is queued. The writer stores one row per order id.
//!
//! Nothing is published before Redis confirmed the reservation (its node still holds the
//! sale's history, and the replicas hold the reservation): a queued order never rests on a
//! write only one Redis node had.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::bus::JsonProducer;
use crate::domain::ids::{OrderId, Quantity, RequestId, UserId};
use crate::domain::promotion::{Promotion, PromotionState};
use crate::domain::reservation::Reservation;
use crate::domain::shards::SaleShards;
use crate::postgres::promotions::PromotionRepo;
use crate::redis::clock::RedisClock;
use crate::redis::durability::{Claim, Confirmation, Confirmer};
use crate::redis::stock::{IfStarted, ReserveOutcome, StockError, StockStore, SyncOutcome};
use crate::runtime::metrics::timed;
use crate::runtime::transient::Transient;

/// One buyer's order for a sale, parsed and let through by the edge.
#[derive(Debug, Clone, Copy)]
pub struct SeckillOrder<'a> {
    pub promotion: &'a Promotion,
    pub user: UserId,
    pub request_id: &'a RequestId,
    pub quantity: Quantity,
    /// Minted for this request under the caller's worker-id lease; a retry is answered with
    /// the order id its first attempt got instead.
    pub order_id: OrderId,
    /// Redis' clock as the caller reads it: stamps the reservation once it is taken.
    pub clock: &'a RedisClock,
}

/// Why an order was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Redis found the sale not open to buyers: `SoldOut`, `Scheduled`, `Ended`, `Paused`.
    Closed(PromotionState),
    LimitExceeded,
    /// The sale's Redis node may have lost writes; it sells again once recovered.
    Recovering,
    /// The sale's stock is not in Redis, and loading it afresh would offer it twice.
    NotLoaded,
    /// The order is held, but not yet confirmed: retry with the same request id.
    Unconfirmed {
        order_id: OrderId,
        awaiting: Awaiting,
    },
}

/// Which confirmation a held order still waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// Redis' replicas (or the node lost the reservation: a retry reserves anew).
    Replicas,
    /// The broker's receipt of the published order.
    Queue,
}

/// A store failed while an order was being placed.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error("reserve stock: {0}")]
    Reserve(StockError),
    #[error("warm up a promotion: {0}")]
    WarmUp(StockError),
    #[error("confirm a reservation: {0}")]
    Confirm(StockError),
    #[error("look up a request id: {0}")]
    Lookup(StockError),
    #[error("look up a promotion: {0}")]
    Promotion(#[from] crate::postgres::Error),
}

impl PlaceError {
    /// What was being done, for the log line of the failure.
    pub fn step(&self) -> &'static str {
        match self {
            Self::Reserve(_) => "reserve stock",
            Self::WarmUp(_) => "warm up a promotion",
            Self::Confirm(_) => "confirm a reservation",
            Self::Lookup(_) => "look up a request id",
            Self::Promotion(_) => "look up a promotion",
        }
    }
}

impl Transient for PlaceError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Reserve(e) | Self::WarmUp(e) | Self::Confirm(e) | Self::Lookup(e) => e.is_transient(),
            Self::Promotion(e) => e.is_transient(),
        }
    }
}

/// Places seckill orders; built once per gateway.
#[derive(Debug)]
pub struct SeckillOrders {
    stock: StockStore,
    confirmer: Confirmer,
    publisher: Arc<JsonProducer>,
    promotions: PromotionRepo,
    /// Whether the last publish failed (publish failures are logged once per streak).
    publish_failing: AtomicBool,
}

impl SeckillOrders {
    pub fn new(
        stock: StockStore,
        confirmer: Confirmer,
        publisher: Arc<JsonProducer>,
        promotions: PromotionRepo,
    ) -> Self {
        Self {
            stock,
            confirmer,
            publisher,
            promotions,
            publish_failing: AtomicBool::new(false),
        }
    }

    /// Reserve, confirm and publish one order (or, for a retry, its first attempt's order):
    /// `Ok(order id)` once it is on its way to the database (a 202). `on_reserved` hears the
    /// units left as soon as a new unit is taken, whatever the confirmation then says.
    pub async fn place(
        &self,
        order: SeckillOrder<'_>,
        on_reserved: impl FnOnce(i64),
    ) -> Result<Result<OrderId, Refusal>, PlaceError> {
        let promotion = order.promotion;
        let reserve = || {
            timed(
                "redis",
                "reserve",
                self.stock.reserve(
                    promotion.sale(),
                    order.user,
                    order.request_id,
                    order.quantity,
                    order.order_id,
                ),
            )
        };
        let mut outcome = reserve().await.map_err(PlaceError::Reserve)?;
        if outcome == ReserveOutcome::NotLoaded {
            // Loading a started sale afresh would offer its whole stock again next to the
            // orders already taken: the script refuses it (on Redis' clock), and only a
            // repair restores it. A sale that has not started had nothing reserved, so
            // loading it is safe.
            let loaded = self
                .stock
                .sync(promotion, IfStarted::Refuse)
                .await
                .map_err(PlaceError::WarmUp)?;
            if loaded == SyncOutcome::StartedNotLoaded {
                return Ok(Err(Refusal::NotLoaded));
            }
            outcome = reserve().await.map_err(PlaceError::Reserve)?;
        }
        if let ReserveOutcome::Reserved { order_id, .. } | ReserveOutcome::Duplicate { order_id, .. } =
            &outcome
        {
            // The caller's span may name the order (the gateway's request span has an
            // `order_id` field): every later line of the request then does.
            tracing::Span::current().record("order_id", tracing::field::display(order_id));
        }
        Ok(match outcome {
            ReserveOutcome::Reserved { order_id, remaining } => {
                on_reserved(remaining);
                let reservation = Reservation {
                    order_id,
                    user_id: order.user,
                    quantity: order.quantity,
                    reserved_at_ms: order.clock.now_ms(),
                    request_id: order.request_id.clone(),
                };
                tracing::debug!(promotion_id = promotion.id, remaining, "reserved; publishing");
                self.confirm_and_publish(promotion, &reservation, Claim::New)
                    .await?
                    .map(|()| order_id)
            }
            ReserveOutcome::Duplicate {
                order_id,
                reservation,
                pending,
            } => {
                // The first attempt may still be publishing, or may have timed out: a queued
                // answer needs a copy of the order on its way. The writer keeps one row per
                // order id.
                let sent = match (pending, reservation) {
                    (true, Some(reservation)) => {
                        self.confirm_and_publish(promotion, &reservation, Claim::Held)
                            .await?
                    }
                    _ => Ok(()),
                };
                sent.map(|()| order_id)
            }
            ReserveOutcome::SoldOut => Err(Refusal::Closed(PromotionState::SoldOut)),
            ReserveOutcome::NotStarted => Err(Refusal::Closed(PromotionState::Scheduled)),
            ReserveOutcome::Ended => Err(Refusal::Closed(PromotionState::Ended)),
            ReserveOutcome::Paused => Err(Refusal::Closed(PromotionState::Paused)),
            ReserveOutcome::LimitExceeded => Err(Refusal::LimitExceeded),
            ReserveOutcome::NotLoaded => Err(Refusal::NotLoaded),
            ReserveOutcome::Recovering => Err(Refusal::Recovering),
        })
    }

    /// The order this buyer's request id already holds in a sale, if any (a retry's answer
    /// when the usual path cannot give it: a lapsed sale token).
    pub async fn held_order(
        &self,
        sale: SaleShards,
        user: UserId,
        request_id: &RequestId,
    ) -> Result<Option<OrderId>, PlaceError> {
        self.stock
            .order_for_request(sale, user, request_id)
            .await
            .map_err(PlaceError::Lookup)
    }

    /// The order a request id holds in a sale that is no longer current (ended long ago):
    /// `Ok(None)` when the sale does not exist or the request holds nothing.
    pub async fn held_in_past_sale(
        &self,
        promotion_id: i64,
        user: UserId,
        request_id: &RequestId,
    ) -> Result<Option<OrderId>, PlaceError> {
        // On its buyer's shard: the row says how many the sale has.
        let Some(sale) = self.promotions.sale_shards(promotion_id).await? else {
            return Ok(None);
        };
        self.held_order(sale, user, request_id).await
    }

    /// Confirm a reservation on Redis' replicas, then publish its order and wait for the
    /// broker's receipt. Unconfirmed, the order stays reserved (a retry with the same
    /// request id confirms it then, or reserves anew where the node lost it) and nothing is
    /// published; a failed publish keeps it too (a retry publishes it again, the recovery
    /// sweeper republishes it if nobody does).
    async fn confirm_and_publish(
        &self,
        promotion: &Promotion,
        reservation: &Reservation,
        claim: Claim,
    ) -> Result<Result<(), Refusal>, PlaceError> {
        let shard = promotion.sale().shard_of(reservation.user_id.get());
        let confirmed = timed(
            "redis",
            "confirm",
            self.confirmer.confirm(shard, reservation.order_id, claim),
        )
        .await
        .map_err(PlaceError::Confirm)?;
        let label = match confirmed {
            Confirmation::Confirmed => "confirmed",
            Confirmation::Unreplicated { .. } => "unreplicated",
            Confirmation::Missing => "missing",
            Confirmation::Fenced => "fenced",
            Confirmation::NotLoaded => "not_loaded",
        };
        metrics::counter!("seckill_confirmations_total", "outcome" => label).increment(1);
        match confirmed {
            Confirmation::Confirmed => {}
            Confirmation::Unreplicated { .. } | Confirmation::Missing => {
                return Ok(Err(Refusal::Unconfirmed {
                    order_id: reservation.order_id,
                    awaiting: Awaiting::Replicas,
                }))
            }
            Confirmation::Fenced => return Ok(Err(Refusal::Recovering)),
            Confirmation::NotLoaded => return Ok(Err(Refusal::NotLoaded)),
        }
        Ok(self.publish(promotion, reservation).await)
    }

    async fn publish(&self, promotion: &Promotion, reservation: &Reservation) -> Result<(), Refusal> {
        let event = reservation.accepted_event(promotion);
        let published = timed("pulsar", "publish", self.publisher.publish(&event)).await;
        // Logged once per streak of failures (a broker outage under a flood fails every
        // request).
        let was_failing = self.publish_failing.swap(published.is_err(), Ordering::Relaxed);
        match published {
            Ok(()) => {
                if was_failing {
                    tracing::info!("publishing accepted orders works again");
                }
                Ok(())
            }
            Err(e) => {
                metrics::counter!("seckill_publish_failures_total").increment(1);
                if !was_failing {
                    tracing::warn!(order_id = %reservation.order_id, error = %e, "publish an accepted order; reservations are kept and clients asked to retry");
                }
                Err(Refusal::Unconfirmed {
                    order_id: reservation.order_id,
                    awaiting: Awaiting::Queue,
                })
            }
        }
    }
}
