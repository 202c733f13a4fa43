//! `MemoryStore::append` against a naive baseline measured in the same run.
//!
//! The baseline is the simplest correct store: one global mutex over every room's log and
//! idempotency index. Both go through `Arc<dyn MessageStore>`, so the ratio compares the
//! stores, not the call path. Rounds alternate between the two and the median of each is
//! reported, because the machine is shared and absolute times drift.
//!
//! Run: `cargo bench --bench store_append` (about 20 s). `APPEND_BENCH_OPS` sets the
//! appends per round (default 100,000; 2,000 under `cargo test --benches`, a smoke run).

#![allow(clippy::unwrap_used, missing_docs)]

#[path = "support/naive_store.rs"]
mod naive_store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_engine::core::{ClientMsgId, MessageStore, NewMessage, RoomId, Timestamp, UserId};
use chat_engine::memory::MemoryStore;
use naive_store::NaiveStore;

struct Scenario {
    name: &'static str,
    tasks: usize,
    rooms: usize,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "1 task, 1 room",
        tasks: 1,
        rooms: 1,
    },
    Scenario {
        name: "16 tasks, 16 rooms",
        tasks: 16,
        rooms: 16,
    },
    Scenario {
        name: "16 tasks, 1 room",
        tasks: 16,
        rooms: 1,
    },
];

const ROUNDS: usize = 5;

/// Appends `ops` messages spread over `scenario.tasks` tasks; returns appends per second.
async fn measure(
    store: Arc<dyn MessageStore>,
    scenario: &Scenario,
    ops: usize,
    round: usize,
) -> f64 {
    let rooms: Vec<RoomId> = (0..scenario.rooms)
        .map(|i| RoomId::new(&format!("bench-{round}-{i}")).unwrap())
        .collect();
    for room in &rooms {
        store.ensure_room(room).await.unwrap();
    }
    let per_task = ops / scenario.tasks;
    let body = "x".repeat(100);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..scenario.tasks {
        let store = store.clone();
        let room = rooms[t % rooms.len()].clone();
        let from = UserId::new(&format!("user{t}")).unwrap();
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..per_task {
                let message = NewMessage {
                    room: room.clone(),
                    from: from.clone(),
                    cid: ClientMsgId::new(&format!("c{i}")).unwrap(),
                    body: body.clone(),
                    meta: None,
                    ts: Timestamp::from_millis(i as u64),
                };
                store.append(message).await.unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    (per_task * scenario.tasks) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --benches` this is a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let ops: usize = std::env::var("APPEND_BENCH_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 2_000 } else { 100_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    println!("store append: {ops} appends per round, {ROUNDS} alternating rounds, 100-byte bodies");
    println!(
        "{:<20} {:>16} {:>16} {:>8}",
        "scenario", "memory appends/s", "naive appends/s", "ratio"
    );
    for scenario in &SCENARIOS {
        let (mut memory, mut naive) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            if Instant::now() > deadline {
                break;
            }
            let m: Arc<dyn MessageStore> = Arc::new(MemoryStore::new());
            let n: Arc<dyn MessageStore> = Arc::new(NaiveStore::default());
            memory.push(runtime.block_on(measure(m, scenario, ops, round)));
            naive.push(runtime.block_on(measure(n, scenario, ops, round)));
        }
        let (m, n) = (median(memory), median(naive));
        println!(
            "{:<20} {:>16.0} {:>16.0} {:>7.2}x",
            scenario.name,
            m,
            n,
            m / n
        );
    }
    println!("ratio = memory / naive (above 1: MemoryStore is faster)");
}
