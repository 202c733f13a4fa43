//! Test helpers: the Redis in `CHAT_TEST_REDIS_URL`, a channel and key prefix per test,
//! presence whose keys are deleted afterwards, and a TCP proxy to cut connections with.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chat_broker_redis::{RedisBroker, RedisBrokerConfig, RedisPresence, RedisPresenceConfig};
use chat_core::presence::{PresenceChange, PresenceInfo};
use chat_core::{ConnectionId, NodeId, PresenceTracker, Result, Timestamp, UserId};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The variable that names the test Redis.
pub const URL_VAR: &str = "CHAT_TEST_REDIS_URL";

/// The test Redis's URL, or `None` (with the reason printed) when it is not set.
pub fn url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!(
                "skipped: {URL_VAR} is not set (e.g. redis://127.0.0.1:6379; .ci/run sets it)"
            );
            None
        }
    }
}

/// A channel or key prefix no other test (or run) uses.
pub fn unique_prefix() -> String {
    chat_core::testkit::unique("chat-test")
}

/// A broker of `node` under `prefix`, with short timeouts for tests.
pub async fn broker(url: &str, prefix: &str, node: NodeId) -> RedisBroker {
    config(url, prefix, node).connect().await.unwrap()
}

/// The test broker settings, for a test to adjust.
pub fn config(url: &str, prefix: &str, node: NodeId) -> RedisBrokerConfig {
    RedisBrokerConfig::new(url, node)
        .channel_prefix(prefix)
        .command_timeout(Duration::from_millis(500))
        .max_reconnect_delay(Duration::from_millis(200))
}

/// Deletes every key matching `pattern`; returns how many there were.
pub fn delete_keys(url: &str, pattern: &str) -> usize {
    use redis::Commands;
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_connection()
        .expect("connect to delete test keys");
    let keys: Vec<String> = conn.scan_match::<_, String>(pattern).unwrap().collect();
    if !keys.is_empty() {
        let _: () = conn.del(&keys).unwrap();
    }
    keys.len()
}

/// How many keys match `pattern`.
pub fn count_keys(url: &str, pattern: &str) -> usize {
    use redis::Commands;
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();
    conn.scan_match::<_, String>(pattern).unwrap().count()
}

/// A [`RedisPresence`] under a fresh key prefix, whose keys are deleted when this is
/// dropped.
#[derive(Debug)]
pub struct TempPresence {
    pub presence: RedisPresence,
    pub url: String,
    pub prefix: String,
}

impl TempPresence {
    pub async fn new(url: &str, ttl: Duration) -> TempPresence {
        TempPresence::with_prefix(url, &unique_prefix(), ttl).await
    }

    /// Another node's tracker on the same keys.
    pub async fn with_prefix(url: &str, prefix: &str, ttl: Duration) -> TempPresence {
        let presence = RedisPresenceConfig::new(url)
            .key_prefix(prefix)
            .lease_ttl(ttl)
            .connect()
            .await
            .unwrap();
        TempPresence {
            presence,
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }
    }

    /// The pattern of every key of this prefix.
    pub fn key_pattern(&self) -> String {
        format!("{}:*", self.presence.key_prefix())
    }
}

impl Drop for TempPresence {
    fn drop(&mut self) {
        delete_keys(&self.url, &self.key_pattern());
    }
}

#[async_trait]
impl PresenceTracker for TempPresence {
    fn lease_ttl(&self) -> Duration {
        self.presence.lease_ttl()
    }
    async fn connect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange> {
        self.presence.connect(node, conn, user, now).await
    }
    async fn disconnect(
        &self,
        node: &NodeId,
        conn: ConnectionId,
        user: &UserId,
        now: Timestamp,
    ) -> Result<PresenceChange> {
        self.presence.disconnect(node, conn, user, now).await
    }
    async fn renew(&self, node: &NodeId, now: Timestamp) -> Result<bool> {
        self.presence.renew(node, now).await
    }
    async fn status(&self, users: &[UserId], now: Timestamp) -> Result<Vec<PresenceInfo>> {
        self.presence.status(users, now).await
    }
    async fn sweep(&self, now: Timestamp) -> Result<Vec<PresenceInfo>> {
        self.presence.sweep(now).await
    }
}

/// A TCP proxy on `127.0.0.1:0` in front of the test Redis, whose connections a test cuts
/// (closes, and refuses new ones until restored) or silences (the existing connections
/// stay open but carry nothing more, as when a host vanishes without closing them).
#[derive(Debug)]
pub struct Proxy {
    port: u16,
    url: String,
    state: Arc<ProxyState>,
    accept: AbortHandle,
}

#[derive(Debug, Default)]
struct ProxyState {
    refusing: AtomicBool,
    conns: Mutex<Vec<ProxyConn>>,
}

#[derive(Debug)]
struct ProxyConn {
    task: AbortHandle,
    silenced: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy to the Redis at `url`.
    pub async fn start(url: &str) -> Proxy {
        let info = redis::Client::open(url)
            .unwrap()
            .get_connection_info()
            .clone();
        let redis::ConnectionAddr::Tcp(host, port) = &info.addr else {
            panic!("the test Redis must be reached over plain TCP: {url}");
        };
        let upstream = format!("{host}:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let auth = match (&info.redis.username, &info.redis.password) {
            (Some(user), Some(password)) => format!("{user}:{password}@"),
            (None, Some(password)) => format!(":{password}@"),
            _ => String::new(),
        };
        let proxy_url = format!("redis://{auth}127.0.0.1:{local}/{}", info.redis.db);
        let state = Arc::new(ProxyState::default());
        let accept = tokio::spawn(accept_loop(listener, upstream, state.clone())).abort_handle();
        Proxy {
            port: local,
            url: proxy_url,
            state,
            accept,
        }
    }

    /// The Redis URL that goes through this proxy.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection and refuses new ones (they are accepted and closed at once).
    pub fn cut(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        for conn in self.state.conns.lock().drain(..) {
            conn.task.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.refusing.store(false, Ordering::SeqCst);
    }

    /// The existing connections stay open but from now on drop every byte, both ways;
    /// new connections are forwarded as usual.
    pub fn silence_existing(&self) {
        for conn in self.state.conns.lock().iter() {
            conn.silenced.store(true, Ordering::SeqCst);
        }
    }

    /// How many connections are being forwarded (silenced ones included).
    pub fn open_connections(&self) -> usize {
        let mut conns = self.state.conns.lock();
        conns.retain(|c| !c.task.is_finished());
        conns.len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, upstream: String, state: Arc<ProxyState>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if state.refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let silenced = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(forward(client, upstream.clone(), silenced.clone()));
        let mut conns = state.conns.lock();
        conns.retain(|c| !c.task.is_finished());
        conns.push(ProxyConn {
            task: task.abort_handle(),
            silenced,
        });
    }
}

async fn forward(client: TcpStream, upstream: String, silenced: Arc<AtomicBool>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pipe(client_read, server_write, silenced.clone()) => {}
        () = pipe(server_read, client_write, silenced) => {}
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silenced: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silenced.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The proxy's port (for messages).
impl Proxy {
    pub fn port(&self) -> u16 {
        self.port
    }
}
