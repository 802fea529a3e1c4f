//! Which failures of a dependency are worth retrying, and which are bugs.
//!
//! A dependency that is down, slow or overloaded fails a call that will succeed later: the
//! caller may retry (HTTP 503 with Retry-After). A query the schema refuses, a row that does
//! not decode, a script error, an unexpected reply fail the same way every time: retrying
//! them only repeats the damage (HTTP 500, logged as a bug).

/// A failure that a later retry may not meet.
pub trait Transient {
    fn is_transient(&self) -> bool;
}

impl Transient for sqlx::Error {
    fn is_transient(&self) -> bool {
        match self {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // SQLSTATE classes: 08 connection, 53 insufficient resources, 57 operator
            // intervention (shutdown, statement timeout), 58 system error; the
            // serialization failures and deadlocks a retry resolves; and a write that met a
            // primary demoted during failover (25006).
            sqlx::Error::Database(e) => e.code().is_some_and(|code| {
                ["08", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || ["40001", "40P01", "25006"].contains(&code.as_ref())
            }),
            _ => false,
        }
    }
}

impl Transient for redis::RedisError {
    fn is_transient(&self) -> bool {
        // The client retries what it knows; a server that is busy with a slow script, out of
        // memory, without its replicas or unable to persist answers these until it recovers.
        const OVERLOADED: [&str; 4] = ["BUSY", "OOM", "NOREPLICAS", "MISCONF"];
        !matches!(self.retry_method(), redis::RetryMethod::NoRetry)
            || server_error_codes(self)
                .iter()
                .any(|code| OVERLOADED.contains(&code.as_str()))
    }
}

/// The error codes the server answered: the reply's own, or each failed command's of a
/// pipeline (whose error has no code of its own).
pub fn server_error_codes(e: &redis::RedisError) -> Vec<String> {
    match e.clone().into_server_errors() {
        Some(errors) => errors.iter().map(|(_, err)| err.code().to_owned()).collect(),
        None => e.code().map(str::to_owned).into_iter().collect(),
    }
}

impl Transient for crate::redis::stock::StockError {
    fn is_transient(&self) -> bool {
        match self {
            crate::redis::stock::StockError::Redis(e) => e.is_transient(),
            crate::redis::stock::StockError::UnexpectedReply { .. } => false,
        }
    }
}

impl Transient for crate::postgres::order_data::OrderDataError {
    fn is_transient(&self) -> bool {
        match self {
            crate::postgres::order_data::OrderDataError::Database(e) => e.is_transient(),
            // A missing or unreadable archive file is a deployment fault, not an outage.
            crate::postgres::order_data::OrderDataError::File { .. } => false,
        }
    }
}

/// Transient when a dependency's error anywhere in the chain is.
impl Transient for anyhow::Error {
    fn is_transient(&self) -> bool {
        self.chain().any(|cause| {
            cause
                .downcast_ref::<sqlx::Error>()
                .is_some_and(Transient::is_transient)
                || cause
                    .downcast_ref::<redis::RedisError>()
                    .is_some_and(Transient::is_transient)
                || cause
                    .downcast_ref::<crate::redis::stock::StockError>()
                    .is_some_and(Transient::is_transient)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_insert_the_database_cannot_explain_is_a_bug_not_an_outage() {
        // The writer retries transient failures without end; this one must stop it instead.
        use crate::postgres::persist::PersistError;
        let unexplained = anyhow::Error::from(PersistError::Inconsistent("order 7 skipped".into()))
            .context("insert order batch");
        assert!(!unexplained.is_transient());
        let outage = anyhow::Error::from(PersistError::Database(sqlx::Error::PoolTimedOut))
            .context("insert order batch");
        assert!(outage.is_transient());
    }

    #[test]
    fn an_outage_is_transient_and_a_bug_is_not() {
        let refused = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(refused.is_transient());
        assert!(sqlx::Error::PoolTimedOut.is_transient());
        assert!(!sqlx::Error::RowNotFound.is_transient());
        assert!(!sqlx::Error::ColumnNotFound("total".into()).is_transient());

        let redis_down = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(redis_down.is_transient());
        for (code, transient) in [("BUSY", true), ("OOM", true), ("LOADING", true), ("ERR", false)] {
            let reply = format!("-{code} the server says so\r\n");
            let error = redis::parse_redis_value(reply.as_bytes())
                .expect("an error reply parses")
                .extract_error()
                .expect_err("is an error");
            assert_eq!(error.is_transient(), transient, "{code}: {error}");
        }
        let odd_reply = crate::redis::stock::StockError::UnexpectedReply {
            script: "reserve.lua",
            reply: "7".into(),
        };
        assert!(!odd_reply.is_transient());

        let wrapped = anyhow::Error::new(sqlx::Error::PoolTimedOut).context("count orders");
        assert!(wrapped.is_transient());
        let bug = anyhow::Error::new(sqlx::Error::RowNotFound).context("count orders");
        assert!(!bug.is_transient());
    }
}
