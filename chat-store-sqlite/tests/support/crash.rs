//! The crash-consistency scenario: senders stream messages into a demo server over
//! WebSocket, the server is killed with `SIGKILL` at a random moment of each burst and
//! restarted on the same store; at the end, everything acked must be there, once, at the
//! seq its ack gave, and every room's log must be gapless.
//!
//! Shared by the crash tests of chat-store-sqlite and chat-store-postgres (the latter
//! includes this file by path).

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::server::{Rng, Server, Ws};

/// The shape of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How many times the server is killed (`CRASH_KILLS` overrides).
    pub kills: usize,
    /// Concurrent senders, each on its own connection and user.
    pub senders: usize,
    /// Rooms; sender `i` writes to room `i % rooms`; everyone is a member of every room.
    pub rooms: usize,
    /// Sends a sender keeps in flight before it waits for acks.
    pub window: usize,
    /// The most new messages a sender starts per burst (under the protocol's rate-limit
    /// burst of 1,000 frames per connection).
    pub per_burst: u64,
    /// The longest a restart may take (spawn to the first `hello` answered).
    pub restart_limit: Duration,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            kills: std::env::var("CRASH_KILLS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(25),
            senders: 8,
            rooms: 2,
            window: 8,
            per_burst: 800,
            restart_limit: Duration::from_secs(2),
        }
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub kills: usize,
    /// Sends acked (`ok`), over all bursts and the final retries.
    pub acked: usize,
    /// Sends whose ack never came because the server died: retried with the same cid.
    pub in_doubt: usize,
    /// Of those, how many the store had committed anyway (the retry said `dup`).
    pub in_doubt_were_stored: usize,
    /// Acked messages missing from the store or stored at another seq: must be 0.
    pub lost: usize,
    /// Messages in the store after the run.
    pub stored: usize,
    /// Restart times, spawn to first `hello` answered.
    pub restarts: Vec<Duration>,
}

impl Report {
    pub fn summary(&self) -> String {
        let max = self.restarts.iter().max().copied().unwrap_or_default();
        let mean = self
            .restarts
            .iter()
            .sum::<Duration>()
            .checked_div(self.restarts.len().max(1) as u32)
            .unwrap_or_default();
        format!(
            "{{\"kills\":{},\"acked\":{},\"in_doubt\":{},\"in_doubt_were_stored\":{},\"lost\":{},\"stored\":{},\"restart_max_ms\":{},\"restart_mean_ms\":{}}}",
            self.kills,
            self.acked,
            self.in_doubt,
            self.in_doubt_were_stored,
            self.lost,
            self.stored,
            max.as_millis(),
            mean.as_millis()
        )
    }
}

/// One sender across bursts.
#[derive(Debug, Clone)]
struct Sender {
    user: String,
    room: String,
    next: u64,
    /// Sent, never acked: retried first in the next burst.
    in_doubt: Vec<String>,
    /// Ever in doubt (to count how many turned out stored).
    was_in_doubt: HashSet<String>,
    /// cid → (seq, dup) of every ack.
    acked: HashMap<String, (u64, bool)>,
}

/// One burst of one sender: connect, join, say ready, then send (retries first) until
/// `per_burst` new messages are acked or the connection dies.
async fn burst(
    mut s: Sender,
    url: String,
    rooms: Vec<String>,
    plan: Plan,
    final_round: bool,
    ready: mpsc::Sender<()>,
) -> Sender {
    let mut ws = match Ws::connect(&url, &s.user).await {
        Ok(ws) => ws,
        Err(e) => panic!("{}: connect to a server that said it is ready: {e}", s.user),
    };
    for room in &rooms {
        if let Err(e) = ws.request(json!({"type": "join", "room": room})).await {
            panic!("{}: join {room}: {e}", s.user);
        }
    }
    let _ = ready.send(()).await;
    let mut queue: Vec<String> = std::mem::take(&mut s.in_doubt);
    queue.reverse();
    let new_until = if final_round {
        s.next
    } else {
        s.next + plan.per_burst
    };
    let mut in_flight: HashMap<u64, String> = HashMap::new();
    loop {
        while in_flight.len() < plan.window {
            let cid = match queue.pop() {
                Some(cid) => cid,
                None if s.next < new_until => {
                    s.next += 1;
                    format!("{}-{}", s.user, s.next)
                }
                None => break,
            };
            let frame = json!({"type": "send", "room": s.room, "cid": cid, "body": format!("body of {cid}")});
            match ws.send(frame).await {
                Ok(id) => {
                    in_flight.insert(id, cid);
                }
                Err(_) => {
                    s.in_doubt.push(cid);
                    break;
                }
            }
        }
        if in_flight.is_empty() && queue.is_empty() && s.next >= new_until {
            break;
        }
        match ws.reply().await {
            Ok(reply) => {
                let Some(cid) = reply["id"].as_u64().and_then(|id| in_flight.remove(&id)) else {
                    continue;
                };
                if reply["type"] == "ok" {
                    let seq = reply["seq"].as_u64().expect("an ok to send has a seq");
                    let dup = reply["dup"] == json!(true);
                    if let Some((first, _)) = s.acked.insert(cid.clone(), (seq, dup)) {
                        assert_eq!(first, seq, "{cid} was acked at two seqs");
                    }
                } else {
                    // Refused (unavailable, rate limited): nothing stored; retry later.
                    queue.push(cid);
                }
            }
            Err(_) => break,
        }
    }
    // Whatever was in flight when the connection died is in doubt.
    for (_, cid) in in_flight {
        s.was_in_doubt.insert(cid.clone());
        s.in_doubt.push(cid);
    }
    s.in_doubt.extend(queue);
    s
}

/// Runs the scenario against the server `binary` started with `args`.
pub async fn run(binary: &Path, args: &[String], plan: Plan) -> Report {
    let mut rng = Rng::from_env();
    let rooms: Vec<String> = (0..plan.rooms).map(|r| format!("crash-room-{r}")).collect();
    let mut senders: Vec<Sender> = (0..plan.senders)
        .map(|i| Sender {
            user: format!("sender{i}"),
            room: rooms[i % rooms.len()].clone(),
            next: 0,
            in_doubt: Vec::new(),
            was_in_doubt: HashSet::new(),
            acked: HashMap::new(),
        })
        .collect();
    let mut report = Report::default();
    let mut server = Server::start(binary, args).await;
    let test_started = Instant::now();
    for round in 0..=plan.kills {
        let final_round = round == plan.kills;
        let (ready_tx, mut ready_rx) = mpsc::channel(plan.senders);
        let tasks: Vec<_> = senders
            .drain(..)
            .map(|s| {
                tokio::spawn(burst(
                    s,
                    server.url.clone(),
                    rooms.clone(),
                    plan.clone(),
                    final_round,
                    ready_tx.clone(),
                ))
            })
            .collect();
        drop(ready_tx);
        if !final_round {
            // Every sender is in and sending: kill at a random moment of the burst.
            for _ in 0..plan.senders {
                tokio::time::timeout(Duration::from_secs(10), ready_rx.recv())
                    .await
                    .expect("senders did not join within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(5 + rng.below(200))).await;
            server.kill().await;
            report.kills += 1;
        }
        for task in tasks {
            senders.push(
                tokio::time::timeout(Duration::from_secs(60), task)
                    .await
                    .expect("a sender hung")
                    .expect("a sender panicked"),
            );
        }
        if !final_round {
            server = Server::start(binary, args).await;
            report.restarts.push(server.ready_in);
        }
    }
    for s in &senders {
        assert!(
            s.in_doubt.is_empty(),
            "{}: sends still in doubt after the final round: {:?}",
            s.user,
            s.in_doubt
        );
    }

    // What the store holds, read back through the server.
    let mut reader = Ws::connect(&server.url, "auditor")
        .await
        .expect("connect the auditor");
    let mut stored: HashMap<(String, String), (String, u64)> = HashMap::new();
    for room in &rooms {
        reader
            .request(json!({"type": "join", "room": room}))
            .await
            .expect("join as the auditor");
        let log = reader.whole_history(room).await.expect("read the history");
        let seqs: Vec<u64> = log.iter().map(|m| m["seq"].as_u64().unwrap_or(0)).collect();
        let expected: Vec<u64> = (1..=log.len() as u64).collect();
        assert_eq!(seqs, expected, "{room}: seqs must be 1..=N without a gap");
        for m in &log {
            let key = (str_of(m, "from"), str_of(m, "cid"));
            assert!(
                stored
                    .insert(key.clone(), (room.clone(), m["seq"].as_u64().unwrap_or(0)))
                    .is_none(),
                "{key:?} is stored twice"
            );
            assert_eq!(
                m["body"].as_str(),
                Some(format!("body of {}", key.1).as_str()),
                "{key:?} has another body"
            );
        }
        report.stored += log.len();
    }
    for s in &senders {
        for (cid, (seq, dup)) in &s.acked {
            report.acked += 1;
            match stored.get(&(s.user.clone(), cid.clone())) {
                Some((room, at)) if *room == s.room && at == seq => {}
                other => {
                    report.lost += 1;
                    eprintln!(
                        "LOST: {} {cid} acked at seq {seq}, stored: {other:?}",
                        s.user
                    );
                }
            }
            if s.was_in_doubt.contains(cid) && *dup {
                report.in_doubt_were_stored += 1;
            }
        }
        report.in_doubt += s.was_in_doubt.len();
    }
    let senders_users: HashSet<&str> = senders.iter().map(|s| s.user.as_str()).collect();
    assert!(
        stored
            .keys()
            .all(|(user, _)| senders_users.contains(user.as_str())),
        "the store holds messages nobody sent"
    );
    assert_eq!(
        report.stored, report.acked,
        "every stored message was acked, once, by the end"
    );
    server.kill().await;
    eprintln!(
        "crash run took {:.1} s",
        test_started.elapsed().as_secs_f64()
    );
    report
}

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// Asserts the guarantees of a run and prints its figures.
pub fn check(label: &str, report: &Report, plan: &Plan) {
    println!("{label}: {}", report.summary());
    assert_eq!(report.kills, plan.kills, "every planned kill happened");
    assert_eq!(report.lost, 0, "acked messages were lost");
    assert!(
        report.acked > 0,
        "nothing was acked: the test tested nothing"
    );
    for (i, t) in report.restarts.iter().enumerate() {
        assert!(
            *t <= plan.restart_limit,
            "restart {} took {t:?}, over {:?}",
            i + 1,
            plan.restart_limit
        );
    }
}
