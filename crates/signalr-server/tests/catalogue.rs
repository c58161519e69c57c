//! Rows of the bad-input catalogue (`docs/bad-input.md`) that no other test file covers:
//! each hostile input gets a clear error or close, and a bystander connection on the same
//! server keeps working.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::{EventStream, Http, HttpClient, negotiate, request, serve_hub};
use common::{Client, WAIT, error_text, result_string, start_test_hub, test_hub};
use futures::SinkExt;
use signalr_server::protocol::{
    Ack, CancelInvocation, Completion, CompletionResult, HubMessage, Protocol, Sequence, StreamItem,
};
use tokio_tungstenite::tungstenite::Message;

/// A connection that must keep working whatever the others send.
async fn bystander(addr: SocketAddr) -> Client {
    Client::connect(addr, "/hub", Protocol::MessagePack).await
}

async fn still_works(client: &mut Client) {
    assert_eq!(
        result_string(&client.invoke("Echo", ("still here",)).await),
        "still here"
    );
}

/// A handshake sent one byte per WebSocket message: completed, it works; stopped short of
/// its end, it times out like any other slow handshake.
#[tokio::test]
async fn a_handshake_dribbled_byte_by_byte() {
    let addr = start_test_hub(|o| o.handshake_timeout = Duration::from_millis(500)).await;
    let mut witness = bystander(addr).await;
    let handshake = b"{\"protocol\":\"json\",\"version\":1}\x1e";

    let mut patient = Client::open(addr, "/hub", Protocol::Json).await;
    for byte in handshake {
        patient.send_binary(std::slice::from_ref(byte)).await;
    }
    assert_eq!(patient.handshake_response().await.error, None);
    still_works(&mut patient).await;

    let mut dribbler = Client::open(addr, "/hub", Protocol::Json).await;
    for byte in &handshake[..handshake.len() - 1] {
        dribbler.send_binary(std::slice::from_ref(byte)).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let error = dribbler.handshake_response().await.error.unwrap();
    assert!(error.starts_with("Handshake was canceled"), "{error}");
    dribbler.expect_socket_closed().await;
    still_works(&mut witness).await;
}

/// A hub message over the size limit inside an SSE or long-polling send (whose body is
/// within its own limit) closes that connection with the limit in the reason.
#[tokio::test]
async fn an_oversize_hub_message_over_the_http_transports() {
    let addr = serve_hub(&test_hub(|o| o.max_receive_message_size = 1024)).await;
    let mut witness = bystander(addr).await;
    for transport in [Http::LongPolling, Http::ServerSentEvents] {
        let mut client = HttpClient::connect(addr, "/hub", transport, Protocol::Json, &[]).await;
        let body = format!(
            "{{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"{}\"]}}\x1e",
            "x".repeat(4096)
        );
        assert_eq!(client.post(body.as_bytes()).await.status, 200);
        let close = client.expect_close().await;
        let error = close.error.unwrap_or_default();
        assert!(
            error.contains("maximum message size of 1024"),
            "{transport:?}: {error}"
        );
        assert!(close.allow_reconnect);
        still_works(&mut witness).await;
    }
}

/// Requests that name a connection they may not use, or use it the wrong way: each is
/// refused with its status and text, and neither the bystander nor the connection named
/// is disturbed.
#[tokio::test]
async fn misused_connection_ids_are_refused_and_harm_nobody() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let mut witness = bystander(addr).await;
    let sse = [("Accept", "text/event-stream")];

    // A long-polling connection, and requests with its public connection id instead of
    // its secret token.
    let negotiated = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    let json = negotiated.json();
    let (id, token) = (
        json["connectionId"].as_str().unwrap().to_owned(),
        json["connectionToken"].as_str().unwrap().to_owned(),
    );
    let by_id = format!("/hub?id={id}");
    for (method, headers) in [("GET", &[][..]), ("POST", &[][..]), ("GET", &sse[..])] {
        let response = request(addr, method, &by_id, headers, b"{}\x1e").await;
        assert_eq!(response.status, 404, "{method} with the connection id");
        assert_eq!(response.text(), "No Connection with that ID");
    }
    let url = format!("/hub?id={token}");
    assert_eq!(request(addr, "GET", &url, &[], b"").await.status, 200);
    // Its token, for another transport: 400, and the long-polling connection lives on.
    assert_eq!(request(addr, "GET", &url, &sse, b"").await.status, 400);
    let upgrade = Client::try_open(addr, &url, Protocol::Json).await;
    assert!(
        matches!(&upgrade, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "a WebSocket upgrade with a long-polling token"
    );
    assert_eq!(
        request(
            addr,
            "POST",
            &url,
            &[],
            b"{\"protocol\":\"json\",\"version\":1}\x1e"
        )
        .await
        .status,
        200
    );
    let poll = request(addr, "GET", &url, &[], b"").await;
    assert_eq!(poll.status, 200);
    assert_eq!(poll.body, b"{}\x1e");
    still_works(&mut witness).await;

    // A second event stream for one connection: 409; the first goes on.
    let mut first =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    let second = EventStream::open(addr, &first.url, &[]).await;
    let refused = second.err().expect("a second event stream is refused");
    assert_eq!(refused.status, 409);
    assert_eq!(
        result_string(&first.invoke("Echo", ("first",)).await),
        "first"
    );

    // POST and DELETE on a WebSocket connection.
    let ws_token = negotiate(addr, "/hub", &[]).await;
    let ws_url = format!("/hub?id={ws_token}");
    let mut ws = Client::connect(addr, &ws_url, Protocol::Json).await;
    let post = request(addr, "POST", &ws_url, &[], b"{\"type\":7}\x1e").await;
    assert_eq!(post.status, 405);
    assert_eq!(
        post.text(),
        "POST requests are not allowed for WebSocket connections."
    );
    assert_eq!(request(addr, "DELETE", &ws_url, &[], b"").await.status, 400);
    still_works(&mut ws).await;
    still_works(&mut witness).await;
}

/// Client-result answers that are late, wrong or doubled: the asking method gets a clear
/// error, extra answers are ignored, the connection goes on.
#[tokio::test]
async fn client_results_answered_twice_wrongly_or_never() {
    let addr = start_test_hub(|o| o.client_result_timeout = Duration::from_millis(300)).await;
    let mut witness = bystander(addr).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;

    async fn asked(client: &mut Client) -> String {
        match client.recv_no_ping().await {
            Some(HubMessage::Invocation(invocation)) => {
                assert_eq!(invocation.target, "getNumber");
                invocation
                    .invocation_id
                    .expect("a client-result request has an id")
            }
            other => panic!("expected the client-result request, got {other:?}"),
        }
    }

    // Twice: the first answer counts, the second is ignored.
    client.send_invocation_with_id("twice", "Ask", ()).await;
    let id = asked(&mut client).await;
    client.send_completion(&id, &41).await;
    client.send_completion(&id, &99).await;
    let completion = client.completion().await;
    assert_eq!(completion.invocation_id, "twice");
    match completion.result {
        CompletionResult::Value(value) => assert_eq!(value.decode::<i64>().unwrap(), 42),
        other => panic!("{other:?}"),
    }

    // A string where a number is expected.
    client.send_invocation_with_id("wrong", "Ask", ()).await;
    let id = asked(&mut client).await;
    client.send_completion(&id, &"forty-one").await;
    let error = error_text(&client.completion().await);
    assert!(
        error.contains("The result of 'getNumber' from client")
            && error.contains("could not be read"),
        "{error}"
    );

    // Never: the call fails after the timeout, and a late answer is ignored.
    client.send_invocation_with_id("never", "Ask", ()).await;
    let id = asked(&mut client).await;
    let error = error_text(&client.completion().await);
    assert!(
        error.contains("did not answer 'getNumber' within"),
        "{error}"
    );
    client.send_completion(&id, &41).await;

    // Completions, cancellations and stream items for ids nobody knows, and the stateful
    // reconnect messages on a connection without it: ignored.
    client
        .send(&HubMessage::Completion(Completion {
            headers: Vec::new(),
            invocation_id: "nobody".into(),
            result: CompletionResult::Void,
        }))
        .await;
    client
        .send(&HubMessage::CancelInvocation(CancelInvocation {
            headers: Vec::new(),
            invocation_id: "nobody".into(),
        }))
        .await;
    client
        .send(&HubMessage::StreamItem(StreamItem {
            headers: Vec::new(),
            invocation_id: "no-such-stream".into(),
            item: Protocol::Json.encode_value(&1).unwrap(),
        }))
        .await;
    client
        .send(&HubMessage::Ack(Ack { sequence_id: 1000 }))
        .await;
    client
        .send(&HubMessage::Sequence(Sequence { sequence_id: 1000 }))
        .await;
    still_works(&mut client).await;
    still_works(&mut witness).await;
}

/// A text WebSocket frame that is not UTF-8 ends the connection with a reason.
#[tokio::test]
async fn a_text_frame_that_is_not_utf8() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    // tungstenite checks UTF-8 when sending too: write the frame by hand.
    let frame = Message::Frame(
        tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            vec![0xff, 0xfe, 0x1e],
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        ),
    );
    client.ws.send(frame).await.unwrap();
    let close = client.expect_close().await;
    let error = close.error.unwrap_or_default();
    assert!(
        error.starts_with("Connection closed with an error.") && error.contains("UTF-8"),
        "{error}"
    );
    still_works(&mut witness).await;
}

/// A flood of invocations to a busy connection is pushed back on (the connection stops
/// reading) rather than buffered; every one is still answered, in order, and others are
/// not slowed by it.
#[tokio::test]
async fn a_flood_of_invocations_is_pushed_back_on() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;
    let mut flooder = Client::connect(addr, "/hub", Protocol::Json).await;
    const COUNT: usize = 200;
    let mut batch = Vec::new();
    for i in 0..COUNT {
        let id = i.to_string();
        let message = HubMessage::Invocation(signalr_server::protocol::Invocation {
            invocation_id: Some(id.clone()),
            target: "Slow".into(),
            arguments: signalr_server::protocol::Arguments::Encoded(
                Protocol::Json.encode_value(&(2u64, id)).unwrap(),
            ),
            ..Default::default()
        });
        batch.extend_from_slice(&Protocol::Json.encode_message(&message).unwrap());
        if batch.len() > 16 * 1024 {
            flooder.send_text(&batch).await;
            batch.clear();
        }
    }
    flooder.send_text(&batch).await;
    // The server is busy with the flood; the bystander is served meanwhile.
    still_works(&mut witness).await;
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    for i in 0..COUNT {
        let completion = tokio::time::timeout_at(deadline, flooder.completion())
            .await
            .expect("every invocation answered in time");
        assert_eq!(completion.invocation_id, i.to_string());
    }
    still_works(&mut flooder).await;
}
