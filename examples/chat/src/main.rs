//! `chat`: run the chat sample.
//!
//! ```text
//! chat --listen 127.0.0.1:5000
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections (logs go to
//! stderr). On SIGTERM or Ctrl-C it shuts the hub down gracefully (every client is told
//! "Server is shutting down." and may reconnect elsewhere), then exits with status 0.
//!
//! `--transports ServerSentEvents,LongPolling` limits the transports offered;
//! `--auth-tokens alice=tokenA,bob=tokenB` turns on demo authentication (bearer tokens,
//! the token's user is the connection's user id).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use chat::ChatConfig;
use clap::Parser;
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
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = ChatConfig {
        max_message_size: args.max_message_size,
        ..ChatConfig::default()
    };
    if let Some(dir) = args.node_modules {
        config.node_modules = dir;
    }
    if !args.transports.is_empty() {
        config.transports = args.transports;
    }
    config.auth_tokens = args.auth_tokens;

    let hub = chat::hub(&config);
    let app = chat::router(config, &hub);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
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
