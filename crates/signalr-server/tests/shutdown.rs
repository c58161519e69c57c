//! Graceful shutdown: every connection, on every transport, is told to reconnect elsewhere,
//! new connections are refused, and the hub's shutdown completes.

mod common;

use std::time::Duration;

use common::http::{EventStream, Http, HttpClient, negotiate, request, serve_hub};
use common::{Client, WAIT, result_string, test_hub_builder};
use signalr_server::protocol::Protocol;

/// Each live connection gets `Close { error: "Server is shutting down.", allowReconnect:
/// true }` and its transport ends; negotiate answers 503 afterwards.
#[tokio::test]
async fn every_transport_gets_a_close_that_allows_reconnecting() {
    let hub = test_hub_builder()
        .configure_transports(|t| t.poll_timeout = Duration::from_secs(3600))
        .build();
    let addr = serve_hub(&hub).await;
    let mut ws_json = Client::connect(addr, "/hub", Protocol::Json).await;
    let token = negotiate(addr, "/hub", &[]).await;
    let mut ws_msgpack =
        Client::connect(addr, &format!("/hub?id={token}"), Protocol::MessagePack).await;
    let mut sse =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    let mut lp_json =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let mut lp_msgpack =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::MessagePack, &[]).await;
    assert_eq!(result_string(&lp_json.invoke("Echo", ("up",)).await), "up");

    // One long poll is already waiting when shutdown begins; the other client polls later.
    let waiting = tokio::spawn(async move {
        let close = lp_json.expect_close().await;
        (lp_json, close)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let shutdown = tokio::spawn(hub.shutdown());

    for client in [&mut ws_json, &mut ws_msgpack] {
        let close = client.expect_close().await;
        assert_eq!(close.error.as_deref(), Some("Server is shutting down."));
        assert!(close.allow_reconnect);
    }
    let (lp_json, close) = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    for (close, client) in [
        (close, lp_json),
        (sse.expect_close().await, sse),
        (lp_msgpack.expect_close().await, lp_msgpack),
    ] {
        assert_eq!(close.error.as_deref(), Some("Server is shutting down."));
        assert!(close.allow_reconnect);
        assert!(client.ended, "the transport ended after the Close");
    }

    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown completed")
        .unwrap();
    let refused = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.text().contains("shutting down"),
        "{}",
        refused.text()
    );
}

/// New connections are refused from the moment shutdown begins, also on tokens negotiated
/// before it; connections that do not go away are dropped after the shutdown timeout and an
/// outstanding long poll is answered 204.
#[tokio::test]
async fn stragglers_are_dropped_after_the_timeout() {
    let hub = test_hub_builder()
        .configure_transports(|t| {
            t.poll_timeout = Duration::from_secs(3600);
            // Long enough for the poll below to be in before the stragglers are dropped.
            t.shutdown_timeout = Duration::from_secs(1);
        })
        .build();
    let addr = serve_hub(&hub).await;
    let unused = negotiate(addr, "/hub", &[]).await;
    // Started, but it never sends its handshake: it cannot be told to go away.
    let silent = HttpClient::open(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let outstanding = {
        let (addr, url) = (silent.addr, silent.url.clone());
        tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    tokio::time::timeout(WAIT, hub.shutdown())
        .await
        .expect("shutdown completed within its timeout");
    let poll = tokio::time::timeout(WAIT, outstanding)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(poll.status, 204);
    assert_eq!(silent.poll().await.status, 404);
    // The connection negotiated before shutdown cannot start now.
    let late = EventStream::open(addr, &format!("/hub?id={unused}"), &[]).await;
    assert!(matches!(late, Err(ref r) if r.status == 404 || r.status == 503));
    match Client::try_open(addr, "/hub", Protocol::Json).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}
