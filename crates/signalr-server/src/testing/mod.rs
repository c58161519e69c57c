//! Test support (feature `test-util`): connections without a network, and the
//! specification suite every [`HubLifetimeManager`] must pass.
//!
//! [`TestClient`] is a registered-looking [`HubConnection`] whose outbound frames are read back
//! and parsed, so a lifetime manager can be exercised exactly as the hub layer uses it, with
//! no sockets. The [`spec`] module holds the suite; the [`lifetime_manager_spec!`] and
//! [`scaleout_spec!`] macros expand it into `#[tokio::test]`s in the caller's crate.
//!
//! [`HubLifetimeManager`]: crate::HubLifetimeManager
//! [`lifetime_manager_spec!`]: crate::lifetime_manager_spec
//! [`scaleout_spec!`]: crate::scaleout_spec

pub mod spec;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use signalr_protocol::{Completion, HubMessage, Invocation, Protocol};

use crate::connection::HubConnection;
use crate::transport::{Batch, Outbox, TransportType};

/// A connection with no transport: what is sent to it is parsed back into hub messages.
#[derive(Debug)]
pub struct TestClient {
    connection: Arc<HubConnection>,
    /// Bytes drained from the outbox, not yet parsed.
    buf: BytesMut,
}

impl TestClient {
    /// A connection with this id, optional user, speaking `protocol`.
    pub fn new(id: &str, user_id: Option<&str>, protocol: Protocol) -> TestClient {
        Self::with_buffer(id, user_id, protocol, 1024 * 1024)
    }

    /// Like [`TestClient::new`], with a bound on queued bytes (to provoke slow-consumer
    /// closes).
    pub fn with_buffer(
        id: &str,
        user_id: Option<&str>,
        protocol: Protocol,
        max_buffered_bytes: usize,
    ) -> TestClient {
        let outbox = Arc::new(Outbox::new(max_buffered_bytes));
        outbox.set_binary(protocol == Protocol::MessagePack);
        let request = http::Request::new(()).into_parts().0;
        let connection = Arc::new(HubConnection::new(
            id.into(),
            user_id.map(Into::into),
            protocol,
            TransportType::WebSockets,
            outbox,
            Arc::new(request),
        ));
        TestClient {
            connection,
            buf: BytesMut::new(),
        }
    }

    /// The connection handle to register with a lifetime manager.
    pub fn connection(&self) -> &Arc<HubConnection> {
        &self.connection
    }

    /// The connection id.
    pub fn id(&self) -> &str {
        self.connection.id()
    }

    /// The next message sent to this connection, waiting up to `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<HubMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let protocol = self.connection.protocol();
            match protocol.parse_message(&mut self.buf, usize::MAX) {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(error) => panic!("server sent an unparsable frame: {error}"),
            }
            let outbox = self.connection.outbox().clone();
            let next =
                tokio::time::timeout_at(deadline, outbox.next_batch(&mut self.buf, usize::MAX));
            match next.await {
                Ok(Batch::Frames) => {}
                Ok(Batch::Closed) | Err(_) => return None,
            }
        }
    }

    /// The next message, which must be an invocation of `target` (waits up to 5 s).
    pub async fn expect_invocation(&mut self, target: &str) -> Invocation {
        match self.recv(Duration::from_secs(5)).await {
            Some(HubMessage::Invocation(invocation)) if invocation.target == target => invocation,
            other => panic!(
                "connection {} expected an invocation of '{target}', got {other:?}",
                self.id()
            ),
        }
    }

    /// Assert nothing arrives within `wait`.
    pub async fn expect_nothing(&mut self, wait: Duration) {
        if let Some(message) = self.recv(wait).await {
            panic!("connection {} expected nothing, got {message:?}", self.id());
        }
    }

    /// Answer a client-result invocation, as the client's Completion would.
    pub fn answer(&self, completion: Completion) -> bool {
        self.connection.complete_invocation(completion)
    }

    /// Drop everything queued for this connection without parsing it, returning the number of
    /// bytes dropped (for benchmarks that keep queues from filling up).
    pub fn discard_queued(&mut self) -> usize {
        self.buf.clear();
        let outbox = self.connection.outbox().clone();
        let mut dropped = 0;
        while let Some(Batch::Frames) = outbox.try_next_batch(&mut self.buf, usize::MAX) {
            dropped += self.buf.len();
            self.buf.clear();
        }
        dropped
    }

    /// Close the connection's outbox, as when its transport is gone: sends to it fail.
    pub fn close_transport(&self) {
        self.connection.outbox().abandon();
    }
}
