//! The in-memory lifetime manager: every connection is on this node.
//!
//! It is the embedded default, and the local half of every backplane: a Redis manager keeps
//! one of these for the connections it holds and delivers what arrives from Redis through it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use signalr_protocol::{Completion, Protocol};
use tokio::time::Instant;

use super::{Audience, HubLifetimeManager, LifetimeError, SerializedMessage};
use crate::backlog;
use crate::connection::{HubConnection, SendError};

type Members = HashMap<Arc<str>, Arc<HubConnection>>;

/// Connections, groups and users of one node.
///
/// One `RwLock` guards all the tables so they always agree with each other. Deliveries take
/// it for reading and only queue bytes while holding it (no await, no IO), so they run in
/// parallel and never wait on a socket; membership changes take it briefly for writing.
#[derive(Debug, Default)]
pub struct MemoryLifetimeManager {
    tables: RwLock<Tables>,
    /// Local connections per hub protocol (JSON, MessagePack), so that a message is encoded
    /// only in the protocols some connection here speaks.
    per_protocol: [AtomicUsize; 2],
}

fn protocol_slot(protocol: Protocol) -> usize {
    match protocol {
        Protocol::Json => 0,
        Protocol::MessagePack => 1,
    }
}

#[derive(Debug, Default)]
struct Tables {
    connections: Members,
    /// Group name → members. Group names are case-sensitive (as Redis channels are).
    groups: HashMap<String, Members>,
    /// User id → that user's connections.
    users: HashMap<Arc<str>, Members>,
    /// Connection id → the groups it is in, to leave them all when it disconnects.
    memberships: HashMap<Arc<str>, HashSet<String>>,
}

/// What happened to a group membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupChange {
    /// The connection is not on this node.
    NotLocal,
    /// Nothing changed (already a member / was not a member).
    Unchanged,
    /// The membership changed; `group_size` is the number of local members afterwards.
    Changed {
        /// Local members of the group after the change.
        group_size: usize,
    },
    /// Not added: the connection is already in the most groups it may be in
    /// ([`HubConnection::max_groups`]).
    LimitReached {
        /// The connection's limit.
        max_groups: usize,
    },
}

impl MemoryLifetimeManager {
    /// An empty manager.
    pub fn new() -> Self {
        Self::default()
    }

    /// The local connection with this id.
    pub fn connection(&self, connection_id: &str) -> Option<Arc<HubConnection>> {
        self.read().connections.get(connection_id).cloned()
    }

    /// Number of local connections.
    pub fn connection_count(&self) -> usize {
        self.read().connections.len()
    }

    /// Number of local members of a group.
    pub fn group_size(&self, group: &str) -> usize {
        self.read().groups.get(group).map_or(0, HashMap::len)
    }

    /// Number of local connections of a user.
    pub fn user_connection_count(&self, user_id: &str) -> usize {
        self.read().users.get(user_id).map_or(0, HashMap::len)
    }

    /// Groups a local connection is in.
    pub fn groups_of(&self, connection_id: &str) -> Vec<String> {
        self.read()
            .memberships
            .get(connection_id)
            .map(|groups| groups.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Register a local connection. Returns false if the id was already registered.
    pub fn add_connection(&self, connection: &Arc<HubConnection>) -> bool {
        let mut tables = self.write();
        let id = connection.id_arc().clone();
        if tables.connections.contains_key(&id) {
            return false;
        }
        tables.connections.insert(id.clone(), connection.clone());
        self.per_protocol[protocol_slot(connection.protocol())].fetch_add(1, Ordering::Relaxed);
        if let Some(user) = connection.user_id_arc() {
            tables
                .users
                .entry(user.clone())
                .or_default()
                .insert(id, connection.clone());
        }
        true
    }

    /// Forget a local connection, its groups and its user membership. Returns the groups it
    /// left (so a backplane can drop subscriptions nobody needs any more).
    pub fn remove_connection(&self, connection: &HubConnection) -> Vec<String> {
        let mut tables = self.write();
        let id = connection.id();
        if tables.connections.remove(id).is_some() {
            self.per_protocol[protocol_slot(connection.protocol())].fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(user) = connection.user_id()
            && let Some(members) = tables.users.get_mut(user)
        {
            members.remove(id);
            if members.is_empty() {
                tables.users.remove(user);
            }
        }
        let groups: Vec<String> = tables
            .memberships
            .remove(id)
            .map(|groups| groups.into_iter().collect())
            .unwrap_or_default();
        for group in &groups {
            if let Some(members) = tables.groups.get_mut(group.as_str()) {
                members.remove(id);
                if members.is_empty() {
                    tables.groups.remove(group.as_str());
                }
            }
        }
        groups
    }

    /// Add a local connection to a group.
    pub fn add_local_to_group(&self, connection_id: &str, group: &str) -> GroupChange {
        let mut tables = self.write();
        let Some(connection) = tables.connections.get(connection_id).cloned() else {
            return GroupChange::NotLocal;
        };
        let id = connection.id_arc().clone();
        let in_group = tables
            .groups
            .get(group)
            .is_some_and(|members| members.contains_key(connection_id));
        if in_group {
            return GroupChange::Unchanged;
        }
        let max_groups = connection.max_groups();
        let joined = tables
            .memberships
            .get(connection_id)
            .map_or(0, HashSet::len);
        if max_groups > 0 && joined >= max_groups {
            return GroupChange::LimitReached { max_groups };
        }
        let members = tables.groups.entry(group.to_owned()).or_default();
        members.insert(id.clone(), connection);
        let group_size = members.len();
        tables
            .memberships
            .entry(id)
            .or_default()
            .insert(group.to_owned());
        GroupChange::Changed { group_size }
    }

    /// Remove a local connection from a group.
    pub fn remove_local_from_group(&self, connection_id: &str, group: &str) -> GroupChange {
        let mut tables = self.write();
        if !tables.connections.contains_key(connection_id) {
            return GroupChange::NotLocal;
        }
        let Some(members) = tables.groups.get_mut(group) else {
            return GroupChange::Unchanged;
        };
        if members.remove(connection_id).is_none() {
            return GroupChange::Unchanged;
        }
        let group_size = members.len();
        if group_size == 0 {
            tables.groups.remove(group);
        }
        if let Some(groups) = tables.memberships.get_mut(connection_id) {
            groups.remove(group);
            if groups.is_empty() {
                tables.memberships.remove(connection_id);
            }
        }
        GroupChange::Changed { group_size }
    }

    /// Deliver to the local connections of an audience. Returns how many connections the
    /// message was queued for. Per-connection failures (closed, slow consumer) are handled by
    /// the connection and do not stop the others.
    pub fn send_local(&self, audience: &Audience, message: &SerializedMessage) -> usize {
        let tables = self.read();
        let deliver = |connection: &Arc<HubConnection>| connection.send(message).is_ok();
        let count_members = |members: Option<&Members>, except: &[String]| {
            members.map_or(0, |members| {
                send_to_each(
                    members
                        .values()
                        .filter(|c| !except.iter().any(|e| e.as_str() == c.id())),
                    message,
                )
            })
        };
        match audience {
            Audience::All => count_members(Some(&tables.connections), &[]),
            Audience::AllExcept(except) => count_members(Some(&tables.connections), except),
            Audience::Connection(id) => tables
                .connections
                .get(id.as_str())
                .map_or(0, |c| usize::from(deliver(c))),
            Audience::Connections(ids) => ids
                .iter()
                .filter_map(|id| tables.connections.get(id.as_str()))
                .filter(|c| deliver(c))
                .count(),
            Audience::Group(group) => count_members(tables.groups.get(group.as_str()), &[]),
            Audience::GroupExcept(group, except) => {
                count_members(tables.groups.get(group.as_str()), except)
            }
            Audience::Groups(groups) => groups
                .iter()
                .map(|group| count_members(tables.groups.get(group.as_str()), &[]))
                .sum(),
            Audience::User(user) => count_members(tables.users.get(user.as_str()), &[]),
            Audience::Users(users) => users
                .iter()
                .map(|user| count_members(tables.users.get(user.as_str()), &[]))
                .sum(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        // Every update leaves the tables consistent before anything can panic, so a
        // poisoned lock still guards valid data.
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl HubLifetimeManager for MemoryLifetimeManager {
    fn protocols_in_use<'p>(&self, offered: &'p [Protocol]) -> &'p [Protocol] {
        // With every connection here on one protocol (the usual case), encode only that one.
        // A connection of another protocol arriving meanwhile still gets the message,
        // transcoded for it alone (`HubConnection::send`).
        let used = |p: &Protocol| self.per_protocol[protocol_slot(*p)].load(Ordering::Relaxed) > 0;
        let mut in_use = offered.iter().enumerate().filter(|(_, p)| used(p));
        match (in_use.next(), in_use.next()) {
            (Some((only, _)), None) => &offered[only..=only],
            _ => offered,
        }
    }

    async fn on_connected(&self, connection: &Arc<HubConnection>) -> Result<(), LifetimeError> {
        self.add_connection(connection);
        Ok(())
    }

    async fn on_disconnected(&self, connection: &Arc<HubConnection>) {
        self.remove_connection(connection);
    }

    async fn send(
        &self,
        audience: &Audience,
        message: &SerializedMessage,
    ) -> Result<(), LifetimeError> {
        self.send_local(audience, message);
        Ok(())
    }

    async fn add_to_group(&self, connection_id: &str, group: &str) -> Result<(), LifetimeError> {
        match self.add_local_to_group(connection_id, group) {
            GroupChange::NotLocal => Err(LifetimeError::ConnectionNotFound(connection_id.into())),
            GroupChange::LimitReached { max_groups } => {
                Err(group_limit_error(connection_id, group, max_groups))
            }
            _ => Ok(()),
        }
    }

    async fn remove_from_group(
        &self,
        connection_id: &str,
        group: &str,
    ) -> Result<(), LifetimeError> {
        match self.remove_local_from_group(connection_id, group) {
            GroupChange::NotLocal => Err(LifetimeError::ConnectionNotFound(connection_id.into())),
            _ => Ok(()),
        }
    }

    async fn invoke_connection(
        &self,
        connection_id: &str,
        invocation_id: &str,
        message: &SerializedMessage,
    ) -> Result<Completion, LifetimeError> {
        let connection = self
            .connection(connection_id)
            .ok_or_else(|| LifetimeError::ConnectionNotFound(connection_id.into()))?;
        let receiver = connection
            .invoke(invocation_id.to_owned(), message)
            .map_err(|error| match error {
                // Still registered but already ending: to the caller it has disconnected.
                SendError::Closed => LifetimeError::ConnectionClosed(connection_id.into()),
                other => other.into(),
            })?;
        // If the caller gives up (drops this future), the pending entry must not leak.
        let guard = PendingGuard {
            connection: &connection,
            invocation_id,
            armed: true,
        };
        let result = receiver.await;
        guard.disarm();
        result.map_err(|_| LifetimeError::ConnectionClosed(connection_id.into()))
    }
}

/// Connections a member walk warms ahead of sending to them.
const WARM_AHEAD: usize = 16;

/// Sends `message` to each connection; returns how many queued it.
///
/// Members are taken in chunks: each chunk's outboxes are first read with plain loads
/// ([`HubConnection::warm`]), then sent to. The loads of one chunk overlap in the CPU, where
/// pushes one after the other would each wait out a cache miss (a push's locked instructions
/// wait for every load before them); a group's members are rarely in cache when a message to
/// it comes round. Chunks keep what is warmed small enough to still be in cache when used.
/// When most members are far behind, the sending connection's loop is told to yield
/// ([`backlog`]).
fn send_to_each<'a>(
    members: impl Iterator<Item = &'a Arc<HubConnection>>,
    message: &SerializedMessage,
) -> usize {
    let mut members = members.peekable();
    let mut chunk: [Option<&Arc<HubConnection>>; WARM_AHEAD] = [None; WARM_AHEAD];
    let (mut sent, mut far_behind) = (0, 0);
    // Read once, and only when a deep queue asks how long its writer has been silent.
    let mut now = None;
    while members.peek().is_some() {
        let mut taken = 0;
        for (slot, connection) in chunk.iter_mut().zip(members.by_ref()) {
            connection.warm();
            *slot = Some(connection);
            taken += 1;
        }
        for connection in chunk[..taken].iter().flatten() {
            if let Ok(queued) = connection.send_queued(message) {
                sent += 1;
                if queued >= backlog::FAR_BEHIND_BYTES {
                    let now = *now.get_or_insert_with(Instant::now);
                    let silent = now.saturating_duration_since(connection.outbox().last_write());
                    far_behind += usize::from(silent >= backlog::FAR_BEHIND_SILENCE);
                }
            }
        }
    }
    if far_behind * 2 > sent {
        backlog::note_far_behind();
    }
    sent
}

/// The error of an add refused by [`HubConnection::max_groups`], for lifetime managers to
/// share.
pub fn group_limit_error(connection_id: &str, group: &str, max_groups: usize) -> LifetimeError {
    LifetimeError::LimitExceeded(format!(
        "Connection '{connection_id}' is already in {max_groups} groups, the most allowed; it was not added to '{group}'."
    ))
}

/// Removes a pending client-result invocation when the waiting future is dropped early.
struct PendingGuard<'a> {
    connection: &'a HubConnection,
    invocation_id: &'a str,
    armed: bool,
}

impl PendingGuard<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.connection.cancel_invocation(self.invocation_id);
        }
    }
}
