//! The table of logical connections an endpoint knows by token, and the state of each.
//!
//! Negotiate creates an [`Entry`] holding the connection's pipes, as ASP.NET Core's
//! `HttpConnectionContext` does: the inbound channel (client → application) and the
//! [`Outbox`] (application → client). The pipes outlive any single HTTP request, which is
//! what the HTTP transports need: long polling serves one connection with a string of poll
//! requests and POSTs, Server-Sent Events with one stream plus POSTs. A transport request
//! *activates* the entry and borrows the pipes; the first activation also hands over the
//! application's end of the inbound channel, which starts the application.
//!
//! Status, as in ASP.NET Core:
//!
//! - **Inactive**: no transport request holds the connection (negotiated and not used yet,
//!   or a long-polling connection between two polls). An entry inactive for longer than the
//!   disconnect timeout is disposed by the endpoint's housekeeping: this reaps abandoned
//!   negotiations (the JS client re-negotiates for each transport it tries) and long-polling
//!   clients that went away.
//! - **Active**: a WebSocket, an SSE stream or a long poll is in progress.
//! - **Disposed**: gone from the table. Its inbound sender is dropped (the application sees
//!   its input end), its outbox abandoned, an outstanding poll ended.
//!
//! The transport type is fixed by the first transport request; another type later is refused.
//!
//! # Stateful reconnect
//!
//! A WebSocket that drops without a close on a connection whose application replays
//! ([`Outbox::replay_enabled`]) does not dispose of it: [`Entry::socket_ended`] leaves it
//! inactive, with its pipes and its application running, until the disconnect timeout. The
//! client's next WebSocket with the same token gets an [`Activation`] without an application
//! end and re-attaches to the same outbox, which replays what was not acknowledged. A new
//! socket also takes over from an old one the server still thinks is alive.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use super::admission::Ticket;
use super::{Outbox, TransportType};

/// A new random id: 16 random bytes, base64url without padding (22 characters), URL-safe as
/// the clients need (they put tokens in URLs without encoding them).
pub(crate) fn new_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The application's end of the inbound channel.
pub(crate) use super::inbound::InboundReceiver;
/// Where transport requests feed what the client sends.
pub(crate) use super::inbound::InboundSender;

/// Why a token could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No such token (never negotiated, expired or disposed): HTTP 404.
    NotFound,
    /// The connection already has an active request of this persistent transport: HTTP 409.
    Conflict,
    /// The connection uses another transport: HTTP 400.
    WrongTransport,
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// No transport request holds it; reaped after the disconnect timeout.
    Inactive,
    /// A transport request holds it.
    Active,
    /// Gone.
    Disposed,
}

/// What a transport request got from [`Entry::activate`].
#[derive(Debug)]
pub(crate) struct Activation {
    /// Where the request feeds client bytes.
    pub(crate) inbound: InboundSender,
    /// `Some` on the first activation: the caller starts the application with it.
    pub(crate) application: Option<InboundReceiver>,
    /// With the application: the connection's place among the hub's pending negotiations,
    /// which the application takes over (`Ticket::started`).
    pub(crate) ticket: Option<Ticket>,
}

/// One negotiated connection.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) token: String,
    pub(crate) connection_id: Arc<str>,
    /// The client negotiated stateful reconnect.
    pub(crate) stateful: bool,
    /// Outbound frames, shared by every transport request of the connection.
    pub(crate) outbox: Arc<Outbox>,
    state: Mutex<EntryState>,
    /// Held while a POST body is fed to the application, so that two bodies (each possibly
    /// part of a message) cannot interleave. The JS client never overlaps its POSTs; others
    /// might.
    pub(crate) sends: tokio::sync::Mutex<()>,
    /// Held by the long poll being served: a new poll waits for the one it replaces to have
    /// finished, so two polls never drain the outbox at once.
    pub(crate) polls: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct EntryState {
    transport: Option<TransportType>,
    status: Status,
    /// When the entry last became inactive (or was negotiated).
    last_seen: Instant,
    /// Dropped on disposal, which ends the application's input (besides the clones
    /// requests hold while they feed it).
    inbound: Option<InboundSender>,
    /// The application's end, until the first transport request starts the application.
    application: Option<InboundReceiver>,
    /// The place among the hub's pending negotiations, until the application starts;
    /// disposal gives it back.
    ticket: Option<Ticket>,
    /// The long poll in progress: its number and what ends it (with 204).
    poll: Option<(u64, CancellationToken)>,
    /// Numbers polls, so a finishing poll can tell whether a newer one replaced it.
    polls_started: u64,
    /// The WebSocket in progress: its number and what makes it let go (a stateful client's
    /// newer socket takes over from one the server has not noticed is dead).
    socket: Option<(u64, CancellationToken)>,
    /// Numbers sockets, so an ending socket can tell whether a newer one took over.
    sockets_started: u64,
}

impl Entry {
    fn new(
        token: String,
        connection_id: Arc<str>,
        max_buffered_bytes: usize,
        stateful: bool,
        ticket: Option<Ticket>,
    ) -> Entry {
        let (inbound, application) = super::inbound::for_connection();
        Entry {
            token,
            connection_id,
            stateful,
            outbox: Arc::new(Outbox::new(max_buffered_bytes)),
            state: Mutex::new(EntryState {
                transport: None,
                status: Status::Inactive,
                last_seen: Instant::now(),
                inbound: Some(inbound),
                application: Some(application),
                ticket,
                poll: None,
                polls_started: 0,
                socket: None,
                sockets_started: 0,
            }),
            sends: tokio::sync::Mutex::new(()),
            polls: tokio::sync::Mutex::new(()),
        }
    }

    /// Take the connection for a transport request: fix its transport type on first use,
    /// refuse another type, refuse a second concurrent WebSocket or SSE stream, and mark it
    /// active. A long poll replacing an outstanding one is not refused: the long-polling
    /// transport ends the old poll itself ([`Entry::begin_poll`]).
    pub(crate) fn activate(&self, transport: TransportType) -> Result<Activation, ClaimError> {
        let mut state = self.lock();
        if state.status == Status::Disposed {
            return Err(ClaimError::NotFound);
        }
        match state.transport {
            Some(fixed) if fixed != transport => return Err(ClaimError::WrongTransport),
            _ => {}
        }
        let persistent = transport != TransportType::LongPolling;
        if persistent && state.status == Status::Active {
            return Err(ClaimError::Conflict);
        }
        let inbound = state.inbound.clone().ok_or(ClaimError::NotFound)?;
        state.transport = Some(transport);
        state.status = Status::Active;
        Ok(Activation {
            inbound,
            application: state.application.take(),
            ticket: state.ticket.take(),
        })
    }

    /// Take the connection for a WebSocket. With `takeover` (a stateful connection whose
    /// application replays), an active socket is not a conflict: it is told to let go and
    /// the new one takes its place. Returns the socket's number and what tells it to let go.
    pub(crate) fn activate_socket(
        &self,
        takeover: bool,
    ) -> Result<(Activation, u64, CancellationToken), ClaimError> {
        let mut state = self.lock();
        if state.status == Status::Disposed {
            return Err(ClaimError::NotFound);
        }
        match state.transport {
            Some(fixed) if fixed != TransportType::WebSockets => {
                return Err(ClaimError::WrongTransport);
            }
            _ => {}
        }
        if state.status == Status::Active {
            if !takeover {
                return Err(ClaimError::Conflict);
            }
            if let Some((_, previous)) = state.socket.take() {
                previous.cancel();
            }
        }
        let inbound = state.inbound.clone().ok_or(ClaimError::NotFound)?;
        state.transport = Some(TransportType::WebSockets);
        state.status = Status::Active;
        state.sockets_started += 1;
        let socket = (state.sockets_started, CancellationToken::new());
        state.socket = Some(socket.clone());
        Ok((
            Activation {
                inbound,
                application: state.application.take(),
                ticket: state.ticket.take(),
            },
            socket.0,
            socket.1,
        ))
    }

    /// WebSocket number `socket` ended. Returns true when the connection lives on: a newer
    /// socket took over, or `keep` (it dropped without a close on a stateful connection) and
    /// it now waits, inactive, for the client's next socket until the disconnect timeout.
    /// False: the caller disposes of it.
    pub(crate) fn socket_ended(&self, socket: u64, keep: bool) -> bool {
        let mut state = self.lock();
        if state
            .socket
            .as_ref()
            .is_none_or(|(current, _)| *current != socket)
        {
            return state.status != Status::Disposed;
        }
        state.socket = None;
        if keep && state.status != Status::Disposed {
            state.status = Status::Inactive;
            state.last_seen = Instant::now();
            true
        } else {
            false
        }
    }

    /// The transport request let go of the connection; it stays alive, inactive, until the
    /// disconnect timeout (a long-polling connection between polls).
    pub(crate) fn deactivate(&self) {
        let mut state = self.lock();
        if state.status == Status::Active {
            state.status = Status::Inactive;
            state.last_seen = Instant::now();
        }
    }

    /// The transport type fixed by the first transport request.
    pub(crate) fn transport(&self) -> Option<TransportType> {
        self.lock().transport
    }

    /// A sender into the application's input, for a POST; `None` once disposed.
    pub(crate) fn inbound(&self) -> Option<InboundSender> {
        self.lock().inbound.clone()
    }

    /// Register a new long poll: the outstanding one (if any) is told to end with 204.
    /// Returns the new poll's number and what ends it, or `None` if the connection is
    /// disposed.
    pub(crate) fn begin_poll(&self) -> Option<(u64, CancellationToken)> {
        let mut state = self.lock();
        if state.status == Status::Disposed {
            return None;
        }
        state.polls_started += 1;
        let poll = (state.polls_started, CancellationToken::new());
        if let Some((_, previous)) = state.poll.replace(poll.clone()) {
            previous.cancel();
        }
        state.status = Status::Active;
        Some(poll)
    }

    /// Long poll number `poll` finished (answered, or abandoned by the client). Unless a
    /// newer poll took over meanwhile, the connection becomes inactive.
    pub(crate) fn end_poll(&self, poll: u64) {
        let mut state = self.lock();
        if state
            .poll
            .as_ref()
            .is_some_and(|(current, _)| *current == poll)
        {
            state.poll = None;
            if state.status == Status::Active {
                state.status = Status::Inactive;
                state.last_seen = Instant::now();
            }
        }
    }

    /// Mark disposed and release everything the connection holds.
    fn dispose(&self) {
        let mut state = self.lock();
        state.status = Status::Disposed;
        state.inbound = None;
        state.application = None;
        state.ticket = None;
        if let Some((_, poll)) = state.poll.take() {
            poll.cancel();
        }
        if let Some((_, socket)) = state.socket.take() {
            socket.cancel();
        }
        drop(state);
        // Nobody will read what is still queued; pushes from now on fail fast.
        self.outbox.abandon();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, EntryState> {
        // Every update is a few field writes under the lock; a panic cannot leave it torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Token → connection entries of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct ConnectionTable {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
}

impl ConnectionTable {
    /// Record a negotiated connection, with its pipes and its place among the hub's
    /// pending negotiations.
    pub(crate) fn insert_negotiated(
        &self,
        token: String,
        connection_id: Arc<str>,
        max_buffered_bytes: usize,
        stateful: bool,
        ticket: Option<Ticket>,
    ) -> Arc<Entry> {
        let entry = Arc::new(Entry::new(
            token.clone(),
            connection_id,
            max_buffered_bytes,
            stateful,
            ticket,
        ));
        self.lock().insert(token, entry.clone());
        entry
    }

    /// The live entry of a token.
    pub(crate) fn get(&self, token: &str) -> Option<Arc<Entry>> {
        self.lock().get(token).cloned()
    }

    /// Dispose of a connection: remove it and release its pipes.
    pub(crate) fn dispose(&self, token: &str) {
        let entry = self.lock().remove(token);
        if let Some(entry) = entry {
            entry.dispose();
        }
    }

    /// Dispose of connections inactive for longer than `timeout`. Returns how many.
    pub(crate) fn reap(&self, timeout: Duration) -> usize {
        let now = Instant::now();
        self.dispose_where(|state| {
            state.status == Status::Inactive && now.duration_since(state.last_seen) >= timeout
        })
    }

    /// Dispose of connections whose application never started (server shutdown).
    pub(crate) fn dispose_unstarted(&self) -> usize {
        self.dispose_where(|state| state.application.is_some())
    }

    /// Dispose of every connection (end of a server shutdown).
    pub(crate) fn dispose_all(&self) -> usize {
        self.dispose_where(|_| true)
    }

    /// Connections in the table.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn dispose_where(&self, mut doomed: impl FnMut(&EntryState) -> bool) -> usize {
        let mut removed = Vec::new();
        self.lock().retain(|_, entry| {
            let keep = !doomed(&entry.lock());
            if !keep {
                removed.push(entry.clone());
            }
            keep
        });
        // Released outside the table lock: disposal wakes writers and pollers.
        for entry in &removed {
            entry.dispose();
        }
        removed.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 1024;

    #[test]
    fn ids_are_22_url_safe_characters() {
        let id = new_id();
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_ne!(id, new_id());
    }

    #[test]
    fn the_first_activation_starts_the_application_and_fixes_the_transport() {
        let table = ConnectionTable::default();
        let entry = table.insert_negotiated("t".into(), "c".into(), MAX, false, None);
        let first = entry.activate(TransportType::WebSockets).unwrap();
        assert!(first.application.is_some());
        assert_eq!(
            entry.activate(TransportType::WebSockets).unwrap_err(),
            ClaimError::Conflict
        );
        assert_eq!(
            entry.activate(TransportType::LongPolling).unwrap_err(),
            ClaimError::WrongTransport
        );
        // Re-attaching after the socket let go (the stateful-reconnect path) finds the
        // application running.
        entry.deactivate();
        assert!(
            entry
                .activate(TransportType::WebSockets)
                .unwrap()
                .application
                .is_none()
        );
        assert!(table.get("nope").is_none());
    }

    #[test]
    fn long_polls_replace_each_other() {
        let table = ConnectionTable::default();
        let entry = table.insert_negotiated("t".into(), "c".into(), MAX, false, None);
        entry.activate(TransportType::LongPolling).unwrap();
        entry.deactivate();
        let (first, first_ended) = entry.begin_poll().unwrap();
        // A second poll is not a conflict: it ends the first.
        entry.activate(TransportType::LongPolling).unwrap();
        let (second, second_ended) = entry.begin_poll().unwrap();
        assert!(first_ended.is_cancelled());
        assert!(!second_ended.is_cancelled());
        // The replaced poll finishing does not make the connection inactive ...
        entry.end_poll(first);
        assert_eq!(table.reap(Duration::ZERO), 0);
        // ... the current one does.
        entry.end_poll(second);
        assert_eq!(table.reap(Duration::ZERO), 1);
        assert!(table.get("t").is_none());
    }

    #[test]
    fn disposal_ends_the_application_input_and_the_outstanding_poll() {
        let table = ConnectionTable::default();
        let entry = table.insert_negotiated("t".into(), "c".into(), MAX, false, None);
        let Activation {
            inbound,
            application,
            ..
        } = entry.activate(TransportType::LongPolling).unwrap();
        let mut application = application.unwrap();
        drop(inbound);
        let (_, ended) = entry.begin_poll().unwrap();
        table.dispose("t");
        assert!(ended.is_cancelled());
        assert!(entry.inbound().is_none());
        assert!(application.try_recv().is_err());
        assert!(entry.outbox.is_closed());
        assert_eq!(
            entry.activate(TransportType::LongPolling).unwrap_err(),
            ClaimError::NotFound
        );
    }

    #[test]
    fn inactive_connections_are_reaped_active_ones_are_not() {
        let table = ConnectionTable::default();
        table.insert_negotiated("unused".into(), "a".into(), MAX, false, None);
        let active = table.insert_negotiated("active".into(), "b".into(), MAX, false, None);
        let _activation = active.activate(TransportType::ServerSentEvents).unwrap();
        assert_eq!(table.reap(Duration::from_secs(60)), 0);
        assert_eq!(table.reap(Duration::ZERO), 1);
        assert_eq!(table.len(), 1);
        assert!(table.get("active").is_some());
    }
}
