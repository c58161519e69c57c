//! What the hub layer of one hub counts, as `metrics` handles registered once per hub.
//!
//! The hub layer knows what the transports cannot: hub connections (after the handshake,
//! with their protocol), hub messages parsed, invocations and their outcome, handshake
//! failures, slow-consumer closes, and the per-connection limits it enforces. Counts are
//! taken per connection, per parsed chunk or per invocation, never per delivery.
//!
//! The names are listed in the crate documentation ("Metrics"); the label `hub` is the
//! hub's name ([`HubOptions::name`](crate::HubOptions::name)).

use metrics::{Counter, Gauge};
use signalr_protocol::{Protocol, TransportType};

/// Why a handshake failed (the `reason` label of `signalr_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// No complete handshake within the handshake timeout.
    Timeout,
    /// Not a handshake, or too large.
    Malformed,
    /// A protocol, version or transfer format the server does not offer.
    Unsupported,
}

/// Counters and gauges of one hub's connections.
#[derive(Debug)]
pub(crate) struct HubMetrics {
    /// By transport (WebSockets, ServerSentEvents, LongPolling) and protocol (JSON,
    /// MessagePack).
    connections: [[Gauge; 2]; 3],
    opened: Counter,
    closed: Counter,
    messages_received: Counter,
    invocations: Counter,
    invocation_errors: Counter,
    handshake_timeouts: Counter,
    handshake_malformed: Counter,
    handshake_unsupported: Counter,
    slow_consumer_closes: Counter,
    sender_paces: Counter,
    sender_yields: Counter,
    refused_groups: Counter,
    refused_client_results: Counter,
}

const TRANSPORTS: [TransportType; 3] = TransportType::ALL;
const PROTOCOLS: [Protocol; 2] = [Protocol::Json, Protocol::MessagePack];

impl HubMetrics {
    pub(crate) fn new(hub: &str) -> HubMetrics {
        let counter = |name: &'static str| metrics::counter!(name, "hub" => hub.to_owned());
        let handshake = |reason: &'static str| metrics::counter!("signalr_handshake_failures_total", "hub" => hub.to_owned(), "reason" => reason);
        let refused = |limit: &'static str| metrics::counter!("signalr_limit_refusals_total", "hub" => hub.to_owned(), "limit" => limit);
        let sender_wait = |reason: &'static str| metrics::counter!("signalr_sender_waits_total", "hub" => hub.to_owned(), "reason" => reason);
        HubMetrics {
            connections: TRANSPORTS.map(|transport| {
                PROTOCOLS.map(|protocol| {
                    metrics::gauge!(
                        "signalr_connections",
                        "hub" => hub.to_owned(),
                        "transport" => transport.name(),
                        "protocol" => protocol.name(),
                    )
                })
            }),
            opened: counter("signalr_connections_opened_total"),
            closed: counter("signalr_connections_closed_total"),
            messages_received: counter("signalr_messages_received_total"),
            invocations: counter("signalr_invocations_total"),
            invocation_errors: counter("signalr_invocation_errors_total"),
            handshake_timeouts: handshake("timeout"),
            handshake_malformed: handshake("malformed"),
            handshake_unsupported: handshake("unsupported"),
            slow_consumer_closes: counter("signalr_slow_consumer_closes_total"),
            sender_paces: sender_wait("pace"),
            sender_yields: sender_wait("far_behind"),
            refused_groups: refused("groups"),
            refused_client_results: refused("client_results"),
        }
    }

    fn gauge(&self, transport: TransportType, protocol: Protocol) -> &Gauge {
        let t = TRANSPORTS.iter().position(|&t| t == transport).unwrap_or(0);
        let p = PROTOCOLS.iter().position(|&p| p == protocol).unwrap_or(0);
        &self.connections[t][p]
    }

    /// A connection completed its handshake.
    pub(crate) fn connection_opened(&self, transport: TransportType, protocol: Protocol) {
        self.opened.increment(1);
        self.gauge(transport, protocol).increment(1.0);
    }

    /// A connection that completed its handshake ended.
    pub(crate) fn connection_closed(&self, transport: TransportType, protocol: Protocol) {
        self.closed.increment(1);
        self.gauge(transport, protocol).decrement(1.0);
    }

    pub(crate) fn handshake_failed(&self, failure: HandshakeFailure) {
        match failure {
            HandshakeFailure::Timeout => self.handshake_timeouts.increment(1),
            HandshakeFailure::Malformed => self.handshake_malformed.increment(1),
            HandshakeFailure::Unsupported => self.handshake_unsupported.increment(1),
        }
    }

    /// Hub messages parsed from one chunk of client bytes.
    pub(crate) fn messages_received(&self, count: u64) {
        if count > 0 {
            self.messages_received.increment(count);
        }
    }

    /// An invocation (or stream invocation) arrived.
    pub(crate) fn invocation(&self) {
        self.invocations.increment(1);
    }

    /// An invocation ended with an error: refused before it ran, failed, or panicked.
    pub(crate) fn invocation_error(&self) {
        self.invocation_errors.increment(1);
    }

    pub(crate) fn slow_consumer_closed(&self) {
        self.slow_consumer_closes.increment(1);
    }

    /// A connection's loop paused its input for `backlog::PACE`: its last batch's sends
    /// found their writers behind (`backlog`, "Pacing").
    pub(crate) fn sender_paced(&self) {
        self.sender_paces.increment(1);
    }

    /// A connection's loop let every ready task run before its next invocation: a send
    /// found most of its audience's writers far behind (`backlog`).
    pub(crate) fn sender_yielded(&self) {
        self.sender_yields.increment(1);
    }

    /// `Groups::add` refused by `max_groups_per_connection`.
    pub(crate) fn groups_refused(&self) {
        self.refused_groups.increment(1);
    }

    /// A client-result invocation refused by `max_pending_client_results`.
    pub(crate) fn client_result_refused(&self) {
        self.refused_client_results.increment(1);
    }
}
