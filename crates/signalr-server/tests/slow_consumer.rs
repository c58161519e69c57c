//! The slow-consumer policy over real sockets: a client that stops reading is closed once
//! its outbound buffer is full; the broadcast to everyone else goes on, complete.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Client, start};
use signalr_server::protocol::{HubMessage, Protocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_others_get_everything() {
    // A small bound so the test needs little traffic (the kernel's socket buffers absorb
    // the first megabytes either way). The sender itself does not read: it sends to others.
    let hub = signalr_server::Hub::builder()
        .method(
            "Broadcast",
            |clients: signalr_server::Clients, message: String| async move {
                clients.others().send("message", (message,)).await
            },
        )
        .configure_transports(|t| t.max_buffered_bytes = 64 * 1024)
        .build();
    let addr = start(axum::Router::new().merge(hub.router("/hub"))).await;

    let mut slow = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut healthy = Client::connect(addr, "/hub", Protocol::MessagePack).await;

    const COUNT: usize = 3000;
    // The writer sends in rounds no bigger than the bound and waits for the healthy client
    // to have read each round: however slow the machine, the healthy client never has more
    // than a round queued, while the slow one accumulates everything.
    const ROUND: usize = 20;
    let payload = "p".repeat(2048);
    let received = Arc::new(AtomicUsize::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            while received.load(Ordering::SeqCst) < COUNT {
                match healthy.recv_no_ping().await {
                    Some(HubMessage::Invocation(invocation)) => {
                        assert_eq!(invocation.target, "message");
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                    other => panic!(
                        "healthy client got {other:?} after {} messages",
                        received.load(Ordering::SeqCst)
                    ),
                }
            }
        })
    };
    let mut writer = Client::connect(addr, "/hub", Protocol::Json).await;
    for round in 0..COUNT / ROUND {
        for _ in 0..ROUND {
            writer
                .send_invocation("Broadcast", (payload.clone(),))
                .await;
        }
        let sent = (round + 1) * ROUND;
        let deadline = tokio::time::Instant::now() + common::WAIT;
        while received.load(Ordering::SeqCst) < sent {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the healthy client stopped receiving at {}",
                received.load(Ordering::SeqCst)
            );
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    reader.await.unwrap();
    assert_eq!(received.load(Ordering::SeqCst), COUNT);

    // The slow client now reads: some broadcasts, then the Close that ended it.
    let mut delivered = 0;
    let close = loop {
        match slow.recv_no_ping().await {
            Some(HubMessage::Invocation(_)) => delivered += 1,
            Some(HubMessage::Close(close)) => break close,
            other => panic!("slow client got {other:?}"),
        }
    };
    assert!(delivered < COUNT, "the slow client was never cut off");
    assert!(close.allow_reconnect);
    assert!(
        close
            .error
            .unwrap()
            .contains("did not read messages fast enough"),
        "the Close says why"
    );
    slow.expect_socket_closed().await;
}
