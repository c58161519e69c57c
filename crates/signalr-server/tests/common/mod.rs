//! Shared test fixtures: a server on 127.0.0.1:0 and a raw SignalR client over a real
//! WebSocket, speaking bytes through the protocol crate (so tests can also send bad ones).

#![allow(dead_code, unreachable_pub)]

pub mod http;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use signalr_server::HubArguments;
use signalr_server::protocol::{
    Arguments, Close, Completion, HandshakeRequest, HandshakeResponse, HubMessage, Invocation,
    Protocol,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(5);

/// Repeat `check` until it holds (bounded by `WAIT`).
pub async fn eventually<F: std::future::Future<Output = bool>>(mut check: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Serve `app` on a free loopback port.
pub async fn start(app: axum::Router) -> SocketAddr {
    start_with(app, signalr_server::ServeOptions::default()).await
}

/// Serve `app` on a free loopback port with other [`signalr_server::ServeOptions`].
pub async fn start_with(app: axum::Router, options: signalr_server::ServeOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(signalr_server::serve_with(
        listener,
        app,
        std::future::pending(),
        options,
    ));
    addr
}

/// The bytes of a handshake request (version 1) for `protocol`.
pub fn handshake_request(protocol: &str) -> BytesMut {
    let mut handshake = BytesMut::new();
    HandshakeRequest {
        protocol: protocol.to_owned(),
        version: 1,
    }
    .write(&mut handshake);
    handshake
}

/// A plain HTTP/1.1 request; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text[9..12].parse().expect("status code");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A SignalR client over a real WebSocket.
pub struct Client {
    pub ws: Socket,
    pub protocol: Protocol,
    buf: BytesMut,
    next_id: u64,
}

impl Client {
    /// Open the WebSocket only (no handshake).
    pub async fn open(addr: SocketAddr, path_and_query: &str, protocol: Protocol) -> Client {
        Self::try_open(addr, path_and_query, protocol)
            .await
            .expect("WebSocket connects")
    }

    /// Open the WebSocket, returning the error (e.g. an HTTP status) on failure.
    pub async fn try_open(
        addr: SocketAddr,
        path_and_query: &str,
        protocol: Protocol,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("connect in time")?;
        Ok(Client::over(ws, protocol))
    }

    fn over(ws: Socket, protocol: Protocol) -> Client {
        Client {
            ws,
            protocol,
            buf: BytesMut::new(),
            next_id: 0,
        }
    }

    /// Open and complete the handshake.
    pub async fn connect(addr: SocketAddr, path_and_query: &str, protocol: Protocol) -> Client {
        Self::open(addr, path_and_query, protocol)
            .await
            .handshake()
            .await
    }

    /// Open and complete the handshake over a socket whose receive buffer is set to
    /// `recv_buffer` bytes: a client that stops reading leaves the server nowhere to write
    /// after a few kilobytes, whatever the kernel's defaults.
    pub async fn connect_with_recv_buffer(
        addr: SocketAddr,
        path_and_query: &str,
        protocol: Protocol,
        recv_buffer: u32,
    ) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(recv_buffer).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)),
        )
        .await
        .expect("connect in time")
        .expect("WebSocket connects");
        Client::over(ws, protocol).handshake().await
    }

    async fn handshake(mut self) -> Client {
        let handshake = handshake_request(self.protocol.name());
        self.send_text(&handshake).await;
        let response = self.handshake_response().await;
        assert_eq!(response.error, None, "handshake refused");
        self
    }

    pub async fn send_text(&mut self, bytes: &[u8]) {
        let text = String::from_utf8(bytes.to_vec()).expect("text frame");
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    /// Send raw bytes in the frame type of the protocol.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match self.protocol {
            Protocol::Json => self.send_text(bytes).await,
            Protocol::MessagePack => self.send_binary(bytes).await,
        }
    }

    pub async fn send(&mut self, message: &HubMessage) {
        let frame = self.protocol.encode_message(message).unwrap();
        self.send_raw(&frame).await;
    }

    /// Read one more WebSocket message into the buffer. `None` when the socket closed.
    async fn fill(&mut self) -> Option<()> {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("nothing received within {WAIT:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    assert_eq!(
                        self.protocol,
                        Protocol::Json,
                        "text frame on a binary protocol"
                    );
                    self.buf.extend_from_slice(text.as_bytes());
                    return Some(());
                }
                Ok(Some(Ok(Message::Binary(data)))) => {
                    self.buf.extend_from_slice(&data);
                    return Some(());
                }
                Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    pub async fn handshake_response(&mut self) -> HandshakeResponse {
        loop {
            if let Some(response) = HandshakeResponse::parse(&mut self.buf).unwrap() {
                return response;
            }
            self.fill()
                .await
                .expect("socket closed before the handshake response");
        }
    }

    /// The next hub message; `None` if the socket closed.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(message) = self
                .protocol
                .parse_message(&mut self.buf, usize::MAX)
                .unwrap()
            {
                return Some(message);
            }
            self.fill().await?;
        }
    }

    /// The next message that is not a Ping.
    pub async fn recv_no_ping(&mut self) -> Option<HubMessage> {
        loop {
            match self.recv().await? {
                HubMessage::Ping => {}
                message => return Some(message),
            }
        }
    }

    /// Invoke and wait for the Completion.
    pub async fn invoke<A: HubArguments>(&mut self, target: &str, arguments: A) -> Completion {
        let id = self.next_id.to_string();
        self.next_id += 1;
        let message = HubMessage::Invocation(Invocation {
            invocation_id: Some(id.clone()),
            target: target.to_owned(),
            arguments: Arguments::Encoded(arguments.encode_arguments(self.protocol).unwrap()),
            ..Invocation::default()
        });
        self.send(&message).await;
        match self.recv_no_ping().await {
            Some(HubMessage::Completion(completion)) if completion.invocation_id == id => {
                completion
            }
            Some(other) => panic!("expected the Completion of {target}, got {other:?}"),
            None => panic!("socket closed while waiting for the Completion of {target}"),
        }
    }

    /// Fire-and-forget invocation.
    pub async fn send_invocation<A: HubArguments>(&mut self, target: &str, arguments: A) {
        let message = HubMessage::Invocation(Invocation {
            target: target.to_owned(),
            arguments: Arguments::Encoded(arguments.encode_arguments(self.protocol).unwrap()),
            ..Invocation::default()
        });
        self.send(&message).await;
    }

    /// Wait for a Close message, then for the socket to close with code 1000.
    pub async fn expect_close(&mut self) -> Close {
        let close = loop {
            match self.recv().await {
                Some(HubMessage::Close(close)) => break close,
                Some(_) => {}
                None => panic!("socket closed without a Close message"),
            }
        };
        self.expect_socket_closed().await;
        close
    }

    /// Wait for the WebSocket close frame (code 1000) or the end of the socket.
    pub async fn expect_socket_closed(&mut self) {
        loop {
            match tokio::time::timeout(WAIT, self.ws.next()).await {
                Err(_) => panic!("socket not closed within {WAIT:?}"),
                Ok(Some(Ok(Message::Close(frame)))) => {
                    if let Some(frame) = frame {
                        assert_eq!(u16::from(frame.code), 1000, "close code");
                    }
                    return;
                }
                Ok(None) | Ok(Some(Err(_))) => return,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

/// The string result of a Completion, or panic.
pub fn result_string(completion: &Completion) -> String {
    match &completion.result {
        signalr_server::protocol::CompletionResult::Value(value) => value.decode().unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

/// The error text of a Completion, or panic.
pub fn error_text(completion: &Completion) -> String {
    match &completion.result {
        signalr_server::protocol::CompletionResult::Error(error) => error.clone(),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A hub with one method per behaviour the tests need.
pub fn test_hub(configure: impl FnOnce(&mut signalr_server::HubOptions)) -> signalr_server::Hub {
    test_hub_builder().configure(configure).build()
}

/// The test hub's builder, for tests that configure more than hub options.
pub fn test_hub_builder() -> signalr_server::HubBuilder<()> {
    use signalr_server::{Clients, Context, Groups, Hub, HubError};

    async fn echo(message: String) -> String {
        message
    }
    async fn add(a: i64, b: i64) -> i64 {
        a + b
    }
    async fn nothing() {}
    async fn fail() -> Result<(), HubError> {
        Err(HubError::new("Room is full"))
    }
    async fn fail_internal() -> Result<(), HubError> {
        Err(std::io::Error::other("disk on fire").into())
    }
    async fn panics() -> String {
        panic!("a hub method panicked on purpose")
    }
    async fn slow(ms: u64, tag: String) -> String {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        tag
    }
    async fn broadcast(clients: Clients, message: String) -> Result<(), HubError> {
        clients.all().send("message", (message,)).await
    }
    async fn join(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
        groups.add(ctx.connection_id(), &group).await
    }
    async fn send_group(clients: Clients, group: String, message: String) -> Result<(), HubError> {
        clients.group(group).send("message", (message,)).await
    }
    async fn ask(clients: Clients) -> Result<i64, HubError> {
        let number: i64 = clients.caller().invoke("getNumber", ()).await?;
        Ok(number + 1)
    }
    async fn abort(ctx: Context) {
        ctx.abort();
    }
    async fn whoami(ctx: Context) -> Option<String> {
        ctx.user_id().map(str::to_owned)
    }

    Hub::builder()
        .method("Echo", echo)
        .method("Add", add)
        .method("Nothing", nothing)
        .method("Fail", fail)
        .method("FailInternal", fail_internal)
        .method("Panic", panics)
        .method("Slow", slow)
        .method("Broadcast", broadcast)
        .method("Join", join)
        .method("SendGroup", send_group)
        .method("Ask", ask)
        .method("Abort", abort)
        .method("WhoAmI", whoami)
        .user_id_provider(|request| {
            request
                .uri
                .query()?
                .split('&')
                .find_map(|pair| pair.strip_prefix("user=").map(str::to_owned))
        })
}

/// Serve the test hub at `/hub`.
pub async fn start_test_hub(configure: impl FnOnce(&mut signalr_server::HubOptions)) -> SocketAddr {
    start(axum::Router::new().merge(test_hub(configure).router("/hub"))).await
}

impl Client {
    /// Invocation with an id, without waiting.
    pub async fn send_invocation_with_id<A: HubArguments>(
        &mut self,
        id: &str,
        target: &str,
        arguments: A,
    ) {
        let message = HubMessage::Invocation(Invocation {
            invocation_id: Some(id.to_owned()),
            target: target.to_owned(),
            arguments: Arguments::Encoded(arguments.encode_arguments(self.protocol).unwrap()),
            ..Invocation::default()
        });
        self.send(&message).await;
    }

    /// The next Completion (skipping pings).
    pub async fn completion(&mut self) -> Completion {
        match self.recv_no_ping().await {
            Some(HubMessage::Completion(completion)) => completion,
            other => panic!("expected a Completion, got {other:?}"),
        }
    }

    /// Answer a client-result invocation with a value.
    pub async fn send_completion<T: serde::Serialize>(&mut self, id: &str, value: &T) {
        let value = self.protocol.encode_value(value).unwrap();
        self.send(&HubMessage::Completion(Completion {
            headers: Vec::new(),
            invocation_id: id.to_owned(),
            result: signalr_server::protocol::CompletionResult::Value(value),
        }))
        .await;
    }

    /// Answer a client-result invocation with an error.
    pub async fn send_completion_error(&mut self, id: &str, error: &str) {
        self.send(&HubMessage::Completion(Completion {
            headers: Vec::new(),
            invocation_id: id.to_owned(),
            result: signalr_server::protocol::CompletionResult::Error(error.to_owned()),
        }))
        .await;
    }
}
