//! The configurable limits, each shown holding while the server stays up for others: the
//! hub's connections on this node, negotiated connections not used yet, groups per
//! connection, client results waiting per connection, and the body of one HTTP send.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::http::{Http, HttpClient, negotiate, request, serve_hub};
use common::{Client, WAIT, error_text, eventually, result_string, test_hub_builder};
use futures::future::join_all;
use signalr_server::protocol::{CompletionResult, HubMessage, Protocol};
use signalr_server::{Clients, Hub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn still_works(client: &mut Client) {
    assert_eq!(
        result_string(&client.invoke("Echo", ("still here",)).await),
        "still here"
    );
}

/// `POST /hub/negotiate` on a fresh connection.
async fn negotiate_status(addr: SocketAddr) -> (u16, String) {
    let response = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    (response.status, response.text())
}

/// The status of a WebSocket upgrade that skips negotiation (no `id`).
async fn skip_negotiation_status(addr: SocketAddr) -> u16 {
    match Client::try_open(addr, "/hub", Protocol::Json).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected WebSocket error: {other}"),
    }
}

#[tokio::test]
async fn the_connection_limit_answers_503_and_gives_places_back() {
    let hub = test_hub_builder()
        .configure_transports(|t| t.max_connections = 2)
        .build();
    let addr = serve_hub(&hub).await;
    // One running connection and one negotiated, unused: the hub is full.
    let mut bystander = Client::connect(addr, "/hub", Protocol::Json).await;
    let token = negotiate(addr, "/hub", &[]).await;

    let (status, text) = negotiate_status(addr).await;
    assert_eq!(status, 503, "{text}");
    assert_eq!(
        text,
        "The server has reached its limit of 2 connections for this hub; try again later."
    );
    assert_eq!(skip_negotiation_status(addr).await, 503);
    still_works(&mut bystander).await;

    // The negotiated connection was counted at negotiate: starting it is not refused.
    let mut second = Client::connect(addr, &format!("/hub?id={token}"), Protocol::Json).await;
    still_works(&mut second).await;
    assert_eq!(negotiate_status(addr).await.0, 503);

    // A connection that ends gives its place back.
    drop(second);
    eventually(|| async { negotiate_status(addr).await.0 == 200 }).await;
    still_works(&mut bystander).await;
}

#[tokio::test]
async fn a_flood_of_negotiations_is_bounded_then_reaped() {
    let hub = test_hub_builder()
        .configure_transports(|t| {
            t.max_pending_negotiations = 5;
            t.disconnect_timeout = Duration::from_millis(300);
        })
        .build();
    let addr = serve_hub(&hub).await;
    let mut bystander = Client::connect(addr, "/hub", Protocol::MessagePack).await;

    let mut refused = 0;
    for _ in 0..50 {
        let (status, text) = negotiate_status(addr).await;
        match status {
            200 => {}
            503 => {
                assert_eq!(
                    text,
                    "The server has reached its limit of 5 negotiated connections not yet in use; try again later."
                );
                refused += 1;
            }
            other => panic!("negotiate answered {other}: {text}"),
        }
    }
    // 50 requests in well under the disconnect timeout: at most a few reaped meanwhile.
    assert!(refused >= 40, "only {refused} of 50 refused");
    still_works(&mut bystander).await;

    // Abandoned negotiations are reaped after the disconnect timeout; negotiate works again
    // and the place of a used one is not pending any more.
    eventually(|| async { negotiate_status(addr).await.0 == 200 }).await;
    // The flood's entries straddle housekeeping ticks; let the last of them go too.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut fresh = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    assert_eq!(
        result_string(&fresh.invoke("Echo", ("polled",)).await),
        "polled"
    );
    still_works(&mut bystander).await;
}

#[tokio::test]
async fn groups_per_connection_are_bounded_and_membership_is_unchanged() {
    let hub = test_hub_builder()
        .configure(|o| o.max_groups_per_connection = 3)
        .build();
    let addr = serve_hub(&hub).await;
    let mut member = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut sender = Client::connect(addr, "/hub", Protocol::MessagePack).await;

    for group in ["a", "b", "c"] {
        let completion = member.invoke("Join", (group,)).await;
        assert!(
            matches!(completion.result, CompletionResult::Void),
            "{completion:?}"
        );
    }
    let refused = error_text(&member.invoke("Join", ("d",)).await);
    assert!(
        refused.starts_with(
            "An unexpected error occurred invoking 'Join' on the server. HubException: Connection '"
        ) && refused
            .ends_with("' is already in 3 groups, the most allowed; it was not added to 'd'."),
        "{refused}"
    );
    // Joining a group it is in already is not one more.
    assert!(matches!(
        member.invoke("Join", ("a",)).await.result,
        CompletionResult::Void
    ));

    // "d" has no members; "c" still has this one.
    sender.invoke("SendGroup", ("d", "to d")).await;
    sender.invoke("SendGroup", ("c", "to c")).await;
    match member.recv_no_ping().await {
        Some(HubMessage::Invocation(invocation)) => {
            let arguments = invocation.arguments.into_values().unwrap();
            let text: String = arguments[0].decode().unwrap();
            assert_eq!(text, "to c");
        }
        other => panic!("expected the message to c, got {other:?}"),
    }
    still_works(&mut member).await;
    still_works(&mut sender).await;
}

/// Ask the caller for `count` client results at once; each answer or error as text.
async fn ask_many(clients: Clients, count: usize) -> Vec<String> {
    let caller = clients.caller();
    let calls = (0..count).map(|_| {
        let caller = caller.clone();
        async move {
            match caller.invoke::<i64, _>("getNumber", ()).await {
                Ok(number) => number.to_string(),
                Err(error) => format!("error: {}", error.message()),
            }
        }
    });
    join_all(calls).await
}

#[tokio::test]
async fn pending_client_results_are_bounded() {
    let hub = test_hub_builder()
        .method("AskMany", ask_many)
        .configure(|o| o.max_pending_client_results = 2)
        .build();
    let addr = serve_hub(&hub).await;
    let mut bystander = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client.send_invocation_with_id("ask", "AskMany", (3,)).await;

    // Two requests arrive; the third call failed at once, without waiting for them.
    let mut asked = Vec::new();
    while asked.len() < 2 {
        match client.recv_no_ping().await {
            Some(HubMessage::Invocation(invocation)) => {
                assert_eq!(invocation.target, "getNumber");
                asked.push(
                    invocation
                        .invocation_id
                        .expect("a client-result request has an id"),
                );
            }
            other => panic!("expected a client-result request, got {other:?}"),
        }
    }
    still_works(&mut bystander).await;
    for id in &asked {
        client.send_completion(id, &41).await;
    }
    let completion = client.completion().await;
    assert_eq!(completion.invocation_id, "ask");
    let CompletionResult::Value(value) = &completion.result else {
        panic!("{completion:?}");
    };
    let answers: Vec<String> = value.decode().unwrap();
    assert_eq!(&answers[..2], ["41", "41"]);
    assert_eq!(
        answers[2],
        "error: The client already has 2 client-result invocations waiting for an answer, the most allowed."
    );
    // Answered, they no longer count.
    client
        .send_invocation_with_id("again", "AskMany", (1,))
        .await;
    match client.recv_no_ping().await {
        Some(HubMessage::Invocation(invocation)) => {
            client
                .send_completion(&invocation.invocation_id.unwrap(), &1)
                .await;
        }
        other => panic!("expected a client-result request, got {other:?}"),
    }
    assert_eq!(client.completion().await.invocation_id, "again");
}

/// A send body over the limit is answered 413 and the connection is closed with the reason,
/// on both HTTP transports, with the body's size declared up front or not.
#[tokio::test]
async fn an_oversize_send_body_is_refused_and_closes_the_connection() {
    let hub = test_hub_builder()
        .configure_transports(|t| t.max_request_body_bytes = 4096)
        .build();
    let addr = serve_hub(&hub).await;
    let mut bystander = Client::connect(addr, "/hub", Protocol::Json).await;

    for transport in [Http::LongPolling, Http::ServerSentEvents] {
        for declared in [true, false] {
            let mut client =
                HttpClient::connect(addr, "/hub", transport, Protocol::Json, &[]).await;
            // Many small, valid messages: only the size of the body is wrong.
            let one = b"{\"type\":6}\x1e";
            let body: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
            let (status, text) = if declared {
                let response = client.post(&body).await;
                (response.status, response.text())
            } else {
                post_chunked(addr, &client.url, &body).await
            };
            assert_eq!(status, 413, "{transport:?} declared={declared}: {text}");
            assert_eq!(
                text,
                "The request body exceeds the maximum size of 4096 bytes; the connection is closed."
            );
            let close = client.expect_close().await;
            assert_eq!(
                close.error.as_deref(),
                Some(
                    "Connection closed with an error. The request body exceeded the maximum size of 4096 bytes."
                ),
                "{transport:?} declared={declared}"
            );
            still_works(&mut bystander).await;
        }
    }
}

/// `POST` a body in chunked transfer encoding (no declared length); status and body text.
async fn post_chunked(addr: SocketAddr, url: &str, body: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {url} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in body.chunks(1000) {
        let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
        framed.extend_from_slice(chunk);
        framed.extend_from_slice(b"\r\n");
        // The server may answer and close before the whole body is sent.
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().expect("status code");
    let (_, rest) = text.split_once("\r\n\r\n").expect("response head");
    // The answer is short and sent with a length.
    (status, rest.to_owned())
}

#[tokio::test]
async fn the_defaults_are_documented_values() {
    let hub = Hub::builder().build();
    let options = hub.options();
    assert_eq!(options.name, "hub");
    assert_eq!(options.max_groups_per_connection, 1000);
    assert_eq!(options.max_pending_client_results, 100);
    assert_eq!(options.max_receive_message_size, 32 * 1024);
    assert_eq!(options.handshake_timeout, Duration::from_secs(15));
    let transport = signalr_server::TransportOptions::default();
    assert_eq!(transport.max_connections, 100_000);
    assert_eq!(transport.max_pending_negotiations, 10_000);
    assert_eq!(transport.max_request_body_bytes, 1024 * 1024);
    assert_eq!(transport.max_buffered_bytes, 1024 * 1024);
    assert_eq!(transport.max_websocket_message_bytes, 64 * 1024);
}

/// Timings of zero are refused when the hub is built, with the option's name: a zero
/// keep-alive interval would make every connection ping in a busy loop.
#[test]
fn zero_timings_are_refused_when_the_hub_is_built() {
    type Zero = fn(&mut signalr_server::HubOptions);
    let cases: [(&str, Zero); 3] = [
        ("keep_alive_interval", |o| {
            o.keep_alive_interval = Duration::ZERO
        }),
        ("client_timeout", |o| o.client_timeout = Duration::ZERO),
        ("handshake_timeout", |o| {
            o.handshake_timeout = Duration::ZERO
        }),
    ];
    for (name, zero) in cases {
        let built = std::panic::catch_unwind(|| Hub::builder().configure(zero).build());
        let message = match built {
            Ok(_) => panic!("a hub with {name} = 0 was built"),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default(),
        };
        assert_eq!(message, format!("{name} must be greater than zero"));
    }
    // The smallest non-zero values are accepted.
    Hub::builder()
        .configure(|o| {
            o.keep_alive_interval = Duration::from_millis(1);
            o.client_timeout = Duration::from_millis(1);
            o.handshake_timeout = Duration::from_millis(1);
        })
        .build();
}
