//! The raw baseline: how fast a naive-but-good Rust broadcast server is on this machine.
//!
//! axum + tungstenite with 4 KiB buffers and a tokio `broadcast` channel of frames per hub
//! protocol. Each socket task takes everything queued for it, `feed`s it frame by frame and
//! flushes once: the batched design of performance.md §2. It speaks just enough SignalR for
//! the same load generator to drive it: `POST /hub/negotiate` (a fixed-shape answer),
//! the handshake (`{}` whatever was asked), and every invocation a client sends is re-framed
//! as `m(arguments…)` and broadcast to every connection, in both hub protocols. Groups for
//! W5: `JoinGroup(group)` adds the caller (and answers a completion when asked),
//! `SendToGroup(group, payload)` sends `m(payload)`, framed once per protocol, to the
//! group's members only, through a per-connection queue written the same batched way. No
//! hubs, no pings, no slow-consumer policy: a socket that falls behind the broadcast
//! channel skips messages, and the skipped count is reported by `GET /stats` (the load
//! generator counts them as lost).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::{Bytes, BytesMut};
use futures::SinkExt;
use signalr_protocol::{
    Arguments, Completion, CompletionResult, HandshakeRequest, HubMessage, Invocation, Protocol,
};
use tokio::sync::{broadcast, mpsc};

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
    /// Group name → its members.
    groups: Mutex<HashMap<String, Vec<Member>>>,
}

/// A connection in a group: where its frames go, in its protocol.
#[derive(Debug, Clone)]
struct Member {
    id: u64,
    binary: bool,
    queue: mpsc::UnboundedSender<Bytes>,
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
        groups: Mutex::new(HashMap::new()),
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
    let mut caller = Caller {
        id: state.next_id.fetch_add(1, Ordering::Relaxed),
        binary,
        direct: None,
        direct_tx: None,
        joined: Vec::new(),
        replies: Vec::new(),
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
            Some(frame) = async {
                match caller.direct.as_mut() {
                    Some(queue) => queue.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let queue = caller.direct.as_mut().expect("a frame came from it");
                let queued = std::iter::from_fn(|| queue.try_recv().ok());
                if !write_batch(&mut socket, std::iter::once(frame).chain(queued), binary).await {
                    break;
                }
            }
            message = socket.recv() => {
                match message {
                    Some(Ok(Message::Text(text))) => buf.extend_from_slice(text.as_bytes()),
                    Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => continue,
                }
                handle(&state, protocol, &mut buf, &mut caller);
            }
        }
        if !caller.replies.is_empty()
            && !write_batch(&mut socket, caller.replies.drain(..), binary).await
        {
            break;
        }
    }
    leave_all(&state, caller.id, &caller.joined);
    state.connections.fetch_sub(1, Ordering::Relaxed);
}

/// Feeds `frames` and flushes once; `false` when the socket failed.
async fn write_batch(
    socket: &mut WebSocket,
    frames: impl Iterator<Item = Bytes>,
    binary: bool,
) -> bool {
    for frame in frames {
        if socket.feed(frame_message(frame, binary)).await.is_err() {
            return false;
        }
    }
    socket.flush().await.is_ok()
}

/// A connection and its groups.
struct Caller {
    id: u64,
    binary: bool,
    /// Frames for this connection alone (its groups'); made on its first join.
    direct: Option<mpsc::UnboundedReceiver<Bytes>>,
    direct_tx: Option<mpsc::UnboundedSender<Bytes>>,
    joined: Vec<String>,
    /// Frames to write back to the caller (completions).
    replies: Vec<Bytes>,
}

/// Handles every invocation in `buf`: group joins and sends, and anything else broadcast
/// as `m(arguments…)`.
fn handle(state: &Raw, protocol: Protocol, buf: &mut BytesMut, caller: &mut Caller) {
    while let Ok(Some(message)) = protocol.parse_message(buf, 1024 * 1024) {
        let HubMessage::Invocation(Invocation {
            invocation_id,
            target,
            arguments,
            ..
        }) = message
        else {
            continue;
        };
        let Ok(arguments) = arguments.into_values() else {
            continue;
        };
        match target.as_str() {
            "JoinGroup" | "LeaveGroup" => {
                let Some(Ok(group)) = arguments.first().map(|a| a.decode::<String>()) else {
                    continue;
                };
                if target == "JoinGroup" {
                    join(state, caller, group);
                } else {
                    leave(state, caller.id, &group);
                    caller.joined.retain(|g| *g != group);
                }
                if let Some(invocation_id) = invocation_id {
                    let completion = HubMessage::Completion(Completion {
                        headers: Default::default(),
                        invocation_id,
                        result: CompletionResult::Void,
                    });
                    if let Ok(frame) = protocol.encode_message(&completion) {
                        caller.replies.push(frame);
                    }
                }
            }
            "SendToGroup" => {
                if let [group, payload] = &arguments[..]
                    && let Ok(group) = group.decode::<String>()
                {
                    send_to_group(state, &group, std::slice::from_ref(payload));
                }
            }
            _ => broadcast_values(state, &arguments),
        }
    }
}

fn join(state: &Raw, caller: &mut Caller, group: String) {
    if caller.joined.contains(&group) {
        return;
    }
    let queue = caller
        .direct_tx
        .get_or_insert_with(|| {
            let (queue, receiver) = mpsc::unbounded_channel();
            caller.direct = Some(receiver);
            queue
        })
        .clone();
    let mut groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
    groups.entry(group.clone()).or_default().push(Member {
        id: caller.id,
        binary: caller.binary,
        queue,
    });
    caller.joined.push(group);
}

fn leave(state: &Raw, id: u64, group: &str) {
    let mut groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(members) = groups.get_mut(group) {
        members.retain(|m| m.id != id);
        if members.is_empty() {
            groups.remove(group);
        }
    }
}

fn leave_all(state: &Raw, id: u64, joined: &[String]) {
    for group in joined {
        leave(state, id, group);
    }
}

/// `m(arguments…)` framed in `protocol`.
fn frame_m(protocol: Protocol, arguments: &[signalr_protocol::RawValue]) -> Option<Bytes> {
    let values: Result<Vec<_>, _> = arguments.iter().map(|v| v.to_protocol(protocol)).collect();
    let message = HubMessage::Invocation(Invocation {
        target: "m".to_owned(),
        arguments: Arguments::Values(values.ok()?),
        ..Invocation::default()
    });
    protocol.encode_message(&message).ok()
}

/// Sends `m(arguments…)` to the members of `group`, framed once per protocol in use.
fn send_to_group(state: &Raw, group: &str, arguments: &[signalr_protocol::RawValue]) {
    let members = {
        let groups = state.groups.lock().unwrap_or_else(|p| p.into_inner());
        match groups.get(group) {
            Some(members) => members.clone(),
            None => return,
        }
    };
    let mut framed: [Option<Option<Bytes>>; 2] = [None, None];
    for member in members {
        let (slot, protocol) = if member.binary {
            (1, Protocol::MessagePack)
        } else {
            (0, Protocol::Json)
        };
        let frame = framed[slot].get_or_insert_with(|| frame_m(protocol, arguments));
        if let Some(frame) = frame {
            let _ = member.queue.send(frame.clone());
        }
    }
}

/// Broadcasts `m(arguments…)` to every connection, in both protocols.
fn broadcast_values(state: &Raw, arguments: &[signalr_protocol::RawValue]) {
    for (target, channel) in [
        (Protocol::Json, &state.json),
        (Protocol::MessagePack, &state.messagepack),
    ] {
        if channel.receiver_count() == 0 {
            continue;
        }
        if let Some(frame) = frame_m(target, arguments) {
            let _ = channel.send(frame);
        }
    }
}
