//! `wbhealth-agent`: enroll with a server, run continuously, or diagnose this machine once.

use std::path::PathBuf;
use std::process::ExitCode;

use anstream::println;
use clap::{Parser, Subcommand, ValueEnum};
use wbhealth_agent::config::{self, Settings};
use wbhealth_agent::host::{HostFailure, HostSource};
use wbhealth_agent::runner::{Selection, run_once};
use wbhealth_agent::state::Identity;
use wbhealth_agent::{client, render};

/// Password-writeback health checks for this Entra Connect server.
#[derive(Debug, Parser)]
#[command(name = "wbhealth-agent", version, about)]
struct Cli {
    /// The configuration file (default: /etc/wbhealth/agent.toml, or
    /// %ProgramData%\wbhealth\agent.toml on Windows).
    #[arg(long, global = true)]
    config: Option<PathBuf>,

    /// The folder for the credential and the report spool.
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enroll with a wbhealth server using a token from its administrator.
    Enroll {
        /// The server's gRPC address, such as https://wbhealth.example.net:50051.
        #[arg(long)]
        server: String,
        /// The enrollment token.
        #[arg(long, env = "WBH_ENROLL_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// Run continuously: check on the server's interval and report to it.
    Run,
    /// Run every check once, print a report, and exit non-zero when a check fails.
    Diagnose {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also run the slow idle-hold probe (NET-04): hold a TLS session to the Service Bus
        /// relay idle for network.idle_hold_seconds (default 300), then test it. Ctrl-C stops it.
        #[arg(long)]
        idle_hold: bool,
        /// Judge the sync server from a host snapshot written by `wbhealth-agent collect`
        /// instead of this machine; works on any operating system.
        #[arg(long, value_name = "FILE")]
        snapshot: Option<PathBuf>,
        /// Run only this check or category (repeatable), e.g. --check network
        /// --check topology.pdc_emulator. Default: every check.
        #[arg(long = "check", value_name = "ID|CATEGORY")]
        checks: Vec<String>,
        /// Report only the host checks (server.*) and skip the directory and network probes: with
        /// --snapshot on another machine, the network and directory checks would judge that
        /// machine, not the sync server.
        #[arg(long)]
        offline: bool,
    },
    /// Write a host snapshot of this sync server (services, registry, files, ADSync
    /// cmdlets, event log) as JSON: a support bundle for `diagnose --snapshot`. Windows only.
    Collect {
        /// Where to write it (default: standard output).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(64);
        }
        Err(e) => e.exit(),
    };
    let settings = match config::load(cli.config.as_deref(), cli.state_dir.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("wbhealth-agent: {e}");
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wbhealth-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command, settings))
}

async fn dispatch(command: Command, settings: Settings) -> ExitCode {
    let host_name = config::local_host_name();
    match command {
        Command::Diagnose {
            format,
            idle_hold,
            snapshot,
            checks,
            offline,
        } => {
            init_logging("warn");
            let chosen = Selection::only(checks);
            if let Some(unknown) = chosen.unknown() {
                eprintln!(
                    "wbhealth-agent: --check {unknown}: no such check or category; GET /api/v1/checks lists them"
                );
                return ExitCode::from(64);
            }
            let mut settings = settings;
            if idle_hold {
                settings.network.idle_hold = Some(settings.network.idle_hold_duration);
            }
            if let Some(path) = snapshot {
                settings.host = HostSource::Snapshot(path);
            }
            let selection = if offline {
                // No directory reads from a machine that is not the sync server.
                settings.ldap = None;
                Selection::only(
                    wbhealth_catalogue::CATALOGUE
                        .iter()
                        .filter(|c| c.category == wbhealth_catalogue::Category::Server)
                        .map(|c| c.id.to_owned())
                        .collect(),
                )
            } else {
                chosen
            };
            let run = run_once(&settings, &host_name, &selection).await;
            match format {
                Format::Text => println!("{}", render::text(&run, &host_name)),
                Format::Json => println!("{}", render::json(&run, &host_name)),
            }
            ExitCode::from(render::exit_code(&run))
        }
        Command::Enroll { server, token } => {
            init_logging("warn");
            let host = client::host_facts(&host_name, &settings);
            match client::enroll(&server, settings.server_ca_file.as_deref(), &token, host).await {
                Ok(identity) => match identity.save(&settings.state_dir) {
                    Ok(()) => {
                        println!(
                            "enrolled as agent {} of tenant {}; identity saved in {}",
                            identity.agent_id,
                            identity.tenant_id,
                            settings.state_dir.display()
                        );
                        println!("start it with: wbhealth-agent run");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(&e),
                },
                Err(e) => {
                    eprintln!("wbhealth-agent: enrollment failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Collect { output } => {
            init_logging("warn");
            collect(output.as_deref()).await
        }
        Command::Run => {
            init_logging("info");
            let identity = match Identity::load(&settings.state_dir) {
                Ok(identity) => identity,
                Err(e) => return fail(&e),
            };
            // A saved plain-http URL off loopback would fail every retry: say so once and stop.
            if let Err(e) = client::require_tls_off_loopback(&identity.server_url) {
                eprintln!("wbhealth-agent: {e}");
                return ExitCode::from(64);
            }
            tracing::info!(agent_id = %identity.agent_id, server = %identity.server_url, "agent starting");
            match client::run(settings, identity, host_name, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// `collect`: writes this machine's host snapshot; exit 64 where there is none to take.
async fn collect(output: Option<&std::path::Path>) -> ExitCode {
    let snapshot = match wbhealth_agent::host::collect().await {
        Ok(snapshot) => snapshot,
        Err(e @ HostFailure::Unavailable) => {
            eprintln!(
                "wbhealth-agent: collect works only on Windows, on the Entra Connect sync server ({e}); \
                 analyse a snapshot taken there with: wbhealth-agent diagnose --snapshot FILE"
            );
            return ExitCode::from(64);
        }
        Err(e) => return fail(&e),
    };
    let text = match serde_json::to_string_pretty(&snapshot) {
        Ok(text) => text,
        Err(e) => return fail(&format!("cannot encode the snapshot: {e}")),
    };
    match output {
        None => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Some(path) => match std::fs::write(path, text + "\n") {
            Ok(()) => {
                eprintln!(
                    "host snapshot written to {}; analyse it anywhere with: wbhealth-agent diagnose --snapshot {}",
                    path.display(),
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("cannot write {}: {e}", path.display())),
        },
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("wbhealth-agent: {e}");
    ExitCode::FAILURE
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{default},h2=warn,tower=warn,hickory_proto=warn,hickory_resolver=warn"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
