//! `loadgen`: the SignalR / Socket.IO load generator (see `signalr_bench::loadgen`).
//!
//! ```text
//! loadgen idle  --url http://127.0.0.1:5000/hub --connections 5000 --source 127.0.0.2 \
//!               [--hold-secs 300] [--stop-file F]
//! loadgen steps --url http://127.0.0.1:5000/hub --receivers 1000 --rates 100,200,400 \
//!               [--audience all|groups:G|users|connections] [--protocol json|messagepack]
//!               [--wire signalr|socketio] [--slow K] [--watch PID,...] [--stop-on-fail]
//! loadgen scale --url http://127.0.0.1:5001/hub --url http://127.0.0.1:5002/hub ... \
//!               --connections 16670 --index-offset 16670 --source 127.0.0.3 \
//!               --group-rate 1667 --secs 60 --broadcasts 60 [--broadcaster] \
//!               --start-file F --stop-file S
//! ```
//!
//! Prints one JSON object per line on stdout: `{"event":"ready"|"setup"|"step"|"slow"|"done",
//! ...}`; the last one (`done`) holds the whole report. Runs on one thread; pin it with
//! `taskset`. At most ~19,000 connections per process (the file-descriptor limit here).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use signalr_bench::client::{Endpoint, parse_url};
use signalr_bench::loadgen::{self, Audience, Common, IdleConfig, StepPlan, StepsConfig};
use signalr_bench::scale::{self, ScaleConfig};
use signalr_bench::wire::Wire;
use signalr_protocol::Protocol;

/// Load generator for SignalR and Socket.IO servers on loopback.
#[derive(Debug, Parser)]
#[command(about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Open connections and hold them (W1).
    Idle(IdleArgs),
    /// Receivers plus an open-loop sender, in rate steps (W2-W6).
    Steps(StepsArgs),
    /// One of several cooperating processes of a many-node run: groups and broadcasts.
    Scale(ScaleArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum WireArg {
    Signalr,
    Socketio,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ProtocolArg {
    Json,
    Messagepack,
}

#[derive(Debug, Args)]
struct CommonArgs {
    /// Server URL: `http://127.0.0.1:PORT/hub` (SignalR) or `http://127.0.0.1:PORT` (Socket.IO).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    conn: ConnArgs,
}

/// How connections are made, whatever the servers.
#[derive(Debug, Args)]
struct ConnArgs {
    /// Protocol family.
    #[arg(long, value_enum, default_value = "signalr")]
    wire: WireArg,
    /// SignalR hub protocol.
    #[arg(long, value_enum, default_value = "json")]
    protocol: ProtocolArg,
    /// Connect the WebSocket directly, without negotiate (`skipNegotiation`).
    #[arg(long)]
    skip_negotiate: bool,
    /// Local address to connect from (127.0.0.x).
    #[arg(long)]
    source: Option<IpAddr>,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// Bound of one connection attempt or join, seconds.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Interval of client Pings (SignalR), seconds.
    #[arg(long, default_value_t = 15.0)]
    ping_interval: f64,
}

impl CommonArgs {
    fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        self.conn.endpoint(url)
    }

    fn common(&self) -> Result<Common, String> {
        Ok(Common {
            endpoint: self.endpoint(&self.url)?,
            concurrency: self.conn.concurrency,
            connect_timeout: Duration::from_secs_f64(self.conn.connect_timeout),
            ping_interval: Duration::from_secs_f64(self.conn.ping_interval),
        })
    }
}

impl ConnArgs {
    fn endpoint(&self, url: &str) -> Result<Endpoint, String> {
        let (addr, path) = parse_url(url)?;
        if let Some(source) = self.source
            && !source.is_loopback()
        {
            return Err(format!("--source {source}: loopback addresses only"));
        }
        let wire = match self.wire {
            WireArg::Socketio => Wire::SocketIo,
            WireArg::Signalr => Wire::SignalR(match self.protocol {
                ProtocolArg::Json => Protocol::Json,
                ProtocolArg::Messagepack => Protocol::MessagePack,
            }),
        };
        Ok(Endpoint {
            addr,
            path,
            wire,
            negotiate: !self.skip_negotiate,
            source: self.source,
        })
    }
}

#[derive(Debug, Args)]
struct IdleArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Connections to open.
    #[arg(long)]
    connections: usize,
    /// Longest hold once connected, seconds.
    #[arg(long, default_value_t = 300.0)]
    hold_secs: f64,
    /// Stop holding when this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct StepsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Where the sender connects (default: --url), e.g. another node.
    #[arg(long)]
    sender_url: Option<String>,
    /// More servers to spread receivers over (repeat), e.g. the other nodes of a cluster.
    #[arg(long)]
    also_url: Vec<String>,
    /// Receiver connections.
    #[arg(long)]
    receivers: usize,
    /// all | groups:G | users | connections.
    #[arg(long, default_value = "all")]
    audience: String,
    /// Messages per second of each step, comma-separated; `RATE@SECS` gives a step a length
    /// of its own (e.g. `500,100@60,1000`).
    #[arg(long, value_delimiter = ',')]
    rates: Vec<String>,
    /// Seconds per step.
    #[arg(long, default_value_t = 6.0)]
    step_secs: f64,
    /// Payload string length in bytes.
    #[arg(long, default_value_t = 48)]
    payload: usize,
    /// Receivers that stop reading (slow consumers).
    #[arg(long, default_value_t = 0)]
    slow: usize,
    /// Stop at the first step that does not keep up.
    #[arg(long)]
    stop_on_fail: bool,
    /// Server pids whose CPU and memory to report, comma-separated.
    #[arg(long, value_delimiter = ',')]
    watch: Vec<u32>,
    /// A drain ends after this long without deliveries, milliseconds.
    #[arg(long, default_value_t = 500)]
    drain_idle_ms: u64,
    /// A drain ends at the latest this long after the sender stopped, seconds.
    #[arg(long, default_value_t = 15.0)]
    drain_max_secs: f64,
    /// How long slow consumers read at the end, seconds.
    #[arg(long, default_value_t = 10.0)]
    slow_drain_secs: f64,
}

#[derive(Debug, Args)]
struct ScaleArgs {
    /// A node's URL, `http://127.0.0.1:PORT/hub` (repeat: global connection i goes to node
    /// i % nodes).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    #[command(flatten)]
    conn: ConnArgs,
    /// Where this process's first sender connects (default: the first --url); further senders
    /// and the broadcaster go to the --url nodes after it, in turn.
    #[arg(long)]
    sender_url: Option<String>,
    /// Group sender connections; the process's --group-rate is shared among them.
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// Receiver connections of this process.
    #[arg(long)]
    connections: usize,
    /// Global index of its first connection (a multiple of --group-size).
    #[arg(long, default_value_t = 0)]
    index_offset: usize,
    /// Connections per group: global connection i joins g{i / size}.
    #[arg(long, default_value_t = 10)]
    group_size: usize,
    /// Group messages per second this process sends to its own groups.
    #[arg(long)]
    group_rate: f64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 60.0)]
    secs: f64,
    /// This process sends the broadcasts.
    #[arg(long)]
    broadcaster: bool,
    /// Broadcasts the broadcaster sends, one per --broadcast-interval (every process expects
    /// this many).
    #[arg(long, default_value_t = 0)]
    broadcasts: u32,
    /// Seconds between broadcasts.
    #[arg(long, default_value_t = 1.0)]
    broadcast_interval: f64,
    /// Payload string length in bytes.
    #[arg(long, default_value_t = 48)]
    payload: usize,
    /// Start when this file exists; it may hold the start time in Unix microseconds.
    #[arg(long)]
    start_file: Option<PathBuf>,
    /// Start at this time, Unix microseconds.
    #[arg(long)]
    start_at: Option<u64>,
    /// Longest wait for the start, seconds.
    #[arg(long, default_value_t = 900.0)]
    start_wait_max: f64,
    /// A drain ends after this long without deliveries, milliseconds.
    #[arg(long, default_value_t = 2000)]
    drain_idle_ms: u64,
    /// A drain ends at the latest this long after the sender stopped, seconds.
    #[arg(long, default_value_t = 30.0)]
    drain_max_secs: f64,
    /// After the report, hold the connections until this file exists.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Longest hold, seconds.
    #[arg(long, default_value_t = 120.0)]
    hold_max_secs: f64,
}

impl ScaleArgs {
    fn config(&self) -> Result<ScaleConfig, String> {
        if self.conn.wire.is_socketio() {
            return Err("scale: SignalR only (groups and broadcasts of the bench hub)".to_owned());
        }
        if self.group_size == 0 || !self.index_offset.is_multiple_of(self.group_size) {
            return Err("--index-offset must be a multiple of --group-size (> 0)".to_owned());
        }
        let nodes = self
            .urls
            .iter()
            .map(|url| self.conn.endpoint(url))
            .collect::<Result<Vec<_>, _>>()?;
        // Senders (and then the broadcaster) take the nodes in turn from --sender-url on.
        let first = match &self.sender_url {
            Some(url) => match self.urls.iter().position(|u| u == url) {
                Some(at) => at,
                None => return Err(format!("--sender-url {url}: not one of the --url nodes")),
            },
            None => 0,
        };
        let node = |k: usize| nodes[(first + k) % nodes.len()].clone();
        let senders = (0..self.senders.max(1)).map(node).collect();
        let broadcast_from = node(self.senders.max(1));
        Ok(ScaleConfig {
            senders,
            broadcast_from,
            nodes,
            concurrency: self.conn.concurrency,
            connect_timeout: Duration::from_secs_f64(self.conn.connect_timeout),
            ping_interval: Duration::from_secs_f64(self.conn.ping_interval),
            connections: self.connections,
            index_offset: self.index_offset,
            group_size: self.group_size,
            group_rate: self.group_rate,
            duration: Duration::from_secs_f64(self.secs),
            broadcaster: self.broadcaster,
            broadcasts: self.broadcasts,
            broadcast_interval: Duration::from_secs_f64(self.broadcast_interval),
            payload_len: self.payload,
            start_file: self.start_file.clone(),
            start_at: self.start_at,
            start_wait_max: Duration::from_secs_f64(self.start_wait_max),
            drain_idle: Duration::from_millis(self.drain_idle_ms),
            drain_max: Duration::from_secs_f64(self.drain_max_secs),
            stop_file: self.stop_file.clone(),
            hold_max: Duration::from_secs_f64(self.hold_max_secs),
        })
    }
}

impl WireArg {
    fn is_socketio(self) -> bool {
        matches!(self, WireArg::Socketio)
    }
}

fn audience(text: &str) -> Result<Audience, String> {
    match text {
        "all" => Ok(Audience::All),
        "users" => Ok(Audience::Users),
        "connections" => Ok(Audience::Connections),
        _ => text
            .strip_prefix("groups:")
            .and_then(|g| g.parse().ok())
            .filter(|&g: &usize| g > 0)
            .map(Audience::Groups)
            .ok_or_else(|| {
                format!("--audience {text}: expected all, groups:G, users or connections")
            }),
    }
}

fn print(event: &str, value: &serde_json::Value) {
    let mut line = serde_json::json!({ "event": event });
    if let (Some(line), Some(fields)) = (line.as_object_mut(), value.as_object()) {
        line.extend(fields.clone());
    }
    println!("{line}");
}

fn run(cli: Cli) -> Result<(), String> {
    let mut emit = |event: &str, value: &serde_json::Value| print(event, value);
    match cli.mode {
        Mode::Idle(args) => {
            let config = IdleConfig {
                common: args.common.common()?,
                connections: args.connections,
                hold: Duration::from_secs_f64(args.hold_secs),
                stop_file: args.stop_file,
            };
            let report = loadgen::block_on_local(loadgen::run_idle(config, &mut emit))
                .map_err(|e| e.to_string())?;
            print("done", &serde_json::to_value(&report).unwrap_or_default());
        }
        Mode::Steps(args) => {
            if args.rates.is_empty() {
                return Err("--rates: at least one rate".to_owned());
            }
            let default = Duration::try_from_secs_f64(args.step_secs)
                .map_err(|_| "--step-secs: not a length of time".to_owned())?;
            let steps = args
                .rates
                .iter()
                .map(|text| StepPlan::parse(text, default))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("--rates: {e}"))?;
            let sender_endpoint = match &args.sender_url {
                Some(url) => Some(args.common.endpoint(url)?),
                None => None,
            };
            let extra_endpoints = args
                .also_url
                .iter()
                .map(|url| args.common.endpoint(url))
                .collect::<Result<Vec<_>, _>>()?;
            let config = StepsConfig {
                common: args.common.common()?,
                sender_endpoint,
                extra_endpoints,
                receivers: args.receivers,
                audience: audience(&args.audience)?,
                steps,
                payload_len: args.payload,
                slow: args.slow,
                stop_on_fail: args.stop_on_fail,
                drain_idle: Duration::from_millis(args.drain_idle_ms),
                drain_max: Duration::from_secs_f64(args.drain_max_secs),
                slow_drain: Duration::from_secs_f64(args.slow_drain_secs),
                watch: args.watch,
            };
            let report = loadgen::block_on_local(loadgen::run_steps(config, &mut emit))
                .map_err(|e| e.to_string())?;
            print("done", &serde_json::to_value(&report).unwrap_or_default());
        }
        Mode::Scale(args) => {
            // `run_scale` prints its own `done` before holding the connections open.
            let report = loadgen::block_on_local(scale::run_scale(args.config()?, &mut emit))
                .map_err(|e| e.to_string())?;
            if let Some(error) = report.error {
                eprintln!("loadgen scale: {error}");
            }
        }
    }
    Ok(())
}

fn main() {
    signalr_bench::init_logging();
    if let Err(error) = run(Cli::parse()) {
        eprintln!("loadgen: {error}");
        std::process::exit(2);
    }
}
