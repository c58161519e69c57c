//! An ASP.NET Core SignalR compatible hub server on axum.
//!
//! The official SignalR clients (npm `@microsoft/signalr`, .NET, Java) connect to it
//! unchanged: negotiate, WebSockets, Server-Sent Events and long polling, the JSON and
//! MessagePack hub protocols, invocations with results, groups and users. Messages to many clients are serialized once per protocol and
//! shared; scale-out across nodes plugs in through one trait, [`HubLifetimeManager`].
//!
//! # Quick start
//!
//! ```no_run
//! use signalr_server::{Clients, Hub, HubError};
//!
//! // A hub method is an async fn. Parameters that deserialize are the invocation's
//! // arguments, in order; `Clients`, `Groups`, `Context`, `State` come from the connection.
//! async fn send(clients: Clients, name: String, message: String) -> Result<(), HubError> {
//!     clients.all().send("broadcastMessage", (name, message)).await
//! }
//!
//! async fn echo(message: String) -> String {
//!     message
//! }
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let chat = Hub::builder()
//!         .method("Send", send)
//!         .method("Echo", echo)
//!         .build();
//!     let app = axum::Router::new().merge(chat.router("/chat"));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:5000").await?;
//!     signalr_server::serve(listener, app, std::future::pending()).await
//! }
//! ```
//!
//! A JavaScript client then calls
//! `connection.invoke("Echo", "hi")` and receives `broadcastMessage(name, message)` events.
//!
//! # Hub methods
//!
//! - **Arguments**: any `T: serde::de::DeserializeOwned` parameter takes the next argument.
//!   An invocation with the wrong number of arguments, or arguments of the wrong type, is
//!   answered with an error before the method runs.
//! - **Context**: [`Clients`] (all, caller, others, client, clients, group, groups,
//!   group_except, others_in_group, user, users, all_except), [`Groups`] (add, remove),
//!   [`Context`] (connection id, user id, request, items, abort), [`State`] (the hub's shared
//!   state), [`HubContext`], [`InvocationId`].
//! - **Return values**: `()`, plain values, or `Result<T, HubError>`. Errors become the
//!   Completion's error: [`HubError::new`] messages always reach the client; other errors only
//!   with `detailed_errors`.
//! - **Hooks**: `on_connected` and `on_disconnected` take the same context extractors.
//!
//! Invocations from one connection run one at a time, in order (configurable with
//! [`HubOptions::max_parallel_invocations`]).
//!
//! # Transports
//!
//! Negotiate offers WebSockets, Server-Sent Events and long polling, in that order (the JS
//! client takes the first that works, falling back when one fails);
//! [`TransportOptions::transports`] turns any of them off. Long polls wait up to
//! [`TransportOptions::poll_timeout`] (90 s); a connection with no transport request for
//! [`TransportOptions::disconnect_timeout`] (15 s) is disposed. SSE carries text only (JSON).
//!
//! # Authentication and CORS
//!
//! [`HubBuilder::authenticator`] runs an [`Authenticator`] on every HTTP request of the hub
//! (negotiate and each transport request) with the bearer token from the `Authorization`
//! header or the `access_token` query parameter. Refused: `401`. The [`Identity`] of the
//! request that starts a connection is [`Context::identity`], and its `user_id` is the
//! connection's user id for `Clients::user` (unless a user-id provider is set).
//! [`HubBuilder::require_authentication`] refuses anonymous callers;
//! [`HubBuilder::authorize`] is the hub's `[Authorize]` check (`403`).
//!
//! ```
//! use signalr_server::{AuthError, Hub, Identity};
//!
//! let hub = Hub::builder()
//!     .authenticator(|_request: &http::request::Parts, token: Option<&str>| match token {
//!         Some("secret-of-alice") => Ok(Some(Identity::user("alice"))),
//!         Some(_) => Err(AuthError::new("unknown token")),
//!         None => Ok(None),
//!     })
//!     .require_authentication()
//!     .build();
//! # let _ = hub;
//! ```
//!
//! Browsers on another origin need [`HubBuilder::cors`] with a [`CorsOptions`]: the allowed
//! origin is echoed with credentials allowed, preflights are answered without
//! authentication, and other origins get no CORS headers.
//!
//! # Graceful shutdown
//!
//! [`Hub::shutdown`] refuses new connections (`503`), sends every connection a Close message
//! with "Server is shutting down." and `allowReconnect: true` (so clients with automatic
//! reconnect go elsewhere), and waits, at most [`TransportOptions::shutdown_timeout`] (5 s),
//! for them to go.
//!
//! # Limits
//!
//! Whatever a client sends, these bound what one client (or a crowd of them) can make the
//! server hold. Each is an option with a default; `0` turns the counting ones off.
//!
//! | limit | option | default | over it |
//! |---|---|---|---|
//! | hub message size | [`HubOptions::max_receive_message_size`] | 32 KiB | Close with an error (`allowReconnect`), before the bytes of a larger MessagePack frame arrive |
//! | one WebSocket message | [`TransportOptions::max_websocket_message_bytes`] | 64 KiB | Close with an error |
//! | one SSE/long-polling send | [`TransportOptions::max_request_body_bytes`] | 1 MiB | `413`, and a Close with the reason |
//! | handshake time | [`HubOptions::handshake_timeout`] | 15 s | handshake error, then closed |
//! | silent client | [`HubOptions::client_timeout`] | 30 s after its first ping | Close with an error |
//! | outbound queue per connection | [`TransportOptions::max_buffered_bytes`] | 1 MiB | closed as a slow consumer (below) |
//! | delivering the last messages of a closing WebSocket | [`TransportOptions::close_timeout`] | 5 s | socket dropped |
//! | connections of a hub on this node | [`TransportOptions::max_connections`] | 100,000 | negotiate and skipNegotiation WebSockets answer `503` |
//! | negotiated connections not used yet | [`TransportOptions::max_pending_negotiations`] | 10,000 | negotiate answers `503`; unused ones are reaped after [`TransportOptions::disconnect_timeout`] (15 s) |
//! | groups per connection | [`HubOptions::max_groups_per_connection`] | 1,000 | `Groups::add` fails, membership unchanged |
//! | client results waiting per connection | [`HubOptions::max_pending_client_results`] | 100 | `invoke` fails at once |
//! | client-result answer time | [`HubOptions::client_result_timeout`] | 30 s | `invoke` fails |
//! | invocations running per connection | [`HubOptions::max_parallel_invocations`] | 1 | the rest wait; past a short queue the connection stops reading (TCP pushes back) |
//! | upload stream items buffered | | 10 per stream | the connection stops reading until the method takes items |
//!
//! The texts clients receive, and the test that shows each answer, are listed in the
//! repository's `docs/bad-input.md`. Refusals are counted in `signalr_limit_refusals_total`.
//!
//! # Metrics
//!
//! Recorded through the [`metrics`](https://docs.rs/metrics) crate, every one labelled
//! `hub` ([`HubOptions::name`], `HubBuilder::name`). Handles are registered when a hub is
//! built: install a recorder first ([`observability::install_prometheus`]). Nothing is
//! counted per delivery: bytes and messages out are counted per transport write (which
//! carries whatever piled up), bytes in per read, messages in per parsed chunk.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `signalr_connections` | gauge | `transport`, `protocol` | hub connections (after the handshake) |
//! | `signalr_connections_opened_total`, `signalr_connections_closed_total` | counter | | hub connections opened and closed |
//! | `signalr_pending_negotiations` | gauge | | negotiated, not used yet |
//! | `signalr_messages_received_total`, `signalr_messages_sent_total` | counter | | hub messages parsed from clients, written to clients (pings included) |
//! | `signalr_bytes_received_total`, `signalr_bytes_sent_total` | counter | `transport` | transport payload bytes |
//! | `signalr_invocations_total`, `signalr_invocation_errors_total` | counter | | invocations from clients, and those that ended with an error |
//! | `signalr_handshake_failures_total` | counter | `reason`: `timeout`, `malformed`, `unsupported` | refused handshakes |
//! | `signalr_slow_consumer_closes_total` | counter | | connections closed because their queue was full |
//! | `signalr_sender_waits_total` | counter | `reason`: `pace`, `far_behind` | a connection's input held back for the writers its sends fed: a 10 ms pause after a batch whose sends found most of their many small audiences' queues still unwritten (`pace`), or a turn for every ready task when most of an audience's writers are far behind (`far_behind`); steady growth means the node is saturated |
//! | `signalr_auth_refusals_total` | counter | `status`: `401`, `403` | refused HTTP requests |
//! | `signalr_limit_refusals_total` | counter | `limit`: `connections`, `pending_negotiations`, `request_body`, `groups`, `client_results` | requests and calls refused by a limit |
//!
//! The Redis backplane adds `signalr_backplane_*` (see `signalr-redis`).
//! [`observability`] serves them as `GET /metrics`, with `GET /healthz` beside it; every
//! log line of a connection is written inside a `connection` span carrying
//! `connection_id`, `transport` and `protocol`.
//!
//! # Layers
//!
//! - `transport`: HTTP (negotiate, WebSockets, SSE, long polling, CORS), bytes and connection
//!   tokens. It never imports hubs or lifetime managers.
//! - `auth`: who a request comes from; used by the transports (to admit requests) and by
//!   hubs (to know the caller).
//! - `connection`: one connection's lifecycle (handshake, message loop, keep-alive, close).
//! - `hub`: methods, extractors, clients, groups, contexts. It never imports axum.
//! - `lifetime`: the [`HubLifetimeManager`] trait and the in-memory default.
//! - `observability`: `/metrics` and `/healthz`, glue over hubs and transports like
//!   `Hub::router`.
//!
//! # Slow consumers
//!
//! Each connection has a byte-bounded outbound queue
//! ([`TransportOptions::max_buffered_bytes`], 1 MiB by default). A client that does not read
//! fast enough to keep its queue under the bound is disconnected with a Close message carrying
//! the error `Connection closed with an error. The client did not read messages fast
//! enough: its outbound buffer is full.` and `allowReconnect: true`, and counted in
//! `signalr_slow_consumer_closes_total`; senders never wait for it and other clients are
//! not affected. [`HubConnection::buffered_bytes`] tells what a connection has queued. A
//! WebSocket client that never reads again does not keep its socket: what could not be
//! written within [`TransportOptions::close_timeout`] (5 s) of the close is dropped with it.
//! Served with [`serve`], no client keeps a connection by not reading, whatever its
//! transport: a write that waits [`ServeOptions::write_timeout`] (30 s) without progress
//! drops the connection; nor by sending nothing: a socket without a whole request header
//! within [`ServeOptions::request_header_timeout`] (30 s, on a keep-alive connection from its
//! last response) is closed.

pub mod auth;
mod backlog;
pub mod connection;
mod error;
pub mod hub;
pub mod lifetime;
pub mod observability;
mod options;
mod router;
mod serve;
pub mod transport;

#[cfg(feature = "test-util")]
pub mod testing;

pub use auth::{AuthError, Authenticator, Identity};
pub use connection::{HubConnection, SendError};
pub use error::{HubError, Rejection};
pub use hub::{
    Cancellation, ClientProxy, Clients, Context, FromInvocation, Groups, Handler, Hub, HubBuilder,
    HubClients, HubContext, IntoHubResult, IntoStreamItem, InvocationId, InvocationParts,
    MethodPolicy, SingleClientProxy, State, StreamHandler, UploadStream, UserIdProvider,
};
pub use lifetime::{
    Audience, HubArguments, HubLifetimeManager, LifetimeError, LifetimeHealth,
    MemoryLifetimeManager, SerializedMessage,
};
pub use options::HubOptions;
pub use serve::{ServeOptions, serve, serve_with};
pub use transport::{CorsOptions, TransportOptions};

/// The wire protocol crate, re-exported.
pub use signalr_protocol as protocol;
