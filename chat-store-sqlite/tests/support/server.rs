//! The demo server as a child process, and a plain protocol-v1 WebSocket client.
//!
//! Shared by the crash tests of chat-store-sqlite and chat-store-postgres (the latter
//! includes this file by path). The server binary is the `server` example that
//! `cargo test --workspace --all-features` builds beside the tests
//! (`target/<profile>/examples/server`); when it is missing the tests say so and skip, when
//! it is older than its sources they fail, asking for a rebuild.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The demo server binary, or `None` (and why, printed) when it was not built.
pub fn server_binary() -> Option<PathBuf> {
    // This test runs as target/<profile>/deps/<name>-<hash>; examples are in
    // target/<profile>/examples/.
    let exe = std::env::current_exe().ok()?;
    let path = exe.parent()?.parent()?.join("examples").join("server");
    let Ok(built) = path.metadata().and_then(|m| m.modified()) else {
        eprintln!(
            "SKIPPED: the demo server {} is missing. `cargo test --workspace --all-features` \
             builds it; or `cargo build --example server --features sqlite,postgres`",
            path.display()
        );
        return None;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sources = [
        root.join("examples/server.rs"),
        root.join("chat-store-sqlite/src"),
        root.join("chat-store-postgres/src"),
    ];
    if let Some(newer) = sources.iter().find(|s| newest(s) > built) {
        panic!(
            "{} is older than {}: rebuild it (`cargo build --example server --features sqlite,postgres`, \
             or run `cargo test --workspace --all-features`, which builds the examples)",
            path.display(),
            newer.display()
        );
    }
    // A server from before `--db` / `--postgres` cannot run these tests.
    let help = std::process::Command::new(&path)
        .arg("--help")
        .output()
        .ok()?;
    let usage = String::from_utf8_lossy(&help.stderr);
    if !(usage.contains("--db") && usage.contains("--postgres")) {
        eprintln!(
            "SKIPPED: the demo server {} has no --db / --postgres flags",
            path.display()
        );
        return None;
    }
    Some(path)
}

/// The newest modification time of a file or of the files in a directory.
fn newest(path: &Path) -> SystemTime {
    let mut latest = path
        .metadata()
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            latest = latest.max(newest(&entry.path()));
        }
    }
    latest
}

/// A running demo server.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// `ws://127.0.0.1:PORT/ws`.
    pub url: String,
    /// From the spawn to the first `hello` answered.
    pub ready_in: Duration,
}

impl Server {
    /// Starts `binary` on a free port with `args` and waits until it answers a `hello`.
    pub async fn start(binary: &Path, args: &[String]) -> Server {
        let started = Instant::now();
        let mut child = Command::new(binary)
            .arg("--addr")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the demo server");
        let stdout = child.stdout.take().expect("the server's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read the server's stdout") {
                if let Some(rest) = line.strip_prefix("  WebSocket  ") {
                    return rest.split_whitespace().next().map(str::to_owned);
                }
            }
            None
        })
        .await
        .expect("the server did not start within 20 s")
        .expect("the server exited without printing its WebSocket address");
        // Keep reading stdout so that the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let probe = Ws::connect(&url, "probe")
            .await
            .expect("hello to the new server");
        drop(probe);
        Server {
            child,
            url,
            ready_in: started.elapsed(),
        }
    }

    /// `SIGKILL`: no shutdown, no flush, no goodbye.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill the server");
        self.child.wait().await.expect("reap the server");
    }
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A protocol-v1 connection, logged in.
pub struct Ws {
    ws: Stream,
    next_id: u64,
    /// `message` pushes read while waiting for replies, in arrival order.
    pub pushes: Vec<Value>,
}

impl Ws {
    /// Connects and says `hello` as `user` (development token).
    pub async fn connect(url: &str, user: &str) -> Result<Ws, String> {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut ws = Ws {
            ws,
            next_id: 1,
            pushes: Vec::new(),
        };
        ws.request(json!({"type": "hello", "token": format!("dev:{user}")}))
            .await?;
        Ok(ws)
    }

    /// Sends a frame with a fresh `id`; returns the id.
    pub async fn send(&mut self, mut frame: Value) -> Result<u64, String> {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .map_err(|e| format!("send: {e}"))?;
        Ok(id)
    }

    /// The next frame that is not a push (pushes of messages are kept in `pushes`);
    /// `Err` when the connection ends.
    pub async fn reply(&mut self) -> Result<Value, String> {
        loop {
            let frame = self.frame().await?;
            match frame["type"].as_str() {
                Some("ok" | "error") if frame.get("id").is_some() => return Ok(frame),
                Some("message") => self.pushes.push(frame),
                _ => {}
            }
        }
    }

    /// The next JSON frame; `Err` when the connection ends.
    pub async fn frame(&mut self) -> Result<Value, String> {
        loop {
            match self.ws.next().await {
                Some(Ok(WsMessage::Text(text))) => {
                    return serde_json::from_str(text.as_str())
                        .map_err(|e| format!("bad JSON: {e}"));
                }
                Some(Ok(WsMessage::Close(close))) => return Err(format!("closed: {close:?}")),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("read: {e}")),
                None => return Err("connection ended".to_owned()),
            }
        }
    }

    /// One request and its `ok` (an `error` reply is an `Err`).
    pub async fn request(&mut self, frame: Value) -> Result<Value, String> {
        let id = self.send(frame).await?;
        let reply = self.reply().await?;
        if reply["id"] != json!(id) {
            return Err(format!("reply out of order: {reply}"));
        }
        if reply["type"] != "ok" {
            return Err(format!("refused: {reply}"));
        }
        Ok(reply)
    }

    /// Every message of `room`, through `history` pages going forward.
    pub async fn whole_history(&mut self, room: &str) -> Result<Vec<Value>, String> {
        let mut all = Vec::new();
        let mut after = 0u64;
        loop {
            let page = self
                .request(json!({"type": "history", "room": room, "after": after, "limit": 500}))
                .await?;
            let messages = page["messages"].as_array().cloned().unwrap_or_default();
            if let Some(last) = messages.last() {
                after = last["seq"].as_u64().ok_or("a message without seq")?;
            }
            all.extend(messages);
            if page["more"] != json!(true) {
                return Ok(all);
            }
        }
    }
}

/// A small deterministic random generator (xorshift), seeded from `CRASH_SEED` or the clock.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("CRASH_SEED={seed}");
        Rng(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}
