//! The lifetime-manager specification suite, run against the in-memory manager.

use std::sync::Arc;

use signalr_server::MemoryLifetimeManager;
use signalr_server::testing::spec::Nodes;

signalr_server::lifetime_manager_spec!(|_nodes: usize| async {
    Nodes::new(vec![Arc::new(MemoryLifetimeManager::new())])
});
