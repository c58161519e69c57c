//! The load generator: many connections in one single-threaded process, an open-loop sender,
//! and counts of everything that arrives.
//!
//! Two runs:
//!
//! - [`run_idle`] opens connections and holds them (W1): connect rate, errors, connections the
//!   server closed while idle. Connections send a Ping every 15 s like real clients.
//! - [`run_steps`] opens receivers (optionally in groups, as users, or as targets of single
//!   connection messages), one sender, and runs open-loop rate steps (W2, W3, W5, W6): every
//!   payload carries its step and send time, receivers count deliveries per connection and
//!   record send→receive latency in an HdrHistogram. After each step it waits for the backlog
//!   to drain (bounded) and reports deliveries, losses, latency, and the CPU and memory of the
//!   watched server processes.
//!
//! Both must run inside a [`tokio::task::LocalSet`] on a current-thread runtime
//! ([`block_on_local`]): all connections share plain `Cell` counters and one histogram, so
//! counting costs no atomics, and the send stamp and the receive time come from one clock.
//! Every loop is bounded: connects and joins by a timeout, steps by their duration, drains by
//! [`StepsConfig::drain_max`], the hold of an idle run by [`IdleConfig::hold`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Conn, ConnectError, Endpoint, Negotiator, Socket};
use crate::procstat::{self, Pid};
use crate::stamp;
use crate::wire::{Scan, Wire};

/// Run `future` on a current-thread runtime inside a `LocalSet`, as the load generator needs.
pub fn block_on_local<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    Ok(local.block_on(&runtime, future))
}

/// Settings every run shares.
#[derive(Debug, Clone)]
pub struct Common {
    /// Where receivers connect.
    pub endpoint: Endpoint,
    /// Connection attempts (negotiate + upgrade + handshake) in flight at once.
    pub concurrency: usize,
    /// Bound of one connection attempt, and of one join.
    pub connect_timeout: Duration,
    /// Interval of the keep-alive Pings SignalR connections send.
    pub ping_interval: Duration,
}

/// Who the sender's messages are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Everyone (`Broadcast`; Socket.IO `bcast`).
    All,
    /// Receivers are spread over this many groups (receiver `i` joins `g{i % groups}`); the
    /// sender addresses the groups in turn (`SendToGroup`; Socket.IO: one room `r`, `relay`).
    Groups(usize),
    /// Receiver `i` connects as user `u{i}`; the sender addresses the users in turn
    /// (`SendToUser`).
    Users,
    /// The sender addresses the receivers' connection ids in turn (`SendToConnection`).
    Connections,
}

/// An idle-connections run (W1).
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// Shared settings.
    pub common: Common,
    /// Connections to open.
    pub connections: usize,
    /// Longest time to hold them once open.
    pub hold: Duration,
    /// Stop holding as soon as this file exists.
    pub stop_file: Option<PathBuf>,
}

/// A rate-steps run (W2-W6).
#[derive(Debug, Clone)]
pub struct StepsConfig {
    /// Shared settings; `common.endpoint` is where receivers connect.
    pub common: Common,
    /// Where the sender connects (another node for cross-node runs); default: the receivers'.
    pub sender_endpoint: Option<Endpoint>,
    /// More servers (other nodes) receivers are spread over: receiver `i` connects to
    /// `[common.endpoint, extra...][i % (1 + extra)]`.
    pub extra_endpoints: Vec<Endpoint>,
    /// Receiver connections.
    pub receivers: usize,
    /// Who messages are for.
    pub audience: Audience,
    /// The steps, in order: each sends at its rate (open loop) for its length.
    pub steps: Vec<StepPlan>,
    /// Length of each payload string (at least the stamp).
    pub payload_len: usize,
    /// Receivers that stop reading right after connecting (slow consumers, W6).
    pub slow: usize,
    /// Stop after the first step that does not keep up.
    pub stop_on_fail: bool,
    /// A drain ends when nothing arrived for this long...
    pub drain_idle: Duration,
    /// ...or at the latest this long after the sender stopped.
    pub drain_max: Duration,
    /// How long slow consumers read at the end to learn how they were closed.
    pub slow_drain: Duration,
    /// Server processes whose CPU and memory each step reports.
    pub watch: Vec<u32>,
}

/// One step of a [`StepsConfig`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPlan {
    /// Messages per second the sender sends.
    pub rate: f64,
    /// How long it sends.
    pub duration: Duration,
}

impl StepPlan {
    /// Parses `RATE` or `RATE@SECS` (a step with a length of its own, e.g. a low rate held
    /// longer so its p99 rests on more samples); `default` is the length of a bare `RATE`.
    pub fn parse(text: &str, default: Duration) -> Result<StepPlan, String> {
        let (rate, secs) = match text.split_once('@') {
            Some((rate, secs)) => (rate, Some(secs)),
            None => (text, None),
        };
        let rate: f64 = rate
            .trim()
            .parse()
            .map_err(|_| format!("step `{text}`: the rate is not a number"))?;
        if !(rate.is_finite() && rate > 0.0) {
            return Err(format!("step `{text}`: the rate must be above 0"));
        }
        let duration = match secs {
            None => default,
            Some(secs) => secs
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!("step `{text}`: the length after `@` must be seconds above 0")
                })?,
        };
        Ok(StepPlan { rate, duration })
    }
}

/// Criteria of a step that "kept up" (peers-measured.md §3).
pub const KEPT_UP_FRACTION: f64 = 0.999;
/// The last delivery may come at most this long after the step's sending was due to end.
/// Counted from the schedule, not from when the sender actually stopped: a server that reads
/// its sender slower than the step's rate holds the sender back (TCP backpressure), and that
/// backlog, waiting in the load generator, is as much a failure to keep up as one in the
/// server's queues.
pub const KEPT_UP_DRAIN: Duration = Duration::from_secs(1);
/// The p99 bound of a "p99 OK" step, in milliseconds.
pub const P99_LIMIT_MS: f64 = 100.0;

/// Whether a step kept up: at least [`KEPT_UP_FRACTION`] of `expected` delivered, the last
/// delivery (`last`, wall-clock micros) at most [`KEPT_UP_DRAIN`] after the step's sending
/// was due to end (`scheduled_end`).
fn kept_up(expected: u64, delivered: u64, last: u64, scheduled_end: u64) -> bool {
    expected > 0
        && delivered as f64 >= KEPT_UP_FRACTION * expected as f64
        && last <= scheduled_end + KEPT_UP_DRAIN.as_micros() as u64
}

/// Connections opened by one process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectReport {
    /// Connections asked for.
    pub requested: usize,
    /// Connections that completed their handshake.
    pub connected: usize,
    /// Failed attempts by stage (`tcp`, `negotiate`, `upgrade`, `handshake`, `timeout`).
    pub errors: BTreeMap<String, u64>,
    /// The first few failures, verbatim.
    pub error_samples: Vec<String>,
    /// Time to open them all.
    pub seconds: f64,
    /// Connections per second.
    pub rate: f64,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    pub(crate) fn of(histogram: &Histogram<u64>) -> Latency {
        let ms = |micros: u64| (micros as f64 / 1000.0 * 1000.0).round() / 1000.0;
        if histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// CPU and memory of one watched process over a step.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessUse {
    /// The pid.
    pub pid: u32,
    /// CPU used over the step and its drain, as a percentage of one core.
    pub cpu_percent: f64,
    /// CPU seconds used over the step and its drain.
    pub cpu_seconds: f64,
    /// Resident memory at the end of the step, KiB.
    pub rss_kib: u64,
}

/// One rate step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// 1-based step number.
    pub step: u32,
    /// Messages per second asked for.
    pub rate: f64,
    /// Messages the sender sent.
    pub sent: u64,
    /// Deliveries expected at healthy receivers.
    pub expected: u64,
    /// Deliveries counted at healthy receivers.
    pub delivered: u64,
    /// `expected - delivered` when positive: messages that never arrived.
    pub lost: u64,
    /// Healthy receivers that got fewer messages than were sent to them.
    pub conns_short: u64,
    /// Deliveries ÷ (last delivery − step start).
    pub deliveries_per_sec: f64,
    /// Time from the sender's stop to the last delivery, seconds (negative: none arrived).
    pub drain_seconds: f64,
    /// How long after the step's scheduled end the sender sent its last message, seconds:
    /// above zero when the server read the sender slower than the step's rate.
    pub send_lag_seconds: f64,
    /// Send→receive latency of every delivery.
    pub latency: Latency,
    /// At least 99.9 % delivered, the last within 1 s of the step's scheduled end.
    pub kept_up: bool,
    /// Kept up with p99 ≤ 100 ms.
    pub p99_ok: bool,
    /// The watched server processes.
    pub servers: Vec<ProcessUse>,
    /// Server CPU milliseconds per 1,000 deliveries (all watched processes).
    pub server_ms_per_1k: f64,
    /// This process's CPU over the step, % of one core.
    pub client_cpu_percent: f64,
    /// How busy each core of the machine was over the step, % (whoever used it: compare with
    /// the server's and the client's own share to see other load).
    pub core_busy_percent: Vec<f64>,
    /// Why the sender stopped early, if it did.
    pub sender_error: Option<String>,
}

/// What the slow consumers saw once they read again.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlowReport {
    /// Slow consumers.
    pub connections: usize,
    /// Of them, closed by the server with a hub Close message (or engine.io close).
    pub closed_with_message: usize,
    /// Of them, whose socket ended (closed by the server one way or another).
    pub ended: usize,
    /// Deliveries they had received in total before being closed.
    pub deliveries: u64,
    /// A sample Close message.
    pub close_sample: Option<String>,
}

/// A whole rate-steps run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepsReport {
    /// Receivers opened.
    pub receivers: ConnectReport,
    /// Joins (group audiences): seconds, joins/s and latency.
    pub join: Option<JoinReport>,
    /// Every step run.
    pub steps: Vec<StepReport>,
    /// Slow consumers, if any.
    pub slow: Option<SlowReport>,
    /// Healthy receivers closed during the run, by reason.
    pub closed: BTreeMap<String, u64>,
    /// Deliveries stamped with a step other than the current one (late stragglers).
    pub stray: u64,
    /// Failure before the steps (no sender, no receivers).
    pub error: Option<String>,
}

/// Joining groups.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinReport {
    /// Joins that succeeded.
    pub joined: usize,
    /// Joins that failed.
    pub failed: usize,
    /// Time for all of them.
    pub seconds: f64,
    /// Joins per second.
    pub rate: f64,
    /// Time from sending `JoinGroup` to its completion.
    pub latency: Latency,
}

/// A whole idle run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdleReport {
    /// Connections opened.
    pub connect: ConnectReport,
    /// How long they were held.
    pub held_seconds: f64,
    /// Connections still open at the end.
    pub open: u64,
    /// Connections that ended while held, by reason.
    pub closed: BTreeMap<String, u64>,
    /// This process's CPU while holding, % of one core.
    pub client_cpu_percent: f64,
}

/// Counters every connection of the process updates.
struct Shared {
    /// The step deliveries are counted for.
    step: Cell<u32>,
    /// Latency of this step's deliveries, in microseconds.
    histogram: RefCell<Histogram<u64>>,
    /// Deliveries of this step at healthy receivers.
    step_delivered: Cell<u64>,
    /// Deliveries stamped with another step.
    stray: Cell<u64>,
    /// Wall-clock micros of this step's last delivery (0: none yet).
    last_delivery: Cell<u64>,
    /// Connections that ended, by reason.
    closed: RefCell<BTreeMap<String, u64>>,
}

impl Shared {
    fn new() -> Rc<Shared> {
        Rc::new(Shared {
            step: Cell::new(0),
            histogram: RefCell::new(new_histogram()),
            step_delivered: Cell::new(0),
            stray: Cell::new(0),
            last_delivery: Cell::new(0),
            closed: RefCell::new(BTreeMap::new()),
        })
    }

    fn begin_step(&self, step: u32) {
        self.step.set(step);
        self.histogram.borrow_mut().reset();
        self.step_delivered.set(0);
        self.last_delivery.set(0);
    }

    fn closed(&self, reason: String) {
        *self.closed.borrow_mut().entry(reason).or_insert(0) += 1;
    }
}

pub(crate) fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits; values above saturate.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

/// Open `count` connections, at most `concurrency` in flight; connection `i` goes to
/// `endpoints[i % len]` with `query(i)` appended to its URLs.
pub(crate) async fn connect_many(
    endpoints: &[Endpoint],
    count: usize,
    concurrency: usize,
    timeout: Duration,
    query: impl Fn(usize) -> String,
) -> (Vec<Option<Conn>>, ConnectReport) {
    let started = Instant::now();
    // Kept-alive negotiate connections, one pool per server: a negotiator moved to another
    // server would reconnect, and every closed one leaves a port of the source address in
    // TIME_WAIT (16 k connections over 6 servers would run out of ports).
    let pools: Vec<RefCell<Vec<Negotiator>>> =
        endpoints.iter().map(|_| RefCell::new(Vec::new())).collect();
    let mut report = ConnectReport {
        requested: count,
        ..ConnectReport::default()
    };
    let mut conns: Vec<Option<Conn>> = (0..count).map(|_| None).collect();
    let pools = &pools;
    let query = &query;
    let mut attempts = futures::stream::iter(0..count)
        .map(|i| async move {
            let endpoint = &endpoints[i % endpoints.len()];
            let pool = &pools[i % endpoints.len()];
            let mut negotiator = pool.borrow_mut().pop().unwrap_or_default();
            negotiator.retarget(endpoint.addr);
            let result =
                client::within(timeout, client::open(endpoint, &mut negotiator, &query(i))).await;
            pool.borrow_mut().push(negotiator);
            (i, result)
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((i, result)) = attempts.next().await {
        match result {
            Ok(conn) => {
                report.connected += 1;
                conns[i] = Some(conn);
            }
            Err(ConnectError { stage, detail }) => {
                *report.errors.entry(stage.to_owned()).or_insert(0) += 1;
                if report.error_samples.len() < 5 {
                    report.error_samples.push(format!("{stage}: {detail}"));
                }
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.rate = report.connected as f64 / report.seconds.max(1e-9);
    (conns, report)
}

/// Join every open connection `i` to `group_of(i)`, at most `concurrency` joins in flight,
/// each bounded by `timeout`. Returns, per connection, whether it joined (`true` for the
/// ones not open, which the caller skips anyway), and the join report.
pub(crate) async fn join_groups(
    conns: &mut [Option<Conn>],
    wire: Wire,
    group_of: impl Fn(usize) -> String,
    concurrency: usize,
    timeout: Duration,
) -> (Vec<bool>, JoinReport) {
    let started = Instant::now();
    let histogram = RefCell::new(new_histogram());
    let mut joined = vec![true; conns.len()];
    let group_of = &group_of;
    let results: Vec<(usize, bool)> = futures::stream::iter(
        conns
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.as_mut().map(|c| (i, c))),
    )
    .map(|(i, conn)| {
        let group = group_of(i);
        let histogram = &histogram;
        async move {
            let t = Instant::now();
            let ok = client::within(timeout, client::join(&mut conn.ws, wire, &group))
                .await
                .is_ok();
            if ok {
                histogram
                    .borrow_mut()
                    .saturating_record(t.elapsed().as_micros() as u64);
            }
            (i, ok)
        }
    })
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await;
    let mut join = JoinReport::default();
    for (i, ok) in results {
        joined[i] = ok;
        if ok {
            join.joined += 1;
        } else {
            join.failed += 1;
        }
    }
    join.seconds = started.elapsed().as_secs_f64();
    join.rate = join.joined as f64 / join.seconds.max(1e-9);
    join.latency = Latency::of(&histogram.borrow());
    (joined, join)
}

/// Read a receiver until its socket ends: count stamped deliveries, record their latency,
/// answer engine.io pings, send SignalR Pings every `ping_interval`.
async fn receive(
    ws: Socket,
    wire: Wire,
    delivered: Rc<Cell<u64>>,
    shared: Rc<Shared>,
    ping_interval: Duration,
    first_ping_in: Duration,
) {
    let reason = read_until_closed(ws, wire, ping_interval, first_ping_in, |data| {
        let now = stamp::now_micros();
        let step = shared.step.get();
        let (scan, this_step) = {
            let mut this_step = 0u64;
            let mut histogram = shared.histogram.borrow_mut();
            let scan = wire.scan(data, |s| {
                if s.step == step {
                    this_step += 1;
                    histogram.saturating_record(now.saturating_sub(s.sent_micros).max(1));
                } else {
                    shared.stray.set(shared.stray.get() + 1);
                }
            });
            (scan, this_step)
        };
        if scan.deliveries > 0 {
            delivered.set(delivered.get() + u64::from(scan.deliveries));
        }
        if this_step > 0 {
            shared
                .step_delivered
                .set(shared.step_delivered.get() + this_step);
            shared.last_delivery.set(now);
        }
        scan
    })
    .await;
    shared.closed(reason);
}

/// Read `ws` until it ends, handing every data message to `on_data` (which scans and counts
/// it), answering engine.io pings and sending SignalR Pings every `ping_interval`. Returns why
/// the connection ended.
pub(crate) async fn read_until_closed(
    mut ws: Socket,
    wire: Wire,
    ping_interval: Duration,
    first_ping_in: Duration,
    mut on_data: impl FnMut(&[u8]) -> Scan,
) -> String {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + first_ping_in, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hub_close: Option<String> = None;
    loop {
        tokio::select! {
            message = ws.next() => {
                let data = match message {
                    Some(Ok(Message::Text(text))) => Bytes::from(text),
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_))) | None => {
                        return match hub_close.take() {
                            Some(close) => format!("server Close: {}", truncate(&close)),
                            None => "socket closed by the server".to_owned(),
                        };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return format!("read error: {}", truncate(&error.to_string())),
                };
                let scan = on_data(&data);
                if scan.pings > 0 && let Some(pong) = wire.pong() && ws.send(wire.message(pong)).await.is_err() {
                    return "write error".to_owned();
                }
                if scan.close.is_some() {
                    hub_close = scan.close;
                }
            }
            _ = ping.tick(), if wire.ping().is_some() => {
                if let Some(frame) = wire.ping() && ws.send(wire.message(frame)).await.is_err() {
                    return "write error".to_owned();
                }
            }
        }
    }
}

pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Spread first pings over the interval so thousands of connections do not ping at once.
pub(crate) fn ping_offset(i: usize, interval: Duration) -> Duration {
    let spread = interval.as_millis().max(1) as u64;
    interval + Duration::from_millis((i as u64).wrapping_mul(7919) % spread)
}

/// Open connections and hold them (W1).
pub async fn run_idle(
    config: IdleConfig,
    emit: &mut dyn FnMut(&str, &serde_json::Value),
) -> IdleReport {
    let common = &config.common;
    let (conns, connect) = connect_many(
        std::slice::from_ref(&common.endpoint),
        config.connections,
        common.concurrency,
        common.connect_timeout,
        |_| String::new(),
    )
    .await;
    emit("ready", &serde_json::to_value(&connect).unwrap_or_default());
    let shared = Shared::new();
    let delivered = Rc::new(Cell::new(0));
    let mut open = 0u64;
    for (i, conn) in conns.into_iter().enumerate() {
        if let Some(conn) = conn {
            open += 1;
            tokio::task::spawn_local(receive(
                conn.ws,
                common.endpoint.wire,
                delivered.clone(),
                shared.clone(),
                common.ping_interval,
                ping_offset(i, common.ping_interval),
            ));
        }
    }
    let cpu0 = Pid::OurSelf.cpu_seconds().unwrap_or(0.0);
    let held = Instant::now();
    while held.elapsed() < config.hold {
        if config.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held_seconds = held.elapsed().as_secs_f64();
    let cpu = Pid::OurSelf.cpu_seconds().unwrap_or(0.0) - cpu0;
    let closed = shared.closed.borrow().clone();
    let closed_count: u64 = closed.values().sum();
    IdleReport {
        connect,
        held_seconds,
        open: open - closed_count,
        closed,
        client_cpu_percent: 100.0 * cpu / held_seconds.max(1e-9),
    }
}

/// What the sender does in a step.
enum Command {
    Step {
        step: u32,
        rate: f64,
        duration: Duration,
        reply: oneshot::Sender<Sent>,
    },
}

/// What the sender did in a step.
#[derive(Debug, Default)]
struct Sent {
    /// Messages sent.
    total: u64,
    /// Messages sent to each address (empty for `All`).
    per_address: Vec<u64>,
    /// Wall-clock micros when it stopped sending.
    stopped: u64,
    /// Why it stopped early.
    error: Option<String>,
}

/// The sender: a hub method (or Socket.IO event) and the addresses it cycles through.
struct SendPlan {
    wire: Wire,
    method: &'static str,
    addresses: Vec<String>,
    payload_len: usize,
}

impl SendPlan {
    fn frame(&self, n: u64, step: u32) -> Bytes {
        let payload = stamp::payload(step, stamp::now_micros(), self.payload_len);
        if self.addresses.is_empty() {
            self.wire.invocation(None, self.method, &[&payload])
        } else {
            let address = &self.addresses[(n % self.addresses.len() as u64) as usize];
            if self.wire == Wire::SocketIo {
                // Socket.IO events carry only the payload; the room is fixed on the server.
                self.wire.invocation(None, self.method, &[&payload])
            } else {
                self.wire
                    .invocation(None, self.method, &[address, &payload])
            }
        }
    }
}

/// The sender's task: keeps reading (its copies of broadcasts, pings) between and during
/// steps, and sends at the commanded rate.
async fn sender(mut ws: Socket, plan: SendPlan, mut commands: mpsc::Receiver<Command>) {
    let wire = plan.wire;
    let mut broken: Option<String> = None;
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(Command::Step { step, rate, duration, reply }) = command else { break };
                let sent = if let Some(error) = &broken {
                    Sent { error: Some(error.clone()), stopped: stamp::now_micros(), ..Sent::default() }
                } else {
                    send_step(&mut ws, &plan, step, rate, duration).await
                };
                if let Some(error) = &sent.error {
                    broken = Some(error.clone());
                }
                let _ = reply.send(sent);
            }
            message = ws.next(), if broken.is_none() => match message {
                Some(Ok(Message::Text(text))) => {
                    if wire.scan(text.as_bytes(), |_| {}).pings > 0 && let Some(pong) = wire.pong() {
                        let _ = ws.send(wire.message(pong)).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => broken = Some(format!("sender read error: {error}")),
                None => broken = Some("sender connection closed".to_owned()),
            },
        }
    }
}

async fn send_step(
    ws: &mut Socket,
    plan: &SendPlan,
    step: u32,
    rate: f64,
    duration: Duration,
) -> Sent {
    let wire = plan.wire;
    let mut sent = Sent {
        per_address: vec![0; plan.addresses.len()],
        ..Sent::default()
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let elapsed = started.elapsed();
                let done = elapsed >= duration;
                let due = (rate * elapsed.min(duration).as_secs_f64()) as u64;
                while sent.total < due {
                    let frame = plan.frame(sent.total, step);
                    if !plan.addresses.is_empty() {
                        let at = (sent.total % plan.addresses.len() as u64) as usize;
                        sent.per_address[at] += 1;
                    }
                    if let Err(error) = ws.feed(wire.message(frame)).await {
                        sent.error = Some(format!("send failed: {error}"));
                        break;
                    }
                    sent.total += 1;
                }
                if sent.error.is_none() && let Err(error) = ws.flush().await {
                    sent.error = Some(format!("flush failed: {error}"));
                }
                if done || sent.error.is_some() {
                    break;
                }
            }
            message = ws.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if wire.scan(text.as_bytes(), |_| {}).pings > 0 && let Some(pong) = wire.pong() {
                        let _ = ws.feed(wire.message(pong)).await;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => { sent.error = Some(format!("sender read error: {error}")); break; }
                None => { sent.error = Some("sender connection closed".to_owned()); break; }
            },
        }
    }
    sent.stopped = stamp::now_micros();
    sent
}

/// Run rate steps (W2-W6); `emit` receives `setup`, `step` and `slow` events as they happen.
pub async fn run_steps(
    config: StepsConfig,
    emit: &mut dyn FnMut(&str, &serde_json::Value),
) -> StepsReport {
    let common = &config.common;
    let wire = common.endpoint.wire;
    let n = config.receivers;
    let mut report = StepsReport::default();

    // Which receivers stop reading: spread evenly.
    let slow_every = n.checked_div(config.slow).map_or(0, |every| every.max(1));
    let is_slow =
        |i: usize| slow_every > 0 && i.is_multiple_of(slow_every) && i / slow_every < config.slow;

    let audience = config.audience;
    let mut endpoints = vec![common.endpoint.clone()];
    endpoints.extend(config.extra_endpoints.iter().cloned());
    let (conns, connect) = connect_many(
        &endpoints,
        n,
        common.concurrency,
        common.connect_timeout,
        |i| match audience {
            Audience::Users => format!("user=u{i}"),
            _ => String::new(),
        },
    )
    .await;
    report.receivers = connect;
    let mut conns = conns;

    // Join groups.
    let group_of = |i: usize| match audience {
        Audience::Groups(groups) if wire == Wire::SocketIo => {
            let _ = groups;
            "r".to_owned()
        }
        Audience::Groups(groups) => format!("g{}", i % groups.max(1)),
        _ => String::new(),
    };
    let mut joined = vec![true; n];
    if let Audience::Groups(_) = audience {
        let (ok, join) = join_groups(
            &mut conns,
            wire,
            group_of,
            common.concurrency,
            common.connect_timeout,
        )
        .await;
        joined = ok;
        report.join = Some(join);
    }

    // Addresses the sender cycles through, and healthy members behind each.
    let healthy = |i: usize, c: &Option<Conn>| c.is_some() && joined[i] && !is_slow(i);
    let (method, addresses, members): (&'static str, Vec<String>, Vec<u64>) = match (audience, wire)
    {
        (Audience::All, Wire::SocketIo) => ("bcast", Vec::new(), Vec::new()),
        (Audience::All, _) => ("Broadcast", Vec::new(), Vec::new()),
        (Audience::Groups(_), Wire::SocketIo) => {
            let members = conns
                .iter()
                .enumerate()
                .filter(|(i, c)| healthy(*i, c))
                .count() as u64;
            ("relay", vec!["r".to_owned()], vec![members])
        }
        (Audience::Groups(groups), _) => {
            let mut members = vec![0u64; groups.max(1)];
            for (i, c) in conns.iter().enumerate() {
                if healthy(i, c) {
                    members[i % groups.max(1)] += 1;
                }
            }
            let names = (0..groups.max(1)).map(|g| format!("g{g}")).collect();
            ("SendToGroup", names, members)
        }
        (Audience::Users, _) => {
            let users: Vec<String> = (0..n)
                .filter(|&i| healthy(i, &conns[i]))
                .map(|i| format!("u{i}"))
                .collect();
            let members = vec![1; users.len()];
            ("SendToUser", users, members)
        }
        (Audience::Connections, _) => {
            let ids: Vec<String> = (0..n)
                .filter(|&i| healthy(i, &conns[i]))
                .filter_map(|i| conns[i].as_ref().and_then(|c| c.connection_id.clone()))
                .collect();
            let members = vec![1; ids.len()];
            ("SendToConnection", ids, members)
        }
    };
    // Which address index each healthy receiver is reached through (None: All).
    let address_of = |i: usize| -> Option<usize> {
        match audience {
            Audience::All => None,
            Audience::Groups(_) if wire == Wire::SocketIo => Some(0),
            Audience::Groups(groups) => Some(i % groups.max(1)),
            // Numbered in order among the healthy receivers (below).
            Audience::Users | Audience::Connections => None,
        }
    };

    // Start the healthy receivers; keep the slow ones unread.
    let shared = Shared::new();
    let mut receivers: Vec<(Rc<Cell<u64>>, Option<usize>)> = Vec::new();
    let mut slow: Vec<(Socket, Rc<Cell<u64>>)> = Vec::new();
    let address_index: Vec<Option<usize>> = match audience {
        Audience::Users | Audience::Connections => {
            let mut next = 0;
            (0..n)
                .map(|i| {
                    if healthy(i, &conns[i]) {
                        next += 1;
                        Some(next - 1)
                    } else {
                        None
                    }
                })
                .collect()
        }
        _ => (0..n).map(address_of).collect(),
    };
    let healthy_flags: Vec<bool> = (0..n).map(|i| healthy(i, &conns[i])).collect();
    for (i, conn) in conns.into_iter().enumerate() {
        let Some(conn) = conn else { continue };
        let counter = Rc::new(Cell::new(0));
        if is_slow(i) {
            slow.push((conn.ws, counter));
        } else if healthy_flags[i] {
            receivers.push((counter.clone(), address_index[i]));
            tokio::task::spawn_local(receive(
                conn.ws,
                wire,
                counter,
                shared.clone(),
                common.ping_interval,
                ping_offset(i, common.ping_interval),
            ));
        }
    }

    // The sender.
    let sender_endpoint = config
        .sender_endpoint
        .clone()
        .unwrap_or_else(|| common.endpoint.clone());
    let mut negotiator = Negotiator::default();
    let sender_conn = client::within(
        common.connect_timeout,
        client::open(&sender_endpoint, &mut negotiator, ""),
    )
    .await;
    drop(negotiator);
    let sender_conn = match sender_conn {
        Ok(conn) => conn,
        Err(error) => {
            report.error = Some(format!("sender: {}: {}", error.stage, error.detail));
            return report;
        }
    };
    if receivers.is_empty() {
        report.error = Some("no receiver connected".to_owned());
        return report;
    }
    let plan = SendPlan {
        wire: sender_endpoint.wire,
        method,
        addresses,
        payload_len: config.payload_len,
    };
    let (commands, command_rx) = mpsc::channel(1);
    tokio::task::spawn_local(sender(sender_conn.ws, plan, command_rx));
    emit(
        "setup",
        &serde_json::json!({
            "receivers": report.receivers,
            "join": report.join,
            "healthy": receivers.len(),
            "slow": slow.len(),
        }),
    );
    // Let the last handshakes and joins settle before the first step.
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (index, &StepPlan { rate, duration }) in config.steps.iter().enumerate() {
        let step = index as u32 + 1;
        shared.begin_step(step);
        let before: Vec<u64> = receivers.iter().map(|(c, _)| c.get()).collect();
        let cpu_before: Vec<Option<f64>> = config
            .watch
            .iter()
            .map(|&p| Pid::Id(p).cpu_seconds())
            .collect();
        let own_before = Pid::OurSelf.cpu_seconds().unwrap_or(0.0);
        let cores_before = procstat::core_busy_seconds();
        let wall_before = Instant::now();
        let started = stamp::now_micros();

        let (reply, sent) = oneshot::channel();
        let command = Command::Step {
            step,
            rate,
            duration,
            reply,
        };
        let sent = if commands.send(command).await.is_ok() {
            sent.await.unwrap_or_default()
        } else {
            Sent::default()
        };
        let expected = if members.is_empty() {
            sent.total * receivers.len() as u64
        } else {
            sent.per_address
                .iter()
                .zip(&members)
                .map(|(s, m)| s * m)
                .sum()
        };

        // Drain: until everything arrived, nothing arrived for a while, or the bound.
        let stopped = Instant::now();
        loop {
            if shared.step_delivered.get() >= expected {
                break;
            }
            let last = shared.last_delivery.get();
            let since_last = if last == 0 {
                stopped.elapsed()
            } else {
                Duration::from_micros(stamp::now_micros().saturating_sub(last))
                    .min(stopped.elapsed())
            };
            if since_last >= config.drain_idle || stopped.elapsed() >= config.drain_max {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let wall = wall_before.elapsed().as_secs_f64();
        let delivered = shared.step_delivered.get();
        let last = shared.last_delivery.get();
        let mut conns_short = 0;
        for ((counter, address), before) in receivers.iter().zip(&before) {
            let got = counter.get() - before;
            let due = match address {
                None => sent.total,
                Some(a) => sent.per_address.get(*a).copied().unwrap_or(0),
            };
            if got < due {
                conns_short += 1;
            }
        }
        let servers: Vec<ProcessUse> = config
            .watch
            .iter()
            .zip(&cpu_before)
            .map(|(&pid, before)| {
                let used = match (before, Pid::Id(pid).cpu_seconds()) {
                    (Some(b), Some(a)) => a - b,
                    _ => 0.0,
                };
                ProcessUse {
                    pid,
                    cpu_percent: round2(100.0 * used / wall),
                    cpu_seconds: round3(used),
                    rss_kib: Pid::Id(pid).rss_kib().unwrap_or(0),
                }
            })
            .collect();
        let server_cpu: f64 = servers.iter().map(|s| s.cpu_seconds).sum();
        let own = Pid::OurSelf.cpu_seconds().unwrap_or(0.0) - own_before;
        let core_busy_percent = procstat::core_busy_seconds()
            .iter()
            .zip(&cores_before)
            .map(|(after, before)| round2(100.0 * (after - before) / wall))
            .collect();
        let latency = Latency::of(&shared.histogram.borrow());
        let drain_seconds = if last == 0 {
            -1.0
        } else {
            (last as f64 - sent.stopped as f64) / 1e6
        };
        let scheduled_end = started + duration.as_micros() as u64;
        let send_lag_seconds = sent.stopped.saturating_sub(scheduled_end) as f64 / 1e6;
        let kept_up = sent.error.is_none() && kept_up(expected, delivered, last, scheduled_end);
        let step_report = StepReport {
            step,
            rate,
            sent: sent.total,
            expected,
            delivered,
            lost: expected.saturating_sub(delivered),
            conns_short,
            deliveries_per_sec: if last > started {
                round2(delivered as f64 / ((last - started) as f64 / 1e6))
            } else {
                0.0
            },
            drain_seconds: round3(drain_seconds),
            send_lag_seconds: round3(send_lag_seconds),
            p99_ok: kept_up && latency.p99 <= P99_LIMIT_MS,
            latency,
            kept_up,
            servers,
            server_ms_per_1k: if delivered > 0 {
                round3(server_cpu * 1000.0 / (delivered as f64 / 1000.0))
            } else {
                0.0
            },
            client_cpu_percent: round2(100.0 * own / wall),
            core_busy_percent,
            sender_error: sent.error,
        };
        emit(
            "step",
            &serde_json::to_value(&step_report).unwrap_or_default(),
        );
        let failed = !step_report.kept_up;
        report.steps.push(step_report);
        if failed && config.stop_on_fail {
            break;
        }
    }
    drop(commands);

    if !slow.is_empty() {
        let slow_report = drain_slow(slow, wire, config.slow_drain).await;
        emit(
            "slow",
            &serde_json::to_value(&slow_report).unwrap_or_default(),
        );
        report.slow = Some(slow_report);
    }
    report.closed = shared.closed.borrow().clone();
    report.stray = shared.stray.get();
    report
}

/// Let the slow consumers read again, for at most `limit`, to see how the server treated them.
async fn drain_slow(slow: Vec<(Socket, Rc<Cell<u64>>)>, wire: Wire, limit: Duration) -> SlowReport {
    let mut report = SlowReport {
        connections: slow.len(),
        ..SlowReport::default()
    };
    let results = futures::future::join_all(slow.into_iter().map(|(mut ws, _)| async move {
        let mut deliveries = 0u64;
        let mut close = None;
        let ended = tokio::time::timeout(limit, async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let scan = wire.scan(text.as_bytes(), |_| {});
                        deliveries += u64::from(scan.deliveries);
                        close = close.take().or(scan.close);
                    }
                    Some(Ok(Message::Binary(data))) => {
                        let scan = wire.scan(&data, |_| {});
                        deliveries += u64::from(scan.deliveries);
                        close = close.take().or(scan.close);
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
        .is_ok();
        (deliveries, close, ended)
    }))
    .await;
    for (deliveries, close, ended) in results {
        report.deliveries += deliveries;
        if close.is_some() {
            report.closed_with_message += 1;
            if report.close_sample.is_none() {
                report.close_sample = close.map(|c| truncate(&c));
            }
        }
        if ended {
            report.ended += 1;
        }
    }
    report
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The load average now, for reports.
pub fn load_average() -> Option<[f64; 3]> {
    procstat::load_average()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_is_a_rate_with_the_default_length_or_its_own() {
        let default = Duration::from_secs(10);
        assert_eq!(
            StepPlan::parse("500", default),
            Ok(StepPlan {
                rate: 500.0,
                duration: default
            })
        );
        assert_eq!(
            StepPlan::parse("100@60", default),
            Ok(StepPlan {
                rate: 100.0,
                duration: Duration::from_secs(60)
            })
        );
        assert_eq!(
            StepPlan::parse(" 2.5 @ 0.5", default).map(|s| (s.rate, s.duration)),
            Ok((2.5, Duration::from_millis(500)))
        );
        for bad in [
            "", "x", "0", "-1", "100@", "100@0", "100@-2", "100@x", "inf",
        ] {
            assert!(
                StepPlan::parse(bad, default).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn a_step_keeps_up_by_its_schedule_not_by_when_its_sender_stopped() {
        let end = 60_000_000; // the step's sending was due to end here (micros)
        assert!(kept_up(1000, 1000, end + 900_000, end));
        assert!(kept_up(1000, 999, end, end), "99.9 % delivered is enough");
        assert!(!kept_up(1000, 998, end, end));
        assert!(!kept_up(0, 0, end, end), "nothing sent is not keeping up");
        // A sender held back 1.4 s by a server that read it too slowly, whose last message
        // was delivered 0.2 s after it went out: 1.6 s past the schedule.
        assert!(!kept_up(1000, 1000, end + 1_600_000, end));
    }
}
