//! Messages that arrive from Redis together are delivered in batches (one push per member
//! for the sends to a group or to everyone in a batch); every connection still gets them in
//! the order the other node sent them.

mod common;
use common::{message, next_text, start_server};

use std::time::Duration;

use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::Protocol;
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager};

const ROUNDS: usize = 300;

/// Everything `client` gets until nothing more comes for a while.
async fn texts(client: &mut TestClient, count: usize) -> Vec<String> {
    let mut texts = Vec::with_capacity(count);
    while texts.len() < count {
        match next_text(client, Duration::from_secs(10)).await {
            Some(text) => texts.push(text),
            None => break,
        }
    }
    texts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_another_node_arrives_in_order() {
    let server = start_server().await;
    let config = RedisConfig::new(server.url()).hub_name("Order.Hub");
    let sender = RedisHubLifetimeManager::connect(config.clone())
        .await
        .unwrap();
    let receiver = RedisHubLifetimeManager::connect(config).await.unwrap();

    // `both` shares groups A and B; C and D have members in no other group.
    let memberships: [(&str, &[&str]); 5] = [
        ("both", &["A", "B"]),
        ("a", &["A"]),
        ("b", &["B"]),
        ("c", &["C"]),
        ("d", &["D"]),
    ];
    let mut clients = Vec::new();
    for (id, groups) in memberships {
        let client = TestClient::new(id, None, Protocol::Json);
        receiver.on_connected(client.connection()).await.unwrap();
        for group in groups {
            receiver.add_to_group(id, group).await.unwrap();
        }
        clients.push((client, groups));
    }

    // Pipelined publishes: the receiving node reads them in batches.
    let mut sent: Vec<(Option<&str>, String)> = Vec::new();
    for round in 0..ROUNDS {
        for group in ["A", "C", "B", "C", "D", "A"] {
            sent.push((Some(group), format!("{group}{round}.{}", sent.len())));
        }
        if round % 7 == 0 {
            sent.push((None, format!("all{round}")));
        }
    }
    for (group, text) in &sent {
        let audience = match group {
            Some(group) => Audience::Group((*group).to_owned()),
            None => Audience::All,
        };
        sender.send(&audience, &message(text)).await.unwrap();
    }
    sender.flush().await;

    for (client, groups) in &mut clients {
        let expected: Vec<String> = sent
            .iter()
            .filter(|(group, _)| group.is_none_or(|group| groups.contains(&group)))
            .map(|(_, text)| text.clone())
            .collect();
        let got = texts(client, expected.len()).await;
        assert_eq!(got.len(), expected.len(), "connection {}", client.id());
        if let Some(at) = got.iter().zip(&expected).position(|(g, e)| g != e) {
            panic!(
                "connection {} got {:?} where {:?} was sent",
                client.id(),
                &got[at..(at + 5).min(got.len())],
                &expected[at..(at + 5).min(expected.len())]
            );
        }
    }
}
