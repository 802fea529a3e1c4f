//! The pending set (accepted orders not yet stored) and the sweeps over it, and the counts
//! of a sale's reservations and buyers.

use super::*;

impl StockStore {
    /// Forget that these orders of one shard wait to be persisted (they are in the database
    /// now).
    pub async fn clear_pending(&self, shard: Shard, ids: &[OrderId]) -> Result<(), StockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        redis::cmd("ZREM")
            .arg(SaleKeys::of(shard).pending)
            .arg(ids.iter().map(|id| id.0).collect::<Vec<_>>())
            .query_async::<()>(&mut conn)
            .await?;
        Ok(())
    }

    /// Orders of one shard reserved at or before `reserved_before_ms` and still waiting to be
    /// persisted.
    pub async fn stale_pending(
        &self,
        shard: Shard,
        reserved_before_ms: i64,
        limit: usize,
    ) -> Result<Vec<OrderId>, StockError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(SaleKeys::of(shard).pending)
            .arg("-inf")
            .arg(reserved_before_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        Ok(ids.iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Move pending orders' scores to `now_ms` (they were just republished).
    pub async fn touch_pending(&self, shard: Shard, ids: &[OrderId], now_ms: i64) -> Result<(), StockError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(SaleKeys::of(shard).pending).arg("XX");
        for id in ids {
            cmd.arg(now_ms).arg(id.0);
        }
        let mut conn = self.conn.clone();
        cmd.query_async::<()>(&mut conn).await?;
        Ok(())
    }

    /// The live reservations among `ids` on one shard (`None` where released or unknown).
    pub async fn reservations(
        &self,
        shard: Shard,
        ids: &[OrderId],
    ) -> Result<Vec<Option<Reservation>>, StockError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(SaleKeys::of(shard).reservations);
        for id in ids {
            cmd.arg(id.0);
        }
        let mut conn = self.conn.clone();
        let payloads: Vec<Option<String>> = cmd.query_async(&mut conn).await?;
        ids.iter()
            .zip(payloads)
            .map(|(id, p)| p.map(|p| decode_counted_reservation(*id, &p)).transpose())
            .collect()
    }

    /// Every live reservation of one shard (reconciliation; stock-sized).
    pub async fn all_reservations(&self, shard: Shard) -> Result<Vec<Reservation>, StockError> {
        let mut conn = self.conn.clone();
        let all: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(SaleKeys::of(shard).reservations)
            .query_async(&mut conn)
            .await?;
        all.into_iter()
            .map(|(id, payload)| {
                let order_id = id.parse().map_err(|_| StockError::UnexpectedReply {
                    script: "the reservations hash",
                    reply: format!("order id {id:?}"),
                })?;
                decode_counted_reservation(order_id, &payload)
            })
            .collect()
    }

    /// Units held per buyer on one shard, as its buyers hash has them.
    pub async fn all_buyers(&self, shard: Shard) -> Result<HashMap<i64, i64>, StockError> {
        self.on_key("HGETALL", SaleKeys::of(shard).buyers).await
    }

    /// Orders waiting to be persisted, over every shard.
    pub async fn pending_count(&self, sale: SaleShards) -> Result<u64, StockError> {
        self.summed(sale, "ZCARD", |k| k.pending).await
    }

    /// Number of live reservations of a promotion, over every shard.
    pub async fn reservation_count(&self, sale: SaleShards) -> Result<u64, StockError> {
        self.summed(sale, "HLEN", |k| k.reservations).await
    }

    /// Units a user holds in live reservations of a promotion.
    pub async fn units_held(&self, sale: SaleShards, user_id: UserId) -> Result<i64, StockError> {
        let mut conn = self.conn.clone();
        let held: Option<i64> = redis::cmd("HGET")
            .arg(SaleKeys::of(sale.shard_of(user_id.get())).buyers)
            .arg(user_id.get())
            .query_async(&mut conn)
            .await?;
        Ok(held.unwrap_or(0))
    }
}
