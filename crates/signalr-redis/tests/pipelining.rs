//! Sends to connections on another node do not wait for Redis one at a time: a loop of
//! sends queues them on the node's one publishing connection, and they arrive complete and
//! in the order they were sent. A publish does not wait for the answer to the one before
//! it, while a flush still waits for every answer; each pipeline begins with a PING, so
//! Redis sends the messages before it answers the publisher.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use signalr_redis::testing::Reply;
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

/// A TCP relay between a node and Redis that counts the PUBLISH commands going to Redis and
/// can hold Redis's answers back.
struct Relay {
    addr: SocketAddr,
    publishes: Arc<AtomicUsize>,
    hold: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    async fn start(redis: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let publishes = Arc::new(AtomicUsize::new(0));
        let (hold, held) = tokio::sync::watch::channel(false);
        let counter = publishes.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(redis).await else {
                    continue;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let counter = counter.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    // The last bytes read are kept, so a command split between two reads
                    // still counts.
                    const MARK: &[u8] = b"\r\nPUBLISH";
                    let mut seen = Vec::new();
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_read.read(&mut buf).await {
                        seen.extend_from_slice(&buf[..n]);
                        let new = seen.windows(MARK.len()).filter(|w| *w == MARK).count();
                        counter.fetch_add(new, Ordering::SeqCst);
                        // One byte less than a mark is kept: a mark starting there ends in
                        // bytes not read yet, so it is counted once, with them.
                        seen.drain(..seen.len().saturating_sub(MARK.len() - 1));
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut held = held.clone();
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = server_read.read(&mut buf).await {
                        if held.wait_for(|hold| !hold).await.is_err() {
                            break;
                        }
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Relay {
            addr,
            publishes,
            hold,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Waits (at most 5 s) until at least `count` PUBLISH commands have gone to Redis.
    async fn publishes_reach(&self, count: usize) -> usize {
        for _ in 0..250 {
            if self.publishes.load(Ordering::SeqCst) >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.publishes.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_goes_out_while_the_one_before_it_awaits_its_answer() {
    let server = common::start_server().await;
    let relay = Relay::start(server.addr()).await;
    // Answers are held back for less than a second; a publish waiting behind the held one
    // would wait far longer than the 5 s the test waits for it (not time out and move on).
    let sender = RedisHubLifetimeManager::connect(
        RedisConfig::new(relay.url())
            .hub_name("Pipelining.InFlight")
            .response_timeout(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let receiver = RedisHubLifetimeManager::connect(
        RedisConfig::new(server.url()).hub_name("Pipelining.InFlight"),
    )
    .await
    .unwrap();
    let mut far = TestClient::new("far", None, Protocol::Json);
    receiver.on_connected(far.connection()).await.unwrap();
    let far_audience = Audience::Connection("far".into());

    let (relayed, published) = (
        relay.publishes.load(Ordering::SeqCst),
        sender.stats().publishes,
    );
    relay.hold.send_replace(true);
    sender
        .send(&far_audience, &common::message("one"))
        .await
        .unwrap();
    assert_eq!(
        relay.publishes_reach(relayed + 1).await,
        relayed + 1,
        "the first publish"
    );
    sender
        .send(&far_audience, &common::message("two"))
        .await
        .unwrap();
    assert_eq!(
        relay.publishes_reach(relayed + 2).await,
        relayed + 2,
        "the second publish waited for the answer to the first"
    );
    // Redis has both (only its answers to the sender are held): the far node gets them.
    common::expect_text(&mut far, "one").await;
    common::expect_text(&mut far, "two").await;

    // A flush waits for the answers still held back.
    let flushing = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.flush().await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !flushing.is_finished(),
        "a flush returned before Redis answered what was published before it"
    );
    assert_eq!(
        sender.stats().publishes,
        published,
        "answers were held back"
    );
    relay.hold.send_replace(false);
    tokio::time::timeout(Duration::from_secs(5), flushing)
        .await
        .expect("the flush returns once Redis has answered")
        .unwrap();
    let stats = sender.stats();
    assert_eq!(stats.publishes, published + 2, "{stats:?}");
    assert_eq!(stats.lost_messages, 0, "{stats:?}");
}

/// Redis writes the output it has pending most recently queued client first, so the answer
/// to a pipeline that began with its PUBLISH would go out before the message reached any
/// subscriber. Each pipeline begins with a PING, which queues the publisher first; here,
/// in the order Redis ran the node's commands (MONITOR), every PUBLISH follows a PING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_pipeline_begins_with_a_ping() {
    const SENDS: usize = 3;
    let server = common::start_server().await;
    let config = RedisConfig::new(server.url()).hub_name("Ordering.Hub");
    let sender = RedisHubLifetimeManager::connect(config).await.unwrap();

    let watched = server.clone();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let watching = tokio::task::spawn_blocking(move || {
        let mut monitor = watched.connect().unwrap();
        assert_eq!(
            monitor.command(&["MONITOR"]).unwrap(),
            Reply::Simple("OK".into())
        );
        ready.send(()).unwrap();
        // Each line: `<time> [<db> <client address>] "<COMMAND>" "<arg>" ...`.
        let mut last_by_client = std::collections::HashMap::<String, String>::new();
        let mut preceded = Vec::new();
        while preceded.len() < SENDS {
            let line = monitor.read_reply().unwrap();
            let line = line.as_text().unwrap().to_owned();
            let Some((client, command)) = line
                .split_once(" [")
                .and_then(|(_, rest)| rest.split_once("] \""))
                .and_then(|(client, rest)| Some((client.to_owned(), rest.split_once('"')?.0)))
            else {
                continue;
            };
            let command = command.to_ascii_uppercase();
            if command == "PUBLISH" {
                preceded.push(last_by_client.get(&client).cloned());
            }
            last_by_client.insert(client, command);
        }
        preceded
    });
    is_ready.await.unwrap();
    // One send at a time, each flushed, so each PUBLISH is a pipeline of its own.
    for n in 0..SENDS {
        let message = common::message(&format!("m{n}"));
        sender
            .send(&Audience::Connection("elsewhere".into()), &message)
            .await
            .unwrap();
        sender.flush().await;
    }
    let preceded = tokio::time::timeout(Duration::from_secs(10), watching)
        .await
        .expect("MONITOR showed every PUBLISH")
        .unwrap();
    assert_eq!(preceded, vec![Some("PING".to_owned()); SENDS]);
}
