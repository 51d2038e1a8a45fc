//! Throw-away PostgreSQL databases for tests.
//!
//! `tests/run.sh` starts a throw-away cluster and exports its URL in
//! `WBH_TEST_DATABASE_URL`; each test gets a fresh, uniquely named database in
//! it, so tests never see each other's rows. The databases are not dropped:
//! the cluster they live in is deleted when the run ends.

use sqlx::{Connection as _, Executor as _};

use super::skip_or_fail;

/// Environment variable holding the URL of a PostgreSQL server tests may create databases on.
pub const DATABASE_URL_ENV: &str = "WBH_TEST_DATABASE_URL";

/// Creates a new, empty database on the server named by `WBH_TEST_DATABASE_URL`
/// and returns its URL.
///
/// Returns `None` after [`skip_or_fail`] when the variable is unset.
///
/// # Panics
/// When the variable is set but the server cannot be reached or refuses to
/// create the database: a configured service that does not work is a failure.
pub async fn fresh_database() -> Option<String> {
    let Some(server_url) = std::env::var(DATABASE_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
    else {
        skip_or_fail(&format!(
            "{DATABASE_URL_ENV} is not set (run the tests with `bash tests/run.sh`)"
        ));
        return None;
    };
    let name = format!("wbh_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&server_url)
        .await
        .unwrap_or_else(|e| panic!("connect to {DATABASE_URL_ENV}={server_url}: {e}"));
    conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("create database {name} on {server_url}: {e}"));
    // Closing politely only saves the server a log line; the database exists either way.
    let _ = conn.close().await;
    Some(with_database(&server_url, &name))
}

/// Returns `url` naming database `name` instead of the one it names, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{name}?{query}"),
        None => format!("{server}/{name}"),
    }
}

#[test]
fn with_database_replaces_only_the_database_name() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:55432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:55432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@db:5432", "t1"),
        "postgres://u:p@db:5432/t1"
    );
    assert_eq!(
        with_database("postgres://db/postgres?sslmode=disable", "t1"),
        "postgres://db/t1?sslmode=disable"
    );
}
