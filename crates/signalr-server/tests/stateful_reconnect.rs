//! Stateful reconnect over real sockets: a WebSocket dropped without a close is replaced by
//! the client's next one, and nothing is lost or duplicated in either direction.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, http, start};
use serde_json::Value;
use signalr_server::protocol::{
    Ack, Arguments, HandshakeRequest, HubMessage, Invocation, Protocol, Sequence,
};
use signalr_server::{Clients, Hub, HubContext, HubError, State};

#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<i64>>>);

async fn record(State(recorded): State<Recorded>, n: i64) {
    recorded.0.lock().unwrap().push(n);
}

async fn numbers(clients: Clients, from: i64, to: i64) -> Result<(), HubError> {
    for n in from..to {
        clients.caller().send("n", (n,)).await?;
    }
    Ok(())
}

struct Server {
    addr: SocketAddr,
    context: HubContext,
    recorded: Recorded,
}

async fn server(allow: bool, disconnect_timeout: Duration) -> Server {
    let recorded = Recorded::default();
    let hub = Hub::builder()
        .with_state(recorded.clone())
        .method("Record", record)
        .method("Numbers", numbers)
        .configure_transports(|t| {
            t.allow_stateful_reconnect = allow;
            t.disconnect_timeout = disconnect_timeout;
        })
        .build();
    let context = hub.context();
    let addr = start(axum::Router::new().merge(hub.router("/hub"))).await;
    Server {
        addr,
        context,
        recorded,
    }
}

async fn negotiate(addr: SocketAddr, ask: bool) -> Value {
    let query = if ask {
        "negotiateVersion=1&useStatefulReconnect=true"
    } else {
        "negotiateVersion=1"
    };
    let (status, body) = http(addr, "POST", &format!("/hub/negotiate?{query}"), "").await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

async fn connect_v2(addr: SocketAddr, token: &str, protocol: Protocol) -> Client {
    let mut client = Client::open(addr, &format!("/hub?id={token}"), protocol).await;
    let mut handshake = bytes::BytesMut::new();
    HandshakeRequest {
        protocol: protocol.name().to_owned(),
        version: 2,
    }
    .write(&mut handshake);
    client.send_text(&handshake).await;
    assert_eq!(client.handshake_response().await.error, None);
    client
}

fn record_invocation(protocol: Protocol, n: i64) -> HubMessage {
    HubMessage::Invocation(Invocation {
        target: "Record".into(),
        arguments: Arguments::Encoded(protocol.encode_value(&(n,)).unwrap()),
        ..Invocation::default()
    })
}

/// The client side of the sequence bookkeeping: which server messages it has seen.
#[derive(Default)]
struct Received {
    numbers: Vec<i64>,
    /// Id of the last trackable server message processed.
    processed: u64,
    /// Id of the last trackable server message seen since the last Sequence.
    seen: u64,
}

impl Received {
    /// Read until `count` numbers in total have been received, dropping duplicates.
    async fn read_numbers(&mut self, client: &mut Client, count: usize) {
        while self.numbers.len() < count {
            match client.recv().await.expect("socket open") {
                HubMessage::Sequence(Sequence { sequence_id }) => self.seen = sequence_id - 1,
                HubMessage::Invocation(invocation) => {
                    self.seen += 1;
                    if self.seen <= self.processed {
                        continue;
                    }
                    self.processed = self.seen;
                    assert_eq!(invocation.target, "n");
                    let n: i64 = invocation.arguments.into_values().unwrap()[0]
                        .decode()
                        .unwrap();
                    self.numbers.push(n);
                }
                HubMessage::Completion(_) => {
                    // Trackable too: counted, not otherwise interesting here.
                    self.seen += 1;
                    self.processed = self.processed.max(self.seen);
                }
                HubMessage::Ping | HubMessage::Ack(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn negotiate_offers_stateful_reconnect_only_when_allowed_and_asked() {
    let allowed = server(true, Duration::from_secs(15)).await;
    assert_eq!(
        negotiate(allowed.addr, true).await["useStatefulReconnect"],
        true
    );
    assert!(
        negotiate(allowed.addr, false)
            .await
            .get("useStatefulReconnect")
            .is_none()
    );
    let refused = server(false, Duration::from_secs(15)).await;
    assert!(
        negotiate(refused.addr, true)
            .await
            .get("useStatefulReconnect")
            .is_none()
    );
}

/// Messages both ways across a dropped TCP connection: every number arrives once, in order.
#[tokio::test]
async fn nothing_lost_or_duplicated_across_a_dropped_socket() {
    for protocol in Protocol::ALL {
        let server = server(true, Duration::from_secs(15)).await;
        let negotiated = negotiate(server.addr, true).await;
        let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
        let connection_id = negotiated["connectionId"].as_str().unwrap().to_owned();

        let mut client = connect_v2(server.addr, &token, protocol).await;
        // Client → server: two trackable messages (ids 1 and 2).
        client.send(&record_invocation(protocol, 1)).await;
        client.send(&record_invocation(protocol, 2)).await;
        // Server → client: 0..50.
        client
            .send_invocation_with_id("q", "Numbers", (0, 50))
            .await;
        let mut received = Received::default();
        received.read_numbers(&mut client, 20).await;

        // The TCP connection dies without a close frame.
        drop(client);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The server keeps sending meanwhile.
        for n in 50..60 {
            server
                .context
                .clients()
                .client(connection_id.clone())
                .send("n", (n,))
                .await
                .unwrap();
        }

        // Resume: same token, no handshake, the client's Sequence first. The client's
        // trackable messages were Record(1) = 1, Record(2) = 2, Numbers = 3; it saw an Ack for
        // the first only, so it resends from 2, then sends a new one (id 4).
        let mut client = Client::open(server.addr, &format!("/hub?id={token}"), protocol).await;
        client
            .send(&HubMessage::Sequence(Sequence { sequence_id: 2 }))
            .await;
        client.send(&record_invocation(protocol, 2)).await;
        client
            .send_invocation_with_id("q", "Numbers", (0, 50))
            .await;
        client.send(&record_invocation(protocol, 3)).await;
        received.read_numbers(&mut client, 60).await;
        assert_eq!(
            received.numbers,
            (0..60).collect::<Vec<_>>(),
            "{protocol:?}"
        );

        // The server processed each client message once.
        for _ in 0..100 {
            if server.recorded.0.lock().unwrap().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *server.recorded.0.lock().unwrap(),
            vec![1, 2, 3],
            "{protocol:?}"
        );
    }
}

/// The server acknowledges what it received, and drops what the client acknowledged.
#[tokio::test]
async fn acks_flow_both_ways() {
    let server = server(true, Duration::from_secs(15)).await;
    let negotiated = negotiate(server.addr, true).await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let mut client = connect_v2(server.addr, &token, Protocol::Json).await;
    client.send(&record_invocation(Protocol::Json, 7)).await;
    client.send(&record_invocation(Protocol::Json, 8)).await;
    // Acks come about once a second and name the last message processed.
    loop {
        match client.recv().await.expect("open") {
            HubMessage::Ack(Ack { sequence_id: 2 }) => break,
            HubMessage::Ack(Ack { sequence_id: 1 }) | HubMessage::Ping => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    // Acknowledge everything the server sent; a resume then replays nothing.
    client.send_invocation_with_id("q", "Numbers", (0, 3)).await;
    let mut received = Received::default();
    received.read_numbers(&mut client, 3).await;
    let _completion = client.completion().await;
    client
        .send(&HubMessage::Ack(Ack {
            sequence_id: received.processed + 1,
        }))
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut client = Client::open(server.addr, &format!("/hub?id={token}"), Protocol::Json).await;
    client
        .send(&HubMessage::Sequence(Sequence { sequence_id: 3 }))
        .await;
    match client.recv_no_ping().await {
        Some(HubMessage::Sequence(Sequence { sequence_id })) => {
            assert_eq!(
                sequence_id,
                received.processed + 2,
                "nothing left to replay"
            )
        }
        other => panic!("expected a Sequence, got {other:?}"),
    }
}

/// Without a version 2 handshake the feature is off: a dropped socket ends the connection.
#[tokio::test]
async fn a_version_1_handshake_turns_it_off() {
    let server = server(true, Duration::from_secs(15)).await;
    let negotiated = negotiate(server.addr, true).await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let client = Client::connect(server.addr, &format!("/hub?id={token}"), Protocol::Json).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Client::try_open(server.addr, &format!("/hub?id={token}"), Protocol::Json)
            .await
            .is_err()
    );
}

/// A client that closes properly cannot resume; one that does not come back in time cannot
/// either.
#[tokio::test]
async fn close_frames_and_the_disconnect_timeout_end_it_for_good() {
    let server = server(true, Duration::from_millis(300)).await;

    let negotiated = negotiate(server.addr, true).await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let mut client = connect_v2(server.addr, &token, Protocol::Json).await;
    client.ws.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        Client::try_open(server.addr, &format!("/hub?id={token}"), Protocol::Json)
            .await
            .is_err()
    );

    let negotiated = negotiate(server.addr, true).await;
    let token = negotiated["connectionToken"].as_str().unwrap().to_owned();
    let client = connect_v2(server.addr, &token, Protocol::Json).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert!(
        Client::try_open(server.addr, &format!("/hub?id={token}"), Protocol::Json)
            .await
            .is_err()
    );
}

/// A client's Sequence message that claims more messages than it sent is a protocol error:
/// the connection ends for good, with the reason.
#[tokio::test]
async fn a_sequence_beyond_what_was_sent_ends_the_connection() {
    let server = server(true, Duration::from_secs(5)).await;
    let negotiated = negotiate(server.addr, true).await;
    let token = negotiated["connectionToken"].as_str().unwrap();
    let mut client = connect_v2(server.addr, token, Protocol::Json).await;
    client.send(&record_invocation(Protocol::Json, 1)).await;
    client
        .send(&HubMessage::Sequence(Sequence { sequence_id: 50 }))
        .await;
    let close = client.expect_close().await;
    assert_eq!(
        close.error.as_deref(),
        Some(
            "Connection closed with an error. Sequence ID 50 is greater than the amount of messages received (1)."
        )
    );
    assert!(!close.allow_reconnect);
}
