//! What operators look at: `GET /metrics` (Prometheus text format) and `GET /healthz`
//! (JSON), as a ready-made axum router.
//!
//! ```no_run
//! use signalr_server::Hub;
//! use signalr_server::observability::{self, Observability};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // First, before any hub is built: metric handles are registered when a hub is built,
//! // and a recorder installed later never sees them.
//! let prometheus = observability::install_prometheus()?;
//!
//! let chat = Hub::builder().name("chat").build();
//! let app = axum::Router::new()
//!     .merge(chat.router("/chat"))
//!     .merge(Observability::new().prometheus(prometheus).hub(&chat).router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//! signalr_server::serve(listener, app, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # `GET /metrics`
//!
//! Everything recorded through the `metrics` crate, in the Prometheus text format: the
//! metrics of every hub (listed in the crate documentation, "Metrics"), the backplane's
//! (`signalr_backplane_*`), and the application's own. Offered only when the router has
//! a [`PrometheusHandle`]; an application with its own exporter leaves it out.
//!
//! # `GET /healthz`
//!
//! ```json
//! {
//!   "status": "ok",
//!   "uptime_seconds": 3600,
//!   "hubs": [
//!     {
//!       "name": "chat",
//!       "connections": 42,
//!       "pending_negotiations": 1,
//!       "shutting_down": false,
//!       "lifetime_manager": {
//!         "kind": "redis",
//!         "backplane": true,
//!         "connected": true,
//!         "since_unix_seconds": 1790000000,
//!         "for_seconds": 3599,
//!         "detail": "127.0.0.1:6379"
//!       }
//!     }
//!   ]
//! }
//! ```
//!
//! `200` with `"status": "ok"`; `503` with `"status": "unhealthy"` when a hub's backplane
//! is disconnected (unless [`Observability::backplane_required`] is off: a node without
//! Redis still serves its own connections), or `"shutting_down"` once a hub shuts down, so
//! a load balancer stops sending new clients. `connections` counts the hub's connections
//! on this node (from the first transport request to the end), `pending_negotiations` the
//! negotiated ones no transport request has used yet. The lifetime manager's part is what
//! [`HubLifetimeManager::health`](crate::HubLifetimeManager::health) reports.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;

use crate::hub::Hub;

/// Install a Prometheus recorder as the process's global `metrics` recorder and return
/// the handle that renders it. Call it once, early: before building hubs (and before
/// connecting a backplane), whose metric handles are registered when they are built.
///
/// Fails if a global recorder is already installed.
pub fn install_prometheus() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()
}

/// The `/metrics` and `/healthz` routes for some hubs. See the [module docs](self).
#[derive(Clone)]
pub struct Observability {
    hubs: Vec<Hub>,
    prometheus: Option<PrometheusHandle>,
    backplane_required: bool,
    started: SystemTime,
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("hubs", &self.hubs.iter().map(Hub::name).collect::<Vec<_>>())
            .field("metrics", &self.prometheus.is_some())
            .field("backplane_required", &self.backplane_required)
            .finish()
    }
}

impl Default for Observability {
    fn default() -> Self {
        Self::new()
    }
}

impl Observability {
    /// No hubs, no `/metrics`; a required backplane.
    pub fn new() -> Observability {
        Observability {
            hubs: Vec::new(),
            prometheus: None,
            backplane_required: true,
            started: SystemTime::now(),
        }
    }

    /// Report on `hub` in `/healthz`.
    pub fn hub(mut self, hub: &Hub) -> Observability {
        self.hubs.push(hub.clone());
        self
    }

    /// Serve `/metrics` from this recorder (see [`install_prometheus`]).
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Observability {
        self.prometheus = Some(handle);
        self
    }

    /// Whether a disconnected backplane makes `/healthz` answer `503` (default: true).
    /// Turn it off where a node that serves only its own connections is still wanted.
    pub fn backplane_required(mut self, required: bool) -> Observability {
        self.backplane_required = required;
        self
    }

    /// The health report, as `/healthz` serves it.
    pub fn health(&self) -> HealthReport {
        let hubs: Vec<HubHealth> = self.hubs.iter().map(hub_health).collect();
        let status = if hubs.iter().any(|hub| hub.shutting_down) {
            HealthStatus::ShuttingDown
        } else if self.backplane_required
            && hubs
                .iter()
                .any(|hub| hub.lifetime_manager.backplane && !hub.lifetime_manager.connected)
        {
            HealthStatus::Unhealthy
        } else {
            HealthStatus::Ok
        };
        HealthReport {
            status,
            uptime_seconds: self.started.elapsed().unwrap_or_default().as_secs(),
            hubs,
        }
    }

    /// `GET /metrics` (with a recorder) and `GET /healthz`. Merge it into the application's
    /// router.
    pub fn router(self) -> Router {
        let metrics = self.prometheus.is_some();
        let router = Router::new().route("/healthz", get(healthz));
        let router = if metrics {
            router.route("/metrics", get(render_metrics))
        } else {
            router
        };
        router.with_state(Arc::new(self))
    }
}

/// The routes for `hubs`, with `/metrics` when `prometheus` is given: a shorthand for
/// [`Observability`].
pub fn router(prometheus: Option<PrometheusHandle>, hubs: &[&Hub]) -> Router {
    let mut observability = Observability::new();
    if let Some(handle) = prometheus {
        observability = observability.prometheus(handle);
    }
    hubs.iter()
        .fold(observability, |o, hub| o.hub(hub))
        .router()
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HealthReport {
    /// Overall verdict.
    pub status: HealthStatus,
    /// Seconds since the report's router was made.
    pub uptime_seconds: u64,
    /// One entry per hub.
    pub hubs: Vec<HubHealth>,
}

impl HealthReport {
    /// Whether the node should receive traffic (`200`), or not (`503`).
    pub fn is_ok(&self) -> bool {
        self.status == HealthStatus::Ok
    }
}

/// The overall verdict of a [`HealthReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// A required backplane is disconnected.
    Unhealthy,
    /// A hub is shutting down and refuses new connections.
    ShuttingDown,
}

/// One hub in a [`HealthReport`].
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct HubHealth {
    /// [`HubOptions::name`](crate::HubOptions::name).
    pub name: String,
    /// Connections of the hub on this node.
    pub connections: usize,
    /// Negotiated connections no transport request has used yet.
    pub pending_negotiations: usize,
    /// The hub refuses new connections.
    pub shutting_down: bool,
    /// What the hub's lifetime manager reports.
    pub lifetime_manager: ManagerHealth,
}

/// A lifetime manager in a [`HealthReport`]: [`LifetimeHealth`](crate::LifetimeHealth) in
/// JSON-friendly units.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct ManagerHealth {
    /// `"in-memory"`, `"redis"`, ...
    pub kind: String,
    /// Other nodes are reached through a backplane.
    pub backplane: bool,
    /// The backplane is connected (always true without one).
    pub connected: bool,
    /// Since when `connected` has had its value, in seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since_unix_seconds: Option<u64>,
    /// How long `connected` has had its value, in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<u64>,
    /// A word for operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn hub_health(hub: &Hub) -> HubHealth {
    let health = hub.core.manager.health();
    let since = health.since;
    HubHealth {
        name: hub.name().to_owned(),
        connections: hub.lifecycle.admission.connections(),
        pending_negotiations: hub.lifecycle.admission.pending(),
        shutting_down: hub.lifecycle.is_shutting_down(),
        lifetime_manager: ManagerHealth {
            kind: health.kind,
            backplane: health.backplane,
            connected: health.connected,
            since_unix_seconds: since
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            for_seconds: since
                .map(|t| t.elapsed().unwrap_or(Duration::ZERO))
                .map(|d| d.as_secs()),
            detail: health.detail,
        },
    }
}

async fn healthz(State(observability): State<Arc<Observability>>) -> Response {
    let report = observability.health();
    let status = if report.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match serde_json::to_vec(&report) {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache, no-store"),
            ],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn render_metrics(State(observability): State<Arc<Observability>>) -> Response {
    let Some(handle) = &observability.prometheus else {
        return StatusCode::NOT_FOUND.into_response();
    };
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}
