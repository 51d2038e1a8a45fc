//! Probes: they look at the network, the directory and the host (see [`crate::host`]) and
//! record what they saw as [`Facts`]. They never judge; the checks in [`crate::checks`] do.
//!
//! A probe never fails as a whole: whatever it could not look at is recorded with the step
//! that failed, so that the checks can report `error` with the reason.

mod ad;
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
use crate::facts::{Facts, NetworkFacts, ProbeDurations};

/// Runs the network, directory and host probes concurrently and returns what they observed.
///
/// `host_name` is the sync server's name, used by the remediation texts. The network and
/// directory probes share one [`Resolver`] built from `settings.network` (its name servers
/// and time-out). With `network` false no network check will be judged, so the network probe
/// (and the DC port probe) is skipped rather than run for nothing.
pub async fn gather(settings: &Settings, host_name: &str, network: bool) -> Facts {
    let probe_network = network;
    let observed_at = OffsetDateTime::now_utc();
    let resolver = Resolver::new(&settings.network.dns_servers, settings.network.timeout);
    let network = async {
        if !probe_network {
            return (NetworkFacts::default(), std::time::Duration::ZERO);
        }
        let started = Instant::now();
        // Ctrl-C ends the opt-in idle-hold probe early; nothing else waits on it.
        let cancel = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let facts = network::probe(&settings.network, &resolver, cancel).await;
        (facts, started.elapsed())
    };
    let directory = async {
        let started = Instant::now();
        let facts = directory::probe(settings.ldap.as_ref(), &resolver).await;
        let duration = started.elapsed();
        // The PDC emulator is known only once the directory has been read (NET-09).
        let pdc = facts
            .as_ref()
            .ok()
            .and_then(|d| d.pdc.as_ref().ok())
            .map(|p| p.dns_host_name.as_str());
        let dc_ports = if probe_network {
            network::probe_dc_ports(
                &settings.network,
                settings.ldap.as_ref().map(|l| l.host.as_str()),
                pdc,
                &resolver,
            )
            .await
        } else {
            Vec::new()
        };
        (facts, duration, dc_ports)
    };
    let host = async {
        let started = Instant::now();
        let facts = crate::host::probe(&settings.host).await;
        (facts, started.elapsed())
    };
    let (
        (mut network, network_duration),
        (directory, directory_duration, dc_ports),
        (host, host_duration),
    ) = tokio::join!(network, directory, host);
    network.dc_ports = dc_ports;
    Facts {
        host_name: host_name.to_owned(),
        observed_at,
        network,
        directory,
        host,
        durations: ProbeDurations {
            network: network_duration,
            directory: directory_duration,
            host: host_duration,
        },
    }
}
