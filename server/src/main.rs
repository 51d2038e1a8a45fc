//! `wbhealth-server`: parse the configuration, start logging, build the server, run it until
//! Ctrl-C or SIGTERM.

use std::process::ExitCode;

use wbhealth_server::config::Config;
use wbhealth_server::{Server, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
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
    tracing::info!(%http, %grpc, "listening");
    println!(
        "wbhealth server listening: REST and Swagger UI on http://{http}/docs, agents (gRPC) on http://{grpc}"
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
        println!("    curl -H 'Authorization: Bearer {key}' http://{http}/api/v1/fleet/summary");
        println!();
    }
    server.run(shutdown_signal()).await
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
