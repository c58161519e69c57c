//! The socketioxide peer, written the way its README suggests (peers-measured.md §1.1).
//!
//! ```text
//! PORT=3001 [REDIS=redis://127.0.0.1:6390/?protocol=resp3] [NODELAY=1] sxserver
//! ```
//!
//! Events: `bcast` → `io.emit("m", data)` (W2), `join` → the caller joins a room, with an ack,
//! `relay` → `io.to("r").emit("m", data)` (W3). `NODELAY=1` sets TCP_NODELAY on accepted
//! sockets and on the Redis connection, which the defaults leave off.

use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::{RedisAdapter, RedisAdapterCtr};

async fn on_connect<A: Adapter>(socket: SocketRef<A>) {
    socket.on("bcast", async |io: SocketIo<A>, Data(data): Data<Value>| {
        io.emit("m", &data).await.ok();
    });
    socket.on(
        "join",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            s.join(room);
            ack.send(&"ok").ok();
        },
    );
    socket.on("relay", async |io: SocketIo<A>, Data(data): Data<Value>| {
        io.to("r").emit("m", &data).await.ok();
    });
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    let nodelay = std::env::var("NODELAY").is_ok_and(|v| v == "1");
    let app = match std::env::var("REDIS").ok().filter(|url| !url.is_empty()) {
        None => {
            let (layer, io) = SocketIo::new_layer();
            io.ns("/", on_connect);
            axum::Router::new().layer(layer)
        }
        Some(url) => {
            let mut info = redis::IntoConnectionInfo::into_connection_info(url.as_str())?;
            if nodelay {
                info =
                    info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
            }
            let client = redis::Client::open(info)?;
            let adapter = RedisAdapterCtr::new_with_redis(&client).await?;
            let (layer, io) = SocketIo::builder()
                .with_adapter::<RedisAdapter<_>>(adapter)
                .build_layer();
            io.ns("/", on_connect).await?;
            axum::Router::new().layer(layer)
        }
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "sxserver listening on 127.0.0.1:{port} (workers: {})",
        tokio::runtime::Handle::current().metrics().num_workers()
    );
    if nodelay {
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await?;
    } else {
        axum::serve(listener, app).await?;
    }
    Ok(())
}
