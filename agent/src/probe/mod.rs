//! Probes: they look at the network and the directory and record what they saw as
//! [`Facts`]. They never judge; the checks in [`crate::checks`] do.
//!
//! A probe never fails as a whole: whatever it could not look at is recorded with the step
//! that failed, so that the checks can report `error` with the reason.

pub mod directory;
pub mod network;
pub mod tls;
mod x509;

#[cfg(test)]
mod test_tls;

use std::time::Instant;

use time::OffsetDateTime;

pub use network::Resolver;

use crate::config::Settings;
use crate::facts::{Facts, ProbeDurations};

/// Runs the network and directory probes concurrently and returns what they observed.
///
/// `host_name` is the sync server's name, used by the remediation texts. Both probes share
/// one [`Resolver`] built from `settings.network` (its name servers and time-out).
pub async fn gather(settings: &Settings, host_name: &str) -> Facts {
    let observed_at = OffsetDateTime::now_utc();
    let resolver = Resolver::new(&settings.network.dns_servers, settings.network.timeout);
    let network = async {
        let started = Instant::now();
        let facts = network::probe(&settings.network, &resolver).await;
        (facts, started.elapsed())
    };
    let directory = async {
        let started = Instant::now();
        let facts = directory::probe(settings.ldap.as_ref(), &resolver).await;
        (facts, started.elapsed())
    };
    let ((network, network_duration), (directory, directory_duration)) =
        tokio::join!(network, directory);
    Facts {
        host_name: host_name.to_owned(),
        observed_at,
        network,
        directory,
        durations: ProbeDurations {
            network: network_duration,
            directory: directory_duration,
        },
    }
}
