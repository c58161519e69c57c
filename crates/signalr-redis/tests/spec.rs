//! The lifetime-manager specification suite against real Redis: one node on one
//! `redis-server`, several nodes on one `redis-server`, and several nodes on a 3-master
//! Redis Cluster in sharded mode.

use std::sync::Arc;
use std::time::Duration;

use signalr_redis::testing::{RedisCluster, RedisServer};
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::HubLifetimeManager;
use signalr_server::testing::spec::{self, Nodes};

/// A hub name of its own per case, so cases sharing a Redis never see each other.
fn unique_hub() -> String {
    format!("Spec.Hub{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish()
}

async fn managers(config: RedisConfig, n: usize) -> Vec<Arc<dyn HubLifetimeManager>> {
    let mut managers: Vec<Arc<dyn HubLifetimeManager>> = Vec::new();
    for _ in 0..n {
        let manager = RedisHubLifetimeManager::connect(config.clone())
            .await
            .expect("the manager connects");
        managers.push(manager);
    }
    managers
}

/// `n` managers on a fresh redis-server (kept alive by the guard).
async fn on_one_server(n: usize) -> Nodes {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .expect("redis-server starts");
    let config = RedisConfig::new(server.url())
        .hub_name(unique_hub())
        .ack_timeout(Duration::from_secs(5));
    Nodes {
        managers: managers(config, n).await,
        guard: Some(Box::new(server)),
    }
}

mod single_node {
    signalr_server::lifetime_manager_spec!(|n| super::on_one_server(n));
}

mod scaleout {
    signalr_server::scaleout_spec!(|n| super::on_one_server(n));
}

/// The scale-out suite in sharded mode on one 3-master cluster (started once: it takes a
/// second or two), each case on its own hub name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_scaleout_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .expect("the cluster starts");
    let seed = cluster.urls()[0].clone();
    let factory = move |n: usize| {
        let config = RedisConfig::new(seed.clone())
            .sharded(true)
            .hub_name(unique_hub())
            .ack_timeout(Duration::from_secs(5));
        async move { Nodes::new(managers(config, n).await) }
    };
    spec::scaleout_send_all(&factory).await;
    spec::scaleout_send_connection(&factory).await;
    spec::scaleout_groups_from_another_node(&factory).await;
    spec::scaleout_group_members_on_every_node(&factory).await;
    spec::scaleout_users(&factory).await;
    spec::scaleout_disconnect(&factory).await;
    spec::scaleout_client_result(&factory).await;
    drop(cluster);
}
