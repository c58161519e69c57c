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
//!
//! The upgrade is answered here rather than by axum's extractor, because the socket task
//! needs the socket itself: data messages are written straight to it ([`MessageWriter`]),
//! while tungstenite reads and answers control frames.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::{Sink, Stream};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::admission::Ticket;
use super::connections::new_id;
use super::endpoint::{ApplicationStart, Endpoint, Refusal, query_param};
use super::gather::{Held, MAX_GATHERED_BYTES};
use super::inbound::{self, InboundSender};
use super::read_ahead::ReadAhead;
use super::telemetry::TransportMetrics;
use super::ws_writer::MessageWriter;
use super::{Batch, Inbound, Outbox, TransportError, TransportType};
use crate::auth::Identity;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// The socket as the transport holds it: tungstenite over the upgraded HTTP connection.
type Socket = WebSocketStream<ReadAhead<TokioIo<Upgraded>>>;

/// How long to keep reading after sending a close frame, so the client's unread data is
/// consumed and the close frame is not lost to a TCP reset.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// A valid WebSocket upgrade request (RFC 6455 §4.2.1), not yet answered.
pub(crate) struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl Upgrade {
    /// Checks the upgrade request's headers; a request that is not a valid upgrade gets the
    /// status and text that say why.
    pub(crate) fn from_parts(
        parts: &mut http::request::Parts,
    ) -> Result<Upgrade, (StatusCode, &'static str)> {
        let refuse = |status: StatusCode, text: &'static str| Err((status, text));
        if parts.method != Method::GET {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "A WebSocket upgrade must be a GET",
            );
        }
        let has_token = |name: header::HeaderName, token: &str| {
            parts.headers.get_all(name).iter().any(|value| {
                value
                    .to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has_token(header::CONNECTION, "upgrade") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            );
        }
        if !has_token(header::UPGRADE, "websocket") {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            );
        }
        if parts
            .headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(HeaderValue::as_bytes)
            != Some(b"13")
        {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            );
        }
        let Some(key) = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return refuse(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            );
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return refuse(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            );
        };
        Ok(Upgrade { key, on_upgrade })
    }

    /// Answers `101 Switching Protocols` and runs `socket` with the WebSocket once the HTTP
    /// connection is handed over (`failed` if it never is).
    fn on_upgrade<F, Fut>(
        self,
        config: WebSocketConfig,
        socket: F,
        failed: impl FnOnce(hyper::Error) + Send + 'static,
    ) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let stream = WebSocketStream::from_raw_socket(
                        ReadAhead::new(TokioIo::new(upgraded)),
                        Role::Server,
                        Some(config),
                    )
                    .await;
                    socket(stream).await;
                }
                Err(error) => failed(error),
            }
        });
        let accept = derive_accept_key(self.key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}

/// Answer the upgrade: activate the negotiated connection (or create one when negotiation
/// was skipped), start its application if this is its first transport request, and start
/// the socket task.
pub(crate) fn accept(
    endpoint: Arc<Endpoint>,
    parts: http::request::Parts,
    upgrade: Upgrade,
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
            let (inbound, application) = inbound::for_connection();
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
    // Data messages bypass tungstenite's write buffer (`MessageWriter`); it only ever holds
    // a control frame, written at once.
    let config = WebSocketConfig::default()
        .read_buffer_size(options.websocket_read_buffer)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(options.max_websocket_message_bytes))
        .max_frame_size(Some(options.max_websocket_message_bytes));
    let failed = move |error: hyper::Error| {
        tracing::debug!(%error, "WebSocket upgrade failed");
        if let Some(token) = failed_token {
            failed_endpoint.connections.dispose(&token);
        }
    };
    Ok(upgrade.on_upgrade(
        config,
        move |mut ws| {
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
        },
        failed,
    ))
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
    /// The server was closing the connection and the client did not take its last messages
    /// within [`TransportOptions::close_timeout`](super::TransportOptions::close_timeout).
    Stalled,
}

/// What the socket did, as [`Writing::poll`] reports it.
enum Event {
    /// A data message was completely written.
    Wrote,
    /// Writing failed: the socket is gone.
    WriteFailed,
    /// The outbox is closed and everything in it was written.
    Drained,
    /// What tungstenite read.
    Read(Option<Result<Message, WsError>>),
    /// The outbox closed while a write waited for the client (reported once).
    Closing,
}

/// The socket task's write side: the message being written, and whether tungstenite may
/// hold a control reply to flush before the next one.
#[derive(Default)]
struct Writing {
    writer: MessageWriter,
    control_pending: bool,
    /// [`Event::Closing`] was reported.
    closing: bool,
    coalesce: Coalesce,
}

/// Holding a short write back once, so that what the running tasks are about to queue goes
/// out in the same write.
///
/// A writer woken by a push would write at once, usually one or two messages: the task that
/// pushed is still working through the chunk of invocations it read, and the tasks after it
/// will push to this connection again. On the benchmark machine a loopback write costs the
/// server 2–10 µs, so at 10 groups of 1 k most of its time went into writes of a message or
/// two and the latency grew until the queues were long enough to batch (p50 0.4–1 s at
/// 6–10 k msg/s). Instead a writer that finds less than a quarter batch queued yields once, to the
/// back of the runtime's queue, after its next poll of the sockets (`yield_now`): the tasks
/// that are ready run first, and their pushes join this write. An idle server gets
/// straight back to the writer, so low rates see no added latency (W2 at 20–3 k msg/s:
/// same p50 and p99 either way). When holding gained nothing (no frame arrived meanwhile:
/// a connection that is sent rarely, as in 1 k groups of 10), the writer does not hold again
/// for its next [`Coalesce::SKIP_AFTER_MISS`] writes, so such connections pay one extra poll
/// in that many. BENCHMARKS.md, W5.
#[derive(Debug, Default)]
struct Coalesce {
    /// [`TransportOptions::coalesce_writes`](super::TransportOptions::coalesce_writes).
    enabled: bool,
    /// Messages queued when the write was held back.
    held: Option<usize>,
    /// Writes to go before holding again.
    skip: u8,
}

impl Coalesce {
    const SKIP_AFTER_MISS: u8 = 32;

    /// Whether to hold the write back now (then the task is woken again after the runtime's
    /// next I/O poll). Never twice in a row.
    fn hold(&mut self, cx: &mut Context<'_>, outbox: &Outbox, max_batch: usize) -> bool {
        if !self.enabled || self.held.is_some() || self.skip > 0 || !outbox.may_have_work() {
            return false;
        }
        let (bytes, messages) = outbox.queued();
        if bytes == 0 || bytes >= max_batch / 4 {
            return false;
        }
        self.held = Some(messages);
        // A `yield_now` polled once hands the waker to the scheduler, which wakes the task
        // after the ready tasks and the I/O driver have run; dropped, it leaves that as is.
        let yielded = std::pin::pin!(tokio::task::yield_now()).poll(cx);
        debug_assert!(yielded.is_pending());
        true
    }

    /// A write of `messages` was taken.
    fn wrote(&mut self, messages: usize) {
        match self.held.take() {
            Some(before) if messages <= before => self.skip = Self::SKIP_AFTER_MISS,
            Some(_) => {}
            None => self.skip = self.skip.saturating_sub(1),
        }
    }
}

impl Writing {
    /// Drives the socket: writes what the outbox holds (a message at a time, each as many
    /// frames as were queued, up to `max_batch` bytes), and reads when `read` allows and no
    /// message is half written.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        socket: &mut Socket,
        outbox: &Outbox,
        metrics: &TransportMetrics,
        max_batch: usize,
        read: bool,
    ) -> Poll<Event> {
        if !self.writer.is_writing() {
            // A control reply tungstenite queued while reading goes out before the next
            // message.
            let flushed = !self.control_pending
                || match Pin::new(&mut *socket).poll_flush(cx) {
                    Poll::Ready(Ok(())) => true,
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::WriteFailed),
                    Poll::Pending => {
                        if self.poll_closing(cx, outbox) {
                            return Poll::Ready(Event::Closing);
                        }
                        false
                    }
                };
            if flushed {
                self.control_pending = false;
                if !self.coalesce.hold(cx, outbox, max_batch) {
                    match outbox.poll_payload(cx, self.writer.payload_mut(), max_batch) {
                        Poll::Ready((Batch::Frames, frames)) => {
                            self.coalesce.wrote(frames);
                            let bytes = self.writer.start(outbox.is_binary());
                            metrics.sent(TransportType::WebSockets, bytes, frames);
                        }
                        Poll::Ready((Batch::Closed, _)) => return Poll::Ready(Event::Drained),
                        Poll::Pending => {}
                    }
                }
            }
        }
        if self.writer.is_writing() {
            return match self.writer.poll_write(socket.get_mut(), cx) {
                Poll::Ready(Ok(())) => {
                    if outbox.buffered_bytes() == 0 {
                        // Drained: a buffer kept from a burst would stay with the connection.
                        self.writer.release();
                    }
                    Poll::Ready(Event::Wrote)
                }
                Poll::Ready(Err(error)) => {
                    tracing::debug!(%error, "WebSocket write failed");
                    Poll::Ready(Event::WriteFailed)
                }
                // Not reading meanwhile: tungstenite's read could write a reply into the
                // message.
                Poll::Pending if self.poll_closing(cx, outbox) => Poll::Ready(Event::Closing),
                Poll::Pending => Poll::Pending,
            };
        }
        if read {
            let read = Pin::new(socket).poll_next(cx);
            // Tungstenite queues a reply (a Pong, a Close) only when it reads a Ping or a
            // Close; after a data message there is nothing to flush, and asking costs two
            // waker registrations per message read.
            self.control_pending |= matches!(
                read,
                Poll::Ready(Some(Ok(Message::Ping(_) | Message::Close(_))))
            );
            return read.map(Event::Read);
        }
        Poll::Pending
    }

    /// While a write waits for the client: whether the outbox has just closed. Once it has,
    /// the client has [`TransportOptions::close_timeout`](super::TransportOptions::close_timeout)
    /// to take the rest; one that stopped reading would otherwise keep this task waiting as
    /// long as it keeps the TCP connection open. Asked only of a stuck write, so a write that
    /// completes costs nothing more.
    fn poll_closing(&mut self, cx: &mut Context<'_>, outbox: &Outbox) -> bool {
        if self.closing || outbox.poll_closed(cx).is_pending() {
            return false;
        }
        self.closing = true;
        true
    }
}

/// Ready when the close deadline, once set, has passed.
fn poll_deadline(
    deadline: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    match deadline {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

async fn run(
    endpoint: &Endpoint,
    socket: &mut Socket,
    inbound: InboundSender,
    outbox: &Outbox,
    let_go: &CancellationToken,
    stateful: bool,
) -> Ended {
    let options = &endpoint.options;
    let metrics = &endpoint.lifecycle.metrics;
    let mut writing = Writing::default();
    writing.coalesce.enabled = options.coalesce_writes;
    // Data read from the socket, waiting for room in the inbound channel; then, once reading
    // failed, the failure.
    let mut held: Option<Held> = None;
    let mut failure: Option<TransportError> = None;
    // False once the read side is finished (error): writes continue until the outbox closes.
    let mut reading = true;
    // Set when the server is closing and a write is waiting for the client; boxed because
    // most sockets never need it and every byte of this future is held per connection.
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let ended = loop {
        let read = reading && held.as_ref().is_none_or(|h| h.len() < MAX_GATHERED_BYTES);
        tokio::select! {
            biased;
            // Only a stateful connection's socket can be taken over (`activate_socket`). The
            // branch is off for the others: polling it asks the token, which locks, on every
            // turn of the loop. (Made here, not pinned once outside the loop: held for the
            // socket's life, the future costs every idle connection ≈90 bytes.)
            () = let_go.cancelled(), if stateful => break Ended::TakenOver,
            () = poll_fn(|cx| poll_deadline(&mut deadline, cx)), if deadline.is_some() => {
                tracing::debug!(
                    timeout = ?options.close_timeout,
                    "the client did not take its last messages within the close timeout; dropping the socket"
                );
                break Ended::Stalled;
            }
            event = poll_fn(|cx| writing.poll(
                cx,
                socket,
                outbox,
                metrics,
                options.max_write_batch_bytes,
                read,
            )) => match event {
                Event::Wrote => {}
                Event::Closing => {
                    deadline = Some(Box::pin(tokio::time::sleep(options.close_timeout)));
                }
                Event::WriteFailed => break Ended::Dropped,
                Event::Drained => break Ended::ClosedByServer,
                Event::Read(Some(Ok(Message::Text(text)))) => {
                    metrics.received(TransportType::WebSockets, text.len());
                    held = Some(Held::append(held.take(), Bytes::from(text)));
                }
                Event::Read(Some(Ok(Message::Binary(data)))) => {
                    metrics.received(TransportType::WebSockets, data.len());
                    held = Some(Held::append(held.take(), data));
                }
                Event::Read(Some(Ok(
                    Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
                ))) => {}
                Event::Read(Some(Ok(Message::Close(_)))) => break Ended::ClosedByClient,
                Event::Read(None) => break Ended::Dropped,
                Event::Read(Some(Err(error))) => {
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
        use futures::{SinkExt, StreamExt};
        let close = Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: Utf8Bytes::default(),
        }));
        // Bounded like the rest of the close: a client that stopped reading never takes it.
        let sent = match deadline {
            Some(deadline) => {
                tokio::time::timeout_at(deadline.deadline(), socket.send(close)).await
            }
            None => tokio::time::timeout(options.close_timeout, socket.send(close)).await,
        };
        if matches!(sent, Ok(Ok(()))) && reading {
            let _ = tokio::time::timeout(CLOSE_LINGER, async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
    }
    ended
}

fn transport_error(error: &WsError, max: usize) -> TransportError {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            TransportError::MessageTooLarge { max }
        }
        error => TransportError::Io(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_write_is_held_once_and_not_again_for_a_while_when_holding_gained_nothing() {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let outbox = Outbox::new(1 << 20);
        let mut coalesce = Coalesce {
            enabled: true,
            ..Coalesce::default()
        };
        // Nothing queued: nothing to hold.
        assert!(!coalesce.hold(&mut cx, &outbox, 64));
        outbox.push(Bytes::from_static(b"0123456789")).unwrap();
        assert!(coalesce.hold(&mut cx, &outbox, 64));
        // Never twice in a row.
        assert!(!coalesce.hold(&mut cx, &outbox, 64));
        // Something arrived while held: holding stays on.
        outbox.push(Bytes::from_static(b"x")).unwrap();
        coalesce.wrote(2);
        assert!(coalesce.hold(&mut cx, &outbox, 64));
        // Nothing arrived while held: the next writes go at once.
        coalesce.wrote(2);
        for _ in 0..Coalesce::SKIP_AFTER_MISS {
            assert!(!coalesce.hold(&mut cx, &outbox, 64));
            coalesce.wrote(2);
        }
        assert!(coalesce.hold(&mut cx, &outbox, 64));
        coalesce.wrote(3);
        // A quarter of a batch or more goes at once; so does everything when disabled.
        assert!(!coalesce.hold(&mut cx, &outbox, 44));
        coalesce.enabled = false;
        assert!(!coalesce.hold(&mut cx, &outbox, 64));
    }
}
