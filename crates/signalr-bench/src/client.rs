//! Opening one load-generator connection: TCP from a chosen source address, SignalR negotiate
//! (version 1) on a kept-alive HTTP connection, the WebSocket upgrade, the hub handshake (or the
//! engine.io / Socket.IO open), and optionally joining a group.
//!
//! Every step is bounded by the caller's timeout; failures come back as a [`ConnectError`]
//! whose `stage` says where it failed, so a run can count them by kind.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use signalr_protocol::{CompletionResult, HandshakeResponse, HubMessage, NegotiateResponse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::wire::Wire;

/// A connected WebSocket.
pub type Socket = WebSocketStream<TcpStream>;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Server address; loopback only.
    pub addr: SocketAddr,
    /// Hub path (`/hub`) for SignalR; ignored for Socket.IO (`/socket.io/`).
    pub path: String,
    /// What the connection speaks.
    pub wire: Wire,
    /// Negotiate first (SignalR), as the official clients do unless told to skip it.
    pub negotiate: bool,
    /// Local address to bind before connecting (spreads ports over 127.0.0.x).
    pub source: Option<IpAddr>,
}

/// Why a connection could not be opened.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// `tcp`, `negotiate`, `upgrade`, `handshake`, `join` or `timeout`.
    pub stage: &'static str,
    /// The underlying error.
    pub detail: String,
}

impl ConnectError {
    fn new(stage: &'static str, detail: impl std::fmt::Display) -> ConnectError {
        ConnectError {
            stage,
            detail: detail.to_string(),
        }
    }
}

/// An opened connection.
#[derive(Debug)]
pub struct Conn {
    /// The WebSocket.
    pub ws: Socket,
    /// The SignalR connection id from negotiate (SignalR with negotiate only).
    pub connection_id: Option<String>,
}

/// Parse `http://127.0.0.1:5000/hub` (or `ws://`), refusing anything but loopback.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| format!("{url}: only http:// and ws:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = if host.starts_with("localhost:") {
        host.replacen("localhost", "127.0.0.1", 1)
    } else {
        host.to_owned()
    };
    let addr: SocketAddr = host
        .parse()
        .map_err(|e| format!("{url}: the host must be IP:PORT ({e})"))?;
    if !addr.ip().is_loopback() {
        return Err(format!("{url}: benchmarks only target loopback addresses"));
    }
    Ok((addr, path.to_owned()))
}

/// A TCP connection from `source` (if any) with TCP_NODELAY.
pub async fn tcp(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let stream = match source {
        None => new_socket(addr)?.connect(addr).await?,
        Some(source) => from_source(addr, source).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Source ports the load generator picks itself, in turn: from 1024 up to the start of the
/// kernel's ephemeral range. Ports inside that range must stay free: a port bound explicitly
/// (on any address) is skipped by every other process's `connect` when the kernel picks a port,
/// so 100 k load-generator connections spread over it left the servers' own outgoing
/// connections (to Redis) without a port (`EADDRNOTAVAIL`).
fn source_ports() -> std::ops::Range<u32> {
    static PORTS: std::sync::OnceLock<std::ops::Range<u32>> = std::sync::OnceLock::new();
    PORTS
        .get_or_init(|| {
            let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
                .ok()
                .and_then(|text| text.split_whitespace().next()?.parse::<u32>().ok())
                .filter(|start| *start > 2048)
                .unwrap_or(32_768);
            1024..ephemeral_start
        })
        .clone()
}

/// The next source port to try; each process starts somewhere else in the range.
fn next_source_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ports = source_ports();
    let span = ports.end - ports.start;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // In range by construction: start + (n mod span) is below the ephemeral range.
    u16::try_from(ports.start + n % span).unwrap_or(u16::MAX)
}

/// Connect from `source` on a port chosen here rather than by the kernel: binding port 0
/// makes Linux search for a free port among every port bound on that address, which at
/// 15 k+ connections per address took most of the load generator's CPU (perf:
/// `inet_bind2_bucket_match_addr_any`) and slowed connecting to ≈100 per second. A port in
/// use (another socket, or one still in TIME_WAIT towards the same server) is skipped.
async fn from_source(addr: SocketAddr, source: IpAddr) -> std::io::Result<TcpStream> {
    const ATTEMPTS: usize = 64;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let socket = new_socket(addr)?;
        socket.set_reuseaddr(true)?;
        if let Err(error) = socket.bind(SocketAddr::new(source, next_source_port())) {
            last = Some(error);
            continue;
        }
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable
                ) =>
            {
                last = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free source port")))
}

/// A kept-alive HTTP/1.1 connection for negotiate requests, opened on first use and reopened
/// when the server closes it.
#[derive(Debug, Default)]
pub struct Negotiator {
    stream: Option<TcpStream>,
    /// The server `stream` is connected to.
    server: Option<SocketAddr>,
    buf: Vec<u8>,
}

impl Negotiator {
    /// Use the kept-alive connection only for `server`; drop it if it goes elsewhere.
    pub fn retarget(&mut self, server: SocketAddr) {
        if self.server != Some(server) {
            self.stream = None;
            self.server = Some(server);
        }
    }

    /// `POST {path}/negotiate?negotiateVersion=1[&query]`: the connection id and token.
    pub async fn negotiate(
        &mut self,
        endpoint: &Endpoint,
        query: &str,
    ) -> Result<NegotiateResponse, ConnectError> {
        // One retry: a kept-alive connection may have been closed by the server meanwhile.
        match self.try_negotiate(endpoint, query).await {
            Ok(response) => Ok(response),
            Err(_) if self.stream.is_none() => self.try_negotiate(endpoint, query).await,
            Err(error) => Err(error),
        }
    }

    async fn try_negotiate(
        &mut self,
        endpoint: &Endpoint,
        query: &str,
    ) -> Result<NegotiateResponse, ConnectError> {
        let fresh = self.stream.is_none();
        if fresh {
            let stream = tcp(endpoint.addr, endpoint.source)
                .await
                .map_err(|e| ConnectError::new("tcp", e))?;
            self.stream = Some(stream);
        }
        let result = self.exchange(endpoint, query).await;
        if result.is_err() {
            self.stream = None;
            if !fresh {
                // Let the caller retry on a new connection.
                return Err(ConnectError::new(
                    "negotiate",
                    "kept-alive connection closed",
                ));
            }
        }
        result
    }

    async fn exchange(
        &mut self,
        endpoint: &Endpoint,
        query: &str,
    ) -> Result<NegotiateResponse, ConnectError> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| ConnectError::new("negotiate", "no connection"))?;
        let path = endpoint.path.trim_end_matches('/');
        let extra = if query.is_empty() {
            String::new()
        } else {
            format!("&{query}")
        };
        let request = format!(
            "POST {path}/negotiate?negotiateVersion=1{extra} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            endpoint.addr
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| ConnectError::new("negotiate", e))?;
        self.buf.clear();
        let (head_len, body_len) = loop {
            let mut chunk = [0u8; 2048];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| ConnectError::new("negotiate", e))?;
            if n == 0 {
                return Err(ConnectError::new("negotiate", "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    let status = head.lines().next().unwrap_or_default().to_owned();
                    return Err(ConnectError::new("negotiate", status));
                }
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| ConnectError::new("negotiate", "no content-length"))?;
                break (end + 4, length);
            }
            if self.buf.len() > 64 * 1024 {
                return Err(ConnectError::new("negotiate", "response head too large"));
            }
        };
        while self.buf.len() < head_len + body_len {
            let mut chunk = [0u8; 2048];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| ConnectError::new("negotiate", e))?;
            if n == 0 {
                return Err(ConnectError::new("negotiate", "connection closed in body"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = &self.buf[head_len..head_len + body_len];
        if let Ok(error) = serde_json::from_slice::<signalr_protocol::NegotiateError>(body) {
            return Err(ConnectError::new("negotiate", error.error));
        }
        serde_json::from_slice(body).map_err(|e| ConnectError::new("negotiate", e))
    }
}

/// The WebSocket settings of every load-generator connection: small buffers, as a server would
/// use, so thousands of connections fit in one process.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(4096)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(Some(16 * 1024 * 1024))
}

/// Open one connection: negotiate (if asked), upgrade, handshake. `query` is appended to the
/// negotiate and WebSocket URLs (e.g. `user=u7`).
pub async fn open(
    endpoint: &Endpoint,
    negotiator: &mut Negotiator,
    query: &str,
) -> Result<Conn, ConnectError> {
    let (url, connection_id) = match endpoint.wire {
        Wire::SocketIo => (
            format!(
                "ws://{}/socket.io/?EIO=4&transport=websocket",
                endpoint.addr
            ),
            None,
        ),
        Wire::SignalR(_) => {
            let mut params = Vec::new();
            let mut connection_id = None;
            if endpoint.negotiate {
                let response = negotiator.negotiate(endpoint, query).await?;
                let token = response
                    .connection_token
                    .clone()
                    .unwrap_or_else(|| response.connection_id.clone());
                params.push(format!("id={token}"));
                connection_id = Some(response.connection_id);
            }
            if !query.is_empty() {
                params.push(query.to_owned());
            }
            let query = if params.is_empty() {
                String::new()
            } else {
                format!("?{}", params.join("&"))
            };
            (
                format!("ws://{}{}{query}", endpoint.addr, endpoint.path),
                connection_id,
            )
        }
    };
    let stream = tcp(endpoint.addr, endpoint.source)
        .await
        .map_err(|e| ConnectError::new("tcp", e))?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
        .await
        .map_err(|e| ConnectError::new("upgrade", e))?;
    match endpoint.wire {
        Wire::SignalR(_) => signalr_handshake(&mut ws, endpoint.wire).await?,
        Wire::SocketIo => socket_io_open(&mut ws).await?,
    }
    Ok(Conn { ws, connection_id })
}

async fn signalr_handshake(ws: &mut Socket, wire: Wire) -> Result<(), ConnectError> {
    let request = wire.handshake().unwrap_or_default();
    // The handshake is always text, whatever the hub protocol.
    ws.send(Wire::SignalR(signalr_protocol::Protocol::Json).message(request))
        .await
        .map_err(|e| ConnectError::new("handshake", e))?;
    let mut buf = BytesMut::new();
    loop {
        let data = next_data(ws, "handshake").await?;
        buf.extend_from_slice(&data);
        match HandshakeResponse::parse(&mut buf) {
            Ok(Some(HandshakeResponse { error: None })) => return Ok(()),
            Ok(Some(HandshakeResponse { error: Some(e) })) => {
                return Err(ConnectError::new("handshake", e));
            }
            Ok(None) => {}
            Err(e) => return Err(ConnectError::new("handshake", e)),
        }
    }
}

async fn socket_io_open(ws: &mut Socket) -> Result<(), ConnectError> {
    // engine.io: the server opens with `0{...}`; Socket.IO: we connect to `/` with `40`.
    let open = next_data(ws, "handshake").await?;
    if !open.starts_with(b"0{") {
        return Err(ConnectError::new(
            "handshake",
            format!("expected an engine.io open, got {}", show(&open)),
        ));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| ConnectError::new("handshake", e))?;
    loop {
        let data = next_data(ws, "handshake").await?;
        if data.starts_with(b"40") {
            return Ok(());
        }
        if data.as_slice() == b"2" {
            ws.send(Message::text("3"))
                .await
                .map_err(|e| ConnectError::new("handshake", e))?;
            continue;
        }
        return Err(ConnectError::new(
            "handshake",
            format!("expected a Socket.IO connect, got {}", show(&data)),
        ));
    }
}

/// Join `group` and wait for the server's answer: the `JoinGroup` hub method's completion
/// (SignalR) or the `join` event's ack (Socket.IO). Stamped deliveries arriving meanwhile are
/// impossible (nothing is sent before every receiver joined); pings are skipped.
pub async fn join(ws: &mut Socket, wire: Wire, group: &str) -> Result<(), ConnectError> {
    let frame = match wire {
        Wire::SignalR(_) => wire.invocation(Some("join"), "JoinGroup", &[group]),
        Wire::SocketIo => wire.invocation(Some("9"), "join", &[group]),
    };
    ws.send(wire.message(frame))
        .await
        .map_err(|e| ConnectError::new("join", e))?;
    let mut buf = BytesMut::new();
    loop {
        let data = next_data(ws, "join").await?;
        match wire {
            Wire::SocketIo => {
                if data.starts_with(b"439") {
                    return Ok(());
                }
                if data.as_slice() == b"2" {
                    ws.send(Message::text("3"))
                        .await
                        .map_err(|e| ConnectError::new("join", e))?;
                }
            }
            Wire::SignalR(protocol) => {
                buf.extend_from_slice(&data);
                while let Some(message) = protocol
                    .parse_message(&mut buf, usize::MAX)
                    .map_err(|e| ConnectError::new("join", e))?
                {
                    match message {
                        HubMessage::Completion(c) if c.invocation_id == "join" => {
                            return match c.result {
                                CompletionResult::Error(e) => Err(ConnectError::new("join", e)),
                                _ => Ok(()),
                            };
                        }
                        HubMessage::Close(close) => {
                            return Err(ConnectError::new(
                                "join",
                                format!("closed by the server: {:?}", close.error),
                            ));
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The payload of the next data message (text or binary), skipping control frames.
async fn next_data(ws: &mut Socket, stage: &'static str) -> Result<Vec<u8>, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_bytes().to_vec()),
            Some(Ok(Message::Binary(data))) => return Ok(data.to_vec()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(frame))) => {
                return Err(ConnectError::new(
                    stage,
                    format!("closed by the server: {frame:?}"),
                ));
            }
            Some(Err(e)) => return Err(ConnectError::new(stage, e)),
            None => return Err(ConnectError::new(stage, "connection ended")),
        }
    }
}

fn show(data: &[u8]) -> String {
    String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned()
}

/// Bound a connection step in time.
pub async fn within<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(timeout, step)
        .await
        .unwrap_or_else(|_| Err(ConnectError::new("timeout", format!("after {timeout:?}"))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only() {
        let (addr, path) = parse_url("http://127.0.0.1:5000/hub").unwrap();
        assert_eq!((addr.port(), path.as_str()), (5000, "/hub"));
        assert_eq!(parse_url("ws://127.0.0.2:1").unwrap().1, "/");
        assert!(parse_url("http://localhost:80/x").is_ok());
        assert!(parse_url("http://10.0.0.1:80/x").is_err());
        assert!(parse_url("https://127.0.0.1:80/x").is_err());
    }
}
