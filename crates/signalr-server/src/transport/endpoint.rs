//! One SignalR endpoint (a hub URL) as an axum [`Router`]: the routes, their shared state and
//! the housekeeping task that reaps abandoned negotiations.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any};

use super::connections::ConnectionTable;
use super::{ConnectionApp, TransportOptions, negotiate, websocket};

/// Shared state of one endpoint.
pub(crate) struct Endpoint {
    pub(crate) app: Arc<dyn ConnectionApp>,
    pub(crate) options: TransportOptions,
    pub(crate) connections: ConnectionTable,
    /// Started on the first request (a runtime is guaranteed to exist there, unlike where the
    /// router is built).
    housekeeping: OnceLock<()>,
}

impl Endpoint {
    /// Start the housekeeping task once. It holds only a weak reference, so it ends when the
    /// router (and with it the endpoint) is dropped.
    pub(crate) fn ensure_housekeeping(self: &Arc<Self>) {
        self.housekeeping.get_or_init(|| {
            let weak: Weak<Endpoint> = Arc::downgrade(self);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(endpoint) = weak.upgrade() else {
                        break;
                    };
                    let reaped = endpoint
                        .connections
                        .reap(endpoint.options.disconnect_timeout);
                    if reaped > 0 {
                        tracing::debug!(reaped, "discarded negotiated connections never used");
                    }
                }
            });
        });
    }
}

/// Build the routes of one endpoint at `path` (e.g. `/chat`): `POST {path}/negotiate` and
/// the transport requests on `{path}` itself.
pub(crate) fn router(path: &str, app: Arc<dyn ConnectionApp>, options: TransportOptions) -> Router {
    let endpoint = Arc::new(Endpoint {
        app,
        options,
        connections: ConnectionTable::default(),
        housekeeping: OnceLock::new(),
    });
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    let negotiate_path = format!("{}/negotiate", path.trim_end_matches('/'));
    let negotiate_route: MethodRouter<Arc<Endpoint>> = any(negotiate::handle);
    Router::new()
        .route(&negotiate_path, negotiate_route)
        .route(path, any(connect))
        .with_state(endpoint)
}

/// `{path}` with any method: WebSocket upgrade; the HTTP transports come with their own issue
/// of the roadmap and are answered plainly until enabled.
async fn connect(State(endpoint): State<Arc<Endpoint>>, request: Request) -> Response {
    endpoint.ensure_housekeeping();
    let (mut parts, _body) = request.into_parts();
    let is_upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if parts.method == Method::GET && is_upgrade {
        return match axum::extract::ws::WebSocketUpgrade::from_request_parts(&mut parts, &()).await
        {
            Ok(upgrade) => websocket::accept(endpoint, parts, upgrade),
            Err(rejection) => rejection.into_response(),
        };
    }
    match parts.method {
        Method::GET | Method::POST | Method::DELETE => plain(
            StatusCode::NOT_FOUND,
            "This endpoint only accepts WebSocket connections.",
        ),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed."),
    }
}

/// A plain-text response, as ASP.NET Core answers transport errors.
pub(crate) fn plain(status: StatusCode, text: &'static str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .unwrap_or_else(|_| status.into_response())
}

/// The value of a query parameter, matched case-insensitively like ASP.NET Core does.
pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.into_owned())
}
