//! The benchmark hub: what the workloads invoke, on `signalr-server` with its defaults.
//!
//! Hub at `/hub`; every method sends `m(payload)` to its audience:
//!
//! | method | audience |
//! |---|---|
//! | `Broadcast(payload)` | all connections (the sender too, as Socket.IO's `io.emit`) |
//! | `SendToGroup(group, payload)` | the group's members |
//! | `JoinGroup(group)` / `LeaveGroup(group)` | membership of the caller |
//! | `SendToUser(user, payload)` | the user's connections (user = `user` query parameter) |
//! | `SendToConnection(id, payload)` | one connection |
//!
//! The payload is taken as a `String` and serialized again, as an application would write it.
//! `GET /stats` answers `{"connections":N}` from the lifetime manager, so a run can count
//! connections at the server as well as at the client.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use signalr_redis::RedisHubLifetimeManager;
use signalr_server::{
    Clients, Context, Groups, Hub, HubError, HubLifetimeManager, MemoryLifetimeManager,
};

/// Settings of the benchmark hub.
#[derive(Clone)]
pub struct ServerConfig {
    /// Bytes queued per connection before it is closed as a slow consumer.
    pub max_buffered_bytes: usize,
    /// Most bytes written in one WebSocket message (`TransportOptions::max_write_batch_bytes`).
    pub max_write_batch_bytes: usize,
    /// Hold short writes back for what is about to be sent (`TransportOptions::coalesce_writes`).
    pub coalesce_writes: bool,
    /// Scale out through Redis (cross-node workloads); `None`: in memory.
    pub redis: Option<Arc<RedisHubLifetimeManager>>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("max_write_batch_bytes", &self.max_write_batch_bytes)
            .field("coalesce_writes", &self.coalesce_writes)
            .field("redis", &self.redis.is_some())
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_buffered_bytes: signalr_server::TransportOptions::default().max_buffered_bytes,
            max_write_batch_bytes: signalr_server::TransportOptions::default()
                .max_write_batch_bytes,
            coalesce_writes: signalr_server::TransportOptions::default().coalesce_writes,
            redis: None,
        }
    }
}

async fn broadcast(clients: Clients, payload: String) -> Result<(), HubError> {
    clients.all().send("m", (payload,)).await
}

async fn send_to_group(clients: Clients, group: String, payload: String) -> Result<(), HubError> {
    clients.group(group).send("m", (payload,)).await
}

async fn join_group(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
    groups.add(ctx.connection_id(), &group).await
}

async fn leave_group(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
    groups.remove(ctx.connection_id(), &group).await
}

async fn send_to_user(clients: Clients, user: String, payload: String) -> Result<(), HubError> {
    clients.user(user).send("m", (payload,)).await
}

async fn send_to_connection(
    clients: Clients,
    connection_id: String,
    payload: String,
) -> Result<(), HubError> {
    clients.client(connection_id).send("m", (payload,)).await
}

fn user_from_query(request: &http::request::Parts) -> Option<String> {
    let query = request.uri.query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == "user")
        .map(|(_, value)| value.into_owned())
        .filter(|user| !user.is_empty())
}

/// The benchmark hub, mounted at `/hub`, plus `/stats` (this node's connections).
pub fn app(config: &ServerConfig) -> Router {
    let memory = Arc::new(MemoryLifetimeManager::new());
    let (manager, count): (
        Arc<dyn HubLifetimeManager>,
        Arc<dyn Fn() -> usize + Send + Sync>,
    ) = match &config.redis {
        Some(redis) => {
            let counted = redis.clone();
            (
                redis.clone(),
                Arc::new(move || counted.local().connection_count()),
            )
        }
        None => {
            let counted = memory.clone();
            (memory, Arc::new(move || counted.connection_count()))
        }
    };
    let hub = Hub::builder()
        .method("Broadcast", broadcast)
        .method("SendToGroup", send_to_group)
        .method("JoinGroup", join_group)
        .method("LeaveGroup", leave_group)
        .method("SendToUser", send_to_user)
        .method("SendToConnection", send_to_connection)
        .user_id_provider(user_from_query)
        .lifetime_manager(manager)
        .configure_transports(|t| {
            t.max_buffered_bytes = config.max_buffered_bytes;
            t.max_write_batch_bytes = config.max_write_batch_bytes;
            t.coalesce_writes = config.coalesce_writes;
        })
        .build();
    let stats = get(move || {
        let count = count.clone();
        async move {
            let body = format!("{{\"connections\":{}}}", count());
            ([(http::header::CONTENT_TYPE, "application/json")], body)
        }
    });
    Router::new()
        .merge(hub.router("/hub"))
        .route("/stats", stats)
}
