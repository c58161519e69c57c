//! `raw-baseline`: a minimal axum + tungstenite broadcast server (see `signalr_bench::raw`).
//!
//! ```text
//! raw-baseline --listen 127.0.0.1:5001 [--capacity 4096]
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once it accepts connections; stops on SIGTERM.

use std::net::SocketAddr;

use clap::Parser;

// jemalloc, as many production Rust servers choose: see the dependency's comment in
// Cargo.toml. The benchmark hub and the raw baseline use the same one.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The raw broadcast baseline server.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5001")]
    listen: SocketAddr,
    /// Frames a socket may fall behind the broadcast channel before it skips.
    #[arg(long, default_value_t = 4096)]
    capacity: usize,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    signalr_bench::init_logging();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    signalr_server::serve(
        listener,
        signalr_bench::raw::app(args.capacity),
        signalr_bench::shutdown_signal(),
    )
    .await
}
