//! Benchmark tools of signalr-rs (not published).
//!
//! - `loadgen`: a load generator speaking SignalR (negotiate, WebSockets, JSON and
//!   MessagePack) and Socket.IO (engine.io v4 over WebSockets), so one client drives our
//!   server, the raw baseline and the peer servers alike ([`loadgen`], [`client`], [`wire`]).
//! - `bench-server`: the benchmark hub on `signalr-server` ([`server`]).
//! - `raw-baseline`: a minimal axum + tungstenite broadcast server that answers the SignalR
//!   handshake, the reference for what this machine can do ([`raw`]).
//!
//! `bench/run` at the repository root drives them and writes BENCHMARKS.md.

pub mod client;
pub mod loadgen;
pub mod procstat;
pub mod raw;
pub mod scale;
pub mod server;
pub mod stamp;
pub mod wire;

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings), for the binaries.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

/// Resolve on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
