//! The in-memory lifetime manager: every connection is on this node.
//!
//! It is the embedded default, and the local half of every backplane: a Redis manager keeps
//! one of these for the connections it holds and delivers what arrives from Redis through it.

mod name;
mod stage;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use async_trait::async_trait;
use signalr_protocol::{Completion, Protocol};
use tokio::time::Instant;

use super::{Audience, HubLifetimeManager, LifetimeError, SerializedMessage};
use crate::backlog;
use crate::connection::{HubConnection, SendError};
use crate::transport::FrameRun;
use name::GroupName;
pub(crate) use stage::flush as flush_staged;
pub use stage::{SendBatch, batch_sends};

type Members = HashMap<Arc<str>, Arc<HubConnection>>;

/// Connections, groups and users of one node.
///
/// One `RwLock` guards all the tables so they always agree with each other. Deliveries take
/// it for reading and only queue bytes while holding it (no await, no IO), so they run in
/// parallel and never wait on a socket; membership changes take it briefly for writing.
#[derive(Debug, Default)]
pub struct MemoryLifetimeManager {
    /// Shared with sends staged on a thread ([`stage`]), which deliver after the call.
    tables: Arc<RwLock<Tables>>,
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
    groups: HashMap<GroupName, Group>,
    /// User id → that user's connections.
    users: HashMap<Arc<str>, Members>,
    /// Connection id → the groups it is in, to leave them all when it disconnects.
    memberships: HashMap<Arc<str>, HashSet<String>>,
}

#[derive(Debug, Default)]
struct Group {
    members: Members,
    /// Members that are in other groups too. A group with none shares no connection with
    /// any other group, so its sends may be staged past theirs ([`stage`]).
    shared: usize,
    /// Whether most members' writers were far behind when the group was last delivered to:
    /// what decides whether a batch's first message to it is staged ([`stage`]).
    writers: Writers,
}

/// What the last delivery to a group found of its members' writers ([`backlog`]). Kept in
/// the group, which a send looks up anyway, so that staging a group's first message of a
/// batch reads no member's queue: that read went to cold memory once per group and batch.
#[derive(Debug, Default)]
struct Writers(AtomicU8);

impl Writers {
    const UNKNOWN: u8 = 0;
    const KEEPING_UP: u8 = 1;
    const FAR_BEHIND: u8 = 2;

    /// `None` until the group has been delivered to.
    fn far_behind(&self) -> Option<bool> {
        match self.0.load(Ordering::Relaxed) {
            Self::UNKNOWN => None,
            state => Some(state == Self::FAR_BEHIND),
        }
    }

    fn record(&self, far_behind: bool) {
        let state = if far_behind {
            Self::FAR_BEHIND
        } else {
            Self::KEEPING_UP
        };
        // Written only when it changes: the group's line is read by every sender's thread.
        if self.0.load(Ordering::Relaxed) != state {
            self.0.store(state, Ordering::Relaxed);
        }
    }
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
        self.read()
            .groups
            .get(group)
            .map_or(0, |group| group.members.len())
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
        stage::flush();
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
        stage::flush();
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
        let shared = groups.len() >= 2;
        for group in &groups {
            if let Some(entry) = tables.groups.get_mut(group.as_str()) {
                entry.members.remove(id);
                entry.shared -= usize::from(shared);
                if entry.members.is_empty() {
                    tables.groups.remove(group.as_str());
                }
            }
        }
        groups
    }

    /// Add a local connection to a group.
    pub fn add_local_to_group(&self, connection_id: &str, group: &str) -> GroupChange {
        stage::flush();
        let mut tables = self.write();
        let Some(connection) = tables.connections.get(connection_id).cloned() else {
            return GroupChange::NotLocal;
        };
        let id = connection.id_arc().clone();
        let in_group = tables
            .groups
            .get(group)
            .is_some_and(|entry| entry.members.contains_key(connection_id));
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
        let entry = tables.groups.entry(GroupName::from(group)).or_default();
        entry.members.insert(id.clone(), connection);
        let group_size = entry.members.len();
        let Tables {
            groups,
            memberships,
            ..
        } = &mut *tables;
        let joined = memberships.entry(id).or_default();
        joined.insert(group.to_owned());
        count_shared(groups, joined, group, true);
        GroupChange::Changed { group_size }
    }

    /// Remove a local connection from a group.
    pub fn remove_local_from_group(&self, connection_id: &str, group: &str) -> GroupChange {
        stage::flush();
        let mut tables = self.write();
        if !tables.connections.contains_key(connection_id) {
            return GroupChange::NotLocal;
        }
        let Tables {
            groups,
            memberships,
            ..
        } = &mut *tables;
        let Some(entry) = groups.get_mut(group) else {
            return GroupChange::Unchanged;
        };
        if entry.members.remove(connection_id).is_none() {
            return GroupChange::Unchanged;
        }
        let group_size = entry.members.len();
        if let Some(joined) = memberships.get_mut(connection_id) {
            count_shared(groups, joined, group, false);
            joined.remove(group);
            if joined.is_empty() {
                memberships.remove(connection_id);
            }
        }
        if group_size == 0 {
            groups.remove(group);
        }
        GroupChange::Changed { group_size }
    }

    /// Deliver to the local connections of an audience. Returns how many connections the
    /// message was queued for. Per-connection failures (closed, slow consumer) are handled by
    /// the connection and do not stop the others. Inside a [`batch_sends`] on this thread, a
    /// send to a group or to everyone is queued when the batch ends (counted now).
    pub fn send_local(&self, audience: &Audience, message: &SerializedMessage) -> usize {
        let reach = self.send_or_stage(audience, message);
        stage::count(reach);
        reach
    }

    fn send_or_stage(&self, audience: &Audience, message: &SerializedMessage) -> usize {
        match self.stage(audience, message) {
            Some((stage::Staging::Staged, reach)) => return reach,
            // Nothing staged reaches the same connections.
            Some((stage::Staging::Direct, _)) => {}
            // Whatever this thread staged goes before this message.
            None => stage::flush(),
        }
        let tables = self.read();
        let deliver = |connection: &Arc<HubConnection>| connection.send(message).is_ok();
        let count_members = |members: Option<&Members>, writers, except: &[String]| {
            members.map_or(0, |members| {
                send_to_each(
                    members
                        .values()
                        .filter(|c| !except.iter().any(|e| e.as_str() == c.id())),
                    message,
                    writers,
                )
            })
        };
        let count_group = |group: &str, except: &[String]| {
            tables.groups.get(group).map_or(0, |entry| {
                count_members(Some(&entry.members), Some(&entry.writers), except)
            })
        };
        match audience {
            Audience::All => count_members(Some(&tables.connections), None, &[]),
            Audience::AllExcept(except) => count_members(Some(&tables.connections), None, except),
            Audience::Connection(id) => tables
                .connections
                .get(id.as_str())
                .map_or(0, |c| usize::from(deliver(c))),
            Audience::Connections(ids) => ids
                .iter()
                .filter_map(|id| tables.connections.get(id.as_str()))
                .filter(|c| deliver(c))
                .count(),
            Audience::Group(group) => count_group(group, &[]),
            Audience::GroupExcept(group, except) => count_group(group, except),
            Audience::Groups(groups) => groups.iter().map(|group| count_group(group, &[])).sum(),
            Audience::User(user) => count_members(tables.users.get(user.as_str()), None, &[]),
            Audience::Users(users) => users
                .iter()
                .map(|user| count_members(tables.users.get(user.as_str()), None, &[]))
                .sum(),
        }
    }

    /// Stage a send to everyone or to a group when a scope is active on this thread; with
    /// how many connections it reaches. `None`: not staged (no scope, or another kind of
    /// audience).
    fn stage(
        &self,
        audience: &Audience,
        message: &SerializedMessage,
    ) -> Option<(stage::Staging, usize)> {
        if !stage::active() {
            return None;
        }
        // What the last delivery to the group found of its writers, if it was delivered to.
        let (key, exclusive, reach, known) = {
            let tables = self.read();
            match audience {
                Audience::All => (stage::KeyRef::All, false, tables.connections.len(), None),
                Audience::Group(group) => {
                    let Some(entry) = tables.groups.get(group.as_str()) else {
                        return Some((stage::Staging::Staged, 0));
                    };
                    let known = entry.writers.far_behind();
                    let key = stage::KeyRef::Group(group);
                    (key, entry.shared == 0, entry.members.len(), known)
                }
                _ => return None,
            }
        };
        let far_behind = || {
            known.unwrap_or_else(|| staged_members(&self.read(), key).is_some_and(first_far_behind))
        };
        Some((
            stage::stage(&self.tables, key, exclusive, message, far_behind),
            reach,
        ))
    }

    fn read(&self) -> RwLockReadGuard<'_, Tables> {
        read(&self.tables)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn read(tables: &RwLock<Tables>) -> RwLockReadGuard<'_, Tables> {
    // Every update leaves the tables consistent before anything can panic, so a poisoned
    // lock still guards valid data.
    tables.read().unwrap_or_else(|p| p.into_inner())
}

/// The connections a staged audience reaches now.
fn staged_members<'t>(tables: &'t Tables, key: stage::KeyRef<'_>) -> Option<&'t Members> {
    staged_audience(tables, key).map(|(members, _)| members)
}

/// The connections a staged audience reaches now, with its group's [`Writers`].
fn staged_audience<'t>(
    tables: &'t Tables,
    key: stage::KeyRef<'_>,
) -> Option<(&'t Members, Option<&'t Writers>)> {
    match key {
        stage::KeyRef::All => Some((&tables.connections, None)),
        stage::KeyRef::Group(group) => tables
            .groups
            .get(group)
            .map(|entry| (&entry.members, Some(&entry.writers))),
    }
}

/// Count a connection that `joined` (its groups, `group` among them) shares between groups,
/// or stop counting it when it leaves `group` (`up` false, before `group` is taken out of
/// `joined`). A connection in two groups or more counts once in each: all of its groups
/// change when it joins its second or leaves down to one; otherwise only `group` does.
fn count_shared(
    groups: &mut HashMap<GroupName, Group>,
    joined: &HashSet<String>,
    group: &str,
    up: bool,
) {
    let mut count = |name: &str| {
        if let Some(entry) = groups.get_mut(name) {
            if up {
                entry.shared += 1;
            } else {
                entry.shared -= 1;
            }
        }
    };
    match joined.len() {
        0 | 1 => {}
        2 => joined.iter().for_each(|name| count(name)),
        _ => count(group),
    }
}

/// Deliver a staged run: each member of its audience, as it is now, gets the run's
/// messages in one push.
fn deliver_run(run: &stage::Run) {
    let tables = read(&run.tables);
    let Some((members, writers)) = staged_audience(&tables, run.key.as_ref()) else {
        return;
    };
    match run.messages.as_slice() {
        [message] => {
            send_to_each(members.values(), message, writers);
        }
        messages => {
            send_all_to_each(members.values(), messages, writers);
        }
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
fn send_to_each<'a>(
    members: impl Iterator<Item = &'a Arc<HubConnection>>,
    message: &SerializedMessage,
    writers: Option<&Writers>,
) -> usize {
    push_to_each(members, writers, |connection| {
        connection.send_queued(message)
    })
}

/// Whether the writer of the member `members` yields first is far behind ([`backlog`]): a
/// look at one queue standing in for the walk over all of them, before a message to them is
/// held back, for everyone and for a group not delivered to yet (a group that was is judged
/// by what its last delivery found, [`Writers`]). The silence is read first (a plain load);
/// the queue's lock is taken only for a writer that has been silent.
fn first_far_behind(members: &Members) -> bool {
    members.values().next().is_some_and(|connection| {
        let outbox = connection.outbox();
        Instant::now().saturating_duration_since(outbox.last_write()) >= backlog::FAR_BEHIND_SILENCE
            && outbox.buffered_bytes() >= backlog::FAR_BEHIND_BYTES
    })
}

/// Sends `messages`, in order, to each connection, in one push per connection where they
/// are encoded in its protocol; returns how many queued them.
fn send_all_to_each<'a>(
    members: impl Iterator<Item = &'a Arc<HubConnection>>,
    messages: &[SerializedMessage],
    writers: Option<&Writers>,
) -> usize {
    let encoded = |protocol| {
        FrameRun::collect(
            messages.len(),
            messages
                .iter()
                .map(|message| message.frame(protocol).map(|frame| &frame[..])),
        )
    };
    let runs = [encoded(Protocol::Json), encoded(Protocol::MessagePack)];
    push_to_each(members, writers, |connection| {
        match &runs[protocol_slot(connection.protocol())] {
            Some(run) => connection.queue_run(run),
            // Some message needs transcoding for this connection: one at a time.
            None => messages
                .iter()
                .map(|message| connection.send_queued(message))
                .last()
                .unwrap_or(Ok(0)),
        }
    })
}

/// Runs `push` for each connection (queueing what it is sent); returns how many queued it.
///
/// Members are taken in chunks: each chunk's outboxes are first read with plain loads
/// ([`HubConnection::warm`]), then pushed to. The loads of one chunk overlap in the CPU, where
/// pushes one after the other would each wait out a cache miss (a push's locked instructions
/// wait for every load before them); a group's members are rarely in cache when a message to
/// it comes round. Chunks keep what is warmed small enough to still be in cache when used.
/// When most members are far behind, the sending connection's loop is told to yield
/// ([`backlog`]); a group's `writers` records whether they were.
fn push_to_each<'a>(
    members: impl Iterator<Item = &'a Arc<HubConnection>>,
    writers: Option<&Writers>,
    push: impl Fn(&HubConnection) -> Result<usize, SendError>,
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
            if let Ok(queued) = push(connection) {
                sent += 1;
                if queued >= backlog::FAR_BEHIND_BYTES {
                    let now = *now.get_or_insert_with(Instant::now);
                    let silent = now.saturating_duration_since(connection.outbox().last_write());
                    far_behind += usize::from(silent >= backlog::FAR_BEHIND_SILENCE);
                }
            }
        }
    }
    let most_far_behind = far_behind * 2 > sent;
    if most_far_behind {
        backlog::note_far_behind();
    }
    if let Some(writers) = writers.filter(|_| sent > 0) {
        writers.record(most_far_behind);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use signalr_protocol::{HubMessage, Protocol};

    use super::*;
    use crate::testing::TestClient;

    fn message(target: &str) -> SerializedMessage {
        SerializedMessage::invocation(target, &(), &[Protocol::Json]).unwrap()
    }

    fn group(name: &str) -> Audience {
        Audience::Group(name.to_owned())
    }

    fn client(manager: &MemoryLifetimeManager, id: &str, groups: &[&str]) -> TestClient {
        let client = TestClient::new(id, None, Protocol::Json);
        assert!(manager.add_connection(client.connection()));
        for group in groups {
            let change = manager.add_local_to_group(id, group);
            assert!(matches!(change, GroupChange::Changed { .. }), "{change:?}");
        }
        client
    }

    /// The targets of everything queued for `client`, in order.
    async fn received(client: &mut TestClient) -> Vec<String> {
        targets_within(client, Duration::from_millis(20)).await
    }

    /// The targets of what is queued for `client` now (deliveries here are synchronous).
    async fn queued(client: &mut TestClient) -> Vec<String> {
        targets_within(client, Duration::ZERO).await
    }

    /// The targets of the invocations `client` gets, until none comes within `wait`.
    async fn targets_within(client: &mut TestClient, wait: Duration) -> Vec<String> {
        let mut targets = Vec::new();
        while let Some(message) = client.recv(wait).await {
            match message {
                HubMessage::Invocation(invocation) => targets.push(invocation.target),
                other => panic!("unexpected {other:?}"),
            }
        }
        targets
    }

    /// `count` groups `g{i}`, each with one member named like it.
    fn groups_of_one(
        manager: &MemoryLifetimeManager,
        count: usize,
    ) -> (Vec<String>, Vec<TestClient>) {
        let names: Vec<String> = (0..count).map(|i| format!("g{i}")).collect();
        let clients = names
            .iter()
            .map(|name| client(manager, name, &[name]))
            .collect();
        (names, clients)
    }

    /// Sends `{group}.{round}` to each group in turn, `rounds` times.
    fn send_rounds(manager: &MemoryLifetimeManager, names: &[String], rounds: usize) {
        for round in 0..rounds {
            for name in names {
                manager.send_local(&group(name), &message(&format!("{name}.{round}")));
            }
        }
    }

    fn shared(manager: &MemoryLifetimeManager, name: &str) -> Option<usize> {
        manager.read().groups.get(name).map(|group| group.shared)
    }

    #[tokio::test]
    async fn sends_in_a_scope_wait_for_its_end() {
        let manager = MemoryLifetimeManager::new();
        let mut a = client(&manager, "a", &["A"]);
        let mut b = client(&manager, "b", &["B"]);
        let staged = batch_sends();
        assert_eq!(manager.send_local(&group("A"), &message("a1")), 1);
        manager.send_local(&group("B"), &message("b1"));
        assert_eq!(manager.send_local(&group("A"), &message("a2")), 1);
        manager.send_local(&group("B"), &message("b2"));
        manager.send_local(&group("A"), &message("a3"));
        assert_eq!(staged.deliveries(), 5);
        // Every message waits for the scope, the first to each group too.
        assert!(received(&mut a).await.is_empty());
        assert!(received(&mut b).await.is_empty());
        drop(staged);
        assert_eq!(received(&mut a).await, ["a1", "a2", "a3"]);
        assert_eq!(received(&mut b).await, ["b1", "b2"]);
        // Outside a scope a send goes at once.
        manager.send_local(&group("A"), &message("a4"));
        assert_eq!(queued(&mut a).await, ["a4"]);
    }

    #[tokio::test]
    async fn sends_to_everyone_and_to_groups_keep_their_order() {
        let manager = MemoryLifetimeManager::new();
        let mut a = client(&manager, "a", &["A"]);
        let mut b = client(&manager, "b", &["B"]);
        let staged = batch_sends();
        for round in 0..3 {
            manager.send_local(&group("A"), &message(&format!("a{round}")));
            manager.send_local(&group("A"), &message(&format!("a{round}'")));
            manager.send_local(&Audience::All, &message(&format!("all{round}")));
            manager.send_local(&Audience::All, &message(&format!("all{round}'")));
            manager.send_local(&group("B"), &message(&format!("b{round}")));
        }
        drop(staged);
        let expected_a: Vec<String> = (0..3)
            .flat_map(|r| {
                [
                    format!("a{r}"),
                    format!("a{r}'"),
                    format!("all{r}"),
                    format!("all{r}'"),
                ]
            })
            .collect();
        let expected_b: Vec<String> = (0..3)
            .flat_map(|r| [format!("all{r}"), format!("all{r}'"), format!("b{r}")])
            .collect();
        assert_eq!(received(&mut a).await, expected_a);
        assert_eq!(received(&mut b).await, expected_b);
    }

    #[tokio::test]
    async fn a_connection_in_two_groups_gets_their_sends_in_order() {
        let manager = MemoryLifetimeManager::new();
        let mut both = client(&manager, "both", &["A", "B"]);
        let mut a = client(&manager, "a", &["A"]);
        let staged = batch_sends();
        manager.send_local(&group("A"), &message("a1"));
        manager.send_local(&group("B"), &message("b1"));
        manager.send_local(&group("A"), &message("a2"));
        manager.send_local(&group("B"), &message("b2"));
        drop(staged);
        assert_eq!(received(&mut both).await, ["a1", "b1", "a2", "b2"]);
        assert_eq!(received(&mut a).await, ["a1", "a2"]);
    }

    #[tokio::test]
    async fn a_group_sent_to_again_after_another_sharing_a_member_does_not_go_back() {
        let manager = MemoryLifetimeManager::new();
        let mut both = client(&manager, "both", &["A", "B"]);
        let mut only = client(&manager, "only", &["C"]);
        let staged = batch_sends();
        for target in ["a1", "c1", "b1", "b2", "c2", "a2", "c3"] {
            let name = target[..1].to_uppercase();
            manager.send_local(&group(&name), &message(target));
        }
        drop(staged);
        assert_eq!(received(&mut both).await, ["a1", "b1", "b2", "a2"]);
        assert_eq!(received(&mut only).await, ["c1", "c2", "c3"]);
    }

    #[tokio::test]
    async fn a_direct_send_in_a_scope_goes_after_what_was_staged() {
        let manager = MemoryLifetimeManager::new();
        let mut a = client(&manager, "a", &["A"]);
        let _staged = batch_sends();
        manager.send_local(&group("A"), &message("a1"));
        manager.send_local(&group("A"), &message("a2"));
        a.connection().send(&message("direct")).unwrap();
        manager.send_local(&group("A"), &message("a3"));
        manager.send_local(&group("A"), &message("a4"));
        manager.send_local(&Audience::Connection("a".into()), &message("to a"));
        manager.send_local(&group("A"), &message("a5"));
        manager.send_local(&group("A"), &message("a6"));
        // The scope is still open: only what a direct send flushed is here.
        assert_eq!(
            received(&mut a).await,
            ["a1", "a2", "direct", "a3", "a4", "to a"]
        );
    }

    #[tokio::test]
    async fn a_member_added_in_a_scope_gets_only_what_is_sent_after() {
        let manager = MemoryLifetimeManager::new();
        let mut a = client(&manager, "a", &["A"]);
        let mut late = client(&manager, "late", &[]);
        let staged = batch_sends();
        manager.send_local(&group("A"), &message("a1"));
        manager.send_local(&group("A"), &message("a2"));
        manager.add_local_to_group("late", "A");
        manager.send_local(&group("A"), &message("a3"));
        manager.send_local(&group("A"), &message("a4"));
        manager.remove_local_from_group("a", "A");
        manager.send_local(&group("A"), &message("a5"));
        manager.send_local(&group("A"), &message("a6"));
        drop(staged);
        assert_eq!(received(&mut a).await, ["a1", "a2", "a3", "a4"]);
        assert_eq!(received(&mut late).await, ["a3", "a4", "a5", "a6"]);
    }

    #[tokio::test]
    async fn sends_to_a_thousand_groups_in_turn_are_held_until_the_scope_ends() {
        let manager = MemoryLifetimeManager::new();
        let (names, mut clients) = groups_of_one(&manager, 1000);
        let staged = batch_sends();
        send_rounds(&manager, &names, 3);
        assert_eq!(staged.deliveries(), 3000);
        // Every round waits for the scope, however many groups.
        for client in &mut clients {
            assert!(queued(client).await.is_empty());
        }
        drop(staged);
        for (name, client) in names.iter().zip(&mut clients) {
            assert_eq!(
                queued(client).await,
                [
                    format!("{name}.0"),
                    format!("{name}.1"),
                    format!("{name}.2")
                ]
            );
        }
    }

    #[tokio::test]
    async fn a_full_stage_delivers_and_keeps_going() {
        let manager = MemoryLifetimeManager::new();
        let (names, mut clients) = groups_of_one(&manager, stage::MAX_RUNS + 3);
        let staged = batch_sends();
        send_rounds(&manager, &names, 3);
        drop(staged);
        for (name, client) in names.iter().zip(&mut clients) {
            assert_eq!(
                queued(client).await,
                [
                    format!("{name}.0"),
                    format!("{name}.1"),
                    format!("{name}.2")
                ]
            );
        }
    }

    fn writers_far_behind(manager: &MemoryLifetimeManager, name: &str) -> Option<bool> {
        manager.read().groups.get(name)?.writers.far_behind()
    }

    /// Messages queued for `client` and not yet taken by its writer.
    fn unwritten(client: &TestClient) -> usize {
        client.connection().outbox().queued().1
    }

    #[tokio::test]
    async fn a_batch_stages_a_group_by_what_its_last_delivery_found() {
        let manager = MemoryLifetimeManager::new();
        let mut slow: Vec<TestClient> = (0..4)
            .map(|i| client(&manager, &format!("slow-{i}"), &["slow"]))
            .collect();
        let fast = client(&manager, "fast", &["fast"]);
        // The members of "slow" have more than `FAR_BEHIND_BYTES` queued, and no writer has
        // taken anything since they were made.
        for member in &slow {
            let frame = bytes::Bytes::from(vec![b' '; 100_000]);
            member.connection().send_frame(frame).unwrap();
        }
        tokio::time::sleep(backlog::FAR_BEHIND_SILENCE + Duration::from_millis(100)).await;
        assert_eq!(writers_far_behind(&manager, "slow"), None);

        manager.send_local(&group("slow"), &message("s1"));
        manager.send_local(&group("fast"), &message("f1"));
        assert!(backlog::take_far_behind());
        assert_eq!(writers_far_behind(&manager, "slow"), Some(true));
        assert_eq!(writers_far_behind(&manager, "fast"), Some(false));

        let staged = batch_sends();
        manager.send_local(&group("slow"), &message("s2"));
        manager.send_local(&group("fast"), &message("f2"));
        // The batch's first message to the group found far behind went at once, and its walk
        // told the sender to give way; the other group's is held.
        assert_eq!(unwritten(&slow[0]), 3);
        assert!(backlog::is_far_behind());
        assert_eq!(unwritten(&fast), 1);
        drop(staged);
        assert!(backlog::take_far_behind());
        assert_eq!(unwritten(&fast), 2);

        // The writers catch up. The next batch's first message still goes at once (what the
        // last delivery found decides, no member's queue is read), and finds them keeping up.
        for member in &mut slow {
            member.discard_queued();
        }
        let staged = batch_sends();
        manager.send_local(&group("slow"), &message("s3"));
        assert_eq!(unwritten(&slow[0]), 1);
        assert!(!backlog::is_far_behind());
        drop(staged);
        assert_eq!(writers_far_behind(&manager, "slow"), Some(false));

        let staged = batch_sends();
        manager.send_local(&group("slow"), &message("s4"));
        assert_eq!(unwritten(&slow[0]), 1);
        drop(staged);
        assert_eq!(unwritten(&slow[0]), 2);
    }

    #[tokio::test]
    async fn a_batch_counts_every_delivery_sent_or_held() {
        let manager = MemoryLifetimeManager::new();
        let _a = client(&manager, "a", &["A"]);
        let _b = client(&manager, "b", &["A"]);
        let _c = client(&manager, "c", &[]);
        manager.send_local(&Audience::All, &message("before"));
        let staged = batch_sends();
        assert_eq!(staged.deliveries(), 0, "a new batch starts from zero");
        manager.send_local(&group("A"), &message("direct"));
        manager.send_local(&group("A"), &message("held"));
        manager.send_local(&Audience::All, &message("all"));
        manager.send_local(&group("nobody"), &message("none"));
        assert_eq!(staged.deliveries(), 2 + 2 + 3);
    }

    #[test]
    fn shared_members_are_counted_per_group() {
        let manager = MemoryLifetimeManager::new();
        let _one = client(&manager, "one", &["A"]);
        let two = client(&manager, "two", &["A", "B"]);
        assert_eq!(
            (shared(&manager, "A"), shared(&manager, "B")),
            (Some(1), Some(1))
        );
        manager.add_local_to_group("two", "C");
        assert_eq!(shared(&manager, "C"), Some(1));
        manager.remove_local_from_group("two", "A");
        assert_eq!(
            (
                shared(&manager, "A"),
                shared(&manager, "B"),
                shared(&manager, "C")
            ),
            (Some(0), Some(1), Some(1))
        );
        manager.remove_local_from_group("two", "C");
        assert_eq!(
            (shared(&manager, "B"), shared(&manager, "C")),
            (Some(0), None)
        );
        manager.add_local_to_group("two", "A");
        assert_eq!(
            (shared(&manager, "A"), shared(&manager, "B")),
            (Some(1), Some(1))
        );
        manager.remove_connection(two.connection());
        assert_eq!(
            (shared(&manager, "A"), shared(&manager, "B")),
            (Some(0), None)
        );
    }
}
