//! Chaos: clients in several rooms send messages through `chat_client` while their
//! connections are cut, stalled and delayed and the server is killed and replaced by an
//! empty one, on a schedule drawn from one seed; a checker over the recorded history then
//! counts what was lost, duplicated, reordered or silently skipped.
//!
//! ```text
//! cargo test -p chat-client --test chaos -- --nocapture        # 8 clients × 40 messages
//! CHAOS_SCALE=large cargo test -p chat-client --test chaos -- --nocapture  # 40 × 250
//! CHAOS_SEED=12345 cargo test -p chat-client --test chaos -- --nocapture   # replay a seed
//! ```
//!
//! `CHAOS_CLIENTS`, `CHAOS_MESSAGES`, `CHAOS_ROOMS`, `CHAOS_FAULTS` and `CHAOS_RESTARTS`
//! set each figure. The seed fixes the plan — who is in which room, which room each message
//! goes to, the pauses between messages, and the faults with their times and targets; the
//! exact interleaving still varies from run to run. The seed is printed first; the summary
//! (JSON) is printed last and written to a file whose path is printed with it.
//!
//! # The set-up
//!
//! Every client sits behind its own fault proxy (so a fault hits the client the plan names).
//! The engine's heartbeat is 500 ms: a stalled connection is given up within about two
//! seconds. A restart kills the in-memory server and starts an empty one; each server —
//! each *generation* — keeps its store after it dies, and the stores are the truth the
//! checker compares the history with. A room's *epoch* is its life in one generation; a
//! message is known by `(room, seq, cid, ts)`, looked up in the stores, so every ack and
//! every delivered message is attributed to its epoch without trusting the client. A client
//! that sees `Event::Reset` joins the room again (the new server knows nobody) and carries on;
//! a send refused with `forbidden` (it reached the new server before the rejoin) is sent
//! again with the same `cid` after the rejoin.
//!
//! # What is counted
//!
//! - **sent**: messages the senders tried; **acked**: distinct messages acknowledged.
//! - **duplicates**: one client's application got the same `(room, seq, epoch)` twice.
//! - **order violations**: on one client, a room's seqs within one epoch did not strictly
//!   increase between two Resets of that room.
//! - **silent gaps**: a client got seq k and then k+j (j > 1) of a room in the same epoch
//!   without a Reset of that room between.
//! - **resets**: `Event::Reset`s, expected after every restart.
//! - **lost acked** — the rule. A client *is a member* of room r in epoch E from the seq its
//!   `join` reply under E gave (the lowest, if it joined more than once) to the end of E:
//!   nobody leaves, and no Reset can come inside one epoch (a new epoch is what a Reset
//!   announces), so a membership lasts its epoch. The protocol delivers every message after
//!   the join point. So an acked message (r, s) of epoch E is *expected* at every client
//!   that joined r under E at a seq below s, and at no other: a message acked before the
//!   join, or in an epoch the client never joined, is not its to receive, and a message
//!   stored but never acked counts nowhere. (The join point, rather than when the join's
//!   ack came, is what decides: a message stored before the join but acked after it is not
//!   the joiner's, one stored after it is, however the acks interleave.) An expected
//!   message that the client never got is
//!   - **lost acked** — a failure — when E is the final epoch (its server is alive at the
//!     end, faults have stopped, and the test waited, bounded in time, until every client
//!     had the latest message of each of its rooms), or when the client got a *later* seq
//!     of r in E (a hole below a received seq: it was caught up past the missing one);
//!   - **lost to restart** — expected, reported — otherwise: a client cut off just before
//!     its server was killed cannot get the dying epoch's last messages from anyone.
//!
//! The test passes only with 0 lost acked, 0 duplicates, 0 order violations and 0 silent
//! gaps; and, as integrity checks, with no delivered message and no ack that no store holds,
//! no change of epoch without a Reset, and every client back in all its rooms at the end.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_client::{
    Client, ClientBuilder, ClientError, ConnectionState, Event, Events, HistoryQuery, Outgoing,
    SendTarget,
};
use chat_core::protocol::{ErrorCode, MemberAction};
use chat_core::{ClientMsgId, EngineConfig, Epoch, MessageStore, RoomId, Seq, UserId};
use chat_store_memory::MemoryStore;
use parking_lot::Mutex;
use serde_json::json;
use support::proxy::FaultProxy;
use support::{Server, WAIT};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Attempts at one send (a `forbidden` after a restart, a timeout) before giving up on it.
const SEND_ATTEMPTS: usize = 6;
/// Attempts at one join before waiting for the next reason to try.
const JOIN_ATTEMPTS: usize = 5;
/// How long the senders may go on after twice the fault window, at most.
const SEND_GRACE: Duration = Duration::from_secs(30);
/// Bounds the loops that wait for resets or events (each also ends in bounded time).
const MAX_ROUNDS: usize = 1_000_000;
/// Problems listed by name in the summary (all are counted).
const MAX_DETAILS: usize = 40;
/// Traces of what a client saw, around a problem, in the summary.
const MAX_TRACES: usize = 4;

// ---------------------------------------------------------------------------------------
// The seed and the plan.

/// splitmix64: a tiny PRNG that gives the same sequence for the same seed everywhere.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// An independent stream for one part of the plan (so that changing one part, say
    /// the number of faults, leaves the others as they were).
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

#[derive(Debug, Clone)]
struct Settings {
    seed: u64,
    scale: &'static str,
    clients: usize,
    messages: usize,
    rooms: usize,
    faults: usize,
    restarts: usize,
    /// How long faults go on; the senders spread their messages over about as long.
    window: Duration,
    /// When the senders stop, counted from the start, whatever they have left to send.
    send_deadline: Duration,
    heartbeat: Duration,
    /// How long the test waits, at most, for every client to catch up at the end.
    converge: Duration,
}

fn env_usize(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
    )
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

impl Settings {
    fn from_env() -> Settings {
        let seed = match std::env::var("CHAOS_SEED") {
            Ok(s) => parse_seed(&s).unwrap_or_else(|| panic!("CHAOS_SEED={s:?} is not a u64")),
            Err(_) => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                // Small seeds are easier to type; a million is plenty of variety.
                Rng(nanos).next() % 1_000_000
            }
        };
        let large = std::env::var("CHAOS_SCALE").is_ok_and(|s| s.eq_ignore_ascii_case("large"));
        let (scale, clients, messages, rooms, restarts) = if large {
            ("large", 40, 250, 6, 3)
        } else {
            ("default", 8, 40, 3, 1)
        };
        let clients = env_usize("CHAOS_CLIENTS")
            .unwrap_or(clients)
            .clamp(2, 1_000);
        let messages = env_usize("CHAOS_MESSAGES")
            .unwrap_or(messages)
            .clamp(1, 10_000);
        let rooms = env_usize("CHAOS_ROOMS").unwrap_or(rooms).clamp(1, 100);
        // About 120 ms per message: 40 messages make 5 s of chaos, 250 make 30 s.
        let window = Duration::from_millis((messages as u64 * 120).clamp(4_000, 120_000));
        let faults = env_usize("CHAOS_FAULTS").unwrap_or((window.as_secs() as usize * 2).max(8));
        let restarts = env_usize("CHAOS_RESTARTS").unwrap_or(restarts).min(20);
        Settings {
            seed,
            scale,
            clients,
            messages,
            rooms,
            faults,
            restarts,
            window,
            send_deadline: window * 2 + SEND_GRACE,
            heartbeat: Duration::from_millis(500),
            converge: Duration::from_secs(if large { 90 } else { 30 }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The client's connection is cut (reset both ways, no close handshake).
    Cut(usize),
    /// Every client's connection is cut at once.
    CutEveryone,
    /// The client's connection stalls both ways: half-open until a heartbeat notices.
    Stall(usize),
    /// What the server sends the client stalls; what the client sends still arrives.
    StallDown(usize),
    /// Every chunk to and from the client waits this long, until healed.
    Delay(usize, Duration),
    /// The client's connection is cut and new ones are refused, until healed.
    Refuse(usize),
    /// Ends a delay or a refusal.
    Heal(usize),
    /// The server is killed; a fresh, empty one takes its place.
    Restart,
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Cut(_) => "cut",
            Fault::CutEveryone => "cut_everyone",
            Fault::Stall(_) => "stall",
            Fault::StallDown(_) => "stall_down",
            Fault::Delay(..) => "delay",
            Fault::Refuse(_) => "refuse",
            Fault::Heal(_) => "heal",
            Fault::Restart => "restart",
        }
    }

    fn describe(self) -> String {
        match self {
            Fault::Cut(c) | Fault::Stall(c) | Fault::StallDown(c) | Fault::Refuse(c) => {
                format!("{} c{c}", self.kind())
            }
            Fault::Heal(c) => format!("heal c{c}"),
            Fault::Delay(c, each) => format!("delay c{c} {}ms", each.as_millis()),
            Fault::CutEveryone | Fault::Restart => self.kind().to_owned(),
        }
    }
}

#[derive(Debug)]
struct Plan {
    /// Per client: the rooms it is in.
    rooms_of: Vec<Vec<usize>>,
    /// Per client: for each message, its room and the pause before it.
    sends: Vec<Vec<(usize, Duration)>>,
    /// The faults, by time from the start, in order.
    faults: Vec<(Duration, Fault)>,
}

impl Plan {
    fn new(s: &Settings) -> Plan {
        let mut seed = Rng(s.seed);
        let (mut rooms_rng, mut sends_rng, mut faults_rng) =
            (seed.fork(), seed.fork(), seed.fork());
        // Every client is in room `c % rooms`, and up to two more: each room has members.
        let rooms_of: Vec<Vec<usize>> = (0..s.clients)
            .map(|c| {
                let mut mine = vec![c % s.rooms];
                for _ in 0..rooms_rng.index(s.rooms.min(3)) {
                    let room = rooms_rng.index(s.rooms);
                    if !mine.contains(&room) {
                        mine.push(room);
                    }
                }
                mine.sort_unstable();
                mine
            })
            .collect();
        let window_ms = s.window.as_millis() as u64;
        let mean_pause = window_ms / s.messages as u64;
        let sends = rooms_of
            .iter()
            .map(|mine| {
                (0..s.messages)
                    .map(|_| {
                        let room = mine[sends_rng.index(mine.len())];
                        (room, sends_rng.millis(0, 2 * mean_pause))
                    })
                    .collect()
            })
            .collect();
        let mut faults = Vec::new();
        for _ in 0..s.faults {
            let at = faults_rng.millis(window_ms / 20, window_ms);
            let client = faults_rng.index(s.clients);
            match faults_rng.below(100) {
                0..30 => faults.push((at, Fault::Cut(client))),
                30..38 => faults.push((at, Fault::CutEveryone)),
                38..60 => faults.push((at, Fault::Stall(client))),
                60..70 => faults.push((at, Fault::StallDown(client))),
                70..85 => {
                    faults.push((at, Fault::Delay(client, faults_rng.millis(5, 80))));
                    faults.push((at + faults_rng.millis(300, 2_000), Fault::Heal(client)));
                }
                _ => {
                    faults.push((at, Fault::Refuse(client)));
                    faults.push((at + faults_rng.millis(200, 1_500), Fault::Heal(client)));
                }
            }
        }
        // Restarts spread over the window, each somewhere in the middle of its slot.
        let slot = window_ms / (s.restarts as u64 + 1);
        for k in 0..s.restarts as u64 {
            let at = slot * (k + 1) - slot / 4 + faults_rng.below(slot / 2 + 1);
            faults.push((Duration::from_millis(at), Fault::Restart));
        }
        faults.sort_by_key(|(at, _)| *at);
        Plan {
            rooms_of,
            sends,
            faults,
        }
    }
}

// ---------------------------------------------------------------------------------------
// What each client records.

/// One thing the application got, in the order it got them.
#[derive(Debug)]
enum Seen {
    Message {
        room: usize,
        seq: u64,
        cid: String,
        ts: u64,
    },
    Reset {
        room: usize,
    },
    /// A message of a room that is not in the plan.
    Stray,
    /// This user's own `member` join push (for traces only).
    Member {
        room: usize,
    },
    /// A session opened (`true`) or was lost (for traces only).
    Session(bool),
}

/// A successful join, and how many events the application had seen when it was recorded
/// (where it goes in a trace: the reply and the events travel apart).
#[derive(Debug)]
struct Join {
    room: usize,
    epoch: Epoch,
    seq: u64,
    at: usize,
}

#[derive(Debug)]
struct Ack {
    room: usize,
    seq: u64,
    cid: String,
    ts: u64,
    dup: bool,
}

/// A delivered message as the convergence check compares it: `(seq, cid, ts)`.
type Last = (u64, String, u64);

#[derive(Debug, Default)]
struct Record {
    seen: Vec<Seen>,
    joins: Vec<Join>,
    acks: Vec<Ack>,
    /// Per room: the last message delivered since the room's last Reset.
    last: Vec<Option<Last>>,
    attempted: usize,
    gave_up: usize,
    forbidden: usize,
    retries: usize,
    join_failures: usize,
    disconnects: usize,
}

/// Reads one client's events until it stops, recording them; tells the client's control
/// task which rooms were reset.
async fn record_events(
    me: UserId,
    mut events: Events,
    record: Arc<Mutex<Record>>,
    rooms: Arc<HashMap<RoomId, usize>>,
    resets: mpsc::UnboundedSender<usize>,
    progress: Arc<watch::Sender<u64>>,
) {
    // Ends after `ConnectionState::Closed`, when the test closes the client.
    while let Some(event) = events.next().await {
        let mut record = record.lock();
        match event {
            Event::Message(m) => match rooms.get(&m.room) {
                Some(&room) => {
                    let (seq, ts) = (m.seq.get(), m.ts.as_millis());
                    let cid = m.cid.as_str().to_owned();
                    record.last[room] = Some((seq, cid.clone(), ts));
                    record.seen.push(Seen::Message { room, seq, cid, ts });
                }
                None => record.seen.push(Seen::Stray),
            },
            Event::Reset(reset) => {
                if let Some(&room) = rooms.get(&reset.room) {
                    record.last[room] = None;
                    record.seen.push(Seen::Reset { room });
                    let _ = resets.send(room);
                }
            }
            Event::Member(m) if m.user == me && m.action == MemberAction::Join => {
                if let Some(&room) = rooms.get(&m.room) {
                    record.seen.push(Seen::Member { room });
                }
            }
            Event::State(ConnectionState::Connected { .. }) => {
                record.seen.push(Seen::Session(true));
            }
            Event::State(ConnectionState::Disconnected { .. }) => {
                record.disconnects += 1;
                record.seen.push(Seen::Session(false));
            }
            _ => {}
        }
        drop(record);
        progress.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One client's application: joins its rooms (again after every Reset) and sends its
/// messages on the plan's schedule.
struct Control {
    index: usize,
    client: Client,
    record: Arc<Mutex<Record>>,
    room_ids: Arc<Vec<RoomId>>,
    rooms: Vec<usize>,
    sends: Vec<(usize, Duration)>,
    resets: mpsc::UnboundedReceiver<usize>,
    need_join: BTreeSet<usize>,
    progress: Arc<watch::Sender<u64>>,
}

/// Counters the control tasks move forward; the test waits on them.
#[derive(Clone)]
struct Phases {
    send_deadline: Duration,
    ready: Arc<watch::Sender<usize>>,
    done_sending: Arc<watch::Sender<usize>>,
    go: watch::Receiver<Option<Instant>>,
    stop: watch::Receiver<bool>,
}

impl Control {
    async fn run(mut self, mut phases: Phases) {
        self.need_join.extend(self.rooms.iter().copied());
        self.join_needed().await;
        phases.ready.send_modify(|n| *n += 1);
        let start = match tokio::time::timeout(WAIT, phases.go.wait_for(Option::is_some)).await {
            Ok(Ok(start)) => start.unwrap_or_else(Instant::now),
            _ => return,
        };
        let deadline = start + phases.send_deadline;
        let mut at = start;
        let sends = std::mem::take(&mut self.sends);
        'sending: for (k, &(room, pause)) in sends.iter().enumerate() {
            // The schedule's pause; rooms reset meanwhile are joined again meanwhile.
            at += pause;
            for _ in 0..MAX_ROUNDS {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => break,
                    Some(room) = self.resets.recv() => {
                        self.need_join.insert(room);
                        if !self.join_needed().await {
                            break 'sending;
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                break;
            }
            self.send(k, room, deadline).await;
        }
        phases.done_sending.send_modify(|n| *n += 1);
        // Settle: join again whatever is reset (the last restart may come later), until the
        // test stops. A join that failed is tried again a few times at once (each try waits
        // for a reply, or the request timeout), then at the next reset.
        let mut retries = 0;
        for _ in 0..MAX_ROUNDS {
            if !self.join_needed().await {
                return;
            }
            if !self.need_join.is_empty() && retries < JOIN_ATTEMPTS {
                retries += 1;
                continue;
            }
            tokio::select! {
                _ = phases.stop.wait_for(|stop| *stop) => return,
                room = self.resets.recv() => match room {
                    Some(room) => { self.need_join.insert(room); }
                    None => return,
                },
            }
        }
    }

    /// Joins the rooms that need it; `false` once the client is closed.
    async fn join_needed(&mut self) -> bool {
        while let Ok(room) = self.resets.try_recv() {
            self.need_join.insert(room);
        }
        let rooms: Vec<usize> = self.need_join.iter().copied().collect();
        for room in rooms {
            for _ in 0..JOIN_ATTEMPTS {
                match self.client.join(&self.room_ids[room]).await {
                    Ok(state) => {
                        let mut record = self.record.lock();
                        let at = record.seen.len();
                        record.joins.push(Join {
                            room,
                            epoch: state.epoch,
                            seq: state.seq.get(),
                            at,
                        });
                        drop(record);
                        self.need_join.remove(&room);
                        self.progress.send_modify(|n| *n = n.wrapping_add(1));
                        break;
                    }
                    Err(ClientError::Closed) => return false,
                    Err(_) => self.record.lock().join_failures += 1,
                }
            }
        }
        true
    }

    /// Sends message `k` to `room` until it is acked (the same `cid` every time, so a retry
    /// is stored once per server).
    async fn send(&mut self, k: usize, room: usize, deadline: Instant) {
        let cid = ClientMsgId::new(&format!("c{}-m{k}", self.index)).unwrap();
        self.record.lock().attempted += 1;
        for attempt in 0..SEND_ATTEMPTS {
            if attempt > 0 {
                self.record.lock().retries += 1;
            }
            if !self.join_needed().await {
                break;
            }
            let outgoing = Outgoing {
                target: SendTarget::Room(self.room_ids[room].clone()),
                body: format!("c{} m{k}", self.index),
                meta: None,
                cid: Some(cid.clone()),
            };
            let Ok(result) =
                tokio::time::timeout_at(deadline, self.client.send_message(outgoing)).await
            else {
                break;
            };
            match result {
                Ok(ack) => {
                    self.record.lock().acks.push(Ack {
                        room,
                        seq: ack.seq.get(),
                        cid: ack.cid.as_str().to_owned(),
                        ts: ack.ts.as_millis(),
                        dup: ack.dup,
                    });
                    return;
                }
                // The new server after a restart: not a member there yet.
                Err(e) if e.code() == Some(ErrorCode::Forbidden) => {
                    self.record.lock().forbidden += 1;
                    self.need_join.insert(room);
                }
                Err(ClientError::Closed) => break,
                Err(_) => {}
            }
        }
        self.record.lock().gave_up += 1;
    }
}

// ---------------------------------------------------------------------------------------
// The faults.

/// Applies the faults on schedule; returns the server alive at the end and the stores of
/// the servers it started.
async fn run_faults(
    faults: Vec<(Duration, Fault)>,
    started: Instant,
    mut server: Server,
    config: EngineConfig,
    proxies: Arc<Vec<FaultProxy>>,
) -> (Server, Vec<Arc<MemoryStore>>, BTreeMap<&'static str, usize>) {
    let mut stores = Vec::new();
    let mut applied = BTreeMap::new();
    for (at, fault) in faults {
        // The schedule: pace the faults, not a wait for anything.
        tokio::time::sleep_until(started + at).await;
        *applied.entry(fault.kind()).or_insert(0) += 1;
        match fault {
            Fault::Cut(c) => proxies[c].cut_all(),
            Fault::CutEveryone => proxies.iter().for_each(FaultProxy::cut_all),
            Fault::Stall(c) => proxies[c].stall_all(),
            Fault::StallDown(c) => proxies[c].stall_down_all(),
            Fault::Delay(c, each) => proxies[c].set_delay(each),
            Fault::Refuse(c) => {
                proxies[c].set_refusing(true);
                proxies[c].cut_all();
            }
            Fault::Heal(c) => {
                proxies[c].set_delay(Duration::ZERO);
                proxies[c].set_refusing(false);
            }
            Fault::Restart => {
                let fresh = Server::start(config.clone()).await;
                stores.push(fresh.store.clone());
                std::mem::replace(&mut server, fresh).kill();
                for proxy in proxies.iter() {
                    proxy.set_upstream(server.addr);
                    proxy.cut_all();
                }
            }
        }
    }
    for proxy in proxies.iter() {
        proxy.set_delay(Duration::ZERO);
        proxy.set_refusing(false);
    }
    (server, stores, applied)
}

// ---------------------------------------------------------------------------------------
// The truth: what each server's store holds.

#[derive(Debug)]
struct StoredRoom {
    epoch: Epoch,
    /// `(cid, ts)` by seq − 1.
    log: Vec<(String, u64)>,
}

#[derive(Debug)]
struct Oracle {
    /// Per generation, per room.
    generations: Vec<Vec<Option<StoredRoom>>>,
    /// Logs whose seqs were not exactly 1, 2, 3, …
    broken_logs: usize,
}

impl Oracle {
    async fn read(stores: &[Arc<MemoryStore>], room_ids: &[RoomId]) -> Oracle {
        let mut generations = Vec::new();
        let mut broken_logs = 0;
        for store in stores {
            let mut rooms = Vec::new();
            for room in room_ids {
                let Some(info) = store.room(room).await.unwrap() else {
                    rooms.push(None);
                    continue;
                };
                let mut log = Vec::new();
                let mut after = Seq::ZERO;
                for _page in 0..=info.latest.get() / 500 + 1 {
                    let page = store
                        .history(room, HistoryQuery::After(after), 500)
                        .await
                        .unwrap();
                    for m in &page.messages {
                        if m.seq.get() != log.len() as u64 + 1 {
                            broken_logs += 1;
                        }
                        log.push((m.cid.as_str().to_owned(), m.ts.as_millis()));
                        after = m.seq;
                    }
                    if !page.more || page.messages.is_empty() {
                        break;
                    }
                }
                rooms.push(Some(StoredRoom {
                    epoch: info.epoch,
                    log,
                }));
            }
            generations.push(rooms);
        }
        Oracle {
            generations,
            broken_logs,
        }
    }

    /// The generations whose store holds this message at this seq.
    fn find(&self, room: usize, seq: u64, cid: &str, ts: u64) -> Vec<usize> {
        let at = seq.wrapping_sub(1) as usize;
        (0..self.generations.len())
            .filter(|&g| {
                self.generations[g][room]
                    .as_ref()
                    .and_then(|r| r.log.get(at))
                    .is_some_and(|(c, t)| c == cid && *t == ts)
            })
            .collect()
    }

    fn generation_of(&self, room: usize, epoch: &Epoch) -> Option<usize> {
        (0..self.generations.len()).find(|&g| {
            self.generations[g][room]
                .as_ref()
                .is_some_and(|r| r.epoch == *epoch)
        })
    }

    fn stored(&self) -> usize {
        self.generations
            .iter()
            .flatten()
            .flatten()
            .map(|r| r.log.len())
            .sum()
    }
}

// ---------------------------------------------------------------------------------------
// Waiting for the clients to catch up, and the checker.

/// Per room, in the server alive now: its epoch and its latest message (`None`: the room
/// does not exist there yet).
async fn targets(store: &MemoryStore, room_ids: &[RoomId]) -> Vec<Option<(Epoch, Option<Last>)>> {
    let mut targets = Vec::new();
    for room in room_ids {
        let target = match store.room(room).await.unwrap() {
            None => None,
            Some(info) if info.latest == Seq::ZERO => Some((info.epoch, None)),
            Some(info) => {
                let page = store.history(room, HistoryQuery::Latest, 1).await.unwrap();
                let last = page
                    .messages
                    .last()
                    .map(|m| (m.seq.get(), m.cid.as_str().to_owned(), m.ts.as_millis()));
                Some((info.epoch, last))
            }
        };
        targets.push(target);
    }
    targets
}

/// How many clients are not yet back in all their rooms with the latest message of each.
fn behind(
    records: &[Arc<Mutex<Record>>],
    rooms_of: &[Vec<usize>],
    targets: &[Option<(Epoch, Option<Last>)>],
) -> usize {
    records
        .iter()
        .zip(rooms_of)
        .filter(|(record, rooms)| {
            let record = record.lock();
            !rooms.iter().all(|&room| match &targets[room] {
                None => false,
                Some((epoch, last)) => {
                    record
                        .joins
                        .iter()
                        .any(|j| j.room == room && j.epoch == *epoch)
                        && (last.is_none() || record.last[room] == *last)
                }
            })
        })
        .count()
}

/// Waits (bounded) until every client is caught up with the server alive now. Returns
/// whether they all were, and how long it took.
async fn converge(
    store: &MemoryStore,
    room_ids: &[RoomId],
    records: &[Arc<Mutex<Record>>],
    rooms_of: &[Vec<usize>],
    mut progress: watch::Receiver<u64>,
    limit: Duration,
) -> (bool, usize, Duration) {
    let began = Instant::now();
    let deadline = began + limit;
    for _ in 0..MAX_ROUNDS {
        progress.borrow_and_update();
        let late = behind(records, rooms_of, &targets(store, room_ids).await);
        if late == 0 {
            return (true, 0, began.elapsed());
        }
        // Woken by the next event or join of any client; bounded by the deadline.
        match tokio::time::timeout_at(deadline, progress.changed()).await {
            Ok(Ok(())) => {}
            _ => return (false, late, began.elapsed()),
        }
    }
    (false, records.len(), began.elapsed())
}

#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    acks: usize,
    acked: usize,
    acks_dup: usize,
    gave_up: usize,
    send_forbidden: usize,
    send_retries: usize,
    join_failures: usize,
    disconnects: usize,
    delivered: usize,
    expected: usize,
    lost_acked: usize,
    lost_to_restart: usize,
    /// Per client and dying generation: how many, and the lowest seq lost.
    lost_to_restart_by_client: BTreeMap<String, (usize, String)>,
    duplicates: usize,
    order_violations: usize,
    silent_gaps: usize,
    resets: usize,
    epoch_change_without_reset: usize,
    unknown_messages: usize,
    unknown_joins: usize,
    acked_not_stored: usize,
    ambiguous: usize,
    final_joins_missing: usize,
    problems: Vec<String>,
    /// Where to show what a client saw: (client, room, index of the event).
    traced: Vec<(usize, usize, usize)>,
    traces: BTreeMap<String, Vec<String>>,
}

impl Tally {
    fn problem(&mut self, text: impl FnOnce() -> String) {
        if self.problems.len() < MAX_DETAILS {
            self.problems.push(text());
        }
    }

    /// Asks for a trace of what client `c` saw of `room` around its event `at`.
    fn trace(&mut self, c: usize, room: usize, at: usize) {
        if self.traced.len() < MAX_TRACES && !self.traced.iter().any(|t| (t.0, t.1) == (c, room)) {
            self.traced.push((c, room, at));
        }
    }

    /// Whether the run upheld every guarantee checked.
    fn clean(&self, broken_logs: usize) -> bool {
        self.lost_acked == 0
            && self.duplicates == 0
            && self.order_violations == 0
            && self.silent_gaps == 0
            && self.epoch_change_without_reset == 0
            && self.unknown_messages == 0
            && self.unknown_joins == 0
            && self.acked_not_stored == 0
            && self.final_joins_missing == 0
            && broken_logs == 0
    }
}

/// The generation of a message, from the stores (the latest, in the unlikely case that
/// two stores hold the same `(room, seq, cid, ts)`).
fn generation(
    tally: &mut Tally,
    oracle: &Oracle,
    room: usize,
    seq: u64,
    cid: &str,
    ts: u64,
) -> Option<usize> {
    let found = oracle.find(room, seq, cid, ts);
    if found.len() > 1 {
        tally.ambiguous += 1;
    }
    found.last().copied()
}

fn check(records: &[Record], rooms_of: &[Vec<usize>], oracle: &Oracle, names: &[RoomId]) -> Tally {
    let mut tally = Tally::default();
    let last_generation = oracle.generations.len() - 1;
    // Acked messages: (room, generation) → seqs.
    let mut acked: HashMap<(usize, usize), BTreeSet<u64>> = HashMap::new();
    for (c, record) in records.iter().enumerate() {
        tally.sent += record.attempted;
        tally.gave_up += record.gave_up;
        tally.send_forbidden += record.forbidden;
        tally.send_retries += record.retries;
        tally.join_failures += record.join_failures;
        tally.disconnects += record.disconnects;
        for ack in &record.acks {
            tally.acks += 1;
            tally.acks_dup += usize::from(ack.dup);
            match generation(&mut tally, oracle, ack.room, ack.seq, &ack.cid, ack.ts) {
                Some(g) => {
                    acked.entry((ack.room, g)).or_default().insert(ack.seq);
                }
                None => {
                    tally.acked_not_stored += 1;
                    tally.problem(|| {
                        format!(
                            "c{c}: ack {}#{} ({}) is in no store",
                            names[ack.room], ack.seq, ack.cid
                        )
                    });
                }
            }
        }
    }
    tally.acked = acked.values().map(BTreeSet::len).sum();

    for (c, record) in records.iter().enumerate() {
        // What the application got: checked in the order it got it.
        let mut last: Vec<Option<(usize, u64)>> = vec![None; names.len()];
        let mut got: HashSet<(usize, usize, u64)> = HashSet::new();
        let mut highest: HashMap<(usize, usize), u64> = HashMap::new();
        for (i, seen) in record.seen.iter().enumerate() {
            let (room, seq, cid, ts) = match seen {
                Seen::Reset { room } => {
                    tally.resets += 1;
                    last[*room] = None;
                    continue;
                }
                Seen::Stray => {
                    tally.unknown_messages += 1;
                    tally.problem(|| format!("c{c}: a message of a room not in the plan"));
                    continue;
                }
                Seen::Member { .. } | Seen::Session(_) => continue,
                Seen::Message { room, seq, cid, ts } => (*room, *seq, cid.as_str(), *ts),
            };
            tally.delivered += 1;
            let Some(g) = generation(&mut tally, oracle, room, seq, cid, ts) else {
                tally.unknown_messages += 1;
                tally.problem(|| format!("c{c}: {}#{seq} ({cid}) is in no store", names[room]));
                continue;
            };
            let name = &names[room];
            if !got.insert((room, g, seq)) {
                tally.duplicates += 1;
                tally.trace(c, room, i);
                tally.problem(|| format!("c{c}: {name}#{seq} of generation {g} twice"));
            }
            let top = match last[room] {
                Some((g0, s0)) if g0 == g => {
                    if seq <= s0 {
                        tally.order_violations += 1;
                        tally.trace(c, room, i);
                        tally
                            .problem(|| format!("c{c}: {name}#{seq} after #{s0} (generation {g})"));
                    } else if seq > s0 + 1 {
                        tally.silent_gaps += 1;
                        tally.trace(c, room, i);
                        tally.problem(|| {
                            format!(
                                "c{c}: {name}#{seq} right after #{s0}, no Reset (generation {g})"
                            )
                        });
                    }
                    s0.max(seq)
                }
                Some((g0, s0)) => {
                    tally.epoch_change_without_reset += 1;
                    tally.trace(c, room, i);
                    tally.problem(|| {
                        format!("c{c}: {name}#{seq} of generation {g} after #{s0} of generation {g0}, no Reset")
                    });
                    seq
                }
                None => seq,
            };
            last[room] = Some((g, top));
            let high = highest.entry((room, g)).or_insert(0);
            *high = (*high).max(seq);
        }

        // Where its memberships start: the lowest join point per (room, generation).
        let mut joined: BTreeMap<(usize, usize), (u64, usize)> = BTreeMap::new();
        for join in &record.joins {
            match oracle.generation_of(join.room, &join.epoch) {
                Some(g) => {
                    let from = joined.entry((join.room, g)).or_insert((join.seq, join.at));
                    *from = (*from).min((join.seq, join.at));
                }
                None => {
                    tally.unknown_joins += 1;
                    tally.problem(|| {
                        format!("c{c}: joined {} under an unknown epoch", names[join.room])
                    });
                }
            }
        }
        for &room in &rooms_of[c] {
            if !joined.contains_key(&(room, last_generation)) {
                tally.final_joins_missing += 1;
                tally.problem(|| format!("c{c}: not back in {} at the end", names[room]));
            }
        }
        for (&(room, g), &(from, at)) in &joined {
            let Some(seqs) = acked.get(&(room, g)) else {
                continue;
            };
            for &seq in seqs.range(from + 1..) {
                tally.expected += 1;
                if got.contains(&(room, g, seq)) {
                    continue;
                }
                let later = highest.get(&(room, g)).is_some_and(|&high| high > seq);
                if g == last_generation || later {
                    tally.lost_acked += 1;
                    tally.trace(c, room, at);
                    tally.problem(|| {
                        format!(
                            "c{c}: lost acked {}#{seq} of generation {g} (joined at #{from}{})",
                            names[room],
                            if later { ", got later ones" } else { "" }
                        )
                    });
                } else {
                    tally.lost_to_restart += 1;
                    let entry = tally
                        .lost_to_restart_by_client
                        .entry(format!("c{c} generation {g}"))
                        .or_insert((0, format!("{}#{seq}", names[room])));
                    entry.0 += 1;
                }
            }
        }
    }
    for (c, room, at) in tally.traced.clone() {
        let key = format!("c{c} {} around event {at}", names[room]);
        tally
            .traces
            .insert(key, trace(&records[c], room, at, oracle));
    }
    tally
}

/// What client `c` saw of `room` (and of its sessions) from a while before event `at` to
/// a little after, with its joins where they were recorded.
fn trace(record: &Record, room: usize, at: usize, oracle: &Oracle) -> Vec<String> {
    let from = at.saturating_sub(400);
    let to = (at + 60).min(record.seen.len());
    let mut lines = Vec::new();
    for i in from..=to {
        for join in record.joins.iter().filter(|j| j.room == room && j.at == i) {
            let g = oracle.generation_of(room, &join.epoch);
            lines.push(format!(
                "{i}: join ok under generation {g:?} at #{}",
                join.seq
            ));
        }
        let line = match record.seen.get(i) {
            Some(Seen::Message {
                room: r,
                seq,
                cid,
                ts,
            }) if *r == room => {
                let g = oracle.find(room, *seq, cid, *ts);
                format!("{i}: message #{seq} generation {g:?} ({cid})")
            }
            Some(Seen::Reset { room: r }) if *r == room => format!("{i}: RESET"),
            Some(Seen::Member { room: r }) if *r == room => format!("{i}: member push (joined)"),
            Some(Seen::Session(true)) => format!("{i}: connected"),
            Some(Seen::Session(false)) => format!("{i}: disconnected"),
            _ => continue,
        };
        lines.push(line);
    }
    lines
}

// ---------------------------------------------------------------------------------------
// The test.

struct Agent {
    client: Client,
    record: Arc<Mutex<Record>>,
    events: tokio::task::JoinHandle<()>,
    control: tokio::task::JoinHandle<()>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_keep_every_acked_message_through_cuts_stalls_and_restarts() {
    let settings = Settings::from_env();
    let seed = settings.seed;
    println!(
        "chaos: seed {seed} ({} scale: {} clients × {} messages, {} rooms, {} faults, {} restarts) \
         — reproduce with CHAOS_SEED={seed}",
        settings.scale,
        settings.clients,
        settings.messages,
        settings.rooms,
        settings.faults,
        settings.restarts
    );
    let plan = Plan::new(&settings);
    let began = Instant::now();
    let mut config = EngineConfig::default();
    config.heartbeat = settings.heartbeat;

    let server = Server::start(config.clone()).await;
    let mut stores = vec![server.store.clone()];
    let mut proxies = Vec::with_capacity(settings.clients);
    for _ in 0..settings.clients {
        proxies.push(FaultProxy::start(server.addr).await);
    }
    let proxies = Arc::new(proxies);
    let room_ids: Arc<Vec<RoomId>> = Arc::new(
        (0..settings.rooms)
            .map(|r| RoomId::new(&format!("chaos-{r}")).unwrap())
            .collect(),
    );
    let room_index: Arc<HashMap<RoomId, usize>> = Arc::new(
        room_ids
            .iter()
            .enumerate()
            .map(|(i, r)| (r.clone(), i))
            .collect(),
    );

    let progress = Arc::new(watch::channel(0u64).0);
    let (ready, mut ready_rx) = watch::channel(0usize);
    let (done_sending, mut done_rx) = watch::channel(0usize);
    let (go, go_rx) = watch::channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let phases = Phases {
        send_deadline: settings.send_deadline,
        ready: Arc::new(ready),
        done_sending: Arc::new(done_sending),
        go: go_rx,
        stop: stop_rx,
    };
    let mut agents = Vec::with_capacity(settings.clients);
    for (c, proxy) in proxies.iter().enumerate() {
        let (client, events) = ClientBuilder::new(proxy.url(), format!("dev:c{c}"))
            .backoff(Duration::from_millis(10), Duration::from_millis(250))
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap();
        let record = Arc::new(Mutex::new(Record {
            last: vec![None; settings.rooms],
            ..Record::default()
        }));
        let (reset_tx, reset_rx) = mpsc::unbounded_channel();
        let events = tokio::spawn(record_events(
            UserId::new(&format!("c{c}")).unwrap(),
            events,
            record.clone(),
            room_index.clone(),
            reset_tx,
            progress.clone(),
        ));
        let control = Control {
            index: c,
            client: client.clone(),
            record: record.clone(),
            room_ids: room_ids.clone(),
            rooms: plan.rooms_of[c].clone(),
            sends: plan.sends[c].clone(),
            resets: reset_rx,
            need_join: BTreeSet::new(),
            progress: progress.clone(),
        };
        let control = tokio::spawn(control.run(phases.clone()));
        agents.push(Agent {
            client,
            record,
            events,
            control,
        });
    }
    let clients = settings.clients;
    tokio::time::timeout(WAIT, ready_rx.wait_for(|n| *n == clients))
        .await
        .expect("every client joined its rooms in time")
        .unwrap();

    // Chaos: the senders send, the faults happen.
    let started = Instant::now();
    go.send_replace(Some(started));
    let faults = tokio::spawn(run_faults(
        plan.faults.clone(),
        started,
        server,
        config,
        proxies.clone(),
    ));
    let last_fault = plan.faults.last().map_or(Duration::ZERO, |(at, _)| *at);
    let (server, restarted, applied) = tokio::time::timeout(last_fault + WAIT, faults)
        .await
        .expect("the fault schedule ran in time")
        .unwrap();
    stores.extend(restarted);
    tokio::time::timeout(
        settings.send_deadline + WAIT,
        done_rx.wait_for(|n| *n == clients),
    )
    .await
    .expect("the senders finished in time")
    .unwrap();
    let sending = started.elapsed();
    println!(
        "chaos: faults over, sending done after {:.1}s; waiting for the clients to catch up",
        sending.as_secs_f64()
    );

    // Faults over: wait (bounded) until everyone has everything of the last server.
    let records: Vec<Arc<Mutex<Record>>> = agents.iter().map(|a| a.record.clone()).collect();
    let (converged, late, convergence) = converge(
        &server.store,
        &room_ids,
        &records,
        &plan.rooms_of,
        progress.subscribe(),
        settings.converge,
    )
    .await;

    stop.send_replace(true);
    for agent in &agents {
        agent.client.close().await;
    }
    for mut agent in agents {
        for task in [&mut agent.control, &mut agent.events] {
            if tokio::time::timeout(WAIT, &mut *task).await.is_err() {
                task.abort();
            }
        }
    }
    server.kill();
    let duration = began.elapsed();

    let oracle = Oracle::read(&stores, &room_ids).await;
    let records: Vec<Record> = records
        .iter()
        .map(|r| std::mem::take(&mut *r.lock()))
        .collect();
    let tally = check(&records, &plan.rooms_of, &oracle, &room_ids);
    let clean = tally.clean(oracle.broken_logs);
    let restarts = stores.len() - 1;
    let fault_count: usize = applied
        .iter()
        .filter(|(kind, _)| **kind != "heal" && **kind != "restart")
        .map(|(_, n)| n)
        .sum();
    let summary = json!({
        "seed": seed,
        "reproduce": format!("CHAOS_SEED={seed}"),
        "passed": clean,
        "run": {
            "scale": settings.scale,
            "clients": settings.clients,
            "messages_per_client": settings.messages,
            "rooms": settings.rooms,
            "heartbeat_ms": settings.heartbeat.as_millis() as u64,
            "fault_window_ms": settings.window.as_millis() as u64,
            "faults": fault_count,
            "faults_by_kind": applied,
            "restarts": restarts,
            "duration_ms": duration.as_millis() as u64,
            "sending_ms": sending.as_millis() as u64,
            "convergence_ms": convergence.as_millis() as u64,
            "converged": converged,
            "clients_not_caught_up": late,
        },
        "figures": {
            "planned": settings.clients * settings.messages,
            "sent": tally.sent,
            "acked": tally.acked,
            "lost_acked": tally.lost_acked,
            "duplicates": tally.duplicates,
            "order_violations": tally.order_violations,
            "silent_gaps": tally.silent_gaps,
            "resets": tally.resets,
            "lost_to_restart": tally.lost_to_restart,
            "lost_to_restart_by_client": tally.lost_to_restart_by_client,
            "expected_deliveries": tally.expected,
            "delivered": tally.delivered,
            "stored": oracle.stored(),
            "stored_not_acked": oracle.stored().saturating_sub(tally.acked),
            "disconnects": tally.disconnects,
        },
        "sending": {
            "acks": tally.acks,
            "acks_dup": tally.acks_dup,
            "gave_up": tally.gave_up,
            "forbidden_after_restart": tally.send_forbidden,
            "retries": tally.send_retries,
            "join_failures": tally.join_failures,
        },
        "integrity": {
            "epoch_change_without_reset": tally.epoch_change_without_reset,
            "unknown_messages": tally.unknown_messages,
            "unknown_joins": tally.unknown_joins,
            "acked_not_stored": tally.acked_not_stored,
            "ambiguous_ids": tally.ambiguous,
            "broken_store_logs": oracle.broken_logs,
            "final_joins_missing": tally.final_joins_missing,
        },
        "schedule": plan
            .faults
            .iter()
            .map(|(at, f)| format!("{:.3}s {}", at.as_secs_f64(), f.describe()))
            .collect::<Vec<_>>(),
        "problems": tally.problems,
        "traces": tally.traces,
    });
    let dir = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let path = dir.join(format!("chaos-{seed}.json"));
    let pretty = serde_json::to_string_pretty(&summary).unwrap();
    std::fs::write(&path, &pretty).unwrap();
    println!("chaos: summary in {}\n{pretty}", path.display());

    assert!(
        clean,
        "chaos found problems with seed {seed} (reproduce: CHAOS_SEED={seed}); see {}",
        path.display()
    );
    // A run in which nothing happened proves nothing.
    assert!(
        tally.acked > 0 && tally.expected > 0,
        "seed {seed}: nothing was acked or expected"
    );
    assert!(
        restarts == 0 || tally.resets > 0,
        "seed {seed}: {restarts} restarts and not one Reset"
    );
}
