//! Hostile and broken input: every case gets a clear error (a handshake error, a Completion
//! error or a Close with a reason), the server keeps running, and a bystander connection is
//! unaffected.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Client, error_text, result_string, start_test_hub};
use signalr_server::protocol::{HubMessage, Protocol};

/// A connection that must keep working whatever the other tests send.
async fn bystander(addr: SocketAddr) -> Client {
    Client::connect(addr, "/hub", Protocol::MessagePack).await
}

async fn still_works(bystander: &mut Client) {
    assert_eq!(
        result_string(&bystander.invoke("Echo", ("still here",)).await),
        "still here"
    );
}

/// Send `handshake` and return the error of the handshake response; the socket must close.
async fn handshake_error(addr: SocketAddr, handshake: &[u8]) -> String {
    let mut client = Client::open(addr, "/hub", Protocol::Json).await;
    client.send_text(handshake).await;
    let response = client.handshake_response().await;
    client.expect_socket_closed().await;
    response.error.expect("the handshake must be refused")
}

#[tokio::test]
async fn malformed_handshakes_are_refused_with_a_reason() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;

    let error = handshake_error(addr, b"{\"protocol\":\x1e").await;
    assert!(
        error.starts_with("An unexpected error occurred during connection handshake."),
        "{error}"
    );

    let error = handshake_error(addr, b"not json\x1e").await;
    assert!(error.contains("handshake"), "{error}");

    let error = handshake_error(addr, b"{\"protocol\":\"json\"}\x1e").await;
    assert!(error.contains("version"), "{error}");

    let error = handshake_error(addr, b"{\"protocol\":\"xml\",\"version\":1}\x1e").await;
    assert_eq!(error, "The protocol 'xml' is not supported.");

    let error = handshake_error(addr, b"{\"protocol\":\"json\",\"version\":3}\x1e").await;
    assert_eq!(
        error,
        "The server does not support version 3 of the 'json' protocol."
    );

    // A hub message instead of a handshake.
    let error = handshake_error(
        addr,
        b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[\"x\"]}\x1e",
    )
    .await;
    assert!(error.contains("protocol"), "{error}");

    still_works(&mut witness).await;
}

#[tokio::test]
async fn an_oversize_handshake_is_refused() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;
    let huge = vec![b' '; 40 * 1024];
    let error = handshake_error(addr, &huge).await;
    assert!(error.contains("maximum message size"), "{error}");
    still_works(&mut witness).await;
}

#[tokio::test]
async fn a_handshake_that_never_comes_times_out() {
    let addr = start_test_hub(|o| o.handshake_timeout = Duration::from_millis(200)).await;
    let mut witness = bystander(addr).await;
    let mut slow = Client::open(addr, "/hub", Protocol::Json).await;
    // Half a handshake, then nothing (a slowloris client).
    slow.send_text(b"{\"protocol\":").await;
    let response = slow.handshake_response().await;
    assert!(
        response
            .error
            .unwrap()
            .starts_with("Handshake was canceled")
    );
    slow.expect_socket_closed().await;
    still_works(&mut witness).await;
}

#[tokio::test]
async fn messagepack_over_a_text_only_transport_is_impossible_but_json_in_binary_frames_works() {
    // The Java client sends JSON in binary WebSocket frames.
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::open(addr, "/hub", Protocol::Json).await;
    client
        .send_binary(b"{\"protocol\":\"json\",\"version\":1}\x1e")
        .await;
    assert_eq!(client.handshake_response().await.error, None);
    client
        .send_binary(
            b"{\"type\":1,\"invocationId\":\"1\",\"target\":\"Echo\",\"arguments\":[\"bin\"]}\x1e",
        )
        .await;
    assert_eq!(result_string(&client.completion().await), "bin");
}

/// Close-worthy messages after the handshake: invalid JSON, invalid MessagePack, unknown
/// message types, nesting bombs.
#[tokio::test]
async fn invalid_messages_close_the_connection_with_a_reason() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;

    let cases: Vec<(Protocol, Vec<u8>, &str)> = vec![
        (Protocol::Json, b"{not json}\x1e".to_vec(), "JSON"),
        (Protocol::Json, b"[1,2]\x1e".to_vec(), "JSON"),
        (
            Protocol::Json,
            b"{\"type\":42}\x1e".to_vec(),
            "Unknown hub message type 42",
        ),
        (
            Protocol::Json,
            b"{\"type\":1,\"arguments\":[]}\x1e".to_vec(),
            "target",
        ),
        (
            Protocol::Json,
            [
                b"{\"type\":1,\"target\":\"Echo\",\"arguments\":[".as_slice(),
                &[b'['; 5000],
                b"]}\x1e",
            ]
            .concat(),
            "JSON",
        ),
        (
            Protocol::MessagePack,
            vec![0x03, 0x93, 0x01, 0x02],
            "MessagePack",
        ),
        (
            Protocol::MessagePack,
            vec![0x02, 0x91, 0x2a],
            "Unknown hub message type 42",
        ),
        (
            Protocol::MessagePack,
            vec![0x05, 0xdd, 0xff, 0xff, 0xff, 0xff],
            "MessagePack",
        ),
        (
            Protocol::MessagePack,
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            "",
        ),
    ];
    for (protocol, bytes, expected) in cases {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        client.send_raw(&bytes).await;
        let close = client.expect_close().await;
        let error = close.error.unwrap_or_default();
        assert!(
            error.starts_with("Connection closed with an error.") && error.contains(expected),
            "{protocol:?} {bytes:?}: {error}"
        );
        still_works(&mut witness).await;
    }
}

/// Invocation-level mistakes get an error Completion and the connection goes on.
#[tokio::test]
async fn bad_invocations_get_error_completions() {
    let addr = start_test_hub(|_| {}).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        assert_eq!(
            error_text(&client.invoke("Nope", ()).await),
            "Unknown hub method 'Nope'"
        );
        assert_eq!(
            error_text(&client.invoke("Echo", ("a", "b")).await),
            "Failed to invoke 'Echo' due to an error on the server. Invocation provides 2 argument(s) but target expects 1."
        );
        let wrong_type = error_text(&client.invoke("Add", ("one", 2)).await);
        assert!(
            wrong_type.starts_with(
                "Failed to invoke 'Add' due to an error on the server. Error binding argument 1:"
            ),
            "{wrong_type}"
        );
        // Without an invocation id, no reply at all, and the connection stays usable.
        client.send_invocation("Nope", ()).await;
        client.send_invocation("Echo", (1, 2, 3)).await;
        assert_eq!(
            result_string(&client.invoke("Echo", ("fine",)).await),
            "fine"
        );
    }
}

/// A hub message over the maximum size closes the connection with the limit in the reason,
/// whether it arrives in one WebSocket message or beyond the transport's own bound.
#[tokio::test]
async fn oversize_messages_close_with_a_reason() {
    let addr = start_test_hub(|_| {}).await;
    let mut witness = bystander(addr).await;
    for size in [40 * 1024, 200 * 1024] {
        for protocol in Protocol::ALL {
            let mut client = Client::connect(addr, "/hub", protocol).await;
            let big = "x".repeat(size);
            client.send_invocation("Echo", (big,)).await;
            let close = client.expect_close().await;
            let error = close.error.unwrap_or_default();
            assert!(
                error.contains("maximum message size of"),
                "{protocol:?} {size}: {error}"
            );
            assert!(close.allow_reconnect);
            still_works(&mut witness).await;
        }
    }
}

/// A MessagePack frame that declares more than the limit is refused before its bytes arrive.
#[tokio::test]
async fn a_declared_oversize_messagepack_frame_is_refused_at_once() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    // varint(1 MiB) and nothing else.
    client.send_binary(&[0x80, 0x80, 0x40]).await;
    let close = client.expect_close().await;
    assert!(close.error.unwrap().contains("maximum message size"));
}

/// Messages split across WebSocket frames at every byte, and batched several per frame, are
/// put back together.
#[tokio::test]
async fn split_and_batched_messages_are_reassembled() {
    let addr = start_test_hub(|_| {}).await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        let mut batch = Vec::new();
        for id in ["1", "2", "3"] {
            let message = HubMessage::Invocation(signalr_server::protocol::Invocation {
                invocation_id: Some(id.to_owned()),
                target: "Echo".to_owned(),
                arguments: signalr_server::protocol::Arguments::Encoded(
                    protocol.encode_value(&(format!("m{id}"),)).unwrap(),
                ),
                ..Default::default()
            });
            batch.extend_from_slice(&protocol.encode_message(&message).unwrap());
        }
        // One byte per WebSocket message for the first message, the rest in one.
        let first_len = batch.len() / 3;
        for byte in &batch[..first_len] {
            client.send_binary(std::slice::from_ref(byte)).await;
        }
        client.send_binary(&batch[first_len..]).await;
        for id in ["1", "2", "3"] {
            let completion = client.completion().await;
            assert_eq!(completion.invocation_id, id);
            assert_eq!(result_string(&completion), format!("m{id}"));
        }
    }
}
