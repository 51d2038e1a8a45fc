//! Transactions that a cancelled request cannot leave open, and pools that never hand out a
//! connection still inside one.
//!
//! A future that is dropped (the client went away, a time-out fired, the server is shutting
//! down) stops at whatever `.await` it was at. sqlx 0.8 rolls a dropped `Transaction` back, but
//! its `begin` has a window where it is not cancel-safe: the `BEGIN` has run on the connection,
//! yet no `Transaction` exists to roll it back.
//! - SQLite, with a custom statement (`BEGIN IMMEDIATE`): the worker thread has run the `BEGIN`
//!   and counted it when `begin` awaits the connection's lock to confirm it. Dropped there, the
//!   connection goes back to the pool inside the transaction with sqlx's depth at one, and every
//!   later `begin_with` on it fails ("attempted to call begin_with at non-zero transaction
//!   depth"): with one write connection, every write of the server fails until a restart.
//! - PostgreSQL: `BEGIN` is on the wire when `begin` awaits the server's answer, and sqlx
//!   counts the transaction only after that answer. Dropped there, the session stays
//!   `idle in transaction`: later statements on it run inside that transaction, hold its locks
//!   and are not committed until some later `COMMIT` on the same connection.
//!
//! Two defences, one for each half of the problem:
//! - [`begin`] runs `begin` on a task of its own, which runs to completion whatever happens to
//!   the caller; if the caller is gone by then, the finished `Transaction` is dropped and rolled
//!   back like any other.
//! - [`sqlite_outside_transaction`] and [`postgres_outside_transaction`] run as the pools'
//!   `after_release` test: a connection that comes back inside a transaction, however it got
//!   there, is closed (which rolls the transaction back) instead of being reused.

use futures::future::BoxFuture;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Database, Pool, Transaction};

use crate::storage::StoreError;

/// Begins a transaction on a connection of `pool` (with `statement` instead of the plain
/// `BEGIN` when given) so that cancelling the caller cannot leave it open.
pub(super) async fn begin<DB: Database>(
    pool: &Pool<DB>,
    statement: Option<&'static str>,
) -> Result<Transaction<'static, DB>, StoreError> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move {
        match statement {
            Some(statement) => pool.begin_with(statement).await,
            None => pool.begin().await,
        }
    })
    .await
    .map_err(|e| {
        // Only a panic inside sqlx, or a runtime shutting down, ends the task early.
        StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
            "beginning a transaction did not finish: {e}"
        ))))
    })?;
    Ok(begun?)
}

/// Whether a SQLite connection is outside any transaction, so that the pool may reuse it.
///
/// SQLite says so only through `sqlite3_get_autocommit`, which sqlx does not expose; a `BEGIN`
/// tells the same without `unsafe`: it fails inside a transaction, and a deferred `BEGIN`
/// takes no lock, so the probe costs two statements on the connection's own thread.
pub(super) fn sqlite_outside_transaction(
    conn: &mut SqliteConnection,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        use sqlx::Executor;
        Ok(conn.execute("BEGIN; ROLLBACK").await.is_ok())
    })
}

/// Whether a PostgreSQL session is outside any transaction, so that the pool may reuse it.
///
/// A statement sent with the simple query protocol outside a transaction starts its own, and
/// PostgreSQL then gives `now()` (the transaction's start) exactly the statement's start
/// time; inside an older transaction `now()` is that transaction's earlier start.
pub(super) fn postgres_outside_transaction(
    conn: &mut PgConnection,
) -> BoxFuture<'_, Result<bool, sqlx::Error>> {
    Box::pin(async move {
        use sqlx::{Executor, Row};
        // A query without arguments goes out in the simple protocol.
        let row = conn
            .fetch_one("SELECT now() = statement_timestamp()")
            .await?;
        row.try_get::<bool, _>(0)
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::Connection;
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    use super::*;

    /// A connection returned to the pool inside a transaction that sqlx does not know about
    /// (the state a cancelled `begin` leaves) is closed; the next borrower gets a clean one.
    #[tokio::test]
    async fn a_sqlite_connection_left_in_a_transaction_is_not_reused() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let options = SqliteConnectOptions::from_str(&format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        ))
        .expect("a URL")
        .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .after_release(|conn, _| sqlite_outside_transaction(conn))
            .connect_with(options)
            .await
            .expect("open");
        let mut conn = pool.acquire().await.expect("acquire");
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut *conn)
            .await
            .expect("begin");
        drop(conn);

        let mut tx = begin(&pool, Some("BEGIN IMMEDIATE"))
            .await
            .expect("the next transaction begins on a clean connection");
        sqlx::raw_sql("CREATE TABLE t (x)")
            .execute(&mut *tx)
            .await
            .expect("write");
        tx.commit().await.expect("commit");
    }

    /// The same on PostgreSQL, where the stale session would otherwise hold its locks and keep
    /// the next borrower's statements uncommitted.
    #[tokio::test]
    async fn a_postgres_session_left_in_a_transaction_is_not_reused() {
        let Ok(url) = std::env::var("WBH_TEST_DATABASE_URL") else {
            assert!(
                std::env::var("WBH_TEST_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "WBH_TEST_REQUIRE_SERVICES=1 but WBH_TEST_DATABASE_URL is not set"
            );
            println!("skipped: WBH_TEST_DATABASE_URL not set");
            return;
        };
        let options = PgConnectOptions::from_str(&url).expect("a URL");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .after_release(|conn, _| postgres_outside_transaction(conn))
            .connect_with(options)
            .await
            .expect("connect");
        let mut conn = pool.acquire().await.expect("acquire");
        assert!(
            postgres_outside_transaction(&mut conn)
                .await
                .expect("probe")
        );
        sqlx::raw_sql("BEGIN")
            .execute(&mut *conn)
            .await
            .expect("begin");
        assert!(
            !postgres_outside_transaction(&mut conn)
                .await
                .expect("probe")
        );
        drop(conn);

        let mut conn = pool.acquire().await.expect("acquire again");
        assert!(
            postgres_outside_transaction(&mut conn)
                .await
                .expect("probe"),
            "the pool handed out the session still inside its transaction"
        );
        conn.ping().await.expect("ping");
    }
}
