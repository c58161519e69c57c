//! Writers far behind: the signal from a fan-out to the connection loop that ran it.
//!
//! A hub method's sends only queue frames; the connections' writers send them later, on the
//! same runtime. A connection that floods the server with invocations to large audiences can
//! queue faster than the writers run (on Tokio's multi-thread runtime, wake-ups past a
//! worker's local queue wait in the global queue, which a busy worker looks at only now and
//! then). The queues then grow without end, every push lands in cold memory, and deliveries
//! collapse while memory climbs by gigabytes. So a fan-out that finds most of its members far
//! behind says so here, and the connection loop that ran it yields (see `connection::run`)
//! until the writers have had their turn: a sender that outruns the server is then held back
//! by TCP, not by memory. One slow member among many does not count: slow consumers are
//! bounded and closed on their own, and must not slow everyone else.
//!
//! Far behind takes both a deep queue and a writer that has not written for a while: under
//! a heavy broadcast to a thousand connections the queues run deep too, but their writers
//! are busy writing them, and yielding then only makes writes smaller (W2 past 10 M
//! deliveries/s lost a fifth of its throughput with a 50 ms silence, and stayed within its
//! run-to-run noise with 200 ms).
//!
//! # Pacing
//!
//! Short of far behind, a sender can still outrun the writers: its batches arrive while the
//! writers of the previous batch have not run yet. When its messages go to many small
//! groups, each batch then pushes a frame or two to every member, into queues already
//! waiting, and every push is a walk through cold memory. So when most of a batch's pushes
//! found their queue still unwritten and carried few frames each, the connection loop waits
//! [`PACE`] before taking more input: meanwhile the writers write, and the input that arrives
//! gathers into one batch that gives each member several frames in one push. A sender whose
//! audience keeps up is never paced (its pushes find empty queues), nor one whose pushes
//! already carry many frames (a few large groups: there, waiting only moves the work). (1 k
//! groups of 10 on one core: 0.90× the server time per delivery and about half the
//! latency, BENCHMARKS.md W5.)
//!
//! Operators see both kinds of wait in `signalr_sender_waits_total` (`reason`: `far_behind`,
//! `pace`): a count that keeps growing says the node's writers cannot keep up with what its
//! senders ask.

use std::cell::Cell;
use std::time::Duration;

/// Bytes queued for a connection past which its writer may be far behind: about a second of
/// a 50 KB/s stream. Below it the loop never yields, so writes keep carrying everything that
/// piled up meanwhile.
pub(crate) const FAR_BEHIND_BYTES: usize = 64 * 1024;

/// How long a writer with [`FAR_BEHIND_BYTES`] queued has not written before it counts as
/// far behind.
pub(crate) const FAR_BEHIND_SILENCE: Duration = Duration::from_millis(200);

thread_local! {
    /// Set by a fan-out on this thread, taken by the next connection loop turn here. Hub
    /// methods run inside their connection's loop, so the two are on the same thread.
    static FAR_BEHIND: Cell<bool> = const { Cell::new(false) };
}

/// A fan-out found most of its members far behind.
pub(crate) fn note_far_behind() {
    FAR_BEHIND.with(|flag| flag.set(true));
}

/// Whether a fan-out on this thread found its members far behind since the flag was last
/// taken; leaves it set.
pub(crate) fn is_far_behind() -> bool {
    FAR_BEHIND.with(Cell::get)
}

/// Whether a fan-out on this thread found its members far behind since the last call.
pub(crate) fn take_far_behind() -> bool {
    FAR_BEHIND.with(|flag| flag.replace(false))
}

/// How long a sender whose batch found most writers behind waits before its next batch.
/// Long enough for a thousand writers to run, short beside the lag it replaces (seconds,
/// under a flood); longer waits let the input outgrow what one batch takes.
pub(crate) const PACE: Duration = Duration::from_millis(10);

/// Fewer pushes than this never pace a sender: a message to a small group finding its
/// writers busy says little about the server.
const MIN_PACED_PUSHES: u32 = 64;

/// Pushes carrying this many frames each, on average, or more never pace a sender: its
/// runs are long already.
const SHORT_RUN: u32 = 4;

/// Pushes into queues on this thread since the count was last taken: how many of them
/// found frames their writer had not taken yet, and the frames they carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushes {
    pub(crate) total: u32,
    pub(crate) unwritten: u32,
    pub(crate) frames: u32,
}

impl Pushes {
    /// Whether the sender that made these pushes is to be paced: most of enough pushes
    /// found their queue still unwritten, and they carried few frames each.
    pub(crate) fn pace(self) -> bool {
        self.total >= MIN_PACED_PUSHES
            && u64::from(self.unwritten) * 2 > u64::from(self.total)
            && u64::from(self.frames) < u64::from(self.total) * u64::from(SHORT_RUN)
    }
}

thread_local! {
    static PUSHES: Cell<Pushes> = const {
        Cell::new(Pushes { total: 0, unwritten: 0, frames: 0 })
    };
}

/// Count a push of `frames` into a connection's queue; `unwritten`: the queue held frames
/// its writer had not taken.
pub(crate) fn note_push(unwritten: bool, frames: usize) {
    PUSHES.with(|pushes| {
        let counted = pushes.get();
        pushes.set(Pushes {
            total: counted.total.saturating_add(1),
            unwritten: counted.unwritten.saturating_add(u32::from(unwritten)),
            frames: counted
                .frames
                .saturating_add(u32::try_from(frames).unwrap_or(u32::MAX)),
        });
    });
}

/// The pushes counted on this thread since the last call.
pub(crate) fn take_pushes() -> Pushes {
    PUSHES.with(Cell::take)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_are_counted_per_thread_until_taken() {
        let _ = take_pushes();
        note_push(true, 1);
        note_push(false, 3);
        note_push(true, 2);
        assert_eq!(
            take_pushes(),
            Pushes {
                total: 3,
                unwritten: 2,
                frames: 6
            }
        );
        assert_eq!(take_pushes(), Pushes::default());
        std::thread::spawn(|| note_push(true, 1)).join().unwrap();
        assert_eq!(take_pushes(), Pushes::default());
    }

    #[test]
    fn a_sender_is_paced_when_most_of_enough_short_pushes_found_queues_unwritten() {
        let pace = |total, unwritten, frames| {
            Pushes {
                total,
                unwritten,
                frames,
            }
            .pace()
        };
        assert!(pace(
            MIN_PACED_PUSHES,
            MIN_PACED_PUSHES / 2 + 1,
            MIN_PACED_PUSHES
        ));
        assert!(pace(10_000, 9_700, 14_000));
        // Half is not most.
        assert!(!pace(
            MIN_PACED_PUSHES,
            MIN_PACED_PUSHES / 2,
            MIN_PACED_PUSHES
        ));
        // A small audience, all of it behind, is not enough.
        assert!(!pace(
            MIN_PACED_PUSHES - 1,
            MIN_PACED_PUSHES - 1,
            MIN_PACED_PUSHES - 1
        ));
        // Writers keeping up.
        assert!(!pace(10_000, 0, 10_000));
        // Runs long already: waiting would only move the work.
        assert!(!pace(10_000, 10_000, 10_000 * SHORT_RUN));
        assert!(pace(10_000, 10_000, 10_000 * SHORT_RUN - 1));
    }
}
