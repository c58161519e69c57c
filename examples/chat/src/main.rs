//! `chat`: run the chat sample.
//!
//! ```text
//! chat --listen 127.0.0.1:5000
//! chat --listen 127.0.0.1:5001 --redis redis://:password@127.0.0.1:6390
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections (logs go to
//! stderr). On SIGTERM or Ctrl-C it shuts the hub down gracefully (every client is told
//! "Server is shutting down." and may reconnect elsewhere), then exits with status 0.
//!
//! With `--redis`, nodes sharing the Redis (and the hub name and channel prefix) reach each
//! other's connections; if Redis cannot be reached or refuses the password at start, it says
//! so and exits with status 1.
//!
//! `GET /metrics` serves the metrics in the Prometheus text format, `GET /healthz` the
//! health report.
//!
//! `--transports ServerSentEvents,LongPolling` limits the transports offered;
//! `--auth-tokens alice=tokenA,bob=tokenB` turns on demo authentication (bearer tokens,
//! the token's user is the connection's user id).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use chat::ChatConfig;
use clap::Parser;
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};
use signalr_server::HubLifetimeManager;
use signalr_server::protocol::TransportType;

/// The SignalR chat sample.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Largest hub message accepted from a client, in bytes.
    #[arg(long, env = "CHAT_MAX_MESSAGE_SIZE", default_value_t = 32 * 1024)]
    max_message_size: usize,
    /// Directory holding the npm packages of the page (default: examples/chat/node_modules).
    #[arg(long, env = "CHAT_NODE_MODULES")]
    node_modules: Option<PathBuf>,
    /// Transports offered, in preference order: a comma-separated subset of WebSockets,
    /// ServerSentEvents, LongPolling.
    #[arg(long, env = "CHAT_TRANSPORTS", value_delimiter = ',', value_parser = chat::parse_transport)]
    transports: Vec<TransportType>,
    /// Demo authentication: comma-separated USER=TOKEN pairs; every request then needs one of
    /// the tokens (Authorization: Bearer, or the access_token query parameter).
    #[arg(long, env = "CHAT_AUTH_TOKENS", value_parser = chat::parse_auth_tokens)]
    auth_tokens: Option<HashMap<String, String>>,
    /// Scale out through this Redis: redis://[[user]:password@]host[:port][/db], or
    /// rediss:// for TLS. Without it, the chat runs in memory on this node only.
    #[arg(long, env = "CHAT_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Raw prefix in front of every Redis channel name (StackExchange.Redis's
    /// ChannelPrefix), to keep applications sharing one Redis apart.
    #[arg(
        long,
        env = "CHAT_CHANNEL_PREFIX",
        value_name = "NAME",
        default_value = ""
    )]
    channel_prefix: String,
    /// The hub's name on Redis channels (an ASP.NET Core hub's full type name, to share
    /// them with .NET nodes).
    #[arg(long, env = "CHAT_HUB_NAME", default_value = "Chat.Hubs.ChatHub")]
    hub_name: String,
    /// Sharded pub/sub on a Redis Cluster (SPUBLISH/SSUBSCRIBE; every node must be a
    /// signalr-rs node). The --redis URL names any node of the cluster.
    #[arg(long, env = "CHAT_REDIS_SHARDED")]
    redis_sharded: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // Before the backplane connects and the hub is built: both register their metrics then.
    let metrics = match signalr_server::observability::install_prometheus() {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(%error, "no /metrics: the Prometheus recorder could not be installed");
            None
        }
    };
    let mut config = ChatConfig {
        max_message_size: args.max_message_size,
        hub_name: args.hub_name.clone(),
        metrics,
        ..ChatConfig::default()
    };
    if let Some(dir) = args.node_modules.clone() {
        config.node_modules = dir;
    }
    if !args.transports.is_empty() {
        config.transports = args.transports.clone();
    }
    config.auth_tokens = args.auth_tokens.clone();

    let backplane = match &args.redis {
        None => None,
        Some(url) => {
            let redis = RedisConfig::new(url)
                .hub_name(&args.hub_name)
                .channel_prefix(&args.channel_prefix)
                .sharded(args.redis_sharded);
            match RedisHubLifetimeManager::connect(redis).await {
                Ok(manager) => Some(manager),
                Err(error) => {
                    eprintln!("chat: cannot start the Redis backplane: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    if let Some(manager) = &backplane {
        config.lifetime_manager = Some(manager.clone());
    }

    match run(args.listen, config).await {
        Ok(()) => {
            if let Some(manager) = backplane {
                manager.close().await;
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("chat: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(listen: SocketAddr, config: ChatConfig) -> std::io::Result<()> {
    let hub = chat::hub(&config);
    let app = chat::router(config, &hub);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    tracing::info!(%address, "chat sample ready: open http://{address}/ in a browser");
    // The hub says goodbye to its clients while the server still answers requests (long
    // polling clients fetch their Close with a poll); then the server stops.
    let shutdown = async move {
        shutdown_signal().await;
        hub.shutdown().await;
    };
    signalr_server::serve(listener, app, shutdown).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}
