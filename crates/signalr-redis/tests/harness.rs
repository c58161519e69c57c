//! The `test-util` harness against real `redis-server` processes: a node can be pinged,
//! killed and restarted on its port, a password is enforced, and a cluster forms.
//!
//! Each test runs inside [`bounded`], so a server that never answers fails the test
//! instead of hanging the suite.

use std::io;
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use signalr_redis::testing::{RedisCluster, RedisServer, Reply};

/// Runs `test` on its own thread and fails if it takes longer than `seconds`.
fn bounded(seconds: u64, test: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    let handle = thread::spawn(move || {
        test();
        let _ = done.send(());
    });
    match finished.recv_timeout(Duration::from_secs(seconds)) {
        Ok(()) => handle.join().unwrap(),
        // The thread panicked: re-raise its panic with its message.
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {seconds} s"),
    }
}

fn ping(server: &RedisServer) -> io::Result<Reply> {
    server.connect()?.command(&["PING"])
}

/// A started server answers PING; once killed, its port refuses connections; restarted,
/// it answers again on the same port.
#[test]
fn start_kill_restart_on_the_same_port() {
    bounded(20, || {
        let server = RedisServer::start();
        assert!(server.is_running());
        assert_eq!(ping(&server).unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(
            server.url(),
            format!("redis://127.0.0.1:{}/", server.port())
        );

        let port = server.port();
        server.kill();
        assert!(!server.is_running());
        let err = TcpStream::connect_timeout(&server.addr(), Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");

        server.restart();
        assert_eq!(server.port(), port);
        assert!(server.is_running());
        assert_eq!(ping(&server).unwrap(), Reply::Simple("PONG".into()));
        assert!(server.log_tail().contains("Ready to accept connections"));
    });
}

/// Persistence is off: nothing written survives a restart (the backplane stores nothing
/// either, so a restart must look like an empty server).
#[test]
fn restart_starts_empty() {
    bounded(20, || {
        let server = RedisServer::start();
        let mut connection = server.connect().unwrap();
        assert_eq!(
            connection.command(&["SET", "k", "v"]).unwrap(),
            Reply::Simple("OK".into())
        );
        server.restart();
        let mut connection = server.connect().unwrap();
        assert_eq!(connection.command(&["GET", "k"]).unwrap(), Reply::Nil);
    });
}

/// With a password, commands before AUTH get NOAUTH; after AUTH they work; the URL carries
/// the password.
#[test]
fn password_is_required() {
    bounded(20, || {
        let server = RedisServer::builder().password("s3cret/pw").start();
        assert_eq!(server.password(), Some("s3cret/pw"));
        assert_eq!(
            server.url(),
            format!("redis://:s3cret%2Fpw@127.0.0.1:{}/", server.port())
        );

        let mut raw = signalr_redis::testing::RespConnection::connect(server.addr()).unwrap();
        match raw.command(&["GET", "k"]).unwrap() {
            Reply::Error(message) => assert!(message.starts_with("NOAUTH"), "{message}"),
            other => panic!("expected NOAUTH, got {other:?}"),
        }
        match raw.command(&["AUTH", "wrong"]).unwrap() {
            Reply::Error(message) => assert!(message.contains("WRONGPASS"), "{message}"),
            other => panic!("expected WRONGPASS, got {other:?}"),
        }
        assert_eq!(
            raw.command(&["AUTH", "s3cret/pw"]).unwrap(),
            Reply::Simple("OK".into())
        );
        assert_eq!(raw.command(&["GET", "k"]).unwrap(), Reply::Nil);

        // The harness's own connections authenticate, across restarts too.
        assert_eq!(ping(&server).unwrap(), Reply::Simple("PONG".into()));
        server.restart();
        assert_eq!(ping(&server).unwrap(), Reply::Simple("PONG".into()));
    });
}

/// Pub/sub through the raw connection: a subscriber sees a published payload byte for byte
/// (binary channel names and payloads included).
#[test]
fn raw_pub_sub_round_trip() {
    bounded(20, || {
        let server = RedisServer::start();
        let mut subscriber = server.connect().unwrap();
        let channel = b"\xffMyApp.Hubs.ChatHub:all".to_vec();
        let reply = subscriber.command(&[&b"SUBSCRIBE"[..], &channel]).unwrap();
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Bulk(b"subscribe".to_vec()),
                Reply::Bulk(channel.clone()),
                Reply::Integer(1),
            ])
        );
        let payload = vec![0x92, 0x90, 0x80, 0x00, 0x0d, 0x0a];
        let mut publisher = server.connect().unwrap();
        assert_eq!(
            publisher
                .command(&[&b"PUBLISH"[..], &channel, &payload])
                .unwrap(),
            Reply::Integer(1)
        );
        assert_eq!(
            subscriber.read_reply().unwrap(),
            Reply::Array(vec![
                Reply::Bulk(b"message".to_vec()),
                Reply::Bulk(channel),
                Reply::Bulk(payload),
            ])
        );
    });
}

/// Dropping a server kills it and frees its port.
#[test]
fn drop_kills_the_server() {
    bounded(20, || {
        let server = RedisServer::start();
        let addr = server.addr();
        drop(server);
        let err = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    });
}

/// Servers started together get distinct ports.
#[test]
fn servers_get_distinct_ports() {
    bounded(20, || {
        let servers: Vec<_> = (0..3).map(|_| RedisServer::start()).collect();
        let mut ports: Vec<_> = servers.iter().map(RedisServer::port).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 3);
        for server in &servers {
            assert_eq!(ping(server).unwrap(), Reply::Simple("PONG".into()));
        }
    });
}

/// Three masters reach `cluster_state:ok`; `CLUSTER NODES` lists three masters; a publish
/// on one node reaches a subscriber on another (classic pub/sub is cluster-wide).
#[test]
fn cluster_of_three_masters() {
    bounded(45, || {
        let cluster = RedisCluster::start(3);
        assert_eq!(cluster.ports().len(), 3);
        assert_eq!(cluster.urls().len(), 3);
        for node in cluster.nodes() {
            let mut connection = node.connect().unwrap();
            let info = connection.command(&["CLUSTER", "INFO"]).unwrap();
            let info = info.as_text().unwrap().to_owned();
            assert!(info.contains("cluster_state:ok"), "{info}");
            assert!(info.contains("cluster_known_nodes:3"), "{info}");
        }

        let mut connection = cluster.nodes()[0].connect().unwrap();
        let nodes = connection.command(&["CLUSTER", "NODES"]).unwrap();
        let nodes = nodes.as_text().unwrap().to_owned();
        let masters: Vec<&str> = nodes
            .lines()
            .filter(|line| {
                line.split_whitespace()
                    .nth(2)
                    .is_some_and(|flags| flags.contains("master"))
            })
            .collect();
        assert_eq!(masters.len(), 3, "{nodes}");
        for port in cluster.ports() {
            assert!(nodes.contains(&format!("127.0.0.1:{port}@")), "{nodes}");
        }

        let mut subscriber = cluster.nodes()[2].connect().unwrap();
        subscriber.command(&["SUBSCRIBE", "hub:all"]).unwrap();
        let mut publisher = cluster.nodes()[0].connect().unwrap();
        publisher.command(&["PUBLISH", "hub:all", "hello"]).unwrap();
        assert_eq!(
            subscriber.read_reply().unwrap(),
            Reply::Array(vec![
                Reply::Bulk(b"message".to_vec()),
                Reply::Bulk(b"hub:all".to_vec()),
                Reply::Bulk(b"hello".to_vec()),
            ])
        );
    });
}

/// Fewer than three masters is refused with a readable error.
#[test]
fn cluster_needs_three_masters() {
    let err = RedisCluster::try_start(2).unwrap_err();
    assert_eq!(
        err.to_string(),
        "a Redis cluster needs at least 3 masters, 2 requested"
    );
}
