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
