//! Helpers shared by the backplane's integration tests: a redis-server of their own, and
//! reading the `message(text)` invocations the tests send.

// Each test file uses some of these.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use signalr_redis::testing::RedisServer;
use signalr_server::SerializedMessage;
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::testing::TestClient;

/// A fresh redis-server on a free loopback port (started off the async runtime), shared so
/// a test can kill and restart it from a blocking task.
pub async fn start_server() -> Arc<RedisServer> {
    Arc::new(
        tokio::task::spawn_blocking(RedisServer::start)
            .await
            .unwrap(),
    )
}

/// A `message(text)` invocation in every protocol.
pub fn message(text: &str) -> SerializedMessage {
    SerializedMessage::invocation("message", &(text,), &Protocol::ALL).unwrap()
}

/// The text of the next `message` invocation, if one arrives within `wait`.
pub async fn next_text(client: &mut TestClient, wait: Duration) -> Option<String> {
    match client.recv(wait).await? {
        HubMessage::Invocation(invocation) => {
            let arguments = invocation.arguments.into_values().unwrap();
            Some(arguments[0].decode::<String>().unwrap())
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// The next `message` invocation, within 5 s, is `text`.
pub async fn expect_text(client: &mut TestClient, text: &str) {
    let got = next_text(client, Duration::from_secs(5)).await;
    assert_eq!(got.as_deref(), Some(text), "connection {}", client.id());
}
