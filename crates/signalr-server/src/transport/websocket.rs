//! The WebSockets transport: `GET {path}?id=TOKEN` with an upgrade.
//!
//! One task per socket owns both halves of the WebSocket and multiplexes three jobs in one
//! `select!`: write whatever the [`Outbox`] has queued as a single WebSocket message, read
//! client messages, and hand them to the application. Messages that can be read without
//! waiting are gathered into one chunk of at most [`MAX_GATHERED_BYTES`] before the hand-over,
//! and so are messages read while the application is behind (its inbound queue full); past
//! that size no read is started, so a client that floods a busy connection is pushed back on
//! by TCP instead of growing a buffer; writes go on meanwhile.
//! Gathering matters for throughput: each hand-over costs the application a turn of the
//! scheduler, and a sender whose messages wait for turns behind the connections its messages
//! woke never gets ahead of them far enough for their writes to batch; its messages wait in
//! the kernel instead of in the outboxes.
//!
//! Frame type: text for the JSON protocol, binary for MessagePack (decided at the handshake,
//! which the application signals through [`Outbox::set_binary`]). Client frames of either type
//! are accepted whatever the protocol: the Java client sends JSON in binary frames.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use bytes::{Bytes, BytesMut};

use super::admission::Ticket;
use super::connections::new_id;
use super::endpoint::{ApplicationStart, Endpoint, Refusal, query_param};
use super::inbound::{self, InboundSender};
use super::{INBOUND_CHANNEL_CAPACITY, Inbound, Outbox, TransportError, TransportType, Write};
use crate::auth::Identity;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long to keep reading after sending a close frame, so the client's unread data is
/// consumed and the close frame is not lost to a TCP reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Most bytes gathered into one chunk while the application is behind (one message larger
/// than this still goes whole).
const MAX_GATHERED_BYTES: usize = 64 * 1024;

/// Client data read but not yet handed to the application.
enum Held {
    One(Bytes),
    Many(BytesMut),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::One(data) => data.len(),
            Held::Many(data) => data.len(),
        }
    }

    fn append(held: Option<Held>, data: Bytes) -> Held {
        match held {
            None => Held::One(data),
            Some(Held::One(first)) => {
                let mut gathered = BytesMut::with_capacity(first.len() + data.len());
                gathered.extend_from_slice(&first);
                gathered.extend_from_slice(&data);
                Held::Many(gathered)
            }
            Some(Held::Many(mut gathered)) => {
                gathered.extend_from_slice(&data);
                Held::Many(gathered)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Held::One(data) => data,
            Held::Many(data) => data.freeze(),
        }
    }
}

/// Answer the upgrade: activate the negotiated connection (or create one when negotiation
/// was skipped), start its application if this is its first transport request, and start
/// the socket task.
pub(crate) fn accept(
    endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    upgrade: WebSocketUpgrade,
    identity: Option<Arc<Identity>>,
) -> Result<Response, Refusal> {
    let token = query_param(&parts.uri, "id");
    let mut socket = None;
    let (connection_id, inbound, application, outbox, stateful, ticket) = match &token {
        Some(_) => {
            let entry = endpoint.lookup(&parts)?;
            // A stateful client's new socket takes over from one the server still thinks
            // is alive (ASP.NET Core cancels the old one rather than answering 409).
            let takeover = entry.stateful && entry.outbox.replay_enabled();
            let (activation, number, let_go) = entry
                .activate_socket(takeover)
                .map_err(|error| Refusal::Claim(error, TransportType::WebSockets))?;
            socket = Some((entry.clone(), number, let_go));
            (
                entry.connection_id.clone(),
                activation.inbound,
                activation.application,
                entry.outbox.clone(),
                entry.stateful,
                activation.ticket.map(Ticket::started),
            )
        }
        // skipNegotiation: the connection starts here, with no token in the table, if the
        // hub has room for it.
        None => {
            let ticket = endpoint
                .lifecycle
                .admission
                .connection()
                .map_err(|(limit, max)| Refusal::Limit(limit, max))?;
            let (inbound, application) = inbound::channel(INBOUND_CHANNEL_CAPACITY);
            let outbox = Arc::new(Outbox::new(endpoint.options.max_buffered_bytes));
            (
                new_id().into(),
                inbound,
                Some(application),
                outbox,
                false,
                Some(ticket),
            )
        }
    };
    if application.is_some() && endpoint.lifecycle.is_shutting_down() {
        if let Some(token) = &token {
            endpoint.connections.dispose(token);
        }
        return Err(Refusal::ShuttingDown);
    }

    let options = &endpoint.options;
    // The socket's own task (reads, writes) logs under the connection's id too.
    let span = tracing::info_span!(
        "connection",
        connection_id = %connection_id,
        transport = TransportType::WebSockets.name(),
    );
    // The application starts now rather than in the socket's task, so the task does not
    // carry the request and identity for the connection's whole life (measured: every byte
    // of a task is paid by every idle connection). If the upgrade fails, the inbound queue's
    // sender goes with it and the application ends.
    let resume = application.is_none() && outbox.replay_enabled();
    if let Some(application) = application {
        endpoint.start_application(ApplicationStart {
            connection_id: connection_id.clone(),
            request: parts,
            transport: TransportType::WebSockets,
            inbound: application,
            outbox: outbox.clone(),
            identity,
            stateful,
            ticket,
        });
    }
    let failed_endpoint = endpoint.clone();
    let failed_token = token.clone();
    Ok(upgrade
        .read_buffer_size(options.websocket_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(options.max_write_batch_bytes * 4 + 64 * 1024)
        .max_message_size(options.max_websocket_message_bytes)
        .max_frame_size(options.max_websocket_message_bytes)
        .on_failed_upgrade(move |error| {
            tracing::debug!(%error, "WebSocket upgrade failed");
            if let Some(token) = failed_token {
                failed_endpoint.connections.dispose(&token);
            }
        })
        .on_upgrade(move |mut ws| {
            async move {
                if resume {
                    // A stateful reconnect: the application drops what the old socket cut off
                    // and waits for the client's Sequence; the outbox replays what the client
                    // has not acknowledged.
                    if inbound.send(Inbound::Resumed).await.is_ok() {
                        outbox.resume();
                    }
                    tracing::debug!(%connection_id, "WebSocket resumed a stateful connection");
                }
                let let_go = socket
                    .as_ref()
                    .map(|(_, _, let_go)| let_go.clone())
                    .unwrap_or_default();
                let ended = run(&endpoint, &mut ws, inbound, &outbox, &let_go, stateful).await;
                match (token, socket) {
                    (Some(token), Some((entry, number, _))) => {
                        // A socket that dropped without a close keeps a replaying connection
                        // alive for the client's next socket.
                        let keep = matches!(ended, Ended::Dropped | Ended::TakenOver)
                            && outbox.replay_enabled();
                        if !entry.socket_ended(number, keep) {
                            endpoint.connections.dispose(&token);
                        }
                    }
                    (Some(token), None) => endpoint.connections.dispose(&token),
                    // Nobody will write what is still queued; later pushes fail fast.
                    (None, _) => outbox.abandon(),
                }
            }
            .instrument(span)
        }))
}

/// How a socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// The application closed the outbox; a close frame was sent.
    ClosedByServer,
    /// The client sent a close frame.
    ClosedByClient,
    /// The socket failed or ended without a close frame.
    Dropped,
    /// A newer socket of the same stateful connection took over.
    TakenOver,
}

async fn run(
    endpoint: &Endpoint,
    socket: &mut WebSocket,
    inbound: InboundSender,
    outbox: &Outbox,
    let_go: &CancellationToken,
    stateful: bool,
) -> Ended {
    let options = &endpoint.options;
    let metrics = &endpoint.lifecycle.metrics;
    let mut batch = BytesMut::new();
    // Data read from the socket, waiting for room in the inbound channel; then, once reading
    // failed, the failure.
    let mut held: Option<Held> = None;
    let mut failure: Option<TransportError> = None;
    // False once the read side is finished (error): writes continue until the outbox closes.
    let mut reading = true;
    let ended = loop {
        tokio::select! {
            biased;
            // Only a stateful connection's socket can be taken over (`activate_socket`). The
            // branch is off for the others: polling it asks the token, which locks, on every
            // turn of the loop. (Made here, not pinned once outside the loop: held for the
            // socket's life, the future costs every idle connection ≈90 bytes.)
            () = let_go.cancelled(), if stateful => break Ended::TakenOver,
            next = outbox.next_write(&mut batch, options.max_write_batch_bytes) => match next {
                Write::Bytes { data, frames } => {
                    metrics.sent(TransportType::WebSockets, data.len(), frames);
                    // Several frames were copied into `batch`'s buffer. tungstenite copies them
                    // again and lets go, so the buffer can serve the next batch while frames
                    // keep coming: a fresh one per write (up to `max_write_batch_bytes`) made
                    // the allocator hand pages back and fault them in again, a quarter of the
                    // server's time at W5 saturation. An idle connection keeps none.
                    let reusable = (frames > 1).then(|| data.clone());
                    let message = if outbox.is_binary() {
                        Message::Binary(data)
                    } else {
                        match Utf8Bytes::try_from(data) {
                            Ok(text) => Message::Text(text),
                            Err(error) => {
                                tracing::error!(%error, "outbound JSON frame is not UTF-8");
                                break Ended::ClosedByServer;
                            }
                        }
                    };
                    if socket.send(message).await.is_err() {
                        break Ended::Dropped;
                    }
                    if outbox.buffered_bytes() == 0 {
                        // Drained: a buffer kept from a burst would stay with the connection
                        // for as long as single frames follow (they are written without it).
                        batch = BytesMut::new();
                    } else if let Some(used) = reusable
                        && let Ok(mut buffer) = used.try_into_mut()
                    {
                        buffer.clear();
                        batch = buffer;
                    }
                }
                Write::Closed => break Ended::ClosedByServer,
            },
            message = socket.recv(),
                if reading && held.as_ref().is_none_or(|h| h.len() < MAX_GATHERED_BYTES) =>
            match message {
                Some(Ok(Message::Text(text))) => {
                    metrics.received(TransportType::WebSockets, text.len());
                    held = Some(Held::append(held.take(), Bytes::from(text)));
                }
                Some(Ok(Message::Binary(data))) => {
                    metrics.received(TransportType::WebSockets, data.len());
                    held = Some(Held::append(held.take(), data));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) => break Ended::ClosedByClient,
                None => break Ended::Dropped,
                Some(Err(error)) => {
                    let error = transport_error(&error, options.max_websocket_message_bytes);
                    tracing::debug!(%error, "WebSocket read failed");
                    if matches!(error, TransportError::Io(_)) && outbox.replay_enabled() {
                        // The client will be back with a new socket.
                        break Ended::Dropped;
                    }
                    // Let the application say why in a Close message (after the data read
                    // before); the write side stays up until it has.
                    failure = Some(error);
                    reading = false;
                }
            },
            permit = inbound.reserve(), if held.is_some() || failure.is_some() => match permit {
                Ok(permit) => {
                    if let Some(data) = held.take() {
                        permit.send(Inbound::Data(data.into_bytes()));
                    } else if let Some(error) = failure.take() {
                        permit.send(Inbound::Failed(error));
                    }
                }
                // The application ended; it closes the outbox, which ends this loop.
                Err(_) => {
                    held = None;
                    failure = None;
                }
            },
        }
    };
    // What the client sent before it closed still counts: hand over what was read ahead
    // (bounded, in case the application stopped reading).
    if let (Some(data), Ended::ClosedByClient | Ended::Dropped) = (held.take(), ended) {
        let _ = tokio::time::timeout(CLOSE_LINGER, inbound.send(Inbound::Data(data.into_bytes())))
            .await;
    }
    drop(inbound);

    if ended == Ended::ClosedByServer {
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
    ended
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
