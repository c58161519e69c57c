//! What happens when Redis or a node goes away: a redis-server killed and restarted
//! under traffic, a node closed, and start-up against a Redis that is unreachable or
//! refuses the password. Every wait is bounded; timings are printed, asserted only with
//! generous bounds.

mod common;
use common::{expect_text, message, next_text, start_server};

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signalr_redis::testing::RedisServer;
use signalr_redis::{BackplaneError, RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::Protocol;
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager};

async fn connect(
    manager: &Arc<RedisHubLifetimeManager>,
    id: &str,
    user: Option<&str>,
) -> TestClient {
    let client = TestClient::new(id, user, Protocol::Json);
    manager.on_connected(client.connection()).await.unwrap();
    client
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::new(server.url())
        .hub_name("Faults.Hub")
        .ack_timeout(Duration::from_secs(2))
}

/// Redis killed mid-traffic and restarted: local delivery goes on during the outage,
/// lost publishes are counted, and delivery across nodes resumes (every channel
/// resubscribed: all, group, user, connection) soon after Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_traffic() {
    let server = start_server().await;
    let m1 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let m2 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let mut a = connect(&m1, "a", Some("alice")).await;
    let mut b = connect(&m2, "b", Some("bob")).await;
    m1.add_to_group("a", "room").await.unwrap();
    m1.add_to_group("b", "room").await.unwrap();

    // Traffic before the outage.
    for i in 0..20 {
        m1.send(&Audience::All, &message(&format!("before {i}")))
            .await
            .unwrap();
    }
    for i in 0..20 {
        expect_text(&mut a, &format!("before {i}")).await;
        expect_text(&mut b, &format!("before {i}")).await;
    }

    let killer = server.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();

    // During the outage: local connections are still served, for every kind of audience.
    let lost_before = m1.stats().lost_messages;
    for i in 0..10 {
        m1.send(&Audience::All, &message(&format!("outage {i}")))
            .await
            .expect("a broadcast still succeeds locally");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        expect_text(&mut a, &format!("outage {i}")).await;
    }
    m1.send(&Audience::Group("room".into()), &message("outage group"))
        .await
        .unwrap();
    expect_text(&mut a, "outage group").await;
    m1.send(&Audience::User("alice".into()), &message("outage user"))
        .await
        .unwrap();
    expect_text(&mut a, "outage user").await;
    m1.send(&Audience::Connection("a".into()), &message("outage direct"))
        .await
        .unwrap();
    expect_text(&mut a, "outage direct").await;
    // A connection on another node cannot be reached: an error, not a silent drop.
    assert!(
        m1.send(&Audience::Connection("b".into()), &message("unreachable"))
            .await
            .is_err()
    );
    let stats = m1.stats();
    assert!(
        stats.lost_messages >= lost_before + 13,
        "every message that could not reach other nodes is counted: {stats:?}"
    );
    assert!(stats.publish_errors >= 13, "{stats:?}");
    assert!(!m1.is_connected());
    assert_eq!(
        next_text(&mut b, Duration::from_millis(200)).await,
        None,
        "nothing crosses nodes while Redis is down"
    );

    let restarter = server.clone();
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    let back = Instant::now();

    // Probe until a broadcast from node 1 reaches node 2 again.
    let mut probes = 0;
    let resumed_after = loop {
        m1.send(&Audience::All, &message(&format!("probe {probes}")))
            .await
            .unwrap();
        probes += 1;
        if let Some(text) = next_text(&mut b, Duration::from_millis(20)).await {
            assert!(text.starts_with("probe"), "{text}");
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "delivery across nodes did not resume within 10 s of Redis being back"
        );
    };
    println!("delivery across nodes resumed {resumed_after:?} after Redis was back");
    // Wait until both managers report fully connected (every channel resubscribed).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(m1.is_connected() && m2.is_connected()) {
        assert!(Instant::now() < deadline, "managers did not reconnect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drain the probes, then check every subscription kind came back.
    while next_text(&mut b, Duration::from_millis(200))
        .await
        .is_some()
    {}
    while next_text(&mut a, Duration::from_millis(200))
        .await
        .is_some()
    {}
    m1.send(&Audience::Group("room".into()), &message("group again"))
        .await
        .unwrap();
    expect_text(&mut a, "group again").await;
    expect_text(&mut b, "group again").await;
    m1.send(&Audience::User("bob".into()), &message("user again"))
        .await
        .unwrap();
    expect_text(&mut b, "user again").await;
    m1.send(&Audience::Connection("b".into()), &message("direct again"))
        .await
        .unwrap();
    expect_text(&mut b, "direct again").await;
    m2.add_to_group("a", "second").await.unwrap();
    m2.send(&Audience::Group("second".into()), &message("acks work"))
        .await
        .unwrap();
    expect_text(&mut a, "acks work").await;
    assert!(m1.stats().reconnects >= 2, "{:?}", m1.stats());
    assert!(m2.stats().reconnects >= 1, "{:?}", m2.stats());
}

/// A node that closes leaves the others working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_node_does_not_disturb_the_others() {
    let server = start_server().await;
    let m1 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let m2 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let m3 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let mut a = connect(&m1, "a", None).await;
    let gone = connect(&m2, "gone", None).await;
    let mut c = connect(&m3, "c", None).await;
    m1.add_to_group("c", "room").await.unwrap();
    m1.add_to_group("gone", "room").await.unwrap();

    m2.close().await;
    drop(m2);
    m1.send(&Audience::All, &message("still here"))
        .await
        .unwrap();
    expect_text(&mut a, "still here").await;
    expect_text(&mut c, "still here").await;
    m3.send(&Audience::Group("room".into()), &message("room"))
        .await
        .unwrap();
    expect_text(&mut c, "room").await;
    // The closed node's connection is unknown now: a group change times out clearly.
    let error = m1.add_to_group("gone", "other").await.unwrap_err();
    assert!(error.to_string().contains("gone"), "{error}");
    drop(gone);
    m3.send(&Audience::Connection("a".into()), &message("direct"))
        .await
        .unwrap();
    expect_text(&mut a, "direct").await;
}

/// A wrong password is reported at start, naming the host and the problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_fails_clearly_at_start() {
    let server = tokio::task::spawn_blocking(|| RedisServer::builder().password("right").start())
        .await
        .unwrap();
    let endpoint = format!("127.0.0.1:{}", server.port());

    let wrong = RedisConfig::new(format!("redis://:wrong@{endpoint}"));
    let error = RedisHubLifetimeManager::connect(wrong).await.unwrap_err();
    let text = error.to_string();
    println!("wrong password: {text}");
    assert!(
        matches!(error, BackplaneError::Authentication { .. }),
        "{error:?}"
    );
    assert!(text.contains(&endpoint), "{text}");
    assert!(text.contains("password"), "{text}");
    assert!(
        !text.contains("wrong@"),
        "the password is not echoed: {text}"
    );

    let missing = RedisConfig::new(format!("redis://{endpoint}"));
    let error = RedisHubLifetimeManager::connect(missing).await.unwrap_err();
    let text = error.to_string();
    println!("no password: {text}");
    assert!(
        matches!(error, BackplaneError::Authentication { .. }),
        "{error:?}"
    );
    assert!(text.contains("requires a password"), "{text}");

    let right = RedisConfig::new(server.url());
    let manager = RedisHubLifetimeManager::connect(right).await.unwrap();
    assert!(manager.is_connected());
}

/// Nothing listening, or something that never answers: clear errors, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_redis_fails_clearly_at_start() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let error =
        RedisHubLifetimeManager::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}")))
            .await
            .unwrap_err();
    let text = error.to_string();
    println!("nothing listening: {text} (after {:?})", started.elapsed());
    assert!(
        matches!(error, BackplaneError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // Accepts TCP but never speaks Redis.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let error = RedisHubLifetimeManager::connect(
        RedisConfig::new(format!("redis://127.0.0.1:{port}"))
            .connect_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    println!("silent peer: {text} (after {:?})", started.elapsed());
    assert!(matches!(error, BackplaneError::Timeout { .. }), "{error:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);

    let error = RedisHubLifetimeManager::connect(RedisConfig::new("http://:secret@nowhere"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, BackplaneError::InvalidUrl { .. }),
        "{error:?}"
    );
    assert!(!error.to_string().contains("secret"));
}

/// Redis drops only the subscription connections (`CLIENT KILL TYPE pubsub`): each node
/// notices, reconnects and resubscribes its group, user and connection channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_dropped_by_redis_are_rebuilt() {
    let server = start_server().await;
    let m1 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let m2 = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let mut a = connect(&m1, "a", None).await;
    let mut b = connect(&m2, "b", Some("bob")).await;
    m2.add_to_group("b", "room").await.unwrap();

    let killed = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            server
                .connect()
                .unwrap()
                .command(&["CLIENT", "KILL", "TYPE", "pubsub"])
                .unwrap()
        })
        .await
        .unwrap()
    };
    println!("CLIENT KILL TYPE pubsub: {killed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while m1.stats().reconnects < 1 || m2.stats().reconnects < 1 || !m2.is_connected() {
        assert!(Instant::now() < deadline, "subscriptions were not rebuilt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (audience, text) in [
        (Audience::Group("room".into()), "group"),
        (Audience::User("bob".into()), "user"),
        (Audience::Connection("b".into()), "connection"),
        (Audience::All, "all"),
    ] {
        m1.send(&audience, &message(text)).await.unwrap();
        expect_text(&mut b, text).await;
    }
    expect_text(&mut a, "all").await;
    assert_eq!(m1.stats().lost_messages, 0);
}

/// The manager's health follows Redis: connected since it connected; disconnected, since
/// then, once Redis is killed; connected again, since later, when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_redis_connection() {
    let server = start_server().await;
    let manager = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    let health = manager.health();
    assert_eq!(health.kind, "redis");
    assert!(health.backplane && health.connected, "{health:?}");
    let connected_since = health.since.expect("a since");
    assert_eq!(manager.connected_since(), (true, connected_since));

    let killer = server.clone();
    tokio::task::spawn_blocking(move || killer.kill())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while manager.health().connected {
        assert!(
            Instant::now() < deadline,
            "the loss of Redis was not noticed"
        );
        // A publish makes the publishing side notice too.
        let _ = manager.send(&Audience::All, &message("probe")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let down = manager.health();
    let down_since = down.since.unwrap();
    assert!(down_since >= connected_since);
    assert!(down.detail.unwrap().contains("down"));

    let restarter = server.clone();
    tokio::task::spawn_blocking(move || restarter.restart())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !manager.health().connected {
        assert!(Instant::now() < deadline, "the manager did not reconnect");
        let _ = manager.send(&Audience::All, &message("probe")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(manager.health().since.unwrap() >= down_since);
    manager.close().await;
}
