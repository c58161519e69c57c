//! Real `redis-server` processes for tests: one node, or a small cluster.
//!
//! The backplane's worth is in how it behaves against the Redis a user runs: reconnects
//! after a crash, authentication, pub/sub across cluster nodes. So tests start the real
//! server (Debian's `/usr/bin/redis-server`, or whichever `redis-server` is first in
//! `PATH`) on a free loopback port, in a throwaway directory, with persistence off, and
//! can kill and restart it on the same port. Nothing is mocked and nothing is skipped: a
//! missing binary is an error that says how to install it.
//!
//! Every wait here has a deadline, so a broken server fails a test instead of hanging it.
//! Processes are killed (SIGKILL) and their directories removed on drop.
//!
//! The harness speaks just enough RESP over a plain blocking [`TcpStream`]
//! ([`RespConnection`]) to check readiness and to let tests look at the server directly
//! (`PING`, `AUTH`, `CLUSTER INFO`, `SUBSCRIBE`, ...), independently of any Redis client
//! the backplane uses. It is blocking on purpose: starting a server takes milliseconds and
//! is usable from synchronous tests and from async ones alike.
//!
//! Only built with the `test-util` feature.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer `PING` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `redis-cli --cluster create` plus the wait for `cluster_state:ok` may take.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at finding a port another process does not grab between our probe and
/// redis-server's bind.
const PORT_ATTEMPTS: usize = 5;
/// Read and write timeout of [`RespConnection`]s.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest bulk string or array a [`RespConnection`] accepts: a test reading something
/// bigger has a bug, and a wrong length should not become a huge allocation.
const MAX_REPLY_LEN: i64 = 64 * 1024 * 1024;
/// Cluster bus ports are the client port plus this.
const CLUSTER_BUS_OFFSET: u16 = 10_000;

const INSTALL_HINT: &str = "install it with `apt-get install -y redis-server`";

/// Why a Redis server or cluster could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The `redis-server` or `redis-cli` binary is not installed.
    #[error("`{program}` was not found in PATH or /usr/bin: {INSTALL_HINT}")]
    MissingBinary {
        /// The binary looked for.
        program: &'static str,
    },
    /// A file-system or socket operation of the harness failed.
    #[error("{action}: {source}")]
    Io {
        /// What the harness was doing.
        action: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The server process exited before it answered `PING`.
    #[error("redis-server on port {port} exited during startup ({status}); log tail:\n{log_tail}")]
    Exited {
        /// The port it was started on.
        port: u16,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// The server did not answer `PING` in time.
    #[error(
        "redis-server on port {port} did not answer PING within {waited:?} (last error: {last_error}); log tail:\n{log_tail}"
    )]
    NotReady {
        /// The port it was started on.
        port: u16,
        /// How long the harness waited.
        waited: Duration,
        /// The last connection or protocol error seen.
        last_error: String,
        /// The end of its log.
        log_tail: String,
    },
    /// No usable loopback port was found.
    #[error("no free loopback port found after {attempts} attempts")]
    NoFreePort {
        /// Ports tried.
        attempts: usize,
    },
    /// A cluster needs at least three masters.
    #[error("a Redis cluster needs at least 3 masters, {0} requested")]
    TooFewMasters(usize),
    /// `redis-cli --cluster create` failed or timed out.
    #[error("`redis-cli --cluster create` failed ({status}); output:\n{output}")]
    ClusterCreate {
        /// Its exit status, or "timed out".
        status: String,
        /// What it printed.
        output: String,
    },
    /// The cluster was created but some node never reported `cluster_state:ok`.
    #[error(
        "Redis cluster did not reach cluster_state:ok within {waited:?}; last CLUSTER INFO from port {port}:\n{info}"
    )]
    ClusterNotOk {
        /// How long the harness waited.
        waited: Duration,
        /// The node that was not ready.
        port: u16,
        /// What it last said (or the error reaching it).
        info: String,
    },
}

impl HarnessError {
    fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let action = action.into();
        move |source| Self::Io { action, source }
    }

    /// redis-server lost the race for its port to another process.
    fn is_address_in_use(&self) -> bool {
        matches!(self, Self::Exited { log_tail, .. } if log_tail.contains("Address already in use"))
    }
}

/// Options of a [`RedisServer`], from [`RedisServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    cluster: bool,
}

impl RedisServerBuilder {
    /// Requires clients to `AUTH` with this password (`--requirepass`).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Starts the server; panics with a readable message if it cannot.
    pub fn start(self) -> RedisServer {
        self.try_start().unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts the server on a free loopback port and waits until it answers `PING`.
    pub fn try_start(self) -> Result<RedisServer, HarnessError> {
        let binary = find_binary("redis-server")?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(self.cluster)?;
            let server = RedisServer {
                port,
                password: self.password.clone(),
                cluster: self.cluster,
                binary: binary.clone(),
                child: Mutex::new(None),
                dir: TempDir::new(&format!("redis-{port}"))?,
            };
            match server.boot() {
                Ok(()) => return Ok(server),
                Err(err) if err.is_address_in_use() => last_error = Some(err),
                Err(err) => return Err(err),
            }
        }
        Err(last_error.unwrap_or(HarnessError::NoFreePort {
            attempts: PORT_ATTEMPTS,
        }))
    }
}

/// A `redis-server` process on `127.0.0.1`, killed when dropped.
///
/// Started with `--port P --bind 127.0.0.1 --save "" --appendonly no --dir <temp dir>`
/// (plus `--requirepass` when a password is set). Methods take `&self` so a test can share
/// the server (e.g. in an `Arc`) and still kill or restart it from anywhere.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    /// Started as a cluster node (`--cluster-enabled yes`), for [`RedisCluster`].
    cluster: bool,
    binary: PathBuf,
    /// The running process, `None` after [`kill`](Self::kill). Behind a mutex so kill and
    /// restart work through a shared reference.
    child: Mutex<Option<Child>>,
    /// Working directory and log file; outlives restarts so the log keeps every run.
    dir: TempDir,
}

impl RedisServer {
    /// Options for a server, e.g. `RedisServer::builder().password("pw").start()`.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// Starts a server without a password; panics with a readable message if it cannot.
    pub fn start() -> Self {
        Self::builder().start()
    }

    /// Starts a server without a password.
    pub fn try_start() -> Result<Self, HarnessError> {
        Self::builder().try_start()
    }

    /// The port the server listens on; the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The password clients must `AUTH` with, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// A connection URL: `redis://127.0.0.1:P/`, or `redis://:pw@127.0.0.1:P/` with a
    /// password (percent-encoded).
    pub fn url(&self) -> String {
        match &self.password {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(password) => format!(
                "redis://:{}@127.0.0.1:{}/",
                percent_encode(password),
                self.port
            ),
        }
    }

    /// Opens a [`RespConnection`] to the server, authenticated if it has a password.
    pub fn connect(&self) -> io::Result<RespConnection> {
        let mut connection = RespConnection::connect(self.addr())?;
        if let Some(password) = &self.password {
            match connection.command(&["AUTH", password.as_str()])? {
                Reply::Simple(_) => {}
                other => return Err(io::Error::other(format!("AUTH failed: {other:?}"))),
            }
        }
        Ok(connection)
    }

    /// Kills the server with SIGKILL and waits for it to exit. Clients see their
    /// connections reset and new connections refused until [`restart`](Self::restart).
    pub fn kill(&self) {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(mut child) = child.take() {
            // Fails only if it already exited; wait() reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running (it may have been killed or have crashed).
    pub fn is_running(&self) -> bool {
        let mut child = self
            .child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        matches!(child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kills the server if it runs, starts it again on the same port with the same
    /// directory, and waits until it answers `PING`; panics if it cannot.
    pub fn restart(&self) {
        self.try_restart().unwrap_or_else(|err| panic!("{err}"));
    }

    /// Like [`restart`](Self::restart), returning the error instead of panicking.
    pub fn try_restart(&self) -> Result<(), HarnessError> {
        self.kill();
        // The kernel may need a moment to release the port of the killed process; give
        // the bind a few tries before calling the port lost.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            match self.boot() {
                Err(err) if err.is_address_in_use() && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                result => return result,
            }
        }
    }

    /// The last lines of the server's log (everything it wrote, across restarts).
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Spawns the process and waits for `PING`; on failure the process is killed.
    fn boot(&self) -> Result<(), HarnessError> {
        let log_path = self.log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(HarnessError::io(format!("opening {}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(HarnessError::io("duplicating the log file handle"))?;

        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
        }
        if self.cluster {
            command
                .arg("--cluster-enabled")
                .arg("yes")
                .arg("--cluster-config-file")
                .arg(self.dir.path().join(format!("nodes-{}.conf", self.port)))
                .arg("--cluster-node-timeout")
                .arg("5000");
        }
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let mut child = command.spawn().map_err(HarnessError::io(format!(
            "spawning {}",
            self.binary.display()
        )))?;

        match self.wait_ready(&mut child) {
            Ok(()) => {
                *self
                    .child
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(child);
                Ok(())
            }
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(err)
            }
        }
    }

    fn wait_ready(&self, child: &mut Child) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HarnessError::Exited {
                    port: self.port,
                    status: status.to_string(),
                    log_tail: self.log_tail(),
                });
            }
            let last_error = match self.ping() {
                Ok(()) => return Ok(()),
                Err(err) => err.to_string(),
            };
            if started.elapsed() > READY_TIMEOUT {
                return Err(HarnessError::NotReady {
                    port: self.port,
                    waited: READY_TIMEOUT,
                    last_error,
                    log_tail: self.log_tail(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> io::Result<()> {
        let mut connection =
            RespConnection::connect_timeout(self.addr(), Duration::from_millis(500))?;
        if let Some(password) = &self.password {
            connection.command(&["AUTH", password.as_str()])?;
        }
        match connection.command(&["PING"])? {
            Reply::Simple(pong) if pong == "PONG" => Ok(()),
            other => Err(io::Error::other(format!("PING answered {other:?}"))),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters without replicas, on loopback; every node is killed when
/// dropped.
///
/// Each node is a [`RedisServer`] started with `--cluster-enabled yes`; the slots are
/// assigned by `redis-cli --cluster create ... --cluster-replicas 0 --cluster-yes`, and
/// [`start`](Self::start) returns once every node reports `cluster_state:ok`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts a cluster of `masters` nodes (at least 3); panics with a readable message if
    /// it cannot.
    pub fn start(masters: usize) -> Self {
        Self::try_start(masters).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Starts a cluster of `masters` nodes (at least 3).
    pub fn try_start(masters: usize) -> Result<Self, HarnessError> {
        if masters < 3 {
            return Err(HarnessError::TooFewMasters(masters));
        }
        let redis_cli = find_binary("redis-cli")?;
        let builder = RedisServerBuilder {
            cluster: true,
            ..RedisServerBuilder::default()
        };
        let nodes = (0..masters)
            .map(|_| builder.clone().try_start())
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = Self { nodes };
        cluster.create(&redis_cli)?;
        cluster.wait_ok()?;
        Ok(cluster)
    }

    /// The nodes, in the order their slots were assigned.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node's port.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Every node's URL (`redis://127.0.0.1:P/`).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    fn create(&self, redis_cli: &Path) -> Result<(), HarnessError> {
        let output_path = self.nodes[0].dir.path().join("cluster-create.log");
        let output = File::create(&output_path).map_err(HarnessError::io(format!(
            "creating {}",
            output_path.display()
        )))?;
        let output_err = output
            .try_clone()
            .map_err(HarnessError::io("duplicating the output file handle"))?;
        let mut command = Command::new(redis_cli);
        command.arg("--cluster").arg("create");
        for node in &self.nodes {
            command.arg(node.addr().to_string());
        }
        command
            .arg("--cluster-replicas")
            .arg("0")
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output_err);
        let mut child = command.spawn().map_err(HarnessError::io(format!(
            "spawning {}",
            redis_cli.display()
        )))?;

        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < CLUSTER_TIMEOUT => {
                    thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        match status {
            Some(status) if status.success() => Ok(()),
            status => Err(HarnessError::ClusterCreate {
                status: status.map_or_else(|| "timed out".to_owned(), |status| status.to_string()),
                output: log_tail(&output_path),
            }),
        }
    }

    fn wait_ok(&self) -> Result<(), HarnessError> {
        let started = Instant::now();
        for node in &self.nodes {
            loop {
                let info = node
                    .connect()
                    .and_then(|mut connection| connection.command(&["CLUSTER", "INFO"]))
                    .map(|reply| reply.as_text().unwrap_or_default().to_owned())
                    .unwrap_or_else(|err| err.to_string());
                if info.lines().any(|line| line.trim() == "cluster_state:ok") {
                    break;
                }
                if started.elapsed() > CLUSTER_TIMEOUT {
                    return Err(HarnessError::ClusterNotOk {
                        waited: CLUSTER_TIMEOUT,
                        port: node.port(),
                        info,
                    });
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

/// A reply from Redis (RESP2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`, ...
    Simple(String),
    /// `-ERR ...`, `-NOAUTH ...`, ...
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$n` followed by n bytes.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` followed by n replies (also how pub/sub messages arrive).
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple string, error or UTF-8 bulk string.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Simple(text) | Self::Error(text) => Some(text),
            Self::Bulk(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }
}

/// A minimal blocking RESP2 connection, for looking at a server from a test independently
/// of the backplane's Redis client. Reads and writes time out after a few seconds, so a
/// test waiting for a reply that never comes fails instead of hanging.
#[derive(Debug)]
pub struct RespConnection {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RespConnection {
    /// Connects with a 2 s connect timeout.
    pub fn connect(addr: SocketAddr) -> io::Result<Self> {
        Self::connect_timeout(addr, Duration::from_secs(2))
    }

    /// Connects, waiting at most `timeout`; reads and writes time out after
    /// `max(timeout, 5 s)`.
    pub fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout.max(IO_TIMEOUT)))?;
        stream.set_write_timeout(Some(timeout.max(IO_TIMEOUT)))?;
        let writer = stream.try_clone()?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends a command and reads its reply.
    pub fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        self.send(args)?;
        self.read_reply()
    }

    /// Sends a command without reading a reply (e.g. before reading pub/sub pushes).
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            let arg = arg.as_ref();
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out)
    }

    /// Reads the next reply or pub/sub message.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        read_reply(&mut self.reader, 0)
    }

    /// Changes how long [`read_reply`](Self::read_reply) waits (`None` waits forever,
    /// which a test should not do).
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn read_reply(reader: &mut BufReader<TcpStream>, depth: usize) -> io::Result<Reply> {
    if depth > 16 {
        return Err(invalid("RESP reply nested too deeply"));
    }
    let mut line = Vec::new();
    (&mut *reader)
        .take(64 * 1024)
        .read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    let Some(body) = line.strip_suffix(b"\r\n") else {
        return Err(invalid("RESP line without CRLF"));
    };
    let (kind, rest) = body
        .split_first()
        .ok_or_else(|| invalid("empty RESP line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| invalid(format!("bad RESP number {text:?}")))
    };
    match kind {
        b'+' => Ok(Reply::Simple(text.clone())),
        b'-' => Ok(Reply::Error(text.clone())),
        b':' => Ok(Reply::Integer(number()?)),
        b'$' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            if len > MAX_REPLY_LEN {
                return Err(invalid(format!("bulk string of {len} bytes")));
            }
            let mut data = vec![0; len as usize + 2];
            reader.read_exact(&mut data)?;
            if !data.ends_with(b"\r\n") {
                return Err(invalid("bulk string without CRLF"));
            }
            data.truncate(len as usize);
            Ok(Reply::Bulk(data))
        }
        b'*' => {
            let len = number()?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            if len > MAX_REPLY_LEN {
                return Err(invalid(format!("array of {len} elements")));
            }
            let mut items = Vec::with_capacity((len as usize).min(1024));
            for _ in 0..len {
                items.push(read_reply(reader, depth + 1)?);
            }
            Ok(Reply::Array(items))
        }
        other => Err(invalid(format!("unknown RESP type byte {other:#04x}"))),
    }
}

/// Finds `program` in `PATH`, then in `/usr/bin` (where Debian's package puts it).
fn find_binary(program: &'static str) -> Result<PathBuf, HarnessError> {
    let path_dirs = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or(HarnessError::MissingBinary { program })
}

/// A loopback port nobody listens on right now. For a cluster node the bus port
/// (`port + 10000`) must be free too. The port is released before redis-server binds
/// it, so another process can still take it: callers retry on "Address already in use".
fn free_port(cluster: bool) -> Result<u16, HarnessError> {
    const ATTEMPTS: usize = 100;
    for _ in 0..ATTEMPTS {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(HarnessError::io("binding a probe socket on 127.0.0.1:0"))?;
        let port = listener
            .local_addr()
            .map_err(HarnessError::io("reading the probe socket's port"))?
            .port();
        if !cluster {
            return Ok(port);
        }
        let Some(bus_port) = port.checked_add(CLUSTER_BUS_OFFSET) else {
            continue;
        };
        if TcpListener::bind((Ipv4Addr::LOCALHOST, bus_port)).is_ok() {
            return Ok(port);
        }
    }
    Err(HarnessError::NoFreePort { attempts: ATTEMPTS })
}

fn log_tail(path: &Path) -> String {
    const LINES: usize = 30;
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Result<Self, HarnessError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "signalr-redis-{}-{nanos:09}-{n}-{label}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return Ok(Self(path)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(err) => {
                    return Err(HarnessError::Io {
                        action: format!("creating {}", path.display()),
                        source: err,
                    });
                }
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing binary fails with the command that installs it, never a skip.
    #[test]
    fn missing_binary_says_how_to_install_it() {
        let err = find_binary("signalr-redis-no-such-binary").unwrap_err();
        assert_eq!(
            err.to_string(),
            "`signalr-redis-no-such-binary` was not found in PATH or /usr/bin: \
             install it with `apt-get install -y redis-server`"
        );
    }

    #[test]
    fn passwords_are_percent_encoded_in_urls() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("p@ss:w/rd%"), "p%40ss%3Aw%2Frd%25");
    }
}
