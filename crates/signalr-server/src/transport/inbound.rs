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
//! floods a busy connection is pushed back on by TCP instead of being buffered.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Inbound;

/// The receiving application is gone: nothing sent now will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// A new queue holding at most `capacity` items before producers wait.
pub(crate) fn channel(capacity: usize) -> (InboundSender, InboundReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            senders: 1,
            receiver_gone: false,
        }),
        item: Notify::new(),
        room: Notify::new(),
        capacity: capacity.max(1),
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
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Inbound>,
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
                if state.queue.len() < self.shared.capacity {
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
                if let Some(next) = state.queue.pop_front() {
                    super::outbox::release_if_drained(&mut state.queue);
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
}

#[cfg(test)]
impl InboundReceiver {
    /// The next item without waiting; `Err` when none is queued (ended or not).
    pub(crate) fn try_recv(&mut self) -> Result<Inbound, ()> {
        self.shared.lock().queue.pop_front().ok_or(())
    }
}

impl Drop for InboundReceiver {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.receiver_gone = true;
            state.queue.clear();
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
        let (tx, mut rx) = channel(4);
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
        let (tx, mut rx) = channel(1);
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
    async fn producers_learn_that_the_receiver_is_gone() {
        let (tx, rx) = channel(1);
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
