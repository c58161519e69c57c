//! Client messages read ahead of the application, gathered into one chunk for its hand-over
//! (see the WebSockets transport), and the per-thread spare buffers chunks are gathered in.
//!
//! Under a flood, each busy connection gathers a chunk between two hand-overs, often up to
//! [`MAX_GATHERED_BYTES`]. Doubled from two messages' size, a chunk was reallocated about
//! eight times, 6 % of the server's core under a flood of small group messages on one core
//! (BENCHMARKS.md, W5); grown once to the full size instead, the one large allocation cost as
//! much, because the allocator searches its bins for a block that size among thousands of
//! small ones. Chunks now take buffers of two sizes from spares kept per thread, to which a
//! chunk's buffer returns when the application drops it. While thousands of connections each
//! hold a chunk the spares run dry, and a chunk allocates its first buffer as before.

use std::cell::RefCell;

use bytes::Bytes;

use super::spares::{self, Spares};

/// Most bytes gathered into one chunk (one message larger than this still goes whole).
pub(super) const MAX_GATHERED_BYTES: usize = 64 * 1024;

/// A chunk's first capacity: a chunk of a few messages takes a small buffer.
const FIRST_CAPACITY: usize = 4 * 1024;

/// Spare buffers kept per thread at most, of each size (512 KiB and 1 MiB): what a thread
/// keeps after a flood.
const SMALL_SPARES: usize = 128;
const FULL_SPARES: usize = 16;

thread_local! {
    static SMALL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static FULL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// Client data read but not yet handed to the application.
pub(super) enum Held {
    One(Bytes),
    Many(Vec<u8>),
}

impl Held {
    pub(super) fn len(&self) -> usize {
        match self {
            Held::One(data) => data.len(),
            Held::Many(data) => data.len(),
        }
    }

    /// `held` with `data` after it.
    pub(super) fn append(held: Option<Held>, data: Bytes) -> Held {
        match held {
            None => Held::One(data),
            Some(Held::One(first)) => {
                let mut gathered = room_for(Vec::new(), first.len() + data.len());
                gathered.extend_from_slice(&first);
                gathered.extend_from_slice(&data);
                Held::Many(gathered)
            }
            Some(Held::Many(gathered)) => {
                let needed = gathered.len() + data.len();
                let mut gathered = room_for(gathered, needed);
                gathered.extend_from_slice(&data);
                Held::Many(gathered)
            }
        }
    }

    /// The chunk to hand over; its buffer goes back to the spares once the application drops
    /// it.
    pub(super) fn into_bytes(self) -> Bytes {
        match self {
            Held::One(data) => data,
            Held::Many(data) if size_class(data.capacity()).is_some() => {
                Bytes::from_owner(Spare(data))
            }
            Held::Many(data) => Bytes::from(data),
        }
    }
}

/// `gathered`, or a buffer with its bytes, with room for `needed` bytes.
fn room_for(gathered: Vec<u8>, needed: usize) -> Vec<u8> {
    if needed <= gathered.capacity() {
        return gathered;
    }
    let mut bigger = if needed <= FIRST_CAPACITY {
        take_spare(&SMALL, FIRST_CAPACITY)
    } else if needed <= MAX_GATHERED_BYTES {
        take_spare(&FULL, MAX_GATHERED_BYTES)
    } else {
        // One message past the bound (the last read, or one large message).
        Vec::with_capacity(needed)
    };
    bigger.extend_from_slice(&gathered);
    bigger
}

/// The spares a buffer of `capacity` goes back to, with how many they keep.
fn size_class(capacity: usize) -> Option<(&'static Spares, usize)> {
    match capacity {
        FIRST_CAPACITY => Some((&SMALL, SMALL_SPARES)),
        MAX_GATHERED_BYTES => Some((&FULL, FULL_SPARES)),
        _ => None,
    }
}

/// An empty buffer of `capacity` from this thread's `spares`, or a new one.
fn take_spare(spares: &'static Spares, capacity: usize) -> Vec<u8> {
    spares::take(spares).unwrap_or_else(|| Vec::with_capacity(capacity))
}

/// A handed-over chunk's memory, back to the spares of the thread that drops it.
struct Spare(Vec<u8>);

impl AsRef<[u8]> for Spare {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let buffer = std::mem::take(&mut self.0);
        if let Some((spares, most)) = size_class(buffer.capacity()) {
            spares::give(spares, buffer, most);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: usize, len: usize) -> Bytes {
        Bytes::from(vec![(i % 251) as u8; len])
    }

    #[test]
    fn gathered_messages_keep_their_bytes_and_order_at_every_size() {
        for (count, len) in [
            (1, 10),
            (2, 10),
            (40, 100),
            (700, 100),
            (3, 30_000),
            (2, 100_000),
        ] {
            let mut held = None;
            let mut expected = Vec::new();
            for i in 0..count {
                let data = message(i, len);
                expected.extend_from_slice(&data);
                held = Some(Held::append(held, data));
            }
            let held = held.unwrap();
            assert_eq!(held.len(), expected.len(), "{count} x {len}");
            assert_eq!(&held.into_bytes()[..], &expected[..], "{count} x {len}");
        }
    }

    #[test]
    fn a_full_chunk_s_buffer_is_used_again_once_dropped() {
        let fill = |first: u8| {
            let mut held = None;
            for i in 0..(MAX_GATHERED_BYTES / 1000) {
                held = Some(Held::append(held, Bytes::from(vec![first + i as u8; 1000])));
            }
            held.unwrap().into_bytes()
        };
        let chunk = fill(0);
        let address = chunk.as_ptr();
        assert_eq!(chunk[0], 0);
        assert_eq!(chunk[1000], 1);
        drop(chunk);
        let again = fill(100);
        assert_eq!(again.as_ptr(), address, "the spare was not taken");
        // The reused memory holds the new bytes only.
        assert_eq!(again[0], 100);
        assert_eq!(again.len(), (MAX_GATHERED_BYTES / 1000) * 1000);
    }

    #[test]
    fn spares_are_bounded_and_only_of_the_two_sizes() {
        let spares = || {
            (
                FULL.with(|s| s.borrow().len()),
                SMALL.with(|s| s.borrow().len()),
            )
        };
        let chunks: Vec<Bytes> = (0..FULL_SPARES + 4)
            .map(|_| Held::Many(Vec::with_capacity(MAX_GATHERED_BYTES)).into_bytes())
            .collect();
        drop(chunks);
        assert_eq!(spares(), (FULL_SPARES, 0));
        // A buffer of another size is not kept.
        drop(Held::Many(Vec::with_capacity(3 * FIRST_CAPACITY)).into_bytes());
        assert_eq!(spares(), (FULL_SPARES, 0));
        let small = |i: usize| {
            Held::append(Some(Held::One(message(i, 10))), message(i + 1, 10)).into_bytes()
        };
        let chunks: Vec<Bytes> = (0..SMALL_SPARES + 4).map(small).collect();
        drop(chunks);
        assert_eq!(spares(), (FULL_SPARES, SMALL_SPARES));
    }
}
