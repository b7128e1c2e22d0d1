//! Serves the HTTP API over the scripted engine (no models needed), for
//! client-side checks such as tests/python and `promtool check metrics`.
//!
//! `cargo run -p glimprouter-server --example scripted_server -- [PORT]`
//! Stops on Ctrl-C or after 10 minutes.

use std::sync::Arc;
use std::time::Duration;

use glimprouter_server::testing::ScriptedBackend;
use glimprouter_server::{router_with_backend, serve_app, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(8000);
    let config = ServerConfig {
        port,
        ..ServerConfig::default()
    };
    let backend = Arc::new(ScriptedBackend::new(
        "Let me think.\n\nThe answer is 42.",
        Duration::from_millis(2),
    ));
    let app = router_with_backend(backend, &config)?;
    let listener = tokio::net::TcpListener::bind((config.host.as_str(), config.port)).await?;
    println!(
        "scripted glimprouter listening on http://{}",
        listener.local_addr()?
    );
    let shutdown = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
        }
    };
    serve_app(listener, app, Duration::from_secs(1), shutdown).await?;
    Ok(())
}
