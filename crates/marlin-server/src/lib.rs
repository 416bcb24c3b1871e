//! The OpenAI-compatible HTTP API of Metal Marlin (axum): routes, server-sent events, API
//! keys, Prometheus metrics. Generation itself is the engine's continuous-batching
//! [`Scheduler`](marlin_engine::scheduler::Scheduler); this crate only speaks HTTP.
//!
//! ```no_run
//! use std::sync::Arc;
//! use marlin_engine::Engine;
//! use marlin_server::{Server, ServerConfig};
//!
//! let engine = Arc::new(Engine::load("SmolLM2-135M-Instruct.Q4_1.gguf")?);
//! let listener = std::net::TcpListener::bind("127.0.0.1:8000")?;
//! let server = Server::start(engine, ServerConfig::default(), listener, true)?;
//! println!("listening on http://{}", server.addr());
//! server.wait()?; // until SIGINT or SIGTERM
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Endpoints and options: docs/serving.md.

pub mod client;
mod error;
mod metrics;
mod params;
mod respond;
mod routes;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use marlin_engine::scheduler::{Scheduler, SchedulerConfig};
use marlin_engine::{Engine, EngineError};
use thiserror::Error;
use tokio::sync::oneshot;

pub use error::ApiError;
pub use metrics::Metrics;

use state::AppState;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The model's name in the API (`model` of requests, `GET /v1/models`).
    pub served_model_name: String,
    /// When set, `/v1/*`, `/tokenize` and `/detokenize` need `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    pub scheduler: SchedulerConfig,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            served_model_name: "default".into(),
            api_key: None,
            scheduler: SchedulerConfig::default(),
            max_body_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("the server thread panicked")]
    Panicked,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { what, source }
}

/// The routes over `state`.
fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let guarded = Router::new()
        .route("/v1/chat/completions", post(routes::chat))
        .route("/v1/completions", post(routes::completions))
        .route("/v1/models", get(routes::models))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            routes::auth,
        ));
    let open = Router::new()
        .route("/health", get(routes::health))
        .route("/metrics", get(routes::metrics));
    guarded
        .merge(open)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

pub(crate) fn json_response(status: StatusCode, v: &serde_json::Value) -> Response {
    let headers = [(header::CONTENT_TYPE, "application/json")];
    (status, headers, v.to_string()).into_response()
}

/// A running server: an HTTP thread (tokio) and the engine's batching thread.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Server {
    /// Starts serving `engine` on `listener` (already bound). With `on_signals`, SIGINT and
    /// SIGTERM shut it down gracefully: no new connections, requests in flight finish.
    pub fn start(
        engine: Arc<Engine>,
        config: ServerConfig,
        listener: std::net::TcpListener,
        on_signals: bool,
    ) -> Result<Server, ServerError> {
        let scheduler = Scheduler::start(engine.clone(), config.scheduler.clone())?;
        let state = AppState {
            engine,
            scheduler: Arc::new(scheduler),
            config: Arc::new(config),
            metrics: Arc::default(),
            started: respond::unix_now(),
            since: Instant::now(),
        };
        let addr = listener.local_addr().map_err(io("reading the address"))?;
        listener
            .set_nonblocking(true)
            .map_err(io("setting up the listener"))?;
        // Two workers: HTTP work is light, and the cores belong to the model.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("marlin-http")
            .enable_all()
            .build()
            .map_err(io("starting the async runtime"))?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serve = async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .map_err(io("setting up the listener"))?;
            let shutdown = async move {
                tokio::select! {
                    _ = stopped => {}
                    _ = signal(), if on_signals => {}
                }
            };
            axum::serve(listener, router(state))
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(io("serving"))
        };
        let thread = std::thread::Builder::new()
            .name("marlin-server".into())
            .spawn(move || runtime.block_on(serve))
            .map_err(io("starting the server thread"))?;
        Ok(Server {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down gracefully and waits until done.
    pub fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    /// Waits until the server stops (a signal, with `on_signals`).
    pub fn wait(mut self) -> Result<(), ServerError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), ServerError> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServerError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.join();
    }
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
