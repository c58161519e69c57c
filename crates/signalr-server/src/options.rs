//! Hub settings. Defaults follow ASP.NET Core (`HubOptionsSetup`).

use std::time::Duration;

use signalr_protocol::Protocol;

/// Settings of one hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// The hub's name in metrics (the `hub` label) and in the health report. Give each hub
    /// of a server its own. Default: `"hub"`.
    pub name: String,
    /// How long a client has to send its handshake. Default: 15 s.
    pub handshake_timeout: Duration,
    /// A connection sent nothing for this long is sent a keep-alive Ping (a connection that
    /// keeps receiving messages needs none). Pings go out on a grid shared by all connections
    /// (steps of an eighth of this, at most 1 s), so a ping can be up to one step late. Must
    /// stay well below the clients' server timeout (30 s by default). Default: 15 s.
    pub keep_alive_interval: Duration,
    /// A client that pinged once and then sends nothing for this long is disconnected.
    /// Default: 30 s.
    pub client_timeout: Duration,
    /// Largest hub message accepted from a client; a larger one closes the connection with
    /// an error. Default: 32 KiB.
    pub max_receive_message_size: usize,
    /// Invocations of one connection running at the same time. Further invocations wait in
    /// order. Default: 1 (strictly in order).
    pub max_parallel_invocations: usize,
    /// Send internal error messages to clients. Default: false.
    pub detailed_errors: bool,
    /// Hub protocols clients may choose, and the forms a broadcast is serialized in.
    /// Default: JSON and MessagePack.
    pub protocols: Vec<Protocol>,
    /// How long a client result may take before the call fails. Default: 30 s.
    pub client_result_timeout: Duration,
    /// Most groups one connection may be in. Adding it to one more fails with an error
    /// (the caller's Completion error, when called from a hub method) and leaves its
    /// membership unchanged. 0: no limit. Default: 1,000.
    pub max_groups_per_connection: usize,
    /// Most client-result invocations waiting for one connection's answers at once. One
    /// more fails at once with an error instead of waiting. 0: no limit. Default: 100.
    pub max_pending_client_results: usize,
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            name: "hub".to_owned(),
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_receive_message_size: 32 * 1024,
            max_parallel_invocations: 1,
            detailed_errors: false,
            protocols: Protocol::ALL.to_vec(),
            client_result_timeout: Duration::from_secs(30),
            max_groups_per_connection: 1000,
            max_pending_client_results: 100,
        }
    }
}
