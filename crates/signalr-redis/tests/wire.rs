//! The manager on the wire, watched and driven by a plain RESP connection standing in for
//! an ASP.NET Core node: what it publishes must be the bytes of redis-backplane.md §1.5,
//! and what a .NET node publishes must reach local connections.

use std::sync::Arc;
use std::time::Duration;

use signalr_redis::testing::{RedisServer, Reply, RespConnection};
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::{Completion, CompletionResult, HubMessage, Protocol, RawValue};
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager, LifetimeError, SerializedMessage};

const HUB: &str = "MyApp.Hubs.ChatHub";
const JSON_FRAME: &[u8] = b"{\"type\":1,\"target\":\"Send\",\"arguments\":[\"hello\"]}\x1e";
const MSGPACK_FRAME: &str = "11 96 01 80 c0 a4 53 65 6e 64 91 a5 68 65 6c 6c 6f 90";
const CONNECTION_ID: &str = "7M5K5ZgOGHhJeOmV0TjLmQ";
const SERVER: &str = "web1_02db60e5fab243b890a847fa5c4dcb29";
const DOTNET_SERVER: &str = "dotnet1_0123456789abcdef0123456789abcdef";
const INVOCATION_ID: &str = "AAECAwQFBgcICQoLDA0ODw";
const RETURN_CHANNEL: &str =
    "MyApp.Hubs.ChatHub:internal:return:web1_02db60e5fab243b890a847fa5c4dcb29";
const TV6_FRAME: &[u8] = b"{\"type\":1,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"target\":\"GetMessage\",\"arguments\":[]}\x1e";
const TV7_FRAME: &[u8] =
    b"{\"type\":3,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"result\":42}\x1e";

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn tv1() -> Vec<u8> {
    cat(&[&hex("92 90 81 a4 6a 73 6f 6e c4 31"), JSON_FRAME])
}

fn tv2() -> Vec<u8> {
    cat(&[
        &hex("92 90 82 a4 6a 73 6f 6e c4 31"),
        JSON_FRAME,
        &hex("ab 6d 65 73 73 61 67 65 70 61 63 6b c4 12"),
        &hex(MSGPACK_FRAME),
    ])
}

fn tv3() -> Vec<u8> {
    cat(&[
        &hex("92 91 b6"),
        CONNECTION_ID.as_bytes(),
        &hex("81 a4 6a 73 6f 6e c4 31"),
        JSON_FRAME,
    ])
}

fn tv4() -> Vec<u8> {
    cat(&[
        &hex("95 01 d9 25"),
        SERVER.as_bytes(),
        &hex("01 a6"),
        b"admins",
        &hex("b6"),
        CONNECTION_ID.as_bytes(),
    ])
}

fn tv6() -> Vec<u8> {
    cat(&[
        &hex("94 90 81 a4 6a 73 6f 6e c4 58"),
        TV6_FRAME,
        &hex("b6"),
        INVOCATION_ID.as_bytes(),
        &hex("d9 48"),
        RETURN_CHANNEL.as_bytes(),
    ])
}

fn tv7() -> Vec<u8> {
    cat(&[&hex("92 a4 6a 73 6f 6e c4 3f"), TV7_FRAME])
}

/// A raw connection subscribed to some channels, as a .NET node's would be.
struct Tap(RespConnection);

impl Tap {
    fn new(server: &RedisServer, channels: &[&str]) -> Tap {
        let mut connection = server.connect().expect("raw connection");
        let mut command = vec!["SUBSCRIBE"];
        command.extend_from_slice(channels);
        connection.send(&command).expect("SUBSCRIBE");
        for _ in channels {
            match connection.read_reply().expect("subscribe confirmation") {
                Reply::Array(items)
                    if items.first() == Some(&Reply::Bulk(b"subscribe".to_vec())) => {}
                other => panic!("unexpected reply to SUBSCRIBE: {other:?}"),
            }
        }
        Tap(connection)
    }

    /// The next pub/sub message: (channel, payload).
    fn next(&mut self) -> (String, Vec<u8>) {
        loop {
            match self.0.read_reply().expect("a pub/sub message within 5 s") {
                Reply::Array(items) if items.len() == 3 => {
                    let mut items = items.into_iter();
                    let kind = items.next();
                    if kind != Some(Reply::Bulk(b"message".to_vec())) {
                        continue;
                    }
                    let channel = match items.next() {
                        Some(Reply::Bulk(channel)) => String::from_utf8(channel).unwrap(),
                        other => panic!("bad channel {other:?}"),
                    };
                    let payload = match items.next() {
                        Some(Reply::Bulk(payload)) => payload,
                        other => panic!("bad payload {other:?}"),
                    };
                    return (channel, payload);
                }
                other => panic!("unexpected pub/sub reply {other:?}"),
            }
        }
    }

    fn expect(&mut self, channel: &str, payload: &[u8]) {
        let (got_channel, got_payload) = self.next();
        assert_eq!(got_channel, channel);
        assert_eq!(
            got_payload, payload,
            "payload on {channel} differs from the .NET bytes:\n got  {got_payload:02x?}\n want {payload:02x?}"
        );
    }
}

/// Publishes as a .NET node would.
fn publish(server: &RedisServer, channel: &str, payload: &[u8]) -> i64 {
    let mut connection = server.connect().expect("raw connection");
    match connection
        .command(&[b"PUBLISH".as_slice(), channel.as_bytes(), payload])
        .expect("PUBLISH")
    {
        Reply::Integer(receivers) => receivers,
        other => panic!("PUBLISH answered {other:?}"),
    }
}

async fn start() -> (RedisServer, Arc<RedisHubLifetimeManager>) {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let manager = RedisHubLifetimeManager::connect(config(&server))
        .await
        .unwrap();
    (server, manager)
}

fn config(server: &RedisServer) -> RedisConfig {
    RedisConfig::new(server.url())
        .hub_name(HUB)
        .server_name(SERVER)
        .ack_timeout(Duration::from_millis(500))
}

fn json_send_hello() -> SerializedMessage {
    SerializedMessage::invocation("Send", &("hello",), &[Protocol::Json]).unwrap()
}

async fn connect(
    manager: &Arc<RedisHubLifetimeManager>,
    id: &str,
    user: Option<&str>,
    protocol: Protocol,
) -> TestClient {
    let client = TestClient::new(id, user, protocol);
    manager.on_connected(client.connection()).await.unwrap();
    client
}

async fn expect_hello(client: &mut TestClient) {
    let invocation = client.expect_invocation("Send").await;
    let arguments = invocation.arguments.into_values().unwrap();
    assert_eq!(arguments[0].decode::<String>().unwrap(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_publish_the_dotnet_bytes() {
    let (server, manager) = start().await;
    let mut tap = Tap::new(
        &server,
        &[
            "MyApp.Hubs.ChatHub:all",
            "MyApp.Hubs.ChatHub:group:admins",
            "MyApp.Hubs.ChatHub:user:alice",
            "MyApp.Hubs.ChatHub:connection:elsewhere",
        ],
    );
    let both = SerializedMessage::invocation("Send", &("hello",), &Protocol::ALL).unwrap();

    manager
        .send(&Audience::All, &json_send_hello())
        .await
        .unwrap();
    tap.expect("MyApp.Hubs.ChatHub:all", &tv1());
    manager.send(&Audience::All, &both).await.unwrap();
    tap.expect("MyApp.Hubs.ChatHub:all", &tv2());
    manager
        .send(
            &Audience::AllExcept(vec![CONNECTION_ID.into()]),
            &json_send_hello(),
        )
        .await
        .unwrap();
    tap.expect("MyApp.Hubs.ChatHub:all", &tv3());
    manager
        .send(&Audience::Group("admins".into()), &json_send_hello())
        .await
        .unwrap();
    tap.expect("MyApp.Hubs.ChatHub:group:admins", &tv1());
    manager
        .send(
            &Audience::Users(vec!["alice".into(), String::new()]),
            &json_send_hello(),
        )
        .await
        .unwrap();
    tap.expect("MyApp.Hubs.ChatHub:user:alice", &tv1());
    manager
        .send(
            &Audience::Connection("elsewhere".into()),
            &json_send_hello(),
        )
        .await
        .unwrap();
    tap.expect("MyApp.Hubs.ChatHub:connection:elsewhere", &tv1());
    assert_eq!(manager.stats().decode_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channel_prefix_is_prepended_raw() {
    let server = tokio::task::spawn_blocking(RedisServer::start)
        .await
        .unwrap();
    let manager = RedisHubLifetimeManager::connect(config(&server).channel_prefix("MyApp"))
        .await
        .unwrap();
    let mut client = connect(&manager, "c1", None, Protocol::Json).await;
    let mut tap = Tap::new(&server, &["MyAppMyApp.Hubs.ChatHub:all"]);
    manager
        .send(&Audience::All, &json_send_hello())
        .await
        .unwrap();
    tap.expect("MyAppMyApp.Hubs.ChatHub:all", &tv1());
    expect_hello(&mut client).await;
    // The manager hears only prefixed channels.
    publish(&server, "MyApp.Hubs.ChatHub:all", &tv1());
    publish(&server, "MyAppMyApp.Hubs.ChatHub:all", &tv1());
    expect_hello(&mut client).await;
    client.expect_nothing(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_group_changes_are_dotnet_group_commands_completed_by_dotnet_acks() {
    let (server, manager) = start().await;
    let mut tap = Tap::new(&server, &["MyApp.Hubs.ChatHub:internal:groups"]);
    let ack_channel = "MyApp.Hubs.ChatHub:internal:ack:web1_02db60e5fab243b890a847fa5c4dcb29";

    let adding = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.add_to_group(CONNECTION_ID, "admins").await })
    };
    tap.expect("MyApp.Hubs.ChatHub:internal:groups", &tv4());
    publish(&server, ack_channel, &hex("91 01"));
    adding
        .await
        .unwrap()
        .expect("the .NET ack completes the add");

    let removing = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.remove_from_group(CONNECTION_ID, "admins").await })
    };
    let mut remove = tv4();
    remove[1] = 0x02; // id 2
    remove[2 + 2 + SERVER.len()] = 0x02; // action Remove
    tap.expect("MyApp.Hubs.ChatHub:internal:groups", &remove);
    // An ack in a wider integer encoding is the same ack.
    publish(&server, ack_channel, &hex("91 ce 00 00 00 02"));
    removing
        .await
        .unwrap()
        .expect("the ack completes the remove");

    // Nobody answers: a timeout that says what happened.
    let error = manager.add_to_group("nobody", "admins").await.unwrap_err();
    assert!(matches!(error, LifetimeError::Timeout(_)), "{error:?}");
    assert!(error.to_string().contains("nobody"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotnet_group_commands_are_applied_and_acked() {
    let (server, manager) = start().await;
    let mut client = connect(&manager, CONNECTION_ID, None, Protocol::Json).await;
    let ack_channel = format!("{HUB}:internal:ack:{DOTNET_SERVER}");
    let mut tap = Tap::new(&server, &[ack_channel.as_str()]);

    let command = |id: u8, action: u8| {
        cat(&[
            &[0x95, id, 0xd9, DOTNET_SERVER.len() as u8],
            DOTNET_SERVER.as_bytes(),
            &[action, 0xa6],
            b"admins",
            &[0xb6],
            CONNECTION_ID.as_bytes(),
        ])
    };
    publish(&server, &format!("{HUB}:internal:groups"), &command(7, 1));
    tap.expect(&ack_channel, &hex("91 07"));
    // The ack means the group subscription is live: a .NET broadcast to the group arrives.
    publish(&server, &format!("{HUB}:group:admins"), &tv1());
    expect_hello(&mut client).await;

    publish(&server, &format!("{HUB}:internal:groups"), &command(8, 2));
    tap.expect(&ack_channel, &hex("91 08"));
    assert_eq!(
        publish(&server, &format!("{HUB}:group:admins"), &tv1()),
        0,
        "the group channel is unsubscribed after its last local member left"
    );
    client.expect_nothing(Duration::from_millis(300)).await;

    // Commands for connections this node does not have get no ack.
    let mut other = command(9, 1);
    let len = other.len();
    other[len - 1] = b'X';
    publish(&server, &format!("{HUB}:internal:groups"), &other);
    publish(&server, &format!("{HUB}:internal:groups"), &command(10, 1));
    tap.expect(&ack_channel, &hex("91 0a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_results_asked_of_dotnet_connections() {
    let (server, manager) = start().await;
    let channel = format!("{HUB}:connection:{CONNECTION_ID}");
    let mut tap = Tap::new(&server, &[channel.as_str()]);
    let request = SerializedMessage::invocation_with_id(
        Some(INVOCATION_ID),
        "GetMessage",
        &(),
        &[Protocol::Json],
    )
    .unwrap();

    let call = {
        let manager = manager.clone();
        let request = request.clone();
        tokio::spawn(async move {
            manager
                .invoke_connection(CONNECTION_ID, INVOCATION_ID, &request)
                .await
        })
    };
    tap.expect(&channel, &tv6());
    publish(&server, RETURN_CHANNEL, &tv7());
    let completion = call.await.unwrap().expect("the .NET completion");
    match completion.result {
        CompletionResult::Value(value) => assert_eq!(value.decode::<i32>().unwrap(), 42),
        other => panic!("expected 42, got {other:?}"),
    }

    // A MessagePack client answered on the .NET side: parsed in that protocol.
    let call = {
        let manager = manager.clone();
        let request = request.clone();
        tokio::spawn(async move {
            manager
                .invoke_connection(CONNECTION_ID, INVOCATION_ID, &request)
                .await
        })
    };
    tap.next();
    let completion = HubMessage::Completion(Completion {
        headers: Vec::new(),
        invocation_id: INVOCATION_ID.into(),
        result: CompletionResult::Error("no handler".into()),
    });
    let frame = Protocol::MessagePack.encode_message(&completion).unwrap();
    let payload = cat(&[
        &hex("92 ab"),
        b"messagepack",
        &[0xc4, frame.len() as u8],
        &frame,
    ]);
    publish(&server, RETURN_CHANNEL, &payload);
    let completion = call.await.unwrap().expect("the .NET completion");
    assert_eq!(
        completion.result,
        CompletionResult::Error("no handler".into())
    );

    // Nobody subscribes to the connection: it does not exist anywhere.
    let error = manager
        .invoke_connection("missing", "id2", &request)
        .await
        .unwrap_err();
    assert!(
        matches!(error, LifetimeError::ConnectionNotFound(_)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_results_asked_by_a_dotnet_node_are_answered() {
    let (server, manager) = start().await;
    let mut client = connect(&manager, CONNECTION_ID, None, Protocol::Json).await;
    let mut tap = Tap::new(&server, &[RETURN_CHANNEL]);
    // TV6 as a .NET node with server name SERVER publishes it.
    let receivers = publish(
        &server,
        &format!("{HUB}:connection:{CONNECTION_ID}"),
        &tv6(),
    );
    assert_eq!(receivers, 1);
    let invocation = client.expect_invocation("GetMessage").await;
    assert_eq!(invocation.invocation_id.as_deref(), Some(INVOCATION_ID));
    client.answer(Completion {
        headers: Vec::new(),
        invocation_id: INVOCATION_ID.into(),
        result: CompletionResult::Value(RawValue::encode(Protocol::Json, &42).unwrap()),
    });
    tap.expect(RETURN_CHANNEL, &tv7());

    // The connection goes away before answering: "Connection disconnected." goes back.
    publish(
        &server,
        &format!("{HUB}:connection:{CONNECTION_ID}"),
        &tv6(),
    );
    client.expect_invocation("GetMessage").await;
    client.connection().abort();
    manager.on_disconnected(client.connection()).await;
    drop(client);
    let (channel, payload) = tap.next();
    assert_eq!(channel, RETURN_CHANNEL);
    let expected_frame =
        b"{\"type\":3,\"invocationId\":\"AAECAwQFBgcICQoLDA0ODw\",\"error\":\"Connection disconnected.\"}\x1e";
    assert_eq!(
        payload,
        cat(&[
            &hex("92 a4 6a 73 6f 6e c4"),
            &[expected_frame.len() as u8],
            expected_frame
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotnet_broadcasts_reach_local_connections() {
    let (server, manager) = start().await;
    let mut json = connect(&manager, CONNECTION_ID, Some("alice"), Protocol::Json).await;
    let mut msgpack = connect(&manager, "mp", Some("bob"), Protocol::MessagePack).await;

    publish(&server, &format!("{HUB}:all"), &tv2());
    expect_hello(&mut json).await;
    expect_hello(&mut msgpack).await;
    // JSON only (a .NET server without MessagePack): the MessagePack client still gets it.
    publish(&server, &format!("{HUB}:all"), &tv1());
    expect_hello(&mut json).await;
    expect_hello(&mut msgpack).await;
    // Excluded ids are honoured.
    publish(&server, &format!("{HUB}:all"), &tv3());
    expect_hello(&mut msgpack).await;
    publish(&server, &format!("{HUB}:user:bob"), &tv2());
    expect_hello(&mut msgpack).await;
    publish(
        &server,
        &format!("{HUB}:connection:{CONNECTION_ID}"),
        &tv1(),
    );
    expect_hello(&mut json).await;
    json.expect_nothing(Duration::from_millis(300)).await;
    msgpack.expect_nothing(Duration::ZERO).await;
    assert_eq!(manager.stats().decode_errors, 0);
    assert!(manager.stats().messages_received >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_counted_and_skipped() {
    let (server, manager) = start().await;
    let mut client = connect(&manager, "c1", None, Protocol::Json).await;
    let all = format!("{HUB}:all");
    publish(&server, &all, &[0xc1]);
    publish(&server, &all, &hex("91 90"));
    publish(
        &server,
        &all,
        &cat(&[&hex("92 90 81 aa"), b"blazorpack", &hex("c4 01 00")]),
    );
    publish(&server, &format!("{HUB}:internal:groups"), &hex("95 01"));
    publish(&server, &all, &tv1());
    expect_hello(&mut client).await;
    let stats = manager.stats();
    assert_eq!(stats.decode_errors, 4, "{stats:?}");
    assert!(stats.messages_received >= 5, "{stats:?}");
}
