//! The WebSockets transport: `GET {path}?id=TOKEN` with an upgrade.
//!
//! One task per socket owns both halves of the WebSocket and multiplexes three jobs in one
//! `select!`: write whatever the [`Outbox`] has queued as a single WebSocket message, read the
//! next client message, and hand it to the application. A read is only started when the
//! previous chunk was handed over, so a client that floods a busy connection is pushed back on
//! by TCP instead of growing a buffer; writes go on meanwhile.
//!
//! Frame type: text for the JSON protocol, binary for MessagePack (decided at the handshake,
//! which the application signals through [`Outbox::set_binary`]). Client frames of either type
//! are accepted whatever the protocol: the Java client sends JSON in binary frames.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::connections::{ClaimError, new_id};
use super::endpoint::{Endpoint, plain, query_param};
use super::{
    Batch, INBOUND_CHANNEL_CAPACITY, Outbox, TransportConnection, TransportError, TransportType,
};

/// How long to keep reading after sending a close frame, so the client's unread data is
/// consumed and the close frame is not lost to a TCP reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Answer the upgrade: claim the token (or create a connection when negotiation was skipped)
/// and start the socket task.
pub(crate) fn accept(
    endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    upgrade: WebSocketUpgrade,
) -> Response {
    let token = query_param(&parts.uri, "id");
    let connection_id: Arc<str> = match &token {
        Some(token) => match endpoint.connections.claim(token, TransportType::WebSockets) {
            Ok(id) => id,
            Err(ClaimError::NotFound) => {
                return plain(StatusCode::NOT_FOUND, "No Connection with that ID");
            }
            Err(ClaimError::Conflict) => {
                return plain(
                    StatusCode::CONFLICT,
                    "Another WebSocket is already connected with this ID.",
                );
            }
            Err(ClaimError::WrongTransport) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    "Cannot change transports mid-connection",
                );
            }
        },
        // skipNegotiation: the connection starts here, with no token in the table.
        None => new_id().into(),
    };

    let options = &endpoint.options;
    let request = Arc::new(strip(parts));
    let failed_endpoint = endpoint.clone();
    let failed_token = token.clone();
    upgrade
        .read_buffer_size(options.websocket_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(options.max_write_batch_bytes * 4 + 64 * 1024)
        .max_message_size(options.max_websocket_message_bytes)
        .max_frame_size(options.max_websocket_message_bytes)
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, "WebSocket upgrade failed");
            if let Some(token) = failed_token {
                failed_endpoint.connections.remove(&token);
            }
        })
        .on_upgrade(move |socket| async move {
            run(&endpoint, socket, connection_id, request).await;
            if let Some(token) = token {
                endpoint.connections.remove(&token);
            }
        })
}

/// Keep what the application may look at (method, URI, version, headers) and drop the rest
/// (the upgrade machinery in the extensions).
fn strip(parts: http::request::Parts) -> http::request::Parts {
    let mut request = http::Request::new(());
    *request.method_mut() = parts.method;
    *request.uri_mut() = parts.uri;
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers;
    request.into_parts().0
}

async fn run(
    endpoint: &Endpoint,
    mut socket: WebSocket,
    connection_id: Arc<str>,
    request: Arc<http::request::Parts>,
) {
    let options = &endpoint.options;
    let outbox = Arc::new(Outbox::new(options.max_buffered_bytes));
    let (inbound, inbound_rx) = mpsc::channel(INBOUND_CHANNEL_CAPACITY);
    let connection = TransportConnection {
        connection_id,
        request,
        transport: TransportType::WebSockets,
        inbound: inbound_rx,
        outbox: outbox.clone(),
    };
    tokio::spawn(endpoint.app.clone().run(connection));

    let mut batch = BytesMut::new();
    // A chunk read from the socket, waiting for room in the inbound channel.
    let mut pending: Option<Result<Bytes, TransportError>> = None;
    // False once the read side is finished (error): writes continue until the outbox closes.
    let mut reading = true;
    let closed_by_server = loop {
        tokio::select! {
            biased;
            next = outbox.next_batch(&mut batch, options.max_write_batch_bytes) => match next {
                Batch::Frames => {
                    let data = batch.split().freeze();
                    let message = if outbox.is_binary() {
                        Message::Binary(data)
                    } else {
                        match Utf8Bytes::try_from(data) {
                            Ok(text) => Message::Text(text),
                            Err(error) => {
                                tracing::error!(%error, "outbound JSON frame is not UTF-8");
                                break true;
                            }
                        }
                    };
                    if socket.send(message).await.is_err() {
                        break false;
                    }
                }
                Batch::Closed => break true,
            },
            permit = inbound.reserve(), if pending.is_some() => match permit {
                Ok(permit) => {
                    if let Some(chunk) = pending.take() {
                        permit.send(chunk);
                    }
                }
                // The application ended; it closes the outbox, which ends this loop.
                Err(_) => pending = None,
            },
            message = socket.recv(), if pending.is_none() && reading => match message {
                Some(Ok(Message::Text(text))) => pending = Some(Ok(Bytes::from(text))),
                Some(Ok(Message::Binary(data))) => pending = Some(Ok(data)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | None => break false,
                Some(Err(error)) => {
                    let error = transport_error(&error, options.max_websocket_message_bytes);
                    tracing::debug!(%error, "WebSocket read failed");
                    // Let the application say why in a Close message; the write side stays
                    // up until it has.
                    pending = Some(Err(error));
                    reading = false;
                }
            },
        }
    };
    drop(inbound);

    if closed_by_server {
        let close = Message::Close(Some(CloseFrame {
            code: 1000,
            reason: Utf8Bytes::default(),
        }));
        if socket.send(close).await.is_ok() && reading {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = socket.recv().await {}
            })
            .await;
        }
    }
    // Nobody will write what is still queued; later pushes fail fast.
    outbox.abandon();
}

fn transport_error(error: &axum::Error, max: usize) -> TransportError {
    let text = error.to_string();
    // tungstenite reports an oversize message as a capacity error ("Space limit exceeded").
    if text.contains("Space limit exceeded") || text.to_ascii_lowercase().contains("too long") {
        TransportError::MessageTooLarge { max }
    } else {
        TransportError::Io(text)
    }
}
