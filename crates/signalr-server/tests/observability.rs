//! What operators see: the metrics each hub records (read back through the Prometheus
//! exporter), `GET /metrics` and `GET /healthz`, and the span that puts the connection id on
//! every log line of a connection.
//!
//! One Prometheus recorder and one log subscriber serve the whole test binary; each test
//! uses its own hub name, so its metrics are its own.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use common::http::{Http, HttpClient, request};
use common::{Client, error_text, eventually, result_string, start, test_hub_builder};
use serde_json::Value;
use signalr_server::observability::{self, Observability, PrometheusHandle};
use signalr_server::protocol::{Arguments, Completion, HubMessage, Invocation, Protocol};
use signalr_server::testing::TestClient;
use signalr_server::{
    Audience, AuthError, Context, Hub, HubArguments, HubConnection, HubLifetimeManager, Identity,
    LifetimeError, LifetimeHealth, MemoryLifetimeManager, SerializedMessage,
};

/// The binary's Prometheus recorder, installed before any hub is built.
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| observability::install_prometheus().expect("no other recorder"))
        .clone()
}

/// The value of a sample: `name` with (at least) these labels; `None` if not exported.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(key, value)| line.contains(&format!("{key}=\"{value}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels)
        .unwrap_or_else(|| panic!("{name} {labels:?} is not exported:\n{text}"))
}

/// `GET path`: status and body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let response = request(addr, "GET", path, &[], b"").await;
    (response.status, response.text())
}

async fn healthz(addr: SocketAddr) -> (u16, Value) {
    let (status, body) = get(addr, "/healthz").await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

#[tokio::test]
async fn metrics_count_connections_messages_invocations_and_refusals() {
    let metrics = prometheus();
    let hub = test_hub_builder()
        .name("metrics-test")
        .configure(|o| {
            o.handshake_timeout = Duration::from_millis(300);
            o.max_groups_per_connection = 1;
        })
        .build();
    let app = axum::Router::new()
        .merge(hub.router("/hub"))
        .merge(Observability::new().prometheus(metrics).hub(&hub).router());
    let addr = start(app).await;
    let hub_label = ("hub", "metrics-test");

    let mut json = Client::connect(addr, "/hub", Protocol::Json).await;
    let mut msgpack = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    let mut polling =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    assert_eq!(result_string(&json.invoke("Echo", ("a",)).await), "a");
    assert_eq!(result_string(&msgpack.invoke("Echo", ("b",)).await), "b");
    assert_eq!(result_string(&polling.invoke("Echo", ("c",)).await), "c");
    assert!(!error_text(&json.invoke("Fail", ()).await).is_empty());
    json.invoke("Join", ("first",)).await;
    let refused = error_text(&json.invoke("Join", ("second",)).await);
    assert!(refused.contains("the most allowed"), "{refused}");

    // A protocol the hub does not speak, and a handshake that never comes.
    let mut xml = Client::open(addr, "/hub", Protocol::Json).await;
    xml.send_text(b"{\"protocol\":\"xml\",\"version\":1}\x1e")
        .await;
    assert!(xml.handshake_response().await.error.is_some());
    let mut silent = Client::open(addr, "/hub", Protocol::Json).await;
    assert!(silent.handshake_response().await.error.is_some());

    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for (transport, protocol) in [
        ("WebSockets", "json"),
        ("WebSockets", "messagepack"),
        ("LongPolling", "json"),
    ] {
        let labels = [hub_label, ("transport", transport), ("protocol", protocol)];
        assert_eq!(
            value(&text, "signalr_connections", &labels),
            1.0,
            "{labels:?}"
        );
    }
    assert_eq!(
        value(
            &text,
            "signalr_connections",
            &[hub_label, ("transport", "ServerSentEvents")]
        ),
        0.0
    );
    assert_eq!(
        value(&text, "signalr_connections_opened_total", &[hub_label]),
        3.0
    );
    // Echo three times, Fail, Join twice.
    assert_eq!(value(&text, "signalr_invocations_total", &[hub_label]), 6.0);
    assert_eq!(
        value(&text, "signalr_invocation_errors_total", &[hub_label]),
        2.0
    );
    assert!(value(&text, "signalr_messages_received_total", &[hub_label]) >= 6.0);
    // Five handshake responses (two of them refusals) and six Completions, at least.
    assert!(value(&text, "signalr_messages_sent_total", &[hub_label]) >= 11.0);
    for transport in ["WebSockets", "LongPolling"] {
        let labels = [hub_label, ("transport", transport)];
        assert!(value(&text, "signalr_bytes_received_total", &labels) > 0.0);
        assert!(value(&text, "signalr_bytes_sent_total", &labels) > 0.0);
    }
    let failures = |reason| {
        value(
            &text,
            "signalr_handshake_failures_total",
            &[hub_label, ("reason", reason)],
        )
    };
    assert_eq!(failures("unsupported"), 1.0);
    assert_eq!(failures("timeout"), 1.0);
    assert_eq!(failures("malformed"), 0.0);
    assert_eq!(
        value(
            &text,
            "signalr_limit_refusals_total",
            &[hub_label, ("limit", "groups")]
        ),
        1.0
    );

    // The health report counts the hub's connections.
    let (status, report) = healthz(addr).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "ok");
    let hub_report = &report["hubs"][0];
    assert_eq!(hub_report["name"], "metrics-test");
    assert_eq!(hub_report["connections"], 3, "{report}");
    assert_eq!(hub_report["lifetime_manager"]["kind"], "in-memory");
    assert_eq!(hub_report["lifetime_manager"]["backplane"], false);

    // A connection that ends leaves the gauge and is counted as closed.
    drop(json);
    let labels = [hub_label, ("transport", "WebSockets"), ("protocol", "json")];
    let handle = prometheus();
    eventually(|| {
        let text = handle.render();
        async move {
            sample(&text, "signalr_connections", &labels) == Some(0.0)
                && sample(&text, "signalr_connections_closed_total", &[hub_label]) == Some(1.0)
        }
    })
    .await;
    assert_eq!(result_string(&msgpack.invoke("Echo", ("on",)).await), "on");
}

#[tokio::test]
async fn auth_and_connection_limit_refusals_are_counted() {
    let metrics = prometheus();
    let hub = test_hub_builder()
        .name("refusals-test")
        .authenticator(
            |_: &http::request::Parts, token: Option<&str>| match token {
                Some("admin") => Ok(Some(Identity::user("root").with_claim("role", "admin"))),
                Some("user") => Ok(Some(Identity::user("joe"))),
                Some(_) => Err(AuthError::new("unknown token")),
                None => Ok(None),
            },
        )
        .require_authentication()
        .authorize(|identity| identity.has_claim("role", "admin"))
        .configure_transports(|t| t.max_connections = 1)
        .build();
    let addr = common::http::serve_hub(&hub).await;
    let negotiate = |token: Option<&'static str>| async move {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header
            .as_deref()
            .map(|h| vec![("Authorization", h)])
            .unwrap_or_default();
        request(
            addr,
            "POST",
            "/hub/negotiate?negotiateVersion=1",
            &headers,
            b"",
        )
        .await
        .status
    };
    assert_eq!(negotiate(None).await, 401);
    assert_eq!(negotiate(Some("forged")).await, 401);
    assert_eq!(negotiate(Some("user")).await, 403);
    assert_eq!(negotiate(Some("admin")).await, 200);
    assert_eq!(negotiate(Some("admin")).await, 503);

    let text = metrics.render();
    let hub_label = ("hub", "refusals-test");
    let auth = |status| {
        value(
            &text,
            "signalr_auth_refusals_total",
            &[hub_label, ("status", status)],
        )
    };
    assert_eq!(auth("401"), 2.0);
    assert_eq!(auth("403"), 1.0);
    let limit = |limit| {
        value(
            &text,
            "signalr_limit_refusals_total",
            &[hub_label, ("limit", limit)],
        )
    };
    assert_eq!(limit("connections"), 1.0);
    assert_eq!(limit("pending_negotiations"), 0.0);
    assert_eq!(
        value(&text, "signalr_pending_negotiations", &[hub_label]),
        1.0
    );
}

/// A lifetime manager standing in for a backplane whose connection comes and goes.
#[derive(Default)]
struct SwitchableBackplane {
    local: MemoryLifetimeManager,
    down: AtomicBool,
}

#[async_trait]
impl HubLifetimeManager for SwitchableBackplane {
    async fn on_connected(&self, connection: &Arc<HubConnection>) -> Result<(), LifetimeError> {
        self.local.on_connected(connection).await
    }
    async fn on_disconnected(&self, connection: &Arc<HubConnection>) {
        self.local.on_disconnected(connection).await
    }
    async fn send(
        &self,
        audience: &Audience,
        message: &SerializedMessage,
    ) -> Result<(), LifetimeError> {
        self.local.send(audience, message).await
    }
    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError> {
        self.local.add_to_group(connection_id, group).await
    }
    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        self.local.remove_from_group(connection_id, group).await
    }
    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
    ) -> Result<Completion, LifetimeError> {
        self.local
            .invoke_connection(connection_id, invocation_id, message)
            .await
    }
    fn health(&self) -> LifetimeHealth {
        let since = SystemTime::now() - Duration::from_secs(7);
        LifetimeHealth::backplane(
            "switchable",
            !self.down.load(Ordering::Relaxed),
            Some(since),
        )
        .with_detail("a test double")
    }
}

#[tokio::test]
async fn healthz_reports_the_backplane_and_shutdown() {
    let backplane = Arc::new(SwitchableBackplane::default());
    let chat = Hub::builder()
        .name("chat")
        .lifetime_manager(backplane.clone())
        .build();
    let other = Hub::builder().name("other").build();
    let app = axum::Router::new()
        .merge(chat.router("/chat"))
        .merge(other.router("/other"))
        .merge(observability::router(None, &[&chat, &other]))
        .nest(
            "/lenient",
            Observability::new()
                .hub(&chat)
                .backplane_required(false)
                .router(),
        );
    let addr = start(app).await;

    let (status, report) = healthz(addr).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "ok");
    let names: Vec<&str> = report["hubs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hub| hub["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chat", "other"]);
    let manager = &report["hubs"][0]["lifetime_manager"];
    assert_eq!(manager["kind"], "switchable");
    assert_eq!(manager["backplane"], true);
    assert_eq!(manager["connected"], true);
    assert_eq!(manager["detail"], "a test double");
    assert!(manager["for_seconds"].as_u64().unwrap() >= 7, "{manager}");
    assert!(manager["since_unix_seconds"].as_u64().unwrap() > 1_700_000_000);
    // No recorder given: no /metrics.
    assert_eq!(get(addr, "/metrics").await.0, 404);

    backplane.down.store(true, Ordering::Relaxed);
    let (status, report) = healthz(addr).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["hubs"][0]["lifetime_manager"]["connected"], false);
    let (status, report) = healthz_at(addr, "/lenient/healthz").await;
    assert_eq!(status, 200, "{report}");

    backplane.down.store(false, Ordering::Relaxed);
    other.shutdown().await;
    let (status, report) = healthz(addr).await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["status"], "shutting_down");
    assert_eq!(report["hubs"][1]["shutting_down"], true);
}

async fn healthz_at(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = get(addr, path).await;
    (status, serde_json::from_str(&body).unwrap())
}

/// Log lines written by the binary's subscriber.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
        logs
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn every_log_line_of_a_connection_names_it() {
    let logs = captured_logs();
    async fn say(ctx: Context, words: String) -> String {
        tracing::info!(%words, "the hub method speaks");
        ctx.connection_id().to_owned()
    }
    let hub = Hub::builder().name("spans").method("Say", say).build();
    let addr = start(axum::Router::new().merge(hub.router("/hub"))).await;

    let mut client = Client::connect(addr, "/hub", Protocol::MessagePack).await;
    let id = result_string(&client.invoke("Say", ("span-test-words",)).await);
    let mut polling =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let polled_id = result_string(&polling.invoke("Say", ("span-test-polled",)).await);

    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let line = |words: &str| {
        text.lines()
            .find(|line| line.contains(words))
            .unwrap_or_else(|| panic!("no log line with {words}:\n{text}"))
            .to_owned()
    };
    let websocket = line("span-test-words");
    assert!(
        websocket.contains(&format!("connection_id={id}")),
        "{websocket}"
    );
    assert!(websocket.contains("WebSockets"), "{websocket}");
    assert!(websocket.contains("messagepack"), "{websocket}");
    let long_polling = line("span-test-polled");
    assert!(
        long_polling.contains(&format!("connection_id={polled_id}")),
        "{long_polling}"
    );
    assert!(long_polling.contains("LongPolling"), "{long_polling}");
    assert!(long_polling.contains("json"), "{long_polling}");
}

/// One hub's members: `groups` groups (`g0`, `g1`, …) of `members` in-process connections
/// each, whose writers never write. Each member starts with `queued` bytes waiting, then
/// `silence` passes; then a client sends `rounds` messages to every group in one WebSocket
/// message. Returns `signalr_sender_waits_total` of the hub by reason: `(pace, far_behind)`.
async fn sender_waits(
    hub_name: &str,
    groups: usize,
    members: usize,
    queued: usize,
    silence: Duration,
    rounds: usize,
) -> (f64, f64) {
    let metrics = prometheus();
    let manager = Arc::new(MemoryLifetimeManager::new());
    let mut clients = Vec::new();
    for group in 0..groups {
        for member in 0..members {
            let client = TestClient::new(&format!("{group}-{member}"), None, Protocol::Json);
            manager.on_connected(client.connection()).await.unwrap();
            manager
                .add_to_group(client.id(), &format!("g{group}"))
                .await
                .unwrap();
            client
                .connection()
                .send_frame(Bytes::from(vec![b' '; queued]))
                .unwrap();
            clients.push(client);
        }
    }
    tokio::time::sleep(silence).await;
    let hub = test_hub_builder()
        .name(hub_name)
        .lifetime_manager(manager)
        .build();
    let app = axum::Router::new().merge(hub.router("/hub")).merge(
        Observability::new()
            .prometheus(metrics.clone())
            .hub(&hub)
            .router(),
    );
    let addr = start(app).await;
    let mut client = Client::connect(addr, "/hub", Protocol::Json).await;

    let mut burst = Vec::new();
    for _ in 0..rounds {
        for group in 0..groups {
            let send = HubMessage::Invocation(Invocation {
                target: "SendGroup".to_owned(),
                arguments: Arguments::Encoded(
                    (format!("g{group}"), "x")
                        .encode_arguments(Protocol::Json)
                        .unwrap(),
                ),
                ..Invocation::default()
            });
            burst.extend_from_slice(&Protocol::Json.encode_message(&send).unwrap());
        }
    }
    client.send_raw(&burst).await;
    // Invocations run in order: once this one answers, the burst has run.
    assert_eq!(
        result_string(&client.invoke("Echo", ("done",)).await),
        "done"
    );
    for member in &mut clients {
        assert!(
            member.discard_queued() > queued,
            "{hub_name}: a member got nothing"
        );
    }
    let text = metrics.render();
    let waits = |reason| {
        value(
            &text,
            "signalr_sender_waits_total",
            &[("hub", hub_name), ("reason", reason)],
        )
    };
    (waits("pace"), waits("far_behind"))
}

/// A sender whose burst gives a frame or two to each member of many small groups, all of
/// whose queues still wait for their writers, is paced once; the same number of messages to
/// one large group (hundreds of frames per push) is not; an audience whose writers are far
/// behind makes the sender yield instead. Each is counted in `signalr_sender_waits_total`.
#[tokio::test]
async fn senders_held_back_for_their_writers_are_counted() {
    let no_silence = Duration::ZERO;
    let (pace, far_behind) = sender_waits("waits-small-groups", 100, 2, 10, no_silence, 2).await;
    assert_eq!(
        (pace, far_behind),
        (1.0, 0.0),
        "100 groups of 2, 2 messages each"
    );

    let (pace, far_behind) = sender_waits("waits-one-group", 1, 200, 10, no_silence, 200).await;
    assert_eq!(
        (pace, far_behind),
        (0.0, 0.0),
        "one group of 200, 200 messages"
    );

    let silence = Duration::from_millis(300);
    let (pace, far_behind) = sender_waits("waits-far-behind", 1, 20, 100_000, silence, 50).await;
    assert_eq!(pace, 0.0, "one group of 20, far behind");
    assert!(
        far_behind >= 1.0,
        "one group of 20 far behind: no yield counted"
    );
}
