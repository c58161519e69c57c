//! Raw HTTP/1.1 over TCP for the HTTP transports: one-shot requests with status, headers and
//! body; an event-stream reader that keeps every byte as sent (to check SSE framing); and a
//! SignalR client over long polling or Server-Sent Events built on them.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use serde_json::Value;
use signalr_server::HubArguments;
use signalr_server::protocol::{
    Arguments, Close, Completion, HandshakeResponse, HubMessage, Invocation, Protocol,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound of one request (long polls in these tests use poll timeouts well below it).
pub const REQUEST_WAIT: Duration = Duration::from_secs(10);

/// A whole HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (name compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether any header of that name exists.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Send one request on a fresh connection (`Connection: close`) and read the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    write_head(&mut stream, addr, method, path, headers, Some(body.len())).await;
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(REQUEST_WAIT, stream.read_to_end(&mut raw))
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no complete response within {REQUEST_WAIT:?}"))
        .unwrap();
    let (status, headers, head_len) =
        parse_head(&raw).unwrap_or_else(|| panic!("{method} {path}: incomplete response head"));
    let rest = &raw[head_len..];
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        let mut decoder = Dechunker::default();
        decoder.push(rest);
        assert!(decoder.done, "{method} {path}: chunked body not terminated");
        decoder.body
    } else {
        rest.to_vec()
    };
    Response {
        status,
        headers,
        body,
    }
}

async fn write_head(
    stream: &mut TcpStream,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(length) = content_length {
        head.push_str(&format!("Content-Length: {length}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
}

/// Header names and values, in order.
pub type Headers = Vec<(String, String)>;

/// Status, headers and head length, once the head is complete.
fn parse_head(raw: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Some((status, headers, end + 4))
}

/// Incremental decoder of a chunked body.
#[derive(Debug, Default)]
struct Dechunker {
    raw: Vec<u8>,
    body: Vec<u8>,
    done: bool,
}

impl Dechunker {
    fn push(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        while !self.done {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size_text = std::str::from_utf8(&self.raw[..line_end]).unwrap();
            let size_text = size_text.split(';').next().unwrap().trim();
            let size = usize::from_str_radix(size_text, 16).expect("chunk size");
            let needed = line_end + 2 + size + 2;
            if size == 0 {
                // Last chunk; trailers (none here) and the final CRLF follow.
                self.done = true;
                return;
            }
            if self.raw.len() < needed {
                return;
            }
            self.body
                .extend_from_slice(&self.raw[line_end + 2..line_end + 2 + size]);
            assert_eq!(
                &self.raw[needed - 2..needed],
                b"\r\n",
                "chunk not CRLF-terminated"
            );
            self.raw.drain(..needed);
        }
    }
}

/// A Server-Sent Events response read as it streams, every byte kept as sent.
pub struct EventStream {
    stream: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    dechunker: Dechunker,
    /// Body bytes already handed out.
    consumed: usize,
}

impl EventStream {
    /// `GET path` with `Accept: text/event-stream`. A non-200 answer is returned whole as
    /// `Err`.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<EventStream, Response> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        write_head(&mut stream, addr, "GET", path, &all, None).await;
        let mut raw = Vec::new();
        let (status, headers, head_len) = loop {
            if let Some(head) = parse_head(&raw) {
                break head;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(REQUEST_WAIT, stream.read(&mut chunk))
                .await
                .expect("SSE response head in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response head");
            raw.extend_from_slice(&chunk[..n]);
        };
        let chunked = headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        if status != 200 {
            tokio::time::timeout(REQUEST_WAIT, stream.read_to_end(&mut raw))
                .await
                .expect("error body in time")
                .unwrap();
            let rest = &raw[head_len..];
            let body = if chunked {
                let mut decoder = Dechunker::default();
                decoder.push(rest);
                decoder.body
            } else {
                rest.to_vec()
            };
            return Err(Response {
                status,
                headers,
                body,
            });
        }
        assert!(chunked, "an event stream is sent chunked");
        let mut dechunker = Dechunker::default();
        dechunker.push(&raw[head_len..]);
        Ok(EventStream {
            stream,
            status,
            headers,
            dechunker,
            consumed: 0,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Read until the unconsumed body holds `n` bytes (`None` if the stream ends first);
    /// returns them as sent.
    pub async fn read_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.dechunker.body.len() - self.consumed < n {
            if !self.fill().await {
                return None;
            }
        }
        let out = self.dechunker.body[self.consumed..self.consumed + n].to_vec();
        self.consumed += n;
        Some(out)
    }

    /// The next event as sent, up to and including its blank line; `None` when the stream
    /// ended.
    pub async fn next_event(&mut self) -> Option<Vec<u8>> {
        loop {
            let pending = &self.dechunker.body[self.consumed..];
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let event = pending[..end + 4].to_vec();
                self.consumed += end + 4;
                return Some(event);
            }
            if !self.fill().await {
                assert_eq!(
                    self.dechunker.body.len(),
                    self.consumed,
                    "the stream ended inside an event"
                );
                return None;
            }
        }
    }

    /// Read more; false when the body (or the connection) ended.
    async fn fill(&mut self) -> bool {
        if self.dechunker.done {
            return false;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(REQUEST_WAIT, self.stream.read(&mut chunk))
            .await
            .expect("SSE data in time")
            .unwrap_or(0);
        if n == 0 {
            return false;
        }
        self.dechunker.push(&chunk[..n]);
        true
    }
}

/// The data of one event, checked against the strict rules the .NET client enforces: every
/// line ends in CRLF, starts with `data: `, and a blank line ends the event.
pub fn event_data(event: &[u8]) -> Vec<u8> {
    assert!(
        event.ends_with(b"\r\n\r\n"),
        "event ends with a blank CRLF line"
    );
    let body = &event[..event.len() - 2];
    let mut data = Vec::new();
    let mut rest = body;
    let mut first = true;
    while !rest.is_empty() {
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("every line ends in CRLF");
        let line = &rest[..end];
        assert!(
            !line.contains(&b'\n') && !line.contains(&b'\r'),
            "bare CR or LF in a line"
        );
        let payload = line.strip_prefix(b"data: ").unwrap_or_else(|| {
            panic!("line without `data: `: {:?}", String::from_utf8_lossy(line))
        });
        if !first {
            data.push(b'\n');
        }
        data.extend_from_slice(payload);
        first = false;
        rest = &rest[end + 2..];
    }
    data
}

/// Serve `hub` at `/hub` on a free loopback port.
pub async fn serve_hub(hub: &signalr_server::Hub) -> SocketAddr {
    super::start(axum::Router::new().merge(hub.router("/hub"))).await
}

/// Which HTTP transport a [`HttpClient`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http {
    LongPolling,
    ServerSentEvents,
}

/// Negotiate (v1) at `hub` (e.g. `/hub`); returns the connection token.
pub async fn negotiate(addr: SocketAddr, hub: &str, headers: &[(&str, &str)]) -> String {
    let response = request(
        addr,
        "POST",
        &format!("{hub}/negotiate?negotiateVersion=1"),
        headers,
        b"",
    )
    .await;
    assert_eq!(response.status, 200, "negotiate: {}", response.text());
    response.json()["connectionToken"]
        .as_str()
        .expect("connectionToken")
        .to_owned()
}

/// A SignalR client over long polling or Server-Sent Events.
pub struct HttpClient {
    pub addr: SocketAddr,
    /// `/hub?id=TOKEN`
    pub url: String,
    pub token: String,
    pub protocol: Protocol,
    pub transport: Http,
    /// Sent with every request (e.g. `Authorization`).
    pub headers: Vec<(String, String)>,
    sse: Option<EventStream>,
    buf: BytesMut,
    next_id: u64,
    /// The server answered a poll with 204 or ended the event stream.
    pub ended: bool,
}

impl HttpClient {
    /// Negotiate and start the transport (first poll, or the event stream), without the
    /// handshake.
    pub async fn open(
        addr: SocketAddr,
        hub: &str,
        transport: Http,
        protocol: Protocol,
        headers: &[(&str, &str)],
    ) -> HttpClient {
        let token = negotiate(addr, hub, headers).await;
        let mut client = HttpClient {
            addr,
            url: format!("{hub}?id={token}"),
            token,
            protocol,
            transport,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            sse: None,
            buf: BytesMut::new(),
            next_id: 0,
            ended: false,
        };
        match transport {
            Http::LongPolling => {
                let first = client.poll().await;
                assert_eq!(first.status, 200, "first poll: {}", first.text());
                assert!(first.body.is_empty(), "the first poll is answered empty");
            }
            Http::ServerSentEvents => {
                let mut stream = EventStream::open(addr, &client.url, &client.header_refs())
                    .await
                    .unwrap_or_else(|r| panic!("SSE refused: {} {}", r.status, r.text()));
                assert_eq!(stream.read_exact(3).await.as_deref(), Some(&b":\r\n"[..]));
                client.sse = Some(stream);
            }
        }
        client
    }

    /// Open and complete the handshake.
    pub async fn connect(
        addr: SocketAddr,
        hub: &str,
        transport: Http,
        protocol: Protocol,
        headers: &[(&str, &str)],
    ) -> HttpClient {
        let mut client = Self::open(addr, hub, transport, protocol, headers).await;
        let response = client.handshake(protocol.name()).await;
        assert_eq!(response.error, None, "handshake refused");
        client
    }

    /// Send a handshake request for `protocol` and read the response.
    pub async fn handshake(&mut self, protocol: &str) -> HandshakeResponse {
        let status = self.post(&super::handshake_request(protocol)).await.status;
        assert_eq!(status, 200, "handshake POST");
        loop {
            if let Some(response) = HandshakeResponse::parse(&mut self.buf).unwrap() {
                return response;
            }
            assert!(
                self.fill().await,
                "transport ended before the handshake response"
            );
        }
    }

    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    /// One long poll.
    pub async fn poll(&self) -> Response {
        request(self.addr, "GET", &self.url, &self.header_refs(), b"").await
    }

    /// `POST` raw bytes.
    pub async fn post(&self, body: &[u8]) -> Response {
        request(self.addr, "POST", &self.url, &self.header_refs(), body).await
    }

    /// `DELETE`.
    pub async fn delete(&self) -> Response {
        request(self.addr, "DELETE", &self.url, &self.header_refs(), b"").await
    }

    pub async fn send(&mut self, message: &HubMessage) {
        let frame = self.protocol.encode_message(message).unwrap();
        let response = self.post(&frame).await;
        assert_eq!(response.status, 200, "POST: {}", response.text());
    }

    /// Receive more bytes: one poll (200 with data or empty), or one event. False when the
    /// transport ended (204, or the stream closed).
    async fn fill(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.transport {
            Http::LongPolling => loop {
                let response = self.poll().await;
                match response.status {
                    200 if response.body.is_empty() => {}
                    200 => {
                        assert_eq!(
                            response.header("content-type"),
                            Some("application/octet-stream")
                        );
                        self.buf.extend_from_slice(&response.body);
                        return true;
                    }
                    204 => {
                        self.ended = true;
                        return false;
                    }
                    status => panic!("poll answered {status}: {}", response.text()),
                }
            },
            Http::ServerSentEvents => {
                let stream = self.sse.as_mut().expect("event stream");
                match stream.next_event().await {
                    Some(event) => {
                        self.buf.extend_from_slice(&event_data(&event));
                        true
                    }
                    None => {
                        self.ended = true;
                        false
                    }
                }
            }
        }
    }

    /// The next hub message; `None` when the transport ended.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        loop {
            if let Some(message) = self
                .protocol
                .parse_message(&mut self.buf, usize::MAX)
                .unwrap()
            {
                return Some(message);
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "a poll or event ended inside a message"
                );
                return None;
            }
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
        self.send(&HubMessage::Invocation(Invocation {
            invocation_id: Some(id.clone()),
            target: target.to_owned(),
            arguments: Arguments::Encoded(arguments.encode_arguments(self.protocol).unwrap()),
            ..Invocation::default()
        }))
        .await;
        loop {
            match self.recv_no_ping().await {
                Some(HubMessage::Completion(completion)) if completion.invocation_id == id => {
                    return completion;
                }
                // Broadcasts may arrive first.
                Some(HubMessage::Invocation(_)) => {}
                Some(other) => panic!("expected the Completion of {target}, got {other:?}"),
                None => panic!("transport ended while waiting for the Completion of {target}"),
            }
        }
    }

    /// Fire-and-forget invocation.
    pub async fn send_invocation<A: HubArguments>(&mut self, target: &str, arguments: A) {
        self.send(&HubMessage::Invocation(Invocation {
            target: target.to_owned(),
            arguments: Arguments::Encoded(arguments.encode_arguments(self.protocol).unwrap()),
            ..Invocation::default()
        }))
        .await;
    }

    /// Wait for a Close message (skipping others), then for the transport to end.
    pub async fn expect_close(&mut self) -> Close {
        let close = loop {
            match self.recv().await {
                Some(HubMessage::Close(close)) => break close,
                Some(_) => {}
                None => panic!("transport ended without a Close message"),
            }
        };
        assert!(
            self.recv().await.is_none(),
            "nothing after the Close message"
        );
        close
    }
}
