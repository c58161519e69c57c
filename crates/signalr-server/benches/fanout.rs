//! Fan-out cost without sockets: one message to `Clients.All` with N in-memory connections
//! (N = 100, 1,000, 10,000) through the `MemoryLifetimeManager`, half JSON, half MessagePack.
//!
//! `serialize+send` includes encoding the invocation once per protocol, as `ClientProxy::send`
//! does; `send` is the lifetime manager's delivery alone (queueing shared bytes in every
//! outbox). Queues are emptied outside the timed section. Reported per delivery, so the three
//! sizes are directly comparable (flat means O(1) per connection, as it should be).
//!
//! `fanout_groups_of_10/R-per-group/N`: W5's 1 k groups of 10 (10 k JSON connections). One
//! batch of a flood's invocations (`batch_sends`, as a connection's loop runs them) sends R
//! distinct messages to each group in turn, then every member's queue is taken as its writer
//! would take it; both are timed. N is the batch's deliveries (R × 10,000), so per delivery
//! is again mean ÷ N.

// criterion_group! expands to an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signalr_server::lifetime::batch_sends;
use signalr_server::protocol::Protocol;
use signalr_server::testing::TestClient;
use signalr_server::{Audience, MemoryLifetimeManager, SerializedMessage};

fn clients(manager: &MemoryLifetimeManager, n: usize) -> Vec<TestClient> {
    (0..n)
        .map(|i| {
            let protocol = if i % 2 == 0 {
                Protocol::Json
            } else {
                Protocol::MessagePack
            };
            let client = TestClient::with_buffer(&format!("c{i}"), None, protocol, 64 << 20);
            manager.add_connection(client.connection());
            client
        })
        .collect()
}

const PAYLOAD: &str = "@1,1700000000000000;xxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn bench_fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_all");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in [100usize, 1_000, 10_000] {
        let manager = MemoryLifetimeManager::new();
        let mut clients = clients(&manager, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("send", n), |b| {
            let message =
                SerializedMessage::invocation("m", &(PAYLOAD,), &Protocol::ALL).expect("encode");
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    black_box(manager.send_local(&Audience::All, &message));
                    timed += start.elapsed();
                    for client in &mut clients {
                        client.discard_queued();
                    }
                }
                timed
            });
        });
        group.bench_function(BenchmarkId::new("serialize+send", n), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let message = SerializedMessage::invocation("m", &(PAYLOAD,), &Protocol::ALL)
                        .expect("encode");
                    black_box(manager.send_local(&Audience::All, &message));
                    timed += start.elapsed();
                    for client in &mut clients {
                        client.discard_queued();
                    }
                }
                timed
            });
        });
    }
    group.finish();
}

fn bench_groups(c: &mut Criterion) {
    const GROUPS: usize = 1_000;
    const MEMBERS: usize = 10;
    let mut group = c.benchmark_group("fanout_groups_of_10");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    let manager = MemoryLifetimeManager::new();
    let audiences: Vec<Audience> = (0..GROUPS)
        .map(|g| Audience::Group(format!("g{g}")))
        .collect();
    let mut clients: Vec<TestClient> = (0..GROUPS * MEMBERS)
        .map(|i| {
            let client = TestClient::with_buffer(&format!("c{i}"), None, Protocol::Json, 64 << 20);
            manager.add_connection(client.connection());
            manager.add_local_to_group(client.id(), &format!("g{}", i % GROUPS));
            client
        })
        .collect();
    for rounds in [1usize, 3] {
        // A frame of its own for every invocation, as a flood's are.
        let messages: Vec<SerializedMessage> = (0..rounds * GROUPS)
            .map(|i| {
                SerializedMessage::invocation("m", &(format!("{PAYLOAD}{i}"),), &[Protocol::Json])
                    .expect("encode")
            })
            .collect();
        let deliveries = rounds * GROUPS * MEMBERS;
        group.throughput(Throughput::Elements(deliveries as u64));
        let id = BenchmarkId::new(format!("{rounds}-per-group"), deliveries);
        group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    {
                        let _batch = batch_sends();
                        for (message, audience) in messages.iter().zip(audiences.iter().cycle()) {
                            black_box(manager.send_local(audience, message));
                        }
                    }
                    for client in &mut clients {
                        black_box(client.discard_queued());
                    }
                    timed += start.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_fanout, bench_groups);
criterion_main!(benches);
