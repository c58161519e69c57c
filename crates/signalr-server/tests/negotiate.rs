//! Negotiate and the WebSocket connect request at the HTTP level.

mod common;

use common::{Client, http, start_test_hub};
use serde_json::Value;
use signalr_server::protocol::Protocol;

/// Version 1: a public connection id and a different secret token, both URL-safe, and the
/// transports offered (all three by default, in ASP.NET Core's order).
#[tokio::test]
async fn negotiate_v1_returns_id_and_token() {
    let addr = start_test_hub(|_| {}).await;
    let (status, body) = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", "").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["negotiateVersion"], 1);
    let id = json["connectionId"].as_str().unwrap();
    let token = json["connectionToken"].as_str().unwrap();
    assert_ne!(id, token);
    for value in [id, token] {
        assert_eq!(value.len(), 22);
        assert!(
            value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
    }
    assert_eq!(
        json["availableTransports"],
        serde_json::json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );
    assert!(json.get("useStatefulReconnect").is_none());
    assert!(json.get("ProtocolVersion").is_none());
}

/// No version: version 0, no token; the id goes in `id=`.
#[tokio::test]
async fn negotiate_v0_has_no_token_and_the_id_connects() {
    let addr = start_test_hub(|_| {}).await;
    let (status, body) = http(addr, "POST", "/hub/negotiate", "").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["negotiateVersion"], 0);
    assert!(json.get("connectionToken").is_none());
    let id = json["connectionId"].as_str().unwrap();
    let mut client = Client::connect(addr, &format!("/hub?id={id}"), Protocol::Json).await;
    let completion = client.invoke("Echo", ("v0",)).await;
    assert_eq!(common::result_string(&completion), "v0");
}

/// Versions above 1 are answered with 1; the parameter name is case-insensitive.
#[tokio::test]
async fn negotiate_clamps_newer_versions() {
    let addr = start_test_hub(|_| {}).await;
    let (_, body) = http(addr, "POST", "/hub/negotiate?NEGOTIATEVERSION=7", "").await;
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["negotiateVersion"], 1);
}

/// A non-integer version is an error the client shows verbatim.
#[tokio::test]
async fn negotiate_rejects_a_non_integer_version() {
    let addr = start_test_hub(|_| {}).await;
    let (status, body) = http(addr, "POST", "/hub/negotiate?negotiateVersion=one", "").await;
    assert_eq!(status, 200);
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        json["error"],
        "The client requested a non-integer protocol version."
    );
}

/// Negotiate must be a POST.
#[tokio::test]
async fn negotiate_requires_post() {
    let addr = start_test_hub(|_| {}).await;
    let (status, _) = http(addr, "GET", "/hub/negotiate?negotiateVersion=1", "").await;
    assert_eq!(status, 405);
}

/// The token connects once; an unknown token is 404; a second WebSocket for a live token is
/// 409; a plain GET (a long poll) with an unknown token is 404.
#[tokio::test]
async fn websocket_tokens_are_checked() {
    let addr = start_test_hub(|_| {}).await;
    let unknown = Client::try_open(addr, "/hub?id=nope", Protocol::Json).await;
    match unknown {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }

    let (_, body) = http(addr, "POST", "/hub/negotiate?negotiateVersion=1", "").await;
    let json: Value = serde_json::from_str(&body).unwrap();
    let token = json["connectionToken"].as_str().unwrap().to_owned();
    let _first = Client::connect(addr, &format!("/hub?id={token}"), Protocol::Json).await;
    match Client::try_open(addr, &format!("/hub?id={token}"), Protocol::Json).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 409)
        }
        other => panic!("expected 409, got {:?}", other.map(|_| ())),
    }

    let (status, _) = http(addr, "GET", "/hub?id=whatever", "").await;
    assert_eq!(status, 404);
}

/// Skipping negotiation: a WebSocket without `id` is a new connection.
#[tokio::test]
async fn skip_negotiation_connects_directly() {
    let addr = start_test_hub(|_| {}).await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    let completion = client.invoke("Add", (40, 2)).await;
    match completion.result {
        signalr_server::protocol::CompletionResult::Value(v) => {
            assert_eq!(v.decode::<i64>().unwrap(), 42)
        }
        other => panic!("{other:?}"),
    }
}
