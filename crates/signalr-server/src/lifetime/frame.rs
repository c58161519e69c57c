//! Where an encoded frame gets its memory.
//!
//! A message to a group is encoded once and shared by every member's queue, so each
//! invocation that sends one allocates its frame, and the last writer to send it frees it.
//! A `Bytes` made from a buffer costs two allocations once it is shared (the buffer and its
//! reference count) and two frees. Frames are encoded into a per-thread scratch buffer
//! instead; a small one (most chat messages) is then copied into one allocation that holds
//! its reference count and its bytes. Under a flood of small group messages on one core
//! this allocator traffic was a fifth of the server's time (BENCHMARKS.md, W5).

use std::cell::Cell;

use bytes::{Bytes, BytesMut};

/// Frames up to this many bytes share one allocation with their reference count.
const INLINE_FRAME: usize = 176;
/// The scratch buffer's first capacity: room for a short chat message's frame.
const SCRATCH_CAPACITY: usize = 256;
/// A scratch buffer grown past this is not kept.
const MAX_SCRATCH_CAPACITY: usize = 64 * 1024;

thread_local! {
    static SCRATCH: Cell<BytesMut> = Cell::new(BytesMut::new());
}

/// A small frame's bytes, kept in the allocation `Bytes::from_owner` makes for its count.
struct Inline {
    len: u8,
    bytes: [u8; INLINE_FRAME],
}

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The frame `encode` writes, in memory of its own.
pub(super) fn encode<E>(encode: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<Bytes, E> {
    // Taken out while in use: an encoding inside an encoding (an argument's `Serialize` that
    // sends) finds it empty and starts its own.
    let mut scratch = SCRATCH.try_with(Cell::take).unwrap_or_default();
    let frame = encode_in(&mut scratch, encode);
    let _ = SCRATCH.try_with(|cell| cell.set(scratch));
    frame
}

fn encode_in<E>(
    scratch: &mut BytesMut,
    encode: impl FnOnce(&mut BytesMut) -> Result<(), E>,
) -> Result<Bytes, E> {
    // Empty: it is cleared before it is put back, and a new one starts empty.
    if scratch.capacity() == 0 {
        scratch.reserve(SCRATCH_CAPACITY);
    }
    let encoded = encode(scratch);
    let frame = match encoded {
        Ok(()) if scratch.len() <= INLINE_FRAME => {
            let mut inline = Inline {
                len: scratch.len() as u8,
                bytes: [0; INLINE_FRAME],
            };
            inline.bytes[..scratch.len()].copy_from_slice(scratch);
            Ok(Bytes::from_owner(inline))
        }
        // A larger frame takes the scratch buffer with it (no copy); the next frame starts
        // a new one.
        Ok(()) => Ok(std::mem::take(scratch).freeze()),
        Err(error) => Err(error),
    };
    scratch.clear();
    if scratch.capacity() > MAX_SCRATCH_CAPACITY {
        // A large encoding that failed: do not keep its buffer for small ones.
        *scratch = BytesMut::new();
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_and_large_frames_keep_their_bytes() {
        for len in [0, 1, 90, INLINE_FRAME, INLINE_FRAME + 1, 5000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let frame = encode::<()>(|out| {
                out.extend_from_slice(&payload);
                Ok(())
            })
            .unwrap();
            assert_eq!(&frame[..], &payload[..], "frame of {len} bytes");
            let shared = frame.clone();
            drop(frame);
            assert_eq!(&shared[..], &payload[..], "clone of a frame of {len} bytes");
        }
    }

    #[test]
    fn a_failed_encoding_leaves_the_next_frame_clean() {
        let failed = encode(|out| {
            out.extend_from_slice(b"half");
            Err("no")
        });
        assert_eq!(failed, Err("no"));
        let frame = encode::<()>(|out| {
            out.extend_from_slice(b"whole");
            Ok(())
        })
        .unwrap();
        assert_eq!(&frame[..], b"whole");
    }

    #[test]
    fn a_large_failed_encoding_does_not_stay_in_the_scratch_buffer() {
        let failed = encode(|out| {
            out.extend_from_slice(&vec![b'x'; 4 * MAX_SCRATCH_CAPACITY]);
            Err("too late")
        });
        assert_eq!(failed, Err("too late"));
        let kept = SCRATCH.with(|cell| {
            let scratch = cell.take();
            let capacity = scratch.capacity();
            cell.set(scratch);
            capacity
        });
        assert!(kept <= MAX_SCRATCH_CAPACITY, "kept {kept} bytes");
    }

    #[test]
    fn encoding_inside_an_encoding_gets_its_own_buffer() {
        let outer = encode::<()>(|out| {
            out.extend_from_slice(b"outer:");
            let inner = encode::<()>(|out| {
                out.extend_from_slice(b"inner");
                Ok(())
            })
            .unwrap();
            out.extend_from_slice(&inner);
            Ok(())
        })
        .unwrap();
        assert_eq!(&outer[..], b"outer:inner");
    }
}
