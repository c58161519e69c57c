//! `bench-server`: the benchmark hub (see `signalr_bench::server`).
//!
//! ```text
//! bench-server --listen 127.0.0.1:5000 [--max-buffered-bytes N] [--max-write-batch-bytes N] [--redis redis://127.0.0.1:6390]
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections; stops on SIGTERM.

use std::net::SocketAddr;

use clap::Parser;
use signalr_bench::server::{ServerConfig, app};
use signalr_redis::{RedisConfig, RedisHubLifetimeManager};

// jemalloc, as many production Rust servers choose: see the dependency's comment in
// Cargo.toml. The benchmark hub and the raw baseline use the same one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Most bytes written in one WebSocket message.
    #[arg(long, default_value_t = ServerConfig::default().max_write_batch_bytes)]
    max_write_batch_bytes: usize,
    /// Write each connection's queue as soon as its writer runs, without holding short
    /// writes back (`TransportOptions::coalesce_writes = false`).
    #[arg(long)]
    no_coalesce_writes: bool,
    /// Scale out through Redis (cross-node workloads W3, W4).
    #[arg(long)]
    redis: Option<String>,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_bench::init_logging();
    let args = Args::parse();
    let redis = match &args.redis {
        None => None,
        Some(url) => {
            let config = RedisConfig::new(url).hub_name("Bench.Hubs.BenchHub");
            match RedisHubLifetimeManager::connect(config).await {
                Ok(manager) => Some(manager),
                Err(error) => {
                    eprintln!("bench-server: cannot start the Redis backplane: {error}");
                    std::process::exit(1);
                }
            }
        }
    };
    let config = ServerConfig {
        max_buffered_bytes: args.max_buffered_bytes,
        max_write_batch_bytes: args.max_write_batch_bytes,
        coalesce_writes: !args.no_coalesce_writes,
        redis,
    };
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    signalr_server::serve(listener, app(&config), signalr_bench::shutdown_signal()).await
}
