//! The lifetime-manager specification suite, run against the in-memory manager.

use std::sync::Arc;

use signalr_server::MemoryLifetimeManager;
use signalr_server::testing::spec::Nodes;

signalr_server::lifetime_manager_spec!(|_nodes: usize| async {
    Nodes::new(vec![Arc::new(MemoryLifetimeManager::new())])
});

/// Messages are encoded only in the protocols the node's connections speak; a connection of
/// a protocol left out still gets them.
#[tokio::test]
async fn only_protocols_in_use_are_encoded() {
    use signalr_server::protocol::{HubMessage, Protocol};
    use signalr_server::testing::TestClient;
    use signalr_server::{Audience, HubLifetimeManager, SerializedMessage};

    let manager = MemoryLifetimeManager::new();
    let both = Protocol::ALL.as_slice();
    assert_eq!(manager.protocols_in_use(both), both);
    let json = TestClient::new("j", None, Protocol::Json);
    manager.on_connected(json.connection()).await.unwrap();
    assert_eq!(manager.protocols_in_use(both), [Protocol::Json]);
    let mut packed = TestClient::new("m", None, Protocol::MessagePack);
    manager.on_connected(packed.connection()).await.unwrap();
    assert_eq!(manager.protocols_in_use(both), both);
    manager.on_disconnected(json.connection()).await;
    assert_eq!(manager.protocols_in_use(both), [Protocol::MessagePack]);

    // Encoded for JSON only (as if the MessagePack client had arrived just after the check).
    let message = SerializedMessage::invocation("m", &("hi",), &[Protocol::Json]).unwrap();
    manager.send(&Audience::All, &message).await.unwrap();
    let Some(HubMessage::Invocation(invocation)) =
        packed.recv(std::time::Duration::from_secs(5)).await
    else {
        panic!("the MessagePack client got no invocation");
    };
    let arguments = invocation.arguments.into_values().unwrap();
    assert_eq!(arguments[0].decode::<String>().unwrap(), "hi");
}
