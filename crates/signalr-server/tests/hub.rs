//! Hub methods as clients see them, over a real WebSocket.

mod common;

use std::time::Duration;

use common::{Client, WAIT, error_text, result_string, start_test_hub};
use signalr_server::HubArguments;
use signalr_server::protocol::{Arguments, CompletionResult, HubMessage, Invocation, Protocol};

/// Results, void methods and case-insensitive method names, in both protocols.
#[tokio::test]
async fn results_void_and_case_insensitive_names() {
    let addr = start_test_hub(|_| {}).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        assert_eq!(result_string(&client.invoke("Echo", ("hi",)).await), "hi");
        assert_eq!(
            result_string(&client.invoke("eCHO", ("case",)).await),
            "case"
        );
        let void = client.invoke("Nothing", ()).await;
        assert_eq!(void.result, CompletionResult::Void, "{protocol:?}");
        let missing = client.invoke("WhoAmI", ()).await;
        match missing.result {
            CompletionResult::Value(value) => assert!(value.is_null()),
            other => panic!("a null result must be sent as a value: {other:?}"),
        }
    }
}

/// A message many times the WebSocket read buffer (1 KiB by default) arrives whole, and
/// the echo of it too, in both protocols.
#[tokio::test]
async fn messages_larger_than_the_read_buffer_arrive_whole() {
    let addr = start_test_hub(|_| {}).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        for size in [1000, 1024, 5000, 30 * 1024] {
            let text: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            assert_eq!(
                result_string(&client.invoke("Echo", (text.clone(),)).await),
                text,
                "{protocol:?} {size}"
            );
        }
    }
}

/// A HubError::new message always reaches the client; an internal error only says the
/// method failed unless detailed errors are on.
#[tokio::test]
async fn errors_reach_the_client_as_completion_errors() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    assert_eq!(
        error_text(&client.invoke("Fail", ()).await),
        "An unexpected error occurred invoking 'Fail' on the server. HubException: Room is full"
    );
    assert_eq!(
        error_text(&client.invoke("FailInternal", ()).await),
        "An unexpected error occurred invoking 'FailInternal' on the server."
    );

    let detailed = start_test_hub(|o| o.detailed_errors = true).await;
    let mut client = Client::connect(detailed, "/hub", Protocol::Json).await;
    assert_eq!(
        error_text(&client.invoke("FailInternal", ()).await),
        "An unexpected error occurred invoking 'FailInternal' on the server. disk on fire"
    );
}

/// A panicking method becomes an error Completion; the connection and server go on.
#[tokio::test]
async fn a_panicking_method_does_not_kill_the_connection() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    assert_eq!(
        error_text(&client.invoke("Panic", ()).await),
        "An unexpected error occurred invoking 'Panic' on the server."
    );
    assert_eq!(
        result_string(&client.invoke("Echo", ("alive",)).await),
        "alive"
    );
}

/// With the default of one invocation at a time, invocations complete in arrival order even
/// when the first is slower.
#[tokio::test]
async fn invocations_of_one_connection_run_in_order() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send_invocation_with_id("a", "Slow", (200, "first"))
        .await;
    client
        .send_invocation_with_id("b", "Slow", (0, "second"))
        .await;
    let first = client.completion().await;
    let second = client.completion().await;
    assert_eq!(first.invocation_id, "a");
    assert_eq!(second.invocation_id, "b");
}

/// With parallel invocations allowed, a fast one overtakes a slow one.
#[tokio::test]
async fn parallel_invocations_overlap_when_allowed() {
    let addr = start_test_hub(|o| o.max_parallel_invocations = 4).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send_invocation_with_id("a", "Slow", (1000, "slow"))
        .await;
    client
        .send_invocation_with_id("b", "Slow", (0, "fast"))
        .await;
    assert_eq!(client.completion().await.invocation_id, "b");
    assert_eq!(client.completion().await.invocation_id, "a");
}

/// A hub method asks its caller for a value (a client result) and uses it, with the default
/// of one invocation at a time: the connection keeps reading while the method waits.
#[tokio::test]
async fn client_result_from_inside_a_hub_method() {
    let addr = start_test_hub(|_| {}).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        client.send_invocation_with_id("q", "Ask", ()).await;
        let request = match client.recv_no_ping().await {
            Some(HubMessage::Invocation(invocation)) => invocation,
            other => panic!("expected the client-result invocation, got {other:?}"),
        };
        assert_eq!(request.target, "getNumber");
        let id = request
            .invocation_id
            .expect("client-result invocations carry an id");
        client.send_completion(&id, &41).await;
        let completion = client.completion().await;
        assert_eq!(completion.invocation_id, "q");
        match completion.result {
            CompletionResult::Value(v) => assert_eq!(v.decode::<i64>().unwrap(), 42),
            other => panic!("{other:?}"),
        }
    }
}

/// A client that answers a client result with an error fails the hub method with it.
#[tokio::test]
async fn client_result_errors_reach_the_method() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client.send_invocation_with_id("q", "Ask", ()).await;
    let Some(HubMessage::Invocation(request)) = client.recv_no_ping().await else {
        panic!("expected an invocation")
    };
    client
        .send_completion_error(
            &request.invocation_id.unwrap(),
            "Client didn't provide a result.",
        )
        .await;
    let completion = client.completion().await;
    assert_eq!(
        error_text(&completion),
        "An unexpected error occurred invoking 'Ask' on the server. HubException: Client didn't provide a result."
    );
}

/// Broadcasts reach every connection, each in its own protocol, with no invocation id.
#[tokio::test]
async fn broadcast_reaches_every_protocol() {
    let addr = start_test_hub(|_| {}).await;
    let mut json = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut msgpack = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    json.send_invocation("Broadcast", ("to all",)).await;
    for client in [&mut json, &mut msgpack] {
        match client.recv_no_ping().await {
            Some(HubMessage::Invocation(invocation)) => {
                assert_eq!(invocation.target, "message");
                assert_eq!(invocation.invocation_id, None);
                let args = invocation.arguments.into_values().unwrap();
                assert_eq!(args[0].decode::<String>().unwrap(), "to all");
            }
            other => panic!("expected the broadcast, got {other:?}"),
        }
    }
}

/// Messages a client sends right before its Close frame are all handled: the server reads
/// them together with the Close, and must hand them to the hub before ending.
#[tokio::test]
async fn messages_sent_just_before_a_close_are_handled() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    const COUNT: usize = 50;
    let addr = start_test_hub(|_| {}).await;
    let mut watcher = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut sender = Client::connect(addr, "/hub", Protocol::Json).await;
    for i in 0..COUNT {
        let frame =
            format!("{{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"m{i}\"]}}\u{1e}");
        // Queued without a flush: the messages and the Close leave in one write.
        sender.ws.feed(Message::text(frame)).await.unwrap();
    }
    sender.ws.send(Message::Close(None)).await.unwrap();
    for i in 0..COUNT {
        match watcher.recv_no_ping().await {
            Some(HubMessage::Invocation(invocation)) => {
                let args = invocation.arguments.into_values().unwrap();
                assert_eq!(args[0].decode::<String>().unwrap(), format!("m{i}"));
            }
            other => panic!("expected broadcast m{i}, got {other:?}"),
        }
    }
}

/// Context::abort closes the connection with a Close message that does not invite a
/// reconnect.
#[tokio::test]
async fn abort_closes_without_reconnect() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client.send_invocation_with_id("x", "Abort", ()).await;
    let close = client.expect_close().await;
    assert_eq!(close.error, None);
    assert!(!close.allow_reconnect);
}

/// The user identifier comes from the user-id provider.
#[tokio::test]
async fn user_id_from_the_provider() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub?user=alice", Protocol::Json).await;
    assert_eq!(result_string(&client.invoke("WhoAmI", ()).await), "alice");
}

/// Keep-alive pings arrive while the connection is idle.
#[tokio::test]
async fn keep_alive_pings_arrive() {
    let addr = start_test_hub(|o| o.keep_alive_interval = Duration::from_millis(100)).await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    let started = tokio::time::Instant::now();
    for _ in 0..2 {
        assert_eq!(client.recv().await, Some(HubMessage::Ping));
    }
    assert!(started.elapsed() < WAIT);
}

/// A connection that is sent something more often than the keep-alive interval gets no
/// pings; once nothing is sent for an interval, a ping comes again.
#[tokio::test]
async fn busy_connections_are_not_pinged() {
    let interval = Duration::from_millis(200);
    let addr = start_test_hub(|o| o.keep_alive_interval = interval).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    // Six intervals of traffic, a Completion every quarter interval.
    for i in 0..24 {
        let echo = i.to_string();
        client
            .send(&HubMessage::Invocation(Invocation {
                invocation_id: Some(echo.clone()),
                target: "Echo".to_owned(),
                arguments: Arguments::Encoded(
                    (echo.clone(),).encode_arguments(Protocol::Json).unwrap(),
                ),
                ..Invocation::default()
            }))
            .await;
        // The next message must be this Completion, not a Ping.
        match client.recv().await {
            Some(HubMessage::Completion(completion)) => {
                assert_eq!(result_string(&completion), echo)
            }
            other => panic!("expected the Completion of Echo {echo}, got {other:?}"),
        }
        tokio::time::sleep(interval / 4).await;
    }
    let quiet = tokio::time::Instant::now();
    assert_eq!(client.recv().await, Some(HubMessage::Ping));
    assert!(quiet.elapsed() < WAIT);
}

/// A client that pinged once and then went silent is closed with a reason and may
/// reconnect; one that never pinged is not timed out.
#[tokio::test]
async fn silent_clients_time_out_after_their_first_ping() {
    let addr = start_test_hub(|o| {
        o.client_timeout = Duration::from_millis(300);
        o.keep_alive_interval = Duration::from_secs(60);
    })
    .await;
    let mut never_pinged = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut pinged = Client::connect(addr, "/hub", Protocol::Json).await;
    pinged.send(&HubMessage::Ping).await;
    let close = pinged.expect_close().await;
    assert!(close.allow_reconnect);
    assert!(close.error.unwrap().contains("client timeout"));
    assert_eq!(
        result_string(&never_pinged.invoke("Echo", ("still here",)).await),
        "still here"
    );
}

/// WebSocket pings from the client are answered while the server streams data to it, and the
/// data messages arrive whole and in order although the client reads late, so that the
/// server's writes stop part-way (tungstenite writes the Pongs; the transport writes the data
/// messages itself and resumes them where the socket stopped taking bytes).
#[tokio::test]
async fn websocket_pings_are_answered_between_data_messages() {
    use bytes::BytesMut;
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    const COUNT: usize = 12_000;
    const PING_EVERY: usize = 100;
    let addr = start_test_hub(|_| {}).await;
    let client = Client::connect(addr, "/hub", Protocol::Json).await;
    let (mut sink, mut stream) = client.ws.split();
    let payload = "p".repeat(2000);
    let sender = tokio::spawn({
        let payload = payload.clone();
        async move {
            for i in 0..COUNT {
                let frame = format!(
                    "{{\"type\":1,\"target\":\"Broadcast\",\"arguments\":[\"{i} {payload}\"]}}\u{1e}"
                );
                sink.feed(Message::text(frame)).await.unwrap();
                if i % PING_EVERY == 0 {
                    sink.feed(Message::Ping(i.to_string().into()))
                        .await
                        .unwrap();
                }
            }
            sink.flush().await.unwrap();
            sink
        }
    });
    // Reading late fills the socket's buffers, so the server's writes stop part-way.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut received, mut pongs) = (0, 0);
    let mut buf = BytesMut::new();
    while received < COUNT || pongs < COUNT / PING_EVERY {
        let message = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the server keeps sending")
            .expect("the socket stays open")
            .expect("every frame is well formed");
        match message {
            Message::Text(text) => {
                buf.extend_from_slice(text.as_bytes());
                while let Some(message) =
                    Protocol::Json.parse_message(&mut buf, usize::MAX).unwrap()
                {
                    let HubMessage::Invocation(invocation) = message else {
                        continue;
                    };
                    let args = invocation.arguments.into_values().unwrap();
                    let text = args[0].decode::<String>().unwrap();
                    assert_eq!(text, format!("{received} {payload}"), "in order, whole");
                    received += 1;
                }
            }
            Message::Pong(data) => {
                assert_eq!(&data[..], (pongs * PING_EVERY).to_string().as_bytes());
                pongs += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(sender.await.unwrap());
}
