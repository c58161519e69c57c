//! What the transports of one hub count, as `metrics` handles registered once per hub.
//!
//! The transports see bytes and requests, so they count bytes in and out, messages out
//! (frames per write), and the requests they refuse at the HTTP edge (authentication,
//! admission limits). Every count is taken per socket read, per write or per request,
//! never per message delivered: a broadcast to many connections costs one increment per
//! write its writer makes, and a write carries whatever piled up meanwhile.
//!
//! The names are listed in the crate documentation ("Metrics"); the label `hub` is the
//! hub's name ([`HubOptions::name`](crate::HubOptions::name)).

use metrics::{Counter, Gauge};

use super::TransportType;

/// Which limit refused something (the `limit` label of `signalr_limit_refusals_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusedBy {
    /// `TransportOptions::max_connections`.
    Connections,
    /// `TransportOptions::max_pending_negotiations`.
    PendingNegotiations,
    /// `TransportOptions::max_request_body_bytes`.
    RequestBody,
}

/// Counters and gauges of one hub's transports.
#[derive(Debug)]
pub(crate) struct TransportMetrics {
    /// By transport: WebSockets, ServerSentEvents, LongPolling.
    bytes_received: [Counter; 3],
    bytes_sent: [Counter; 3],
    messages_sent: Counter,
    pending_negotiations: Gauge,
    unauthenticated: Counter,
    forbidden: Counter,
    refused_connections: Counter,
    refused_pending: Counter,
    refused_body: Counter,
}

fn index(transport: TransportType) -> usize {
    match transport {
        TransportType::WebSockets => 0,
        TransportType::ServerSentEvents => 1,
        TransportType::LongPolling => 2,
    }
}

/// The `transport` label values, in [`index`] order.
pub(crate) const TRANSPORT_LABELS: [&str; 3] = ["WebSockets", "ServerSentEvents", "LongPolling"];

impl TransportMetrics {
    pub(crate) fn new(hub: &str) -> TransportMetrics {
        let by_transport = |name: &'static str| {
            TRANSPORT_LABELS.map(|transport| {
                metrics::counter!(name, "hub" => hub.to_owned(), "transport" => transport)
            })
        };
        let refused = |limit: &'static str| metrics::counter!("signalr_limit_refusals_total", "hub" => hub.to_owned(), "limit" => limit);
        let auth = |status: &'static str| metrics::counter!("signalr_auth_refusals_total", "hub" => hub.to_owned(), "status" => status);
        TransportMetrics {
            bytes_received: by_transport("signalr_bytes_received_total"),
            bytes_sent: by_transport("signalr_bytes_sent_total"),
            messages_sent: metrics::counter!("signalr_messages_sent_total", "hub" => hub.to_owned()),
            pending_negotiations: metrics::gauge!("signalr_pending_negotiations", "hub" => hub.to_owned()),
            unauthenticated: auth("401"),
            forbidden: auth("403"),
            refused_connections: refused("connections"),
            refused_pending: refused("pending_negotiations"),
            refused_body: refused("request_body"),
        }
    }

    /// One read from a client: a WebSocket message or a chunk of a POST body.
    pub(crate) fn received(&self, transport: TransportType, bytes: usize) {
        self.bytes_received[index(transport)].increment(bytes as u64);
    }

    /// One write to a client carrying `frames` hub messages in `bytes`.
    pub(crate) fn sent(&self, transport: TransportType, bytes: usize, frames: usize) {
        self.bytes_sent[index(transport)].increment(bytes as u64);
        self.messages_sent.increment(frames as u64);
    }

    /// A request refused with `401` (`forbidden`: `403`).
    pub(crate) fn auth_refused(&self, forbidden: bool) {
        if forbidden {
            self.forbidden.increment(1);
        } else {
            self.unauthenticated.increment(1);
        }
    }

    /// A request refused by a limit.
    pub(crate) fn limit_refused(&self, limit: RefusedBy) {
        match limit {
            RefusedBy::Connections => self.refused_connections.increment(1),
            RefusedBy::PendingNegotiations => self.refused_pending.increment(1),
            RefusedBy::RequestBody => self.refused_body.increment(1),
        }
    }

    pub(crate) fn set_pending_negotiations(&self, pending: usize) {
        self.pending_negotiations.set(pending as f64);
    }
}
