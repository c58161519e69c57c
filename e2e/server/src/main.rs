//! `e2e-server`: the server the end-to-end suites drive with the official clients.
//!
//! One hub at `/test` with a method per feature: results, errors, streaming both ways with
//! cancellation, client results. Prints `listening on http://ADDR` on stdout when ready.
//!
//! ```text
//! e2e-server --listen 127.0.0.1:0
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use signalr_server::{
    Cancellation, Clients, Context, Groups, Hub, HubContext, HubError, State, UploadStream,
};

#[derive(Clone, Default)]
struct Stats {
    /// Streams whose method observed a cancellation.
    cancelled_streams: Arc<AtomicUsize>,
    /// Numbers each connection sent with `Record`, in arrival order.
    recorded: Arc<Mutex<HashMap<String, Vec<i64>>>>,
}

async fn echo(message: String) -> String {
    message
}

#[derive(Debug, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
    label: String,
}

async fn mirror(point: Point) -> Result<Point, HubError> {
    Ok(Point {
        x: point.y,
        y: point.x,
        label: point.label.to_uppercase(),
    })
}

async fn fail(message: String) -> Result<(), HubError> {
    Err(HubError::new(message))
}

async fn broadcast(clients: Clients, message: String) -> Result<(), HubError> {
    clients.all().send("message", (message,)).await
}

async fn join(groups: Groups, ctx: Context, group: String) -> Result<(), HubError> {
    groups.add(ctx.connection_id(), &group).await
}

async fn send_to_group(clients: Clients, group: String, message: String) -> Result<(), HubError> {
    clients.group(group).send("message", (message,)).await
}

async fn counter(count: u32, delay_ms: u64) -> impl Stream<Item = u32> {
    futures::stream::iter(0..count).then(move |i| async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        i
    })
}

async fn ticks(State(stats): State<Stats>, cancel: Cancellation) -> impl Stream<Item = u64> {
    tokio::spawn(async move {
        cancel.cancelled().await;
        stats.cancelled_streams.fetch_add(1, Ordering::SeqCst);
    });
    futures::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some((n, n + 1))
    })
}

async fn cancelled_streams(State(stats): State<Stats>) -> usize {
    stats.cancelled_streams.load(Ordering::SeqCst)
}

async fn failing_stream(after: u32) -> impl Stream<Item = Result<u32, HubError>> {
    futures::stream::iter(0..=after).map(move |i| {
        if i == after {
            Err(HubError::new("the stream failed"))
        } else {
            Ok(i)
        }
    })
}

async fn sum(offset: i64, mut numbers: UploadStream<i64>) -> Result<i64, HubError> {
    let mut total = offset;
    while let Some(number) = numbers.next().await {
        total += number?;
    }
    Ok(total)
}

async fn uppercase(input: UploadStream<String>) -> impl Stream<Item = Result<String, HubError>> {
    input.map(|item| item.map(|s| s.to_uppercase()))
}

async fn ask_caller(clients: Clients, method: String) -> Result<i64, HubError> {
    let value: i64 = clients.caller().invoke(&method, (20, 22)).await?;
    Ok(value)
}

async fn ask_client(clients: Clients, connection_id: String) -> Result<String, HubError> {
    clients.client(connection_id).invoke("name", ()).await
}

async fn connection_id(ctx: Context) -> String {
    ctx.connection_id().to_owned()
}

/// Send the caller `n(0)`, `n(1)`, ... `n(count - 1)`, one every `interval_ms`, from a
/// background task (so the sends continue while the caller's transport is being replaced).
async fn start_numbers(context: HubContext, ctx: Context, count: i64, interval_ms: u64) {
    let caller = context.clients().client(ctx.connection_id());
    tokio::spawn(async move {
        for n in 0..count {
            if caller.send("n", (n,)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
    });
}

async fn record(State(stats): State<Stats>, ctx: Context, n: i64) {
    let mut recorded = stats.recorded.lock().unwrap_or_else(|p| p.into_inner());
    recorded
        .entry(ctx.connection_id().to_owned())
        .or_default()
        .push(n);
}

async fn recorded(State(stats): State<Stats>, ctx: Context) -> Vec<i64> {
    let recorded = stats.recorded.lock().unwrap_or_else(|p| p.into_inner());
    recorded
        .get(ctx.connection_id())
        .cloned()
        .unwrap_or_default()
}

fn hub() -> Hub {
    Hub::builder()
        .with_state(Stats::default())
        .method("Echo", echo)
        .method("Mirror", mirror)
        .method("Fail", fail)
        .method("Broadcast", broadcast)
        .method("Join", join)
        .method("SendToGroup", send_to_group)
        .stream("Counter", counter)
        .stream("Ticks", ticks)
        .method("CancelledStreams", cancelled_streams)
        .stream("FailingStream", failing_stream)
        .method("Sum", sum)
        .stream("Uppercase", uppercase)
        .method("AskCaller", ask_caller)
        .method("AskClient", ask_client)
        .method("ConnectionId", connection_id)
        .method("StartNumbers", start_numbers)
        .method("Record", record)
        .method("Recorded", recorded)
        .configure(|options| {
            options.client_result_timeout = Duration::from_secs(5);
        })
        // Only clients that ask (`withStatefulReconnect()`) get it.
        .configure_transports(|transports| transports.allow_stateful_reconnect = true)
        .build()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let mut listen = "127.0.0.1:0".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().unwrap_or(listen),
            other => {
                eprintln!("unknown argument {other}; usage: e2e-server [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = axum::Router::new().merge(hub().router("/test"));
    signalr_server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
