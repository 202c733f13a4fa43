//! Issue 9, must-show 1: the authorization matrix, and spoofed senders, over a real server.
//!
//! **The matrix.** 5 users × 7 rooms × every client action of protocol v1 that names a room
//! or a user: `join`, `leave`, `send` to a room, `send` `to` a user, `history` (latest,
//! `before`, `after`), `members`, `receipt` (`delivered` and `read`), `typing` (on and off),
//! `presence`, and the `resume` of a `hello`. The rooms are a mix for every user: rooms it is
//! a member of, rooms it left (on another device, and later on the acting connection
//! itself), rooms it never joined, a room that does not exist, other pairs' direct rooms
//! (existing or not), and its own direct rooms (joined, left, or not yet created).
//!
//! Each user runs on its own server (in parallel) with the same fixture. A model of the
//! protocol's rules (`shared/protocol-v1.md`: anyone may join a room that is not a direct
//! room; nobody joins another pair's `dm:` room; any request naming a room the user is not a
//! member of is `forbidden`, existing or not; leaving a room one is not in is `ok`; `to`
//! always lands in the sender's own direct room; `presence` is not room-scoped; a resume of a
//! room the user is not a member of is ignored) gives the expected outcome of every cell,
//! and after every cell the test checks:
//!
//! - the reply: `ok` with exactly the fields the model predicts, or `error` with the exact
//!   code;
//! - every push on every open connection (each user's observer connection, and the acting
//!   user's own): exactly the predicted frames, nothing else — so no `message`, `member`,
//!   `receipt` or `typing` push leaks from a refused action, and none reaches a non-member;
//! - the store, read directly (the privileged observer): every room's existence, members,
//!   cursors and messages, and every user's room list, equal the model's.
//!
//! The table (`--nocapture`) shows expected/actual per cell and the counts; any unauthorized
//! success, wrong code, wrong reply, stray push or state change fails the test.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chat_core::protocol::HistoryQuery;
use chat_core::{DeliveryTracker, MessageStore, RoomId, UserId};
use serde_json::{Value, json};
use support::{Client, TestServer};

const USERS: [&str; 5] = ["alice", "bob", "carol", "dave", "erin"];

/// The matrix's rooms (see `FIXTURE` for what each user has done in them).
const ROOMS: [&str; 7] = [
    "general",
    "lobby",
    "ghost",
    "dm:alice:bob",
    "dm:bob:erin",
    "dm:carol:dave",
    "dm:alice:erin",
];

/// The epoch a resume names for a room that does not exist.
const NO_EPOCH: &str = "0123456789abcdef";

/// One client action of protocol v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    /// `history` without `before`/`after`.
    History,
    /// `history` with `before` and `limit: 2`.
    HistoryBefore,
    /// `history` with `after: 0` and `limit: 2`.
    HistoryAfter,
    Members,
    /// `send` with `room`.
    Send,
    /// `receipt` with `delivered` and `read`.
    Receipt,
    /// `typing` with `active: true`.
    Typing,
    /// `typing` with `active: false`.
    TypingStop,
    /// `presence` of the users named by the room (its members, or a direct room's pair).
    Presence,
    /// `hello` with a `resume` entry for the room (its real epoch, `seq` 0).
    Resume,
    Join,
    /// `send` with `to`: the other user of a direct room the actor is in; for another pair's
    /// direct room, one of that pair; for a named room, a user named like the room.
    SendTo,
    Leave,
}

/// The table's columns, in the order each user's cells run: columns 0–8 for every room,
/// then the resume (one `hello` naming every room), then columns 10–18 for every room.
/// Columns 13–17 come right after the acting connection itself left the room.
const COLUMNS: [(&str, Act); 19] = [
    ("hist", Act::History),
    ("hist<", Act::HistoryBefore),
    ("hist>", Act::HistoryAfter),
    ("members", Act::Members),
    ("send", Act::Send),
    ("receipt", Act::Receipt),
    ("typing", Act::Typing),
    ("typ-off", Act::TypingStop),
    ("presnce", Act::Presence),
    ("resume", Act::Resume),
    ("join", Act::Join),
    ("send-to", Act::SendTo),
    ("leave", Act::Leave),
    ("hist'", Act::History),
    ("send'", Act::Send),
    ("rcpt'", Act::Receipt),
    ("typing'", Act::Typing),
    ("membrs'", Act::Members),
    ("rejoin", Act::Join),
];
const RESUME_COLUMN: usize = 9;

/// What happens before the matrix, on each user's observer connection (checked like the
/// matrix, not counted). Afterwards:
/// - `general`: alice, bob, carol; erin left; dave never joined. 4 messages; bob has read.
/// - `lobby`: bob, carol, erin; alice and dave left. 1 message.
/// - `ghost`, `dm:alice:erin`: do not exist.
/// - `dm:alice:bob`, `dm:bob:erin`: both users, 2 messages each.
/// - `dm:carol:dave`: carol only (dave left), 2 messages; carol has read.
const FIXTURE: [(&str, Act, &str); 26] = [
    ("alice", Act::Join, "general"),
    ("bob", Act::Join, "general"),
    ("carol", Act::Join, "general"),
    ("erin", Act::Join, "general"),
    ("alice", Act::Send, "general"),
    ("bob", Act::Send, "general"),
    ("carol", Act::Send, "general"),
    ("erin", Act::Send, "general"),
    ("erin", Act::Leave, "general"),
    ("alice", Act::Join, "lobby"),
    ("bob", Act::Join, "lobby"),
    ("carol", Act::Join, "lobby"),
    ("dave", Act::Join, "lobby"),
    ("erin", Act::Join, "lobby"),
    ("dave", Act::Send, "lobby"),
    ("alice", Act::Leave, "lobby"),
    ("dave", Act::Leave, "lobby"),
    ("alice", Act::SendTo, "dm:alice:bob"),
    ("bob", Act::SendTo, "dm:alice:bob"),
    ("carol", Act::SendTo, "dm:carol:dave"),
    ("dave", Act::SendTo, "dm:carol:dave"),
    ("dave", Act::Leave, "dm:carol:dave"),
    ("bob", Act::SendTo, "dm:bob:erin"),
    ("erin", Act::SendTo, "dm:bob:erin"),
    ("bob", Act::Receipt, "general"),
    ("carol", Act::Receipt, "dm:carol:dave"),
];

/// Ids this file gives its own (pipelined) pings; far above the support client's ids.
const RAW_IDS: u64 = 1 << 40;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The two users of a direct room.
fn dm_pair(room: &str) -> Option<(&str, &str)> {
    room.strip_prefix("dm:")?.split_once(':')
}

/// The direct room of two users: `dm:` + the ids in byte order.
fn dm_room(a: &str, b: &str) -> String {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{a}:{b}")
}

fn message_push(room: &str, seq: u64, from: &str, cid: &str, body: &str, ts: u64) -> Value {
    json!({"type": "message", "room": room, "seq": seq, "from": from, "cid": cid,
           "body": body, "ts": ts})
}

fn member_push(room: &str, user: &str, action: &str) -> Value {
    json!({"type": "member", "room": room, "user": user, "action": action})
}

fn expect_eq(what: &str, actual: &Value, expected: &Value) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{what}: got {actual}, expected {expected}"))
    }
}

/// The `ts` of a reply, which must be the server's clock during the request.
fn server_ts(reply: &Value, window: (u64, u64)) -> Result<u64, String> {
    let ts = reply["ts"]
        .as_u64()
        .ok_or_else(|| format!("no ts in {reply}"))?;
    if window.0.saturating_sub(1_000) <= ts && ts <= window.1 + 1_000 {
        Ok(ts)
    } else {
        Err(format!("ts {ts} is not the server's time ({window:?})"))
    }
}

/// The `last_seen` an entry of `members`/`presence` must have: some time for a user who
/// is online (the actual one when it is a number), `null` for users who never connected.
fn last_seen(online: bool, actual: &Value) -> Value {
    match &actual["last_seen"] {
        seen if online && seen.is_u64() => seen.clone(),
        _ if online => json!("a timestamp"),
        _ => Value::Null,
    }
}

/// One room as the model sees it (members with their `(delivered, read)` cursors).
#[derive(Debug, Clone, Default)]
struct RoomModel {
    epoch: Option<String>,
    members: BTreeMap<String, (u64, u64)>,
    /// The stored messages, as `message` pushes.
    messages: Vec<Value>,
}

impl RoomModel {
    fn latest(&self) -> u64 {
        self.messages.len() as u64
    }
}

/// What the store holds of one room.
#[derive(Debug, Clone, PartialEq)]
struct RoomSnap {
    epoch: String,
    latest: u64,
    members: BTreeMap<String, (u64, u64)>,
    messages: Vec<Value>,
}

#[derive(Debug, Default)]
struct Model {
    rooms: BTreeMap<String, RoomModel>,
    /// `(room, user)` currently typing.
    typing: BTreeSet<(String, String)>,
    /// `(room, user)` that left the room at some point.
    left: BTreeSet<(String, String)>,
    /// Users with open connections.
    online: BTreeSet<String>,
    /// Rooms whose stored state is compared after every cell.
    tracked: BTreeSet<String>,
}

impl Model {
    fn is_member(&self, room: &str, user: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains_key(user))
    }

    fn latest(&self, room: &str) -> u64 {
        self.rooms.get(room).map_or(0, RoomModel::latest)
    }

    /// Whether the protocol lets `user` do `act` in `room` now.
    fn allows(&self, user: &str, room: &str, act: Act) -> bool {
        match act {
            Act::Join => dm_pair(room).is_none_or(|(a, b)| a == user || b == user),
            Act::Leave | Act::SendTo | Act::Presence => true,
            _ => self.is_member(room, user),
        }
    }

    /// How the room stands for `user`, for the table.
    fn label(&self, user: &str, room: &str) -> &'static str {
        let exists = self.rooms.contains_key(room);
        let member = self.is_member(room, user);
        let left = self.left.contains(&(room.to_owned(), user.to_owned()));
        match dm_pair(room) {
            Some((a, b)) if a != user && b != user => {
                if exists {
                    "others' dm"
                } else {
                    "others' dm, absent"
                }
            }
            Some(_) if member => "own dm",
            Some(_) if left => "own dm, left",
            Some(_) if exists => "own dm, not member",
            Some(_) => "own dm, absent",
            None if member => "member",
            None if left => "left",
            None if exists => "never joined",
            None => "absent",
        }
    }
}

/// The user a `send`-`to` cell addresses.
fn send_to_target(user: &str, room: &str) -> String {
    match dm_pair(room) {
        Some((a, b)) if a == user => b.to_owned(),
        Some((a, b)) if b == user => a.to_owned(),
        Some((a, _)) => a.to_owned(),
        // A user id spelled like the room: the send must not go to the room.
        None => room.to_owned(),
    }
}

/// The expected pushes of one cell, per connection index.
type Pushes = BTreeMap<usize, Vec<Value>>;

struct Conn {
    name: String,
    user: String,
    client: Client,
}

/// The outcome of one cell.
#[derive(Debug, Clone)]
struct Cell {
    user: String,
    room: String,
    column: usize,
    expected: &'static str,
    actual: String,
    /// Wrong replies, stray or missing pushes, state changes.
    problems: Vec<String>,
    /// The error message of a refused request, with the room's name replaced by `<room>`.
    message: Option<String>,
}

impl Cell {
    fn passed(&self) -> bool {
        self.expected == self.actual && self.problems.is_empty()
    }

    fn expected_allowed(&self) -> bool {
        matches!(self.expected, "ok" | "listed")
    }

    fn actually_allowed(&self) -> bool {
        matches!(self.actual.as_str(), "ok" | "listed")
    }
}

/// One server with every user's observer connection and the acting user's connection.
struct World {
    server: TestServer,
    conns: Vec<Conn>,
    model: Model,
    counter: u64,
}

impl World {
    fn fresh(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// Indices of the open connections of `users`.
    fn conns_of(&self, users: &BTreeSet<String>) -> Vec<usize> {
        (0..self.conns.len())
            .filter(|&i| users.contains(&self.conns[i].user))
            .collect()
    }

    fn members_of(&self, room: &str) -> BTreeSet<String> {
        self.model
            .rooms
            .get(room)
            .map(|r| r.members.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The request of a cell (without `id`).
    fn request(&mut self, user: &str, room: &str, act: Act) -> Value {
        let latest = self.model.latest(room);
        let n = self.fresh();
        let cid = format!("{user}-{n}");
        match act {
            Act::History => json!({"type": "history", "room": room}),
            Act::HistoryBefore => {
                json!({"type": "history", "room": room, "before": latest.max(1), "limit": 2})
            }
            Act::HistoryAfter => json!({"type": "history", "room": room, "after": 0, "limit": 2}),
            Act::Members => json!({"type": "members", "room": room}),
            Act::Send => json!({"type": "send", "room": room, "cid": cid,
                                "body": format!("{user} says {n} in {room}")}),
            Act::Receipt => json!({"type": "receipt", "room": room,
                                   "delivered": latest.max(1), "read": latest.saturating_sub(1)}),
            Act::Typing => json!({"type": "typing", "room": room, "active": true}),
            Act::TypingStop => json!({"type": "typing", "room": room, "active": false}),
            Act::Presence => {
                let users: Vec<String> = match dm_pair(room) {
                    Some((a, b)) => {
                        let pair: BTreeSet<String> = [a.to_owned(), b.to_owned()].into();
                        pair.into_iter().collect()
                    }
                    None => self.members_of(room).into_iter().collect(),
                };
                json!({"type": "presence", "users": users})
            }
            Act::SendTo => {
                let to = send_to_target(user, room);
                json!({"type": "send", "to": to, "cid": cid,
                       "body": format!("{user} says {n} to {to}")})
            }
            Act::Join => json!({"type": "join", "room": room}),
            Act::Leave => json!({"type": "leave", "room": room}),
            Act::Resume => unreachable!("resume cells run in `resume_cells`"),
        }
    }

    /// Runs one cell on connection `actor`.
    async fn cell(&mut self, actor: usize, room: &str, act: Act, column: usize) -> Cell {
        let user = self.conns[actor].user.clone();
        let request = self.request(&user, room, act);
        if act == Act::SendTo {
            let to = request["to"].as_str().unwrap();
            self.model.tracked.insert(dm_room(&user, to));
        }
        let allowed = self.model.allows(&user, room, act);
        let expected = if allowed { "ok" } else { "forbidden" };
        let start = now_ms();
        let reply = self.conns[actor].client.request(request.clone()).await;
        let window = (start, now_ms());
        let mut problems = Vec::new();
        let mut message = None;
        let actual = match reply["type"].as_str() {
            Some("ok") => "ok".to_owned(),
            Some("error") => {
                let text = reply["message"].as_str().unwrap_or_default();
                message = Some(text.replace(room, "<room>"));
                let keys: BTreeSet<&str> = reply
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                if keys != BTreeSet::from(["type", "id", "code", "message"]) {
                    problems.push(format!("error frame with other fields: {reply}"));
                }
                reply["code"].as_str().unwrap_or("?").to_owned()
            }
            _ => format!("odd reply {reply}"),
        };
        let mut pushes = Pushes::new();
        if allowed && actual == "ok" {
            match self.apply_ok(actor, room, act, &request, &reply, window) {
                Ok(expected_pushes) => pushes = expected_pushes,
                Err(problem) => problems.push(problem),
            }
        }
        problems.extend(self.settle(pushes).await);
        problems.extend(self.check_store().await);
        Cell {
            user,
            room: room.to_owned(),
            column,
            expected,
            actual,
            problems,
            message,
        }
    }

    /// Checks an allowed request's `ok`, applies it to the model and returns the pushes it
    /// must have caused.
    fn apply_ok(
        &mut self,
        actor: usize,
        room: &str,
        act: Act,
        request: &Value,
        reply: &Value,
        window: (u64, u64),
    ) -> Result<Pushes, String> {
        let user = self.conns[actor].user.clone();
        let id = reply["id"].clone();
        let mut pushes = Pushes::new();
        let push = |pushes: &mut Pushes, to: Vec<usize>, frame: &Value| {
            for i in to {
                pushes.entry(i).or_default().push(frame.clone());
            }
        };
        match act {
            Act::History | Act::HistoryBefore | Act::HistoryAfter => {
                let messages = self.model.rooms[room].messages.clone();
                let seq = |m: &Value| m["seq"].as_u64().unwrap();
                let (page, more) = match act {
                    Act::History => {
                        let start = messages.len().saturating_sub(50);
                        (messages[start..].to_vec(), start > 0)
                    }
                    Act::HistoryBefore => {
                        let before = request["before"].as_u64().unwrap();
                        let older: Vec<Value> =
                            messages.into_iter().filter(|m| seq(m) < before).collect();
                        let start = older.len().saturating_sub(2);
                        (older[start..].to_vec(), start > 0)
                    }
                    _ => {
                        let after = request["after"].as_u64().unwrap();
                        let newer: Vec<Value> =
                            messages.into_iter().filter(|m| seq(m) > after).collect();
                        let more = newer.len() > 2;
                        (newer.into_iter().take(2).collect(), more)
                    }
                };
                expect_eq(
                    "history",
                    reply,
                    &json!({"type": "ok", "id": id, "room": room, "messages": page, "more": more}),
                )?;
            }
            Act::Members => {
                let expected: Vec<Value> = self.model.rooms[room]
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, (member, (delivered, read)))| {
                        let online = self.model.online.contains(member);
                        json!({
                            "user": member,
                            "status": if online { "online" } else { "offline" },
                            "last_seen": last_seen(online, &reply["members"][i]),
                            "read": read,
                            "delivered": delivered,
                        })
                    })
                    .collect();
                expect_eq(
                    "members",
                    reply,
                    &json!({"type": "ok", "id": id, "room": room, "members": expected}),
                )?;
            }
            Act::Presence => {
                let expected: Vec<Value> = request["users"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, u)| {
                        let online = self.model.online.contains(u.as_str().unwrap());
                        json!({
                            "user": u,
                            "status": if online { "online" } else { "offline" },
                            "last_seen": last_seen(online, &reply["users"][i]),
                        })
                    })
                    .collect();
                expect_eq(
                    "presence",
                    reply,
                    &json!({"type": "ok", "id": id, "users": expected}),
                )?;
            }
            Act::Send | Act::SendTo => {
                let target = match act {
                    Act::Send => room.to_owned(),
                    _ => dm_room(&user, request["to"].as_str().unwrap()),
                };
                if act == Act::SendTo {
                    let to = request["to"].as_str().unwrap().to_owned();
                    let mut joiners = vec![user.clone()];
                    if to != user {
                        joiners.push(to);
                    }
                    for joiner in joiners {
                        let r = self.model.rooms.entry(target.clone()).or_default();
                        if !r.members.contains_key(&joiner) {
                            r.members.insert(joiner.clone(), (0, 0));
                            let to = self.conns_of(&self.members_of(&target));
                            push(&mut pushes, to, &member_push(&target, &joiner, "join"));
                        }
                    }
                }
                let seq = self.model.latest(&target) + 1;
                let ts = server_ts(reply, window)?;
                expect_eq(
                    "send",
                    reply,
                    &json!({"type": "ok", "id": id, "room": target, "seq": seq, "ts": ts, "dup": false}),
                )?;
                let frame = message_push(
                    &target,
                    seq,
                    &user,
                    request["cid"].as_str().unwrap(),
                    request["body"].as_str().unwrap(),
                    ts,
                );
                self.model
                    .rooms
                    .get_mut(&target)
                    .unwrap()
                    .messages
                    .push(frame.clone());
                let to = self.conns_of(&self.members_of(&target));
                push(&mut pushes, to, &frame);
            }
            Act::Receipt => {
                expect_eq("receipt", reply, &json!({"type": "ok", "id": id}))?;
                let r = self.model.rooms.get_mut(room).unwrap();
                let latest = r.latest();
                let (delivered, read) = r.members[&user];
                let bump = |old: u64, new: u64| {
                    if new > old {
                        new.min(latest).max(old)
                    } else {
                        old
                    }
                };
                let new_read = bump(read, request["read"].as_u64().unwrap());
                let new_delivered =
                    bump(delivered, request["delivered"].as_u64().unwrap()).max(new_read);
                if (new_delivered, new_read) != (delivered, read) {
                    r.members.insert(user.clone(), (new_delivered, new_read));
                    let frame = json!({"type": "receipt", "room": room, "user": user,
                                       "delivered": new_delivered, "read": new_read});
                    let to = self
                        .conns_of(&self.members_of(room))
                        .into_iter()
                        .filter(|&i| i != actor)
                        .collect();
                    push(&mut pushes, to, &frame);
                }
            }
            Act::Typing | Act::TypingStop => {
                expect_eq("typing", reply, &json!({"type": "ok", "id": id}))?;
                let key = (room.to_owned(), user.clone());
                let active = act == Act::Typing;
                let forwarded = if active {
                    self.model.typing.insert(key);
                    true
                } else {
                    self.model.typing.remove(&key)
                };
                if forwarded {
                    let frame =
                        json!({"type": "typing", "room": room, "user": user, "active": active});
                    let others: BTreeSet<String> = self
                        .members_of(room)
                        .into_iter()
                        .filter(|m| *m != user)
                        .collect();
                    push(&mut pushes, self.conns_of(&others), &frame);
                }
            }
            Act::Join => {
                let epoch = reply["epoch"].as_str().unwrap_or_default().to_owned();
                let r = self.model.rooms.entry(room.to_owned()).or_default();
                if let Some(known) = &r.epoch {
                    if *known != epoch {
                        return Err(format!("join: epoch {epoch}, the room's is {known}"));
                    }
                } else {
                    r.epoch = Some(epoch.clone());
                }
                let added = !r.members.contains_key(&user);
                if added {
                    r.members.insert(user.clone(), (0, 0));
                }
                let (delivered, read) = r.members[&user];
                expect_eq(
                    "join",
                    reply,
                    &json!({"type": "ok", "id": id, "room": room, "epoch": epoch,
                            "seq": r.latest(), "read": read, "delivered": delivered}),
                )?;
                if added {
                    let to = self.conns_of(&self.members_of(room));
                    push(&mut pushes, to, &member_push(room, &user, "join"));
                }
            }
            Act::Leave => {
                expect_eq(
                    "leave",
                    reply,
                    &json!({"type": "ok", "id": id, "room": room}),
                )?;
                if self.model.is_member(room, &user) {
                    let to = self.conns_of(&self.members_of(room));
                    push(&mut pushes, to, &member_push(room, &user, "leave"));
                    let r = self.model.rooms.get_mut(room).unwrap();
                    r.members.remove(&user);
                    self.model.left.insert((room.to_owned(), user.clone()));
                    self.model.typing.remove(&(room.to_owned(), user.clone()));
                }
            }
            Act::Resume => unreachable!(),
        }
        Ok(pushes)
    }

    /// Pings every connection (pipelined) and compares what each received before the
    /// `ok` with `expected`. Every push a request causes is queued before its reply, so
    /// after the actor's reply a ping's `ok` comes after all of them.
    async fn settle(&mut self, mut expected: Pushes) -> Vec<String> {
        let ids: Vec<u64> = (0..self.conns.len())
            .map(|_| RAW_IDS + self.fresh())
            .collect();
        for (conn, id) in self.conns.iter_mut().zip(&ids) {
            conn.client
                .send_json(json!({"type": "ping", "id": id}))
                .await;
        }
        let mut problems = Vec::new();
        for (i, (conn, id)) in self.conns.iter_mut().zip(&ids).enumerate() {
            let reply = conn.client.reply(*id).await;
            if reply != json!({"type": "ok", "id": id}) {
                problems.push(format!("{}: ping answered {reply}", conn.name));
            }
            let got: Vec<Value> = conn.client.backlog.drain(..).collect();
            let want = expected.remove(&i).unwrap_or_default();
            if got != want {
                problems.push(format!(
                    "{} received {}, expected {}",
                    conn.name,
                    Value::from(got),
                    Value::from(want)
                ));
            }
        }
        problems
    }

    /// Compares the store (read directly) with the model: every tracked room, and every
    /// user's list of rooms.
    async fn check_store(&mut self) -> Vec<String> {
        let store = self.server.store.clone();
        let mut problems = Vec::new();
        for room in self.model.tracked.clone() {
            let actual = snapshot(&store, &room).await;
            let expected = self.model.rooms.get_mut(&room).map(|r| {
                if r.epoch.is_none() {
                    r.epoch = actual.as_ref().map(|a| a.epoch.clone());
                }
                RoomSnap {
                    epoch: r.epoch.clone().unwrap_or_default(),
                    latest: r.latest(),
                    members: r.members.clone(),
                    messages: r.messages.clone(),
                }
            });
            if actual != expected {
                problems.push(format!(
                    "store: {room} is {actual:?}, expected {expected:?}"
                ));
            }
        }
        for user in USERS {
            let id = UserId::new(user).unwrap();
            let actual: Vec<String> = store
                .rooms_of(&id)
                .await
                .unwrap()
                .into_iter()
                .map(|info| info.room.to_string())
                .collect();
            let expected: Vec<String> = self
                .model
                .rooms
                .iter()
                .filter(|(_, r)| r.members.contains_key(user))
                .map(|(room, _)| room.clone())
                .collect();
            if actual != expected {
                problems.push(format!(
                    "store: {user} is in {actual:?}, expected {expected:?}"
                ));
            }
        }
        problems
    }

    /// The resume column: a new connection of `user` says `hello` with a resume entry for
    /// every room of the matrix (the room's real epoch, `seq` 0). Rooms the user is a member
    /// of are listed and replayed in full; the others must be ignored.
    async fn resume_cells(&mut self, user: &str) -> Vec<Cell> {
        let mut resume = serde_json::Map::new();
        for room in ROOMS {
            let epoch = self
                .model
                .rooms
                .get(room)
                .and_then(|r| r.epoch.clone())
                .unwrap_or_else(|| NO_EPOCH.to_owned());
            resume.insert(room.to_owned(), json!({"epoch": epoch, "seq": 0}));
        }
        let mut client = Client::connect(&self.server.url()).await;
        let hello = client.hello(user, Value::Object(resume)).await;
        let mut shared = Vec::new();

        let listed_expected: Vec<Value> = self
            .model
            .rooms
            .iter()
            .filter_map(|(room, r)| {
                let (delivered, read) = r.members.get(user)?;
                Some(json!({"room": room, "epoch": r.epoch, "seq": r.latest(),
                            "read": read, "delivered": delivered}))
            })
            .collect();
        let mut listed: Vec<Value> = hello["rooms"].as_array().cloned().unwrap_or_default();
        listed.sort_by(|a, b| a["room"].as_str().cmp(&b["room"].as_str()));
        if listed != listed_expected {
            shared.push(format!(
                "hello lists {}, expected {}",
                Value::from(listed.clone()),
                Value::from(listed_expected)
            ));
        }

        let owed: usize = ROOMS
            .iter()
            .filter(|room| self.model.is_member(room, user))
            .map(|room| self.model.rooms[*room].messages.len())
            .sum();
        let mut replayed: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut stray = Vec::new();
        let mut sort = |frame: Value| {
            if frame["type"] == "message" {
                let room = frame["room"].as_str().unwrap_or_default().to_owned();
                replayed.entry(room).or_default().push(frame);
            } else {
                stray.push(frame);
            }
        };
        let mut got = 0;
        while got < owed {
            let frame = client.recv().await;
            got += usize::from(frame["type"] == "message");
            sort(frame);
        }
        // Nothing more may come: wait a little, then a round trip.
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.ok(json!({"type": "ping"})).await;
        for frame in client.backlog.drain(..) {
            sort(frame);
        }
        if !stray.is_empty() {
            shared.push(format!("the resumed connection got {}", Value::from(stray)));
        }
        let _ = client.ws.close(None).await;
        let _ = client.closed().await;
        shared.extend(self.settle(Pushes::new()).await);
        shared.extend(self.check_store().await);

        ROOMS
            .iter()
            .map(|room| {
                let member = self.model.is_member(room, user);
                let is_listed = listed.iter().any(|r| r["room"] == *room);
                let got = replayed.remove(*room).unwrap_or_default();
                let mut problems = shared.clone();
                if member && got != self.model.rooms[*room].messages {
                    problems.push(format!("{room} replayed {}", Value::from(got.clone())));
                }
                Cell {
                    user: user.to_owned(),
                    room: (*room).to_owned(),
                    column: RESUME_COLUMN,
                    expected: if member { "listed" } else { "ignored" },
                    actual: if is_listed || !got.is_empty() {
                        "listed"
                    } else {
                        "ignored"
                    }
                    .to_owned(),
                    problems,
                    message: None,
                }
            })
            .collect()
    }
}

/// What the store holds of `room`, or `None` when it does not exist.
async fn snapshot(store: &chat_store_memory::MemoryStore, room: &str) -> Option<RoomSnap> {
    let id = RoomId::new(room).unwrap();
    let info = MessageStore::room(store, &id).await.unwrap()?;
    let members: BTreeMap<String, (u64, u64)> = DeliveryTracker::room_cursors(store, &id)
        .await
        .unwrap()
        .into_iter()
        .map(|(user, c)| (user.to_string(), (c.delivered.get(), c.read.get())))
        .collect();
    let listed: Vec<String> = MessageStore::members(store, &id)
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        listed,
        members.keys().cloned().collect::<Vec<_>>(),
        "members and cursors of {room} disagree"
    );
    let page = MessageStore::history(store, &id, HistoryQuery::Latest, 10_000)
        .await
        .unwrap();
    let messages = page
        .messages
        .iter()
        .map(|m| {
            let mut value = serde_json::to_value(m).unwrap();
            value["type"] = json!("message");
            value
        })
        .collect();
    Some(RoomSnap {
        epoch: info.epoch.to_string(),
        latest: info.latest.get(),
        members,
        messages,
    })
}

/// Everything one acting user did.
struct UserRun {
    user: &'static str,
    /// How each room stood for the user when the matrix began.
    labels: BTreeMap<&'static str, &'static str>,
    cells: Vec<Cell>,
}

/// One user's part of the matrix, on a server of its own.
async fn run_user(user: &'static str) -> UserRun {
    let server = TestServer::start().await;
    // The acting connection opens first: the fixture's membership changes (made on the
    // user's other connection) must reach it.
    let mut conns = vec![Conn {
        name: format!("{user}(acting)"),
        user: user.to_owned(),
        client: server.client(user).await,
    }];
    for u in USERS {
        conns.push(Conn {
            name: format!("{u}(observer)"),
            user: u.to_owned(),
            client: server.client(u).await,
        });
    }
    let mut world = World {
        server,
        conns,
        model: Model {
            online: USERS.iter().map(|u| (*u).to_owned()).collect(),
            tracked: ROOMS.iter().map(|r| (*r).to_owned()).collect(),
            ..Model::default()
        },
        counter: 0,
    };
    // Presence changes are announced by a task: let those of the connects pass (nobody
    // shares a room yet, so none is pushed).
    tokio::time::sleep(Duration::from_millis(250)).await;
    let quiet = world.settle(Pushes::new()).await;
    assert!(quiet.is_empty(), "{quiet:?}");

    for (who, act, room) in FIXTURE {
        let observer = 1 + USERS.iter().position(|u| *u == who).unwrap();
        let cell = world.cell(observer, room, act, 0).await;
        assert!(
            cell.passed() && cell.actual == "ok",
            "fixture step {who} {act:?} {room}: {cell:#?}"
        );
    }
    let labels = ROOMS
        .iter()
        .map(|room| (*room, world.model.label(user, room)))
        .collect();

    let mut cells = Vec::new();
    for room in ROOMS {
        for (column, (_, act)) in COLUMNS.iter().enumerate().take(RESUME_COLUMN) {
            cells.push(world.cell(0, room, *act, column).await);
        }
    }
    cells.extend(world.resume_cells(user).await);
    for room in ROOMS {
        for (column, (_, act)) in COLUMNS.iter().enumerate().skip(RESUME_COLUMN + 1) {
            cells.push(world.cell(0, room, *act, column).await);
        }
    }
    drop(world.conns);
    world.server.stop().await;
    UserRun {
        user,
        labels,
        cells,
    }
}

fn short(outcome: &str) -> &str {
    match outcome {
        "ok" => "ok",
        "forbidden" => "fb",
        "listed" => "ls",
        "ignored" => "ig",
        "bad_request" => "br",
        "unauthorized" => "ua",
        "not_found" => "nf",
        "internal" => "in",
        "unavailable" => "un",
        _ => "??",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_has_no_unauthorized_success() {
    let started = Instant::now();
    let tasks: Vec<_> = USERS
        .iter()
        .map(|user| tokio::spawn(Box::pin(run_user(user))))
        .collect();
    let mut runs = Vec::new();
    for task in tasks {
        runs.push(task.await.unwrap());
    }

    let mut table = String::new();
    writeln!(
        table,
        "authorization matrix: {} users × {} rooms × {} columns (13 actions: every frame \
         type of protocol v1 that names a room or a user) — expected/actual per cell",
        USERS.len(),
        ROOMS.len(),
        COLUMNS.len(),
    )
    .unwrap();
    writeln!(
        table,
        "ok = done · fb = forbidden · ls = listed and replayed on resume · ig = ignored on \
         resume · ! = wrong reply, push or stored state · ' = after the acting connection \
         left the room"
    )
    .unwrap();
    write!(table, "{:<6} {:<14} {:<19}|", "user", "room", "state").unwrap();
    for (label, _) in COLUMNS {
        write!(table, "{label:>8}").unwrap();
    }
    table.push('\n');
    for run in &runs {
        for room in ROOMS {
            write!(
                table,
                "{:<6} {room:<14} {:<19}|",
                run.user, run.labels[room]
            )
            .unwrap();
            for column in 0..COLUMNS.len() {
                let cell = run
                    .cells
                    .iter()
                    .find(|c| c.room == room && c.column == column)
                    .unwrap();
                let mark = if cell.problems.is_empty() { "" } else { "!" };
                let text = format!("{}/{}{mark}", short(cell.expected), short(&cell.actual));
                write!(table, "{text:>8}").unwrap();
            }
            table.push('\n');
        }
    }

    let cells: Vec<&Cell> = runs.iter().flat_map(|r| &r.cells).collect();
    let total = cells.len();
    let allowed = cells.iter().filter(|c| c.expected_allowed()).count();
    let refused = total - allowed;
    let unauthorized = cells
        .iter()
        .filter(|c| !c.expected_allowed() && c.actually_allowed())
        .count();
    let wrongly_refused = cells
        .iter()
        .filter(|c| c.expected_allowed() && !c.actually_allowed())
        .count();
    let failed: Vec<&&Cell> = cells.iter().filter(|c| !c.passed()).collect();

    // Existence is not revealed: a refusal reads the same whatever the room (existing or
    // not, direct or not), apart from the room's name.
    let mut messages: BTreeMap<Act, BTreeSet<&str>> = BTreeMap::new();
    for cell in &cells {
        if let Some(message) = &cell.message {
            messages
                .entry(COLUMNS[cell.column].1)
                .or_default()
                .insert(message);
        }
    }
    let revealing: Vec<_> = messages.iter().filter(|(_, m)| m.len() > 1).collect();

    writeln!(
        table,
        "cells: {total} · allowed: {allowed} · refused: {refused} · unauthorized successes: \
         {unauthorized} · wrongly refused: {wrongly_refused} · failed cells: {} · {:.1?}",
        failed.len(),
        started.elapsed()
    )
    .unwrap();
    for (action, texts) in &messages {
        writeln!(table, "refusal text of {action:?}: {texts:?}").unwrap();
    }
    println!("{table}");

    assert!(USERS.len() >= 5 && ROOMS.len() >= 5 && total == 5 * 7 * COLUMNS.len());
    assert!(allowed > 0 && refused > 0);
    for cell in failed.iter().take(10) {
        eprintln!(
            "FAILED {} {} {}: {cell:#?}",
            cell.user, cell.room, COLUMNS[cell.column].0
        );
    }
    assert_eq!(unauthorized, 0, "unauthorized successes");
    assert!(failed.is_empty(), "{} cells failed", failed.len());
    assert!(
        revealing.is_empty(),
        "refusals differ by room: {revealing:?}"
    );
}

/// Pings `client` and returns (and forgets) every push it received before the `ok`.
async fn drained(client: &mut Client) -> Vec<Value> {
    client.ok(json!({"type": "ping"})).await;
    client.backlog.drain(..).collect()
}

async fn stored(server: &TestServer, room: &str) -> Option<RoomSnap> {
    snapshot(&server.store, room).await
}

/// Fields that name a sender, a position or a time, put by a client into its requests,
/// change nothing: the message is the authenticated user's, at the server's `seq` and `ts`;
/// cursors, typing, joins and leaves are the authenticated user's; a non-member stays
/// refused. (`docs/protocol.md`: unknown fields are ignored, including a `from` in a `send`.)
#[tokio::test]
async fn spoofed_sender_fields_are_ignored() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    for client in [&mut bob, &mut carol, &mut alice] {
        client.join("general").await;
    }
    let bobs = bob.say("general", "c-1", "from bob").await;
    let bobs_push = message_push(
        "general",
        1,
        "bob",
        "c-1",
        "from bob",
        bobs["ts"].as_u64().unwrap(),
    );
    for client in [&mut alice, &mut bob, &mut carol] {
        drained(client).await;
    }

    // A send claiming to be bob's, with bob's cid, a seq, a ts, a dup flag, bob's token…
    let spoof = json!({
        "type": "send", "room": "general", "cid": "c-1", "body": "from alice",
        "from": "bob", "sender": "bob", "user": "bob", "author": "bob", "ts": 1, "seq": 1,
        "dup": true, "epoch": "ffffffffffffffff", "session": "s-bob", "token": "dev:bob",
        "meta": {"from": "bob"}
    });
    let before = now_ms();
    let reply = alice.ok(spoof.clone()).await;
    let ts = server_ts(&reply, (before, now_ms())).unwrap();
    assert_ne!(ts, 1);
    let id = reply["id"].clone();
    // …is alice's own new message: not bob's seq 1 (the cid is per sender), not a dup.
    assert_eq!(
        reply,
        json!({"type": "ok", "id": id, "room": "general", "seq": 2, "ts": ts, "dup": false})
    );
    let mut alices_push = message_push("general", 2, "alice", "c-1", "from alice", ts);
    alices_push["meta"] = json!({"from": "bob"});
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(drained(client).await, vec![alices_push.clone()]);
    }
    // The retry is alice's duplicate (same seq and ts), pushed to nobody.
    let again = alice.ok(spoof).await;
    assert_eq!(
        again,
        json!({"type": "ok", "id": again["id"], "room": "general", "seq": 2, "ts": ts, "dup": true})
    );
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(drained(client).await, Vec::<Value>::new());
    }
    let history = carol
        .ok(json!({"type": "history", "room": "general"}))
        .await;
    assert_eq!(
        history["messages"],
        json!([bobs_push.clone(), alices_push.clone()])
    );
    let general = stored(&server, "general").await.unwrap();
    assert_eq!(general.messages, vec![bobs_push, alices_push]);

    // `to` with a spoofed sender: the direct room is alice's, not bob's.
    let reply = alice
        .ok(
            json!({"type": "send", "to": "carol", "cid": "d-1", "body": "hi carol",
                   "from": "bob", "user": "bob", "room_of": "dm:bob:carol"}),
        )
        .await;
    assert_eq!(reply["room"], "dm:alice:carol");
    let dm_ts = reply["ts"].as_u64().unwrap();
    assert_eq!(stored(&server, "dm:bob:carol").await, None);
    let dm = stored(&server, "dm:alice:carol").await.unwrap();
    assert_eq!(
        dm.members.keys().collect::<Vec<_>>(),
        vec!["alice", "carol"]
    );
    assert_eq!(
        dm.messages,
        vec![message_push(
            "dm:alice:carol",
            1,
            "alice",
            "d-1",
            "hi carol",
            dm_ts
        )]
    );
    // carol becomes a member after alice: she gets her own join, not alice's.
    assert_eq!(
        drained(&mut carol).await,
        vec![
            member_push("dm:alice:carol", "carol", "join"),
            message_push("dm:alice:carol", 1, "alice", "d-1", "hi carol", dm_ts),
        ]
    );
    assert_eq!(drained(&mut bob).await, Vec::<Value>::new());
    drained(&mut alice).await;

    // A receipt naming bob moves alice's cursors, and says so.
    alice
        .ok(
            json!({"type": "receipt", "room": "general", "read": 2, "delivered": 2,
                   "user": "bob", "from": "bob"}),
        )
        .await;
    let general = stored(&server, "general").await.unwrap();
    assert_eq!(general.members["alice"], (2, 2));
    assert_eq!(general.members["bob"], (0, 0));
    let receipt = json!({"type": "receipt", "room": "general", "user": "alice",
                         "delivered": 2, "read": 2});
    for client in [&mut bob, &mut carol] {
        assert_eq!(drained(client).await, vec![receipt.clone()]);
    }
    assert_eq!(drained(&mut alice).await, Vec::<Value>::new());

    // Typing naming bob is alice's typing.
    for active in [true, false] {
        alice
            .ok(
                json!({"type": "typing", "room": "general", "active": active,
                       "user": "bob", "from": "bob"}),
            )
            .await;
        let typing = json!({"type": "typing", "room": "general", "user": "alice",
                            "active": active});
        for client in [&mut bob, &mut carol] {
            assert_eq!(drained(client).await, vec![typing.clone()]);
        }
        assert_eq!(drained(&mut alice).await, Vec::<Value>::new());
    }

    // A join naming bob makes alice a member, not bob.
    alice
        .ok(json!({"type": "join", "room": "alices", "user": "bob", "from": "bob"}))
        .await;
    let alices = stored(&server, "alices").await.unwrap();
    assert_eq!(alices.members.keys().collect::<Vec<_>>(), vec!["alice"]);
    assert_eq!(
        drained(&mut alice).await,
        vec![member_push("alices", "alice", "join")]
    );
    assert_eq!(drained(&mut bob).await, Vec::<Value>::new());

    // A leave naming bob is carol's own.
    carol
        .ok(json!({"type": "leave", "room": "general", "user": "bob", "from": "bob"}))
        .await;
    let general = stored(&server, "general").await.unwrap();
    assert_eq!(
        general.members.keys().collect::<Vec<_>>(),
        vec!["alice", "bob"]
    );
    let left = member_push("general", "carol", "leave");
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(drained(client).await, vec![left.clone()]);
    }

    // A hello naming bob logs in as the token's user; as a non-member, every request
    // naming bob (or carrying his token) is still refused, and nothing is stored.
    let mut dave = Client::connect(&server.url()).await;
    let hello = dave
        .request(json!({"type": "hello", "token": "dev:dave", "user": "bob", "from": "bob"}))
        .await;
    assert_eq!(hello["type"], "ok");
    assert_eq!(hello["user"], "dave");
    assert_eq!(hello["rooms"], json!([]));
    let as_bob = json!({"user": "bob", "from": "bob", "sender": "bob", "token": "dev:bob"});
    for mut request in [
        json!({"type": "send", "room": "general", "cid": "x-1", "body": "sneaky"}),
        json!({"type": "history", "room": "general"}),
        json!({"type": "members", "room": "general"}),
        json!({"type": "receipt", "room": "general", "read": 2}),
        json!({"type": "typing", "room": "general", "active": true}),
        json!({"type": "send", "room": "dm:alice:carol", "cid": "x-2", "body": "sneaky"}),
        json!({"type": "join", "room": "dm:alice:carol"}),
    ] {
        for (key, value) in as_bob.as_object().unwrap() {
            request[key] = value.clone();
        }
        dave.refused(request, "forbidden").await;
    }
    assert_eq!(stored(&server, "general").await.unwrap().latest, 2);
    assert_eq!(stored(&server, "dm:alice:carol").await.unwrap(), dm);
    for client in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(drained(client).await, Vec::<Value>::new());
    }

    // Repeated keys: the last one wins (docs/protocol.md), for `room` too.
    let id = 1 << 41;
    alice
        .send_text(format!(
            r#"{{"type":"send","id":{id},"room":"general","room":"dm:bob:carol","cid":"k-1","body":"x"}}"#
        ))
        .await;
    let reply = alice.reply(id).await;
    assert_eq!(reply["code"], "forbidden", "{reply}");
    assert_eq!(stored(&server, "dm:bob:carol").await, None);
    alice
        .send_text(format!(
            r#"{{"type":"send","id":{},"room":"dm:bob:carol","room":"general","cid":"k-2","body":"y"}}"#,
            id + 1
        ))
        .await;
    let reply = alice.reply(id + 1).await;
    assert_eq!(
        (&reply["type"], &reply["room"]),
        (&json!("ok"), &json!("general"))
    );
    assert_eq!(stored(&server, "general").await.unwrap().latest, 3);
    server.stop().await;
}

/// A direct room has exactly one spelling: other spellings of it, and user ids that are not
/// user ids, are `bad_request` for every request that names a room or a user, and change
/// nothing; a room whose name merely looks like it (`DM:`) is another room.
#[tokio::test]
async fn direct_room_aliases_are_bad_requests() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut carol = server.client("carol").await;
    let secret = alice
        .ok(json!({"type": "send", "to": "bob", "cid": "s-1", "body": "secret"}))
        .await;
    assert_eq!(secret["room"], "dm:alice:bob");
    let before = stored(&server, "dm:alice:bob").await.unwrap();
    drained(&mut alice).await;

    for room in [
        "dm:bob:alice",
        "dm:alice",
        "dm:alice:bob:carol",
        "dm:alice:",
        "dm::bob",
        "dm:alice:b ob",
        " dm:alice:bob",
    ] {
        for client in [&mut carol, &mut alice] {
            for request in [
                json!({"type": "join", "room": room}),
                json!({"type": "leave", "room": room}),
                json!({"type": "send", "room": room, "cid": "a-1", "body": "x"}),
                json!({"type": "history", "room": room}),
                json!({"type": "members", "room": room}),
                json!({"type": "receipt", "room": room, "read": 1}),
                json!({"type": "typing", "room": room, "active": true}),
            ] {
                client.refused(request, "bad_request").await;
            }
        }
    }
    for to in ["alice:bob", "dm:alice:bob", "bob alice", ""] {
        carol
            .refused(
                json!({"type": "send", "to": to, "cid": "t-1", "body": "x"}),
                "bad_request",
            )
            .await;
        carol
            .refused(json!({"type": "presence", "users": [to]}), "bad_request")
            .await;
    }
    // Someone else's direct room, even one with the same user twice, is forbidden; one's
    // own is not.
    carol
        .refused(
            json!({"type": "join", "room": "dm:alice:alice"}),
            "forbidden",
        )
        .await;
    carol.join("dm:carol:carol").await;
    // `DM:` is not the reserved prefix: an ordinary room, empty, not the direct room.
    let lookalike = carol.join("DM:alice:bob").await;
    assert_eq!(lookalike["seq"], 0);
    let history = carol
        .ok(json!({"type": "history", "room": "DM:alice:bob"}))
        .await;
    assert_eq!(history["messages"], json!([]));

    assert_eq!(stored(&server, "dm:alice:bob").await.unwrap(), before);
    assert_eq!(stored(&server, "dm:alice:alice").await, None);
    let carols: Vec<String> = server
        .store
        .rooms_of(&UserId::new("carol").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|info| info.room.to_string())
        .collect();
    assert_eq!(carols, vec!["DM:alice:bob", "dm:carol:carol"]);
    assert_eq!(drained(&mut alice).await, Vec::<Value>::new());
    server.stop().await;
}
