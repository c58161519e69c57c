//! The slow-consumer policy over real sockets: a client that stops reading is closed once
//! its outbound buffer is full; the broadcast to everyone else goes on, complete; and one
//! that never reads again does not keep its socket, whatever its transport.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::http::{negotiate, request};
use common::{Client, handshake_request, start, start_with};
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::{ServeOptions, TransportOptions};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;

/// A hub whose `Broadcast(message)` sends to everyone but the caller, with a 64 KiB bound per
/// connection so the tests need little traffic (the kernel's socket buffers absorb the first
/// megabytes either way), and whatever else `configure` sets.
async fn start_broadcast_hub(configure: impl FnOnce(&mut TransportOptions)) -> SocketAddr {
    start(broadcast_hub(configure)).await
}

fn broadcast_hub(configure: impl FnOnce(&mut TransportOptions)) -> axum::Router {
    let hub = signalr_server::Hub::builder()
        .method(
            "Broadcast",
            |clients: signalr_server::Clients, message: String| async move {
                clients.others().send("message", (message,)).await
            },
        )
        .configure_transports(|t| {
            t.max_buffered_bytes = 64 * 1024;
            configure(t);
        })
        .build();
    axum::Router::new().merge(hub.router("/hub"))
}

/// Broadcasts 6,000 messages of 2 KiB (12 MB) from a new client, paced so that the server
/// writes each message as it comes: a client that does not read fills the kernel's buffers
/// (megabytes on loopback), then the server's write to it waits (and a 64 KiB bound overflows
/// while that write still waits).
async fn flood(addr: SocketAddr) -> Client {
    let mut writer = Client::connect(addr, "/hub", Protocol::Json).await;
    let payload = "p".repeat(2048);
    for sent in 1..=6000 {
        writer
            .send_invocation("Broadcast", (payload.clone(),))
            .await;
        if sent % 16 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    writer
}

/// Waits (bounded) until this process no longer holds the server's end of `client`'s socket.
async fn until_server_socket_closed(server: SocketAddr, client: SocketAddr) {
    let deadline = tokio::time::Instant::now() + common::WAIT * 6;
    while server_socket_open(server, client) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server still holds the socket of a client that stopped reading"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_and_others_get_everything() {
    // The sender itself does not read: it sends to others.
    let addr = start_broadcast_hub(|_| {}).await;

    let mut slow = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut healthy = Client::connect(addr, "/hub", Protocol::MessagePack).await;

    const COUNT: usize = 3000;
    let payload = "p".repeat(2048);
    // How far the healthy client got: the writer goes at its pace (a client is healthy
    // because it keeps up; on a busy machine an unpaced writer could outrun it too).
    let progress = Arc::new(AtomicUsize::new(0));
    let reader = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut received = 0;
            while received < COUNT {
                match healthy.recv_no_ping().await {
                    Some(HubMessage::Invocation(invocation)) => {
                        assert_eq!(invocation.target, "message");
                        received += 1;
                        progress.store(received, Ordering::Relaxed);
                    }
                    other => panic!("healthy client got {other:?} after {received} messages"),
                }
            }
            received
        })
    };
    let writer = {
        let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + common::WAIT * 6;
            for sent in 1..=COUNT {
                client
                    .send_invocation("Broadcast", (payload.clone(),))
                    .await;
                // At most 16 messages (32 KiB) ahead of the healthy reader, half its
                // 64 KiB bound.
                while sent - progress.load(Ordering::Relaxed) > 16 {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the healthy client stopped reading"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            client
        })
    };
    let _writer = writer.await.unwrap();
    assert_eq!(reader.await.unwrap(), COUNT);

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

/// A client cut off as a slow consumer that never reads again does not keep its socket: the
/// server drops it once the close timeout passes without the client taking its last messages
/// (the write of those waits for the client forever otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_client_that_never_reads_again_loses_its_socket() {
    let addr =
        start_broadcast_hub(|t| t.close_timeout = std::time::Duration::from_millis(200)).await;

    let slow = Client::connect_with_recv_buffer(addr, "/hub", Protocol::Json, 4096).await;
    let MaybeTlsStream::Plain(tcp) = slow.ws.get_ref() else {
        panic!("a plain TCP socket");
    };
    let slow_addr = tcp.local_addr().unwrap();
    assert!(
        server_socket_open(addr, slow_addr),
        "the server's end of the slow client's socket is listed in /proc/self/net/tcp"
    );

    let _writer = flood(addr).await;
    until_server_socket_closed(addr, slow_addr).await;
    drop(slow);
}

/// A Server-Sent Events client that stops reading loses its connection once a write to it
/// has waited the write timeout. Nothing above the socket could end it: hyper polls the
/// response body only after writing what came before, so the response's task waits in that
/// write for as long as the client's kernel keeps the connection open. The connection's
/// bound is far above what is sent, so it is never cut off as a slow consumer (which would
/// end the response): only the deadline can end it, and without one this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_stops_reading_loses_its_connection_after_the_write_timeout() {
    let mut options = ServeOptions::default();
    options.write_timeout = Some(std::time::Duration::from_millis(300));
    let addr = start_with(
        broadcast_hub(|t| t.max_buffered_bytes = 64 * 1024 * 1024),
        options,
    )
    .await;

    let token = negotiate(addr, "/hub", &[]).await;
    let url = format!("/hub?id={token}");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sse = socket.connect(addr).await.unwrap();
    let sse_addr = sse.local_addr().unwrap();
    sse.write_all(
        format!("GET {url} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let handshake = handshake_request("json");
    // The handshake is accepted only once the event stream is open.
    assert_eq!(
        request(addr, "POST", &url, &[], &handshake).await.status,
        200
    );
    assert!(
        server_socket_open(addr, sse_addr),
        "the server's end of the event stream's socket is listed in /proc/self/net/tcp"
    );

    // The event stream is never read from here on.
    let _writer = flood(addr).await;
    until_server_socket_closed(addr, sse_addr).await;
    drop(sse);
}

/// Whether this process has a socket open (a file descriptor, not an orphan the kernel
/// finishes) from `server` to `client`, by `/proc/self/net/tcp`.
fn server_socket_open(server: SocketAddr, client: SocketAddr) -> bool {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("the test listens on 127.0.0.1"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/self/net/tcp").expect("/proc/self/net/tcp (Linux)");
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // local_address rem_address st ... inode (0 once no descriptor holds it)
        fields.len() > 9 && fields[1] == local && fields[2] == remote && fields[9] != "0"
    })
}
