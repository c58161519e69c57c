//! The senders of one scale-run process: `SendToGroup` to the process's own groups at an
//! open-loop rate and, in the one broadcaster process, one `Broadcast` per interval.
//!
//! The process's group messages are numbered `0..total`; with `stride` senders, sender `k`
//! sends numbers `k, k + stride, ...` at `1 / stride` of the rate, so several connections
//! share the load (a hub runs one connection's invocations one after the other, each waiting
//! for its Redis publish: one connection alone is bound by the Redis round trip). Broadcasts
//! go on a connection of their own, so their schedule does not depend on the group senders'.
//!
//! Each sender owns its connection from before the start (kept alive with Pings while every
//! process connects) until the process ends; after sending it keeps reading its copies of the
//! broadcasts, so the server never has to queue them.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

use super::tally::BROADCAST;
use crate::client::Socket;
use crate::loadgen::{read_until_closed, round3};
use crate::stamp;
use crate::wire::Wire;

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The sender's wire (SignalR, JSON or MessagePack).
    pub wire: Wire,
    /// Names of the local groups; message `n` goes to `groups[n % len]`.
    pub groups: Vec<String>,
    /// Group messages of the whole process, numbered `0..total`.
    pub total: u64,
    /// The first number this sender sends...
    pub first: u64,
    /// ...and the step to its next one (the number of group senders).
    pub stride: u64,
    /// Group messages per second of the whole process: message `n` is due at `(n + 1) / rate`
    /// after the start, whichever sender sends it, so the senders interleave evenly instead of
    /// all sending at the same instants.
    pub group_rate: f64,
    /// How long to send group messages.
    pub duration: Duration,
    /// Broadcasts to send (0: not the broadcaster), one per `broadcast_interval` from the start.
    pub broadcasts: u32,
    /// Time between broadcasts.
    pub broadcast_interval: Duration,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Interval of the connection's keep-alive Pings.
    pub ping_interval: Duration,
}

impl Plan {
    /// Group messages this sender sends in all: the numbers `first + j * stride < total`.
    pub fn group_messages(&self) -> u64 {
        if self.first >= self.total || self.groups.is_empty() {
            0
        } else {
            (self.total - self.first - 1) / self.stride.max(1) + 1
        }
    }

    /// When this sender's `j`-th group message is due, from the start (`None`: no more).
    fn group_due(&self, j: u64) -> Option<Duration> {
        if j >= self.group_messages() || self.group_rate <= 0.0 {
            return None;
        }
        let n = self.first + j * self.stride.max(1);
        Some(Duration::from_secs_f64((n + 1) as f64 / self.group_rate))
    }

    /// When broadcast `b` is due, from the start (`None`: no more).
    fn broadcast_due(&self, b: u32) -> Option<Duration> {
        (b < self.broadcasts).then(|| self.broadcast_interval * b)
    }

    /// How long sending may take at most before the sender gives up (a server that stopped
    /// reading): the schedule plus a minute.
    fn limit(&self) -> Duration {
        self.duration.max(self.broadcast_interval * self.broadcasts) + Duration::from_secs(60)
    }
}

/// What the sender did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SenderReport {
    /// Sender connections.
    pub connections: usize,
    /// Group messages the plan asked for.
    pub group_planned: u64,
    /// Group messages sent.
    pub group_sent: u64,
    /// Of them, to each local group (not in the JSON: the receivers' expectations).
    #[serde(skip)]
    pub per_group: Vec<u64>,
    /// Broadcasts sent.
    pub broadcasts_sent: u32,
    /// From the start to the last message sent, seconds.
    pub seconds: f64,
    /// The furthest the sender fell behind its schedule (a backpressured connection), ms.
    pub max_behind_ms: f64,
    /// Wall-clock micros when it stopped sending.
    #[serde(skip)]
    pub stopped_micros: u64,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
}

/// The sender task: keeps `ws` alive until `go` fires, sends the plan, hands its report to
/// `done`, then reads `ws` until it ends.
pub async fn run(
    mut ws: Socket,
    plan: Plan,
    go: oneshot::Receiver<()>,
    done: oneshot::Sender<SenderReport>,
) {
    let wire = plan.wire;
    let mut report = SenderReport {
        connections: 1,
        group_planned: plan.group_messages(),
        per_group: vec![0; plan.groups.len()],
        ..SenderReport::default()
    };
    let mut ping = tokio::time::interval(plan.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut go = go;
    let started = loop {
        tokio::select! {
            result = &mut go => break result.is_ok(),
            message = ws.next() => {
                if let Err(error) = keep_reading(&mut ws, wire, message).await {
                    report.error = Some(error);
                    break false;
                }
            }
            _ = ping.tick() => {
                if let Some(frame) = wire.ping() && let Err(error) = ws.send(wire.message(frame)).await {
                    report.error = Some(format!("ping failed: {error}"));
                    break false;
                }
            }
        }
    };
    if started && report.error.is_none() {
        let limit = plan.limit();
        if tokio::time::timeout(limit, send(&mut ws, &plan, &mut report))
            .await
            .is_err()
        {
            report.error = Some(format!("sender stalled: not done after {limit:?}"));
        }
    }
    report.stopped_micros = stamp::now_micros();
    let broken = report.error.is_some();
    let _ = done.send(report);
    if !broken {
        let first_ping = plan.ping_interval;
        let _ = read_until_closed(ws, wire, plan.ping_interval, first_ping, |data| {
            wire.scan(data, |_| {})
        })
        .await;
    }
}

/// Answer what the server sends while waiting (engine.io pings); an error ends the sender.
async fn keep_reading(
    ws: &mut Socket,
    wire: Wire,
    message: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
) -> Result<(), String> {
    match message {
        Some(Ok(Message::Text(text))) => {
            if wire.scan(text.as_bytes(), |_| {}).pings > 0
                && let Some(pong) = wire.pong()
            {
                ws.send(wire.message(pong))
                    .await
                    .map_err(|e| format!("pong failed: {e}"))?;
            }
            Ok(())
        }
        Some(Ok(_)) => Ok(()),
        Some(Err(error)) => Err(format!("sender read error: {error}")),
        None => Err("sender connection closed".to_owned()),
    }
}

impl SenderReport {
    /// The reports of several senders as one: sums, the latest stop, the worst delay, the
    /// first error.
    pub fn combine(reports: Vec<SenderReport>, groups: usize) -> SenderReport {
        let mut all = SenderReport {
            per_group: vec![0; groups],
            ..SenderReport::default()
        };
        for r in reports {
            all.connections += r.connections;
            all.group_planned += r.group_planned;
            all.group_sent += r.group_sent;
            for (sum, n) in all.per_group.iter_mut().zip(&r.per_group) {
                *sum += n;
            }
            all.broadcasts_sent += r.broadcasts_sent;
            all.seconds = all.seconds.max(r.seconds);
            all.max_behind_ms = all.max_behind_ms.max(r.max_behind_ms);
            all.stopped_micros = all.stopped_micros.max(r.stopped_micros);
            all.error = all.error.or(r.error);
        }
        all
    }
}

/// Send the plan: wake when the next message is due (not on a fixed tick: hundreds of
/// senders ticking every millisecond would cost the load generator more than its receivers)
/// and send everything due by then (open loop: a late wake-up sends more, it does not
/// stretch the schedule).
async fn send(ws: &mut Socket, plan: &Plan, report: &mut SenderReport) {
    let wire = plan.wire;
    let groups = plan.groups.len().max(1) as u64;
    let started = Instant::now();
    let mut ping = tokio::time::interval(plan.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = match (
            plan.group_due(report.group_sent),
            plan.broadcast_due(report.broadcasts_sent),
        ) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until((started + next).into()) => {
                let elapsed = started.elapsed();
                while let Some(due) = plan.group_due(report.group_sent).filter(|&d| d <= elapsed) {
                    let late = (elapsed - due).as_secs_f64() * 1000.0;
                    report.max_behind_ms = report.max_behind_ms.max(round3(late));
                    let n = plan.first + report.group_sent * plan.stride.max(1);
                    let group = (n % groups) as usize;
                    let payload = stamp::payload(n as u32, stamp::now_micros(), plan.payload_len);
                    let frame = wire.invocation(None, "SendToGroup", &[&plan.groups[group], &payload]);
                    if let Err(error) = ws.feed(wire.message(frame)).await {
                        report.error = Some(format!("send failed: {error}"));
                        return;
                    }
                    report.per_group[group] += 1;
                    report.group_sent += 1;
                }
                while plan.broadcast_due(report.broadcasts_sent).is_some_and(|d| d <= elapsed) {
                    let tag = BROADCAST | report.broadcasts_sent;
                    let payload = stamp::payload(tag, stamp::now_micros(), plan.payload_len);
                    let frame = wire.invocation(None, "Broadcast", &[&payload]);
                    if let Err(error) = ws.feed(wire.message(frame)).await {
                        report.error = Some(format!("broadcast failed: {error}"));
                        return;
                    }
                    report.broadcasts_sent += 1;
                }
                if let Err(error) = ws.flush().await {
                    report.error = Some(format!("flush failed: {error}"));
                    return;
                }
                report.seconds = round3(started.elapsed().as_secs_f64());
            }
            _ = ping.tick() => {
                if let Some(frame) = wire.ping() && let Err(error) = ws.feed(wire.message(frame)).await {
                    report.error = Some(format!("ping failed: {error}"));
                    return;
                }
            }
            message = ws.next() => {
                if let Err(error) = keep_reading(ws, wire, message).await {
                    report.error = Some(error);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_and_limit() {
        let mut plan = Plan {
            wire: Wire::SignalR(signalr_protocol::Protocol::Json),
            groups: vec!["g0".into(), "g1".into()],
            total: 100_002,
            first: 0,
            stride: 1,
            group_rate: 1666.7,
            duration: Duration::from_secs(60),
            broadcasts: 60,
            broadcast_interval: Duration::from_secs(1),
            payload_len: 48,
            ping_interval: Duration::from_secs(15),
        };
        assert_eq!(plan.group_messages(), 100_002);
        assert_eq!(plan.limit(), Duration::from_secs(120));
        // Three senders share 0..10: 0 3 6 9 / 1 4 7 / 2 5 8.
        plan.total = 10;
        plan.stride = 3;
        let counts: Vec<u64> = (0..3)
            .map(|first| {
                Plan {
                    first,
                    ..plan.clone()
                }
                .group_messages()
            })
            .collect();
        assert_eq!(counts, [4, 3, 3]);
        // Sender 1 of 3 at 10 msgs/s sends messages 1, 4, 7, due at 0.2, 0.5, 0.8 s.
        let one = Plan {
            first: 1,
            group_rate: 10.0,
            ..plan.clone()
        };
        let due: Vec<_> = (0..4).map(|j| one.group_due(j)).collect();
        let ms = |m| Some(Duration::from_millis(m));
        assert_eq!(due, [ms(200), ms(500), ms(800), None]);
        plan.broadcasts = 2;
        assert_eq!(plan.broadcast_due(1), Some(Duration::from_secs(1)));
        assert_eq!(plan.broadcast_due(2), None);
        plan.groups.clear();
        assert_eq!(plan.group_messages(), 0);
    }

    #[test]
    fn reports_combine() {
        let a = SenderReport {
            connections: 1,
            group_sent: 4,
            per_group: vec![2, 2],
            max_behind_ms: 3.0,
            ..SenderReport::default()
        };
        let b = SenderReport {
            connections: 1,
            group_sent: 3,
            per_group: vec![1, 2],
            broadcasts_sent: 5,
            error: Some("x".into()),
            ..SenderReport::default()
        };
        let all = SenderReport::combine(vec![a, b], 2);
        assert_eq!(
            (all.connections, all.group_sent, all.broadcasts_sent),
            (2, 7, 5)
        );
        assert_eq!(all.per_group, [3, 4]);
        assert_eq!((all.max_behind_ms, all.error.as_deref()), (3.0, Some("x")));
    }
}
