//! The Server-Sent Events transport at the HTTP level: the exact bytes of the event stream,
//! and the connection's life around it.

mod common;

use common::http::{EventStream, Http, HttpClient, event_data, negotiate, request, serve_hub};
use common::{Client, WAIT, handshake_request, result_string, test_hub};
use signalr_server::Hub;
use signalr_server::protocol::{HubMessage, Protocol};

/// Headers, the opening comment, and events that are `data: ` lines ending in CRLF with a
/// blank CRLF line after each: nothing else.
#[tokio::test]
async fn the_event_stream_is_framed_exactly() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let token = negotiate(addr, "/hub", &[]).await;
    let url = format!("/hub?id={token}");
    let mut stream = EventStream::open(addr, &url, &[]).await.unwrap();
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("text/event-stream"));
    assert_eq!(stream.header("cache-control"), Some("no-cache,no-store"));
    assert_eq!(stream.header("pragma"), Some("no-cache"));
    // The HTTP connection ends with the stream (a client that stopped reading must not keep
    // it as an idle keep-alive connection).
    assert_eq!(stream.header("connection"), Some("close"));
    assert_eq!(stream.header("content-encoding"), Some("identity"));
    // The comment is written at once, before anything else happens on the connection.
    assert_eq!(stream.read_exact(3).await.unwrap(), b":\r\n");

    let handshake = handshake_request("json");
    assert_eq!(
        request(addr, "POST", &url, &[], &handshake).await.status,
        200
    );
    assert_eq!(stream.next_event().await.unwrap(), b"data: {}\x1e\r\n\r\n");

    let invocation =
        b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"hi\"]}\x1e";
    assert_eq!(
        request(addr, "POST", &url, &[], invocation).await.status,
        200
    );
    let event = stream.next_event().await.unwrap();
    assert_eq!(
        event,
        b"data: {\"type\":3,\"invocationId\":\"1\",\"result\":\"hi\"}\x1e\r\n\r\n"
    );
    // A message with a newline inside a string is escaped by JSON: never a bare LF.
    let invocation =
        b"{\"type\":1,\"invocationId\":\"2\",\"target\":\"Echo\",\"arguments\":[\"a\\nb\"]}\x1e";
    assert_eq!(
        request(addr, "POST", &url, &[], invocation).await.status,
        200
    );
    let event = stream.next_event().await.unwrap();
    assert_eq!(
        event_data(&event),
        b"{\"type\":3,\"invocationId\":\"2\",\"result\":\"a\\nb\"}\x1e"
    );
}

/// Echo, errors and broadcasts over SSE, next to a WebSocket client.
#[tokio::test]
async fn a_hub_works_over_sse() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let mut sse =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    assert_eq!(result_string(&sse.invoke("Echo", ("hi",)).await), "hi");
    assert_eq!(
        common::error_text(&sse.invoke("Fail", ()).await),
        "An unexpected error occurred invoking 'Fail' on the server. HubException: Room is full"
    );
    let mut ws = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    ws.send_invocation("Broadcast", ("to everyone",)).await;
    match sse.recv_no_ping().await {
        Some(HubMessage::Invocation(invocation)) => {
            assert_eq!(invocation.target, "message");
            let text: String = invocation.arguments.into_values().unwrap()[0]
                .decode()
                .unwrap();
            assert_eq!(text, "to everyone");
        }
        other => panic!("{other:?}"),
    }
}

/// MessagePack needs a binary transport: the handshake is refused over SSE and the stream
/// ends.
#[tokio::test]
async fn a_messagepack_handshake_is_refused() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let mut client =
        HttpClient::open(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    let response = client.handshake("messagepack").await;
    let error = response.error.expect("refused");
    assert!(
        error.contains("does not support 'Binary' transfer format"),
        "{error}"
    );
    assert!(
        client.recv().await.is_none(),
        "the stream ends after the refusal"
    );
    assert_eq!(client.post(b"{}\x1e").await.status, 404);
}

/// One event stream per connection: a second concurrent one is 409; once the first ended the
/// connection is gone (404). DELETE is for long polling only (400).
#[tokio::test]
async fn one_event_stream_per_connection() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let token = negotiate(addr, "/hub", &[]).await;
    let url = format!("/hub?id={token}");
    let first = EventStream::open(addr, &url, &[]).await.unwrap();
    let second = EventStream::open(addr, &url, &[]).await.err().unwrap();
    assert_eq!(second.status, 409);
    let delete = request(addr, "DELETE", &url, &[], b"").await;
    assert_eq!(delete.status, 400);

    drop(first);
    // The client went away: the connection is disposed once the server notices.
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            let again = EventStream::open(addr, &url, &[]).await;
            match again {
                Err(response) if response.status == 404 => return,
                Err(response) if response.status == 409 => {}
                Ok(_) => panic!("a second stream was accepted"),
                Err(response) => panic!("unexpected {}", response.status),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the connection outlived its event stream");
}

/// The client closing its EventSource ends the connection: the hub's on_disconnected runs.
#[tokio::test]
async fn closing_the_event_stream_ends_the_connection() {
    let (tx, mut disconnected) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hub = Hub::builder()
        .on_disconnected(move |ctx: signalr_server::Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.connection_id().to_owned());
            }
        })
        .build();
    let addr = serve_hub(&hub).await;
    let client =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    let url = client.url.clone();
    drop(client);
    tokio::time::timeout(WAIT, disconnected.recv())
        .await
        .expect("on_disconnected ran")
        .unwrap();
    assert_eq!(
        request(addr, "POST", &url, &[], b"{}\x1e").await.status,
        404
    );
}

/// When the application ends the connection, the Close message is the last event and the
/// response ends.
#[tokio::test]
async fn the_server_closing_ends_the_stream_after_the_close_message() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let mut client =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    client.send_invocation("Abort", ()).await;
    let close = client.expect_close().await;
    assert_eq!(close.error, None);
    assert!(client.ended);
}
