//! `glimp serve`: the OpenAI-compatible server over the engine.

use anyhow::Context;
use glimprouter_engine::Engine;

use crate::config_file::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address to bind (overrides server.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind (overrides server.port).
    #[arg(long)]
    pub port: Option<u16>,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config.load()?;
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let weights = config.server.tenant_weights().into_iter().collect();
    let engine = Engine::start(&config.engine, weights).context("starting the engine")?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let shutdown_engine = engine.clone();
        glimprouter_server::serve(engine, config.server, shutdown_signal()).await?;
        shutdown_engine.shutdown();
        anyhow::Ok(())
    })?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}
