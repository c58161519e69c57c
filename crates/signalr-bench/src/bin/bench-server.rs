//! `bench-server`: the benchmark hub (see `signalr_bench::server`).
//!
//! ```text
//! bench-server --listen 127.0.0.1:5000 [--max-buffered-bytes N] [--redis redis://127.0.0.1:6390]
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections; stops on SIGTERM.

use std::net::SocketAddr;

use clap::Parser;
use signalr_bench::server::{ServerConfig, app};

/// The signalr-rs benchmark hub server.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Bytes queued per connection before it is closed as a slow consumer.
    #[arg(long, default_value_t = ServerConfig::default().max_buffered_bytes)]
    max_buffered_bytes: usize,
    /// Scale out through Redis (cross-node workloads W3, W4).
    #[arg(long)]
    redis: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_bench::init_logging();
    let args = Args::parse();
    if let Some(url) = &args.redis {
        eprintln!(
            "bench-server: --redis {url}: the Redis lifetime manager is not part of this build yet; \
             cross-node workloads (W3, W4) need it"
        );
        std::process::exit(2);
    }
    let config = ServerConfig {
        max_buffered_bytes: args.max_buffered_bytes,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app(&config), signalr_bench::shutdown_signal()).await
}
