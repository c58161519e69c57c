//! Smoke runs of the benchmark tools: a few seconds each, a few dozen connections, against the
//! benchmark hub and the raw baseline on 127.0.0.1:0. They prove the load generator, the
//! servers and the counting agree (everything sent arrives, nothing fails); they measure
//! nothing, and assert no timing.

use std::net::SocketAddr;
use std::time::Duration;

use signalr_bench::client::Endpoint;
use signalr_bench::loadgen::{
    self, Audience, Common, IdleConfig, StepPlan, StepsConfig, StepsReport, block_on_local,
};
use signalr_bench::server::{ServerConfig, app};
use signalr_bench::wire::Wire;
use signalr_protocol::Protocol;

/// Serve `app` on a free loopback port from a runtime of its own (the load generator needs
/// the test thread for its current-thread runtime).
fn start(app: axum::Router) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("address"))
                .expect("report address");
            signalr_server::serve(listener, app, std::future::pending())
                .await
                .expect("serve");
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("server started")
}

fn common(addr: SocketAddr, wire: Wire) -> Common {
    Common {
        endpoint: Endpoint {
            addr,
            path: "/hub".to_owned(),
            wire,
            negotiate: true,
            source: Some("127.0.0.1".parse().expect("address")),
        },
        concurrency: 16,
        connect_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(15),
    }
}

fn steps(addr: SocketAddr, wire: Wire, receivers: usize, audience: Audience) -> StepsReport {
    let config = StepsConfig {
        common: common(addr, wire),
        sender_endpoint: None,
        extra_endpoints: Vec::new(),
        receivers,
        audience,
        steps: [100.0, 300.0]
            .map(|rate| StepPlan {
                rate,
                duration: Duration::from_secs(1),
            })
            .to_vec(),
        payload_len: 48,
        slow: 0,
        stop_on_fail: false,
        drain_idle: Duration::from_secs(2),
        drain_max: Duration::from_secs(15),
        slow_drain: Duration::from_secs(1),
        watch: vec![std::process::id()],
    };
    let mut events = Vec::new();
    let report = block_on_local(loadgen::run_steps(config, &mut |event, _| {
        events.push(event.to_owned());
    }))
    .expect("runtime");
    assert_eq!(
        events.first().map(String::as_str),
        Some("setup"),
        "{events:?}"
    );
    report
}

/// Everything sent arrived at every healthy receiver, and nothing failed.
fn assert_complete(report: &StepsReport, receivers: usize) {
    assert_eq!(report.error, None);
    assert_eq!(
        report.receivers.connected, receivers,
        "{:?}",
        report.receivers
    );
    assert!(report.receivers.errors.is_empty(), "{:?}", report.receivers);
    assert_eq!(report.steps.len(), 2);
    for step in &report.steps {
        assert!(step.sent > 0, "{step:?}");
        assert!(step.delivered > 0, "{step:?}");
        assert_eq!(step.delivered, step.expected, "{step:?}");
        assert_eq!((step.lost, step.conns_short), (0, 0), "{step:?}");
        assert_eq!(step.sender_error, None);
        assert_eq!(step.latency.count, step.delivered);
        assert_eq!(step.servers.len(), 1);
    }
    assert!(report.closed.is_empty(), "{:?}", report.closed);
    assert_eq!(report.stray, 0);
}

#[test]
fn broadcast_json_to_the_benchmark_hub() {
    let addr = start(app(&ServerConfig::default()));
    let report = steps(addr, Wire::SignalR(Protocol::Json), 50, Audience::All);
    assert_complete(&report, 50);
    assert_eq!(report.steps[0].expected, report.steps[0].sent * 50);
}

#[test]
fn groups_over_messagepack() {
    let addr = start(app(&ServerConfig::default()));
    let report = steps(
        addr,
        Wire::SignalR(Protocol::MessagePack),
        40,
        Audience::Groups(4),
    );
    assert_complete(&report, 40);
    let join = report.join.as_ref().expect("join report");
    assert_eq!((join.joined, join.failed), (40, 0));
    // Each message reaches one group of 10.
    assert_eq!(report.steps[0].expected, report.steps[0].sent * 10);
}

#[test]
fn users_and_single_connections() {
    let addr = start(app(&ServerConfig::default()));
    for audience in [Audience::Users, Audience::Connections] {
        let report = steps(addr, Wire::SignalR(Protocol::Json), 20, audience);
        assert_complete(&report, 20);
        assert_eq!(report.steps[0].expected, report.steps[0].sent);
    }
}

#[test]
fn broadcast_through_the_raw_baseline() {
    let addr = start(signalr_bench::raw::app(4096));
    let report = steps(addr, Wire::SignalR(Protocol::Json), 50, Audience::All);
    assert_complete(&report, 50);
}

#[test]
fn idle_connections_are_held() {
    let addr = start(app(&ServerConfig::default()));
    let config = IdleConfig {
        common: common(addr, Wire::SignalR(Protocol::Json)),
        connections: 30,
        hold: Duration::from_millis(500),
        stop_file: None,
    };
    let mut ready = 0;
    let report = block_on_local(loadgen::run_idle(config, &mut |event, _| {
        if event == "ready" {
            ready += 1;
        }
    }))
    .expect("runtime");
    assert_eq!(ready, 1);
    assert_eq!(report.connect.connected, 30, "{:?}", report.connect);
    assert_eq!(report.open, 30, "{:?}", report.closed);
}

#[test]
fn groups_through_the_raw_baseline() {
    let addr = start(signalr_bench::raw::app(4096));
    for protocol in [Protocol::Json, Protocol::MessagePack] {
        let report = steps(addr, Wire::SignalR(protocol), 40, Audience::Groups(4));
        assert_complete(&report, 40);
        let join = report.join.as_ref().expect("join report");
        assert_eq!((join.joined, join.failed), (40, 0));
        // Each message reaches its group of 10 and nobody else.
        assert_eq!(report.steps[0].expected, report.steps[0].sent * 10);
    }
}
