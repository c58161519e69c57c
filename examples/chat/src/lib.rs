//! The chat sample: the classic SignalR chat hub and the page that talks to it.
//!
//! Hub at `/chat`:
//!
//! | method | does |
//! |---|---|
//! | `Send(name, message)` | `broadcastMessage(name, message)` to everyone |
//! | `JoinGroup(group)` / `LeaveGroup(group)` | membership of the caller |
//! | `SendToGroup(group, name, message)` | `broadcastMessage(name, message)` to the group |
//! | `SendToUser(user, name, message)` | `broadcastMessage(name, message)` to that user's connections |
//! | `Echo(message)` | returns `message` |
//!
//! The demo identity of a connection is the `user` query parameter of its URL
//! (`/chat?user=alice`). With [`ChatConfig::auth_tokens`] set the hub authenticates instead:
//! every request needs one of those bearer tokens (header or `access_token` query
//! parameter), and the token's user is the connection's user id. That is a demo of the
//! authenticator seam; a real application verifies signed tokens.
//!
//! All three transports are offered unless [`ChatConfig::transports`] says otherwise.
//!
//! `GET /` serves the page; `/lib/*.js` serves the official browser client from the npm
//! packages installed in `examples/chat/node_modules` (`npm ci` in `examples/chat`).
//!
//! `GET /healthz` reports the hub (connections, backplane connected or not and since
//! when; `503` while Redis is lost or the hub shuts down) and, with
//! [`ChatConfig::metrics`], `GET /metrics` serves every metric in the Prometheus text
//! format.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use signalr_server::observability::{Observability, PrometheusHandle};
use signalr_server::protocol::TransportType;
use signalr_server::{
    AuthError, Clients, Context, Groups, Hub, HubError, HubLifetimeManager, Identity,
};

/// `Send(name, message)`: to everyone.
async fn send(clients: Clients, name: String, message: String) -> Result<(), HubError> {
    clients
        .all()
        .send("broadcastMessage", (name, message))
        .await
}

/// `JoinGroup(group)`: the caller joins.
async fn join_group(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
    groups.add(ctx.connection_id(), &group).await
}

/// `LeaveGroup(group)`: the caller leaves.
async fn leave_group(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
    groups.remove(ctx.connection_id(), &group).await
}

/// `SendToGroup(group, name, message)`: to the group's members.
async fn send_to_group(
    clients: Clients,
    group: String,
    name: String,
    message: String,
) -> Result<(), HubError> {
    clients
        .group(group)
        .send("broadcastMessage", (name, message))
        .await
}

/// `SendToUser(user, name, message)`: to every connection of the user.
async fn send_to_user(
    clients: Clients,
    user: String,
    name: String,
    message: String,
) -> Result<(), HubError> {
    clients
        .user(user)
        .send("broadcastMessage", (name, message))
        .await
}

/// `Echo(message)`: returns it.
async fn echo(message: String) -> String {
    message
}

/// The demo identity: the `user` query parameter, if present and not empty.
pub fn user_from_query(request: &axum::http::request::Parts) -> Option<String> {
    let query = request.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "user")
        .map(|(_, value)| value.into_owned())
        .filter(|user| !user.is_empty())
}

/// Settings of the chat application.
#[derive(Clone)]
pub struct ChatConfig {
    /// Largest hub message accepted from a client.
    pub max_message_size: usize,
    /// Where the npm packages of the page are installed (`examples/chat/node_modules`).
    pub node_modules: PathBuf,
    /// Transports offered, in preference order. Default: all three.
    pub transports: Vec<TransportType>,
    /// Demo authentication: bearer token → user id. When set, every request needs one of
    /// these tokens. Default: none (anonymous, user id from the query).
    pub auth_tokens: Option<HashMap<String, String>>,
    /// The scale-out backplane (e.g. a `RedisHubLifetimeManager`); `None` keeps every
    /// connection in this process's memory.
    pub lifetime_manager: Option<Arc<dyn HubLifetimeManager>>,
    /// The hub's name in metrics and `/healthz` (the backplane's hub name, so both carry
    /// the same `hub` label). Default: `Chat.Hubs.ChatHub`.
    pub hub_name: String,
    /// The Prometheus recorder `GET /metrics` renders (installed before the hub is built);
    /// `None`: no `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

impl std::fmt::Debug for ChatConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatConfig")
            .field("max_message_size", &self.max_message_size)
            .field("node_modules", &self.node_modules)
            .field("transports", &self.transports)
            .field("authenticated", &self.auth_tokens.is_some())
            .field("scaled_out", &self.lifetime_manager.is_some())
            .field("hub_name", &self.hub_name)
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            max_message_size: 32 * 1024,
            node_modules: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/node_modules")),
            transports: signalr_server::TransportOptions::default().transports,
            auth_tokens: None,
            lifetime_manager: None,
            hub_name: "Chat.Hubs.ChatHub".to_owned(),
            metrics: None,
        }
    }
}

/// Parse `alice=tokenA,bob=tokenB` into token → user.
pub fn parse_auth_tokens(spec: &str) -> Result<HashMap<String, String>, String> {
    let mut tokens = HashMap::new();
    for pair in spec.split(',').filter(|pair| !pair.trim().is_empty()) {
        let (user, token) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not USER=TOKEN"))?;
        let (user, token) = (user.trim(), token.trim());
        if user.is_empty() || token.is_empty() {
            return Err(format!("`{pair}` is not USER=TOKEN"));
        }
        tokens.insert(token.to_owned(), user.to_owned());
    }
    Ok(tokens)
}

/// Parse a transport name: `WebSockets`, `ServerSentEvents` or `LongPolling`.
pub fn parse_transport(name: &str) -> Result<TransportType, String> {
    match name.trim() {
        "WebSockets" => Ok(TransportType::WebSockets),
        "ServerSentEvents" => Ok(TransportType::ServerSentEvents),
        "LongPolling" => Ok(TransportType::LongPolling),
        other => Err(format!(
            "unknown transport `{other}` (WebSockets, ServerSentEvents, LongPolling)"
        )),
    }
}

/// The chat hub.
pub fn hub(config: &ChatConfig) -> Hub {
    let mut builder = Hub::builder();
    if let Some(manager) = &config.lifetime_manager {
        builder = builder.lifetime_manager(manager.clone());
    }
    let builder = builder
        .name(config.hub_name.clone())
        .method("Send", send)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("SendToGroup", send_to_group)
        .method("SendToUser", send_to_user)
        .method("Echo", echo)
        .configure(|options| options.max_receive_message_size = config.max_message_size)
        .configure_transports(|transports| transports.transports = config.transports.clone());
    match &config.auth_tokens {
        // The authenticated identity's user id becomes the connection's user id.
        Some(tokens) => {
            let tokens = Arc::new(tokens.clone());
            builder
                .authenticator(move |_: &axum::http::request::Parts, token: Option<&str>| {
                    match token {
                        None => Ok(None),
                        Some(token) => tokens
                            .get(token)
                            .map(|user| Some(Identity::user(user)))
                            .ok_or_else(|| AuthError::new("unknown token")),
                    }
                })
                .require_authentication()
                .build()
        }
        None => builder.user_id_provider(user_from_query).build(),
    }
}

/// The whole application: the hub at `/chat` and the page at `/`.
pub fn app(config: ChatConfig) -> Router {
    let chat = hub(&config);
    router(config, &chat)
}

/// The application around an existing hub (to keep a handle for [`Hub::shutdown`]).
pub fn router(config: ChatConfig, chat: &Hub) -> Router {
    let mut observability = Observability::new().hub(chat);
    if let Some(metrics) = config.metrics.clone() {
        observability = observability.prometheus(metrics);
    }
    let page = Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/index.html",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/lib/{file}", get(client_library))
        .with_state(config);
    Router::new()
        .merge(chat.router("/chat"))
        .merge(observability.router())
        .merge(page)
}

const INDEX_HTML: &str = include_str!("../static/index.html");
const APP_JS: &str = include_str!("../static/app.js");
const STYLE_CSS: &str = include_str!("../static/style.css");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The official browser bundles, read from the npm packages.
async fn client_library(
    State(config): State<ChatConfig>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    let relative = match file.as_str() {
        "signalr.min.js" => "@microsoft/signalr/dist/browser/signalr.min.js",
        "signalr-protocol-msgpack.min.js" => {
            "@microsoft/signalr-protocol-msgpack/dist/browser/signalr-protocol-msgpack.min.js"
        }
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    let path = config.node_modules.join(relative);
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "browser client bundle missing");
            (
                StatusCode::NOT_FOUND,
                format!(
                    "{} is missing: run `npm ci` in examples/chat ({error})",
                    path.display()
                ),
            )
                .into_response()
        }
    }
}
