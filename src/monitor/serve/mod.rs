//! The live dashboard (`filtermon serve`, or `serve = "…"` in the watch config): HTML pages,
//! a JSON API, server-sent events and Prometheus metrics over the store, on axum and tokio.
//!
//! The server only reads the store, through read-only connections that never block the
//! daemon writing beside it (WAL); acknowledging an alert is its one write. It learns of new
//! results from SQLite's `data_version` ([`events`]), so pages update without reloading and
//! without a busy loop. Every asset is compiled into the binary ([`assets`]): no request path
//! reaches the file system.
//!
//! Routes: `/`, `/curves`, `/recall`, `/checkpoints/{id}` (pages); `/assets/{name}`;
//! `/api/runs`, `/api/curves`, `/api/alerts` (GET, POST `{"ack": id}`),
//! `/api/checkpoints/{id}`, `/api/events` (SSE); `/metrics`.

mod api;
mod assets;
mod auth;
mod domains;
mod events;
mod metrics;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;
use tokio::sync::{broadcast, oneshot, watch};

use crate::error::input_error;
use crate::store::{Location, Store};

/// Largest request body accepted: an ack is a few bytes.
const BODY_LIMIT: usize = 4096;

/// Read connections kept open between requests.
const IDLE_READERS: usize = 8;

/// Where and to whom the dashboard is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeSettings {
    /// Address to bind.
    pub addr: SocketAddr,
    /// Token required for writes (and, when `private`, for reads).
    pub token: Option<String>,
    /// Require the token for reads too.
    pub private: bool,
}

/// The default address: loopback only.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

impl ServeSettings {
    /// Checks the settings: a non-loopback address, or `private`, needs a token.
    pub fn new(addr: SocketAddr, token: Option<String>, private: bool) -> anyhow::Result<Self> {
        let token = token.filter(|t| !t.is_empty());
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(input_error(format!(
                "serving on {addr}, beyond this machine, needs a token (--token or serve_token)"
            )));
        }
        if token.is_none() && private {
            return Err(input_error(
                "--private needs a token (--token or serve_token)",
            ));
        }
        Ok(ServeSettings {
            addr,
            token,
            private,
        })
    }
}

/// What every handler shares.
struct App {
    db: Location,
    settings: ServeSettings,
    /// Idle read-only connections.
    readers: Mutex<Vec<Store>>,
    /// Change notices for the event streams.
    changes: broadcast::Sender<events::Change>,
    /// Per-domain tables by checkpoint id: they never change once its jobs are done.
    domains: Mutex<HashMap<i64, Arc<domains::DomainTable>>>,
    /// Set when the server stops, so that open event streams end.
    closing: watch::Receiver<bool>,
}

impl App {
    /// Runs `f` on a read-only connection, off the async threads.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&App, &Store) -> anyhow::Result<T> + Send + 'static,
    {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = app.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let store = match pooled {
                Some(s) => s,
                None => Store::open_read_only(&app.db)?,
            };
            let out = f(&app, &store);
            // A connection that failed is dropped rather than kept: the next one starts clean.
            let mut idle = app.readers.lock().unwrap_or_else(|p| p.into_inner());
            if out.is_ok() && idle.len() < IDLE_READERS {
                idle.push(store);
            }
            out
        })
        .await
        .context("a store read stopped")?
    }
}

/// A running dashboard.
pub struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Server {
    /// Binds the address and serves `db` from a thread of its own, so the caller (the daemon,
    /// the demo) goes on. A database that does not exist, or an address that cannot be bound,
    /// is an error here rather than in the thread.
    pub fn start(db: &Location, settings: ServeSettings) -> anyhow::Result<Server> {
        // Migrates an older schema once, so the read-only connections can read it.
        Store::open_existing(db)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("serve")
            .enable_all()
            .build()
            .context("starting the dashboard's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(settings.addr))
            .map_err(|e| input_error(format!("cannot serve on {}: {e}", settings.addr)))?;
        let addr = listener.local_addr()?;
        let (changes, _) = broadcast::channel(64);
        let (closing_tx, closing) = watch::channel(false);
        let app = Arc::new(App {
            db: db.clone(),
            settings,
            readers: Mutex::new(Vec::new()),
            changes,
            domains: Mutex::new(HashMap::new()),
            closing,
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("serve".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let poller = tokio::spawn(events::poll(app.clone()));
                    let served = axum::serve(listener, router(app))
                        .with_graceful_shutdown(async move {
                            let _ = stop_rx.await;
                            let _ = closing_tx.send(true);
                        })
                        .await;
                    poller.abort();
                    served.context("serving the dashboard")
                })
            })?;
        tracing::info!(url = %format!("http://{addr}/"), "dashboard");
        Ok(Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// The bound address (the port is the system's choice when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the server stopped on its own (an error, which [`Server::stop`] returns).
    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the dashboard thread panicked"))?,
            None => Ok(()),
        }
    }

    /// Serves until SIGINT/SIGTERM, or until the server fails on its own.
    pub fn serve_until_signal(self) -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc::set_handler(move || {
            let _ = tx.send(());
        })
        .context("installing the SIGINT/SIGTERM handler")?;
        while !self.is_finished() {
            match rx.recv_timeout(std::time::Duration::from_millis(500)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        self.stop()
    }

    /// Stops serving: open event streams end, requests in flight finish.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.join()
    }
}

fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/api/runs", get(api::runs))
        .route("/api/curves", get(api::curves))
        .route("/api/alerts", get(api::alerts).post(api::ack))
        .route("/api/checkpoints/{id}", get(api::checkpoint))
        .route("/api/events", get(events::stream))
        .route("/metrics", get(metrics::metrics));
    Router::new()
        .route("/", get(assets::page))
        .route("/curves", get(assets::page))
        .route("/recall", get(assets::page))
        .route("/checkpoints/{id}", get(assets::page))
        .route("/assets/{name}", get(assets::asset))
        .merge(api)
        .fallback(api::not_found)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(app)
}
