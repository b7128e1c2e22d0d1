//! glimprouter-server: the OpenAI-compatible HTTP API over the engine.
//!
//! * `POST /v1/completions`, `POST /v1/chat/completions` (JSON or SSE),
//!   `GET /v1/models`: behind API keys (tenants) and their rate limits.
//! * `GET /health` (200 while the engine runs, 503 once it has stopped),
//!   `GET /metrics`: always open.
//!
//! [`router`] builds the app (for tests and embedding); [`serve`] binds,
//! serves and shuts down gracefully.

pub mod auth;
pub mod backend;
pub mod config;
pub mod error;
pub mod generation;
pub mod handlers;
pub mod json;
pub mod limits;
pub mod logits_fields;
pub mod metrics;
pub mod middleware;
pub mod params;
pub mod protocol;
pub mod sse;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod unsupported_fields;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use glimprouter_engine::EngineHandle;
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use backend::{Backend, EngineBackend};
pub use config::{ServerConfig, TenantConfig};
pub use error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("cannot set up the server's metrics: {0}")]
    Metrics(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the engine thread stopped (see the log above); the server stopped with it")]
    EngineStopped,
}

/// The app over the real engine.
pub fn router(engine: EngineHandle, config: &ServerConfig) -> Result<Router, ServerError> {
    router_with_backend(Arc::new(EngineBackend::new(engine)), config)
}

/// The app over any [`Backend`] (the HTTP tests use the scripted backend of the
/// `testing` feature).
pub fn router_with_backend(
    backend: Arc<dyn Backend>,
    config: &ServerConfig,
) -> Result<Router, ServerError> {
    let state = Arc::new(state::AppState::new(backend, config)?);
    if state.auth.is_open() {
        tracing::warn!(
            "no API keys configured: the server is open to every client, as tenant \"default\""
        );
    }
    let api = Router::new()
        .route("/v1/completions", post(handlers::completions::completions))
        .route(
            "/v1/chat/completions",
            post(handlers::chat::chat_completions),
        )
        .route("/v1/models", get(handlers::models::list_models))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::tenant,
        ));
    let open = Router::new()
        .route("/health", get(handlers::models::health))
        .route("/metrics", get(metrics::metrics_handler));
    Ok(api
        .merge(open)
        .fallback(handlers::models::not_found)
        .method_not_allowed_fallback(handlers::models::method_not_allowed)
        // Inside the request-id and metrics layers, so a panicking request
        // is still counted and tagged; its client gets a 500, not a reset.
        .layer(CatchPanicLayer::custom(error::panic_response))
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(axum::middleware::from_fn(middleware::request_id))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::count_requests,
        ))
        .with_state(state))
}

/// Binds `host:port` and serves the engine until `shutdown` resolves (see [`serve_app`])
/// or the engine thread ends; `EngineStopped` when it has ended by the time the server
/// stops, so shut the engine down only after this returns.
pub async fn serve(
    engine: EngineHandle,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(engine.clone(), &config)?;
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })?;
    // A server whose engine died only fails requests: stop taking them and return an
    // error, so the process exits non-zero and its supervisor restarts it.
    let watched = engine.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown => {}
            () = engine_stopped(&watched) => {
                tracing::error!("the engine thread has stopped: refusing new connections and exiting");
            }
        }
    };
    serve_app(
        listener,
        app,
        Duration::from_secs(config.shutdown_grace_secs),
        stop,
    )
    .await?;
    // The caller shuts the engine down only after this returns: stopped now, it died.
    if !engine.is_running() {
        return Err(ServerError::EngineStopped);
    }
    Ok(())
}

/// Resolves once the engine thread has ended (a panic, or a shutdown from elsewhere).
async fn engine_stopped(engine: &EngineHandle) {
    while engine.is_running() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Serves `app` on `listener`. When `shutdown` resolves it stops accepting
/// connections and gives in-flight requests up to `grace` to finish; then it
/// returns (requests still running are dropped, which aborts them).
pub async fn serve_app(
    listener: TcpListener,
    app: Router,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Streamed tokens are small writes: without TCP_NODELAY, Nagle's
    // algorithm holds each one until the client ACKs the previous (and
    // delayed ACKs make that milliseconds), so tokens reach clients in
    // bursts.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(%err, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::pin!(server);
    tokio::pin!(shutdown);
    tracing::info!("glimprouter listening on http://{addr}");
    tokio::select! {
        result = &mut server => return result.map_err(ServerError::Io),
        () = &mut shutdown => {}
    }
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: no new connections, waiting for in-flight requests"
    );
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result.map_err(ServerError::Io),
        Err(_) => {
            tracing::warn!("shutdown grace period over; dropping the requests still running");
            Ok(())
        }
    }
}
