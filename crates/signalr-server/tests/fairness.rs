//! How one connection's flood of invocations shares the runtime with the writers it feeds.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client, start};
use signalr_server::protocol::{HubMessage, Invocation, Protocol};
use signalr_server::testing::TestClient;
use signalr_server::{Clients, Hub, HubLifetimeManager, MemoryLifetimeManager, State};

#[derive(Clone, Default)]
struct Probe {
    /// Turns the bystander task has had.
    turns: Arc<AtomicUsize>,
    /// `turns` as each `Tick` saw it, in order.
    seen: Arc<Mutex<Vec<usize>>>,
}

/// Records how many turns the bystander has had, then sends to the group.
async fn tick(State(probe): State<Probe>, clients: Clients) {
    let turns = probe.turns.load(Ordering::SeqCst);
    probe.seen.lock().unwrap().push(turns);
    clients.group("g").send("m", ("x",)).await.unwrap();
}

/// 400 `Tick`s arrive in one WebSocket message; each sends to a group of 20 connections
/// whose writers have been silent for 300 ms, `behind` of which already have 100 KB queued.
/// Returns between how many consecutive `Tick`s a bystander task got a turn. The
/// bystander yields after every turn, so it runs only when nothing else is ready, like a
/// writer waiting in a busy worker's global queue.
async fn bystander_turns_during_flood(behind: usize) -> usize {
    const FLOOD: usize = 400;
    let probe = Probe::default();
    let manager = Arc::new(MemoryLifetimeManager::new());
    let members: Vec<TestClient> = (0..20)
        .map(|i| TestClient::new(&format!("member-{i}"), None, Protocol::Json))
        .collect();
    for (i, member) in members.iter().enumerate() {
        manager.on_connected(member.connection()).await.unwrap();
        manager.add_to_group(member.id(), "g").await.unwrap();
        if i < behind {
            member
                .connection()
                .send_frame(Bytes::from(vec![b' '; 100_000]))
                .unwrap();
        }
    }
    // Nothing is ever written to the members: after this their writers count as silent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hub = Hub::builder()
        .with_state(probe.clone())
        .lifetime_manager(manager.clone())
        .method("Tick", tick)
        .build();
    let addr = start(axum::Router::new().merge(hub.router("/hub"))).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;

    let stop = Arc::new(AtomicBool::new(false));
    let bystander = tokio::spawn({
        let (turns, stop) = (probe.turns.clone(), stop.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::task::yield_now().await;
                turns.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let mut flood = BytesMut::new();
    for _ in 0..FLOOD {
        let tick = HubMessage::Invocation(Invocation {
            target: "Tick".to_owned(),
            ..Invocation::default()
        });
        flood.extend_from_slice(&Protocol::Json.encode_message(&tick).unwrap());
    }
    client.send_raw(&flood).await;
    common::eventually(|| {
        let done = probe.seen.lock().unwrap().len() == FLOOD;
        async move { done }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    bystander.await.unwrap();

    let seen = probe.seen.lock().unwrap().clone();
    seen.windows(2).filter(|w| w[0] != w[1]).count()
}

/// When most of the members a connection's invocations send to are far behind, its loop
/// lets every ready task run between invocations instead of running the whole flood first.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_flood_to_members_far_behind_lets_other_tasks_run() {
    let turns = bystander_turns_during_flood(20).await;
    assert!(
        turns >= 300,
        "the bystander ran between only {turns} of 400 invocations sent to members far behind"
    );
}

/// A few members far behind (slow consumers, closed on their own) do not hold back the
/// sender: the flood runs without giving way.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_few_members_far_behind_do_not_slow_the_sender() {
    let turns = bystander_turns_during_flood(2).await;
    assert!(
        turns <= 40,
        "the bystander ran between {turns} of 400 invocations: the sender gave way for 2 slow members of 20"
    );
}
