//! Three demo server processes, one PostgreSQL and one Redis: one chat.
//!
//! Members of one room are spread over the nodes and all send at once; every member must
//! receive the room's whole log, gapless, in the same order, with no duplicate — also when
//! a node is killed (SIGKILL) mid-run (its clients reconnect to the others and resume) and
//! when Redis is restarted mid-run (the nodes repair from the store). The presence of a
//! user whose node died must reach the other nodes within two heartbeats.
//!
//! Runs against `CHAT_TEST_POSTGRES_URL` (a fresh schema per run, dropped after) and
//! `CHAT_TEST_REDIS_URL` (a cluster prefix of its own); the Redis restart uses a private
//! `redis-server` on a free port. Each scenario prints a JSON summary. Skipped, with the
//! reason printed, when a variable, the server binary or `redis-server` is missing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const ROOM: &str = "cluster";

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        _ => {
            eprintln!("SKIPPED: {var} is not set");
            None
        }
    }
}

/// The demo server built with `--redis` (by `cargo test --workspace --all-features`).
fn server_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("server");
    let help = std::process::Command::new(&path).arg("--help").output();
    match help {
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("--redis") => Some(path),
        _ => {
            eprintln!(
                "SKIPPED: {} is missing or built without --redis \
                 (`cargo build --example server --features postgres,redis`)",
                path.display()
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{}", std::process::id(), nanos % 1_000_000_000)
}

/// A PostgreSQL schema of this run, dropped after it.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    async fn create(url: &str) -> Schema {
        let name = unique("chat_cluster");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test database");
        let task = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test schema");
        drop(client);
        let _ = task.await;
        Schema {
            url: url.to_owned(),
            name,
        }
    }

    fn server_url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-c%20search_path%3D{}",
            self.url, self.name
        )
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// One server process.
struct Node {
    child: Child,
    url: String,
    /// The `stats {...}` line it printed when it stopped.
    stats: Arc<Mutex<Option<Value>>>,
}

impl Node {
    async fn start(binary: &PathBuf, args: &[String]) -> Node {
        let mut child = Command::new(binary)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the demo server");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.strip_prefix("  WebSocket  ") {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("the server did not start within 20 s")
        .expect("the server exited before listening");
        let stats = Arc::new(Mutex::new(None));
        let slot = stats.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(json) = line.strip_prefix("stats ") {
                    *slot.lock() = serde_json::from_str(json).ok();
                }
            }
        });
        Node { child, url, stats }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// SIGTERM, then the stats it printed.
    async fn stop(&mut self) -> Option<Value> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        for _ in 0..50 {
            if let Some(stats) = self.stats.lock().clone() {
                return Some(stats);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a member saw.
#[derive(Debug, Default)]
struct View {
    /// (seq, cid) in arrival order.
    messages: Vec<(u64, String)>,
    duplicates: u64,
    gaps: u64,
    reconnects: u64,
}

/// A member that sends, receives, and on a broken connection reconnects to the next node
/// and resumes from the last seq it holds (no client-side dedupe: the server must not
/// repeat or skip).
struct Member {
    user: String,
    urls: Vec<String>,
    node: usize,
    ws: Option<Ws>,
    epoch: Option<String>,
    next_id: u64,
    view: View,
}

impl Member {
    fn new(user: String, urls: Vec<String>, node: usize) -> Member {
        Member {
            user,
            urls,
            node,
            ws: None,
            epoch: None,
            next_id: 1,
            view: View::default(),
        }
    }

    fn last(&self) -> u64 {
        self.view.messages.last().map_or(0, |(seq, _)| *seq)
    }

    fn on_frame(&mut self, v: &Value) {
        if v["type"] == "message" && v["room"] == ROOM {
            let seq = v["seq"].as_u64().unwrap_or(0);
            let last = self.last();
            if seq <= last {
                self.view.duplicates += 1;
                return;
            }
            if seq != last + 1 {
                self.view.gaps += 1;
            }
            let cid = v["cid"].as_str().unwrap_or_default().to_owned();
            self.view.messages.push((seq, cid));
        }
    }

    async fn write(&mut self, frame: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut frame = frame;
        frame["id"] = json!(id);
        let ws = self.ws.as_mut().ok_or("not connected")?;
        ws.send(WsMessage::text(frame.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        Ok(id)
    }

    /// The next frame; `Ok(None)` when none came `within`; `Err` when the connection ended.
    async fn read(&mut self, within: Duration) -> Result<Option<Value>, String> {
        let ws = self.ws.as_mut().ok_or("not connected")?;
        loop {
            match tokio::time::timeout(within, ws.next()).await {
                Err(_) => return Ok(None),
                Ok(Some(Ok(WsMessage::Text(text)))) => {
                    let v: Value =
                        serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
                    self.on_frame(&v);
                    return Ok(Some(v));
                }
                Ok(Some(Ok(WsMessage::Close(c)))) => return Err(format!("closed {c:?}")),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(format!("read: {e}")),
                Ok(None) => return Err("ended".to_owned()),
            }
        }
    }

    /// A request and its reply (pushes read meanwhile are recorded).
    async fn request(&mut self, frame: Value) -> Result<Value, String> {
        let id = self.write(frame).await?;
        loop {
            let v = self
                .read(Duration::from_secs(10))
                .await?
                .ok_or("no reply within 10 s")?;
            if v["id"] == json!(id) {
                return Ok(v);
            }
        }
    }

    /// Connects to the current node or the next ones, `hello` with a resume point.
    async fn connect(&mut self) -> Result<(), String> {
        for attempt in 0..(3 * self.urls.len()) {
            let url = self.urls[self.node].clone();
            let connected = tokio::time::timeout(
                Duration::from_secs(3),
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await;
            if let Ok(Ok((ws, _))) = connected {
                self.ws = Some(ws);
                let mut hello = json!({"type": "hello", "token": format!("dev:{}", self.user)});
                if let Some(epoch) = &self.epoch {
                    hello["resume"] = json!({ ROOM: {"epoch": epoch, "seq": self.last()} });
                }
                match self.request(hello).await {
                    Ok(reply) if reply["type"] == "ok" => return Ok(()),
                    _ => {}
                }
            }
            self.ws = None;
            self.node = (self.node + 1) % self.urls.len();
            tokio::time::sleep(Duration::from_millis(50 * (attempt as u64 + 1))).await;
        }
        Err(format!("{}: no node took the connection", self.user))
    }

    async fn reconnect(&mut self) -> Result<(), String> {
        self.view.reconnects += 1;
        self.ws = None;
        self.node = (self.node + 1) % self.urls.len();
        self.connect().await
    }

    async fn join(&mut self) -> Result<(), String> {
        let reply = self.request(json!({"type": "join", "room": ROOM})).await?;
        self.epoch = reply["epoch"].as_str().map(str::to_owned);
        if reply["type"] == "ok" {
            Ok(())
        } else {
            Err(format!("join refused: {reply}"))
        }
    }

    /// Sends `count` messages one after another, each until acknowledged (the same `cid`
    /// after a reconnect: stored once); then reads until `total` messages are held.
    async fn run(
        mut self,
        count: u64,
        total: Arc<AtomicU64>,
        acked: Arc<watch::Sender<u64>>,
    ) -> View {
        for k in 0..count {
            let cid = format!("{}-{k}", self.user);
            let frame = json!({"type": "send", "room": ROOM, "cid": cid, "body": cid});
            let mut tries = 0;
            loop {
                tries += 1;
                assert!(tries < 20, "{}: {cid} never acknowledged", self.user);
                match self.request(frame.clone()).await {
                    Ok(reply) if reply["type"] == "ok" => break,
                    Ok(reply) if reply["code"] == "rate_limited" => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(reply) => panic!("{}: send refused: {reply}", self.user),
                    Err(_) => {
                        let _ = self.reconnect().await;
                    }
                }
            }
            acked.send_modify(|n| *n += 1);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let want = total.load(Ordering::Relaxed);
            if want > 0 && self.last() >= want {
                break;
            }
            if self.read(Duration::from_millis(500)).await.is_err() {
                let _ = self.reconnect().await;
            }
        }
        self.view
    }
}

/// Checks the views: each gapless from 1 to `total`, all in one order.
fn check(views: &[(String, View)], total: u64) -> Value {
    let reference: HashMap<u64, &String> =
        views[0].1.messages.iter().map(|(s, c)| (*s, c)).collect();
    let mut lost = 0u64;
    let mut duplicates = 0u64;
    let mut gaps = 0u64;
    let mut disagreements = 0u64;
    let mut reconnects = 0u64;
    for (user, view) in views {
        let seqs: Vec<u64> = view.messages.iter().map(|(s, _)| *s).collect();
        lost += total.saturating_sub(seqs.len() as u64);
        duplicates += view.duplicates;
        gaps += view.gaps;
        reconnects += view.reconnects;
        for (seq, cid) in &view.messages {
            if reference.get(seq) != Some(&cid) {
                disagreements += 1;
            }
        }
        if seqs != (1..=total).collect::<Vec<_>>() {
            eprintln!(
                "{user}: {} messages, last {:?}, gaps {}, duplicates {}",
                seqs.len(),
                seqs.last(),
                view.gaps,
                view.duplicates
            );
        }
    }
    json!({
        "members": views.len(),
        "messages": total,
        "lost": lost,
        "duplicates": duplicates,
        "gaps": gaps,
        "order_disagreements": disagreements,
        "reconnects": reconnects,
    })
}

/// Starts `members` members spread over `urls` (joined first), then runs them; calls
/// `mid_run` once a third of the messages are acknowledged.
async fn run_room<F, Fut>(urls: &[String], members: usize, per_member: u64, mid_run: F) -> Value
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut joined = Vec::new();
    for i in 0..members {
        let mut member = Member::new(format!("m{i}"), urls.to_vec(), i % urls.len());
        member.connect().await.expect("connect");
        member.join().await.expect("join");
        joined.push(member);
    }
    let total = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(watch::Sender::new(0u64));
    let mut progress = acked.subscribe();
    let expected = members as u64 * per_member;
    let started = Instant::now();
    let tasks: Vec<_> = joined
        .into_iter()
        .map(|m| {
            let user = m.user.clone();
            let (total, acked) = (total.clone(), acked.clone());
            (user, tokio::spawn(m.run(per_member, total, acked)))
        })
        .collect();
    let third = tokio::time::timeout(
        Duration::from_secs(30),
        progress.wait_for(|n| *n >= expected / 3),
    )
    .await
    .map(|reached| reached.is_ok());
    assert!(
        matches!(third, Ok(true)),
        "a third of the sends took over 30 s"
    );
    mid_run().await;
    let all = tokio::time::timeout(
        Duration::from_secs(40),
        progress.wait_for(|n| *n >= expected),
    )
    .await
    .map(|reached| reached.is_ok());
    assert!(
        matches!(all, Ok(true)),
        "not every send acknowledged within 40 s"
    );
    total.store(expected, Ordering::Relaxed);
    let mut views = Vec::new();
    for (user, task) in tasks {
        views.push((user, task.await.expect("a member panicked")));
    }
    let mut summary = check(&views, expected);
    summary["seconds"] = json!(started.elapsed().as_secs_f64());
    summary
}

fn assert_clean(summary: &Value) {
    for key in ["lost", "duplicates", "gaps", "order_disagreements"] {
        assert_eq!(summary[key], 0, "{key}: {summary}");
    }
}

/// A connection that only listens, for presence.
async fn listener(url: &str, user: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    for frame in [
        json!({"type": "hello", "id": 1, "token": format!("dev:{user}")}),
        json!({"type": "join", "id": 2, "room": ROOM}),
    ] {
        ws.send(WsMessage::text(frame.to_string()))
            .await
            .expect("send");
        let id = frame["id"].clone();
        loop {
            let Some(Ok(WsMessage::Text(text))) = ws.next().await else {
                panic!("{user}: connection ended during setup")
            };
            let v: Value = serde_json::from_str(text.as_str()).expect("json");
            if v["id"] == id {
                assert_eq!(v["type"], "ok", "{v}");
                break;
            }
        }
    }
    ws
}

/// Reads `ws` (answering pings) until `user` is pushed offline: when that happened.
fn watch_offline(mut ws: Ws, user: &'static str) -> tokio::task::JoinHandle<Option<Instant>> {
    tokio::spawn(async move {
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(Ok(frame)) = ws.next().await {
                if let WsMessage::Text(text) = frame {
                    let v: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if v["type"] == "presence" && v["user"] == user && v["status"] == "offline" {
                        return Some(Instant::now());
                    }
                }
            }
            None
        })
        .await;
        found.ok().flatten()
    })
}

/// How long after `since` a watcher saw the user offline, waiting at most `within` more.
async fn offline_ms(
    watcher: tokio::task::JoinHandle<Option<Instant>>,
    since: Instant,
    within: Duration,
) -> Option<u64> {
    let seen = tokio::time::timeout(within, watcher).await.ok()?.ok()??;
    Some(seen.saturating_duration_since(since).as_millis() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_order_through_a_node_kill_and_presence_converges() {
    let (Some(pg), Some(redis), Some(binary)) = (
        env("CHAT_TEST_POSTGRES_URL"),
        env("CHAT_TEST_REDIS_URL"),
        server_binary(),
    ) else {
        return;
    };
    let schema = Schema::create(&pg).await;
    let cluster = unique("cl");
    let heartbeat_ms = 1_000u64;
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let args: Vec<String> = [
            "--postgres",
            &schema.server_url(),
            "--redis",
            &redis,
            "--cluster",
            &cluster,
            "--node-id",
            &format!("node-{i}"),
            "--heartbeat-ms",
            &heartbeat_ms.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        nodes.push(Node::start(&binary, &args).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();

    // A user only on node 3, and listeners on nodes 1 and 2 for its presence.
    let ghost = listener(&urls[2], "ghost").await;
    let ghost_reader = tokio::spawn(async move {
        let mut ghost = ghost;
        while let Some(Ok(_)) = ghost.next().await {}
    });
    let watch1 = watch_offline(listener(&urls[0], "watch1").await, "ghost");
    let watch2 = watch_offline(listener(&urls[1], "watch2").await, "ghost");

    let killed_at = Arc::new(Mutex::new(None));
    let mark = killed_at.clone();
    let victim = &mut nodes[2];
    let summary = run_room(&urls, 9, 100, || async move {
        victim.kill().await;
        *mark.lock() = Some(Instant::now());
    })
    .await;
    let killed = (*killed_at.lock()).expect("the node was killed");
    let within = Duration::from_millis(4 * heartbeat_ms);
    let (w1, w2) = tokio::join!(
        offline_ms(watch1, killed, within),
        offline_ms(watch2, killed, within)
    );
    ghost_reader.abort();
    let mut stats = Vec::new();
    for node in &mut nodes[..2] {
        stats.push(node.stop().await.unwrap_or(Value::Null));
    }
    let mut summary = summary;
    summary["scenario"] = json!("node killed mid-run");
    summary["heartbeat_ms"] = json!(heartbeat_ms);
    summary["presence_offline_ms"] = json!({"node-1": w1, "node-2": w2});
    summary["node_stats"] = json!(stats);
    println!("{summary}");
    assert_clean(&summary);
    assert!(summary["reconnects"].as_u64() >= Some(3), "{summary}");
    for seen in [w1, w2] {
        let ms = seen.unwrap_or_else(|| panic!("ghost never went offline: {summary}"));
        assert!(ms <= 2 * heartbeat_ms, "presence took {ms} ms: {summary}");
    }
}

/// A private `redis-server` on a free port, without persistence.
struct PrivateRedis {
    child: Child,
    port: u16,
}

impl PrivateRedis {
    async fn start(port: u16) -> Option<PrivateRedis> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(PrivateRedis { child, port });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_lose_nothing_when_redis_restarts() {
    let (Some(pg), Some(binary)) = (env("CHAT_TEST_POSTGRES_URL"), server_binary()) else {
        return;
    };
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("its address").port()
    };
    let Some(redis) = PrivateRedis::start(port).await else {
        eprintln!("SKIPPED: could not start redis-server");
        return;
    };
    let redis_url = format!("redis://127.0.0.1:{}", redis.port);
    let schema = Schema::create(&pg).await;
    let mut nodes = Vec::new();
    for i in 1..=3 {
        let args: Vec<String> = [
            "--postgres",
            &schema.server_url(),
            "--redis",
            &redis_url,
            "--node-id",
            &format!("node-{i}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        nodes.push(Node::start(&binary, &args).await);
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let redis = Arc::new(tokio::sync::Mutex::new(redis));
    let restart = redis.clone();
    let down_ms = Arc::new(AtomicU64::new(0));
    let down = down_ms.clone();
    let summary = run_room(&urls, 9, 100, || async move {
        let mut redis = restart.lock().await;
        let stopped = Instant::now();
        redis.kill().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        *redis = PrivateRedis::start(port)
            .await
            .expect("restart redis-server");
        down.store(stopped.elapsed().as_millis() as u64, Ordering::Relaxed);
    })
    .await;
    let mut stats = Vec::new();
    let mut repaired = 0;
    for node in &mut nodes {
        let s = node.stop().await.unwrap_or(Value::Null);
        repaired += s["repaired"].as_u64().unwrap_or(0);
        stats.push(s);
    }
    let mut summary = summary;
    summary["scenario"] = json!("redis restarted mid-run");
    summary["redis_down_ms"] = json!(down_ms.load(Ordering::Relaxed));
    summary["repaired"] = json!(repaired);
    summary["node_stats"] = json!(stats);
    println!("{summary}");
    assert_clean(&summary);
    assert!(
        repaired > 0,
        "events were lost while Redis was down, yet nothing was repaired: {summary}"
    );
    redis.lock().await.kill().await;
}
