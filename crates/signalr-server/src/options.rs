//! Hub settings. Defaults follow ASP.NET Core (`HubOptionsSetup`).

use std::time::Duration;

use signalr_protocol::Protocol;

/// Settings of one hub.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HubOptions {
    /// How long a client has to send its handshake. Default: 15 s.
    pub handshake_timeout: Duration,
    /// Interval of the server's keep-alive pings. Must stay well below the clients' server
    /// timeout (30 s by default). Default: 15 s.
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
}

impl Default for HubOptions {
    fn default() -> Self {
        HubOptions {
            handshake_timeout: Duration::from_secs(15),
            keep_alive_interval: Duration::from_secs(15),
            client_timeout: Duration::from_secs(30),
            max_receive_message_size: 32 * 1024,
            max_parallel_invocations: 1,
            detailed_errors: false,
            protocols: Protocol::ALL.to_vec(),
            client_result_timeout: Duration::from_secs(30),
        }
    }
}
