//! The raw baseline: how fast a naive-but-good Rust broadcast server is on this machine.
//!
//! axum + tungstenite with 4 KiB buffers and a tokio `broadcast` channel of frames per hub
//! protocol. Each socket task takes everything queued for it, `feed`s it frame by frame and
//! flushes once: the batched design of performance.md §2. It speaks just enough SignalR for
//! the same load generator to drive it: `POST /hub/negotiate` (a fixed-shape answer),
//! the handshake (`{}` whatever was asked), and every invocation a client sends is re-framed
//! as `m(arguments…)` and broadcast to every connection, in both hub protocols. No hubs, no
//! groups, no pings, no slow-consumer policy: a socket that falls behind the channel skips
//! messages, and the skipped count is reported by `GET /stats` (the load generator counts
//! them as lost).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use signalr_protocol::{Arguments, HandshakeRequest, HubMessage, Invocation, Protocol};
use tokio::sync::broadcast;

/// Shared state of the baseline server.
#[derive(Debug)]
struct Raw {
    /// Frames for JSON connections.
    json: broadcast::Sender<Bytes>,
    /// Frames for MessagePack connections.
    messagepack: broadcast::Sender<Bytes>,
    /// Source of connection ids.
    next_id: AtomicU64,
    /// Messages sockets skipped because they fell behind the channel.
    lagged: AtomicU64,
    /// Connections past the handshake, still open.
    connections: AtomicU64,
}

/// The baseline application: `/hub/negotiate`, `/hub`, `/stats`. `capacity` is the length of
/// the broadcast channels (frames a socket may fall behind before it skips).
pub fn app(capacity: usize) -> Router {
    let state = Arc::new(Raw {
        json: broadcast::channel(capacity).0,
        messagepack: broadcast::channel(capacity).0,
        next_id: AtomicU64::new(1),
        lagged: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });
    Router::new()
        .route("/hub/negotiate", post(negotiate))
        .route("/hub", get(upgrade))
        .route("/stats", get(stats))
        .with_state(state)
}

async fn negotiate(State(state): State<Arc<Raw>>) -> Response {
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let body = format!(
        concat!(
            r#"{{"negotiateVersion":1,"connectionId":"c{id}","connectionToken":"t{id}","#,
            r#""availableTransports":[{{"transport":"WebSockets","transferFormats":["Text","Binary"]}}]}}"#
        ),
        id = id
    );
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn stats(State(state): State<Arc<Raw>>) -> Response {
    let body = format!(
        r#"{{"connections":{},"lagged":{}}}"#,
        state.connections.load(Ordering::Relaxed),
        state.lagged.load(Ordering::Relaxed)
    );
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn upgrade(State(state): State<Arc<Raw>>, upgrade: WebSocketUpgrade) -> Response {
    // The same read buffer as signalr-server's default, so W1's "vs raw" compares the
    // layers above the socket, not buffer sizes.
    upgrade
        .read_buffer_size(signalr_server::TransportOptions::default().websocket_read_buffer)
        .write_buffer_size(4096)
        .max_write_buffer_size(1024 * 1024)
        .on_upgrade(move |socket| run(state, socket))
}

fn frame_message(frame: Bytes, binary: bool) -> Message {
    if binary {
        return Message::Binary(frame);
    }
    match Utf8Bytes::try_from(frame) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(Bytes::new()),
    }
}

async fn run(state: Arc<Raw>, mut socket: WebSocket) {
    let mut buf = BytesMut::new();
    let protocol = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(text))) => buf.extend_from_slice(text.as_bytes()),
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return,
        }
        match HandshakeRequest::parse(&mut buf, 32 * 1024) {
            Ok(Some(request)) => {
                break Protocol::from_name(&request.protocol).unwrap_or(Protocol::Json);
            }
            Ok(None) => {}
            Err(_) => return,
        }
    };
    if socket.send(Message::Text("{}\x1e".into())).await.is_err() {
        return;
    }
    let binary = protocol == Protocol::MessagePack;
    let mut frames = match protocol {
        Protocol::Json => state.json.subscribe(),
        Protocol::MessagePack => state.messagepack.subscribe(),
    };
    state.connections.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) => {
                    if socket.feed(frame_message(frame, binary)).await.is_err() {
                        break;
                    }
                    let mut failed = false;
                    loop {
                        match frames.try_recv() {
                            Ok(frame) => {
                                if socket.feed(frame_message(frame, binary)).await.is_err() {
                                    failed = true;
                                    break;
                                }
                            }
                            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                                state.lagged.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(_) => break,
                        }
                    }
                    if failed || socket.flush().await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    state.lagged.fetch_add(n, Ordering::Relaxed);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    buf.extend_from_slice(text.as_bytes());
                    publish_all(&state, protocol, &mut buf);
                }
                Some(Ok(Message::Binary(data))) => {
                    buf.extend_from_slice(&data);
                    publish_all(&state, protocol, &mut buf);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    state.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Broadcast every invocation in `buf` as `m(arguments…)`, in both protocols.
fn publish_all(state: &Raw, protocol: Protocol, buf: &mut BytesMut) {
    while let Ok(Some(message)) = protocol.parse_message(buf, 1024 * 1024) {
        let HubMessage::Invocation(invocation) = message else {
            continue;
        };
        let Ok(arguments) = invocation.arguments.into_values() else {
            continue;
        };
        for (target, channel) in [
            (Protocol::Json, &state.json),
            (Protocol::MessagePack, &state.messagepack),
        ] {
            if channel.receiver_count() == 0 {
                continue;
            }
            let values: Result<Vec<_>, _> =
                arguments.iter().map(|v| v.to_protocol(target)).collect();
            let Ok(values) = values else { continue };
            let message = HubMessage::Invocation(Invocation {
                target: "m".to_owned(),
                arguments: Arguments::Values(values),
                ..Invocation::default()
            });
            if let Ok(frame) = target.encode_message(&message) {
                let _ = channel.send(frame);
            }
        }
    }
}
