//! Worker ids leased in Redis, so any number of gateways mint distinct order ids with no
//! operator numbering them.
//!
//! A gateway takes a free `seckill:worker:<n>` (n in 0..=1023) with a TTL and renews it every
//! third of the TTL. It mints only while its lease is surely still its own: until the
//! instant it sent its last successful renewal plus the TTL, less a safety margin, measured
//! on the monotonic clock (which keeps running while a process is stopped). A gateway paused
//! past its lease therefore stops minting the moment it runs again, before it learns that
//! another gateway took its worker id; it then leases one anew.
//!
//! Ids are stamped with Redis' clock (the offset read at each renewal, applied to the
//! monotonic clock), never above it, and a new holder never stamps below the instant it took
//! the worker id: so ids of an old and a new holder of one worker id cannot meet, whatever
//! the machines' own clocks say.
//!
//! Across a Redis failover: a lease counts only once `WAIT` saw it on the replicas
//! (`redis.durability.replicas`), so the promoted replica has it. Should a node lose one
//! anyway (a double fault, a restart from an old append-only file), a worker id whose node
//! changed history since it was last leased there stays quarantined for one lease length
//! (`acquire_lease.lua`): by then its old holder, whose renewals find nothing, has stopped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis::RedisConnection;
use redis::Script;
use tokio::time::Instant;

use crate::domain::ids::{OrderId, OrderIdGenerator, MAX_WORKER_ID};
use crate::runtime::shutdown::ShutdownListener;

fn lease_key(worker_id: u16) -> String {
    format!("seckill:worker:{worker_id}")
}

/// The lease's history record, in the lease key's slot (its hash tag is the lease key).
fn history_key(worker_id: u16) -> String {
    format!("{{seckill:worker:{worker_id}}}:history")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    pub ttl: Duration,
    /// Insist on this worker id (an operator's override); otherwise any free one.
    pub worker_id: Option<u16>,
    /// Replicas that must hold a lease before it counts, and how long to wait for them.
    pub replicas: u8,
    pub replica_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("worker id {0} is leased by another live gateway")]
    Taken(u16),
    #[error("all {} worker ids are leased by live gateways", MAX_WORKER_ID as u32 + 1)]
    NoneFree,
    #[error("the lease of worker id {worker_id} reached {acked} of {wanted} Redis replicas in time")]
    Unreplicated { worker_id: u16, acked: u8, wanted: u8 },
}

impl LeaseError {
    /// The replicas lag: the take reached none in time, or the master refused to write
    /// without them (`NOREPLICAS`, past `min-replicas-max-lag`). Both pass once they catch up.
    fn replicas_lag(&self) -> bool {
        match self {
            LeaseError::Unreplicated { .. } => true,
            LeaseError::Redis(e) => crate::runtime::transient::server_error_codes(e)
                .iter()
                .any(|code| code == "NOREPLICAS"),
            _ => false,
        }
    }
}

/// Minting is refused: this gateway holds no valid lease right now (503 until it does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no valid worker-id lease; order ids cannot be minted right now")]
pub struct NoLease;

/// Redis' clock as seen from here: Redis ms at a monotonic instant.
#[derive(Debug, Clone, Copy)]
struct ClockBase {
    at: Instant,
    redis_ms: u64,
}

impl ClockBase {
    fn now_ms(&self, now: Instant) -> u64 {
        self.redis_ms + now.saturating_duration_since(self.at).as_millis() as u64
    }
}

#[derive(Debug)]
struct Held {
    generator: OrderIdGenerator,
    /// Mint only before this instant.
    valid_until: Instant,
    clock: ClockBase,
}

pub struct WorkerLease {
    conn: RedisConnection,
    token: String,
    settings: LeaseSettings,
    held: Mutex<Option<Held>>,
    acquire: Script,
    renew: Script,
}

impl std::fmt::Debug for WorkerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerLease")
            .field("worker_id", &self.worker_id())
            .finish_non_exhaustive()
    }
}

impl WorkerLease {
    /// Take a worker id (waiting up to one TTL for an insisted-on id whose previous holder may
    /// have just died). `token` names this process; it must be unique (a UUID).
    pub async fn acquire(
        conn: RedisConnection,
        token: String,
        settings: LeaseSettings,
    ) -> Result<Arc<Self>, LeaseError> {
        let lease = Arc::new(Self {
            conn,
            token,
            settings,
            held: Mutex::new(None),
            acquire: Script::new(include_str!("../../../lua/acquire_lease.lua")),
            renew: Script::new(include_str!("../../../lua/renew_lease.lua")),
        });
        match settings.worker_id {
            Some(id) => {
                let deadline = Instant::now() + settings.ttl + Duration::from_millis(500);
                while !lease.take_replicated(id).await? {
                    if Instant::now() >= deadline {
                        return Err(LeaseError::Taken(id));
                    }
                    tokio::time::sleep(settings.ttl / 10).await;
                }
            }
            None => lease.take_any().await?,
        }
        Ok(lease)
    }

    /// The worker id held now, if the lease is valid.
    pub fn worker_id(&self) -> Option<u16> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.as_ref()
            .filter(|h| Instant::now() < h.valid_until)
            .map(|h| h.generator.worker_id())
    }

    /// The next order id, stamped with Redis' clock; refused unless the lease is surely held.
    pub fn mint(&self) -> Result<OrderId, NoLease> {
        let now = Instant::now();
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        match held.as_ref() {
            Some(h) if now < h.valid_until => Ok(h.generator.next_at(h.clock.now_ms(now))),
            _ => Err(NoLease),
        }
    }

    /// How long before the TTL runs out minting stops: covers the round trip of a renewal
    /// and clock-rate differences.
    fn margin(&self) -> Duration {
        (self.settings.ttl / 5).max(Duration::from_millis(200))
    }

    fn ttl_ms(&self) -> u64 {
        self.settings.ttl.as_millis() as u64
    }

    /// Run `acquire_lease.lua` or `renew_lease.lua` for `worker_id`, then `WAIT` for the
    /// replicas on the same connection: the script's answer, Redis' clock, the instant the
    /// call was sent and the instant its answer arrived. A lease the replicas did not confirm
    /// is an error: it does not count, whatever the script said.
    async fn call(
        &self,
        script: &Script,
        worker_id: u16,
    ) -> Result<(i64, u64, Instant, Instant), LeaseError> {
        let sent = Instant::now();
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(script.get_hash())
            .arg(2)
            .arg(lease_key(worker_id))
            .arg(history_key(worker_id))
            .arg(&self.token)
            .arg(self.ttl_ms());
        let wanted = self.settings.replicas;
        if wanted > 0 {
            pipe.cmd("WAIT")
                .arg(wanted)
                .arg(self.settings.replica_timeout.as_millis() as u64);
        }
        let replies: Vec<redis::Value> = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                script.prepare_invoke().load_async(&mut conn).await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        let mut replies = replies.into_iter();
        let (code, redis_ms): (i64, u64) =
            redis::from_redis_value(replies.next().unwrap_or_default()).map_err(redis::RedisError::from)?;
        if wanted > 0 && code == 1 {
            let acked: i64 = redis::from_redis_value(replies.next().unwrap_or_default())
                .map_err(redis::RedisError::from)?;
            let acked = u8::try_from(acked).unwrap_or(u8::MAX);
            if acked < wanted {
                return Err(LeaseError::Unreplicated {
                    worker_id,
                    acked,
                    wanted,
                });
            }
        }
        Ok((code, redis_ms, sent, Instant::now()))
    }

    /// Take `worker_id`, waiting out replicas that lag (a start-up under load): a take the
    /// replicas did not confirm in time does not count, and is asked for again for up to one
    /// lease length, as is one the master refused for want of replicas. The master may hold
    /// this process's token by then, so the script takes it again; if another gateway got it
    /// meanwhile (a failover lost the take), it answers no.
    async fn take_replicated(&self, worker_id: u16) -> Result<bool, LeaseError> {
        let deadline = Instant::now() + self.settings.ttl;
        loop {
            match self.try_take(worker_id).await {
                Err(e) if e.replicas_lag() && Instant::now() < deadline => {
                    tracing::info!(worker_id, error = %e, "a worker-id lease waits for the replicas; asking again");
                    tokio::time::sleep(self.settings.ttl / 20).await;
                }
                other => return other,
            }
        }
    }

    async fn try_take(&self, worker_id: u16) -> Result<bool, LeaseError> {
        let (code, redis_ms, sent, arrived) = self.call(&self.acquire, worker_id).await?;
        let taken = code == 1;
        if code == -1 {
            tracing::info!(
                worker_id,
                "worker id quarantined after a Redis failover; trying another"
            );
        }
        if taken {
            self.hold(worker_id, redis_ms, sent, arrived);
            tracing::info!(worker_id, "worker id leased");
        }
        Ok(taken)
    }

    /// Record a lease Redis just confirmed (taken or renewed): valid until the instant the
    /// call was sent plus the TTL, less the margin.
    fn hold(&self, worker_id: u16, redis_ms: u64, sent: Instant, arrived: Instant) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        // Keep the sequence while the worker id stays the same; a new one starts at the
        // instant it was taken (the previous holder's lease had run out by then).
        let generator = match held.take() {
            Some(h) if h.generator.worker_id() == worker_id => h.generator,
            _ => OrderIdGenerator::starting_at(worker_id, redis_ms),
        };
        *held = Some(Held {
            generator,
            valid_until: sent + self.settings.ttl - self.margin(),
            // Mapped to the arrival: our estimate of Redis' clock never runs ahead of it.
            clock: ClockBase {
                at: arrived,
                redis_ms,
            },
        });
    }

    async fn take_any(&self) -> Result<(), LeaseError> {
        let slots = u32::from(MAX_WORKER_ID) + 1;
        let start = uuid_like_start(&self.token, slots);
        for i in 0..slots {
            let id = ((start + i) % slots) as u16;
            if self.take_replicated(id).await? {
                return Ok(());
            }
        }
        Err(LeaseError::NoneFree)
    }

    /// Renew once. `Ok(false)`: the lease was lost (and minting has stopped).
    async fn renew_once(&self) -> Result<bool, LeaseError> {
        let Some(worker_id) = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.generator.worker_id())
        else {
            return Ok(false);
        };
        let (code, redis_ms, sent, arrived) = self.call(&self.renew, worker_id).await?;
        let renewed = code == 1;
        if renewed {
            self.hold(worker_id, redis_ms, sent, arrived);
        } else {
            *self.held.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        Ok(renewed)
    }

    /// Renew every third of the TTL until shutdown; a lost lease is replaced by a new one
    /// (the same id when insisted on). Failures are logged once per streak.
    pub fn spawn_renewal(self: &Arc<Self>, mut shutdown: ShutdownListener) -> tokio::task::JoinHandle<()> {
        let lease = Arc::clone(self);
        tokio::spawn(async move {
            let every = lease.settings.ttl / 3;
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.recv() => break,
                }
                let outcome = match lease.renew_once().await {
                    Ok(true) => Ok(()),
                    Ok(false) => {
                        tracing::error!("worker-id lease lost (this gateway was paused or cut off from Redis past its lease); leasing one anew");
                        match lease.settings.worker_id {
                            Some(id) => lease.try_take(id).await.map(|_| ()),
                            None => lease.take_any().await,
                        }
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(()) if failing => {
                        tracing::info!("worker-id lease renewed again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "renew the worker-id lease; minting stops when it runs out");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

/// Where a gateway starts looking for a free worker id: spread by its token, so gateways
/// starting together rarely race for the same one.
fn uuid_like_start(token: &str, slots: u32) -> u32 {
    token.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(16_777_619)
    }) % slots
}
