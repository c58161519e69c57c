//! Sends to connections on another node do not wait for Redis one at a time: a loop of
//! sends queues them on the node's one publishing connection, and they arrive complete and
//! in the order they were sent.

mod common;

use std::time::Duration;

use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager, SerializedMessage};

const MESSAGES: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_of_sends_to_a_remote_connection_arrives_whole_and_in_order() {
    let server = common::start_server().await;
    let config = RedisConfig::new(server.url()).hub_name("Pipelining.Hub");
    let sender = RedisHubLifetimeManager::connect(config.clone())
        .await
        .unwrap();
    let receiver = RedisHubLifetimeManager::connect(config).await.unwrap();
    let mut far = TestClient::new("far", None, Protocol::Json);
    receiver.on_connected(far.connection()).await.unwrap();

    let sending = tokio::spawn(async move {
        for n in 0..MESSAGES {
            let message = SerializedMessage::invocation("message", &(n,), &Protocol::ALL).unwrap();
            sender
                .send(&Audience::Connection("far".into()), &message)
                .await
                .unwrap();
        }
        sender
    });
    for expected in 0..MESSAGES {
        let got = match far.recv(Duration::from_secs(10)).await {
            Some(HubMessage::Invocation(invocation)) => invocation.arguments.into_values().unwrap()
                [0]
            .decode::<usize>()
            .unwrap(),
            other => panic!("message {expected}: got {other:?}"),
        };
        assert_eq!(got, expected, "out of order");
    }
    let sender = sending.await.unwrap();
    assert!(
        far.recv(Duration::from_millis(200)).await.is_none(),
        "a duplicate"
    );
    let stats = sender.stats();
    assert_eq!(stats.lost_messages, 0);
    assert!(stats.publishes >= MESSAGES as u64, "{stats:?}");
}
