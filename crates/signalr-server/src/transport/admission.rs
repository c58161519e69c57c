//! How many connections one hub holds on this node, and the bounds that refuse more.
//!
//! Two counts, shared by every endpoint of the hub:
//!
//! - **pending negotiations**: connections negotiated and not used by any transport request
//!   yet. The JS client negotiates once per transport it tries, so a few are normal; a flood
//!   of negotiate requests is not, and each one holds a table entry with its pipes until the
//!   disconnect timeout reaps it. [`TransportOptions::max_pending_negotiations`] bounds them.
//! - **connections**: connections whose application runs (from the first transport request
//!   to the end of the hub connection). Together with the pending ones they are bounded by
//!   [`TransportOptions::max_connections`].
//!
//! Each counted thing holds a [`Ticket`]; dropping the ticket, whichever way the connection
//! ends (reaped, disposed, upgrade failed, application finished), gives its place back. A
//! refused request is answered `503` by the endpoint and counted in
//! `signalr_limit_refusals_total`.
//!
//! [`TransportOptions::max_pending_negotiations`]: super::TransportOptions::max_pending_negotiations
//! [`TransportOptions::max_connections`]: super::TransportOptions::max_connections

use std::sync::{Arc, Mutex};

use super::telemetry::{RefusedBy, TransportMetrics};

/// The counts of one hub, and its limits.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Most connections plus pending negotiations; 0: no limit.
    max_connections: usize,
    /// Most pending negotiations; 0: no limit.
    max_pending: usize,
    /// A std mutex: held for a comparison and an addition, never across an await. Both
    /// counts change together when a pending connection starts, so one lock guards both.
    counts: Mutex<Counts>,
    metrics: Arc<TransportMetrics>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    connections: usize,
    pending: usize,
}

/// What a [`Ticket`] holds a place for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Pending,
    Connection,
}

/// A place in the counts, given back when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    place: Place,
}

impl Admission {
    pub(crate) fn new(
        max_connections: usize,
        max_pending: usize,
        metrics: Arc<TransportMetrics>,
    ) -> Admission {
        Admission {
            max_connections,
            max_pending,
            counts: Mutex::new(Counts::default()),
            metrics,
        }
    }

    /// A place for a negotiated connection, or the limit that refuses it.
    pub(crate) fn negotiation(self: &Arc<Self>) -> Result<Ticket, (RefusedBy, usize)> {
        let mut counts = self.lock();
        if self.max_pending > 0 && counts.pending >= self.max_pending {
            drop(counts);
            self.metrics.limit_refused(RefusedBy::PendingNegotiations);
            return Err((RefusedBy::PendingNegotiations, self.max_pending));
        }
        self.check_total(&counts)?;
        counts.pending += 1;
        self.metrics.set_pending_negotiations(counts.pending);
        Ok(Ticket {
            admission: self.clone(),
            place: Place::Pending,
        })
    }

    /// A place for a connection that starts without negotiation (a WebSocket with
    /// skipNegotiation), or the limit that refuses it.
    pub(crate) fn connection(self: &Arc<Self>) -> Result<Ticket, (RefusedBy, usize)> {
        let mut counts = self.lock();
        self.check_total(&counts)?;
        counts.connections += 1;
        Ok(Ticket {
            admission: self.clone(),
            place: Place::Connection,
        })
    }

    fn check_total(&self, counts: &Counts) -> Result<(), (RefusedBy, usize)> {
        if self.max_connections > 0 && counts.connections + counts.pending >= self.max_connections {
            self.metrics.limit_refused(RefusedBy::Connections);
            return Err((RefusedBy::Connections, self.max_connections));
        }
        Ok(())
    }

    /// Connections whose application runs.
    pub(crate) fn connections(&self) -> usize {
        self.lock().connections
    }

    /// Negotiated connections no transport request has used yet.
    pub(crate) fn pending(&self) -> usize {
        self.lock().pending
    }

    fn release(&self, place: Place) {
        let mut counts = self.lock();
        match place {
            Place::Pending => {
                counts.pending -= 1;
                self.metrics.set_pending_negotiations(counts.pending);
            }
            Place::Connection => counts.connections -= 1,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Two integers updated together; a panic cannot leave them torn.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Ticket {
    /// The pending connection's application starts: it now counts as a connection. Never
    /// refused, since its place was taken at negotiate.
    pub(crate) fn started(mut self) -> Ticket {
        if self.place == Place::Pending {
            let mut counts = self.admission.lock();
            counts.pending -= 1;
            counts.connections += 1;
            self.admission
                .metrics
                .set_pending_negotiations(counts.pending);
            drop(counts);
            self.place = Place::Connection;
        }
        self
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.place);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max_connections: usize, max_pending: usize) -> Arc<Admission> {
        Arc::new(Admission::new(
            max_connections,
            max_pending,
            Arc::new(TransportMetrics::new("test")),
        ))
    }

    #[test]
    fn pending_negotiations_are_bounded_and_given_back() {
        let admission = admission(0, 2);
        let a = admission.negotiation().unwrap();
        let _b = admission.negotiation().unwrap();
        assert_eq!(
            admission.negotiation().unwrap_err(),
            (RefusedBy::PendingNegotiations, 2)
        );
        drop(a);
        let c = admission.negotiation().unwrap();
        // Starting frees the pending place.
        let _c = c.started();
        assert_eq!((admission.connections(), admission.pending()), (1, 1));
        admission.negotiation().unwrap();
    }

    #[test]
    fn connections_and_pending_share_the_connection_bound() {
        let admission = admission(2, 0);
        let pending = admission.negotiation().unwrap();
        let direct = admission.connection().unwrap();
        assert_eq!(
            admission.connection().unwrap_err(),
            (RefusedBy::Connections, 2)
        );
        assert_eq!(
            admission.negotiation().unwrap_err(),
            (RefusedBy::Connections, 2)
        );
        // A pending connection that starts keeps its place: it was counted already.
        let started = pending.started();
        drop(direct);
        assert_eq!((admission.connections(), admission.pending()), (1, 0));
        drop(started);
        assert_eq!((admission.connections(), admission.pending()), (0, 0));
    }

    #[test]
    fn zero_means_no_limit() {
        let admission = admission(0, 0);
        let tickets: Vec<_> = (0..1000)
            .map(|_| admission.negotiation().unwrap())
            .collect();
        assert_eq!(admission.pending(), 1000);
        drop(tickets);
        assert_eq!(admission.pending(), 0);
    }
}
