//! Streaming both ways over a real WebSocket: server-to-client streams with cancellation,
//! client-to-server upload streams, and the errors around them.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Client, error_text, result_string, start};
use futures::{Stream, StreamExt};
use signalr_server::protocol::{
    Arguments, CancelInvocation, CompletionResult, HubMessage, Invocation, Protocol, StreamItem,
};
use signalr_server::{Cancellation, Hub, HubArguments, HubError, State, UploadStream};

#[derive(Clone, Default)]
struct Counters {
    cancelled: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

async fn counter(count: u32, delay_ms: u64) -> impl Stream<Item = u32> {
    futures::stream::iter(0..count).then(move |i| async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        i
    })
}

async fn forever(
    State(counters): State<Counters>,
    cancel: Cancellation,
) -> impl Stream<Item = u64> {
    // Counts up until cancelled; records that it saw the cancellation.
    tokio::spawn(async move {
        cancel.cancelled().await;
        counters.cancelled.fetch_add(1, Ordering::SeqCst);
    });
    futures::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Some((n, n + 1))
    })
}

async fn failing() -> impl Stream<Item = Result<u32, HubError>> {
    futures::stream::iter(vec![Ok(1), Err(HubError::new("boom"))])
}

async fn big(count: usize) -> impl Stream<Item = String> {
    futures::stream::iter(0..count).map(|i| format!("{i:08}{}", "x".repeat(1000)))
}

async fn sum(offset: i64, mut numbers: UploadStream<i64>) -> Result<i64, HubError> {
    let mut total = offset;
    while let Some(number) = numbers.next().await {
        total += number?;
    }
    Ok(total)
}

async fn concat(
    mut a: UploadStream<String>,
    mut b: UploadStream<String>,
) -> Result<String, HubError> {
    let mut out = String::new();
    while let Some(item) = a.next().await {
        out.push_str(&item?);
    }
    out.push('|');
    while let Some(item) = b.next().await {
        out.push_str(&item?);
    }
    Ok(out)
}

async fn slow_sum(mut numbers: UploadStream<i64>) -> Result<Vec<i64>, HubError> {
    let mut seen = Vec::new();
    while let Some(number) = numbers.next().await {
        tokio::time::sleep(Duration::from_millis(1)).await;
        seen.push(number?);
    }
    Ok(seen)
}

async fn doubled(input: UploadStream<i64>) -> impl Stream<Item = Result<i64, HubError>> {
    input.map(|n| n.map(|n| n * 2))
}

async fn echo(message: String) -> String {
    message
}

/// A method (not a stream) that never returns; it hands its cancellation to a task that
/// records seeing it (the method itself is dropped when its connection ends).
async fn until_cancelled(State(counters): State<Counters>, cancel: Cancellation) {
    counters.started.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        cancel.cancelled().await;
        counters.cancelled.fetch_add(1, Ordering::SeqCst);
    });
    std::future::pending::<()>().await;
}

async fn hub() -> (std::net::SocketAddr, Counters) {
    let counters = Counters::default();
    let hub = Hub::builder()
        .with_state(counters.clone())
        .stream("Counter", counter)
        .stream("Forever", forever)
        .stream("Failing", failing)
        .stream("Big", big)
        .stream("Doubled", doubled)
        .method("Sum", sum)
        .method("Concat", concat)
        .method("SlowSum", slow_sum)
        .method("Echo", echo)
        .method("UntilCancelled", until_cancelled)
        .configure_transports(|t| t.max_buffered_bytes = 64 * 1024)
        .build();
    (
        start(axum::Router::new().merge(hub.router("/hub"))).await,
        counters,
    )
}

fn invocation<A: HubArguments>(
    protocol: Protocol,
    id: Option<&str>,
    target: &str,
    args: A,
    streams: &[&str],
) -> Invocation {
    Invocation {
        invocation_id: id.map(str::to_owned),
        target: target.to_owned(),
        arguments: Arguments::Encoded(args.encode_arguments(protocol).unwrap()),
        stream_ids: streams.iter().map(|s| (*s).to_owned()).collect(),
        ..Invocation::default()
    }
}

async fn stream_items(
    client: &mut Client,
    id: &str,
) -> (Vec<signalr_server::protocol::RawValue>, CompletionResult) {
    let mut items = Vec::new();
    loop {
        match client.recv_no_ping().await {
            Some(HubMessage::StreamItem(item)) => {
                assert_eq!(item.invocation_id, id);
                items.push(item.item);
            }
            Some(HubMessage::Completion(completion)) => {
                assert_eq!(completion.invocation_id, id);
                return (items, completion.result);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn send_item<T: serde::Serialize>(client: &mut Client, stream_id: &str, value: T) {
    let item = client.protocol.encode_value(&value).unwrap();
    client
        .send(&HubMessage::StreamItem(StreamItem {
            headers: Vec::new(),
            invocation_id: stream_id.to_owned(),
            item,
        }))
        .await;
}

async fn end_stream(client: &mut Client, stream_id: &str, error: Option<&str>) {
    client
        .send(&HubMessage::Completion(
            signalr_server::protocol::Completion {
                headers: Vec::new(),
                invocation_id: stream_id.to_owned(),
                result: match error {
                    Some(e) => CompletionResult::Error(e.to_owned()),
                    None => CompletionResult::Void,
                },
            },
        ))
        .await;
}

/// Items in order, then a Completion without result, in both protocols.
#[tokio::test]
async fn server_stream_sends_items_then_completes() {
    let (addr, _) = hub().await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        client
            .send(&HubMessage::StreamInvocation(invocation(
                protocol,
                Some("s"),
                "Counter",
                (3, 1),
                &[],
            )))
            .await;
        let (items, end) = stream_items(&mut client, "s").await;
        let items: Vec<u32> = items.iter().map(|i| i.decode().unwrap()).collect();
        assert_eq!(items, vec![0, 1, 2]);
        assert_eq!(end, CompletionResult::Void);
    }
}

/// CancelInvocation stops the stream and the method sees its cancellation.
#[tokio::test]
async fn cancel_stops_a_stream() {
    let (addr, counters) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("f"),
            "Forever",
            (),
            &[],
        )))
        .await;
    for _ in 0..3 {
        assert!(matches!(
            client.recv_no_ping().await,
            Some(HubMessage::StreamItem(_))
        ));
    }
    client
        .send(&HubMessage::CancelInvocation(CancelInvocation {
            headers: Vec::new(),
            invocation_id: "f".into(),
        }))
        .await;
    // Items already queued may still arrive; then exactly one Completion.
    let (_, end) = stream_items(&mut client, "f").await;
    assert_eq!(end, CompletionResult::Void);
    wait_for(|| counters.cancelled.load(Ordering::SeqCst) == 1).await;
    // The connection is fine afterwards.
    assert_eq!(
        result_string(&client.invoke("Echo", ("after",)).await),
        "after"
    );
}

/// Closing the connection cancels its streams.
#[tokio::test]
async fn disconnect_cancels_streams() {
    let (addr, counters) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::MessagePack,
            Some("f"),
            "Forever",
            (),
            &[],
        )))
        .await;
    assert!(matches!(
        client.recv_no_ping().await,
        Some(HubMessage::StreamItem(_))
    ));
    drop(client);
    wait_for(|| counters.cancelled.load(Ordering::SeqCst) == 1).await;
}

/// A method's `Cancellation` (made only when a method asks for one) is cancelled when its
/// connection ends.
#[tokio::test]
async fn disconnect_cancels_methods_that_ask() {
    let (addr, counters) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send_invocation_with_id("1", "UntilCancelled", ())
        .await;
    wait_for(|| counters.started.load(Ordering::SeqCst) == 1).await;
    assert_eq!(counters.cancelled.load(Ordering::SeqCst), 0);
    drop(client);
    wait_for(|| counters.cancelled.load(Ordering::SeqCst) == 1).await;
}

/// A stream that fails ends with an error Completion.
#[tokio::test]
async fn a_failing_stream_completes_with_its_error() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("x"),
            "Failing",
            (),
            &[],
        )))
        .await;
    let (items, end) = stream_items(&mut client, "x").await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        end,
        CompletionResult::Error(
            "An error occurred on the server while streaming results. HubException: boom".into()
        )
    );
}

/// A stream faster than the client is paced by the client's reading instead of getting the
/// client closed as a slow consumer (the outbound bound here is 64 KiB; the stream is 5 MB).
#[tokio::test]
async fn a_fast_stream_waits_for_a_slow_reader() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::MessagePack,
            Some("b"),
            "Big",
            (5000,),
            &[],
        )))
        .await;
    let mut next = 0;
    loop {
        match client.recv_no_ping().await {
            Some(HubMessage::StreamItem(item)) => {
                let text: String = item.item.decode().unwrap();
                assert_eq!(&text[..8], format!("{next:08}"));
                next += 1;
                if next % 500 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Some(HubMessage::Completion(c)) => {
                assert_eq!(c.result, CompletionResult::Void);
                break;
            }
            other => panic!("unexpected {other:?} after {next} items"),
        }
    }
    assert_eq!(next, 5000);
}

/// Mismatched invocation kinds and reused ids are errors, not crashes.
#[tokio::test]
async fn stream_invocation_mistakes() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    assert_eq!(
        error_text(&client.invoke("Counter", (1, 0)).await),
        "The client attempted to invoke the streaming 'Counter' method with a non-streaming invocation."
    );
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("e"),
            "Echo",
            ("x",),
            &[],
        )))
        .await;
    assert_eq!(
        error_text(&client.completion().await),
        "The client attempted to invoke the non-streaming 'Echo' method with a streaming invocation."
    );
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("d"),
            "Forever",
            (),
            &[],
        )))
        .await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("d"),
            "Forever",
            (),
            &[],
        )))
        .await;
    loop {
        match client.recv_no_ping().await {
            Some(HubMessage::StreamItem(_)) => {}
            Some(HubMessage::Completion(c)) => {
                assert_eq!(
                    c.result,
                    CompletionResult::Error("Invocation ID 'd' is already in use.".into())
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Upload streams: items sent before and after the method starts, with a normal argument.
#[tokio::test]
async fn upload_stream_with_an_argument() {
    let (addr, _) = hub().await;
    for protocol in Protocol::ALL {
        let mut client = Client::connect(addr, "/hub", protocol).await;
        client
            .send(&HubMessage::Invocation(invocation(
                protocol,
                Some("1"),
                "Sum",
                (100,),
                &["u"],
            )))
            .await;
        for n in 1..=4 {
            send_item(&mut client, "u", n).await;
        }
        end_stream(&mut client, "u", None).await;
        let completion = client.completion().await;
        match completion.result {
            CompletionResult::Value(v) => assert_eq!(v.decode::<i64>().unwrap(), 110),
            other => panic!("{other:?}"),
        }
    }
}

/// Two upload streams in one invocation, fed interleaved.
#[tokio::test]
async fn two_upload_streams() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::Invocation(invocation(
            Protocol::Json,
            Some("1"),
            "Concat",
            (),
            &["a", "b"],
        )))
        .await;
    send_item(&mut client, "b", "y").await;
    send_item(&mut client, "a", "x").await;
    send_item(&mut client, "a", "x").await;
    end_stream(&mut client, "a", None).await;
    send_item(&mut client, "b", "y").await;
    end_stream(&mut client, "b", None).await;
    assert_eq!(result_string(&client.completion().await), "xx|yy");
}

/// The client's error ends the upload stream and reaches the method.
#[tokio::test]
async fn upload_stream_errors_reach_the_method() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::Invocation(invocation(
            Protocol::Json,
            Some("1"),
            "Sum",
            (0,),
            &["u"],
        )))
        .await;
    send_item(&mut client, "u", 1).await;
    end_stream(&mut client, "u", Some("source failed")).await;
    assert_eq!(
        error_text(&client.completion().await),
        "An unexpected error occurred invoking 'Sum' on the server. HubException: source failed"
    );
}

/// More items than the upload buffer holds, consumed slowly: all arrive, in order.
#[tokio::test]
async fn upload_back_pressure_keeps_every_item() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    client
        .send(&HubMessage::Invocation(invocation(
            Protocol::MessagePack,
            Some("1"),
            "SlowSum",
            (),
            &["u"],
        )))
        .await;
    for n in 0..200 {
        send_item(&mut client, "u", n).await;
    }
    end_stream(&mut client, "u", None).await;
    match client.completion().await.result {
        CompletionResult::Value(v) => assert_eq!(
            v.decode::<Vec<i64>>().unwrap(),
            (0..200).collect::<Vec<_>>()
        ),
        other => panic!("{other:?}"),
    }
}

/// The wrong number of streams is refused.
#[tokio::test]
async fn stream_count_mismatch() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::Invocation(invocation(
            Protocol::Json,
            Some("1"),
            "Sum",
            (0,),
            &[],
        )))
        .await;
    assert_eq!(
        error_text(&client.completion().await),
        "Failed to invoke 'Sum' due to an error on the server. Client sent 0 stream(s), Hub method expects 1."
    );
    client
        .send(&HubMessage::Invocation(invocation(
            Protocol::Json,
            Some("2"),
            "Echo",
            ("x",),
            &["z"],
        )))
        .await;
    assert_eq!(
        error_text(&client.completion().await),
        "Failed to invoke 'Echo' due to an error on the server. Client sent 1 stream(s), Hub method expects 0."
    );
}

/// Streaming both ways at once: an upload turned into a server stream.
#[tokio::test]
async fn upload_in_stream_out() {
    let (addr, _) = hub().await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;
    client
        .send(&HubMessage::StreamInvocation(invocation(
            Protocol::Json,
            Some("d"),
            "Doubled",
            (),
            &["in"],
        )))
        .await;
    for n in [1, 2, 3] {
        send_item(&mut client, "in", n).await;
    }
    end_stream(&mut client, "in", None).await;
    let (items, end) = stream_items(&mut client, "d").await;
    let items: Vec<i64> = items.iter().map(|i| i.decode().unwrap()).collect();
    assert_eq!(items, vec![2, 4, 6]);
    assert_eq!(end, CompletionResult::Void);
}

async fn wait_for(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}
