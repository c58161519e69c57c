//! Memory stays bounded while many clients stop reading: 20 clients on real WebSockets
//! stop reading while broadcasts of a few KB go on at the pace of the healthy clients. The
//! slow ones are closed with the documented Close and counted in
//! `signalr_slow_consumer_closes_total`; the healthy ones receive every message.
//!
//! What is measured, and why it is honest on a shared machine: the bytes queued in every
//! connection's outbound queue ([`HubConnection::buffered_bytes`]), summed over all
//! connections after every burst of broadcasts. That is the memory the server holds for its
//! clients beyond the fixed per-socket buffers, and it must stay within
//! `connections × max_buffered_bytes`. The process's resident memory is reported too and
//! checked against a generous bound (what the test sends to the slow clients would be
//! several times that bound if it piled up), since allocator behaviour and the other threads
//! of this process make it noisy. Its own binary, so no other test shares the process.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, WAIT, eventually, start};
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::{Context, Hub, HubConnection, State};

const SLOW: usize = 20;
const HEALTHY: usize = 3;
const MESSAGES: usize = 5000;
const PAYLOAD: usize = 4096;
const MAX_BUFFERED: usize = 256 * 1024;
/// Broadcasts sent before the sender waits for the healthy clients to catch up.
const BURST: usize = 16;

/// Every connection of the hub, as `on_connected` saw it.
type Registry = Arc<Mutex<Vec<Arc<HubConnection>>>>;

async fn register(ctx: Context, State(registry): State<Registry>) {
    registry.lock().unwrap().push(ctx.connection().clone());
}

/// Resident memory of this process, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_closed_and_memory_stays_bounded() {
    let prometheus = signalr_server::observability::install_prometheus().unwrap();
    let registry = Registry::default();
    let hub = Hub::builder()
        .name("slow-memory")
        .with_state(registry.clone())
        .on_connected(register)
        .configure_transports(|t| t.max_buffered_bytes = MAX_BUFFERED)
        .build();
    let addr = start(axum::Router::new().merge(hub.router("/hub"))).await;

    // Registered once their handshake is through (the handshake answer goes out first).
    let registered = |n: usize| {
        let registry = registry.clone();
        eventually(move || {
            let registry = registry.clone();
            async move { registry.lock().unwrap().len() >= n }
        })
    };
    let mut slow = Vec::new();
    for i in 0..SLOW {
        let protocol = if i % 2 == 0 {
            Protocol::Json
        } else {
            Protocol::MessagePack
        };
        slow.push(Client::connect(addr, "/hub", protocol).await);
        // One at a time, so the registry holds the slow ones first and in order.
        registered(i + 1).await;
    }
    let mut readers = Vec::new();
    for i in 0..HEALTHY {
        let protocol = if i % 2 == 0 {
            Protocol::MessagePack
        } else {
            Protocol::Json
        };
        let mut client = Client::connect(addr, "/hub", protocol).await;
        readers.push(tokio::spawn(async move {
            let mut received = 0;
            while received < MESSAGES {
                match client.recv_no_ping().await {
                    Some(HubMessage::Invocation(invocation)) => {
                        assert_eq!(invocation.target, "message");
                        received += 1;
                    }
                    other => panic!("a healthy client got {other:?} after {received} messages"),
                }
            }
            received
        }));
    }
    registered(SLOW + HEALTHY).await;
    let connections = registry.lock().unwrap().clone();
    let (slow_connections, healthy_connections) = connections.split_at(SLOW);
    // The slow clients registered first, one by one.
    assert!(
        slow_connections
            .iter()
            .zip(&slow)
            .all(|(c, client)| c.protocol() == client.protocol)
    );

    let rss_before = rss();
    let clients = hub.context().clients();
    let payload = "p".repeat(PAYLOAD);
    let mut max_queued = 0;
    let deadline = tokio::time::Instant::now() + WAIT * 12;
    for sent in 0..MESSAGES {
        clients
            .all()
            .send("message", (&payload,))
            .await
            .expect("a broadcast never fails for a slow client");
        if sent % BURST == BURST - 1 {
            let queued: usize = connections.iter().map(|c| c.buffered_bytes()).sum();
            max_queued = max_queued.max(queued);
            // Go at the pace of the healthy clients: they are healthy because they keep up.
            while healthy_connections
                .iter()
                .any(|c| c.buffered_bytes() > MAX_BUFFERED / 4)
            {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the healthy clients stopped reading"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    let rss_after = rss();
    for reader in readers {
        let received = tokio::time::timeout(WAIT * 2, reader)
            .await
            .expect("healthy clients finish reading")
            .unwrap();
        assert_eq!(received, MESSAGES);
    }

    let sent_to_each_slow = MESSAGES * PAYLOAD;
    let growth = rss_after.saturating_sub(rss_before);
    eprintln!(
        "slow consumers: {SLOW} clients were sent {} MiB each; largest sum of queued bytes \
         {} KiB (bound {} KiB); resident memory {} MiB -> {} MiB",
        sent_to_each_slow >> 20,
        max_queued >> 10,
        ((SLOW + HEALTHY) * MAX_BUFFERED) >> 10,
        rss_before >> 20,
        rss_after >> 20,
    );
    assert!(
        max_queued <= (SLOW + HEALTHY) * MAX_BUFFERED,
        "queued {max_queued} bytes"
    );
    // Per slow connection at most its queue and the WebSocket write buffer
    // (4 × max_write_batch_bytes + 64 KiB); then generous slack for the allocator, the
    // healthy clients' parsing and the test itself. Unbounded queues would have held
    // SLOW × sent_to_each_slow (≈ 400 MB) minus what the kernel's socket buffers took.
    let bound = SLOW * (MAX_BUFFERED + 4 * 64 * 1024 + 64 * 1024) + 96 * 1024 * 1024;
    assert!(
        growth <= bound,
        "resident memory grew by {} MiB (bound {} MiB)",
        growth >> 20,
        bound >> 20
    );

    // Every slow client was cut off with the documented Close, after what it had been
    // sent before its queue filled.
    for (i, mut client) in slow.into_iter().enumerate() {
        let mut delivered = 0;
        let close = loop {
            match client.recv_no_ping().await {
                Some(HubMessage::Invocation(_)) => delivered += 1,
                Some(HubMessage::Close(close)) => break close,
                other => panic!("slow client {i} got {other:?} after {delivered} messages"),
            }
        };
        assert!(delivered < MESSAGES, "slow client {i} was never cut off");
        assert_eq!(
            close.error.as_deref(),
            Some(
                "Connection closed with an error. The client did not read messages fast enough: its outbound buffer is full."
            )
        );
        assert!(close.allow_reconnect);
        client.expect_socket_closed().await;
    }
    // Exactly the slow ones were counted (the healthy ones got everything, and have gone
    // since). A connection's task counts its close just after its Close went out.
    let closes = || {
        prometheus
            .render()
            .lines()
            .find(|line| {
                line.starts_with("signalr_slow_consumer_closes_total")
                    && line.contains("hub=\"slow-memory\"")
            })
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while closes() != Some(SLOW as f64) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "signalr_slow_consumer_closes_total is {:?}, not {SLOW}",
            closes()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
