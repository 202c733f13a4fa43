//! The chat-engine demo server: protocol v1 over WebSocket, the web demo page, in-memory
//! store (or SQLite, or PostgreSQL), development authentication.
//!
//! ```sh
//! cargo run --release --example server                 # http://127.0.0.1:8080/ and ws://127.0.0.1:8080/ws
//! cargo run --release --example server -- --addr 0.0.0.0:9000
//! cargo run --release --example server --features sqlite -- --db chat.db
//! cargo run --release --example server --features postgres -- --postgres postgres://127.0.0.1/chat
//! ```
//!
//! `--jwt-secret SECRET` (HS256, at least 32 bytes), `--jwt-rs256 PEM` or `--jwt-eddsa PEM`
//! (public key files; feature `jwt`) replace development authentication: the token of a
//! `hello` is then a JWT whose `sub` is the user, and the session ends at its `exp`.
//!
//! `--db PATH` keeps history in a SQLite file and `--postgres URL` in PostgreSQL (several
//! servers may share one database); without either, everything is in memory.
//!
//! Several nodes, one chat: `--postgres URL --redis URL` (feature `redis`) joins the other
//! servers on the same database and Redis — Redis pub/sub carries the events between
//! nodes, Redis keeps presence. `--node-id ID` names this node (default: random),
//! `--cluster NAME` keeps clusters sharing one Redis apart, `--heartbeat-ms MS` sets the
//! heartbeat (and, with Redis, the node lease TTL to the same, so a dead node's users go
//! offline within two heartbeats). `scripts/cluster.sh N` starts N nodes.
//!
//! ```sh
//! cargo run --release --example server --features postgres,redis -- \
//!     --addr 127.0.0.1:9001 --postgres postgres://127.0.0.1/chat --redis redis://127.0.0.1:6379
//! ```
//!
//! The page (`web/`) and the JavaScript client (`clients/js/chat-engine.js`) are embedded
//! in the binary.
//!
//! Logs go through `tracing` (`RUST_LOG=debug` for more). Ctrl-C (or SIGTERM) shuts down
//! gracefully: every client gets close 1001 and may reconnect elsewhere; the last line
//! printed is `stats {...}`, the engine's counters as JSON (repairs, broker traffic).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chat_engine::EngineBuilder;
use chat_engine::core::auth::{Authenticator, DevAuthenticator};
use chat_engine::ws::WsServer;

/// The web demo: path, content type, file (embedded at compile time).
const PAGES: [(&str, &str, &[u8]); 4] = [
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../web/app.js"),
    ),
    (
        "/style.css",
        "text/css; charset=utf-8",
        include_bytes!("../web/style.css"),
    ),
    (
        "/chat-engine.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../clients/js/chat-engine.js"),
    ),
];

const USAGE: &str = "usage: server [--addr HOST:PORT] [--db PATH | --postgres URL [--redis URL]] [--node-id ID] [--cluster NAME] [--heartbeat-ms MS] [--jwt-secret SECRET | --jwt-rs256 PEM | --jwt-eddsa PEM]
  --addr HOST:PORT     where to listen (default 127.0.0.1:8080)
  --db PATH            keep history in the SQLite database PATH (feature sqlite)
  --postgres URL       keep history in PostgreSQL at URL (feature postgres)
  --redis URL          join the other nodes on the same PostgreSQL through Redis at URL:
                       broker and presence (feature redis; needs --postgres)
  --node-id ID         this node's id (default: random)
  --cluster NAME       the Redis channel and key prefix of this cluster (default chat)
  --heartbeat-ms MS    WebSocket heartbeat (default 25000); with --redis also the node lease
  --jwt-secret SECRET  tokens are HS256 JWTs signed with SECRET (feature jwt)
  --jwt-rs256 PEM      tokens are RS256 JWTs; PEM is the public key file (feature jwt)
  --jwt-eddsa PEM      tokens are EdDSA JWTs; PEM is the public key file (feature jwt)
Without --jwt-*, development authentication: the token \"dev:<user>\" logs in as <user>.";

/// Where the history is kept.
enum StoreArg {
    Memory,
    Sqlite(PathBuf),
    Postgres(String),
}

/// How this node joins others.
struct NodeArgs {
    redis: Option<String>,
    node: Option<chat_engine::core::NodeId>,
    cluster: String,
    heartbeat: Option<std::time::Duration>,
}

/// Who may log in.
// Without the `jwt` feature the keys are refused unread.
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
enum AuthArg {
    Dev,
    Hs256(String),
    Rs256(PathBuf),
    EdDsa(PathBuf),
}

fn parse_args() -> Result<(SocketAddr, StoreArg, AuthArg, NodeArgs), String> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?;
    let mut store = StoreArg::Memory;
    let mut auth = AuthArg::Dev;
    let mut node = NodeArgs {
        redis: None,
        node: None,
        cluster: "chat".to_owned(),
        heartbeat: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--db" => store = StoreArg::Sqlite(args.next().ok_or("--db needs PATH")?.into()),
            "--postgres" => store = StoreArg::Postgres(args.next().ok_or("--postgres needs URL")?),
            "--redis" => node.redis = Some(args.next().ok_or("--redis needs URL")?),
            "--node-id" => {
                let value = args.next().ok_or("--node-id needs ID")?;
                let id = chat_engine::core::NodeId::new(&value)
                    .map_err(|e| format!("--node-id {value}: {e}"))?;
                node.node = Some(id);
            }
            "--cluster" => node.cluster = args.next().ok_or("--cluster needs NAME")?,
            "--heartbeat-ms" => {
                let value = args.next().ok_or("--heartbeat-ms needs MS")?;
                let ms: u64 = value
                    .parse()
                    .ok()
                    .filter(|ms| *ms >= 100)
                    .ok_or(format!("--heartbeat-ms {value}: at least 100"))?;
                node.heartbeat = Some(std::time::Duration::from_millis(ms));
            }
            "--jwt-secret" => {
                auth = AuthArg::Hs256(args.next().ok_or("--jwt-secret needs SECRET")?);
            }
            "--jwt-rs256" => {
                auth = AuthArg::Rs256(args.next().ok_or("--jwt-rs256 needs PEM")?.into());
            }
            "--jwt-eddsa" => {
                auth = AuthArg::EdDsa(args.next().ok_or("--jwt-eddsa needs PEM")?.into());
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if node.redis.is_some() && !matches!(store, StoreArg::Postgres(_)) {
        return Err(format!(
            "--redis needs --postgres: the nodes must share one store\n{USAGE}"
        ));
    }
    Ok((addr, store, auth, node))
}

/// The authenticator chosen, and how to describe it.
fn authenticator(auth: AuthArg) -> Result<(Arc<dyn Authenticator>, String), String> {
    #[cfg(feature = "jwt")]
    {
        use chat_engine::jwt::JwtAuthenticator;
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let jwt = match auth {
            AuthArg::Dev => None,
            AuthArg::Hs256(secret) => Some((
                JwtAuthenticator::hs256(secret.as_bytes())
                    .map_err(|e| format!("--jwt-secret: {e}"))?,
                "JWT, HS256",
            )),
            AuthArg::Rs256(path) => Some((
                JwtAuthenticator::rs256_pem(read(&path)?)
                    .map_err(|e| format!("--jwt-rs256: {e}"))?,
                "JWT, RS256",
            )),
            AuthArg::EdDsa(path) => Some((
                JwtAuthenticator::eddsa_pem(read(&path)?)
                    .map_err(|e| format!("--jwt-eddsa: {e}"))?,
                "JWT, EdDSA",
            )),
        };
        if let Some((jwt, about)) = jwt {
            let about = format!("{about}: a hello's token is a JWT whose sub is the user");
            return Ok((Arc::new(jwt), about));
        }
    }
    #[cfg(not(feature = "jwt"))]
    if !matches!(auth, AuthArg::Dev) {
        return Err("--jwt-*: built without JWT; add --features jwt".to_owned());
    }
    Ok((
        Arc::new(DevAuthenticator),
        "development: the token \"dev:<user>\" logs in as <user>".to_owned(),
    ))
}

/// An engine builder on the chosen store (presence stays in memory), and how to describe it.
async fn engine_builder(
    store: StoreArg,
    node: &NodeArgs,
    authenticator: Arc<dyn Authenticator>,
) -> Result<(EngineBuilder, String), String> {
    #[cfg(not(all(feature = "postgres", feature = "redis")))]
    if node.redis.is_some() {
        return Err("--redis: built without Redis; add --features postgres,redis".to_owned());
    }
    match store {
        StoreArg::Memory => Ok((
            chat_engine::memory::engine_builder(authenticator),
            "in memory: history is lost when the server stops".to_owned(),
        )),
        #[cfg(feature = "sqlite")]
        StoreArg::Sqlite(path) => {
            let store = chat_engine::sqlite::SqliteStore::open(&path)
                .await
                .map_err(|e| format!("--db {}: {e}", path.display()))?;
            let (store, presence) = (
                Arc::new(store),
                Arc::new(chat_engine::memory::MemoryPresence::default()),
            );
            let about = format!("SQLite {} (durable)", path.display());
            Ok((
                EngineBuilder::new(store.clone(), store, presence, authenticator),
                about,
            ))
        }
        #[cfg(feature = "postgres")]
        StoreArg::Postgres(url) => {
            let store = chat_engine::postgres::PostgresStore::connect(&url)
                .await
                .map_err(|e| format!("--postgres: {e}"))?;
            let store = Arc::new(store);
            if let Some(redis) = &node.redis {
                return cluster_builder(store, redis, node, authenticator).await;
            }
            let presence = Arc::new(chat_engine::memory::MemoryPresence::default());
            let about = "PostgreSQL (durable, shared by every server on it)".to_owned();
            Ok((
                EngineBuilder::new(store.clone(), store, presence, authenticator),
                about,
            ))
        }
        #[cfg(not(feature = "sqlite"))]
        StoreArg::Sqlite(path) => Err(format!(
            "--db {}: built without SQLite; add --features sqlite",
            path.display()
        )),
        #[cfg(not(feature = "postgres"))]
        StoreArg::Postgres(_url) => {
            Err("--postgres: built without PostgreSQL; add --features postgres".to_owned())
        }
    }
}

/// A node of a cluster: the shared PostgreSQL store, Redis broker and presence.
#[cfg(all(feature = "postgres", feature = "redis"))]
async fn cluster_builder(
    store: Arc<chat_engine::postgres::PostgresStore>,
    redis: &str,
    node: &NodeArgs,
    authenticator: Arc<dyn Authenticator>,
) -> Result<(EngineBuilder, String), String> {
    use chat_engine::redis::{RedisBrokerConfig, RedisPresenceConfig};
    let id = node
        .node
        .clone()
        .unwrap_or_else(chat_engine::core::NodeId::random);
    let broker = RedisBrokerConfig::new(redis, id.clone())
        .channel_prefix(&node.cluster)
        .connect()
        .await
        .map_err(|e| format!("--redis: {e}"))?;
    let mut presence = RedisPresenceConfig::new(redis).key_prefix(&node.cluster);
    if let Some(heartbeat) = node.heartbeat {
        presence = presence.lease_ttl(heartbeat);
    }
    let presence = presence
        .connect()
        .await
        .map_err(|e| format!("--redis: {e}"))?;
    let about = format!(
        "PostgreSQL, node {id} of cluster {:?} on Redis (broker and presence)",
        node.cluster
    );
    let builder = EngineBuilder::new(store.clone(), store, Arc::new(presence), authenticator)
        .broker(Arc::new(broker))
        .node(id);
    Ok((builder, about))
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (addr, store, auth, node) = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };

    let (authenticator, auth) = match authenticator(auth) {
        Ok(chosen) => chosen,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let development = auth.starts_with("development");
    let (builder, store) = match engine_builder(store, &node, authenticator).await {
        Ok(built) => built,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let mut builder = builder;
    if let Some(heartbeat) = node.heartbeat {
        let mut config = chat_engine::EngineConfig::default();
        config.heartbeat = heartbeat;
        builder = builder.config(config);
    }
    if let (Some(id), None) = (&node.node, &node.redis) {
        builder = builder.node(id.clone());
    }
    let engine = builder.build();
    let stats_of = engine.clone();
    let server = match WsServer::bind(addr, engine).await {
        Ok(server) => PAGES
            .into_iter()
            .fold(server, |server, (path, content_type, body)| {
                server.with_page(path, content_type, body)
            }),
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = server.local_addr().unwrap_or(addr);
    let node_id = stats_of.node();
    if development {
        tracing::warn!(
            "DEVELOPMENT AUTHENTICATION: any token \"dev:<user>\" logs in as <user>; \
             anyone can be anyone. Do not expose this server."
        );
    }
    println!(
        "chat-engine demo server
  web page   http://{local}/   (open it in two browser windows)
  WebSocket  ws://{local}/ws   (protocol v1: docs/protocol.md)
  node       {node_id}
  store      {store}
  auth       {auth}

Chat from any WebSocket client, e.g. `websocat ws://{local}/ws`, one JSON object per line:
  {{\"type\":\"hello\",\"id\":1,\"token\":\"dev:alice\"}}
  {{\"type\":\"join\",\"id\":2,\"room\":\"general\"}}
  {{\"type\":\"send\",\"id\":3,\"room\":\"general\",\"cid\":\"c-1\",\"body\":\"hello\"}}
Ctrl-C stops the server."
    );
    let result = server
        .run_until(async {
            stop_signal().await;
            tracing::info!("shutting down: closing every connection with 1001");
        })
        .await;
    let stats = stats_of.stats();
    println!(
        "stats {{\"node\":\"{}\",\"repair_reads\":{},\"repaired\":{},\"published\":{},\"publish_failed\":{},\"received\":{}}}",
        stats_of.node(),
        stats.repair_reads,
        stats.repaired,
        stats.published,
        stats.publish_failed,
        stats.received
    );
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
