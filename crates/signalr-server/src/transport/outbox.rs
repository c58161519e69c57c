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

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

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

/// A byte-bounded, multi-producer, single-consumer queue of outbound frames.
#[derive(Debug)]
pub struct Outbox {
    /// The queue itself. A std mutex: it is held only to push or pop, never across an await.
    state: Mutex<State>,
    /// Wakes the writer when the queue goes from empty to non-empty or closes.
    notify: Notify,
    /// Wakes producers that wait for room (streams pace themselves on the writer).
    drained: Notify,
    /// Upper bound of queued bytes before the connection counts as a slow consumer.
    max_buffered_bytes: usize,
    /// Whether frames are binary (MessagePack) rather than text (JSON). Set at the handshake,
    /// read by transports that must choose a frame type (WebSockets).
    binary: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Sum of the lengths of `frames`.
    bytes: usize,
    /// No more frames are accepted; the writer drains what is left and stops.
    closed: bool,
    /// Sent instead of the queue when the queue overflows.
    overflow_frame: Option<Bytes>,
    /// The overflow policy already fired (counted once).
    overflowed: bool,
}

impl Outbox {
    /// A new outbox holding at most `max_buffered_bytes` of queued frames.
    pub fn new(max_buffered_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            drained: Notify::new(),
            max_buffered_bytes,
            binary: AtomicBool::new(false),
        }
    }

    /// Queue a frame. Never waits.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        if state.bytes + frame.len() > self.max_buffered_bytes && !state.frames.is_empty() {
            // Keep at least one frame acceptable whatever its size, so a single large message
            // to an idle connection is never mistaken for a slow consumer.
            state.frames.clear();
            state.bytes = 0;
            if let Some(close) = state.overflow_frame.take() {
                state.bytes = close.len();
                state.frames.push_back(close);
            }
            state.closed = true;
            state.overflowed = true;
            drop(state);
            self.notify.notify_one();
            return Err(PushError::Full);
        }
        let was_empty = state.frames.is_empty();
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        if was_empty {
            self.notify.notify_one();
        }
        Ok(())
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
            state.frames.push_back(frame);
        }
        state.closed = true;
        drop(state);
        self.notify.notify_one();
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
        drop(state);
        self.notify.notify_one();
        self.drained.notify_waiters();
    }

    /// The most bytes that may be queued.
    pub fn max_buffered_bytes(&self) -> usize {
        self.max_buffered_bytes
    }

    /// Wait until at most `bytes` are queued (or the outbox is closed). A producer that can
    /// wait (a stream) uses this to go at the pace of the client instead of overflowing the
    /// queue.
    pub async fn wait_for_room(&self, bytes: usize) {
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
        loop {
            let notified = self.notify.notified();
            if let Some(batch) = self.try_next_batch(out, max_bytes) {
                return batch;
            }
            notified.await;
        }
    }

    /// [`Outbox::next_batch`] without waiting: `None` when nothing is queued and the outbox is
    /// still open.
    pub fn try_next_batch(&self, out: &mut BytesMut, max_bytes: usize) -> Option<Batch> {
        let mut state = self.lock();
        if state.frames.is_empty() {
            return state.closed.then_some(Batch::Closed);
        }
        let mut taken = 0;
        while let Some(frame) = state.frames.front() {
            if taken > 0 && taken + frame.len() > max_bytes {
                break;
            }
            let frame = state.frames.pop_front().unwrap_or_default();
            taken += frame.len();
            out.extend_from_slice(&frame);
        }
        state.bytes -= taken;
        let more = !state.frames.is_empty();
        drop(state);
        if more {
            // Leave a permit so the next call does not wait for frames already queued.
            self.notify.notify_one();
        }
        self.drained.notify_waiters();
        Some(Batch::Frames)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent (every update
        // is a single push/pop), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
