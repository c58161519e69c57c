//! Transports: how bytes reach a connection and leave it over HTTP.
//!
//! A transport knows HTTP requests, connection tokens and frames of bytes; it never sees a
//! hub, an invocation or a lifetime manager (the same wall ASP.NET Core keeps between
//! `Http.Connections` and `SignalR.Core`). It hands each new logical connection to a
//! [`ConnectionApp`] as a [`TransportConnection`]: a stream of inbound byte chunks and an
//! [`Outbox`] of outbound frames. The hub layer implements [`ConnectionApp`].
//!
//! - `negotiate`: `POST {path}/negotiate`, creating connection ids and tokens.
//! - `websocket`: `GET {path}` with an upgrade, the full-duplex transport.
//! - `sse`: `GET {path}` with `Accept: text/event-stream`, the Server-Sent Events receive half.
//! - `long_polling`: the other `GET {path}` requests, the long-polling receive half, and
//!   `DELETE {path}` that ends such a connection.
//! - `endpoint`: the axum routes of one endpoint: dispatch by method and headers, status
//!   codes, authentication, `POST {path}` (the send half of SSE and long polling), and the
//!   housekeeping that reaps inactive connections.
//! - `connections`: the table of negotiated connections by token, with their pipes.
//! - `cors`: cross-origin headers and preflights.
//! - `lifecycle`: what every endpoint of one hub shares: counts, limits, metrics, shutdown.
//! - `admission`: the hub's connection counts and the limits that refuse more.
//! - `telemetry`: the transports' metrics (bytes, messages out, refusals).

pub(crate) mod admission;
pub(crate) mod connections;
pub(crate) mod cors;
pub(crate) mod endpoint;
mod gather;
mod inbound;
pub(crate) mod lifecycle;
pub(crate) mod long_polling;
pub(crate) mod negotiate;
mod outbox;
mod read_ahead;
mod run;
mod spares;
pub(crate) mod sse;
pub(crate) mod telemetry;
pub(crate) mod websocket;
mod ws_writer;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthOptions, Identity};
pub use cors::{AllowedOrigins, CorsOptions};
pub use inbound::InboundReceiver;
pub use outbox::{Batch, Outbox, Payload, PushError, SequenceEncoder};
pub(crate) use run::FrameRun;
pub use signalr_protocol::{TransferFormat, TransportType};

/// Why a transport ended abnormally (passed to the application as the last inbound item).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The client sent a single transport frame larger than the transport accepts.
    #[error("The maximum message size of {max}B was exceeded.")]
    MessageTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The client sent a request body (a send of SSE or long polling) larger than the
    /// transport accepts.
    #[error("The request body exceeded the maximum size of {max} bytes.")]
    BodyTooLarge {
        /// The limit, in bytes.
        max: usize,
    },
    /// The underlying connection failed.
    #[error("transport failed: {0}")]
    Io(String),
}

/// What a transport hands the application, in order.
#[derive(Debug)]
pub enum Inbound {
    /// Bytes from the client. Chunk boundaries carry no meaning.
    Data(Bytes),
    /// The client's transport was replaced (stateful reconnect): bytes of a message the old
    /// transport cut off are void; the client starts again with a Sequence message.
    Resumed,
    /// The transport failed; nothing follows.
    Failed(TransportError),
}

/// One logical connection, as the transport hands it to the application.
#[derive(Debug)]
pub struct TransportConnection {
    /// Public id of the connection (`connectionId` in negotiate).
    pub connection_id: Arc<str>,
    /// The HTTP request that opened the connection (the WebSocket upgrade request, or the
    /// first request of the other transports): headers, URI with its query, extensions.
    pub request: Arc<http::request::Parts>,
    /// Which transport carries the connection.
    pub transport: TransportType,
    /// What the client sends, in arrival order. Ends when the connection is gone.
    pub inbound: InboundReceiver,
    /// The client negotiated stateful reconnect: the connection may outlive a WebSocket if
    /// the application turns replay on (`Outbox::enable_replay`) at the handshake.
    pub stateful: bool,
    /// Outbound frames. Closing it ends the transport once the queue is written.
    pub outbox: Arc<Outbox>,
    /// Who opened the connection, as the endpoint's authenticator established it from the
    /// request that started it (`None`: anonymous, or no authenticator).
    pub identity: Option<Arc<Identity>>,
    /// Cancelled when the server shuts down: the application should say goodbye (a Close
    /// message that allows reconnecting) and close its outbox.
    pub shutdown: CancellationToken,
}

impl TransportConnection {
    /// Whether the transport can carry binary frames (MessagePack).
    pub fn supports(&self, format: TransferFormat) -> bool {
        match self.transport {
            TransportType::ServerSentEvents => format == TransferFormat::Text,
            TransportType::WebSockets | TransportType::LongPolling => true,
        }
    }
}

/// What runs a connection once a transport has accepted it. Implemented by the hub layer.
pub trait ConnectionApp: Send + Sync + 'static {
    /// Run the connection to its end. Spawned as its own task by the transport.
    fn run(self: Arc<Self>, connection: TransportConnection) -> BoxFuture<'static, ()>;
}

/// Transport settings of one endpoint: which transports, their timeouts and buffers, and
/// the HTTP edge (authentication, CORS). Defaults follow ASP.NET Core.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Transports offered in negotiate, in preference order (the JS client tries them in
    /// this order). A transport not listed is refused with 404. Default: WebSockets,
    /// ServerSentEvents, LongPolling.
    pub transports: Vec<TransportType>,
    /// How long a connection may stay without a transport request before it is disposed:
    /// a negotiated connection never used, or a long-polling client that stopped polling.
    /// Default: 15 s.
    pub disconnect_timeout: Duration,
    /// How long a long poll waits for messages before it is answered empty (the client then
    /// polls again). Must stay below the clients' 100 s request timeout. Default: 90 s.
    pub poll_timeout: Duration,
    /// How long [`Hub::shutdown`](crate::Hub::shutdown) waits for connections to say goodbye
    /// before it drops the rest. Default: 5 s.
    pub shutdown_timeout: Duration,
    /// How long a WebSocket the server is closing may take to get its last messages and its
    /// close frame to the client before the socket is dropped. A client that stopped reading
    /// never takes them: without this bound a slow consumer that was cut off, or any
    /// connection the server ends while its client is not reading, would hold its socket and
    /// the unsent message for as long as the client keeps the TCP connection open. As
    /// ASP.NET Core's `WebSocketOptions.CloseTimeout`. Default: 5 s.
    pub close_timeout: Duration,
    /// Most bytes queued for one connection before it is closed as a slow consumer.
    /// Default: 1 MiB.
    pub max_buffered_bytes: usize,
    /// Most bytes written in one transport write (one WebSocket message, one SSE event; a
    /// long poll takes everything queued). Default: 64 KiB.
    pub max_write_batch_bytes: usize,
    /// Let a WebSocket write of less than a quarter of `max_write_batch_bytes` wait once
    /// for the tasks that are ready to run (at most until the runtime next polls its
    /// sockets), so that what they send to the connection goes out in the same write. Fewer,
    /// larger writes under load: at 10 groups of 1 k receivers, p50 0.1–0.2 s instead of
    /// 0.4–1 s and a higher rate kept up; an idle server adds no measurable latency
    /// (BENCHMARKS.md, W5). Default: true.
    pub coalesce_writes: bool,
    /// Largest WebSocket message accepted from a client. Hub messages may be split across or
    /// batched into WebSocket messages, so this bounds memory, not hub message size (the hub
    /// enforces that). Default: 64 KiB.
    pub max_websocket_message_bytes: usize,
    /// WebSocket read buffer per connection, and the most bytes one read takes from the
    /// socket while its client is not flooding it. Small, because every idle connection
    /// holds one for its whole life: 1 KiB instead of 4 KiB is 3 KB less per idle connection
    /// (measured, BENCHMARKS.md W1). A message larger than the buffer still arrives whole
    /// (the buffer grows to hold it), in several reads. While reads keep filling it, the
    /// connection reads up to 64 KiB at a time into a second buffer, freed once the socket is
    /// drained. Default: 1 KiB.
    pub websocket_read_buffer: usize,
    /// Authentication and authorization of every HTTP request. Default: none (anonymous).
    pub auth: AuthOptions,
    /// Cross-origin requests from browsers. Default: `None`, no CORS headers at all.
    pub cors: Option<CorsOptions>,
    /// Offer stateful reconnect to clients that ask for it (`withStatefulReconnect()`): a
    /// WebSocket that drops without a close is replaced by the client's next one within the
    /// disconnect timeout, and no message is lost or duplicated. Default: false.
    pub allow_stateful_reconnect: bool,
    /// Most unacknowledged bytes held for replay per stateful connection. Default: 100,000.
    pub stateful_reconnect_buffer_size: usize,
    /// Most connections of the hub on this node, counting negotiated connections not used
    /// yet. Over it, negotiate and a WebSocket that skips negotiation are answered `503`.
    /// 0: no limit. Default: 100,000.
    pub max_connections: usize,
    /// Most negotiated connections no transport request has used yet (they are disposed of
    /// after the disconnect timeout). Over it, negotiate answers `503`, so a flood of
    /// negotiate requests cannot grow memory without bound. 0: no limit. Default: 10,000.
    pub max_pending_negotiations: usize,
    /// Largest body of one send (`POST`) of Server-Sent Events or long polling. A larger
    /// one is answered `413` and closes the connection with a reason. 0: no limit.
    /// Default: 1 MiB.
    pub max_request_body_bytes: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            transports: vec![
                TransportType::WebSockets,
                TransportType::ServerSentEvents,
                TransportType::LongPolling,
            ],
            disconnect_timeout: Duration::from_secs(15),
            poll_timeout: Duration::from_secs(90),
            shutdown_timeout: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            max_buffered_bytes: 1024 * 1024,
            max_write_batch_bytes: 64 * 1024,
            coalesce_writes: true,
            max_websocket_message_bytes: 64 * 1024,
            websocket_read_buffer: 1024,
            auth: AuthOptions::default(),
            cors: None,
            allow_stateful_reconnect: false,
            stateful_reconnect_buffer_size: 100_000,
            max_connections: 100_000,
            max_pending_negotiations: 10_000,
            max_request_body_bytes: 1024 * 1024,
        }
    }
}

/// Capacity of the inbound chunk channel: chunks in flight keep the socket reader busy while
/// the application parses, and a full channel pushes back on the client. Full is this many
/// chunks or [`INBOUND_CHANNEL_BYTES`], whichever comes first.
pub(crate) const INBOUND_CHANNEL_CAPACITY: usize = 32;

/// Data bytes in the inbound chunk channel past which it is full: with a chunk being handed
/// over and one being gathered, what one client that floods a busy connection can have the
/// server hold. A flood's chunks then wait here together, and the application handles them
/// as one batch of sends (`connection::run`), so that a flood to many small groups reaches
/// each group several times per batch.
pub(crate) const INBOUND_CHANNEL_BYTES: usize = 1024 * 1024;
