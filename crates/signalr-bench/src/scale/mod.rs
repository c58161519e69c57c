//! One process of a multi-process scale run (`loadgen scale`): its share of receivers spread
//! over every node of a cluster, groups of `group_size` consecutive connections, a sender for
//! its own groups, and, in one process, the broadcasts to everyone.
//!
//! Several processes cooperate without talking to each other: process `p` is given the global
//! connection indexes `offset..offset + connections` (`offset` a multiple of the group size,
//! so every group belongs to exactly one process). Connection `i` connects to node
//! `i % nodes` and joins `g{i / group_size}`, so the members of one group sit on several nodes
//! and every group message crosses Redis. The sender addresses only the process's own groups,
//! so the process knows exactly which deliveries to expect; the broadcaster sends exactly
//! `broadcasts` broadcasts, a number every process is told.
//!
//! Phases: connect and join, report `ready`, wait for the start (a file naming the start time
//! in wall-clock microseconds, so all processes start together), send for `duration`, drain
//! (bounded), report `done`, then hold the connections open until the stop file appears
//! (bounded) so the runner can measure the servers with every connection still there.
//! Counting lives in [`tally`], sending in [`traffic`].

pub mod tally;
pub mod traffic;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;

use self::tally::{Tally, Totals};
use self::traffic::{Plan, SenderReport};
use crate::client::{self, Endpoint, Negotiator};
use crate::loadgen::{
    ConnectReport, JoinReport, Latency, connect_many, join_groups, ping_offset, read_until_closed,
    round2, round3,
};
use crate::procstat::Pid;
use crate::stamp;

/// One process's part of a scale run.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// The nodes; global connection `i` goes to `nodes[i % len]`.
    pub nodes: Vec<Endpoint>,
    /// Where this process's group senders connect, one connection each (the process's rate is
    /// shared among them).
    pub senders: Vec<Endpoint>,
    /// Where the broadcaster's connection goes.
    pub broadcast_from: Endpoint,
    /// Connection attempts in flight.
    pub concurrency: usize,
    /// Bound of one connection attempt or join.
    pub connect_timeout: Duration,
    /// Interval of the keep-alive Pings.
    pub ping_interval: Duration,
    /// Receiver connections of this process.
    pub connections: usize,
    /// Global index of the first one (a multiple of `group_size`).
    pub index_offset: usize,
    /// Connections per group.
    pub group_size: usize,
    /// Group messages per second this process sends (all its senders together).
    pub group_rate: f64,
    /// How long it sends them.
    pub duration: Duration,
    /// Whether this process sends the broadcasts.
    pub broadcaster: bool,
    /// Broadcasts the broadcaster sends (every process expects that many).
    pub broadcasts: u32,
    /// Time between broadcasts.
    pub broadcast_interval: Duration,
    /// Payload length, bytes.
    pub payload_len: usize,
    /// A file whose appearance starts the traffic; it may hold the start time in wall-clock
    /// microseconds (else: start at once).
    pub start_file: Option<PathBuf>,
    /// Or a start time in wall-clock microseconds.
    pub start_at: Option<u64>,
    /// The longest wait for the start.
    pub start_wait_max: Duration,
    /// A drain ends when nothing arrived for this long (once every broadcast was due)...
    pub drain_idle: Duration,
    /// ...or at the latest this long after the senders stopped and the last broadcast was due.
    pub drain_max: Duration,
    /// After the report, keep the connections until this file exists...
    pub stop_file: Option<PathBuf>,
    /// ...for at most this long.
    pub hold_max: Duration,
}

/// Deliveries of one kind (group messages or broadcasts) at this process's receivers.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deliveries {
    /// Deliveries due: messages sent × healthy receivers they were for.
    pub expected: u64,
    /// Distinct deliveries counted.
    pub received: u64,
    /// `expected − received` when positive.
    pub lost: u64,
    /// The same message again at the same receiver.
    pub duplicates: u64,
    /// Receivers that got fewer than were due to them.
    pub receivers_short: u64,
    /// Send→receive latency.
    pub latency: Latency,
    /// The latency histogram as `[µs, count]` pairs, for merging across processes.
    pub histogram: Vec<[u64; 2]>,
}

/// A whole process's report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScaleReport {
    /// First global connection index.
    pub index_offset: usize,
    /// Groups this process owns.
    pub groups: usize,
    /// Opening the receivers.
    pub connect: ConnectReport,
    /// Joining their groups.
    pub join: JoinReport,
    /// Receivers connected and joined.
    pub healthy: usize,
    /// Waiting for the start, seconds.
    pub waited_seconds: f64,
    /// The sender.
    pub sender: SenderReport,
    /// Group deliveries.
    pub group: Deliveries,
    /// Broadcast deliveries (expected: `broadcasts` × healthy receivers).
    pub broadcast: Deliveries,
    /// Group messages that reached a receiver of another group.
    pub misrouted: u64,
    /// Stamps with impossible sequence numbers.
    pub out_of_range: u64,
    /// Stamped deliveries sent before the start.
    pub early: u64,
    /// Last delivery − the end of the schedule (the senders' stop or the last broadcast's due
    /// time, the later), seconds (negative: none arrived).
    pub drain_seconds: f64,
    /// The start, wall-clock micros.
    pub start_micros: u64,
    /// The last delivery, wall-clock micros (0: none).
    pub last_delivery_micros: u64,
    /// Receivers closed during the run, by reason.
    pub closed: std::collections::BTreeMap<String, u64>,
    /// This process's CPU from the start to the end of the drain, % of one core.
    pub client_cpu_percent: f64,
    /// This process's resident memory at the end, KiB.
    pub client_rss_kib: u64,
    /// Why the run could not go on, if it could not.
    pub error: Option<String>,
}

/// Run one process's part; `emit` gets `ready` (connected and joined) and `done` (the whole
/// report, before the hold).
pub async fn run_scale(
    config: ScaleConfig,
    emit: &mut dyn FnMut(&str, &serde_json::Value),
) -> ScaleReport {
    let mut report = ScaleReport {
        index_offset: config.index_offset,
        ..ScaleReport::default()
    };
    let size = config.group_size.max(1);
    if config.nodes.is_empty() || !config.index_offset.is_multiple_of(size) {
        report.error =
            Some("needs nodes and an index offset that is a multiple of the group size".into());
        return report;
    }
    let wire = config.broadcast_from.wire;
    let n = config.connections;
    // Local connection i is global offset + i: rotate the nodes so i % len picks its node.
    let nodes: Vec<Endpoint> = (0..config.nodes.len())
        .map(|k| config.nodes[(config.index_offset + k) % config.nodes.len()].clone())
        .collect();
    let (mut conns, connect) = connect_many(
        &nodes,
        n,
        config.concurrency,
        config.connect_timeout,
        |_| String::new(),
    )
    .await;
    report.connect = connect;
    let first_group = config.index_offset / size;
    let (joined, join) = join_groups(
        &mut conns,
        wire,
        |i| format!("g{}", first_group + i / size),
        config.concurrency,
        config.connect_timeout,
    )
    .await;
    report.join = join;
    let groups = n.div_ceil(size);
    report.groups = groups;

    // Receivers: each keeps its own tally; members[g] counts the healthy ones per group.
    let totals = Rc::new(Totals::new(groups as u32));
    let mut members = vec![0u64; groups];
    let mut tallies: Vec<(usize, Rc<RefCell<Tally>>)> = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        let Some(conn) = conn.filter(|_| joined[i]) else {
            continue;
        };
        let group = i / size;
        members[group] += 1;
        let tally = Rc::new(RefCell::new(Tally::default()));
        tallies.push((group, tally.clone()));
        let totals = totals.clone();
        let first_ping = ping_offset(i, config.ping_interval);
        tokio::task::spawn_local(async move {
            let reason =
                read_until_closed(conn.ws, wire, config.ping_interval, first_ping, |data| {
                    let now = stamp::now_micros();
                    let mut tally = tally.borrow_mut();
                    wire.scan(data, |s| totals.record(&mut tally, group as u32, s, now))
                })
                .await;
            totals.closed(reason);
        });
    }
    report.healthy = tallies.len();

    // The senders, connected now and kept alive until the start.
    let total = (config.group_rate * config.duration.as_secs_f64()).round() as u64;
    let stride = config.senders.len().max(1) as u64;
    let group_plan = Plan {
        wire,
        groups: (0..groups)
            .map(|g| format!("g{}", first_group + g))
            .collect(),
        total,
        first: 0,
        stride,
        group_rate: config.group_rate,
        duration: config.duration,
        broadcasts: 0,
        broadcast_interval: config.broadcast_interval,
        payload_len: config.payload_len,
        ping_interval: config.ping_interval,
    };
    let mut plans: Vec<(&Endpoint, Plan)> = (0..stride)
        .zip(&config.senders)
        .map(|(first, endpoint)| {
            let plan = Plan {
                first,
                ..group_plan.clone()
            };
            (endpoint, plan)
        })
        .collect();
    if config.broadcaster {
        let plan = Plan {
            groups: Vec::new(),
            total: 0,
            group_rate: 0.0,
            broadcasts: config.broadcasts,
            ..group_plan.clone()
        };
        plans.push((&config.broadcast_from, plan));
    }
    let mut starts = Vec::new();
    let mut results = Vec::new();
    for (endpoint, plan) in plans {
        let mut negotiator = Negotiator::default();
        let opened = client::within(
            config.connect_timeout,
            client::open(endpoint, &mut negotiator, ""),
        )
        .await;
        match opened {
            Ok(conn) => {
                let (go, go_rx) = oneshot::channel();
                let (done, result) = oneshot::channel();
                tokio::task::spawn_local(traffic::run(conn.ws, plan, go_rx, done));
                starts.push(go);
                results.push(result);
            }
            Err(error) => {
                report.error = Some(format!("sender: {}: {}", error.stage, error.detail));
                break;
            }
        }
    }
    emit(
        "ready",
        &serde_json::json!({
            "index_offset": config.index_offset,
            "connect": report.connect,
            "join": report.join,
            "healthy": report.healthy,
            "sender_error": report.error,
        }),
    );
    if report.error.is_some() {
        emit("done", &serde_json::to_value(&report).unwrap_or_default());
        return report;
    }

    // The start, then the traffic.
    let waiting = Instant::now();
    let Some(start) = wait_for_start(&config).await else {
        report.error = Some(format!("no start within {:?}", config.start_wait_max));
        emit("done", &serde_json::to_value(&report).unwrap_or_default());
        return report;
    };
    // Known before the sleep: another process's first message may beat this one's wake-up.
    totals.start_micros.set(start);
    sleep_until_micros(start).await;
    report.waited_seconds = round3(waiting.elapsed().as_secs_f64());
    let cpu_before = Pid::OurSelf.cpu_seconds().unwrap_or(0.0);
    let wall = Instant::now();
    for go in starts {
        let _ = go.send(());
    }
    let mut reports = Vec::new();
    for result in results {
        reports.push(result.await.unwrap_or_else(|_| SenderReport {
            error: Some("sender task ended without a report".into()),
            ..SenderReport::default()
        }));
    }
    let sender = SenderReport::combine(reports, groups);

    // What is due at the receivers.
    let group_expected: u64 = sender
        .per_group
        .iter()
        .zip(&members)
        .map(|(sent, m)| sent * m)
        .sum();
    let broadcast_expected = u64::from(config.broadcasts) * tallies.len() as u64;
    drain(&config, &totals, start, group_expected, broadcast_expected).await;

    // Per receiver: short of what was due?
    let mut group_short = 0;
    let mut broadcast_short = 0;
    for (group, tally) in &tallies {
        let tally = tally.borrow();
        if tally.group.len() < sender.per_group.get(*group).copied().unwrap_or(0) {
            group_short += 1;
        }
        if tally.broadcast.len() < u64::from(config.broadcasts) {
            broadcast_short += 1;
        }
    }
    let deliveries = |expected: u64, received: u64, duplicates: u64, short: u64, h: &RefCell<_>| {
        let h = h.borrow();
        Deliveries {
            expected,
            received,
            lost: expected.saturating_sub(received),
            duplicates,
            receivers_short: short,
            latency: Latency::of(&h),
            histogram: tally::buckets(&h),
        }
    };
    report.group = deliveries(
        group_expected,
        totals.group_received.get(),
        totals.group_duplicates.get(),
        group_short,
        &totals.group_latency,
    );
    report.broadcast = deliveries(
        broadcast_expected,
        totals.broadcast_received.get(),
        totals.broadcast_duplicates.get(),
        broadcast_short,
        &totals.broadcast_latency,
    );
    report.misrouted = totals.misrouted.get();
    report.out_of_range = totals.out_of_range.get();
    report.early = totals.early.get();
    let last = totals.last_delivery.get();
    // From the end of the schedule: this process's senders' stop, or the last broadcast's due
    // time (a process without group traffic stops sending at once).
    let schedule_end = sender
        .stopped_micros
        .max(broadcasts_due_end(&config, start));
    report.drain_seconds = if last == 0 {
        -1.0
    } else {
        round3((last as f64 - schedule_end as f64) / 1e6)
    };
    report.start_micros = start;
    report.last_delivery_micros = last;
    report.closed = totals.closed.borrow().clone();
    let cpu = Pid::OurSelf.cpu_seconds().unwrap_or(0.0) - cpu_before;
    report.client_cpu_percent = round2(100.0 * cpu / wall.elapsed().as_secs_f64().max(1e-9));
    report.client_rss_kib = Pid::OurSelf.rss_kib().unwrap_or(0);
    report.error = sender.error.clone();
    report.sender = sender;
    emit("done", &serde_json::to_value(&report).unwrap_or_default());
    hold(&config).await;
    report
}

/// The start time (wall-clock micros): `start_at`, or what the start file says once it exists
/// (now, if it names no time). `None` if nothing came within `start_wait_max`.
async fn wait_for_start(config: &ScaleConfig) -> Option<u64> {
    if let Some(at) = config.start_at {
        return Some(at);
    }
    let Some(file) = &config.start_file else {
        return Some(stamp::now_micros());
    };
    let deadline = Instant::now() + config.start_wait_max;
    while Instant::now() < deadline {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            return Some(text.trim().parse().unwrap_or_else(|_| stamp::now_micros()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Sleep until the wall clock reads `micros` (at most an hour: a start time that far ahead
/// is a mistake).
async fn sleep_until_micros(micros: u64) {
    let wait = micros.saturating_sub(stamp::now_micros());
    tokio::time::sleep(Duration::from_micros(wait).min(Duration::from_secs(3600))).await;
}

/// Wait until everything due arrived, or nothing arrived for `drain_idle` once the last
/// broadcast was due, or `drain_max` passed since then (and since the senders stopped: a
/// process without group traffic still waits for every broadcast).
async fn drain(config: &ScaleConfig, totals: &Totals, start: u64, group: u64, broadcast: u64) {
    let broadcasts_end = broadcasts_due_end(config, start);
    let schedule_left = Duration::from_micros(broadcasts_end.saturating_sub(stamp::now_micros()));
    let deadline = Instant::now() + schedule_left + config.drain_max;
    loop {
        let complete =
            totals.group_received.get() >= group && totals.broadcast_received.get() >= broadcast;
        let now = stamp::now_micros();
        let last = totals.last_delivery.get().max(broadcasts_end);
        let idle = now > broadcasts_end
            && Duration::from_micros(now.saturating_sub(last)) >= config.drain_idle;
        if complete || idle || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// When the last broadcast is due, wall-clock micros.
fn broadcasts_due_end(config: &ScaleConfig, start: u64) -> u64 {
    start + (config.broadcast_interval * config.broadcasts.saturating_sub(1)).as_micros() as u64
}

/// Keep the connections open until the stop file exists, at most `hold_max`.
async fn hold(config: &ScaleConfig) {
    let Some(file) = &config.stop_file else {
        return;
    };
    let deadline = Instant::now() + config.hold_max;
    while Instant::now() < deadline && !file.exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
