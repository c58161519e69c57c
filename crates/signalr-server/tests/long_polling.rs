//! The long-polling transport at the HTTP level: raw polls, POSTs and DELETEs.

mod common;

use std::time::Duration;

use common::http::{Http, HttpClient, negotiate, request, serve_hub};
use common::{Client, WAIT, result_string, test_hub_builder};
use signalr_server::protocol::{HubMessage, Protocol};
use signalr_server::{Hub, TransportOptions};

/// The test hub with long polls that time out after `poll_timeout`.
fn hub(poll_timeout: Duration, configure: impl FnOnce(&mut TransportOptions)) -> Hub {
    test_hub_builder()
        .configure_transports(|t| {
            t.poll_timeout = poll_timeout;
            configure(t);
        })
        .build()
}

fn assert_no_cache(response: &common::http::Response) {
    assert_eq!(response.header("cache-control"), Some("no-cache, no-store"));
    assert_eq!(response.header("pragma"), Some("no-cache"));
    assert_eq!(
        response.header("expires"),
        Some("Thu, 01 Jan 1970 00:00:00 GMT")
    );
}

/// The first poll is answered at once, 200 and empty, even with a poll timeout far longer
/// than the test waits.
#[tokio::test]
async fn the_first_poll_is_answered_at_once_and_empty() {
    let addr = serve_hub(&hub(Duration::from_secs(3600), |_| {})).await;
    let token = negotiate(addr, "/hub", &[]).await;
    let first = request(addr, "GET", &format!("/hub?id={token}&_=1"), &[], b"").await;
    assert_eq!(first.status, 200);
    assert!(first.body.is_empty());
    assert_eq!(first.header("content-length"), Some("0"));
    assert_no_cache(&first);
}

/// Data polls carry whole messages as application/octet-stream, in both protocols; POST
/// bodies may hold several messages or a part of one.
#[tokio::test]
async fn polls_carry_whole_messages_and_posts_are_a_byte_stream() {
    let addr = serve_hub(&hub(Duration::from_secs(2), |_| {})).await;
    for protocol in Protocol::ALL {
        let mut client = HttpClient::connect(addr, "/hub", Http::LongPolling, protocol, &[]).await;
        assert_eq!(result_string(&client.invoke("Echo", ("hi",)).await), "hi");

        // Two invocations in one POST, then one invocation split across two POSTs.
        let encode = |id: &str, text: &str| {
            protocol
                .encode_message(&HubMessage::Invocation(
                    signalr_server::protocol::Invocation {
                        invocation_id: Some(id.to_owned()),
                        target: "Echo".to_owned(),
                        arguments: signalr_server::protocol::Arguments::Encoded(
                            signalr_server::HubArguments::encode_arguments(&(text,), protocol)
                                .unwrap(),
                        ),
                        ..Default::default()
                    },
                ))
                .unwrap()
        };
        let mut both = encode("a", "one").to_vec();
        both.extend_from_slice(&encode("b", "two"));
        assert_eq!(client.post(&both).await.status, 200);
        let split = encode("c", "three");
        let (head, tail) = split.split_at(split.len() / 2);
        assert_eq!(client.post(head).await.status, 200);
        assert_eq!(client.post(tail).await.status, 200);
        let mut results = Vec::new();
        while results.len() < 3 {
            match client.recv_no_ping().await {
                Some(HubMessage::Completion(c)) => {
                    results.push((c.invocation_id.clone(), result_string(&c)))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            results,
            [("a", "one"), ("b", "two"), ("c", "three")].map(|(a, b)| (a.into(), b.into()))
        );
    }
}

/// A poll with nothing to send is answered 200 and empty at the poll timeout (no pings on
/// long polling), with no-cache headers.
#[tokio::test]
async fn a_poll_times_out_with_an_empty_200() {
    let addr = serve_hub(&hub(Duration::from_millis(200), |t| {
        t.disconnect_timeout = Duration::from_secs(30)
    }))
    .await;
    let client = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    for _ in 0..3 {
        let poll = client.poll().await;
        assert_eq!(poll.status, 200);
        assert!(poll.body.is_empty(), "no pings over long polling");
        assert_no_cache(&poll);
    }
}

/// When the application closes the connection, the poll after the Close message is 204 and
/// the connection is gone (404 from then on).
#[tokio::test]
async fn the_poll_after_the_close_is_204_then_the_connection_is_gone() {
    let addr = serve_hub(&hub(Duration::from_secs(2), |_| {})).await;
    let mut client =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    client.send_invocation("Abort", ()).await;
    let close = client.expect_close().await; // the next poll answered 204
    assert_eq!(close.error, None);
    assert!(client.ended);
    assert_eq!(client.poll().await.status, 404);
    let post = client.post(b"{}\x1e").await;
    assert_eq!(post.status, 404);
    assert_eq!(post.text(), "No Connection with that ID");
}

/// A new poll while one is outstanding ends the old one with 204 at once; the new one gets
/// the data.
#[tokio::test]
async fn a_new_poll_ends_the_outstanding_one_with_204() {
    // A poll timeout longer than any wait here: only the new poll can end the old one.
    let hub = hub(Duration::from_secs(3600), |_| {});
    let addr = serve_hub(&hub).await;
    let client = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let first = {
        let (addr, url) = (client.addr, client.url.clone());
        tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await })
    };
    let second = {
        let (addr, url) = (client.addr, client.url.clone());
        tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await })
    };
    // Whichever reached the server first is replaced by the other and answered 204 ...
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if first.is_finished() || second.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(ended.is_ok(), "neither poll was ended");
    // ... and the survivor receives what is sent next.
    hub.context()
        .clients()
        .all()
        .send("message", ("after",))
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for poll in [first, second] {
        let response = poll.await.unwrap();
        statuses.push(response.status);
        if response.status == 200 {
            assert!(String::from_utf8_lossy(&response.body).contains("after"));
        }
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 204]);
}

/// DELETE answers 202 and disposes of the connection: the outstanding poll ends with 204,
/// later polls, POSTs and DELETEs are 404; the application sees the end.
#[tokio::test]
async fn delete_ends_the_connection() {
    let (tx, mut disconnected) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hub = Hub::builder()
        .on_disconnected(move |ctx: signalr_server::Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.connection_id().to_owned());
            }
        })
        .configure_transports(|t| t.poll_timeout = Duration::from_secs(3600))
        .build();
    let addr = serve_hub(&hub).await;
    let client = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let outstanding = {
        let (addr, url) = (client.addr, client.url.clone());
        tokio::spawn(async move { request(addr, "GET", &url, &[], b"").await })
    };
    // Make sure the poll is in before the DELETE: a later poll would just be a 404.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let delete = client.delete().await;
    assert_eq!(delete.status, 202);
    let poll = tokio::time::timeout(WAIT, outstanding)
        .await
        .expect("the outstanding poll ended")
        .unwrap();
    assert!(
        poll.status == 204 || poll.status == 404,
        "outstanding poll after DELETE: {}",
        poll.status
    );
    tokio::time::timeout(WAIT, disconnected.recv())
        .await
        .expect("on_disconnected ran")
        .unwrap();
    assert_eq!(client.poll().await.status, 404);
    assert_eq!(client.post(b"{}\x1e").await.status, 404);
    assert_eq!(client.delete().await.status, 404);
}

/// A connection without a poll for the disconnect timeout is disposed: the application's
/// on_disconnected runs and the token is unknown afterwards.
#[tokio::test]
async fn a_connection_without_polls_is_reaped() {
    let (tx, mut disconnected) = tokio::sync::mpsc::unbounded_channel::<String>();
    let hub = Hub::builder()
        .on_disconnected(move |ctx: signalr_server::Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(ctx.connection_id().to_owned());
            }
        })
        .configure_transports(|t| {
            t.poll_timeout = Duration::from_millis(100);
            t.disconnect_timeout = Duration::from_millis(300);
        })
        .build();
    let addr = serve_hub(&hub).await;
    let client = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    // The client stops polling.
    tokio::time::timeout(WAIT, disconnected.recv())
        .await
        .expect("the inactive connection was reaped")
        .unwrap();
    assert_eq!(client.poll().await.status, 404);
}

/// Messages queued between slow polls all arrive, in order, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_messages_across_slow_polls_arrive_in_order_once() {
    const COUNT: usize = 500;
    let hub = hub(Duration::from_secs(2), |_| {});
    let addr = serve_hub(&hub).await;
    for protocol in Protocol::ALL {
        let client = HttpClient::connect(addr, "/hub", Http::LongPolling, protocol, &[]).await;
        let context = hub.context();
        let sender = tokio::spawn(async move {
            for i in 0..COUNT {
                context.clients().all().send("message", (i,)).await.unwrap();
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        let mut received = Vec::new();
        let mut polls = 0;
        let receiving = async {
            while received.len() < COUNT {
                // A slow client: messages pile up between its polls.
                tokio::time::sleep(Duration::from_millis(15)).await;
                polls += 1;
                let response = client.poll().await;
                assert_eq!(response.status, 200);
                let mut buf = bytes::BytesMut::from(&response.body[..]);
                while let Some(message) = protocol.parse_message(&mut buf, usize::MAX).unwrap() {
                    match message {
                        HubMessage::Invocation(invocation) => {
                            assert_eq!(invocation.target, "message");
                            let value: usize = invocation.arguments.into_values().unwrap()[0]
                                .decode()
                                .unwrap();
                            received.push(value);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                assert!(buf.is_empty(), "a poll body ended inside a message");
            }
        };
        tokio::time::timeout(Duration::from_secs(60), receiving)
            .await
            .expect("all messages within a minute");
        sender.await.unwrap();
        assert_eq!(received, (0..COUNT).collect::<Vec<_>>(), "{protocol:?}");
        assert!(polls > 1);
        assert_eq!(client.delete().await.status, 202);
    }
}

/// Between polls a client is subject to the slow-consumer bound, and only to it: a backlog
/// below the bound is delivered whole; one beyond it closes the connection with the reason.
#[tokio::test]
async fn the_slow_consumer_bound_applies_between_polls() {
    let hub = hub(Duration::from_secs(2), |t| t.max_buffered_bytes = 16 * 1024);
    let addr = serve_hub(&hub).await;
    let mut client =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let payload = "x".repeat(1000);
    let clients = hub.context().clients();
    for _ in 0..10 {
        clients.all().send("message", (&payload,)).await.unwrap();
    }
    for _ in 0..10 {
        match client.recv().await {
            Some(HubMessage::Invocation(invocation)) => assert_eq!(invocation.target, "message"),
            other => panic!("{other:?}"),
        }
    }
    for _ in 0..40 {
        let _ = clients.all().send("message", (&payload,)).await;
    }
    let close = client.expect_close().await;
    assert!(close.allow_reconnect);
    assert!(
        close
            .error
            .unwrap()
            .contains("did not read messages fast enough")
    );
}

/// A long-polling client and a WebSocket client on one hub see each other's broadcasts.
#[tokio::test]
async fn long_polling_and_websockets_share_a_hub() {
    let addr = serve_hub(&hub(Duration::from_secs(2), |_| {})).await;
    let mut lp =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::MessagePack, &[]).await;
    let mut ws = Client::connect(addr, "/hub", Protocol::Json).await;
    fn text(message: Option<HubMessage>) -> String {
        match message {
            Some(HubMessage::Invocation(i)) => {
                i.arguments.into_values().unwrap()[0].decode().unwrap()
            }
            other => panic!("{other:?}"),
        }
    }
    ws.send_invocation("Broadcast", ("from ws",)).await;
    assert_eq!(text(ws.recv_no_ping().await), "from ws");
    assert_eq!(text(lp.recv_no_ping().await), "from ws");
    lp.send_invocation("Broadcast", ("from lp",)).await;
    assert_eq!(text(ws.recv_no_ping().await), "from lp");
    assert_eq!(text(lp.recv_no_ping().await), "from lp");
}
