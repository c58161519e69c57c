//! A node under load: connections arriving together share SUBSCRIBE commands, a publish
//! whose answer comes too late is neither delivered twice nor taken as the end of the
//! connection, and a node too busy to run its tasks still reads its subscription.

mod common;
use common::{expect_text, message, next_text, start_server};

use std::sync::Arc;
use std::time::Duration;

use signalr_redis::testing::{RedisServer, Reply};
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::Protocol;
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager};

/// Calls of `command` Redis has served so far (`INFO commandstats`).
fn calls(server: &RedisServer, command: &str) -> u64 {
    let mut redis = server.connect().unwrap();
    let info = redis.command(&["INFO", "commandstats"]).unwrap();
    let text = info.as_text().expect("INFO answers text").to_owned();
    let prefix = format!("cmdstat_{command}:calls=");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |rest| {
            rest.split(',').next().unwrap().parse().expect("a count")
        })
}

const CONNECTIONS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_arriving_together_share_subscribes() {
    let server = start_server().await;
    let config = RedisConfig::new(server.url()).hub_name("Busy.Hub");
    let node = RedisHubLifetimeManager::connect(config.clone())
        .await
        .unwrap();
    let other = RedisHubLifetimeManager::connect(config).await.unwrap();
    let before = calls(&server, "subscribe");

    let mut clients: Vec<TestClient> = (0..CONNECTIONS)
        .map(|i| TestClient::new(&format!("c{i}"), Some(&format!("u{i}")), Protocol::Json))
        .collect();
    let arrivals = clients
        .iter()
        .map(|client| node.on_connected(client.connection()));
    for result in futures::future::join_all(arrivals).await {
        result.unwrap();
    }
    let subscribes = calls(&server, "subscribe") - before;
    println!("{CONNECTIONS} connections (and their users) took {subscribes} SUBSCRIBE commands");
    assert!(
        subscribes * 10 <= CONNECTIONS as u64,
        "{subscribes} SUBSCRIBE commands for {CONNECTIONS} connections arriving together"
    );

    // Every connection's and user's channel is live: on_connected returned after Redis
    // confirmed them, so sends from the other node reach each one.
    for (i, client) in clients.iter_mut().enumerate() {
        let audience = if i % 2 == 0 {
            Audience::Connection(format!("c{i}"))
        } else {
            Audience::User(format!("u{i}"))
        };
        other
            .send(&audience, &message(&format!("to {i}")))
            .await
            .unwrap();
        expect_text(client, &format!("to {i}")).await;
    }

    // Leaving together shares UNSUBSCRIBE commands the same way.
    let before = calls(&server, "unsubscribe");
    let departures = clients
        .iter()
        .map(|client| node.on_disconnected(client.connection()));
    futures::future::join_all(departures).await;
    let unsubscribes = calls(&server, "unsubscribe") - before;
    assert!(
        unsubscribes * 10 <= CONNECTIONS as u64,
        "{unsubscribes} UNSUBSCRIBE commands for {CONNECTIONS} connections leaving together"
    );
    let channels = [node.channels().connection("c0"), node.channels().user("u1")];
    let mut redis = server.connect().unwrap();
    let mut command: Vec<&[u8]> = vec![b"PUBSUB", b"NUMSUB"];
    command.extend(channels.iter().map(|c| &c[..]));
    let Reply::Array(numsub) = redis.command(&command).unwrap() else {
        panic!("PUBSUB NUMSUB answers an array");
    };
    assert_eq!(
        numsub.iter().skip(1).step_by(2).collect::<Vec<_>>(),
        [&Reply::Integer(0), &Reply::Integer(0)],
        "the channels of connections that left are unsubscribed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_answered_late_is_delivered_once() {
    let server = start_server().await;
    let config = RedisConfig::new(server.url())
        .hub_name("Busy.Hub")
        .response_timeout(Duration::from_millis(300));
    let node = RedisHubLifetimeManager::connect(config).await.unwrap();
    let mut local = TestClient::new("local", None, Protocol::Json);
    node.on_connected(local.connection()).await.unwrap();
    let before = node.stats();

    // Redis holds back write commands (PUBLISH among them) for 1.5 s, then runs them:
    // the node's publish times out, yet Redis publishes it afterwards.
    let mut redis = server.connect().unwrap();
    redis
        .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
        .unwrap();
    node.send(&Audience::All, &message("late")).await.unwrap();

    assert_eq!(
        next_text(&mut local, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("late")
    );
    assert_eq!(
        next_text(&mut local, Duration::from_secs(1)).await,
        None,
        "delivered twice: locally after the timeout and again by Redis"
    );
    let stats = node.stats();
    assert!(
        stats.publish_errors > before.publish_errors,
        "the timed-out publish is counted: {stats:?}"
    );
    assert!(
        stats.messages_received > before.messages_received,
        "Redis published it after all (so a local copy would have been a duplicate): {stats:?}"
    );

    // One late answer is not an outage: the same connection carries the next message.
    node.send(&Audience::All, &message("after")).await.unwrap();
    assert_eq!(
        next_text(&mut local, Duration::from_secs(5))
            .await
            .as_deref(),
        Some("after")
    );
    assert_eq!(
        node.stats().reconnects,
        before.reconnects,
        "the publishing connection was rebuilt"
    );
    assert!(node.is_connected());
}

/// Publishes `messages` of 16 KiB to everyone from another node, on a runtime of its own,
/// while blocking the calling thread (and so the runtime of the node under test) until Redis
/// has taken them all and a second more has passed.
fn publish_while_blocked(config: RedisConfig, messages: u64) {
    let publisher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let other = RedisHubLifetimeManager::connect(config).await.unwrap();
            let payload = "x".repeat(16 * 1024);
            for _ in 0..messages {
                other
                    .send(&Audience::All, &message(&payload))
                    .await
                    .unwrap();
            }
            within_10s(|| other.stats().publishes >= messages).await;
            assert_eq!(
                other.stats().publishes,
                messages,
                "Redis took every publish"
            );
        });
    });
    publisher.join().expect("the other node published");
    // Still blocked while Redis pushes what it has to the node.
    std::thread::sleep(Duration::from_secs(1));
}

/// A node on a Redis that closes a subscriber as soon as more than 256 KiB wait for it.
async fn strict_node() -> (Arc<RedisServer>, RedisConfig, Arc<RedisHubLifetimeManager>) {
    let server = start_server().await;
    server
        .connect()
        .unwrap()
        .command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 262144 131072 1",
        ])
        .unwrap();
    let config = RedisConfig::new(server.url()).hub_name("Busy.Hub");
    let node = RedisHubLifetimeManager::connect(config.clone())
        .await
        .unwrap();
    (server, config, node)
}

/// Waits until `done` holds, for 10 s at most; the caller asserts what it expected.
async fn within_10s(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (≤ 10 s) until the node has handled or dropped `messages` messages from Redis.
async fn settle(node: &RedisHubLifetimeManager, messages: u64) {
    within_10s(|| {
        let stats = node.stats();
        stats.messages_received + stats.dropped_messages >= messages
    })
    .await;
}

#[tokio::test]
async fn a_node_too_busy_to_run_its_tasks_still_reads_its_subscription() {
    // 24 MiB, more than the loopback socket buffers between Redis and the node hold.
    const MESSAGES: u64 = 1500;
    let (server, config, node) = strict_node().await;

    publish_while_blocked(config, MESSAGES);

    settle(&node, MESSAGES).await;
    let log = server.log_tail();
    assert!(
        !log.contains("output buffer limits"),
        "Redis closed the node's subscription: {log}"
    );
    let stats = node.stats();
    assert_eq!(stats.messages_received, MESSAGES, "{stats:?}");
    assert_eq!(stats.dropped_messages, 0, "{stats:?}");
    assert_eq!(stats.reconnects, 0, "{stats:?}");
}

#[tokio::test]
async fn a_backlog_over_its_bound_drops_messages_and_keeps_the_subscription() {
    // 96 MiB while the node's runtime is blocked: more than its 64 MiB backlog bound.
    const MESSAGES: u64 = 6000;
    let (server, config, node) = strict_node().await;

    publish_while_blocked(config.clone(), MESSAGES);

    settle(&node, MESSAGES).await;
    let stats = node.stats();
    assert!(stats.dropped_messages > 0, "{stats:?}");
    assert_eq!(
        stats.messages_received + stats.dropped_messages,
        MESSAGES,
        "every message was handed over or dropped: {stats:?}"
    );
    assert_eq!(stats.reconnects, 0, "{stats:?}");
    let log = server.log_tail();
    assert!(!log.contains("output buffer limits"), "{log}");

    // Caught up: what comes next is delivered.
    let mut client = TestClient::new("c0", None, Protocol::Json);
    node.on_connected(client.connection()).await.unwrap();
    let other = RedisHubLifetimeManager::connect(config).await.unwrap();
    other.send(&Audience::All, &message("after")).await.unwrap();
    expect_text(&mut client, "after").await;
}
