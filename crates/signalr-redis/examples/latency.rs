//! Cross-node latency through a real redis-server: node A sends to a user whose
//! connection is on node B (two managers in one process, each with its own Redis
//! connections), at a fixed rate; each payload carries its send time. Prints p50, p99 and
//! max per run. A measurement, not a test: nothing is asserted.
//!
//! Runs: 100/s and 5000/s from one sender awaiting each `send` (a hub method sending in a
//! loop), and 5000/s with each send on its own task (many hub methods at once, sharing
//! publish pipelines).
//!
//! ```text
//! cargo run --release -p signalr-redis --example latency [-- COUNT]
//! ```
//! Default: 2000 messages per run.

use std::time::{Duration, Instant};

use signalr_redis::testing::RedisServer;
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager, SerializedMessage};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = std::env::args().nth(1).map_or(Ok(2000), |a| a.parse())?;
    let runs = [(100u64, false), (5000, false), (5000, true)];

    let redis = RedisServer::start();
    let config = RedisConfig::new(redis.url()).hub_name("Latency.Hub");
    let node_a = RedisHubLifetimeManager::connect(config.clone()).await?;
    let node_b = RedisHubLifetimeManager::connect(config).await?;
    let base = Instant::now();

    for (run, (rate, concurrent)) in runs.into_iter().enumerate() {
        // A fresh connection per run, with room for a whole run in its outbound queue.
        let mut client = TestClient::with_buffer(
            &format!("b-{run}"),
            Some("bob"),
            Protocol::MessagePack,
            64 * 1024 * 1024,
        );
        node_b.on_connected(client.connection()).await?;
        let reader = tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            while latencies.len() < count {
                match client.recv(Duration::from_secs(10)).await {
                    Some(HubMessage::Invocation(invocation)) => {
                        let sent: u64 = invocation.arguments.into_values().unwrap()[0]
                            .decode()
                            .unwrap();
                        let now = base.elapsed().as_nanos() as u64;
                        latencies.push(Duration::from_nanos(now - sent));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            (client, latencies)
        });

        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut sends = Vec::new();
        for i in 0..count {
            tokio::time::sleep_until(start + period * i as u32).await;
            let sent = base.elapsed().as_nanos() as u64;
            let message = SerializedMessage::invocation("tick", &(sent,), &Protocol::ALL)?;
            if concurrent {
                let node_a = node_a.clone();
                sends.push(tokio::spawn(async move {
                    node_a.send(&Audience::User("bob".into()), &message).await
                }));
            } else {
                node_a.send(&Audience::User("bob".into()), &message).await?;
            }
        }
        for send in sends {
            send.await??;
        }
        let elapsed = start.elapsed();
        let (client, mut latencies) = reader.await?;
        node_b.on_disconnected(client.connection()).await;
        latencies.sort();
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{rate:>5}/s {:<10}: {} of {count} received in {elapsed:.2?} (sent at {:.0}/s); \
             p50 {:.0?}  p99 {:.0?}  max {:.0?}",
            if concurrent {
                "concurrent"
            } else {
                "sequential"
            },
            latencies.len(),
            count as f64 / elapsed.as_secs_f64(),
            pick(0.50),
            pick(0.99),
            latencies[latencies.len() - 1],
        );
    }
    println!("node A stats: {:?}", node_a.stats());
    println!("node B stats: {:?}", node_b.stats());
    Ok(())
}
