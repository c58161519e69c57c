//! The HTTP edge of an endpoint: status codes of the transport URL, the transports offered,
//! CORS, and authentication.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::http::{EventStream, Http, HttpClient, Response, negotiate, request, serve_hub};
use common::{Client, result_string, test_hub, test_hub_builder};
use serde_json::json;
use signalr_server::auth::{AuthError, Identity};
use signalr_server::protocol::{HubMessage, Protocol, TransportType};
use signalr_server::{Context, CorsOptions, Hub};
use tokio_tungstenite::tungstenite;

/// The status of a WebSocket upgrade that was refused.
async fn websocket_status(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    use tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("{other}"),
    }
}

fn assert_plain(response: &Response, status: u16, text: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(response.text(), text);
}

/// Missing id 400, unknown id 404, for every kind of transport request.
#[tokio::test]
async fn missing_and_unknown_ids() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let sse = [("Accept", "text/event-stream")];
    for (method, headers) in [
        ("GET", &[][..]),
        ("GET", &sse[..]),
        ("POST", &[][..]),
        ("DELETE", &[][..]),
    ] {
        let missing = request(addr, method, "/hub", headers, b"").await;
        assert_plain(&missing, 400, "Connection ID required");
        let unknown = request(addr, method, "/hub?id=nope", headers, b"").await;
        assert_plain(&unknown, 404, "No Connection with that ID");
    }
    assert_eq!(websocket_status(addr, "/hub?id=nope", &[]).await, 404);
    for method in ["PUT", "PATCH", "OPTIONS", "HEAD"] {
        let other = request(addr, method, "/hub?id=nope", &[], b"").await;
        assert_eq!(other.status, 405, "{method}");
    }
}

/// A connection keeps the transport it started with: another one is 400; POST to a
/// WebSocket connection is 405; DELETE is for long polling only.
#[tokio::test]
async fn transports_cannot_be_switched() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let sse = [("Accept", "text/event-stream")];

    // Long polling, then SSE or a WebSocket on the same token.
    let lp = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    let switch = request(addr, "GET", &lp.url, &sse, b"").await;
    assert_plain(&switch, 400, "Cannot change transports mid-connection");
    assert_eq!(websocket_status(addr, &lp.url, &[]).await, 400);

    // SSE, then a long poll.
    let sse_client =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &[]).await;
    let switch = request(addr, "GET", &sse_client.url, &[], b"").await;
    assert_plain(&switch, 400, "Cannot change transports mid-connection");
    assert_eq!(
        request(addr, "DELETE", &sse_client.url, &[], b"")
            .await
            .status,
        400
    );

    // A WebSocket, then POST, DELETE, SSE, a poll.
    let token = negotiate(addr, "/hub", &[]).await;
    let url = format!("/hub?id={token}");
    let mut ws = Client::connect(addr, &url, Protocol::Json).await;
    assert_eq!(
        request(addr, "POST", &url, &[], b"{}\x1e").await.status,
        405
    );
    assert_eq!(request(addr, "DELETE", &url, &[], b"").await.status, 400);
    assert_eq!(request(addr, "GET", &url, &sse, b"").await.status, 400);
    assert_eq!(request(addr, "GET", &url, &[], b"").await.status, 400);
    assert_eq!(result_string(&ws.invoke("Echo", ("still",)).await), "still");

    // Negotiated, never used: DELETE is refused, the connection stays usable.
    let token = negotiate(addr, "/hub", &[]).await;
    let url = format!("/hub?id={token}");
    assert_eq!(request(addr, "DELETE", &url, &[], b"").await.status, 400);
    let _ok = EventStream::open(addr, &url, &[]).await.unwrap();
}

/// Negotiate lists the enabled transports in order, with their formats; a disabled
/// transport is refused with 404.
#[tokio::test]
async fn negotiate_lists_exactly_the_enabled_transports() {
    let addr = serve_hub(&test_hub(|_| {})).await;
    let all = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(
        all.json()["availableTransports"],
        json!([
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]},
            {"transport": "ServerSentEvents", "transferFormats": ["Text"]},
            {"transport": "LongPolling", "transferFormats": ["Text", "Binary"]},
        ])
    );

    let sse = [("Accept", "text/event-stream")];
    for disabled in [
        TransportType::WebSockets,
        TransportType::ServerSentEvents,
        TransportType::LongPolling,
    ] {
        let hub = test_hub_builder()
            .configure_transports(|t| t.transports.retain(|&x| x != disabled))
            .build();
        let addr = serve_hub(&hub).await;
        let negotiated = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
        let listed: Vec<String> = negotiated.json()["availableTransports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["transport"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed.len(), 2);
        assert!(!listed.contains(&format!("{disabled:?}")), "{listed:?}");
        let token = negotiated.json()["connectionToken"]
            .as_str()
            .unwrap()
            .to_owned();
        let url = format!("/hub?id={token}");
        let status = match disabled {
            TransportType::WebSockets => {
                assert_eq!(
                    websocket_status(addr, "/hub", &[]).await,
                    404,
                    "skipNegotiation"
                );
                websocket_status(addr, &url, &[]).await
            }
            TransportType::ServerSentEvents => request(addr, "GET", &url, &sse, b"").await.status,
            TransportType::LongPolling => request(addr, "GET", &url, &[], b"").await.status,
        };
        assert_eq!(status, 404, "{disabled:?}");
    }
}

fn cors_hub() -> Hub {
    test_hub_builder()
        .cors(CorsOptions::allow_origins(["https://app.example"]).allow_header("x-tenant"))
        .require_authentication()
        .authenticator(tokens())
        .build()
}

/// Preflights are answered without authentication, with the exact origin echoed and
/// credentials allowed; disallowed origins get no CORS headers.
#[tokio::test]
async fn cors_preflights() {
    let addr = serve_hub(&cors_hub()).await;
    for path in ["/hub/negotiate?negotiateVersion=1", "/hub?id=x"] {
        let preflight = request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "authorization,x-requested-with,x-signalr-user-agent",
                ),
            ],
            b"",
        )
        .await;
        assert_eq!(preflight.status, 204, "{path}");
        assert_eq!(
            preflight.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(
            preflight.header("access-control-allow-credentials"),
            Some("true")
        );
        let methods = preflight.header("access-control-allow-methods").unwrap();
        for method in ["GET", "POST", "DELETE", "OPTIONS"] {
            assert!(methods.contains(method), "{methods}");
        }
        let headers = preflight.header("access-control-allow-headers").unwrap();
        for header in [
            "authorization",
            "content-type",
            "x-requested-with",
            "x-signalr-user-agent",
            "x-tenant",
        ] {
            assert!(headers.contains(header), "{headers}");
        }

        let refused = request(
            addr,
            "OPTIONS",
            path,
            &[
                ("Origin", "https://evil.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            b"",
        )
        .await;
        assert!(!refused.has_header("access-control-allow-origin"));
        assert!(!refused.has_header("access-control-allow-credentials"));
        assert!(!refused.has_header("access-control-allow-methods"));
    }
}

/// Actual requests carry the CORS headers for allowed origins only; without CORS
/// configured there are none at all.
#[tokio::test]
async fn cors_on_actual_requests() {
    let addr = serve_hub(&cors_hub()).await;
    let auth = ("Authorization", "Bearer alice-token");
    let allowed = request(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Origin", "https://app.example"), auth],
        b"",
    )
    .await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(allowed.header("vary").unwrap().contains("Origin"));
    // Also on errors (a browser must be able to read a 401 to refresh its token).
    let unauthorized = request(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert_eq!(unauthorized.status, 401);
    assert_eq!(
        unauthorized.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let other = request(
        addr,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Origin", "https://evil.example"), auth],
        b"",
    )
    .await;
    assert_eq!(other.status, 200);
    assert!(!other.has_header("access-control-allow-origin"));
    assert!(!other.has_header("access-control-allow-credentials"));

    // CORS off (the default): no headers, and OPTIONS is just another method.
    let plain = serve_hub(&test_hub(|_| {})).await;
    let response = request(
        plain,
        "POST",
        "/hub/negotiate?negotiateVersion=1",
        &[("Origin", "https://app.example")],
        b"",
    )
    .await;
    assert!(!response.has_header("access-control-allow-origin"));
    let preflight = request(
        plain,
        "OPTIONS",
        "/hub/negotiate",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    )
    .await;
    assert_eq!(preflight.status, 405);
    assert!(!preflight.has_header("access-control-allow-origin"));
}

/// A tiny authenticator: bearer tokens of two users; any other token is refused.
fn tokens() -> impl signalr_server::Authenticator {
    let users: HashMap<&'static str, Identity> = HashMap::from([
        (
            "alice-token",
            Identity::user("alice")
                .with_name("Alice")
                .with_claim("role", "admin"),
        ),
        ("bob-token", Identity::user("bob").with_name("Bob")),
    ]);
    let users = Arc::new(users);
    move |_: &http::request::Parts, token: Option<&str>| match token {
        None => Ok(None),
        Some(token) => users
            .get(token)
            .cloned()
            .map(Some)
            .ok_or_else(|| AuthError::new("unknown token")),
    }
}

/// A hub whose user ids come from the authenticator.
fn auth_hub(
    configure: impl FnOnce(signalr_server::HubBuilder<()>) -> signalr_server::HubBuilder<()>,
) -> Hub {
    async fn who_am_i(ctx: Context) -> Option<String> {
        ctx.user_id().map(str::to_owned)
    }
    async fn my_name(ctx: Context) -> Option<String> {
        ctx.identity()?.name.clone()
    }
    async fn send_to_user(
        clients: signalr_server::Clients,
        user: String,
        message: String,
    ) -> Result<(), signalr_server::HubError> {
        clients.user(user).send("message", (message,)).await
    }
    async fn broadcast(
        clients: signalr_server::Clients,
        message: String,
    ) -> Result<(), signalr_server::HubError> {
        clients.all().send("message", (message,)).await
    }
    configure(
        Hub::builder()
            .method("WhoAmI", who_am_i)
            .method("MyName", my_name)
            .method("SendToUser", send_to_user)
            .method("Broadcast", broadcast)
            .method("Echo", |message: String| async move { message })
            .authenticator(tokens()),
    )
    .configure_transports(|t| t.poll_timeout = std::time::Duration::from_secs(1))
    .build()
}

/// Without a valid token every kind of request is 401 with a Bearer challenge.
#[tokio::test]
async fn every_request_needs_a_valid_token() {
    let addr = serve_hub(&auth_hub(|b| b.require_authentication())).await;
    let good = [("Authorization", "Bearer alice-token")];
    let lp = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &good).await;
    let sse_token = negotiate(addr, "/hub", &good).await;
    let ws_token = negotiate(addr, "/hub", &good).await;

    for (credentials, challenge) in [
        (None, "Bearer"),
        (Some("Bearer nope"), "Bearer error=\"invalid_token\""),
    ] {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(value) = credentials {
            headers.push(("Authorization", value));
        }
        let check = |response: Response, what: &str| {
            assert_eq!(response.status, 401, "{what}: {}", response.text());
            assert_eq!(
                response.header("www-authenticate"),
                Some(challenge),
                "{what}"
            );
        };
        check(
            request(
                addr,
                "POST",
                "/hub/negotiate?negotiateVersion=1",
                &headers,
                b"",
            )
            .await,
            "negotiate",
        );
        check(request(addr, "GET", &lp.url, &headers, b"").await, "poll");
        check(
            request(addr, "POST", &lp.url, &headers, b"{}\x1e").await,
            "send",
        );
        check(
            request(addr, "DELETE", &lp.url, &headers, b"").await,
            "delete",
        );
        let refused = EventStream::open(addr, &format!("/hub?id={sse_token}"), &headers)
            .await
            .err()
            .expect("SSE refused");
        check(refused, "event stream");
        assert_eq!(
            websocket_status(addr, &format!("/hub?id={ws_token}"), &headers).await,
            401
        );
        assert_eq!(websocket_status(addr, "/hub", &headers).await, 401);
    }
    // The refused requests touched nothing: the connections still work with the token,
    // given as a header or as the access_token query parameter of browsers.
    let _sse = EventStream::open(
        addr,
        &format!("/hub?id={sse_token}&access_token=alice-token"),
        &[],
    )
    .await
    .unwrap();
    let mut ws = Client::connect(
        addr,
        &format!("/hub?id={ws_token}&access_token=bob-token"),
        Protocol::Json,
    )
    .await;
    assert_eq!(result_string(&ws.invoke("WhoAmI", ()).await), "bob");
    assert_eq!(result_string(&ws.invoke("MyName", ()).await), "Bob");
    assert_eq!(lp.poll().await.status, 200);
}

/// The authenticated user id is the connection's user id: SendToUser reaches it over
/// every transport; anonymous connections (authentication not required) have none.
#[tokio::test]
async fn the_identity_is_the_connections_user() {
    let addr = serve_hub(&auth_hub(|b| b)).await;
    let alice = [("Authorization", "Bearer alice-token")];
    let mut ws =
        Client::connect(addr, "/hub?access_token=alice-token", Protocol::MessagePack).await;
    let mut sse =
        HttpClient::connect(addr, "/hub", Http::ServerSentEvents, Protocol::Json, &alice).await;
    let mut lp = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &alice).await;
    let mut anonymous =
        HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &[]).await;
    assert_eq!(result_string(&sse.invoke("WhoAmI", ()).await), "alice");
    assert_eq!(result_string(&lp.invoke("MyName", ()).await), "Alice");
    match anonymous.invoke("WhoAmI", ()).await.result {
        signalr_server::protocol::CompletionResult::Value(v) => assert!(v.is_null()),
        other => panic!("{other:?}"),
    }

    anonymous.invoke("SendToUser", ("alice", "for alice")).await;
    fn text(message: Option<HubMessage>) -> String {
        match message {
            Some(HubMessage::Invocation(i)) => {
                i.arguments.into_values().unwrap()[0].decode().unwrap()
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(text(ws.recv_no_ping().await), "for alice");
    assert_eq!(text(sse.recv_no_ping().await), "for alice");
    assert_eq!(text(lp.recv_no_ping().await), "for alice");
}

/// The hub's user-id provider wins over the identity.
#[tokio::test]
async fn a_user_id_provider_wins_over_the_identity() {
    let hub = auth_hub(|b| b.user_id_provider(|_| Some("from-provider".to_owned())));
    let addr = serve_hub(&hub).await;
    let mut ws = Client::connect(addr, "/hub?access_token=alice-token", Protocol::Json).await;
    assert_eq!(
        result_string(&ws.invoke("WhoAmI", ()).await),
        "from-provider"
    );
    assert_eq!(result_string(&ws.invoke("MyName", ()).await), "Alice");
}

/// The hub's authorization check: 403 for identities it refuses, 401 for anonymous
/// callers; admitted ones connect.
#[tokio::test]
async fn the_authorize_check_answers_403() {
    let hub = auth_hub(|b| b.authorize(|identity| identity.has_claim("role", "admin")));
    let addr = serve_hub(&hub).await;
    let negotiate_with = |value: &'static str| async move {
        request(
            addr,
            "POST",
            "/hub/negotiate?negotiateVersion=1",
            &[("Authorization", value)],
            b"",
        )
        .await
    };
    assert_eq!(negotiate_with("Bearer bob-token").await.status, 403);
    assert_eq!(negotiate_with("Bearer nope").await.status, 401);
    let anonymous = request(addr, "POST", "/hub/negotiate?negotiateVersion=1", &[], b"").await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    assert_eq!(negotiate_with("Bearer alice-token").await.status, 200);

    // A transport request is checked too, whatever negotiate said.
    let token = negotiate(addr, "/hub", &[("Authorization", "Bearer alice-token")]).await;
    let poll = request(
        addr,
        "GET",
        &format!("/hub?id={token}"),
        &[("Authorization", "Bearer bob-token")],
        b"",
    )
    .await;
    assert_eq!(poll.status, 403);
    assert_eq!(
        websocket_status(addr, "/hub?access_token=bob-token", &[]).await,
        403
    );
}

/// A request whose token is refused receives nothing: a long-polling connection's queued
/// broadcast is not handed to a poll with a bad token, only to a later valid one; a
/// connection whose first transport request is refused never starts.
#[tokio::test]
async fn a_refused_request_receives_nothing() {
    let hub = auth_hub(|b| b.require_authentication());
    let addr = serve_hub(&hub).await;
    let alice = [("Authorization", "Bearer alice-token")];
    let mut lp = HttpClient::connect(addr, "/hub", Http::LongPolling, Protocol::Json, &alice).await;
    // Never started: its transport request was refused.
    let never = negotiate(addr, "/hub", &alice).await;
    let refused = request(
        addr,
        "GET",
        &format!("/hub?id={never}"),
        &[("Authorization", "Bearer stolen")],
        b"",
    )
    .await;
    assert_eq!(refused.status, 401);

    hub.context()
        .clients()
        .all()
        .send("message", ("secret",))
        .await
        .unwrap();
    let stolen = request(
        addr,
        "GET",
        &lp.url,
        &[("Authorization", "Bearer stolen")],
        b"",
    )
    .await;
    assert_eq!(stolen.status, 401);
    assert!(!stolen.text().contains("secret"));
    match lp.recv_no_ping().await {
        Some(HubMessage::Invocation(i)) => assert_eq!(i.target, "message"),
        other => panic!("{other:?}"),
    }
    // The refused connection's first poll, now valid, starts it; it did not get the
    // broadcast sent before.
    let first = request(addr, "GET", &format!("/hub?id={never}"), &alice, b"").await;
    assert_eq!(first.status, 200);
    assert!(first.body.is_empty());
}

/// A method policy refuses an invocation with a Completion error; the method does not run;
/// the connection goes on. Streams are covered too.
#[tokio::test]
async fn method_policies_refuse_invocations() {
    use futures::Stream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RAN: AtomicUsize = AtomicUsize::new(0);
    async fn admin_only() -> &'static str {
        RAN.fetch_add(1, Ordering::SeqCst);
        "done"
    }
    async fn secret_stream() -> impl Stream<Item = u32> {
        futures::stream::iter(0..3)
    }
    let is_admin = |ctx: &Context| {
        ctx.identity()
            .is_some_and(|identity| identity.has_claim("role", "admin"))
    };
    let addr = serve_hub(&auth_hub(|b| {
        b.method("AdminOnly", admin_only)
            .stream("Secret", secret_stream)
            .authorize_method("adminonly", is_admin)
            .authorize_method("Secret", is_admin)
    }))
    .await;

    let mut bob = Client::connect(addr, "/hub?access_token=bob-token", Protocol::Json).await;
    assert_eq!(
        common::error_text(&bob.invoke("AdminOnly", ()).await),
        "Failed to invoke 'AdminOnly' because user is unauthorized"
    );
    bob.send(&HubMessage::StreamInvocation(
        signalr_server::protocol::Invocation {
            invocation_id: Some("s".into()),
            target: "Secret".into(),
            ..Default::default()
        },
    ))
    .await;
    assert_eq!(
        common::error_text(&bob.completion().await),
        "Failed to invoke 'Secret' because user is unauthorized"
    );
    assert_eq!(
        result_string(&bob.invoke("Echo", ("still fine",)).await),
        "still fine"
    );
    assert_eq!(
        RAN.load(Ordering::SeqCst),
        0,
        "a refused method must not run"
    );

    let mut alice = Client::connect(addr, "/hub?access_token=alice-token", Protocol::Json).await;
    assert_eq!(result_string(&alice.invoke("AdminOnly", ()).await), "done");
    assert_eq!(RAN.load(Ordering::SeqCst), 1);

    let mut anonymous = Client::connect(addr, "/hub", Protocol::Json).await;
    assert_eq!(
        common::error_text(&anonymous.invoke("AdminOnly", ()).await),
        "Failed to invoke 'AdminOnly' because user is unauthorized"
    );
}
