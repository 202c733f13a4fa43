//! Acked appends per second into one room with 1, 8 and 64 concurrent senders: the SQLite
//! store (group commit, both durability levels) against the in-memory store and against a
//! naive loop that commits one transaction per message, all measured in the same run.
//!
//! Each sender appends one message, waits for the ack, and appends the next, as a client
//! does. Rounds alternate between the targets and the median is reported, because the
//! machine is shared and absolute speeds drift.
//!
//! Run: `cargo bench -p chat-store-sqlite --bench sqlite_append` (about a minute). Under
//! `cargo test --bench sqlite_append` it is a smoke run of a few hundred milliseconds per
//! target. `SQLITE_BENCH_SECS` sets the seconds per measurement (default 2).

#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chat_core::{ClientMsgId, MessageStore, NewMessage, RoomId, Timestamp, UserId};
use chat_store_memory::MemoryStore;
use chat_store_sqlite::{Durability, SqliteConfig};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

const SENDERS: [usize; 3] = [1, 8, 64];

/// The naive baseline: one connection, one transaction per message (the same checks as the
/// store: the idempotency lookup, the room's latest seq, the insert), `synchronous = FULL`.
struct Naive {
    conn: std::sync::Mutex<Connection>,
}

impl Naive {
    fn open(path: &std::path::Path) -> Naive {
        let conn = Connection::open(path).unwrap();
        conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
            .unwrap();
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE messages (room TEXT, seq INTEGER, sender TEXT, cid TEXT, body TEXT,
                                    meta TEXT, ts INTEGER, PRIMARY KEY (room, seq));
             CREATE UNIQUE INDEX by_cid ON messages (room, sender, cid);",
        )
        .unwrap();
        Naive {
            conn: std::sync::Mutex::new(conn),
        }
    }

    fn append(&self, m: &NewMessage) -> u64 {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        let dup: Option<i64> = tx
            .query_row(
                "SELECT seq FROM messages WHERE room = ?1 AND sender = ?2 AND cid = ?3",
                params![m.room.as_str(), m.from.as_str(), m.cid.as_str()],
                |row| row.get(0),
            )
            .optional()
            .unwrap();
        if let Some(seq) = dup {
            return seq as u64;
        }
        let seq: i64 = tx
            .query_row(
                "SELECT coalesce(max(seq), 0) + 1 FROM messages WHERE room = ?1",
                [m.room.as_str()],
                |row| row.get(0),
            )
            .unwrap();
        tx.execute(
            "INSERT INTO messages VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)",
            params![
                m.room.as_str(),
                seq,
                m.from.as_str(),
                m.cid.as_str(),
                m.body,
                m.ts.as_millis() as i64
            ],
        )
        .unwrap();
        tx.commit().unwrap();
        seq as u64
    }
}

#[derive(Clone)]
enum Target {
    Store(Arc<dyn MessageStore>),
    Naive(Arc<Naive>),
}

impl Target {
    async fn append(&self, message: NewMessage) {
        match self {
            Target::Store(store) => {
                store.append(message).await.unwrap();
            }
            Target::Naive(naive) => {
                let naive = naive.clone();
                tokio::task::spawn_blocking(move || naive.append(&message))
                    .await
                    .unwrap();
            }
        }
    }
}

/// Appends from `senders` tasks into one fresh room for `time`; acked appends per second.
async fn measure(target: Target, senders: usize, time: Duration, round: usize) -> f64 {
    let room = RoomId::new(&format!("bench-{round}-{senders}")).unwrap();
    if let Target::Store(store) = &target {
        store.ensure_room(&room).await.unwrap();
    }
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
    // `cargo bench` passes `--bench`; under `cargo test --bench` this is a quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = std::env::var("SQLITE_BENCH_SECS")
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
    // On the target directory's disk, not a RAM disk: fsync must cost what it costs.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    println!(
        "sqlite append: acked appends/s into one room, 100-byte bodies, {secs} s per measurement, median of {rounds}"
    );
    println!(
        "{:>7} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10}",
        "senders",
        "memory",
        "sqlite FULL",
        "sqlite NORM",
        "naive FULL",
        "FULL/mem",
        "FULL/naive",
        "NORM/naive"
    );
    let mut n = 0;
    for senders in SENDERS {
        let mut results: [Vec<f64>; 4] = Default::default();
        for round in 0..rounds {
            let (full, normal, naive) = runtime.block_on(async {
                n += 1;
                let full = SqliteConfig::new(dir.path().join(format!("full-{n}.db")))
                    .open()
                    .await
                    .unwrap();
                let normal = SqliteConfig::new(dir.path().join(format!("normal-{n}.db")))
                    .durability(Durability::Normal)
                    .open()
                    .await
                    .unwrap();
                let naive = Naive::open(&dir.path().join(format!("naive-{n}.db")));
                (full, normal, naive)
            });
            let targets = [
                Target::Store(Arc::new(MemoryStore::new())),
                Target::Store(Arc::new(full)),
                Target::Store(Arc::new(normal)),
                Target::Naive(Arc::new(naive)),
            ];
            for (i, target) in targets.into_iter().enumerate() {
                results[i].push(runtime.block_on(measure(target, senders, time, round)));
            }
        }
        let [memory, full, normal, naive] = results.map(median);
        println!(
            "{senders:>7} {memory:>12.0} {full:>12.0} {normal:>12.0} {naive:>12.0} {:>9.3}x {:>9.1}x {:>9.1}x",
            full / memory,
            full / naive,
            normal / naive
        );
    }
    println!(
        "FULL/mem = SqliteStore (synchronous=FULL) / MemoryStore; FULL/naive, NORM/naive = SqliteStore / one transaction per message (synchronous=FULL)"
    );
}
