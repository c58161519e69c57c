//! A run of frames in one block of memory: what each member of an audience is queued from a
//! chunk of sends to it (see `lifetime::memory`).
//!
//! The block holds how many frames there are, where each one ends, and then their bytes, one
//! after the other. Every member's queue holds a counted reference to the block, and the
//! writer of the last member to take it frees one allocation. Holding the messages' own
//! frames instead (one `Bytes` each, in a boxed slice behind an `Arc`) made that writer free
//! two blocks and one per frame, each long out of cache and out of the order they were made:
//! under a flood of small group messages on one core, glibc's `free` from the writers was
//! 8 % of the server's time (BENCHMARKS.md, W5). The frames are copied once, when the run is
//! made; the messages' own frames are then freed by the thread that made them, soon after.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Bytes of the frame count and of each frame's end.
const WORD: usize = std::mem::size_of::<u32>();
/// A scratch buffer grown past this is not kept.
const MAX_SCRATCH_CAPACITY: usize = 64 * 1024;

thread_local! {
    /// Where a run is laid out before it is copied into its block.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Frames queued together for every member of an audience: one slot and one reference count
/// per member instead of one per message and member. At 10 groups of 1 k a run is tens of
/// messages, and cloning each message's `Bytes` into every member's queue (and dropping it
/// again once written) was a quarter of the server's time.
#[derive(Clone)]
pub(crate) struct FrameRun(Arc<[u8]>);

impl FrameRun {
    /// The run of `count` frames that `frames` yields, in order; `None` when one of them is
    /// `None` (not encoded in the protocol asked for), or when they do not yield `count`.
    pub(crate) fn collect<'a>(
        count: usize,
        frames: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> Option<FrameRun> {
        // Taken out while in use, like the frame encoder's scratch buffer.
        let mut scratch = SCRATCH.try_with(Cell::take).unwrap_or_default();
        let run = Self::lay_out(&mut scratch, count, frames);
        if scratch.capacity() <= MAX_SCRATCH_CAPACITY {
            let _ = SCRATCH.try_with(|cell| cell.set(scratch));
        }
        run
    }

    fn lay_out<'a>(
        scratch: &mut Vec<u8>,
        count: usize,
        frames: impl IntoIterator<Item = Option<&'a [u8]>>,
    ) -> Option<FrameRun> {
        let header = WORD * (count + 1);
        scratch.clear();
        scratch.resize(header, 0);
        scratch[..WORD].copy_from_slice(&u32::try_from(count).ok()?.to_le_bytes());
        let mut made = 0;
        for frame in frames {
            let frame = frame?;
            made += 1;
            if made > count {
                return None;
            }
            scratch.extend_from_slice(frame);
            let end = u32::try_from(scratch.len() - header).ok()?;
            scratch[WORD * made..WORD * (made + 1)].copy_from_slice(&end.to_le_bytes());
        }
        (made == count).then(|| FrameRun(Arc::from(&scratch[..])))
    }

    /// How many frames there are.
    pub(crate) fn len(&self) -> usize {
        self.word(0)
    }

    /// Their bytes, together.
    pub(crate) fn bytes(&self) -> usize {
        self.0.len() - self.header()
    }

    /// Frame `index`, if there is one.
    pub(crate) fn frame(&self, index: usize) -> Option<&[u8]> {
        if index >= self.len() {
            return None;
        }
        let start = self.start(index);
        let end = self.word(index + 1);
        let header = self.header();
        Some(&self.0[header + start..header + end])
    }

    /// Frame `index` as `Bytes` of its own that keep the whole run's block (an allocation for
    /// the reference, no copy); empty if there is no such frame.
    pub(crate) fn share(&self, index: usize) -> Bytes {
        if index >= self.len() {
            return Bytes::new();
        }
        Bytes::from_owner(Shared {
            run: self.clone(),
            index,
        })
    }

    /// The frames, in order.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|index| self.frame(index))
    }

    fn header(&self) -> usize {
        WORD * (self.len() + 1)
    }

    fn start(&self, index: usize) -> usize {
        if index == 0 { 0 } else { self.word(index) }
    }

    fn word(&self, index: usize) -> usize {
        let at = WORD * index;
        let mut word = [0; WORD];
        word.copy_from_slice(&self.0[at..at + WORD]);
        u32::from_le_bytes(word) as usize
    }
}

/// One frame of a run, owning a reference to the run's block.
struct Shared {
    run: FrameRun,
    index: usize,
}

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.run.frame(self.index).unwrap_or_default()
    }
}

impl fmt::Debug for FrameRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameRun")
            .field("frames", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(frames: &[&str]) -> FrameRun {
        FrameRun::collect(frames.len(), frames.iter().map(|f| Some(f.as_bytes()))).unwrap()
    }

    #[test]
    fn frames_come_back_as_they_went_in() {
        let made = run(&["a", "", "bcd", "ef"]);
        assert_eq!(made.len(), 4);
        assert_eq!(made.bytes(), 6);
        let frames: Vec<&[u8]> = made.frames().collect();
        assert_eq!(frames, [&b"a"[..], b"", b"bcd", b"ef"]);
        assert_eq!(made.frame(4), None);
        let shared = made.share(2);
        drop(made);
        assert_eq!(
            &shared[..],
            b"bcd",
            "the block outlives the run it was shared from"
        );
        assert!(run(&["a"]).share(1).is_empty());
        let empty = run(&[]);
        assert_eq!((empty.len(), empty.bytes(), empty.frame(0)), (0, 0, None));
    }

    #[test]
    fn a_missing_frame_or_a_wrong_count_makes_no_run() {
        assert!(FrameRun::collect(2, [Some(&b"a"[..]), None]).is_none());
        assert!(FrameRun::collect(3, [Some(&b"a"[..]), Some(b"b")]).is_none());
        assert!(FrameRun::collect(1, [Some(&b"a"[..]), Some(b"b")]).is_none());
        // The scratch buffer left by a failed run does not leak into the next one.
        assert_eq!(run(&["xy"]).frames().collect::<Vec<_>>(), [&b"xy"[..]]);
    }

    #[test]
    fn a_large_run_does_not_stay_in_the_scratch_buffer() {
        let big = "x".repeat(2 * MAX_SCRATCH_CAPACITY);
        assert_eq!(run(&[&big]).bytes(), big.len());
        let kept = SCRATCH.with(|cell| {
            let scratch = cell.take();
            let capacity = scratch.capacity();
            cell.set(scratch);
            capacity
        });
        assert!(kept <= MAX_SCRATCH_CAPACITY, "kept {kept} bytes");
    }
}
