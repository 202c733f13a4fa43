//! Acked appends per second into one room with 1, 8 and 64 concurrent senders: the
//! PostgreSQL store (batched appends) against the in-memory store and against a naive
//! loop that runs one transaction per message on the same tables, all measured in the same
//! run on the database in `CHAT_TEST_POSTGRES_URL` (in a schema of its own, dropped after).
//!
//! Each sender appends one message, waits for the ack, and appends the next, as a client
//! does. Rounds alternate between the targets and the median is reported.
//!
//! Run: `cargo bench -p chat-store-postgres --bench postgres_append` (about a minute).
//! Under `cargo test --bench postgres_append` it is a smoke run of a few hundred
//! milliseconds per target. `POSTGRES_BENCH_SECS` sets the seconds per measurement
//! (default 2). Without `CHAT_TEST_POSTGRES_URL` it says so and measures nothing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::{ClientMsgId, MessageStore, NewMessage, RoomId, Timestamp, UserId};
use chat_store_memory::MemoryStore;
use chat_store_postgres::{PostgresConfig, PostgresStore};
use deadpool_postgres::{Manager, Pool};

const SENDERS: [usize; 3] = [1, 8, 64];

/// The naive baseline: for every message, one transaction of its own from the client —
/// lock the room's row and take the next seq, look for the cid, insert, commit.
async fn naive_append(pool: &Pool, m: &NewMessage) {
    let mut client = pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let row = tx
        .query_one(
            "UPDATE rooms SET last_seq = last_seq + 1 WHERE name = $1 RETURNING id, last_seq",
            &[&m.room.as_str()],
        )
        .await
        .unwrap();
    let (room, seq): (i64, i64) = (row.get(0), row.get(1));
    let dup = tx
        .query_opt(
            "SELECT seq FROM messages WHERE room = $1 AND sender = $2 AND cid = $3",
            &[&room, &m.from.as_str(), &m.cid.as_str().as_bytes()],
        )
        .await
        .unwrap();
    if dup.is_some() {
        tx.rollback().await.unwrap();
        return;
    }
    tx.execute(
        "INSERT INTO messages (room, seq, sender, cid, body, meta, ts)
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        &[
            &room,
            &seq,
            &m.from.as_str(),
            &m.cid.as_str().as_bytes(),
            &m.body.as_bytes(),
            &(m.ts.as_millis() as i64),
        ],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[derive(Clone)]
enum Target {
    Store(Arc<dyn MessageStore>),
    Naive(Pool),
}

impl Target {
    async fn append(&self, message: NewMessage) {
        match self {
            Target::Store(store) => {
                store.append(message).await.unwrap();
            }
            Target::Naive(pool) => naive_append(pool, &message).await,
        }
    }
}

/// Appends from `senders` tasks into one fresh room for `time`; acked appends per second.
async fn measure(
    target: Target,
    rooms: &PostgresStore,
    senders: usize,
    time: Duration,
    n: usize,
) -> f64 {
    let room = RoomId::new(&format!("bench-{n}")).unwrap();
    match &target {
        Target::Store(store) => store.ensure_room(&room).await.unwrap(),
        Target::Naive(_) => rooms.ensure_room(&room).await.unwrap(),
    };
    let acked = Arc::new(AtomicU64::new(0));
    let body = "x".repeat(100);
    let started = Instant::now();
    let stop = started + time;
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (target, room, acked, body) =
            (target.clone(), room.clone(), acked.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let from = UserId::new(&format!("sender{s}")).unwrap();
            let mut i = 0u64;
            while Instant::now() < stop {
                target
                    .append(NewMessage {
                        room: room.clone(),
                        from: from.clone(),
                        cid: ClientMsgId::new(&format!("c{i}")).unwrap(),
                        body: body.clone(),
                        meta: None,
                        ts: Timestamp::from_millis(i),
                    })
                    .await;
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    acked.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let Some(url) = std::env::var("CHAT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("postgres append: skipped, CHAT_TEST_POSTGRES_URL is not set");
        return;
    };
    // `cargo bench` passes `--bench`; under `cargo test --bench` this is a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("POSTGRES_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 0.15 } else { 2.0 });
    let time = Duration::from_secs_f64(secs);
    let rounds = if quick { 1 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
        .enable_all()
        .build()
        .unwrap();
    let schema = format!("chat_bench_{}", std::process::id());
    let pool_size = 16;
    let (store, naive) = runtime.block_on(async {
        let store = PostgresConfig::new(&url)
            .schema(&schema)
            .pool_size(pool_size)
            .connect()
            .await
            .unwrap();
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        config.options(format!("-c search_path={schema}"));
        let naive = Pool::builder(Manager::new(config, tokio_postgres::NoTls))
            .max_size(pool_size)
            .build()
            .unwrap();
        (store, naive)
    });
    println!(
        "postgres append: acked appends/s into one room, 100-byte bodies, pools of {pool_size}, {secs} s per measurement, median of {rounds}"
    );
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>10} {:>11}",
        "senders", "memory", "postgres", "naive", "pg/memory", "pg/naive"
    );
    let mut n = 0;
    for senders in SENDERS {
        let mut results: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            let targets = [
                Target::Store(Arc::new(MemoryStore::new())),
                Target::Store(Arc::new(store.clone())),
                Target::Naive(naive.clone()),
            ];
            for (i, target) in targets.into_iter().enumerate() {
                n += 1;
                results[i].push(runtime.block_on(measure(target, &store, senders, time, n)));
            }
        }
        let [memory, pg, naive] = results.map(median);
        println!(
            "{senders:>7} {memory:>12.0} {pg:>12.0} {naive:>12.0} {:>9.4}x {:>10.1}x",
            pg / memory,
            pg / naive
        );
    }
    println!(
        "pg/memory = PostgresStore / MemoryStore; pg/naive = PostgresStore / one transaction per message"
    );
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
            .await
            .unwrap();
    });
}
