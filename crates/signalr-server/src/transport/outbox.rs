//! The outbound queue of one connection.
//!
//! Everything a connection will be sent passes through its [`Outbox`]: hub messages pushed by
//! any task (a broadcast, the connection's own completions, keep-alive pings) and drained by
//! the one task that owns the transport's write half. The queue is what decouples a slow
//! socket from the sender: a push never waits, it either queues the bytes or fails.
//!
//! Frames are complete, already framed hub messages (`Bytes` shared between every connection a
//! broadcast reaches). The writer takes everything queued at once, so one socket write (one
//! WebSocket message, one long-poll body, one SSE event) carries as many messages as piled up
//! while the previous write was in flight: under load the number of writes per message falls
//! instead of the queue growing.
//!
//! # Slow consumers
//!
//! The queue is bounded in bytes ([`Outbox::new`]). A push that would exceed the bound means
//! the client is not reading as fast as it is being sent to. The policy is to close that
//! connection: the queued frames are dropped, the outbox is left holding only the *overflow
//! frame* (a hub `Close` message with an error and `allowReconnect`, registered by the hub
//! layer after the handshake), and it is closed so the writer sends that frame and ends the
//! transport. The sender sees [`PushError::Full`] once and is never blocked, so one stalled
//! client cannot hold up a broadcast to thousands of others. A client that reconnects starts
//! from a fresh connection.
//!
//! # Replay (stateful reconnect)
//!
//! With [`Outbox::enable_replay`], every frame pushed with [`Outbox::push`] is a *trackable*
//! message and gets the next sequence id (1, 2, 3, ...); frames pushed with
//! [`Outbox::push_untracked`] (pings, acks, closes) are not numbered. A trackable frame the
//! writer has taken stays in a replay buffer until the client acknowledges it
//! ([`Outbox::ack`]). When the replay buffer holds `limit` bytes, the writer stops taking
//! trackable frames until an Ack frees room (they wait in the queue, under the slow-consumer
//! bound). After the transport is replaced, [`Outbox::resume`] makes the next batch start
//! with a Sequence message and every unacknowledged frame, in order; nothing is lost and the
//! client drops what it had already seen.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::run::FrameRun;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The connection is closing or closed; the frame is dropped.
    #[error("the connection is closed")]
    Closed,
    /// The queue was full: the connection is being closed as a slow consumer.
    #[error("the connection's outbound buffer is full; closing it as a slow consumer")]
    Full,
}

/// What [`Outbox::next_batch`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Batch {
    /// Frames were appended to the caller's buffer.
    Frames,
    /// The outbox is closed and empty: the writer should end the transport.
    Closed,
}

/// Where the writer collects what it takes: the frames copied together in one buffer (a
/// long-poll body, an SSE event), or a [`Payload`].
trait Collect {
    fn reserve(&mut self, bytes: usize, frames: usize);
    fn add(&mut self, frame: &Bytes);
    /// Adds frame `index` of `run`.
    fn add_from_run(&mut self, run: &FrameRun, index: usize, frame: &[u8]);
}

impl Collect for BytesMut {
    fn reserve(&mut self, bytes: usize, _frames: usize) {
        BytesMut::reserve(self, bytes);
    }

    fn add(&mut self, frame: &Bytes) {
        self.extend_from_slice(frame);
    }

    fn add_from_run(&mut self, _run: &FrameRun, _index: usize, frame: &[u8]) {
        self.extend_from_slice(frame);
    }
}

/// A run's frame from this size on, when it is the first of a write, is referred to rather
/// than copied: below it, a copy costs less than the reference (an allocation).
const SHARED_RUN_FRAME: usize = 4096;

/// One write's worth of frames as [`Outbox::poll_payload`] takes them: a lone frame as it is
/// (a broadcast's `Bytes`, shared with every connection it reaches, is not copied), several
/// copied together into a buffer that is kept between writes until [`Payload::release`].
#[derive(Debug, Default)]
pub struct Payload {
    lone: Option<Bytes>,
    copied: Vec<u8>,
    frames: usize,
}

impl Payload {
    /// The bytes taken.
    pub fn bytes(&self) -> &[u8] {
        match &self.lone {
            Some(frame) => frame,
            None => &self.copied,
        }
    }

    /// Empties the payload, keeping the copy buffer's memory for the next write.
    pub fn clear(&mut self) {
        self.lone = None;
        self.copied.clear();
        self.frames = 0;
    }

    /// Empties the payload; an idle connection keeps no memory for it. The copy buffer goes
    /// to this thread's spares for the next connection that writes several frames.
    pub fn release(&mut self) {
        let copied = std::mem::take(&mut self.copied);
        *self = Payload::default();
        spare::give(copied);
    }
}

/// Copy buffers of connections that went idle, kept per thread for the next write of several
/// frames: when a batch of sends reaches thousands of connections, each writes a few frames
/// and drains, and would otherwise allocate and free a buffer per write (BENCHMARKS.md, W5).
mod spare {
    use std::cell::RefCell;

    use crate::transport::spares;

    /// Buffers kept per thread at most.
    const BUFFERS: usize = 16;
    /// Larger buffers are freed: a burst's big copies are not kept.
    const MAX_CAPACITY: usize = 64 * 1024;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// A spare buffer (empty), or a new one.
    pub(super) fn take() -> Vec<u8> {
        spares::take(&SPARE).unwrap_or_default()
    }

    /// Keeps `buffer` for a later [`take`] on this thread, or frees it.
    pub(super) fn give(buffer: Vec<u8>) {
        if buffer.capacity() == 0 || buffer.capacity() > MAX_CAPACITY {
            return;
        }
        spares::give(&SPARE, buffer, BUFFERS);
    }
}

impl Collect for Payload {
    fn reserve(&mut self, bytes: usize, frames: usize) {
        if self.frames + frames > 1 {
            if self.copied.capacity() == 0 {
                self.copied = spare::take();
            }
            // One allocation for the copy instead of a doubling series of them.
            self.copied
                .reserve(bytes + self.lone.as_ref().map_or(0, Bytes::len));
        }
    }

    fn add(&mut self, frame: &Bytes) {
        if self.frames == 0 {
            self.lone = Some(frame.clone());
            self.frames = 1;
        } else {
            self.copy(frame);
        }
    }

    fn add_from_run(&mut self, run: &FrameRun, index: usize, frame: &[u8]) {
        if self.frames == 0 && frame.len() >= SHARED_RUN_FRAME {
            // A large frame may be all this write takes (one frame past the batch bound
            // always is): written from the run's block, as a lone frame is from its own.
            self.lone = Some(run.share(index));
            self.frames = 1;
        } else {
            self.copy(frame);
        }
    }
}

impl Payload {
    /// Appends `frame` to the copy, moving a lone frame taken before it there first.
    fn copy(&mut self, frame: &[u8]) {
        // A run's small frame may be the first of a write that `reserve` saw as one frame.
        if self.copied.capacity() == 0 {
            self.copied = spare::take();
        }
        if let Some(first) = self.lone.take() {
            self.copied.extend_from_slice(&first);
        }
        self.copied.extend_from_slice(frame);
        self.frames += 1;
    }
}

/// A byte-bounded, multi-producer, single-consumer queue of outbound frames.
#[derive(Debug)]
pub struct Outbox {
    /// The queue itself. A std mutex: it is held only to push or pop, never across an await.
    state: Mutex<State>,
    /// Wakes the writer when the queue goes from empty to non-empty or closes. There is one
    /// writer at a time (the transport), and a newer writer's registration replaces an older
    /// one's. The writer checks the queue after registering, so a wake-up is never lost; an
    /// `AtomicWaker` costs a delivery no lock, where a `Notify` locks its waiter list both to
    /// register and to wake.
    writer: AtomicWaker,
    /// Whether the writer may find something to take: set before every wake-up of the
    /// writer, cleared under the lock by a take that found nothing. A writer polled with
    /// nothing new then skips the lock: a sender's socket task polls its outbox once per
    /// message it reads, so a busy sender took the lock twice per invocation for nothing.
    ready: AtomicBool,
    /// Wakes producers that wait for room (streams pace themselves on the writer).
    drained: Notify,
    /// Producers inside [`Outbox::wait_for_room`]: the writer wakes `drained` only when there
    /// are some, instead of taking its lock on every write.
    room_waiters: AtomicUsize,
    /// Upper bound of queued bytes before the connection counts as a slow consumer.
    max_buffered_bytes: usize,
    /// Whether frames are binary (MessagePack) rather than text (JSON). Set at the handshake,
    /// read by transports that must choose a frame type (WebSockets).
    binary: AtomicBool,
    /// When the writer last took frames (or the outbox was made), in milliseconds of
    /// [`clock_ms`]: keep-alive pings go only to connections sent nothing for an interval.
    /// Stamped per write, not per push, so a broadcast to thousands costs no clock reads.
    last_write_ms: AtomicU64,
}

/// Encodes the Sequence message announcing the id of the next replayed message.
pub type SequenceEncoder = Box<dyn Fn(u64) -> Bytes + Send + Sync>;

struct Replay {
    /// Sequence id of the next trackable frame the writer takes (trackable frames are
    /// numbered in the order they are pushed, so this is also the id of the first one queued).
    next_write: u64,
    /// Whether each queued frame, in order, is trackable. Kept here rather than in the
    /// queue's slots: a slot of 32 bytes instead of 40 makes a push to a connection whose
    /// queue is out of cache touch fewer lines (BENCHMARKS.md, W5), and only stateful
    /// connections pay for the flags.
    queued: VecDeque<bool>,
    /// Written, not yet acknowledged.
    unacked: VecDeque<(u64, Bytes)>,
    unacked_bytes: usize,
    /// Bound of `unacked_bytes` before the writer waits for Acks.
    limit: usize,
    sequence: SequenceEncoder,
    /// The transport was replaced: announce and replay before anything else.
    resume: bool,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay")
            .field("next_write", &self.next_write)
            .field("unacked", &self.unacked.len())
            .field("unacked_bytes", &self.unacked_bytes)
            .finish_non_exhaustive()
    }
}

/// A queue entry (whether it is trackable is [`Replay::queued`]'s, per slot).
#[derive(Debug)]
enum Slot {
    One(Bytes),
    /// A run's frames from `next` on. Never trackable: with replay on, a run is queued
    /// frame by frame, each numbered.
    Run {
        run: FrameRun,
        next: u32,
    },
}

// A run's slot fits beside a frame's: a push still writes one 32-byte slot (see `Replay`).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    fn messages(&self) -> usize {
        match self {
            Slot::One(_) => 1,
            Slot::Run { run, next } => run.len() - *next as usize,
        }
    }
}

/// The queued frames, in order: the first in place, the rest in a deque. Most connections are
/// sent one message at a time and write it before the next arrives; they never allocate for
/// their queue (a deque's buffer, freed when drained so that idle connections do not keep it,
/// cost such a connection a malloc and a free per message).
#[derive(Debug, Default)]
struct Queue {
    first: Option<Slot>,
    /// Empty while `first` is `None`.
    rest: VecDeque<Slot>,
    /// Messages queued (a run's untaken frames count one each).
    messages: usize,
    /// The most frames `rest` held since it was last drained.
    peak: usize,
}

impl Queue {
    fn is_empty(&self) -> bool {
        self.first.is_none()
    }

    fn slots(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn front_mut(&mut self) -> Option<&mut Slot> {
        self.first.as_mut()
    }

    fn push_back(&mut self, frame: Slot) {
        self.messages += frame.messages();
        if self.first.is_none() {
            self.first = Some(frame);
        } else {
            self.rest.push_back(frame);
            self.peak = self.peak.max(self.rest.len());
        }
    }

    /// Removes the front slot, whose messages the caller has taken (`messages` is kept by
    /// whoever takes them).
    fn pop_front(&mut self) -> Option<Slot> {
        let first = self.first.take();
        self.first = self.rest.pop_front();
        first
    }

    /// Drop every frame and the buffer (the connection is over).
    fn clear(&mut self) {
        *self = Queue::default();
    }

    /// Once `rest` is drained: an idle connection keeps no buffer ([`release_if_drained`]); a
    /// busy one keeps what its traffic since the last drain needed, so that it does not
    /// allocate per write, but not what a burst long over needed. A buffer of more than 64
    /// slots and four times the depth since the last drain shrinks to that depth: after a
    /// burst to many connections, each gives its grown buffer back as soon as its traffic
    /// calms down (this and the socket task's batch buffer: ≈ 18 KB per connection of 10 k
    /// after W5's 10 × 1 k past saturation).
    fn release_if_drained(&mut self) {
        if !self.rest.is_empty() {
            return;
        }
        let peak = std::mem::take(&mut self.peak);
        // Only a buffer grown well past everyday depths, so that traffic that merely varies
        // does not reallocate.
        if self.rest.capacity() > 64 && peak.saturating_mul(4) < self.rest.capacity() {
            self.rest.shrink_to(peak);
        }
        release_if_drained(&mut self.rest);
    }
}

#[derive(Debug, Default)]
struct State {
    frames: Queue,
    /// Sum of the lengths of `frames`.
    bytes: usize,
    /// No more frames are accepted; the writer drains what is left and stops.
    closed: bool,
    /// Sent instead of the queue when the queue overflows.
    overflow_frame: Option<Bytes>,
    /// The overflow policy already fired (counted once).
    overflowed: bool,
    /// Stateful reconnect, when on. Boxed: most connections never turn it on, and every
    /// push reads the queue's state, which then fits in fewer cache lines.
    replay: Option<Box<Replay>>,
}

impl Outbox {
    /// A new outbox holding at most `max_buffered_bytes` of queued frames.
    pub fn new(max_buffered_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            writer: AtomicWaker::new(),
            ready: AtomicBool::new(false),
            drained: Notify::new(),
            room_waiters: AtomicUsize::new(0),
            max_buffered_bytes,
            binary: AtomicBool::new(false),
            last_write_ms: AtomicU64::new(clock_ms()),
        }
    }

    /// Reads the queue's lock word with a plain load, so that a push soon after finds it in
    /// cache. Used to walk many connections: plain loads of several outboxes overlap, while
    /// each push's locked instructions wait for every load before them.
    pub fn warm(&self) {
        std::hint::black_box(self.state.is_poisoned());
    }

    /// When the writer last took frames to write, or when the outbox was made if it never
    /// did (to the millisecond, rounded down).
    pub fn last_write(&self) -> Instant {
        clock_epoch() + Duration::from_millis(self.last_write_ms.load(Ordering::Relaxed))
    }

    fn stamp_write(&self) {
        self.last_write_ms.store(clock_ms(), Ordering::Relaxed);
    }

    /// Queue a frame: a trackable message (numbered when replay is on). Never waits.
    /// Returns the bytes queued once the frame is in: how far the writer is behind.
    pub fn push(&self, frame: Bytes) -> Result<usize, PushError> {
        self.push_frame(frame, true)
    }

    /// Queue a frame that is not a trackable message (Ping, Ack, Sequence). Never waits.
    pub fn push_untracked(&self, frame: Bytes) -> Result<(), PushError> {
        self.push_frame(frame, false).map(drop)
    }

    /// Queue a run's frames, trackable, in order, under one lock: what a member of a group
    /// gets from a batch of sends to it (see `lifetime::memory`). The bound applies to them
    /// together, as to one frame: into an empty queue they always go.
    pub(crate) fn push_run(&self, run: &FrameRun) -> Result<usize, PushError> {
        self.push_frames(run.bytes(), run.len(), true, |queue, numbered| {
            if numbered {
                // Each frame gets its own slot and sequence id (and is kept on its own until
                // acknowledged).
                for frame in run.frames() {
                    queue.push_back(Slot::One(Bytes::copy_from_slice(frame)));
                }
            } else {
                queue.push_back(Slot::Run {
                    run: run.clone(),
                    next: 0,
                });
            }
        })
    }

    fn push_frame(&self, frame: Bytes, tracked: bool) -> Result<usize, PushError> {
        self.push_frames(frame.len(), 1, tracked, |queue, _| {
            queue.push_back(Slot::One(frame));
        })
    }

    /// Queue `count` frames (`bytes` long together) under one lock: `insert` puts them in
    /// the queue, one slot per frame when replay is on (its second argument).
    fn push_frames(
        &self,
        bytes: usize,
        count: usize,
        tracked: bool,
        insert: impl FnOnce(&mut Queue, bool),
    ) -> Result<usize, PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.bytes + bytes > self.max_buffered_bytes && !state.frames.is_empty() {
            // Keep at least one push acceptable whatever its size, so a single large message
            // to an idle connection is never mistaken for a slow consumer.
            return Err(self.overflow(state));
        }
        let was_empty = state.frames.is_empty();
        // For the sender's pacing: a push behind frames the writer has not taken yet.
        crate::backlog::note_push(!was_empty, count);
        if let Some(replay) = state.replay.as_mut() {
            replay.queued.extend(std::iter::repeat_n(tracked, count));
        }
        state.bytes += bytes;
        let queued = state.bytes;
        let numbered = state.replay.is_some();
        insert(&mut state.frames, numbered);
        drop(state);
        if was_empty && count > 0 {
            self.wake_writer();
        }
        Ok(queued)
    }

    /// The slow-consumer policy: drop what is queued, leave only the overflow frame, close.
    fn overflow(&self, mut state: std::sync::MutexGuard<'_, State>) -> PushError {
        state.frames.clear();
        state.bytes = 0;
        // Nothing will be replayed: the connection is over.
        state.replay = None;
        if let Some(close) = state.overflow_frame.take() {
            state.bytes = close.len();
            state.frames.push_back(Slot::One(close));
        }
        state.closed = true;
        state.overflowed = true;
        drop(state);
        self.wake_writer();
        PushError::Full
    }

    /// Turn replay on (stateful reconnect): trackable frames pushed from now on are numbered
    /// from 1 and kept until acknowledged; `limit` bounds the unacknowledged bytes.
    pub fn enable_replay(&self, limit: usize, sequence: SequenceEncoder) {
        let mut state = self.lock();
        // What is already queued was pushed before: not trackable.
        let queued = state.frames.slots();
        state.replay = Some(Box::new(Replay {
            next_write: 1,
            queued: std::iter::repeat_n(false, queued).collect(),
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            limit,
            sequence,
            resume: false,
        }));
    }

    /// Whether replay is on: the connection may outlive its transport.
    pub fn replay_enabled(&self) -> bool {
        let state = self.lock();
        state.replay.is_some() && !state.closed
    }

    /// The client acknowledged every trackable message up to `sequence_id`.
    pub fn ack(&self, sequence_id: u64) {
        let mut state = self.lock();
        let Some(replay) = state.replay.as_mut() else {
            return;
        };
        let mut freed = false;
        while let Some((seq, frame)) = replay.unacked.front() {
            if *seq > sequence_id {
                break;
            }
            replay.unacked_bytes -= frame.len();
            replay.unacked.pop_front();
            freed = true;
        }
        let waiting = !state.frames.is_empty();
        drop(state);
        if freed && waiting {
            // The writer may have stopped at the replay bound.
            self.wake_writer();
        }
    }

    /// A new transport took over: its first batch starts with a Sequence message and every
    /// unacknowledged frame.
    pub fn resume(&self) {
        let mut state = self.lock();
        if let Some(replay) = state.replay.as_mut() {
            replay.resume = true;
        }
        drop(state);
        self.wake_writer();
    }

    /// Unacknowledged trackable frames held for replay (count, bytes).
    pub fn unacknowledged(&self) -> (usize, usize) {
        self.lock()
            .replay
            .as_ref()
            .map_or((0, 0), |r| (r.unacked.len(), r.unacked_bytes))
    }

    /// Queue a last frame (usually a hub `Close` message) and close the outbox: the writer
    /// sends what is queued, then this frame, then ends the transport.
    pub fn close_with(&self, last_frame: Option<Bytes>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if let Some(frame) = last_frame {
            state.bytes += frame.len();
            if let Some(replay) = state.replay.as_mut() {
                replay.queued.push_back(false);
            }
            state.frames.push_back(Slot::One(frame));
        }
        state.closed = true;
        drop(state);
        self.wake_writer();
    }

    /// Close the outbox without a last frame.
    pub fn close(&self) {
        self.close_with(None);
    }

    /// Close and drop whatever is still queued: the transport is gone and nobody will read it.
    pub fn abandon(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.frames.clear();
        state.bytes = 0;
        state.replay = None;
        drop(state);
        self.wake_writer();
        self.wake_producers();
    }

    /// The most bytes that may be queued.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }

    /// Wait until at most `bytes` are queued (or the outbox is closed). A producer that can
    /// wait (a stream) uses this to go at the pace of the client instead of overflowing the
    /// queue.
    pub async fn wait_for_room(&self, bytes: usize) {
        self.room_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = RoomWaiter(&self.room_waiters);
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            {
                let state = self.lock();
                if state.bytes <= bytes || state.closed {
                    return;
                }
            }
            drained.await;
        }
    }

    /// Ready once the outbox is closed; until then the caller is woken when it closes (or,
    /// spuriously, when a frame arrives in an empty queue). For a writer stuck in a write,
    /// which does not ask for frames meanwhile but must learn that the connection is ending.
    pub fn poll_closed(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.writer.register(cx.waker());
        if self.lock().closed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether no more frames are accepted.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether the slow-consumer policy closed this outbox.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Bytes currently queued.
    pub fn buffered_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Bytes and messages currently queued (a run's untaken frames count one each).
    pub(crate) fn queued(&self) -> (usize, usize) {
        let state = self.lock();
        (state.bytes, state.frames.messages)
    }

    /// Register the frame sent in place of the queue when it overflows.
    pub fn set_overflow_frame(&self, frame: Bytes) {
        self.lock().overflow_frame = Some(frame);
    }

    /// Mark frames as binary (MessagePack) or text (JSON).
    pub fn set_binary(&self, binary: bool) {
        self.binary.store(binary, Ordering::Relaxed);
    }

    /// Whether frames are binary.
    pub fn is_binary(&self) -> bool {
        self.binary.load(Ordering::Relaxed)
    }

    /// Wait until frames are queued or the outbox is closed, then append up to `max_bytes`
    /// of queued frames to `out` (always at least one frame, whatever its size).
    ///
    /// Cancel safe: frames are only taken in the same poll that returns them.
    pub async fn next_batch(&self, out: &mut BytesMut, max_bytes: usize) -> Batch {
        self.next_counted_batch(out, max_bytes).await.0
    }

    /// [`Outbox::next_batch`], also saying how many frames (hub messages) the batch holds:
    /// the transports count messages per write, not per push.
    pub(crate) async fn next_counted_batch(
        &self,
        out: &mut BytesMut,
        max_bytes: usize,
    ) -> (Batch, usize) {
        self.writer_wait(|outbox| outbox.take(out, max_bytes)).await
    }

    /// Like [`Outbox::next_batch`], but takes the frames into a [`Payload`]: a lone queued
    /// frame is handed over as it is, several are copied together. Replay works as with
    /// [`Outbox::next_batch`] (after a resume, the Sequence message and the unacknowledged
    /// frames come first). `out` must be empty ([`Payload::clear`]).
    ///
    /// Cancel safe: frames are only taken in the same poll that returns them.
    pub fn poll_payload(
        &self,
        cx: &mut Context<'_>,
        out: &mut Payload,
        max_bytes: usize,
    ) -> Poll<(Batch, usize)> {
        self.poll_attempt(cx, |outbox| outbox.take(out, max_bytes))
    }

    /// [`Outbox::poll_payload`] without waiting: `None` when nothing is queued and the outbox
    /// is still open.
    pub fn try_next_payload(&self, out: &mut Payload, max_bytes: usize) -> Option<Batch> {
        self.take(out, max_bytes).map(|(batch, _)| batch)
    }

    /// Resolves with the first `Some` of `attempt`, asked again whenever the writer is woken.
    async fn writer_wait<T>(&self, mut attempt: impl FnMut(&Outbox) -> Option<T>) -> T {
        std::future::poll_fn(|cx| self.poll_attempt(cx, &mut attempt)).await
    }

    /// One poll of [`Outbox::writer_wait`].
    fn poll_attempt<T>(
        &self,
        cx: &mut Context<'_>,
        mut attempt: impl FnMut(&Outbox) -> Option<T>,
    ) -> Poll<T> {
        if self.may_have_work()
            && let Some(found) = attempt(self)
        {
            return Poll::Ready(found);
        }
        self.writer.register(cx.waker());
        // Pushed between the first look and the registration: that push's wake-up may have
        // gone to the previous waker.
        if !self.may_have_work() {
            return Poll::Pending;
        }
        match attempt(self) {
            Some(found) => Poll::Ready(found),
            None => Poll::Pending,
        }
    }

    /// Whether a take could find something: false only while nothing happened since a take
    /// found nothing (see [`Outbox::ready`]).
    pub(crate) fn may_have_work(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Wakes the writer after a change a take would act on (frames queued into an empty
    /// queue, room in the replay bound, a resume, the close).
    fn wake_writer(&self) {
        // Before the wake-up: a writer that registers after it still sees the flag set.
        self.ready.store(true, Ordering::SeqCst);
        self.writer.wake();
    }

    /// Wakes producers waiting for room, if there are any.
    fn wake_producers(&self) {
        // Pairs with the increment in `wait_for_room`, which comes before the waiter looks at
        // the queue under the lock: a waiter that saw the queue too full is counted here.
        if self.room_waiters.load(Ordering::SeqCst) > 0 {
            self.drained.notify_waiters();
        }
    }

    /// [`Outbox::next_batch`] without waiting: `None` when nothing is queued and the outbox is
    /// still open.
    pub fn try_next_batch(&self, out: &mut BytesMut, max_bytes: usize) -> Option<Batch> {
        self.take(out, max_bytes).map(|(batch, _)| batch)
    }

    fn take(&self, out: &mut impl Collect, max_bytes: usize) -> Option<(Batch, usize)> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = 0;
        let mut frames = 0;
        if let Some(replay) = state.replay.as_mut()
            && replay.resume
        {
            replay.resume = false;
            let first = replay
                .unacked
                .front()
                .map_or(replay.next_write, |(seq, _)| *seq);
            out.add(&(replay.sequence)(first));
            for (_, frame) in &replay.unacked {
                out.add(frame);
            }
            frames = 1 + replay.unacked.len();
            taken = 1;
        }
        let resent = frames;
        // A batch always takes its first frame, whatever its size.
        let over_bound = |taken: usize, frame: &[u8]| taken > 0 && taken + frame.len() > max_bytes;
        // One allocation for the batch instead of a doubling series of them.
        out.reserve(state.bytes.min(max_bytes), state.frames.messages);
        let mut dequeued = 0;
        while let Some(slot) = state.frames.front_mut() {
            let tracked = state
                .replay
                .as_ref()
                .is_some_and(|replay| replay.queued.front() == Some(&true));
            match slot {
                Slot::One(frame) => {
                    if over_bound(taken, frame) {
                        break;
                    }
                    if tracked
                        && let Some(replay) = state.replay.as_ref()
                        && !replay.unacked.is_empty()
                        && replay.unacked_bytes + frame.len() > replay.limit
                    {
                        // The replay buffer is full: wait for the client's Acks (`ack` wakes
                        // us).
                        break;
                    }
                }
                Slot::Run { run, next } => {
                    // Untracked (see `Slot::Run`): only the batch bound stops it part way.
                    while let Some(frame) = run.frame(*next as usize) {
                        if over_bound(taken, frame) {
                            break;
                        }
                        taken += frame.len();
                        dequeued += frame.len();
                        frames += 1;
                        out.add_from_run(run, *next as usize, frame);
                        *next += 1;
                    }
                    if (*next as usize) < run.len() {
                        break;
                    }
                }
            }
            let Some(slot) = state.frames.pop_front() else {
                break;
            };
            if let Some(replay) = state.replay.as_mut() {
                replay.queued.pop_front();
            }
            let Slot::One(frame) = slot else {
                continue;
            };
            taken += frame.len();
            dequeued += frame.len();
            frames += 1;
            out.add(&frame);
            if tracked && let Some(replay) = state.replay.as_mut() {
                let seq = replay.next_write;
                replay.next_write += 1;
                replay.unacked_bytes += frame.len();
                replay.unacked.push_back((seq, frame));
            }
        }
        if taken == 0 {
            let closed = state.frames.is_empty() && state.closed;
            if !closed {
                // Under the lock, so a push after this look sets the flag again.
                self.ready.store(false, Ordering::SeqCst);
            }
            return closed.then_some((Batch::Closed, 0));
        }
        state.bytes -= dequeued;
        // The Sequence message and replayed frames were not queued.
        state.frames.messages -= frames - resent;
        state.frames.release_if_drained();
        self.wake_producers();
        self.stamp_write();
        Some((Batch::Frames, frames))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update
        // is a single push/pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The instant [`clock_ms`] counts from: the first time any outbox asked. Tokio's clock, so
/// that tests with paused time see pings follow it.
fn clock_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds since [`clock_epoch`].
fn clock_ms() -> u64 {
    let epoch = clock_epoch();
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// Counts a producer out of [`Outbox::wait_for_room`] however it leaves (also when dropped).
struct RoomWaiter<'a>(&'a AtomicUsize);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Most slots a drained queue's buffer may have to be freed.
const SMALL_QUEUE: usize = 8;

/// Frees a drained queue's small buffer. An idle connection drains its queue after every
/// keep-alive ping; keeping the few slots allocated would cost every idle connection their
/// bytes for its whole life, while a busy connection's grown buffer is kept.
pub(super) fn release_if_drained<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() <= SMALL_QUEUE {
        *queue = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Context;

    fn frame(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[tokio::test]
    async fn batches_everything_queued_into_one_write() {
        let outbox = Outbox::new(1024);
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        outbox.push(frame("c")).unwrap();
        let mut out = BytesMut::new();
        assert_eq!(outbox.next_batch(&mut out, 1024).await, Batch::Frames);
        assert_eq!(&out[..], b"abc");
        assert_eq!(outbox.buffered_bytes(), 0);
    }

    #[tokio::test]
    async fn batch_size_is_bounded_but_never_empty() {
        let outbox = Outbox::new(1024);
        outbox.push(frame("aaaa")).unwrap();
        outbox.push(frame("bbbb")).unwrap();
        let mut out = BytesMut::new();
        outbox.next_batch(&mut out, 2).await;
        assert_eq!(&out[..], b"aaaa");
        out.clear();
        outbox.next_batch(&mut out, 2).await;
        assert_eq!(&out[..], b"bbbb");
    }

    #[tokio::test]
    async fn overflow_drops_the_queue_and_sends_only_the_overflow_frame() {
        let outbox = Outbox::new(8);
        outbox.set_overflow_frame(frame("CLOSE"));
        outbox.push(frame("12345")).unwrap();
        assert_eq!(outbox.push(frame("67890")), Err(PushError::Full));
        assert_eq!(outbox.push(frame("x")), Err(PushError::Closed));
        assert!(outbox.overflowed());
        let mut out = BytesMut::new();
        assert_eq!(outbox.next_batch(&mut out, 1024).await, Batch::Frames);
        assert_eq!(&out[..], b"CLOSE");
        assert_eq!(outbox.next_batch(&mut out, 1024).await, Batch::Closed);
    }

    #[tokio::test]
    async fn one_large_frame_to_an_idle_connection_is_accepted() {
        let outbox = Outbox::new(4);
        outbox.push(frame("larger than the bound")).unwrap();
        assert!(!outbox.overflowed());
    }

    #[tokio::test]
    async fn close_with_drains_then_reports_closed() {
        let outbox = Outbox::new(64);
        outbox.push(frame("a")).unwrap();
        outbox.close_with(Some(frame("z")));
        assert_eq!(outbox.push(frame("b")), Err(PushError::Closed));
        let mut out = BytesMut::new();
        assert_eq!(outbox.next_batch(&mut out, 64).await, Batch::Frames);
        assert_eq!(&out[..], b"az");
        assert_eq!(outbox.next_batch(&mut out, 64).await, Batch::Closed);
    }

    #[tokio::test]
    async fn producers_wait_for_room() {
        let outbox = std::sync::Arc::new(Outbox::new(1024));
        outbox.push(frame("0123456789")).unwrap();
        let producer = {
            let outbox = outbox.clone();
            tokio::spawn(async move { outbox.wait_for_room(4).await })
        };
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        let mut out = BytesMut::new();
        outbox.next_batch(&mut out, 1024).await;
        tokio::time::timeout(std::time::Duration::from_secs(5), producer)
            .await
            .expect("producer woke")
            .unwrap();
    }

    fn sequence() -> SequenceEncoder {
        Box::new(|id| Bytes::from(format!("[S{id}]")))
    }

    fn drain(outbox: &Outbox) -> String {
        let mut out = BytesMut::new();
        outbox.try_next_batch(&mut out, usize::MAX);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn replay_resends_what_was_not_acknowledged_after_a_sequence() {
        let outbox = Outbox::new(1024);
        outbox.enable_replay(1024, sequence());
        outbox.push(frame("a")).unwrap();
        outbox.push_untracked(frame("p")).unwrap();
        outbox.push(frame("b")).unwrap();
        outbox.push(frame("c")).unwrap();
        assert_eq!(drain(&outbox), "apbc");
        outbox.ack(1);
        assert_eq!(outbox.unacknowledged(), (2, 2));
        // The transport drops; more is sent meanwhile; a new transport resumes.
        outbox.push(frame("d")).unwrap();
        outbox.resume();
        assert_eq!(drain(&outbox), "[S2]bcd");
        outbox.ack(4);
        assert_eq!(outbox.unacknowledged(), (0, 0));
        outbox.resume();
        // Nothing unacknowledged: the Sequence names the next message.
        assert_eq!(drain(&outbox), "[S5]");
    }

    #[test]
    fn frames_queued_before_replay_is_on_are_not_tracked() {
        let outbox = Outbox::new(1024);
        outbox.push(frame("h")).unwrap();
        outbox.enable_replay(1024, sequence());
        outbox.push(frame("a")).unwrap();
        outbox.close_with(Some(frame("z")));
        assert_eq!(drain(&outbox), "haz");
        assert_eq!(outbox.unacknowledged(), (1, 1));
    }

    #[test]
    fn a_full_replay_buffer_holds_trackable_frames_until_acked() {
        let outbox = Outbox::new(1024);
        outbox.enable_replay(4, sequence());
        outbox.push(frame("aaa")).unwrap();
        outbox.push(frame("bbb")).unwrap();
        assert_eq!(drain(&outbox), "aaa");
        assert_eq!(drain(&outbox), "");
        outbox.ack(1);
        assert_eq!(drain(&outbox), "bbb");
    }

    fn run(frames: &[&str]) -> FrameRun {
        FrameRun::collect(frames.len(), frames.iter().map(|f| Some(f.as_bytes()))).unwrap()
    }

    fn take_counted(outbox: &Outbox, max_bytes: usize) -> (String, usize) {
        let mut out = Payload::default();
        let frames = match outbox.take(&mut out, max_bytes) {
            Some((Batch::Frames, frames)) => frames,
            _ => 0,
        };
        (String::from_utf8(out.bytes().to_vec()).unwrap(), frames)
    }

    #[test]
    fn a_run_is_one_slot_taken_in_order_with_single_frames_and_split_at_the_batch_bound() {
        let outbox = Outbox::new(1024);
        outbox.push(frame("a")).unwrap();
        assert_eq!(outbox.push_run(&run(&["bb", "cc", "dd"])).unwrap(), 7);
        outbox.push(frame("e")).unwrap();
        assert_eq!(outbox.lock().frames.slots(), 3);
        assert_eq!(outbox.queued(), (8, 5));
        // The bound falls inside the run: the rest of it stays first in the queue.
        assert_eq!(take_counted(&outbox, 4), ("abb".to_string(), 2));
        assert_eq!(outbox.queued(), (5, 3));
        assert_eq!(take_counted(&outbox, 4), ("ccdd".to_string(), 2));
        assert_eq!(take_counted(&outbox, 4), ("e".to_string(), 1));
        assert_eq!(outbox.queued(), (0, 0));
        assert_eq!(take_counted(&outbox, 4), (String::new(), 0));
    }

    #[test]
    fn a_run_counts_against_the_slow_consumer_bound_as_a_whole() {
        let outbox = Outbox::new(6);
        outbox.set_overflow_frame(frame("CLOSE"));
        // Into an empty queue a run always goes, whatever its size.
        outbox.push_run(&run(&["aaaa", "bbbb"])).unwrap();
        assert_eq!(
            outbox.push_run(&run(&["c"])),
            Err(PushError::Full),
            "8 + 1 bytes queued against a bound of 6"
        );
        assert_eq!(drain(&outbox), "CLOSE");
    }

    #[test]
    fn with_replay_a_run_is_queued_frame_by_frame_and_numbered() {
        let outbox = Outbox::new(1024);
        outbox.push_run(&run(&["h", "i"])).unwrap();
        outbox.enable_replay(1024, sequence());
        outbox.push_run(&run(&["a", "b"])).unwrap();
        outbox.push(frame("c")).unwrap();
        assert_eq!(drain(&outbox), "hiabc");
        // The run queued before replay was on is not tracked; the later one is, per frame.
        assert_eq!(outbox.unacknowledged(), (3, 3));
        outbox.ack(1);
        outbox.resume();
        assert_eq!(drain(&outbox), "[S2]bc");
    }

    #[test]
    fn a_large_frame_of_a_run_alone_in_its_write_is_not_copied_and_small_ones_are() {
        let large = "x".repeat(SHARED_RUN_FRAME);
        let made = run(&[&large, &large, "a", "b"]);
        let first = made.frame(0).unwrap().as_ptr();
        let second = made.frame(1).unwrap().as_ptr();
        let outbox = Outbox::new(1 << 20);
        outbox.push_run(&made).unwrap();
        drop(made);
        // A batch bound below one large frame: each goes in a write of its own.
        let mut taken = Payload::default();
        for expected in [first, second] {
            assert_eq!(
                outbox.try_next_payload(&mut taken, 1024),
                Some(Batch::Frames)
            );
            assert_eq!(
                taken.bytes().as_ptr(),
                expected,
                "written from the run's block"
            );
            assert_eq!(taken.bytes(), large.as_bytes());
            taken.clear();
        }
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1024),
            Some(Batch::Frames)
        );
        assert_eq!(taken.bytes(), b"ab");
        taken.clear();
        // A large frame after a small one in the same write is copied with it.
        outbox.push_run(&run(&["a", &large])).unwrap();
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1 << 20),
            Some(Batch::Frames)
        );
        assert_eq!(taken.bytes().len(), 1 + large.len());
        assert_eq!(&taken.bytes()[..1], b"a");
    }

    #[test]
    fn a_lone_frame_is_taken_without_a_copy_and_several_are_copied_together() {
        let outbox = Outbox::new(1024);
        let shared = frame("broadcast");
        outbox.push(shared.clone()).unwrap();
        let mut taken = Payload::default();
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1024),
            Some(Batch::Frames)
        );
        assert_eq!(taken.bytes().as_ptr(), shared.as_ptr());
        taken.clear();
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        outbox.push(frame("c")).unwrap();
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1024),
            Some(Batch::Frames)
        );
        assert_eq!(taken.bytes(), b"abc");
        assert_eq!(outbox.buffered_bytes(), 0);
        taken.clear();
        assert_eq!(outbox.try_next_payload(&mut taken, 1024), None);
        outbox.close();
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1024),
            Some(Batch::Closed)
        );
        assert_eq!(taken.bytes(), b"");
    }

    #[test]
    fn a_released_copy_buffer_serves_the_next_payload_on_the_thread() {
        let outbox = Outbox::new(1024);
        let mut first = Payload::default();
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        assert_eq!(
            outbox.try_next_payload(&mut first, 1024),
            Some(Batch::Frames)
        );
        let buffer = first.bytes().as_ptr();
        first.release();
        // Were the buffer freed, this allocation of its size would most likely get its memory.
        let other: Vec<u8> = Vec::with_capacity(2);
        // Another connection's payload on this thread takes the released buffer.
        let mut second = Payload::default();
        outbox.push(frame("c")).unwrap();
        outbox.push(frame("d")).unwrap();
        assert_eq!(
            outbox.try_next_payload(&mut second, 1024),
            Some(Batch::Frames)
        );
        assert_eq!(second.bytes(), b"cd");
        assert_eq!(second.bytes().as_ptr(), buffer);
        drop(other);
    }

    #[test]
    fn payloads_are_bounded_in_bytes_and_replayed_after_a_resume() {
        let outbox = Outbox::new(1024);
        outbox.enable_replay(1024, sequence());
        for text in ["aa", "bb", "cc"] {
            outbox.push(frame(text)).unwrap();
        }
        let mut taken = Payload::default();
        assert_eq!(outbox.try_next_payload(&mut taken, 4), Some(Batch::Frames));
        assert_eq!(taken.bytes(), b"aabb");
        taken.clear();
        outbox.ack(1);
        outbox.resume();
        assert_eq!(
            outbox.try_next_payload(&mut taken, 1024),
            Some(Batch::Frames)
        );
        assert_eq!(taken.bytes(), b"[S2]bbcc");
        taken.release();
        assert_eq!(outbox.try_next_payload(&mut taken, 1024), None);
    }

    /// Queue `n` frames, then write everything.
    fn burst(outbox: &Outbox, n: usize) {
        for _ in 0..n {
            outbox.push(frame("x")).unwrap();
        }
        let mut taken = Payload::default();
        while outbox.buffered_bytes() > 0 {
            assert!(outbox.try_next_payload(&mut taken, 1 << 20).is_some());
            taken.clear();
        }
    }

    #[test]
    fn a_burst_buffer_is_kept_while_needed_and_given_back_after() {
        let outbox = Outbox::new(usize::MAX);
        let capacity = || outbox.lock().frames.rest.capacity();
        burst(&outbox, 1000);
        let grown = capacity();
        assert!(grown >= 999, "the deque grew to the burst: {grown}");
        // Traffic of the same depth keeps it, rather than allocating again.
        burst(&outbox, 1000);
        assert_eq!(capacity(), grown);
        burst(&outbox, 300);
        assert_eq!(capacity(), grown);
        // The burst is over: the next drain gives the buffer back.
        burst(&outbox, 2);
        assert_eq!(capacity(), 0);
    }

    #[tokio::test]
    async fn a_waiting_writer_wakes_on_push() {
        let outbox = std::sync::Arc::new(Outbox::new(64));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut out = BytesMut::new();
                outbox.next_batch(&mut out, 64).await;
                out
            })
        };
        tokio::task::yield_now().await;
        outbox.push(frame("hi")).unwrap();
        let out = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("writer woke")
            .unwrap();
        assert_eq!(&out[..], b"hi");
    }

    #[test]
    fn a_newer_writer_is_the_one_woken() {
        // A stateful connection's new socket starts waiting while the old one may still be
        // registered: the push must wake the new one.
        let outbox = Outbox::new(64);
        let (mut old_out, mut new_out) = (BytesMut::new(), BytesMut::new());
        let mut old = Box::pin(outbox.next_batch(&mut old_out, 64));
        let mut new = Box::pin(outbox.next_batch(&mut new_out, 64));
        let old_woken = std::sync::Arc::new(Woken::default());
        let new_woken = std::sync::Arc::new(Woken::default());
        let old_waker = std::task::Waker::from(old_woken.clone());
        let new_waker = std::task::Waker::from(new_woken.clone());
        assert!(
            old.as_mut()
                .poll(&mut Context::from_waker(&old_waker))
                .is_pending()
        );
        assert!(
            new.as_mut()
                .poll(&mut Context::from_waker(&new_waker))
                .is_pending()
        );
        outbox.push(frame("hi")).unwrap();
        assert!(new_woken.0.load(Ordering::SeqCst));
        assert!(!old_woken.0.load(Ordering::SeqCst));
        let polled = new.as_mut().poll(&mut Context::from_waker(&new_waker));
        assert_eq!(polled, Poll::Ready(Batch::Frames));
        drop(new);
        assert_eq!(&new_out[..], b"hi");
    }

    /// A writer that found nothing skips the queue until something changes; every change it
    /// would act on wakes it and is found on the next poll.
    #[test]
    fn a_writer_that_found_nothing_is_woken_by_each_change_it_would_act_on() {
        fn poll(outbox: &Outbox, woken: &std::sync::Arc<Woken>) -> (Poll<Batch>, String) {
            woken.0.store(false, Ordering::SeqCst);
            let waker = std::task::Waker::from(woken.clone());
            let mut out = Payload::default();
            let polled = outbox.poll_payload(&mut Context::from_waker(&waker), &mut out, 64);
            let bytes = String::from_utf8(out.bytes().to_vec()).unwrap();
            (polled.map(|(batch, _)| batch), bytes)
        }
        let nothing = (Poll::Pending, String::new());
        let taken = |batch, bytes: &str| (Poll::Ready(batch), bytes.to_string());
        let outbox = Outbox::new(1024);
        outbox.enable_replay(4, sequence());
        let woken = std::sync::Arc::new(Woken::default());
        let was_woken = || woken.0.load(Ordering::SeqCst);
        assert_eq!(poll(&outbox, &woken), nothing);
        assert_eq!(poll(&outbox, &woken), nothing);
        // Frames into an empty queue.
        outbox.push(frame("aaa")).unwrap();
        assert!(was_woken());
        assert_eq!(poll(&outbox, &woken), taken(Batch::Frames, "aaa"));
        // Held at the replay bound: nothing to take until the Ack makes room.
        outbox.push(frame("bbb")).unwrap();
        assert_eq!(poll(&outbox, &woken), nothing);
        assert_eq!(poll(&outbox, &woken), nothing);
        outbox.ack(1);
        assert!(was_woken());
        assert_eq!(poll(&outbox, &woken), taken(Batch::Frames, "bbb"));
        assert_eq!(poll(&outbox, &woken), nothing);
        // A new transport resumes: the Sequence message and the unacknowledged frame.
        outbox.resume();
        assert!(was_woken());
        assert_eq!(poll(&outbox, &woken), taken(Batch::Frames, "[S2]bbb"));
        assert_eq!(poll(&outbox, &woken), nothing);
        // The close.
        outbox.close();
        assert!(was_woken());
        assert_eq!(poll(&outbox, &woken), taken(Batch::Closed, ""));
    }

    #[derive(Default)]
    struct Woken(AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
