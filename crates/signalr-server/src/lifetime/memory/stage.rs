//! Sends to a group or to everyone, held back while one connection's chunk of invocations
//! runs, so that each member's queue is locked once per chunk instead of once per message.
//!
//! A flood of invocations arrives in chunks (everything the socket had read); each one that
//! sends to a group walks the group's members and pushes into each member's outbox, whose
//! lock and queue are in cold memory by the time the group comes round again. While a
//! chunk's invocations run ([`batch_sends`]), every send to a group or to `All` is staged
//! here; when the chunk is done, each staged audience is walked once and every member gets
//! all of its messages in one push. (Under a flood of 10 groups of 1 k on one core this took
//! the most deliveries a second from about 3 M to 7 M: BENCHMARKS.md, W5. A flood that goes
//! round 1 k groups of 10 comes back to a group within one batch only when the batch holds
//! more than a thousand invocations: a connection's loop batches the chunks already queued
//! together for that.)
//!
//! The first message to an audience is staged too: when a batch comes back to each of 1 k
//! groups of 10 only two or three times, sending it at once made two pushes per member and
//! batch instead of one, each into a queue out of cache (BENCHMARKS.md, W5). Only when the
//! audience's writers are far behind does it go at once, so that its walk tells the sending
//! loop to give way ([`backlog`](crate::backlog)) before the loop's next invocation: for a
//! group, as its last delivery found them; for everyone, or a group not delivered to yet, as
//! one member's queue says.
//!
//! Order per connection is kept: a message joins an earlier staged run of the same audience
//! only if no run staged after that one can reach the same connection (two groups are
//! disjoint when either has no member in another group); anything else on this thread
//! (another kind of audience, a direct send such as a Completion, a membership change)
//! delivers everything staged first ([`flush`]). Messages are delayed by at most the rest of
//! the chunk, which the connection's writers could not have used anyway: they run on the
//! same thread once the chunk is done.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use crate::lifetime::SerializedMessage;

use super::{GroupName, Tables};

/// Staged audiences at most; one more delivers them all first. A send finds its run through
/// an index, so this only bounds what a scope holds: enough for a flood that goes round a few
/// thousand small groups, each reached several times per batch of chunks.
pub(super) const MAX_RUNS: usize = 4096;
/// Messages at most in one run; past it the next message starts a new run.
const MAX_RUN_MESSAGES: usize = 256;
/// Bytes (the largest frame of each message) at most in one run.
const MAX_RUN_BYTES: usize = 64 * 1024;
/// Room for messages a run opens with: a flood that goes round 1 k groups of 10 brings two or
/// three to each group per batch, and grown one by one from one, each run was reallocated
/// twice.
const FIRST_RUN_CAPACITY: usize = 4;

/// An audience that can be staged, as a run keeps it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Key {
    All,
    Group(GroupName),
}

/// An audience as a send names it: staging a message to an audience that already has a run
/// copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum KeyRef<'a> {
    All,
    Group(&'a str),
}

impl Key {
    pub(super) fn as_ref(&self) -> KeyRef<'_> {
        match self {
            Key::All => KeyRef::All,
            Key::Group(group) => KeyRef::Group(group),
        }
    }
}

impl KeyRef<'_> {
    fn to_key(self) -> Key {
        match self {
            KeyRef::All => Key::All,
            KeyRef::Group(group) => Key::Group(GroupName::from(group)),
        }
    }
}

/// Messages to one audience of one manager, in the order they were sent.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) tables: Arc<RwLock<Tables>>,
    pub(super) key: Key,
    /// A group none of whose members is in another group (when the run was opened).
    exclusive: bool,
    pub(super) messages: Vec<SerializedMessage>,
    bytes: usize,
}

#[derive(Debug)]
struct Stage {
    /// Inside a [`scope`] on this thread.
    active: bool,
    runs: Vec<Run>,
    /// Where each audience's run is in `runs` (one run per audience at a time: a full run
    /// delivers everything staged), by the hash of its manager and key. Two audiences with
    /// the same hash cannot both be staged: the second delivers what is staged first.
    index: HashMap<u64, usize>,
    hasher: RandomState,
    /// The last run to `All`.
    last_all: Option<usize>,
    /// The last run to `All` or to a group sharing members with other groups.
    last_broad: Option<usize>,
}

thread_local! {
    static STAGE: RefCell<Stage> = RefCell::new(Stage {
        active: false,
        runs: Vec::new(),
        index: HashMap::new(),
        hasher: RandomState::new(),
        last_all: None,
        last_broad: None,
    });
    /// Whether `STAGE` holds runs (opened or with messages): the check every direct send
    /// makes, without a borrow.
    static HELD: Cell<bool> = const { Cell::new(false) };
    /// Deliveries (messages times the connections they reach) sent or staged in the current
    /// scope: how much work it has made ([`SendBatch::deliveries`]).
    static DELIVERIES: Cell<usize> = const { Cell::new(0) };
}

/// Sends to groups and to everyone held back on this thread until dropped: see
/// [`batch_sends`].
#[derive(Debug)]
#[must_use = "sends are held back only while the batch is alive"]
pub struct SendBatch {
    outermost: bool,
    /// Thread-local state: the batch must be dropped on the thread that made it.
    _not_send: std::marker::PhantomData<*const ()>,
}

/// Batch the sends a [`MemoryLifetimeManager`](super::MemoryLifetimeManager) makes on this
/// thread until the returned guard is dropped, for code that sends many messages in a row
/// without waiting: messages to a group or to everyone are held and then pushed to each
/// member together (one lock of its queue instead of one per message). Every connection still
/// gets its messages in the order they were sent; sends of other kinds, direct sends to a
/// connection and membership changes on this thread deliver what is held first. Hub
/// invocations already run inside one (per chunk the client's socket had read), and so does
/// the Redis backplane's delivery of received messages.
///
/// Nothing between this call and the drop may `.await`: other tasks on this thread would
/// find their sends held too, until the batch ends. Batches do not nest (an inner one does
/// nothing).
///
/// ```
/// use signalr_server::lifetime::batch_sends;
/// use signalr_server::protocol::Protocol;
/// use signalr_server::testing::TestClient;
/// use signalr_server::{Audience, MemoryLifetimeManager, SerializedMessage};
///
/// let manager = MemoryLifetimeManager::new();
/// let client = TestClient::new("c1", None, Protocol::Json);
/// manager.add_connection(client.connection());
/// let tick = SerializedMessage::invocation("tick", &(1,), &[Protocol::Json]).unwrap();
/// {
///     let _batch = batch_sends();
///     for _ in 0..100 {
///         manager.send_local(&Audience::All, &tick);
///     }
/// } // the 100 held back are queued here, in one push
/// ```
pub fn batch_sends() -> SendBatch {
    let outermost = STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        !std::mem::replace(&mut stage.active, true)
    });
    if outermost {
        DELIVERIES.with(|count| count.set(0));
    }
    SendBatch {
        outermost,
        _not_send: std::marker::PhantomData,
    }
}

impl SendBatch {
    /// Deliveries made in the batch so far (each message times the connections of this node
    /// it reaches, sent or held back): lets a loop that feeds a batch stop before one batch
    /// holds back more than the connections' writers should wait for.
    pub fn deliveries(&self) -> usize {
        DELIVERIES.with(Cell::get)
    }
}

/// Count deliveries made on this thread: each outermost scope starts its count at zero, and
/// what is counted outside a scope is never read.
pub(super) fn count(deliveries: usize) {
    DELIVERIES.with(|count| count.set(count.get().saturating_add(deliveries)));
}

impl Drop for SendBatch {
    fn drop(&mut self) {
        if self.outermost {
            STAGE.with(|stage| stage.borrow_mut().active = false);
            flush();
        }
    }
}

/// Deliver everything staged on this thread, in order, and close every run (what comes
/// next goes at once, with what it finds then). Cheap when nothing is held.
pub(crate) fn flush() {
    if !HELD.with(Cell::get) {
        return;
    }
    let mut runs = STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        stage.index.clear();
        (stage.last_all, stage.last_broad) = (None, None);
        std::mem::take(&mut stage.runs)
    });
    HELD.with(|held| held.set(false));
    for run in runs.iter().filter(|run| !run.messages.is_empty()) {
        super::deliver_run(run);
    }
    runs.clear();
    // Keep the buffer for the next chunk, unless delivering staged a new one meanwhile.
    STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        if stage.runs.is_empty() {
            stage.runs = runs;
        }
    });
}

/// What [`stage`] did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Staging {
    /// Held back: it goes out when the scope ends (or something flushes first).
    Staged,
    /// The caller delivers it now: it is the first to its audience in this scope, its
    /// members looked far behind, and nothing staged can reach the same connections (or it
    /// was delivered first). Later messages to the audience are staged behind it.
    Direct,
}

/// Stage `message` for `key` (a scope is active on this thread).
///
/// The first message to an audience in a scope is staged too, unless `far_behind` (asked
/// only then) says its members' writers are far behind: then
/// it goes at once, so that its walk over the members tells the sending loop to give way
/// ([`backlog`](crate::backlog)) before the next invocation starts.
pub(super) fn stage(
    tables: &Arc<RwLock<Tables>>,
    key: KeyRef<'_>,
    exclusive: bool,
    message: &SerializedMessage,
    far_behind: impl FnOnce() -> bool,
) -> Staging {
    let bytes = message.largest_frame();
    let mut far_behind = Some(far_behind);
    loop {
        let added = STAGE.with(|stage| {
            add(
                &mut stage.borrow_mut(),
                tables,
                key,
                exclusive,
                message,
                bytes,
                &mut far_behind,
            )
        });
        match added {
            Some(staging) => return staging,
            // Something staged reaches the same connections, or there is no room: deliver
            // what is staged, then try again (the message then opens a run of its own).
            None => flush(),
        }
    }
}

/// Append to the run of the same audience when nothing staged after it overlaps; or, when
/// nothing staged overlaps the audience at all, open a run with it (or, when `far_behind`
/// says so, a run for the messages after it, the caller sending this one at once). `None`
/// when what is staged must be delivered first.
///
/// Which runs overlap, without walking them: a group none of whose members is in another group
/// overlaps only `All` (its members are in no other group); a group sharing members overlaps
/// `All` and every other group sharing members; `All` overlaps everything. So it is enough to
/// know the last `All` run and the last run of either kind. Runs of another manager never
/// share connections, but are counted as overlapping (a flush too many, never one too few):
/// one manager per chunk is the case that matters.
fn add(
    stage: &mut Stage,
    tables: &Arc<RwLock<Tables>>,
    key: KeyRef<'_>,
    exclusive: bool,
    message: &SerializedMessage,
    bytes: usize,
    far_behind: &mut Option<impl FnOnce() -> bool>,
) -> Option<Staging> {
    let manager = Arc::as_ptr(tables) as usize;
    let hash = stage.hasher.hash_one((manager, key));
    // The last staged run this audience would overlap, if any.
    let last_overlapping = |stage: &Stage, exclusive: bool| match key {
        KeyRef::All => stage.runs.len().checked_sub(1),
        KeyRef::Group(_) if exclusive => stage.last_all,
        KeyRef::Group(_) => stage.last_broad,
    };
    if let Some(&at) = stage.index.get(&hash) {
        let run = &stage.runs[at];
        if !Arc::ptr_eq(&run.tables, tables) || run.key.as_ref() != key {
            // Another audience with the same hash has the slot.
            return None;
        }
        let exclusive = exclusive || run.exclusive;
        let overlapped = last_overlapping(stage, exclusive).is_some_and(|last| last > at);
        let run = &mut stage.runs[at];
        if overlapped || run.messages.len() >= MAX_RUN_MESSAGES || run.bytes + bytes > MAX_RUN_BYTES
        {
            return None;
        }
        run.messages.push(message.clone());
        run.bytes += bytes;
        return Some(Staging::Staged);
    }
    if last_overlapping(stage, exclusive).is_some() || stage.runs.len() >= MAX_RUNS {
        return None;
    }
    let direct = far_behind.take().is_some_and(|far_behind| far_behind());
    let at = stage.runs.len();
    match key {
        KeyRef::All => (stage.last_all, stage.last_broad) = (Some(at), Some(at)),
        KeyRef::Group(_) if !exclusive => stage.last_broad = Some(at),
        KeyRef::Group(_) => {}
    }
    stage.runs.push(Run {
        tables: tables.clone(),
        key: key.to_key(),
        exclusive,
        messages: {
            let mut messages = Vec::with_capacity(FIRST_RUN_CAPACITY);
            if !direct {
                messages.push(message.clone());
            }
            messages
        },
        bytes: if direct { 0 } else { bytes },
    });
    stage.index.insert(hash, at);
    HELD.with(|held| held.set(true));
    Some(if direct {
        Staging::Direct
    } else {
        Staging::Staged
    })
}

/// Whether a scope is active on this thread (sends to groups and to everyone are staged).
pub(super) fn active() -> bool {
    STAGE.with(|stage| stage.borrow().active)
}
