//! The request header deadline of `serve` over real sockets: a connection that sends no
//! request, or no further one after a response, is closed once it has waited
//! `ServeOptions::request_header_timeout`; connections that are serving something (a
//! WebSocket, an event stream, a held long poll) are not waiting for a header and stay.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::{Http, HttpClient};
use common::{Client, WAIT, result_string, start_with, test_hub};
use signalr_server::protocol::{Arguments, HubMessage, Invocation, Protocol};
use signalr_server::{HubArguments, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short enough for a test, long enough that a request written at once is never cut off.
const HEADER_TIMEOUT: Duration = Duration::from_millis(400);

async fn start_hub(request_header_timeout: Option<Duration>) -> SocketAddr {
    let mut options = ServeOptions::default();
    options.request_header_timeout = request_header_timeout;
    let hub = test_hub(|_| {});
    start_with(axum::Router::new().merge(hub.router("/hub")), options).await
}

/// Reads until the server closes the connection (or `within` passes: `None`); returns what
/// was read.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(read),
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// A new connection with a negotiate request written on it, without `Connection: close`, so
/// that HTTP/1.1 keeps it open after the answer.
async fn negotiate_keeping_alive(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_socket_that_sends_no_request_is_closed_after_the_timeout() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let read = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the server closed the idle socket");
    assert!(
        read.is_empty() || read.starts_with(b"HTTP/1.1 4"),
        "nothing, or an error status: {:?}",
        String::from_utf8_lossy(&read)
    );
}

#[tokio::test]
async fn a_header_sent_too_slowly_loses_the_connection() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A byte at a time, well inside the timeout each, never finishing the header: the
    // deadline is for the whole header, not between bytes.
    let header = b"POST /hub/negotiate?negotiateVersion=1 HTTP/1.1\r\nHost: x\r\n";
    let mut closed = false;
    for byte in header.iter().cycle().take(400) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(25), stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(
        closed,
        "the connection stayed open through 10 s of dribbled header"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_once_idle_for_the_timeout() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let mut stream = negotiate_keeping_alive(addr).await;
    // The answer comes, the connection is kept alive (HTTP/1.1), then closed for idling.
    let read = read_until_closed(&mut stream, WAIT)
        .await
        .expect("the server closed the idle keep-alive connection");
    let text = String::from_utf8_lossy(&read);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("connectionToken"), "{text}");
    assert!(
        !text.to_ascii_lowercase().contains("connection: close"),
        "the answer itself did not end the connection: {text}"
    );
}

/// The control for the tests above: what closes their sockets is the option.
#[tokio::test]
async fn without_the_timeout_an_idle_socket_stays_open() {
    let addr = start_hub(None).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        read_until_closed(&mut stream, HEADER_TIMEOUT * 5).await,
        None,
        "the server closed a socket it had no timeout for"
    );
}

#[tokio::test]
async fn a_websocket_outlives_the_timeout() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    tokio::time::sleep(HEADER_TIMEOUT * 3).await;
    let completion = client.invoke("Echo", ("still here",)).await;
    assert_eq!(result_string(&completion), "still here");
}

#[tokio::test]
async fn an_event_stream_outlives_the_timeout() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let mut client =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    tokio::time::sleep(HEADER_TIMEOUT * 3).await;
    let completion = client.invoke("Echo", ("still here",)).await;
    assert_eq!(result_string(&completion), "still here");
}

#[tokio::test]
async fn a_held_long_poll_outlives_the_timeout() {
    let addr = start_hub(Some(HEADER_TIMEOUT)).await;
    let client = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    // A poll the server holds past the timeout, answered by what an invocation sends.
    let frame = Protocol::Json
        .encode_message(&HubMessage::Invocation(Invocation {
            invocation_id: Some("1".to_owned()),
            target: "Echo".to_owned(),
            arguments: Arguments::Encoded(
                ("still here",).encode_arguments(Protocol::Json).unwrap(),
            ),
            ..Invocation::default()
        }))
        .unwrap();
    let (poll, posted) = tokio::join!(client.poll(), async {
        tokio::time::sleep(HEADER_TIMEOUT * 3).await;
        client.post(&frame).await
    });
    assert_eq!(posted.status, 200);
    assert_eq!(poll.status, 200);
    let mut body = bytes::BytesMut::from(&poll.body[..]);
    let mut completion = None;
    while let Some(message) = Protocol::Json.parse_message(&mut body, usize::MAX).unwrap() {
        if let HubMessage::Completion(c) = message {
            completion = Some(c);
        }
    }
    let completion = completion.expect("the held poll answered with the Completion");
    assert_eq!(result_string(&completion), "still here");
}

#[tokio::test]
async fn on_shutdown_serve_closes_idle_connections_and_returns() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hub = test_hub(|_| {});
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut options = ServeOptions::default();
    options.request_header_timeout = None;
    let served = tokio::spawn(signalr_server::serve_with(
        listener,
        axum::Router::new().merge(hub.router("/hub")),
        async {
            let _ = stopped.await;
        },
        options,
    ));
    let mut stream = negotiate_keeping_alive(addr).await;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, served)
        .await
        .expect("serve returned")
        .unwrap()
        .unwrap();
    assert!(
        read_until_closed(&mut stream, WAIT).await.is_some(),
        "the idle connection was closed"
    );
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}
