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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_engine::core::store::{Appended, HistoryPage, HistoryQuery, RoomInfo};
use chat_engine::core::{
    ClientMsgId, Epoch, Error, Message, MessageStore, NewMessage, Result, RoomId, Seq, Timestamp,
    UserId,
};
use chat_engine::memory::MemoryStore;
use parking_lot::Mutex;

/// The baseline: every room behind one lock.
#[derive(Debug, Default)]
struct NaiveStore {
    rooms: Mutex<HashMap<RoomId, NaiveRoom>>,
}

#[derive(Debug)]
struct NaiveRoom {
    epoch: Epoch,
    messages: Vec<Message>,
    by_cid: HashMap<(UserId, ClientMsgId), Seq>,
    members: BTreeSet<UserId>,
}

impl NaiveRoom {
    fn info(&self, room: &RoomId) -> RoomInfo {
        RoomInfo {
            room: room.clone(),
            epoch: self.epoch.clone(),
            latest: Seq::new(self.messages.len() as u64).unwrap(),
        }
    }
}

#[async_trait]
impl MessageStore for NaiveStore {
    async fn ensure_room(&self, room: &RoomId) -> Result<(RoomInfo, bool)> {
        let mut rooms = self.rooms.lock();
        let created = !rooms.contains_key(room);
        let r = rooms.entry(room.clone()).or_insert_with(|| NaiveRoom {
            epoch: Epoch::random(),
            messages: Vec::new(),
            by_cid: HashMap::new(),
            members: BTreeSet::new(),
        });
        Ok((r.info(room), created))
    }

    async fn room(&self, room: &RoomId) -> Result<Option<RoomInfo>> {
        Ok(self.rooms.lock().get(room).map(|r| r.info(room)))
    }

    async fn append(&self, message: NewMessage) -> Result<Appended> {
        let mut rooms = self.rooms.lock();
        let room = rooms
            .get_mut(&message.room)
            .ok_or_else(|| Error::RoomNotFound(message.room.clone()))?;
        let key = (message.from.clone(), message.cid.clone());
        if let Some(seq) = room.by_cid.get(&key) {
            let original = room.messages[seq.get() as usize - 1].clone();
            return Ok(Appended {
                message: original,
                dup: true,
            });
        }
        let seq = Seq::new(room.messages.len() as u64 + 1).unwrap();
        let stored = message.into_message(seq);
        room.by_cid.insert(key, seq);
        room.messages.push(stored.clone());
        Ok(Appended {
            message: stored,
            dup: false,
        })
    }

    async fn history(&self, room: &RoomId, _: HistoryQuery, limit: usize) -> Result<HistoryPage> {
        let rooms = self.rooms.lock();
        let r = rooms
            .get(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        let start = r.messages.len().saturating_sub(limit);
        Ok(HistoryPage {
            messages: r.messages[start..].to_vec(),
            more: start > 0,
        })
    }

    async fn add_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        let mut rooms = self.rooms.lock();
        let r = rooms
            .get_mut(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        Ok(r.members.insert(user.clone()))
    }

    async fn remove_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .rooms
            .lock()
            .get_mut(room)
            .is_some_and(|r| r.members.remove(user)))
    }

    async fn is_member(&self, room: &RoomId, user: &UserId) -> Result<bool> {
        Ok(self
            .rooms
            .lock()
            .get(room)
            .is_some_and(|r| r.members.contains(user)))
    }

    async fn members(&self, room: &RoomId) -> Result<Vec<UserId>> {
        let rooms = self.rooms.lock();
        let r = rooms
            .get(room)
            .ok_or_else(|| Error::RoomNotFound(room.clone()))?;
        Ok(r.members.iter().cloned().collect())
    }

    async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomInfo>> {
        let rooms = self.rooms.lock();
        let mine: BTreeMap<&RoomId, RoomInfo> = rooms
            .iter()
            .filter(|(_, r)| r.members.contains(user))
            .map(|(id, r)| (id, r.info(id)))
            .collect();
        Ok(mine.into_values().collect())
    }
}

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
