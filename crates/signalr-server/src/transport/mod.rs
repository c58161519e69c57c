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
//! - `connections`: the table of negotiated connections by token.
//! - `endpoint`: the axum routes of one endpoint and their housekeeping.

pub(crate) mod connections;
pub(crate) mod endpoint;
pub(crate) mod negotiate;
mod outbox;
pub(crate) mod websocket;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

pub use outbox::{Batch, Outbox, PushError};
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
    /// The underlying connection failed.
    #[error("transport failed: {0}")]
    Io(String),
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
    /// Inbound bytes in arrival order; chunk boundaries carry no meaning. Ends when the
    /// transport is gone; an `Err` item says why it ended abnormally.
    pub inbound: mpsc::Receiver<Result<Bytes, TransportError>>,
    /// Outbound frames. Closing it ends the transport once the queue is written.
    pub outbox: Arc<Outbox>,
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

/// Transport settings of one endpoint. Defaults follow ASP.NET Core.
#[derive(Debug, Clone)]
pub struct TransportOptions {
    /// Transports offered in negotiate, in preference order. Default: WebSockets.
    pub transports: Vec<TransportType>,
    /// How long a negotiated connection may wait for its transport before it is discarded.
    /// Default: 15 s.
    pub disconnect_timeout: Duration,
    /// Most bytes queued for one connection before it is closed as a slow consumer.
    /// Default: 1 MiB.
    pub max_buffered_bytes: usize,
    /// Most bytes written in one transport write (one WebSocket message). Default: 64 KiB.
    pub max_write_batch_bytes: usize,
    /// Largest WebSocket message accepted from a client. Hub messages may be split across or
    /// batched into WebSocket messages, so this bounds memory, not hub message size (the hub
    /// enforces that). Default: 64 KiB.
    pub max_websocket_message_bytes: usize,
    /// WebSocket read buffer per connection. Small, because it is allocated for every idle
    /// connection. Default: 4 KiB.
    pub websocket_read_buffer: usize,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            transports: vec![TransportType::WebSockets],
            disconnect_timeout: Duration::from_secs(15),
            max_buffered_bytes: 1024 * 1024,
            max_write_batch_bytes: 64 * 1024,
            max_websocket_message_bytes: 64 * 1024,
            websocket_read_buffer: 4 * 1024,
        }
    }
}

/// Capacity of the inbound chunk channel: a few chunks in flight keep the socket reader busy
/// while the application parses, and a full channel pushes back on the client.
pub(crate) const INBOUND_CHANNEL_CAPACITY: usize = 8;
