//! A throw-away Samba AD DC per test: real LDAP/LDAPS, DNS, Kerberos and RPC.
//!
//! Each DC gets its own loopback address `127.0.0.N` (N in 10..=250, claimed
//! with an exclusive lock on `/tmp/wbhealth-samba-N.lock` so parallel test
//! processes never share one), its own domain `wbhN.test` / `WBHN`, a
//! temporary folder holding everything it writes, and an LDAPS certificate
//! issued by a per-DC [`TestCa`] with subjectAltNames for `dc1.wbhN.test` and
//! `127.0.0.N` (Samba's self-made certificate has no SAN, which rustls rejects).
//!
//! Broken setups are made by changing the running DC through
//! [`SambaDc::samba_tool`] and its helpers, never by faking LDAP.
//!
//! Samba runs in interactive mode with a pipe on its standard input: it stops
//! with all its tasks when the pipe closes, so even a test process killed
//! outright leaves no DC behind. Dropping a [`SambaDc`] closes the pipe, waits
//! for every Samba process to go, and kills what is left.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use rustls::pki_types::ServerName;

use super::skip_or_fail;
use super::tls::TestCa;

/// Loopback addresses `127.0.0.N` a DC may claim.
const SLOTS: std::ops::RangeInclusive<u8> = 10..=250;

/// How long a freshly started DC may take to serve LDAPS, DNS and RPC.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long Samba may take to stop after its standard input closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How long one `samba-tool` call may take.
const SAMBA_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Samba stops by itself after this long, in case nothing else stops it.
const MAX_RUNTIME: Duration = Duration::from_secs(3600);

/// Lines of Samba's log quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// A running Samba AD DC, stopped and deleted when dropped.
pub struct SambaDc {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    ip: Ipv4Addr,
    realm: String,
    netbios: String,
    /// `dc1`, or `dc2` for a DC joined to another's domain.
    host_name: String,
    admin_password: String,
    ca: Arc<TestCa>,
    dir: tempfile::TempDir,
    // Declared last so the slot stays claimed until the folder is gone.
    _slot_lock: File,
}

impl SambaDc {
    /// Why a DC cannot be started on this machine, if it cannot: Samba missing or not root.
    pub fn unavailable_reason() -> Option<String> {
        for tool in ["samba-tool", "samba"] {
            if which(tool).is_none() {
                return Some(format!(
                    "`{tool}` is not installed (run the tests with `bash tests/run.sh`, which installs Samba)"
                ));
            }
        }
        if !nix::unistd::geteuid().is_root() {
            return Some(
                "a Samba AD DC needs root (loopback addresses, ports below 1024)".to_owned(),
            );
        }
        None
    }

    /// Starts a DC, or returns `Ok(None)` after [`skip_or_fail`] when this
    /// machine cannot run one (see [`SambaDc::unavailable_reason`]).
    pub async fn start_or_skip() -> anyhow::Result<Option<Self>> {
        if let Some(reason) = Self::unavailable_reason() {
            skip_or_fail(&reason);
            return Ok(None);
        }
        Self::start().await.map(Some)
    }

    /// Provisions a new domain `wbhN.test` on a free `127.0.0.N`, starts Samba
    /// and waits until LDAPS (with the harness certificate), DNS and RPC answer.
    ///
    /// Provisioning takes about 5 s of CPU; start-up about 1 s more.
    pub async fn start() -> anyhow::Result<Self> {
        let began = Instant::now();
        let (slot, slot_lock) = tokio::task::spawn_blocking(claim_slot)
            .await
            .context("slot claim panicked")??;
        let ip = Ipv4Addr::new(127, 0, 0, slot);
        let realm = format!("WBH{slot}.TEST");
        let netbios = format!("WBH{slot}");
        let admin_password = format!(
            "Wbh!{}-A9",
            &uuid::Uuid::new_v4().simple().to_string()[..20]
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("wbhealth-samba{slot}-"))
            .tempdir()
            .context("create the DC folder")?;
        let ca = Arc::new(TestCa::new());
        let fqdn = format!("dc1.{}", realm.to_lowercase());
        let (cert_pem, key_pem) = ca.issue(&[&fqdn, &ip.to_string()]);

        let provision = Provision {
            dir: dir.path().to_owned(),
            ip,
            realm: realm.clone(),
            netbios: netbios.clone(),
            admin_password: admin_password.clone(),
            cert_pem,
            key_pem,
            ca_file: ca.pem_path().to_owned(),
            join: None,
        };
        tokio::task::spawn_blocking(move || provision.run())
            .await
            .context("provisioning panicked")??;
        Self::launch(
            began,
            Self {
                child: None,
                stdin: None,
                ip,
                realm,
                netbios,
                host_name: "dc1".to_owned(),
                admin_password,
                ca,
                dir,
                _slot_lock: slot_lock,
            },
        )
        .await
    }

    /// Joins a second DC, `dc2.wbhN.test` on its own `127.0.0.M`, to this DC's domain with
    /// `samba-tool domain join … DC`, adds its A record to this DC's DNS (which clients use)
    /// and starts it.
    pub async fn join_second_dc(&self) -> anyhow::Result<SambaDc> {
        let began = Instant::now();
        let (slot, slot_lock) = tokio::task::spawn_blocking(claim_slot)
            .await
            .context("slot claim panicked")??;
        let ip = Ipv4Addr::new(127, 0, 0, slot);
        let dir = tempfile::Builder::new()
            .prefix(&format!("wbhealth-samba{slot}-"))
            .tempdir()
            .context("create the DC folder")?;
        let fqdn = format!("dc2.{}", self.realm.to_lowercase());
        let (cert_pem, key_pem) = self.ca.issue(&[&fqdn, &ip.to_string()]);
        let join = Provision {
            dir: dir.path().to_owned(),
            ip,
            realm: self.realm.clone(),
            netbios: self.netbios.clone(),
            admin_password: self.admin_password.clone(),
            cert_pem,
            key_pem,
            ca_file: self.ca.pem_path().to_owned(),
            join: Some(self.ip),
        };
        tokio::task::spawn_blocking(move || join.run())
            .await
            .context("joining panicked")??;
        // After the join, which removes DNS records left under the new DC's name.
        self.add_dns_a("dc2", ip).await?;
        Self::launch(
            began,
            Self {
                child: None,
                stdin: None,
                ip,
                realm: self.realm.clone(),
                netbios: self.netbios.clone(),
                host_name: "dc2".to_owned(),
                admin_password: self.admin_password.clone(),
                ca: Arc::clone(&self.ca),
                dir,
                _slot_lock: slot_lock,
            },
        )
        .await
    }

    /// Starts Samba on a provisioned or joined DC folder and waits until it serves.
    async fn launch(began: Instant, mut dc: SambaDc) -> anyhow::Result<SambaDc> {
        let provisioned = began.elapsed();
        let log = File::create(dc.dir.path().join("samba.log")).context("create samba.log")?;
        let mut child = Command::new(program("samba"))
            .arg("--interactive")
            .arg("--no-process-group")
            .arg(format!("--maximum-runtime={}", MAX_RUNTIME.as_secs()))
            .arg("--configfile")
            .arg(dc.smb_conf())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().context("share samba.log")?)
            .stderr(log)
            // Its own process group: on EOF Samba signals its whole group, and we
            // can kill the group without touching the test process.
            .process_group(0)
            .spawn()
            .context("start samba")?;
        dc.stdin = child.stdin.take();
        dc.child = Some(child);
        dc.wait_until_ready().await?;
        eprintln!(
            "samba dc {} on {} ready in {:.1?} (provisioned in {:.1?})",
            dc.fqdn(),
            dc.ip,
            began.elapsed(),
            provisioned
        );
        Ok(dc)
    }

    /// The process id of the main `samba` process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The loopback address the DC listens on, `127.0.0.N`.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The DC's host name, `dc1.wbhN.test` (`dc2.…` for a joined DC); its own DNS resolves it
    /// to [`SambaDc::ip`].
    pub fn fqdn(&self) -> String {
        format!("{}.{}", self.host_name, self.realm.to_lowercase())
    }

    /// The Kerberos realm, `WBHN.TEST`; lowercased it is the AD DNS domain.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The NetBIOS domain name, `WBHN`.
    pub fn netbios(&self) -> &str {
        &self.netbios
    }

    /// The domain's distinguished name, `DC=wbhN,DC=test`.
    pub fn base_dn(&self) -> String {
        self.realm
            .to_lowercase()
            .split('.')
            .map(|label| format!("DC={label}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The administrator's bind name for LDAP simple binds, `Administrator@WBHN.TEST`.
    pub fn admin_bind(&self) -> String {
        format!("Administrator@{}", self.realm)
    }

    /// The administrator's password, random per DC.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// PEM file of the CA that issued the DC's LDAPS certificate.
    pub fn ca_file(&self) -> &Path {
        self.ca.pem_path()
    }

    /// The DC's DNS server, `127.0.0.N:53`, authoritative for `wbhN.test`.
    pub fn dns_server(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 53))
    }

    /// The DC's LDAPS endpoint, `127.0.0.N:636`.
    pub fn ldaps_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 636))
    }

    /// `ldaps://dc1.wbhN.test`, the URL a client validating the certificate uses.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://{}", self.fqdn())
    }

    /// Looks `name` up as A records through the DC's own DNS server only.
    pub async fn lookup_a(&self, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
        let servers = NameServerConfigGroup::from_ips_clear(&[IpAddr::V4(self.ip)], 53, true);
        let mut builder = TokioResolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), servers),
            TokioConnectionProvider::default(),
        );
        let options = builder.options_mut();
        options.timeout = Duration::from_secs(2);
        options.attempts = 1;
        options.cache_size = 0;
        options.use_hosts_file = ResolveHosts::Never;
        let resolver = builder.build();
        let absolute = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        let answer = resolver
            .ipv4_lookup(absolute)
            .await
            .with_context(|| format!("look up {name} at {}", self.dns_server()))?;
        Ok(answer.iter().map(|a| a.0).collect())
    }

    /// Runs `samba-tool ARGS` against the running DC as Administrator and returns its stdout.
    ///
    /// Appends the DC's `smb.conf`, the admin credentials (NTLM, no Kerberos)
    /// and, unless `ARGS` start with `dns` or `drs` (which name the server as
    /// an argument: pass [`SambaDc::ip`]) or already contain `-H`, `-H
    /// ldap://127.0.0.N` so changes go through the running server.
    /// Fails with stderr when `samba-tool` exits non-zero.
    pub async fn samba_tool(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = tokio::process::Command::new(program("samba-tool"));
        command.args(args);
        let names_server = matches!(args.first(), Some(&"dns" | &"drs"));
        let has_url = args
            .iter()
            .any(|arg| *arg == "-H" || arg.starts_with("--URL"));
        if !names_server && !has_url {
            command.arg("-H").arg(format!("ldap://{}", self.ip));
        }
        command
            .arg("--configfile")
            .arg(self.smb_conf())
            .arg("--use-kerberos=off")
            // `-U`, not `--user`: some subcommands also take `--username`, making `--user` ambiguous.
            .arg("-U")
            .arg(format!("Administrator%{}", self.admin_password))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(SAMBA_TOOL_TIMEOUT, command.output())
            .await
            .with_context(|| {
                format!("samba-tool {args:?} did not finish in {SAMBA_TOOL_TIMEOUT:?}")
            })?
            .context("run samba-tool")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "samba-tool {args:?} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                stdout.trim()
            );
        }
        Ok(stdout)
    }

    /// Sets the domain's minimum password age (`minPwdAge`) to `days`.
    pub async fn set_min_password_age_days(&self, days: u32) -> anyhow::Result<()> {
        self.samba_tool(&[
            "domain",
            "passwordsettings",
            "set",
            &format!("--min-pwd-age={days}"),
        ])
        .await
        .map(drop)
    }

    /// Adds the A record `name_in_zone.wbhN.test → addr` to the DC's DNS.
    pub async fn add_dns_a(&self, name_in_zone: &str, addr: Ipv4Addr) -> anyhow::Result<()> {
        let server = self.ip.to_string();
        let zone = self.realm.to_lowercase();
        let addr = addr.to_string();
        self.samba_tool(&["dns", "add", &server, &zone, name_in_zone, "A", &addr])
            .await
            .map(drop)
    }

    /// Creates an enabled user `name` (sAMAccountName) with `password`.
    pub async fn add_user(&self, name: &str, password: &str) -> anyhow::Result<()> {
        self.samba_tool(&["user", "create", name, password])
            .await
            .map(drop)
    }

    fn smb_conf(&self) -> PathBuf {
        self.dir.path().join("etc/smb.conf")
    }

    /// Waits until LDAPS completes a TLS handshake that validates against the
    /// harness CA, DNS resolves the DC's name, and the RPC endpoint mapper accepts.
    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last_problem: String;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "samba for {} exited during start-up ({status}); its log ends:\n{}",
                    self.fqdn(),
                    self.log_tail()
                );
            }
            match self.probe().await {
                Ok(()) => return Ok(()),
                Err(problem) => last_problem = format!("{problem:#}"),
            }
            if Instant::now() >= deadline {
                bail!(
                    "samba for {} on {} was not ready after {READY_TIMEOUT:?}: {last_problem}; its log ends:\n{}",
                    self.fqdn(),
                    self.ip,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn probe(&self) -> anyhow::Result<()> {
        let step = Duration::from_secs(2);
        let tcp = tokio::time::timeout(step, tokio::net::TcpStream::connect(self.ldaps_addr()))
            .await
            .context("ldaps connect timed out")?
            .context("ldaps connect")?;
        let name = ServerName::try_from(self.fqdn()).context("dc name")?;
        let connector = tokio_rustls::TlsConnector::from(self.ca.client_config());
        tokio::time::timeout(step, connector.connect(name, tcp))
            .await
            .context("ldaps handshake timed out")?
            .context("ldaps handshake")?;
        // A joined DC's A record lives in the first DC's DNS, which clients use.
        if self.host_name == "dc1" {
            let addrs = self.lookup_a(&self.fqdn()).await?;
            if !addrs.contains(&self.ip) {
                bail!("dns answers {addrs:?} for {}", self.fqdn());
            }
        }
        tokio::time::timeout(step, tokio::net::TcpStream::connect((self.ip, 135)))
            .await
            .context("rpc endpoint mapper connect timed out")?
            .context("rpc endpoint mapper connect")?;
        Ok(())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("samba.log"), LOG_TAIL_LINES)
    }

    /// Kills the smbd and winbindd that Samba started (each leads its own
    /// session) if they are still running with this DC's configuration.
    fn stop_file_and_winbind_daemons(&self) {
        let conf = self.smb_conf();
        let conf = conf.to_string_lossy();
        let run = self.dir.path().join("run");
        let daemons: Vec<i32> = ["smbd.pid", "winbindd.pid"]
            .iter()
            .filter_map(|file| std::fs::read_to_string(run.join(file)).ok())
            .filter_map(|pid| pid.trim().parse::<i32>().ok())
            .collect();
        let ours = |pid: i32| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(conf.as_ref()))
        };
        // They stop by themselves once Samba's pipe to them closes; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while daemons.iter().any(|&pid| ours(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for &pid in &daemons {
            if ours(pid) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

impl Drop for SambaDc {
    fn drop(&mut self) {
        // EOF on its standard input makes interactive Samba stop every task.
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + STOP_TIMEOUT;
            let stopped = loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok(None) | Err(_) => break false,
                }
            };
            if !stopped {
                let pid = i32::try_from(child.id()).expect("pids fit in i32");
                eprintln!(
                    "samba for {} did not stop in {STOP_TIMEOUT:?}; killing its process group",
                    self.fqdn()
                );
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = child.wait();
            }
        }
        self.stop_file_and_winbind_daemons();
    }
}

/// Everything `samba-tool domain provision` needs, owned so it can run on a blocking thread.
struct Provision {
    dir: PathBuf,
    ip: Ipv4Addr,
    realm: String,
    netbios: String,
    admin_password: String,
    cert_pem: String,
    key_pem: String,
    ca_file: PathBuf,
    /// Join the domain of the DC at this address as `dc2` instead of provisioning a new one.
    join: Option<Ipv4Addr>,
}

impl Provision {
    fn run(&self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).context("create the tls folder")?;
        std::fs::write(tls.join("cert.pem"), &self.cert_pem).context("write the dc certificate")?;
        // Samba refuses a key file that anyone but its owner can read.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tls.join("key.pem"))
            .and_then(|mut file| std::io::Write::write_all(&mut file, self.key_pem.as_bytes()))
            .context("write the dc key")?;
        // Provisioning would otherwise copy settings (shares, log paths) from /etc/samba/smb.conf.
        let empty_conf = dir.join("empty.conf");
        std::fs::write(&empty_conf, "").context("write empty.conf")?;

        let path = |sub: &str| dir.join(sub).to_string_lossy().into_owned();
        let options = [
            format!("interfaces={}", self.ip),
            "bind interfaces only=yes".to_owned(),
            // Everything that defaults to a machine-wide path, so DCs never share a socket or pid file.
            format!("pid directory={}", path("run")),
            format!("ncalrpc dir={}", path("ncalrpc")),
            format!("winbindd socket directory={}", path("winbindd")),
            format!("ntp signd socket directory={}", path("ntp_signd")),
            format!("log file={}", path("log/%m.log")),
            // No NetBIOS broadcasts, no forwarding of names outside the test domain.
            "disable netbios=yes".to_owned(),
            "dns forwarder=".to_owned(),
            // dnsupdate would call nsupdate; the provisioned records are all a test needs.
            "server services=-nbt -dnsupdate".to_owned(),
            "tls enabled=yes".to_owned(),
            format!("tls keyfile={}", path("tls/key.pem")),
            format!("tls certfile={}", path("tls/cert.pem")),
            format!("tls cafile={}", self.ca_file.to_string_lossy()),
        ];
        let mut command = Command::new(program("samba-tool"));
        match self.join {
            None => command
                .args(["domain", "provision"])
                .arg("--configfile")
                .arg(&empty_conf)
                .arg("--server-role=dc")
                .arg("--dns-backend=SAMBA_INTERNAL")
                .arg(format!("--realm={}", self.realm))
                .arg(format!("--domain={}", self.netbios))
                .arg(format!("--adminpass={}", self.admin_password))
                .arg("--host-name=dc1")
                .arg(format!("--host-ip={}", self.ip)),
            Some(first) => command
                .args(["domain", "join", &self.realm.to_lowercase(), "DC"])
                .arg("--configfile")
                .arg(&empty_conf)
                .arg(format!("--server={first}"))
                .arg("--dns-backend=SAMBA_INTERNAL")
                .arg("--use-kerberos=off")
                .arg("-U")
                .arg(format!("Administrator%{}", self.admin_password))
                .arg("--option=netbios name=DC2"),
        };
        command
            .arg(format!("--targetdir={}", dir.display()))
            .args(options.iter().map(|option| format!("--option={option}")))
            .stdin(Stdio::null());
        let what = if self.join.is_some() {
            "join"
        } else {
            "provision"
        };
        let output = command
            .output()
            .with_context(|| format!("run samba-tool domain {what}"))?;
        let log = dir.join("provision.log");
        let mut text = output.stdout.clone();
        text.extend_from_slice(&output.stderr);
        std::fs::write(&log, &text).context("write provision.log")?;
        if !output.status.success() {
            bail!(
                "samba-tool domain {what} for {} failed ({}); its output ends:\n{}",
                self.realm,
                output.status,
                tail(&log, LOG_TAIL_LINES)
            );
        }
        for sub in ["run", "log"] {
            std::fs::create_dir_all(dir.join(sub)).with_context(|| format!("create {sub}"))?;
        }
        Ok(())
    }
}

/// Claims a free `127.0.0.N`: locks its slot file, makes sure `lo` carries the
/// address, and checks that nothing else listens on its LDAPS port.
fn claim_slot() -> anyhow::Result<(u8, File)> {
    let slots: Vec<u8> = SLOTS.collect();
    // Start somewhere different per process so parallel tests rarely contend for the same lock.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let start = (std::process::id() as usize ^ nanos as usize) % slots.len();
    for &slot in slots[start..].iter().chain(&slots[..start]) {
        let path = format!("/tmp/wbhealth-samba-{slot}.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {path}"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("lock {path}"));
            }
        }
        remove_stale_folders(slot);
        let ip = Ipv4Addr::new(127, 0, 0, slot);
        ensure_loopback_address(ip)?;
        // Something outside our locks (a stray DC, another service) may hold the address.
        if std::net::TcpListener::bind((ip, 636)).is_err() {
            continue;
        }
        return Ok((slot, lock));
    }
    bail!("every loopback slot 127.0.0.{SLOTS:?} is in use")
}

/// Removes DC folders left by a test process that was killed while it held `slot`:
/// whoever holds the slot's lock owns every folder named after it.
fn remove_stale_folders(slot: u8) {
    let prefix = format!("wbhealth-samba{slot}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // Best effort: a folder we cannot remove only wastes space.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Adds `ip/32` to `lo` unless it is there: Samba binds only to addresses an interface carries.
fn ensure_loopback_address(ip: Ipv4Addr) -> anyhow::Result<()> {
    let carried = || -> anyhow::Result<bool> {
        let output = Command::new(program("ip"))
            .args(["-4", "-o", "addr", "show", "dev", "lo"])
            .output()
            .context("run `ip addr show dev lo` (is iproute2 installed?)")?;
        let listing = String::from_utf8_lossy(&output.stdout);
        Ok(listing.contains(&format!(" {ip}/")))
    };
    if carried()? {
        return Ok(());
    }
    let output = Command::new(program("ip"))
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .context("run `ip addr add`")?;
    if !output.status.success() && !carried()? {
        bail!(
            "`ip addr add {ip}/32 dev lo` failed (needs root): {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The last `lines` lines of the file at `path`, or why it cannot be read.
fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        // The end of the file is all that is shown; 64 KiB holds far more than enough lines.
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({} unreadable: {e})", path.display()),
    }
}

/// `program`'s path when it is on `PATH` or in `/usr/sbin`, else its bare name.
fn program(program: &str) -> PathBuf {
    which(program).unwrap_or_else(|| PathBuf::from(program))
}

/// Where `program` is on `PATH` (or in the sbin folders root's `PATH` may lack), if anywhere.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Directory changes for the directory checks' broken states, made through the running DC.
impl SambaDc {
    /// Runs a Python snippet with Samba's bindings against the running DC over LDAP, as
    /// Administrator, and returns its stdout. The snippet sees `db` (a `SamDB`), `sdu` (a
    /// `samba.sd_utils.SDUtils`), `domain_sid` (a `dom_sid`), `base` (the domain DN), `ldb` and
    /// `security`.
    pub async fn samba_python(&self, code: &str) -> anyhow::Result<String> {
        let prelude = format!(
            r#"
import ldb
from samba.samdb import SamDB
from samba.param import LoadParm
from samba.credentials import Credentials, DONT_USE_KERBEROS
from samba.sd_utils import SDUtils
from samba.dcerpc import security
lp = LoadParm()
lp.load({conf:?})
creds = Credentials()
creds.guess(lp)
creds.set_username("Administrator")
creds.set_password({password:?})
creds.set_kerberos_state(DONT_USE_KERBEROS)
db = SamDB(url="ldap://{ip}", credentials=creds, lp=lp)
sdu = SDUtils(db)
domain_sid = security.dom_sid(db.get_domain_sid())
base = str(db.domain_dn())
"#,
            conf = self.smb_conf().display().to_string(),
            password = self.admin_password,
            ip = self.ip,
        );
        // Debian's Samba bindings live in the system Python, not in one a version manager shims.
        let python = if Path::new("/usr/bin/python3").exists() {
            PathBuf::from("/usr/bin/python3")
        } else {
            program("python3")
        };
        let output = tokio::time::timeout(
            SAMBA_TOOL_TIMEOUT,
            tokio::process::Command::new(python)
                .arg("-c")
                .arg(format!("{prelude}\n{code}"))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .context("samba python did not finish in time")?
        .context("run python3")?;
        if !output.status.success() {
            bail!(
                "samba python failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The SID of the account `sam_account_name`.
    pub async fn account_sid(&self, sam_account_name: &str) -> anyhow::Result<String> {
        let out = self
            .samba_python(&format!(
                "r = db.search(base=base, expression='(sAMAccountName={sam_account_name})', attrs=['objectSid'])\n\
                 from samba.ndr import ndr_unpack\n\
                 print(ndr_unpack(security.dom_sid, r[0]['objectSid'][0]))"
            ))
            .await?;
        Ok(out.trim().to_owned())
    }

    /// Adds ACEs written in SDDL (such as `(OA;CI;CR;<guid>;;<sid>)`) to the DACL of `dn`.
    pub async fn dsacl_add(&self, dn: &str, aces: &str) -> anyhow::Result<()> {
        self.samba_tool(&[
            "dsacl",
            "set",
            &format!("--objectdn={dn}"),
            &format!("--sddl={aces}"),
        ])
        .await
        .map(drop)
    }

    /// Removes from the DACL of `dn` every ACE whose SDDL contains `needle` (case-insensitive).
    pub async fn dsacl_remove_containing(&self, dn: &str, needle: &str) -> anyhow::Result<()> {
        self.samba_python(&format!(
            "import re\n\
             sddl = sdu.get_sd_as_sddl({dn:?})\n\
             kept = re.sub(r'\\([^()]*' + re.escape({needle:?}) + r'[^()]*\\)', '', sddl, flags=re.I)\n\
             assert kept != sddl, 'no ACE matched'\n\
             sdu.modify_sd_on_dn({dn:?}, kept)"
        ))
        .await
        .map(drop)
    }

    /// Blocks inheritance on `dn` (sets SE_DACL_PROTECTED, keeping a copy of the inherited
    /// ACEs as explicit ones, as "Disable inheritance → Convert" does) minus those whose SDDL
    /// contains `drop_containing`.
    pub async fn block_inheritance(&self, dn: &str, drop_containing: &str) -> anyhow::Result<()> {
        self.samba_python(&format!(
            "sddl = sdu.get_sd_as_sddl({dn:?})\n\
             i = sddl.index('D:')\n\
             head, rest = sddl[:i], sddl[i + 2:]\n\
             dacl, sacl = (rest.split('S:', 1) + [''])[:2]\n\
             aces = ['(' + ';'.join([p.replace('ID', '') if k == 1 else p for k, p in enumerate(a.split(';'))]) + ')' \
                     for a in dacl[dacl.index('('):].strip('()').split(')(') if {drop:?}.lower() not in a.lower()]\n\
             sdu.modify_sd_on_dn({dn:?}, head + 'D:P' + ''.join(aces) + ('S:' + sacl if sacl else ''))",
            drop = drop_containing,
        ))
        .await
        .map(drop)
    }

    /// Sets `attribute` of `dn` to `value`.
    pub async fn set_attribute(
        &self,
        dn: &str,
        attribute: &str,
        value: &str,
    ) -> anyhow::Result<()> {
        self.samba_python(&format!(
            "m = ldb.Message()\n\
             m.dn = ldb.Dn(db, {dn:?})\n\
             m[{attribute:?}] = ldb.MessageElement({value:?}, ldb.FLAG_MOD_REPLACE, {attribute:?})\n\
             db.modify(m)"
        ))
        .await
        .map(drop)
    }

    /// Creates the OU `OU=<name>,<domain DN>` (`name` unescaped; commas and the like are
    /// escaped here) and returns its DN as the DC writes it.
    pub async fn create_ou(&self, name: &str) -> anyhow::Result<String> {
        let out = self
            .samba_python(&format!(
                "dn = ldb.Dn(db, base)\n\
                 dn.add_child(ldb.Dn(db, 'OU=x'))\n\
                 dn.set_component(0, 'OU', {name:?})\n\
                 db.add({{'dn': dn, 'objectClass': 'organizationalUnit'}})\n\
                 print(str(dn))"
            ))
            .await?;
        Ok(out.trim().to_owned())
    }

    /// Creates an enabled user `name` in the OU `ou_dn` and returns its DN.
    pub async fn add_user_in(
        &self,
        name: &str,
        password: &str,
        ou_dn: &str,
    ) -> anyhow::Result<String> {
        let base = self.base_dn();
        let relative = ou_dn
            .strip_suffix(&format!(",{base}"))
            .with_context(|| format!("{ou_dn} is not under {base}"))?;
        self.samba_tool(&[
            "user",
            "create",
            name,
            password,
            &format!("--userou={relative}"),
        ])
        .await?;
        Ok(format!("CN={name},{ou_dn}"))
    }

    /// Creates a fine-grained password policy `name` with a minimum password age of
    /// `min_age_days` and applies it to the user or group `applies_to` (a sAMAccountName).
    pub async fn add_pso(
        &self,
        name: &str,
        min_age_days: u32,
        applies_to: &str,
    ) -> anyhow::Result<()> {
        self.samba_tool(&[
            "domain",
            "passwordsettings",
            "pso",
            "create",
            name,
            "10",
            &format!("--min-pwd-age={min_age_days}"),
        ])
        .await?;
        self.samba_tool(&[
            "domain",
            "passwordsettings",
            "pso",
            "apply",
            name,
            applies_to,
        ])
        .await
        .map(drop)
    }
}
