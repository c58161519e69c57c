//! Sends to a group or to everyone, held back while one connection's chunk of invocations
//! runs, so that each member's queue is locked once per chunk instead of once per message.
//!
//! A flood of invocations arrives in chunks (everything the socket had read); each one that
//! sends to a group walks the group's members and pushes into each member's outbox, whose
//! lock and queue are in cold memory by the time the group comes round again. While a
//! chunk's invocations run ([`batch_sends`]), the first send to a group or to `All` goes at once
//! and the ones after it are staged here; when the chunk is done, each staged audience is
//! walked once and every member gets all of its messages in one push. (Under a flood of
//! 10 groups of 1 k on one core this took the most deliveries a second from about 3 M to
//! 7 M: BENCHMARKS.md, W5.)
//!
//! Order per connection is kept: a message joins an earlier staged run of the same audience
//! only if no run staged after that one can reach the same connection (two groups are
//! disjoint when either has no member in another group); anything else on this thread
//! (another kind of audience, a direct send such as a Completion, a membership change)
//! delivers everything staged first ([`flush`]). Messages are delayed by at most the rest of
//! the chunk, which the connection's writers could not have used anyway: they run on the
//! same thread once the chunk is done.

use std::cell::{Cell, RefCell};
use std::sync::{Arc, RwLock};

use crate::lifetime::SerializedMessage;

use super::Tables;

/// Staged audiences at most; one more delivers them all first. Each send looks through
/// them, so few: a flood spread over many more groups than this gains little anyway.
pub(super) const MAX_RUNS: usize = 32;
/// Messages at most in one run; past it the next message starts a new run.
const MAX_RUN_MESSAGES: usize = 256;
/// Bytes (the largest frame of each message) at most in one run.
const MAX_RUN_BYTES: usize = 64 * 1024;

/// An audience that can be staged.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Key {
    All,
    Group(String),
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

impl Run {
    /// Whether no connection can be reached by both runs.
    fn disjoint(&self, tables: &Arc<RwLock<Tables>>, key: &Key, exclusive: bool) -> bool {
        if !Arc::ptr_eq(&self.tables, tables) {
            // Managers do not share connections.
            return true;
        }
        match (&self.key, key) {
            (Key::Group(a), Key::Group(b)) => a != b && (self.exclusive || exclusive),
            _ => false,
        }
    }
}

#[derive(Debug)]
struct Stage {
    /// Inside a [`scope`] on this thread.
    active: bool,
    runs: Vec<Run>,
}

thread_local! {
    static STAGE: RefCell<Stage> = const {
        RefCell::new(Stage { active: false, runs: Vec::new() })
    };
    /// Whether `STAGE` holds runs (opened or with messages): the check every direct send
    /// makes, without a borrow.
    static HELD: Cell<bool> = const { Cell::new(false) };
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
/// without waiting: the first message to a group or to everyone goes at once, later ones to
/// the same audience are held and then pushed to each member together (one lock of its queue
/// instead of one per message). Every connection still gets its messages in the order they
/// were sent; sends of other kinds, direct sends to a connection and membership changes on
/// this thread deliver what is held first. Hub invocations already run inside one (per
/// chunk the client's socket had read), and so does the Redis backplane's delivery of
/// received messages.
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
/// } // the 99 held back are queued here, in one push
/// ```
pub fn batch_sends() -> SendBatch {
    let outermost = STAGE.with(|stage| {
        let mut stage = stage.borrow_mut();
        !std::mem::replace(&mut stage.active, true)
    });
    SendBatch {
        outermost,
        _not_send: std::marker::PhantomData,
    }
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
    let mut runs = STAGE.with(|stage| std::mem::take(&mut stage.borrow_mut().runs));
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
    /// The caller delivers it now: it is the first to its audience in this scope, and
    /// nothing staged can reach the same connections (or it was delivered first). Later
    /// messages to the audience are staged behind it.
    Direct,
}

/// Stage `message` for `key` (a scope is active on this thread).
///
/// The first message to an audience in a scope goes at once: its walk over the members
/// finds out whether their writers are far behind ([`backlog`](crate::backlog)) before the
/// next invocation starts, and an audience sent to only once gains nothing from waiting.
pub(super) fn stage(
    tables: &Arc<RwLock<Tables>>,
    key: Key,
    exclusive: bool,
    message: &SerializedMessage,
) -> Staging {
    let bytes = message.largest_frame();
    let mut key = key;
    loop {
        let added = STAGE.with(|stage| {
            add(
                &mut stage.borrow_mut(),
                tables,
                key,
                exclusive,
                message,
                bytes,
            )
        });
        match added {
            Ok(staging) => return staging,
            // Something staged reaches the same connections, or there is no room: deliver
            // what is staged, then try again (the message then goes at once).
            Err(returned) => {
                key = returned;
                flush();
            }
        }
    }
}

/// Append to a run of the same audience that nothing staged after it overlaps; or, when
/// nothing staged overlaps the audience at all, open a run for the messages after this one
/// (the caller sends this one at once). `Err` gives the key back when what is staged must
/// be delivered first.
fn add(
    stage: &mut Stage,
    tables: &Arc<RwLock<Tables>>,
    key: Key,
    exclusive: bool,
    message: &SerializedMessage,
    bytes: usize,
) -> Result<Staging, Key> {
    for run in stage.runs.iter_mut().rev() {
        if Arc::ptr_eq(&run.tables, tables) && run.key == key {
            if run.messages.len() < MAX_RUN_MESSAGES && run.bytes + bytes <= MAX_RUN_BYTES {
                run.messages.push(message.clone());
                run.bytes += bytes;
                return Ok(Staging::Staged);
            }
            return Err(key);
        }
        if !run.disjoint(tables, &key, exclusive) {
            return Err(key);
        }
    }
    if stage.runs.len() >= MAX_RUNS {
        return Err(key);
    }
    stage.runs.push(Run {
        tables: tables.clone(),
        key,
        exclusive,
        messages: Vec::new(),
        bytes: 0,
    });
    HELD.with(|held| held.set(true));
    Ok(Staging::Direct)
}

/// Whether a scope is active on this thread (sends to groups and to everyone are staged).
pub(super) fn active() -> bool {
    STAGE.with(|stage| stage.borrow().active)
}
