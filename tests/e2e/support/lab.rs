//! A customer site in miniature: a Samba AD DC whose DNS serves the domain, and HTTPS
//! endpoints standing in for Microsoft's password reset service, Service Bus relays and
//! sign-in, plus a plain HTTP CRL host, with DNS names in the DC's zone and certificates from a
//! test CA the agent is told to trust (and to accept as Microsoft's public CA).

use std::net::Ipv4Addr;

use super::netpeers::PlainHttp;
use super::samba::SambaDc;
use super::tls::{HttpsEndpoint, TestCa};

/// The peers of one test.
pub struct Lab {
    /// The domain controller (also the site's DNS server).
    pub dc: SambaDc,
    /// The CA the agent trusts for Microsoft's endpoints.
    pub ca: TestCa,
    passwordreset: HttpsEndpoint,
    relay: HttpsEndpoint,
    login: HttpsEndpoint,
    crl: PlainHttp,
}

impl Lab {
    /// Starts a DC and healthy endpoints; `None` when Samba is not installed (the test
    /// skips, or fails under `WBH_TEST_REQUIRE_SERVICES=1`).
    pub async fn start() -> anyhow::Result<Option<Lab>> {
        let Some(dc) = SambaDc::start_or_skip().await? else {
            return Ok(None);
        };
        let ca = TestCa::new();
        let zone = dc.realm().to_lowercase();
        let pr_name = format!("passwordreset.{zone}");
        let (cert, key) = ca.issue(&[&pr_name]);
        let passwordreset = HttpsEndpoint::start(&cert, &key, 404, "")?;
        let relay_names = [format!("relay1.{zone}"), format!("relay2.{zone}")];
        let (cert, key) = ca.issue(&[&relay_names[0], &relay_names[1]]);
        let relay = HttpsEndpoint::start(
            &cert,
            &key,
            401,
            "MissingToken: The request contains no authorization header",
        )?;
        let (cert, key) = ca.issue(&[&format!("login.{zone}")]);
        let login = HttpsEndpoint::start(&cert, &key, 200, "")?;
        // A CRL host on plain HTTP, reached through a CNAME as Microsoft's are.
        let crl = PlainHttp::start(200)?;
        for name in [
            "passwordreset",
            "relay1",
            "relay2",
            "untrusted",
            "login",
            "crlhost",
        ] {
            dc.add_dns_a(name, Ipv4Addr::LOCALHOST).await?;
        }
        let server = dc.ip().to_string();
        let target = format!("crlhost.{zone}");
        dc.samba_tool(&["dns", "add", &server, &zone, "crl", "CNAME", &target])
            .await?;
        // A new Samba domain starts with a minimum password age of one day; Microsoft
        // recommends zero for writeback, so a healthy site has zero.
        dc.set_min_password_age_days(0).await?;
        Ok(Some(Lab {
            dc,
            ca,
            passwordreset,
            relay,
            login,
            crl,
        }))
    }

    /// The DNS zone of the domain, where the endpoint names live.
    pub fn zone(&self) -> String {
        self.dc.realm().to_lowercase()
    }

    /// The healthy password reset endpoint, `host:port`.
    pub fn passwordreset_endpoint(&self) -> String {
        format!(
            "passwordreset.{}:{}",
            self.zone(),
            self.passwordreset.port()
        )
    }

    /// The healthy relay endpoints, `host:port`.
    pub fn relay_endpoints(&self) -> Vec<String> {
        vec![
            format!("relay1.{}:{}", self.zone(), self.relay.port()),
            format!("relay2.{}:{}", self.zone(), self.relay.port()),
        ]
    }

    /// The healthy Entra Connect endpoint (sign-in), `host:port`.
    pub fn connect_endpoint(&self) -> String {
        format!("login.{}:{}", self.zone(), self.login.port())
    }

    /// The healthy CRL endpoint, `crl.<zone>:port`, a CNAME of `crlhost.<zone>`.
    pub fn crl_endpoint(&self) -> String {
        format!("crl.{}:{}", self.zone(), self.crl.port())
    }

    /// An agent configuration for this site, with the given endpoint lists; the Connect and
    /// CRL endpoints are the healthy ones, and the test CA counts as Microsoft's public CA.
    pub fn agent_config(&self, passwordreset: &[String], servicebus: &[String]) -> String {
        let quote = |list: &[String]| {
            list.iter()
                .map(|e| format!("{e:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            r#"
[ldap]
host = {host:?}
security = "ldaps"
bind_dn = {bind:?}
bind_password = {password:?}
ca_file = {dc_ca:?}
timeout_seconds = 10

[network]
dns_servers = ["{dns}"]
extra_ca_file = {ca:?}
passwordreset_endpoints = [{pr}]
servicebus_endpoints = [{sb}]
connect_endpoints = [{connect:?}]
crl_endpoints = [{crl:?}]
accepted_issuers = ["CN=wbhealth test CA"]
timeout_seconds = 5
"#,
            host = self.dc.fqdn(),
            bind = self.dc.admin_bind(),
            password = self.dc.admin_password(),
            dc_ca = self.dc.ca_file().display().to_string(),
            dns = self.dc.ip(),
            ca = self.ca.pem_path().display().to_string(),
            pr = quote(passwordreset),
            sb = quote(servicebus),
            connect = self.connect_endpoint(),
            crl = self.crl_endpoint(),
        )
    }

    /// The configuration of a healthy site.
    pub fn healthy_agent_config(&self) -> String {
        self.agent_config(&[self.passwordreset_endpoint()], &self.relay_endpoints())
    }
}
