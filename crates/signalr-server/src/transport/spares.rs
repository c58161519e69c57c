//! Per-thread lists of spare byte buffers: memory a connection let go of, kept for the next
//! one on the same thread instead of going back to the allocator. The outbox keeps its write
//! copies in one, the WebSockets transport its gathered chunks in two (one per size).

use std::cell::RefCell;
use std::thread::LocalKey;

/// One thread's spare buffers of one kind (declared with `thread_local!`).
pub(super) type Spares = LocalKey<RefCell<Vec<Vec<u8>>>>;

/// An empty buffer from this thread's `spares`, if they hold one.
pub(super) fn take(spares: &'static Spares) -> Option<Vec<u8>> {
    spares
        .try_with(|spare| spare.borrow_mut().pop())
        .ok()
        .flatten()
}

/// Keeps `buffer`, emptied, in this thread's `spares` while they hold fewer than `most`;
/// frees it otherwise.
pub(super) fn give(spares: &'static Spares, mut buffer: Vec<u8>, most: usize) {
    buffer.clear();
    // During thread teardown the buffer is simply freed.
    let _ = spares.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.len() < most {
            spare.push(buffer);
        }
    });
}
