//! Swagger UI works from the server's own vendored assets, in a real browser, with no
//! internet: headless Chromium renders `/docs` and the API's operations appear.

use std::process::Command;
use std::time::Duration;

use crate::support::server::{TestServer, sqlite_url};
use crate::support::skip_or_fail;

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_every_route_in_a_real_browser() -> anyhow::Result<()> {
    let Some(browser) = chromium() else {
        skip_or_fail("chromium is not installed (bash tests/run.sh installs it)");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&sqlite_url(&dir)).await?;
    let profile = tempfile::tempdir()?;
    let url = format!("{}/docs/", server.base_url());
    let browser = browser.to_owned();
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let output = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::task::spawn_blocking(move || {
            Command::new(browser)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=10000",
                    &profile_arg,
                    "--dump-dom",
                    &url,
                ])
                .output()
        }),
    )
    .await???;
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        dom.contains("swagger-ui"),
        "Swagger UI loaded: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The operations only appear once the vendored JavaScript ran and fetched the document.
    for path in [
        "/api/v1/tenants",
        "/api/v1/fleet/summary",
        "/api/v1/checks",
        "/api/v1/tenants/{tenant_id}/status",
    ] {
        assert!(dom.contains(path), "{path} is listed in the rendered page");
    }
    assert!(
        dom.contains("Authorize"),
        "the bearer key can be entered in the page"
    );
    Ok(())
}
