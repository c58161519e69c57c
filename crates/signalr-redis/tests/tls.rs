//! `rediss://`: two nodes through a redis-server that only speaks TLS, with a private CA
//! made by `openssl` for the test; and the clear error when the CA is not trusted.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use signalr_redis::{BackplaneError, RedisConfig, RedisHubLifetimeManager};
use signalr_server::protocol::Protocol;
use signalr_server::testing::TestClient;
use signalr_server::{Audience, HubLifetimeManager, SerializedMessage};

struct TlsRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
    ca_pem: Vec<u8>,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command line (words separated by spaces) in `dir`.
fn run(dir: &Path, command_line: &str) {
    let mut words = command_line.split_whitespace();
    let program = words.next().expect("a program");
    let args: Vec<&str> = words.collect();
    let output = Command::new(program)
        .args(&args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}): apt-get install -y {program}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn start_tls_redis() -> TlsRedis {
    let dir = std::env::temp_dir().join(format!(
        "signalr-redis-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    run(
        &dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 \
         -subj /CN=signalr-rs-test-ca",
    );
    run(
        &dir,
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
         -subj /CN=127.0.0.1",
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(
        &dir,
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
         -out server.crt -days 2 -extfile ext.cnf",
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--tls-cert-file",
            "server.crt",
            "--tls-key-file",
            "server.key",
            "--tls-ca-cert-file",
            "ca.crt",
            "--tls-auth-clients",
            "no",
        ])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server: apt-get install -y redis-server");
    let ca_pem = std::fs::read(dir.join("ca.crt")).unwrap();
    let server = TlsRedis {
        child,
        port,
        dir,
        ca_pem,
    };
    // Ready when the TLS port accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on its TLS port"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    let redis = tokio::task::spawn_blocking(start_tls_redis).await.unwrap();
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let config = RedisConfig::new(&url)
        .hub_name("Tls.Hub")
        .tls_root_certificate(redis.ca_pem.clone());
    let a = RedisHubLifetimeManager::connect(config.clone())
        .await
        .unwrap();
    let b = RedisHubLifetimeManager::connect(config).await.unwrap();
    let mut client = TestClient::new("on-b", None, Protocol::Json);
    b.on_connected(client.connection()).await.unwrap();
    let message = SerializedMessage::invocation("secure", &("hi",), &Protocol::ALL).unwrap();
    a.send(&Audience::All, &message).await.unwrap();
    client.expect_invocation("secure").await;

    // Without the CA the server's certificate is not trusted: a clear start-up error.
    let error = RedisHubLifetimeManager::connect(
        RedisConfig::new(&url).connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    let text = error.to_string();
    println!("untrusted certificate: {text}");
    assert!(
        matches!(error, BackplaneError::Unreachable { .. }),
        "{error:?}"
    );
    assert!(
        text.contains(&format!("127.0.0.1:{}", redis.port)),
        "{text}"
    );
}
