//! The inbound queue of one connection: what transports hand the application.
//!
//! A small bounded multi-producer, single-consumer queue. It exists instead of a tokio
//! `mpsc` channel for memory: tokio allocates a block of 32 slots for every channel up
//! front (about 1.4 KB here, for every idle connection), while this queue holds nothing until
//! something is sent and rarely holds more than a few items. Producers are the WebSocket
//! reader or the POST requests of the HTTP transports (one at a time); the consumer is the
//! connection's application task.
//!
//! A full queue makes producers wait ([`InboundSender::reserve`]), which is how a client that
//! floods a busy connection is pushed back on by TCP instead of being buffered. Full is
//! `capacity` items, or `max_bytes` of data (a producer then waits for the queue to go below
//! it, so at most `max_bytes` plus one item are queued).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

use super::Inbound;

/// The receiving application is gone: nothing sent now will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The queue a transport hands a connection's input to the application in: at most
/// [`INBOUND_CHANNEL_CAPACITY`](super::INBOUND_CHANNEL_CAPACITY) chunks or
/// [`INBOUND_CHANNEL_BYTES`](super::INBOUND_CHANNEL_BYTES) of data.
pub(crate) fn for_connection() -> (InboundSender, InboundReceiver) {
    channel(
        super::INBOUND_CHANNEL_CAPACITY,
        super::INBOUND_CHANNEL_BYTES,
    )
}

/// A new queue holding at most `capacity` items, or `max_bytes` of data, before producers
/// wait.
pub(crate) fn channel(capacity: usize, max_bytes: usize) -> (InboundSender, InboundReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            bytes: 0,
            senders: 1,
            receiver_gone: false,
        }),
        item: Notify::new(),
        room: Notify::new(),
        capacity: capacity.max(1),
        max_bytes,
    });
    (
        InboundSender {
            shared: shared.clone(),
        },
        InboundReceiver { shared },
    )
}

#[derive(Debug)]
struct Shared {
    /// A std mutex: held only to push or pop.
    state: Mutex<State>,
    /// Wakes the receiver when an item arrives or the last sender goes.
    item: Notify,
    /// Wakes producers waiting for room, or for the receiver to go.
    room: Notify,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Inbound>,
    /// Data bytes in `queue`.
    bytes: usize,
    /// Live senders; the receiver sees the end of the queue when none is left.
    senders: usize,
    receiver_gone: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a push, a pop or a counter change: a panic cannot tear it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn has_room(&self, shared: &Shared) -> bool {
        self.queue.len() < shared.capacity
            && (self.queue.is_empty() || self.bytes < shared.max_bytes)
    }

    fn pop(&mut self) -> Option<Inbound> {
        let next = self.queue.pop_front()?;
        self.bytes -= data_len(&next);
        super::outbox::release_if_drained(&mut self.queue);
        Some(next)
    }
}

fn data_len(item: &Inbound) -> usize {
    match item {
        Inbound::Data(data) => data.len(),
        _ => 0,
    }
}

/// Where transports put what the client sends.
#[derive(Debug)]
pub(crate) struct InboundSender {
    shared: Arc<Shared>,
}

impl Clone for InboundSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        InboundSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for InboundSender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.item.notify_one();
        }
    }
}

/// Room for one item, taken by [`InboundSender::reserve`].
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    shared: &'a Shared,
}

impl Permit<'_> {
    /// Queue the item.
    pub(crate) fn send(self, item: Inbound) {
        let mut state = self.shared.lock();
        if state.receiver_gone {
            return;
        }
        state.bytes += data_len(&item);
        state.queue.push_back(item);
        drop(state);
        self.shared.item.notify_one();
    }
}

impl InboundSender {
    /// Wait until the queue has room. Cancel safe: nothing is taken until the permit sends.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_>, Closed> {
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.receiver_gone {
                    return Err(Closed);
                }
                if state.has_room(&self.shared) {
                    return Ok(Permit {
                        shared: &self.shared,
                    });
                }
            }
            room.await;
        }
    }

    /// Wait for room, then queue the item.
    pub(crate) async fn send(&self, item: Inbound) -> Result<(), Closed> {
        self.reserve().await?.send(item);
        Ok(())
    }
}

/// The application's end: what the client sent, in order.
#[derive(Debug)]
pub struct InboundReceiver {
    shared: Arc<Shared>,
}

impl InboundReceiver {
    /// The next item; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<Inbound> {
        loop {
            let item = self.shared.item.notified();
            tokio::pin!(item);
            item.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if let Some(next) = state.pop() {
                    drop(state);
                    self.shared.room.notify_waiters();
                    return Some(next);
                }
                if state.senders == 0 {
                    return None;
                }
            }
            item.await;
        }
    }

    /// The next item without waiting, if it is data (anything else stays queued for
    /// [`recv`](Self::recv)): lets the application take what a flood already queued in one go.
    pub(crate) fn try_recv_data(&mut self) -> Option<Bytes> {
        let mut state = self.shared.lock();
        if !matches!(state.queue.front(), Some(Inbound::Data(_))) {
            return None;
        }
        // The front was just seen to be data, under the same lock.
        let Some(Inbound::Data(data)) = state.pop() else {
            return None;
        };
        drop(state);
        self.shared.room.notify_waiters();
        Some(data)
    }
}

#[cfg(test)]
impl InboundReceiver {
    /// The next item without waiting; `Err` when none is queued (ended or not).
    pub(crate) fn try_recv(&mut self) -> Result<Inbound, ()> {
        self.shared.lock().pop().ok_or(())
    }
}

impl Drop for InboundReceiver {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            state.queue.clear();
            state.bytes = 0;
        }
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;

    fn data(text: &'static str) -> Inbound {
        Inbound::Data(Bytes::from_static(text.as_bytes()))
    }

    fn text(item: Option<Inbound>) -> String {
        match item {
            Some(Inbound::Data(bytes)) => String::from_utf8(bytes.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = channel(4, usize::MAX);
        tx.send(data("a")).await.unwrap();
        let second = tx.clone();
        second.send(data("b")).await.unwrap();
        assert_eq!(text(rx.recv().await), "a");
        assert_eq!(text(rx.recv().await), "b");
        drop(tx);
        drop(second);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_producer_wait() {
        let (tx, mut rx) = channel(1, usize::MAX);
        tx.send(data("a")).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), tx.reserve()).await;
        assert!(waiting.is_err(), "no room yet");
        let producer = tokio::spawn(async move {
            tx.send(data("b")).await.unwrap();
        });
        assert_eq!(text(rx.recv().await), "a");
        tokio::time::timeout(Duration::from_secs(5), producer)
            .await
            .expect("the producer got room")
            .unwrap();
        assert_eq!(text(rx.recv().await), "b");
    }

    #[tokio::test]
    async fn data_up_to_the_byte_bound_makes_the_producer_wait() {
        let (tx, mut rx) = channel(8, 4);
        tx.send(data("abc")).await.unwrap();
        tx.send(data("de")).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(50), tx.reserve()).await;
        assert!(waiting.is_err(), "5 bytes queued, bound 4: no room");
        assert_eq!(text(rx.try_recv_data().map(Inbound::Data)), "abc");
        tokio::time::timeout(Duration::from_secs(5), tx.reserve())
            .await
            .expect("room once below the bound")
            .unwrap();
        assert_eq!(text(rx.try_recv_data().map(Inbound::Data)), "de");
        // An empty queue takes one item whatever its size.
        tx.send(data("fghij")).await.unwrap();
        assert_eq!(text(rx.recv().await), "fghij");
    }

    #[tokio::test]
    async fn only_data_is_taken_without_waiting() {
        let (tx, mut rx) = channel(4, usize::MAX);
        tx.send(data("a")).await.unwrap();
        tx.send(Inbound::Resumed).await.unwrap();
        tx.send(data("b")).await.unwrap();
        assert_eq!(text(rx.try_recv_data().map(Inbound::Data)), "a");
        assert!(
            rx.try_recv_data().is_none(),
            "what is not data waits for recv"
        );
        assert!(matches!(rx.recv().await, Some(Inbound::Resumed)));
        assert_eq!(text(rx.try_recv_data().map(Inbound::Data)), "b");
        assert!(rx.try_recv_data().is_none());
    }

    #[tokio::test]
    async fn producers_learn_that_the_receiver_is_gone() {
        let (tx, rx) = channel(1, usize::MAX);
        tx.send(data("a")).await.unwrap();
        let blocked = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(data("b")).await })
        };
        tokio::task::yield_now().await;
        drop(rx);
        let result = tokio::time::timeout(Duration::from_secs(5), blocked)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(result, Err(Closed));
        assert!(tx.reserve().await.is_err());
    }
}
