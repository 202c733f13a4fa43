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
//! The page (`web/`) and the JavaScript client (`clients/js/chat-engine.js`) are embedded
//! in the binary.
//!
//! Logs go through `tracing` (`RUST_LOG=debug` for more). Ctrl-C shuts down gracefully:
//! every client gets close 1001 and may reconnect elsewhere.

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

const USAGE: &str = "usage: server [--addr HOST:PORT] [--db PATH | --postgres URL] [--jwt-secret SECRET | --jwt-rs256 PEM | --jwt-eddsa PEM]
  --addr HOST:PORT     where to listen (default 127.0.0.1:8080)
  --db PATH            keep history in the SQLite database PATH (feature sqlite)
  --postgres URL       keep history in PostgreSQL at URL (feature postgres)
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

/// Who may log in.
// Without the `jwt` feature the keys are refused unread.
#[cfg_attr(not(feature = "jwt"), allow(dead_code))]
enum AuthArg {
    Dev,
    Hs256(String),
    Rs256(PathBuf),
    EdDsa(PathBuf),
}

fn parse_args() -> Result<(SocketAddr, StoreArg, AuthArg), String> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse().map_err(|e| format!("{e}"))?;
    let mut store = StoreArg::Memory;
    let mut auth = AuthArg::Dev;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => {
                let value = args.next().ok_or("--addr needs HOST:PORT")?;
                addr = value.parse().map_err(|e| format!("--addr {value}: {e}"))?;
            }
            "--db" => store = StoreArg::Sqlite(args.next().ok_or("--db needs PATH")?.into()),
            "--postgres" => store = StoreArg::Postgres(args.next().ok_or("--postgres needs URL")?),
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
    Ok((addr, store, auth))
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
    authenticator: Arc<dyn Authenticator>,
) -> Result<(EngineBuilder, String), String> {
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
            let (store, presence) = (
                Arc::new(store),
                Arc::new(chat_engine::memory::MemoryPresence::default()),
            );
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

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let (addr, store, auth) = match parse_args() {
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
    let (builder, store) = match engine_builder(store, authenticator).await {
        Ok(built) => built,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let engine = builder.build();
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
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: closing every connection with 1001");
        })
        .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
