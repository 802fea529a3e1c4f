//! Long polls of order status: `GET /api/orders/{id}?wait_ms=N` waits here for its order's
//! status to change, at no cost per request beyond a registration.
//!
//! Why one subscription: every status marker change in Redis is published on one channel
//! (`ORDER_STATUS_CHANNEL`, the order id as message). Each gateway holds a single pub/sub
//! connection for all its waiting requests and wakes the ones waiting on that order; a held
//! request holds no thread and no connection to Redis or PostgreSQL. The number held at once
//! is capped (503 `too_many_waiters` past it). While the subscription is down (Redis
//! restarting), waiters fall back to their deadline; on every (re)subscribe all of them wake
//! and look again, so a change published in between is not missed for long. Stopping the
//! gateway wakes every waiter, which answers at once with what it has.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use order_core::domain::ids::OrderId;
use order_core::redis::status_channel;
use order_core::runtime::settings::RedisSettings;
use order_core::runtime::shutdown::ShutdownListener;
use tokio::sync::Notify;

/// The waiting requests of one gateway, by order.
#[derive(Debug)]
pub struct OrderWatch {
    waiters: Mutex<HashMap<OrderId, Waiters>>,
    held: AtomicUsize,
    max_waiters: usize,
    closing: AtomicBool,
    /// Wakes every waiter at once (subscription restored, gateway stopping).
    everyone: Notify,
}

#[derive(Debug)]
struct Waiters {
    notify: Arc<Notify>,
    count: usize,
}

/// Past the cap of held long polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many requests are waiting for an order's status on this gateway")]
pub struct TooManyWaiters;

/// One request's registration; dropping it unregisters.
#[derive(Debug)]
pub struct Watching<'a> {
    watch: &'a OrderWatch,
    order_id: OrderId,
    notify: Arc<Notify>,
}

impl OrderWatch {
    pub fn new(max_waiters: usize) -> Self {
        Self {
            waiters: Mutex::new(HashMap::new()),
            held: AtomicUsize::new(0),
            max_waiters,
            closing: AtomicBool::new(false),
            everyone: Notify::new(),
        }
    }

    /// Requests waiting now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// Register a request waiting on `order_id`, within the cap.
    pub fn watch(&self, order_id: OrderId) -> Result<Watching<'_>, TooManyWaiters> {
        if self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < self.max_waiters).then_some(held + 1)
            })
            .is_err()
        {
            return Err(TooManyWaiters);
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let entry = waiters.entry(order_id).or_insert_with(|| Waiters {
            notify: Arc::new(Notify::new()),
            count: 0,
        });
        entry.count += 1;
        Ok(Watching {
            watch: self,
            order_id,
            notify: Arc::clone(&entry.notify),
        })
    }

    /// Wake the requests waiting on `order_id`.
    pub fn changed(&self, order_id: OrderId) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiters.get(&order_id) {
            w.notify.notify_waiters();
        }
    }

    /// Wake every waiting request: each looks at its order again.
    pub fn wake_all(&self) {
        self.everyone.notify_waiters();
    }

    /// The gateway is stopping: every waiter answers now, and new ones do not wait.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Relaxed);
        self.wake_all();
    }

    /// Follow the status channel until shutdown (`order_core::redis::status_channel`).
    pub async fn run(self: Arc<Self>, redis: RedisSettings, shutdown: ShutdownListener) {
        status_channel::follow(&redis, |id| self.changed(id), || self.wake_all(), shutdown).await
    }
}

impl Watching<'_> {
    /// Resolves on the next change of this order, or when every waiter is woken. Create it
    /// before looking at the status, so a change in between is not missed.
    pub fn next_change(&self) -> impl std::future::Future<Output = ()> + '_ {
        let order = self.notify.notified();
        let everyone = self.watch.everyone.notified();
        async move {
            tokio::select! {
                _ = order => {}
                _ = everyone => {}
            }
        }
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        let mut waiters = self.watch.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waiters.get_mut(&self.order_id) {
            w.count -= 1;
            if w.count == 0 {
                waiters.remove(&self.order_id);
            }
        }
        self.watch.held.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_change_wakes_the_waiters_of_that_order_only_and_the_cap_holds() {
        let watch = OrderWatch::new(2);
        let (a, b) = (OrderId(1), OrderId(2));
        let on_a = watch.watch(a).expect("first");
        let on_b = watch.watch(b).expect("second");
        assert_eq!(watch.watch(a).err(), Some(TooManyWaiters));

        let b_changed = on_b.next_change();
        tokio::pin!(b_changed);
        {
            let a_changed = on_a.next_change();
            tokio::pin!(a_changed);
            // Registered before the change: polled once, they wait.
            assert!(futures::poll!(a_changed.as_mut()).is_pending());
            assert!(futures::poll!(b_changed.as_mut()).is_pending());
            watch.changed(a);
            assert!(futures::poll!(a_changed.as_mut()).is_ready());
            assert!(futures::poll!(b_changed.as_mut()).is_pending());
        }
        drop(on_a);
        assert_eq!(watch.held(), 1);
        assert!(
            watch.waiters.lock().expect("lock").get(&a).is_none(),
            "unregistered"
        );
        watch.close();
        assert!(
            futures::poll!(b_changed.as_mut()).is_ready(),
            "stopping wakes everyone"
        );
        assert!(watch.is_closing());
    }
}
