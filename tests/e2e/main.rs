//! End-to-end tests for wbhealth, run as one test binary.
//!
//! They talk to real peers: a Samba AD DC provisioned per test, a PostgreSQL
//! database created per test, and TLS endpoints signed by a test CA (see
//! `support`). A test whose peer cannot be found prints `skipped: <reason>`
//! and passes, unless `WBH_TEST_REQUIRE_SERVICES=1` turns that into a failure.
//! `bash tests/run.sh` installs and starts what the tests need.

mod access_control;
mod agent_identity;
mod agent_reports;
mod bad_input;
mod bench;
mod cloud_checks;
mod diagnose;
mod directory_checks;
mod fleet;
mod host_snapshot;
mod jwt;
mod network_checks;
mod peers;
mod support;
mod swagger_ui;
mod transport_tls;
