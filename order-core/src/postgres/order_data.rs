//! Keeping years of order data bounded: monthly partitions created ahead, months past the
//! retention archived to files and dropped, and the event bookkeeping tables pruned by age.
//!
//! `orders` and `order_items` are partitioned by month of the order id (see
//! `domain::order_months`). The consumers' order-data task runs these periodically; several
//! processes may, since every step that changes the schema holds one advisory lock.
//!
//! The archive sink is a directory of files, one per month, `orders-YYYY-MM.jsonl.gz`: one
//! JSON object per line (the order's columns and its `items`), written as gzip members of
//! up to `CHUNK_ORDERS` orders each, so `zcat` reads the whole month and the gateway reads one
//! order by decompressing one member (`order_archive_chunks` says where each starts).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::Deserialize;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::domain::ids::OrderId;
use crate::domain::order_months::OrderMonth;
use crate::domain::orders::OrderView;

/// Orders per gzip member of an archive file: what a lookup of one archived order reads.
pub const CHUNK_ORDERS: usize = 2_000;

/// Taken (in a transaction) by whoever creates or drops partitions.
const SCHEMA_LOCK: i64 = 0x5EC_0DA7A;

/// How long a schema change waits for the locks it needs before it gives up until the next
/// pass: dropping a partition briefly locks `orders` against every reader.
const LOCK_TIMEOUT: &str = "5s";

#[derive(Debug, thiserror::Error)]
pub enum OrderDataError {
    #[error("order database")]
    Database(#[from] sqlx::Error),
    #[error("archive file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> OrderDataError + '_ {
    move |source| OrderDataError::File {
        path: path.to_owned(),
        source,
    }
}

/// The months whose partitions exist, oldest first.
pub async fn live_months(pool: &PgPool) -> sqlx::Result<Vec<OrderMonth>> {
    let names = sqlx::query_scalar!(
        r#"SELECT c.relname::TEXT AS "name!" FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'orders'::regclass"#
    )
    .fetch_all(pool)
    .await?;
    let mut months: Vec<OrderMonth> = names.iter().filter_map(|n| OrderMonth::of_partition(n)).collect();
    months.sort();
    Ok(months)
}

/// Create the partitions of `now`'s month and the `ahead` months after it that are missing
/// (months already archived are not created again); returns how many months it created.
pub async fn create_partitions_ahead(pool: &PgPool, now: DateTime<Utc>, ahead: u32) -> sqlx::Result<i32> {
    let this_month = OrderMonth::of(now);
    let mut tx = pool.begin().await?;
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query!("SELECT set_config('lock_timeout', $1, true)", LOCK_TIMEOUT)
        .fetch_one(&mut *tx)
        .await?;
    let created = sqlx::query_scalar!(
        r#"SELECT order_partitions_through($1, $2) AS "created!""#,
        this_month.first_day(),
        this_month.plus(ahead as i32).first_day(),
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// A month moved from the database to its archive file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedMonth {
    pub month: OrderMonth,
    pub orders: u64,
    pub file: PathBuf,
}

/// The archive file's name of `month` (`order_archives.file`).
fn archive_file_name(month: OrderMonth) -> String {
    format!("orders-{month}.jsonl.gz")
}

/// The archive file of `month` in `dir`.
pub fn archive_file(dir: &Path, month: OrderMonth) -> PathBuf {
    dir.join(archive_file_name(month))
}

/// Archive one month: write its orders (with their items) to its file in `dir`, then, in
/// the same transaction that held the month's partitions locked against writes, record the
/// file, delete the month's request keys, shipments and stock returns, and drop the
/// partitions. `None` when another process holds the schema lock or the month has no
/// partitions. A crash before the commit leaves the rows where they were (the file is
/// written again by the next pass); after it, the file is on disk (synced before commit).
pub async fn archive_month(
    pool: &PgPool,
    dir: &Path,
    month: OrderMonth,
) -> Result<Option<ArchivedMonth>, OrderDataError> {
    let suffix = month.partition_suffix();
    let (orders_part, items_part) = (format!("orders_{suffix}"), format!("order_items_{suffix}"));
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        SCHEMA_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let exists = sqlx::query_scalar!(
        r#"SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL AS "exists!""#,
        orders_part,
        items_part,
    )
    .fetch_one(&mut *tx)
    .await?;
    if !exists {
        return Ok(None);
    }
    sqlx::query!("SELECT set_config('lock_timeout', $1, true)", LOCK_TIMEOUT)
        .fetch_one(&mut *tx)
        .await?;
    // DDL names its tables (no parameters): the names come from a validated month.
    sqlx::query(&format!("LOCK TABLE {orders_part}, {items_part} IN SHARE MODE"))
        .execute(&mut *tx)
        .await?;
    let (first_id, end_id) = (month.first_id(), month.end_id());

    tokio::fs::create_dir_all(dir).await.map_err(file_error(dir))?;
    let path = archive_file(dir, month);
    let partial = dir.join(format!(".orders-{month}.jsonl.gz.partial"));
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(file_error(&partial))?;
    let mut chunks = ChunkIndex::default();
    let mut pending: Vec<(i64, String)> = Vec::with_capacity(CHUNK_ORDERS);
    {
        // The month's id range: the planner reads its partitions only.
        let mut rows = sqlx::query!(
            r#"SELECT o.id, (to_jsonb(o) || jsonb_build_object('items', COALESCE(
                   (SELECT jsonb_agg(to_jsonb(i) - 'order_id' ORDER BY i.line_no) FROM order_items i
                    WHERE i.order_id = o.id), '[]'::jsonb)))::TEXT AS "line!"
               FROM orders o WHERE o.id >= $1 AND o.id < $2 ORDER BY o.id"#,
            first_id,
            end_id,
        )
        .fetch(&mut *tx);
        while let Some(row) = rows.try_next().await? {
            pending.push((row.id, row.line));
            if pending.len() == CHUNK_ORDERS {
                write_chunk(&mut file, &partial, &mut chunks, &pending).await?;
                pending.clear();
            }
        }
    }
    if !pending.is_empty() {
        write_chunk(&mut file, &partial, &mut chunks, &pending).await?;
    }
    file.sync_all().await.map_err(file_error(&partial))?;
    drop(file);
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(file_error(&path))?;
    if let Ok(d) = tokio::fs::File::open(dir).await {
        // The rename is durable once the directory is.
        d.sync_all().await.map_err(file_error(dir))?;
    }

    sqlx::query!(
        "INSERT INTO order_archives (month, first_id, end_id, file, orders) VALUES ($1, $2, $3, $4, $5)",
        month.first_day(),
        first_id,
        end_id,
        archive_file_name(month),
        chunks.orders as i64,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO order_archive_chunks (month, first_id, last_id, byte_offset, byte_len)
         SELECT $1, * FROM UNNEST($2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[])",
        month.first_day(),
        &chunks.first_ids,
        &chunks.last_ids,
        &chunks.offsets,
        &chunks.lens,
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query!(
        "WITH keys AS (DELETE FROM order_request_keys WHERE order_id >= $1 AND order_id < $2),
              shipped AS (DELETE FROM shipments WHERE order_id >= $1 AND order_id < $2)
         DELETE FROM stock_returns WHERE order_id >= $1 AND order_id < $2",
        first_id,
        end_id,
    )
    .execute(&mut *tx)
    .await?;
    for ddl in [
        format!("DROP TABLE {items_part}"),
        format!("ALTER TABLE orders DETACH PARTITION {orders_part}"),
        format!("DROP TABLE {orders_part}"),
    ] {
        sqlx::query(&ddl).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(Some(ArchivedMonth {
        month,
        orders: chunks.orders,
        file: path,
    }))
}

#[derive(Debug, Default)]
struct ChunkIndex {
    orders: u64,
    first_ids: Vec<i64>,
    last_ids: Vec<i64>,
    offsets: Vec<i64>,
    lens: Vec<i64>,
}

impl ChunkIndex {
    /// Where the next member starts: right after the last one.
    fn end(&self) -> i64 {
        self.offsets
            .last()
            .zip(self.lens.last())
            .map_or(0, |(o, l)| o + l)
    }
}

/// Append one gzip member holding `rows` (in id order) and index it.
async fn write_chunk(
    file: &mut tokio::fs::File,
    path: &Path,
    index: &mut ChunkIndex,
    rows: &[(i64, String)],
) -> Result<(), OrderDataError> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for (_, line) in rows {
        gz.write_all(line.as_bytes())
            .and_then(|()| gz.write_all(b"\n"))
            .map_err(file_error(path))?;
    }
    let member = gz.finish().map_err(file_error(path))?;
    file.write_all(&member).await.map_err(file_error(path))?;
    index.orders += rows.len() as u64;
    index.first_ids.push(rows[0].0);
    index.last_ids.push(rows[rows.len() - 1].0);
    index.offsets.push(index.end());
    index.lens.push(member.len() as i64);
    Ok(())
}

/// What an archive line holds of an order that its owner's view needs.
#[derive(Debug, Deserialize)]
struct ArchivedOrder {
    id: i64,
    user_id: i64,
    status: String,
    kind: String,
    promotion_id: Option<i64>,
    total_cents: i64,
    expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

/// The archived order with this id if `user_id` owns it, read from its month's file in
/// `dir`; `None` when no archived month holds the id or another user owns it.
pub async fn find_archived(
    pool: &PgPool,
    dir: &Path,
    order_id: OrderId,
    user_id: i64,
) -> Result<Option<OrderView>, OrderDataError> {
    let Some(chunk) = sqlx::query!(
        "SELECT a.file, c.byte_offset, c.byte_len FROM order_archive_chunks c
         JOIN order_archives a ON a.month = c.month
         WHERE c.last_id >= $1 AND c.first_id <= $1 ORDER BY c.last_id LIMIT 1",
        order_id.0,
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let path = dir.join(&chunk.file);
    let mut file = tokio::fs::File::open(&path).await.map_err(file_error(&path))?;
    file.seek(std::io::SeekFrom::Start(chunk.byte_offset as u64))
        .await
        .map_err(file_error(&path))?;
    let mut member = vec![0; chunk.byte_len as usize];
    file.read_exact(&mut member).await.map_err(file_error(&path))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(member.as_slice())
        .read_to_string(&mut text)
        .map_err(file_error(&path))?;
    let found = text
        .lines()
        .filter_map(|line| serde_json::from_str::<ArchivedOrder>(line).ok())
        .find(|o| o.id == order_id.0);
    let Some(order) = found else {
        // Inside a chunk's id range yet absent: ids are sparse, so most such ids never existed.
        return Ok(None);
    };
    if order.user_id != user_id {
        return Ok(None);
    }
    // A status the domain does not know is a damaged archive, not a database failure.
    let status = order
        .status
        .parse::<crate::domain::lifecycle::OrderStatus>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        .map_err(file_error(&path))?;
    Ok(Some(OrderView {
        order_id,
        status: crate::domain::orders::SeenStatus::Stored(status),
        kind: order.kind,
        promotion_id: order.promotion_id,
        total_cents: order.total_cents,
        expires_at: order.expires_at,
        created_at: order.created_at,
        archived: true,
    }))
}

/// Delete rows older than `before` from a table pruned by age, `batch` rows per statement,
/// at most `max_batches` statements; returns how many it deleted.
pub async fn prune_older_than(
    pool: &PgPool,
    table: PrunedTable,
    before: DateTime<Utc>,
    batch: i64,
    max_batches: u32,
) -> sqlx::Result<u64> {
    let mut deleted = 0;
    for _ in 0..max_batches {
        let n = match table {
            PrunedTable::ProcessedEvents => sqlx::query!(
                "DELETE FROM processed_events WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM processed_events WHERE processed_at < $1 LIMIT $2))",
                before,
                batch,
            )
            .execute(pool)
            .await?
            .rows_affected(),
            PrunedTable::Notifications => sqlx::query!(
                "DELETE FROM notifications WHERE ctid = ANY(ARRAY(
                     SELECT ctid FROM notifications WHERE created_at < $1 LIMIT $2))",
                before,
                batch,
            )
            .execute(pool)
            .await?
            .rows_affected(),
        };
        deleted += n;
        if n < batch as u64 {
            break;
        }
    }
    Ok(deleted)
}

/// The tables with an age-based retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunedTable {
    /// Consumers' dedup rows: kept longer than any redelivery can come.
    ProcessedEvents,
    /// Messages handed to the delivery service.
    Notifications,
}
