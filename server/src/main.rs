//! `wbhealth-server`: parse the configuration, start logging, build the server, run it until
//! Ctrl-C or SIGTERM.

use std::process::ExitCode;

use wbhealth_server::config::{Config, DevCertsArgs};
use wbhealth_server::{Server, telemetry, tls};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "dev-certs") {
        return dev_certs();
    }
    let config = match Config::load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("wbhealth-server: {e}");
            return ExitCode::from(64);
        }
    };
    telemetry::init(config.log_format);
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "server stopped");
            eprintln!("wbhealth-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::build(config).await?;
    let http = server.http_addr();
    let grpc = server.grpc_addr();
    let scheme = if server.uses_tls() { "https" } else { "http" };
    tracing::info!(%http, %grpc, tls = server.uses_tls(), "listening");
    println!(
        "wbhealth server listening: REST and Swagger UI on {scheme}://{http}/docs, agents (gRPC) on {scheme}://{grpc}"
    );
    if let Some(key) = server.initial_admin_key() {
        println!();
        println!(
            "First start: created an administrator API key. It is shown only now; keep it safe:"
        );
        println!();
        println!("    {key}");
        println!();
        println!("Try it:");
        println!(
            "    curl -H 'Authorization: Bearer {key}' {scheme}://{http}/api/v1/fleet/summary"
        );
        println!();
    }
    server.run(shutdown_signal()).await
}

/// `wbhealth-server dev-certs --out DIR --host NAME…`: writes a development CA and a server
/// certificate, and says how to use them.
fn dev_certs() -> ExitCode {
    let args = match DevCertsArgs::load(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("wbhealth-server: {e}");
            return ExitCode::from(64);
        }
    };
    let files = match tls::write_dev_certs(&args.out, &args.hosts) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("wbhealth-server: dev-certs: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let host = &args.hosts[0];
    println!(
        "Wrote a development CA and a certificate for {}:",
        args.hosts.join(", ")
    );
    println!("    {}  (trust this)", files.ca_cert.display());
    println!("    {}", files.server_cert.display());
    println!("    {}  (private)", files.server_key.display());
    println!();
    println!("Start the server with TLS on both listeners:");
    println!(
        "    wbhealth-server --tls-cert {} --tls-key {}",
        files.server_cert.display(),
        files.server_key.display()
    );
    println!("(add --http-addr 0.0.0.0:8080 --grpc-addr 0.0.0.0:50051 to listen beyond loopback)");
    println!();
    println!("In the agent's agent.toml (then enroll with --server https://{host}:50051):");
    println!("    [server]");
    println!("    ca_file = {:?}", files.ca_cert.display().to_string());
    println!();
    println!(
        "For curl: curl --cacert {} https://{host}:8080/healthz",
        files.ca_cert.display()
    );
    println!("These certificates are for development only: the CA's key was not kept.");
    ExitCode::SUCCESS
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
    tracing::info!("shutting down");
}
