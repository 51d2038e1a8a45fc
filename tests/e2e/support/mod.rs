//! Test peers and the skip-or-fail policy shared by every end-to-end test.
//!
//! `samba` provisions a real Samba AD DC, `postgres` creates a throw-away
//! PostgreSQL database, `tls` makes test CAs and HTTPS endpoints on loopback, `oidc` is a fake OIDC provider.

pub mod oidc;
pub mod postgres;
pub mod samba;
pub mod tls;

/// Environment variable that turns a skip (missing service) into a failure.
///
/// `bash tests/run.sh --require-services` and CI set it to `1`.
pub const REQUIRE_SERVICES_ENV: &str = "WBH_TEST_REQUIRE_SERVICES";

/// Whether a test must fail, rather than skip, when a service it needs is missing.
pub fn require_services() -> bool {
    std::env::var(REQUIRE_SERVICES_ENV).is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Reports that the calling test cannot run because of `reason`.
///
/// Prints `skipped: <reason>` to stderr and returns, so the caller returns
/// early and passes; panics instead when [`require_services`] is set.
#[track_caller]
pub fn skip_or_fail(reason: &str) {
    assert!(
        !require_services(),
        "{reason} ({REQUIRE_SERVICES_ENV} is set, so a missing service fails the test)"
    );
    eprintln!("skipped: {reason}");
}

pub mod agent;
pub mod graph;
pub mod lab;
pub mod netpeers;
pub mod server;

/// Waits until `done` holds, checking every 200 ms, and panics saying `what` did not happen
/// within `timeout`.
#[track_caller]
pub fn eventually(
    timeout: std::time::Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
) -> impl std::future::Future<Output = ()> {
    let caller = std::panic::Location::caller();
    let what = what.to_owned();
    async move {
        let deadline = std::time::Instant::now() + timeout;
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{caller}: {what} within {timeout:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
