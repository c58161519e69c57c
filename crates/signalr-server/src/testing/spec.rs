//! The lifetime-manager specification suite.
//!
//! Two families of cases, ported from ASP.NET Core's `Specification.Tests`:
//!
//! - **single node** (`single_*`): what any manager must do for connections on one node
//!   (every audience, groups, users, disconnects, failing connections, client results);
//! - **scale-out** (`scaleout_*`): the same across several managers that share a backplane
//!   (a connection on node B reached from node A, group changes from the "wrong" node, no
//!   duplicates).
//!
//! A [`ManagerFactory`] builds the managers for one case. Deliveries through a backplane are
//! asynchronous, so every wait is bounded; "receives nothing" is checked by waiting a short,
//! fixed time after a later message was already seen by someone else.

use std::any::Any;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use signalr_protocol::{Completion, CompletionResult, Protocol, RawValue};

use super::TestClient;
use crate::lifetime::{Audience, HubLifetimeManager, LifetimeError, SerializedMessage};

/// How long a "receives nothing" check waits.
const QUIET: Duration = Duration::from_millis(300);

/// The managers of one test case: one per node, sharing whatever backplane the factory set
/// up. `guard` keeps backplane resources (a Redis server, ...) alive for the case.
pub struct Nodes {
    /// One manager per node.
    pub managers: Vec<Arc<dyn HubLifetimeManager>>,
    /// Dropped at the end of the case.
    pub guard: Option<Box<dyn Any + Send + Sync>>,
}

impl Nodes {
    /// Nodes without a guard.
    pub fn new(managers: Vec<Arc<dyn HubLifetimeManager>>) -> Nodes {
        Nodes {
            managers,
            guard: None,
        }
    }
}

/// Builds `nodes` managers sharing one backplane.
pub trait ManagerFactory: Send + Sync {
    /// Build the managers for one case.
    fn create(&self, nodes: usize) -> BoxFuture<'_, Nodes>;
}

impl<F, Fut> ManagerFactory for F
where
    F: Fn(usize) -> Fut + Send + Sync,
    Fut: Future<Output = Nodes> + Send + 'static,
{
    fn create(&self, nodes: usize) -> BoxFuture<'_, Nodes> {
        Box::pin((self)(nodes))
    }
}

fn message(text: &str) -> SerializedMessage {
    SerializedMessage::invocation("message", &(text,), &Protocol::ALL).expect("encodes")
}

async fn connect(
    manager: &Arc<dyn HubLifetimeManager>,
    id: &str,
    user: Option<&str>,
    protocol: Protocol,
) -> TestClient {
    let client = TestClient::new(id, user, protocol);
    manager
        .on_connected(client.connection())
        .await
        .expect("on_connected");
    client
}

async fn expect_message(client: &mut TestClient, text: &str) {
    let invocation = client.expect_invocation("message").await;
    assert_eq!(
        invocation.invocation_id, None,
        "broadcasts carry no invocation id"
    );
    let arguments = invocation.arguments.into_values().expect("arguments");
    let got: String = arguments
        .first()
        .expect("one argument")
        .decode()
        .expect("a string");
    assert_eq!(
        got,
        text,
        "connection {} got the wrong message",
        client.id()
    );
}

// ---------------------------------------------------------------------------------------
// Single node
// ---------------------------------------------------------------------------------------

/// `All` reaches every connection, in both protocols, exactly once.
pub async fn single_send_all(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::MessagePack).await;
    m.send(&Audience::All, &message("hi")).await.unwrap();
    expect_message(&mut a, "hi").await;
    expect_message(&mut b, "hi").await;
    a.expect_nothing(QUIET).await;
    b.expect_nothing(Duration::ZERO).await;
}

/// `AllExcept` skips the excluded connections.
pub async fn single_send_all_except(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::Json).await;
    let mut c = connect(m, "c", None, Protocol::Json).await;
    m.send(
        &Audience::AllExcept(vec!["b".into(), "c".into()]),
        &message("x"),
    )
    .await
    .unwrap();
    expect_message(&mut a, "x").await;
    b.expect_nothing(QUIET).await;
    c.expect_nothing(Duration::ZERO).await;
}

/// `Connection` and `Connections` reach only the named connections.
pub async fn single_send_connections(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::Json).await;
    let mut c = connect(m, "c", None, Protocol::MessagePack).await;
    m.send(&Audience::Connection("a".into()), &message("one"))
        .await
        .unwrap();
    m.send(
        &Audience::Connections(vec!["b".into(), "c".into(), "missing".into()]),
        &message("two"),
    )
    .await
    .unwrap();
    expect_message(&mut a, "one").await;
    expect_message(&mut b, "two").await;
    expect_message(&mut c, "two").await;
    a.expect_nothing(QUIET).await;
}

/// Groups: only members receive; adding twice delivers once; removal stops delivery;
/// `GroupExcept` and `Groups`.
pub async fn single_groups(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::MessagePack).await;
    let mut c = connect(m, "c", None, Protocol::Json).await;
    m.add_to_group("a", "room").await.unwrap();
    m.add_to_group("a", "room").await.unwrap();
    m.add_to_group("b", "room").await.unwrap();
    m.add_to_group("c", "other").await.unwrap();

    m.send(&Audience::Group("room".into()), &message("g1"))
        .await
        .unwrap();
    expect_message(&mut a, "g1").await;
    expect_message(&mut b, "g1").await;

    m.send(
        &Audience::GroupExcept("room".into(), vec!["a".into()]),
        &message("g2"),
    )
    .await
    .unwrap();
    expect_message(&mut b, "g2").await;

    m.send(
        &Audience::Groups(vec!["other".into(), "nobody".into()]),
        &message("g3"),
    )
    .await
    .unwrap();
    expect_message(&mut c, "g3").await;

    m.remove_from_group("b", "room").await.unwrap();
    m.remove_from_group("b", "room").await.unwrap();
    m.send(&Audience::Group("room".into()), &message("g4"))
        .await
        .unwrap();
    expect_message(&mut a, "g4").await;
    a.expect_nothing(QUIET).await;
    b.expect_nothing(Duration::ZERO).await;
    c.expect_nothing(Duration::ZERO).await;
}

/// A large group (more members than a manager may handle in one batch) gets each message
/// once per member, with the excluded members skipped wherever they fall.
pub async fn single_large_group(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut members = Vec::new();
    for i in 0..50 {
        let id = format!("m{i}");
        members.push(connect(m, &id, None, Protocol::ALL[i % 2]).await);
        m.add_to_group(&id, "crowd").await.unwrap();
    }
    let except: Vec<String> = [0, 15, 16, 31, 49]
        .iter()
        .map(|i| format!("m{i}"))
        .collect();
    m.send(&Audience::Group("crowd".into()), &message("all"))
        .await
        .unwrap();
    m.send(
        &Audience::GroupExcept("crowd".into(), except.clone()),
        &message("most"),
    )
    .await
    .unwrap();
    for member in &mut members {
        expect_message(member, "all").await;
        if !except.iter().any(|e| e == member.id()) {
            expect_message(member, "most").await;
        }
    }
    for member in &mut members {
        member.expect_nothing(Duration::ZERO).await;
    }
    members[0].expect_nothing(QUIET).await;
}

/// Group names are case-sensitive.
pub async fn single_group_names_are_case_sensitive(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::Json).await;
    m.add_to_group("a", "Admins").await.unwrap();
    m.add_to_group("b", "admins").await.unwrap();
    m.send(&Audience::Group("admins".into()), &message("lower"))
        .await
        .unwrap();
    expect_message(&mut b, "lower").await;
    a.expect_nothing(QUIET).await;
}

/// `User` reaches every connection of the user; `Users` several users.
pub async fn single_users(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a1 = connect(m, "a1", Some("alice"), Protocol::Json).await;
    let mut a2 = connect(m, "a2", Some("alice"), Protocol::MessagePack).await;
    let mut b = connect(m, "b", Some("bob"), Protocol::Json).await;
    let mut c = connect(m, "c", Some("carol"), Protocol::Json).await;
    m.send(&Audience::User("alice".into()), &message("for alice"))
        .await
        .unwrap();
    expect_message(&mut a1, "for alice").await;
    expect_message(&mut a2, "for alice").await;
    m.send(
        &Audience::Users(vec!["bob".into(), "carol".into()]),
        &message("for both"),
    )
    .await
    .unwrap();
    expect_message(&mut b, "for both").await;
    expect_message(&mut c, "for both").await;
    a1.expect_nothing(QUIET).await;
    a2.expect_nothing(Duration::ZERO).await;
}

/// A disconnected connection is forgotten: it receives nothing, and leaves its groups and
/// its user.
pub async fn single_disconnect_forgets_the_connection(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", Some("alice"), Protocol::Json).await;
    let mut b = connect(m, "b", Some("alice"), Protocol::Json).await;
    m.add_to_group("a", "room").await.unwrap();
    m.add_to_group("b", "room").await.unwrap();
    m.on_disconnected(a.connection()).await;
    m.send(&Audience::All, &message("all")).await.unwrap();
    m.send(&Audience::Group("room".into()), &message("room"))
        .await
        .unwrap();
    m.send(&Audience::User("alice".into()), &message("user"))
        .await
        .unwrap();
    m.send(&Audience::Connection("a".into()), &message("direct"))
        .await
        .unwrap();
    expect_message(&mut b, "all").await;
    expect_message(&mut b, "room").await;
    expect_message(&mut b, "user").await;
    a.expect_nothing(QUIET).await;
}

/// A connection that cannot be written to does not stop delivery to the others.
pub async fn single_failing_connection_does_not_block_others(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let a = connect(m, "a", None, Protocol::Json).await;
    let mut b = connect(m, "b", None, Protocol::Json).await;
    m.add_to_group("a", "room").await.unwrap();
    m.add_to_group("b", "room").await.unwrap();
    a.close_transport();
    m.send(&Audience::All, &message("still")).await.unwrap();
    m.send(&Audience::Group("room".into()), &message("here"))
        .await
        .unwrap();
    expect_message(&mut b, "still").await;
    expect_message(&mut b, "here").await;
}

/// A slow consumer is closed without affecting a broadcast to the others.
pub async fn single_slow_consumer_is_closed(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let slow = TestClient::with_buffer("slow", None, Protocol::Json, 256);
    m.on_connected(slow.connection()).await.unwrap();
    let mut fast = connect(m, "fast", None, Protocol::Json).await;
    for i in 0..20 {
        m.send(&Audience::All, &message(&format!("m{i}")))
            .await
            .unwrap();
        // The fast client reads as it goes; the slow one never does.
        expect_message(&mut fast, &format!("m{i}")).await;
    }
    assert!(
        slow.connection().is_closed(),
        "the slow consumer was not closed"
    );
}

/// Client results: the invocation carries an id and the Completion comes back to the caller.
pub async fn single_client_result(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let mut a = connect(m, "a", None, Protocol::MessagePack).await;
    let request =
        SerializedMessage::invocation_with_id(Some("r1"), "getAnswer", &(), &Protocol::ALL)
            .unwrap();
    let manager = m.clone();
    let call = tokio::spawn(async move { manager.invoke_connection("a", "r1", &request).await });
    let invocation = a.expect_invocation("getAnswer").await;
    assert_eq!(invocation.invocation_id.as_deref(), Some("r1"));
    let value = RawValue::encode(Protocol::MessagePack, &42).unwrap();
    a.answer(Completion {
        headers: Vec::new(),
        invocation_id: "r1".into(),
        result: CompletionResult::Value(value),
    });
    let completion = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the result arrives")
        .unwrap()
        .expect("a completion");
    match completion.result {
        CompletionResult::Value(value) => assert_eq!(value.decode::<i32>().unwrap(), 42),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// A client-result call fails when the connection is unknown or disconnects first.
pub async fn single_client_result_fails_on_disconnect(factory: &impl ManagerFactory) {
    let nodes = factory.create(1).await;
    let m = &nodes.managers[0];
    let a = connect(m, "a", None, Protocol::Json).await;
    let request =
        SerializedMessage::invocation_with_id(Some("r2"), "ask", &(), &Protocol::ALL).unwrap();
    let manager = m.clone();
    let req = request.clone();
    let call = tokio::spawn(async move { manager.invoke_connection("a", "r2", &req).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.connection().fail_pending_invocations();
    m.on_disconnected(a.connection()).await;
    let result = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the call ends")
        .unwrap();
    assert!(result.is_err(), "expected an error, got {result:?}");

    let missing = tokio::time::timeout(
        Duration::from_secs(10),
        m.invoke_connection("nobody", "r3", &request),
    )
    .await
    .expect("an unknown connection fails without hanging");
    assert!(missing.is_err());

    // Ending but not yet unregistered (its transport just closed): disconnected, as when it
    // ends while the call waits, not a failure to send.
    let b = connect(m, "b", None, Protocol::Json).await;
    b.connection().abort();
    let closing = tokio::time::timeout(
        Duration::from_secs(10),
        m.invoke_connection("b", "r4", &request),
    )
    .await
    .expect("a closing connection fails without hanging");
    assert!(
        matches!(closing, Err(LifetimeError::ConnectionClosed(_))),
        "{closing:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Scale-out
// ---------------------------------------------------------------------------------------

/// `All` from one node reaches connections on every node, once.
pub async fn scaleout_send_all(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut a = connect(m1, "a", None, Protocol::Json).await;
    let mut b = connect(m2, "b", None, Protocol::MessagePack).await;
    m1.send(&Audience::All, &message("everyone")).await.unwrap();
    expect_message(&mut a, "everyone").await;
    expect_message(&mut b, "everyone").await;
    m2.send(&Audience::AllExcept(vec!["a".into()]), &message("not a"))
        .await
        .unwrap();
    expect_message(&mut b, "not a").await;
    a.expect_nothing(QUIET).await;
    b.expect_nothing(Duration::ZERO).await;
}

/// A connection on another node is reached by id.
pub async fn scaleout_send_connection(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut a = connect(m1, "a", None, Protocol::Json).await;
    let mut b = connect(m2, "b", None, Protocol::Json).await;
    m1.send(&Audience::Connection("b".into()), &message("to b"))
        .await
        .unwrap();
    // After a flush, what node 1 sent comes before anything sent later from any node.
    m1.flush().await;
    m2.send(
        &Audience::Connections(vec!["a".into(), "b".into()]),
        &message("to both"),
    )
    .await
    .unwrap();
    expect_message(&mut b, "to b").await;
    expect_message(&mut b, "to both").await;
    expect_message(&mut a, "to both").await;
    a.expect_nothing(QUIET).await;
}

/// Group membership changed from the node that does not hold the connection.
pub async fn scaleout_groups_from_another_node(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut a = connect(m1, "a", None, Protocol::Json).await;
    let mut b = connect(m2, "b", None, Protocol::Json).await;
    // b lives on node 2; node 1 adds it.
    m1.add_to_group("b", "room").await.unwrap();
    m1.add_to_group("a", "room").await.unwrap();
    m1.send(&Audience::Group("room".into()), &message("r1"))
        .await
        .unwrap();
    expect_message(&mut a, "r1").await;
    expect_message(&mut b, "r1").await;
    m2.send(
        &Audience::GroupExcept("room".into(), vec!["a".into()]),
        &message("r2"),
    )
    .await
    .unwrap();
    expect_message(&mut b, "r2").await;

    m1.remove_from_group("b", "room").await.unwrap();
    m2.send(&Audience::Group("room".into()), &message("r3"))
        .await
        .unwrap();
    expect_message(&mut a, "r3").await;
    b.expect_nothing(QUIET).await;
    a.expect_nothing(Duration::ZERO).await;
}

/// A group with members on two nodes gets each message once per member, and `Groups`
/// reaches members on every node.
pub async fn scaleout_group_members_on_every_node(factory: &impl ManagerFactory) {
    let nodes = factory.create(3).await;
    let mut clients = Vec::new();
    for (i, m) in nodes.managers.iter().enumerate() {
        let client = connect(m, &format!("c{i}"), None, Protocol::Json).await;
        m.add_to_group(client.id(), "everywhere").await.unwrap();
        clients.push(client);
    }
    nodes.managers[1]
        .send(&Audience::Group("everywhere".into()), &message("hello"))
        .await
        .unwrap();
    // After a flush, what node 1 sent comes before anything sent later from any node.
    nodes.managers[1].flush().await;
    nodes.managers[2]
        .send(
            &Audience::Groups(vec!["everywhere".into()]),
            &message("again"),
        )
        .await
        .unwrap();
    for client in &mut clients {
        expect_message(client, "hello").await;
        expect_message(client, "again").await;
    }
    for client in &mut clients {
        client.expect_nothing(QUIET).await;
    }
}

/// A user with connections on two nodes receives on both.
pub async fn scaleout_users(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut a1 = connect(m1, "a1", Some("alice"), Protocol::Json).await;
    let mut a2 = connect(m2, "a2", Some("alice"), Protocol::MessagePack).await;
    let mut b = connect(m2, "b", Some("bob"), Protocol::Json).await;
    m1.send(&Audience::User("alice".into()), &message("hi alice"))
        .await
        .unwrap();
    expect_message(&mut a1, "hi alice").await;
    expect_message(&mut a2, "hi alice").await;
    m1.send(&Audience::Users(vec!["bob".into()]), &message("hi bob"))
        .await
        .unwrap();
    expect_message(&mut b, "hi bob").await;
    a1.expect_nothing(QUIET).await;
    a2.expect_nothing(Duration::ZERO).await;
}

/// A connection that disconnected from its node is no longer reached from other nodes.
pub async fn scaleout_disconnect(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut a = connect(m1, "a", Some("alice"), Protocol::Json).await;
    let mut b = connect(m2, "b", Some("alice"), Protocol::Json).await;
    m1.add_to_group("b", "room").await.unwrap();
    m2.on_disconnected(b.connection()).await;
    m1.send(&Audience::Connection("b".into()), &message("gone"))
        .await
        .unwrap();
    m1.send(&Audience::Group("room".into()), &message("gone"))
        .await
        .unwrap();
    m1.send(&Audience::User("alice".into()), &message("alice"))
        .await
        .unwrap();
    expect_message(&mut a, "alice").await;
    b.expect_nothing(QUIET).await;
}

/// A client result asked on one node of a connection on another comes back.
pub async fn scaleout_client_result(factory: &impl ManagerFactory) {
    let nodes = factory.create(2).await;
    let (m1, m2) = (&nodes.managers[0], &nodes.managers[1]);
    let mut b = connect(m2, "b", None, Protocol::Json).await;
    let request =
        SerializedMessage::invocation_with_id(Some("x1"), "compute", &(20, 22), &Protocol::ALL)
            .unwrap();
    let manager = m1.clone();
    let call = tokio::spawn(async move { manager.invoke_connection("b", "x1", &request).await });
    let invocation = b.expect_invocation("compute").await;
    let id = invocation
        .invocation_id
        .expect("a client-result invocation has an id");
    b.answer(Completion {
        headers: Vec::new(),
        invocation_id: id,
        result: CompletionResult::Value(RawValue::encode(Protocol::Json, &42).unwrap()),
    });
    let completion = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("the result crosses back")
        .unwrap()
        .expect("a completion");
    match completion.result {
        CompletionResult::Value(value) => assert_eq!(value.decode::<i64>().unwrap(), 42),
        other => panic!("expected a value, got {other:?}"),
    }
}

/// Expand the single-node suite into `#[tokio::test]`s. `$factory` is an expression of a
/// type implementing [`ManagerFactory`] (for example `|_| async { Nodes::new(vec![...]) }`).
#[macro_export]
macro_rules! lifetime_manager_spec {
    ($factory:expr) => {
        $crate::__spec_cases!($factory;
            single_send_all,
            single_send_all_except,
            single_send_connections,
            single_groups,
            single_large_group,
            single_group_names_are_case_sensitive,
            single_users,
            single_disconnect_forgets_the_connection,
            single_failing_connection_does_not_block_others,
            single_slow_consumer_is_closed,
            single_client_result,
            single_client_result_fails_on_disconnect,
        );
    };
}

/// Expand the scale-out suite into `#[tokio::test]`s.
#[macro_export]
macro_rules! scaleout_spec {
    ($factory:expr) => {
        $crate::__spec_cases!($factory;
            scaleout_send_all,
            scaleout_send_connection,
            scaleout_groups_from_another_node,
            scaleout_group_members_on_every_node,
            scaleout_users,
            scaleout_disconnect,
            scaleout_client_result,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __spec_cases {
    ($factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let factory = $factory;
                $crate::testing::spec::$case(&factory).await;
            }
        )*
    };
}
